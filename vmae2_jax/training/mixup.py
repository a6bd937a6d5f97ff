"""Mixup / cutmix on device, as timm's Mixup(mode="batch") that the reference uses.

One draw per micro-batch: with probability `prob` the batch is mixed, by
cutmix with probability `switch_prob` (when both alphas are set) and mixup
otherwise, with lam ~ Beta(alpha, alpha). Each clip is mixed with the clip at
the mirrored position of the batch (timm's x.flip(0)); here the mirror is
taken inside each device's block of rows, as each GPU flips its own batch in
the reference, so no clip crosses devices. The cutmix box is one (y, x)
rectangle shared by every frame (the reference views clips as
[B, C*T, H, W]), and lam is corrected to the box's true area. Targets are the
smoothed one-hot labels mixed with the same lam.

Sampling (`sample`) and applying (`apply`) are separate so the deterministic
part can be checked against a restatement of timm's code.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MixupSpec:
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  prob: float = 1.0
  switch_prob: float = 0.5

  @property
  def enabled(self) -> bool:
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0

  @classmethod
  def from_config(cls, m) -> "MixupSpec":
    return cls(float(m.mixup_alpha), float(m.cutmix_alpha), float(m.prob), float(m.switch_prob))


class MixParams(NamedTuple):
  lam: jax.Array         # float32 scalar: weight of the clip itself
  use_cutmix: jax.Array  # bool scalar
  box: jax.Array         # int32 [4]: yl, yh, xl, xh (an empty box when not cutmix)


def cutmix_box(lam, cy, cx, height: int, width: int):
  """timm's rand_bbox for given centre (cy, cx): the clipped box and the corrected lam."""
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = (height * ratio).astype(jnp.int32)
  cut_w = (width * ratio).astype(jnp.int32)
  yl = jnp.clip(cy - cut_h // 2, 0, height)
  yh = jnp.clip(cy + cut_h // 2, 0, height)
  xl = jnp.clip(cx - cut_w // 2, 0, width)
  xh = jnp.clip(cx + cut_w // 2, 0, width)
  area = ((yh - yl) * (xh - xl)).astype(jnp.float32)
  return jnp.stack([yl, yh, xl, xh]).astype(jnp.int32), 1.0 - area / float(height * width)


def sample(key, spec: MixupSpec, height: int, width: int) -> MixParams:
  """One batch's mixing decision, as timm's _params_per_batch + cutmix_bbox_and_lam."""
  k_apply, k_switch, k_mix, k_cut, k_y, k_x = jax.random.split(key, 6)
  apply = jax.random.uniform(k_apply) < spec.prob
  a, c = spec.mixup_alpha, spec.cutmix_alpha
  lam_mix = jax.random.beta(k_mix, a, a) if a > 0 else 1.0
  lam_cut = jax.random.beta(k_cut, c, c) if c > 0 else 1.0
  if spec.mixup_alpha > 0 and spec.cutmix_alpha > 0:
    use_cutmix = jax.random.uniform(k_switch) < spec.switch_prob
  else:
    use_cutmix = jnp.asarray(spec.cutmix_alpha > 0)
  use_cutmix = use_cutmix & apply
  lam = jnp.where(apply, jnp.where(use_cutmix, lam_cut, lam_mix), 1.0).astype(jnp.float32)
  cy = jax.random.randint(k_y, (), 0, height)
  cx = jax.random.randint(k_x, (), 0, width)
  box, lam_box = cutmix_box(lam, cy, cx, height, width)
  box = jnp.where(use_cutmix, box, jnp.zeros(4, jnp.int32))
  lam = jnp.where(use_cutmix, lam_box, lam)
  return MixParams(lam, use_cutmix, box)


def mirror(x, shards: int):
  """x[::-1] inside each of `shards` equal blocks of rows (each device's part of the batch)."""
  rows = x.shape[0]
  blocks = x.reshape((shards, rows // shards) + x.shape[1:])
  return blocks[:, ::-1].reshape(x.shape)


def apply(video, targets, params: MixParams, shards: int = 1):
  """Mixes clips [B, T, H, W, C] (any dtype; returns float32) and targets [B, K]."""
  v = video.astype(jnp.float32)
  other = mirror(v, shards)
  h, w = video.shape[2:4]
  yl, yh, xl, xh = params.box[0], params.box[1], params.box[2], params.box[3]
  rows = jnp.arange(h)[:, None]
  cols = jnp.arange(w)[None, :]
  in_box = (rows >= yl) & (rows < yh) & (cols >= xl) & (cols < xh)  # [H, W], all frames
  cut = jnp.where(in_box[None, None, :, :, None], other, v)
  blend = v * params.lam + other * (1.0 - params.lam)
  mixed = jnp.where(params.use_cutmix, cut, blend)
  mixed_targets = targets * params.lam + mirror(targets, shards) * (1.0 - params.lam)
  return mixed, mixed_targets
