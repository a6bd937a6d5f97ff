"""A pure function of (key, static spec) that samples both masks as index sets.

Shapes never depend on the data, so the sampler runs inside the jitted step:
visible_idx [B, N_vis] and target_idx [B, N_dec] are ascending token indices,
weights [B, N_dec] is 1 where the target was hidden from the encoder.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vmae2_jax.masking.running_cell import cell_ones, running_cell_keep_table


class MaskSample(NamedTuple):
  visible_idx: jax.Array  # [B, N_vis] int32, ascending
  target_idx: jax.Array   # [B, N_dec] int32, ascending
  weights: jax.Array      # [B, N_dec] float32, 1 = encoder-masked (counts in the loss)


@dataclasses.dataclass(frozen=True)
class MaskSpec:
  """Static description of dual masking for one token grid (T', h, w)."""

  grid: tuple[int, int, int]
  encoder: str = "tube"            # "tube" | "random"
  encoder_ratio: float = 0.9
  decoder: str = "running_cell"    # "running_cell" | "none"
  decoder_ratio: float = 0.5

  def __post_init__(self):
    object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
    if self.encoder not in ("tube", "random"):
      raise ValueError(f"config.masking.encoder={self.encoder!r} is not tube|random")
    if self.decoder not in ("running_cell", "none"):
      raise ValueError(f"config.masking.decoder={self.decoder!r} is not running_cell|none")
    if not 0.0 <= self.encoder_ratio < 1.0 or self.num_visible < 1:
      raise ValueError(
          f"config.masking.encoder_ratio={self.encoder_ratio} leaves no visible token "
          f"({self.encoder} masking over {self._unit} positions)")
    if self.decoder == "running_cell":
      cell_ones(self.decoder_ratio)
      running_cell_keep_table(self.grid, self.decoder_ratio)  # checks the grid is even

  @classmethod
  def from_config(cls, masking_cfg, grid) -> "MaskSpec":
    return cls(grid=tuple(grid), encoder=masking_cfg.encoder,
               encoder_ratio=masking_cfg.encoder_ratio, decoder=masking_cfg.decoder,
               decoder_ratio=masking_cfg.decoder_ratio)

  @property
  def num_tokens(self) -> int:
    t, h, w = self.grid
    return t * h * w

  @property
  def _unit(self) -> int:
    """Positions masked independently: spatial ones (tube) or all tokens (random)."""
    t, h, w = self.grid
    return h * w if self.encoder == "tube" else t * h * w

  @property
  def num_visible(self) -> int:
    visible = self._unit - int(self.encoder_ratio * self._unit)
    return visible * (self.grid[0] if self.encoder == "tube" else 1)

  @property
  def num_targets(self) -> int:
    if self.decoder == "none":
      return self.num_tokens - self.num_visible
    return running_cell_keep_table(self.grid, self.decoder_ratio).shape[1]


def _choose_sorted(key, batch: int, population: int, count: int):
  """Per row, `count` distinct ints in [0, population), ascending."""
  noise = jax.random.uniform(key, (batch, population))
  chosen = jnp.argsort(noise, axis=1)[:, :count]
  return jnp.sort(chosen, axis=1).astype(jnp.int32)


def sample_masks(key, batch: int, spec: MaskSpec) -> MaskSample:
  """Draws encoder-visible and decoder-target index sets for `batch` clips."""
  enc_key, dec_key = jax.random.split(key)
  t, h, w = spec.grid
  n = spec.num_tokens
  if spec.encoder == "tube":
    per_slot = spec.num_visible // t
    spatial = _choose_sorted(enc_key, batch, h * w, per_slot)          # [B, V]
    offsets = (jnp.arange(t, dtype=jnp.int32) * (h * w))[None, :, None]
    visible = (offsets + spatial[:, None, :]).reshape(batch, t * per_slot)
  else:
    visible = _choose_sorted(enc_key, batch, n, spec.num_visible)

  is_visible = jnp.zeros((batch, n), bool).at[jnp.arange(batch)[:, None], visible].set(True)
  if spec.decoder == "none":
    # Stable argsort puts hidden tokens first, in ascending order.
    target = jnp.argsort(is_visible, axis=1, stable=True)[:, :spec.num_targets]
    target = target.astype(jnp.int32)
  else:
    table = jnp.asarray(running_cell_keep_table(spec.grid, spec.decoder_ratio))
    target = table[jax.random.randint(dec_key, (batch,), 0, table.shape[0])]
  weights = (~jnp.take_along_axis(is_visible, target, axis=1)).astype(jnp.float32)
  return MaskSample(visible, target, weights)


def to_boolean_masks(sample: MaskSample, num_tokens: int):
  """Index form -> the reference's boolean form (1 = masked).

  Returns (encoder_mask [B, N], decoder_mask [B, N]) where decoder_mask is 1
  at tokens the decoder does NOT reconstruct, as the reference passes it.
  """
  b = sample.visible_idx.shape[0]
  rows = jnp.arange(b)[:, None]
  enc = jnp.ones((b, num_tokens), bool).at[rows, sample.visible_idx].set(False)
  dec = jnp.ones((b, num_tokens), bool).at[rows, sample.target_idx].set(False)
  return enc, dec
