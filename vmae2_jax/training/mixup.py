"""Mixup / cutmix on device, as timm's Mixup(mode="batch") that the reference uses.

The reference runs timm's Mixup on each GPU for that GPU's own rows, so every
GPU draws its own lam, mode and box. Here each data shard (a device's block
of rows of the global batch) does the same: its draw comes from the step's
key folded with the shard index, and it mixes only its own rows, so the
augmentation statistics do not depend on how many devices share a batch.

Per shard: with probability `prob` its rows are mixed, by cutmix with
probability `switch_prob` (when both alphas are set) and mixup otherwise,
with lam ~ Beta(alpha, alpha). Each clip is mixed with the clip at the
mirrored position of its shard (timm's x.flip(0) on one GPU's batch). The
cutmix box is one (y, x) rectangle shared by every frame (the reference views
clips as [B, C*T, H, W]), and lam is corrected to the box's true area.
Targets are the smoothed one-hot labels mixed with the same lam.

Sampling (`sample`) and applying (`apply_block`) are separate so the
deterministic part can be checked against a restatement of timm's code.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vmae2_jax.sharding.constraints import constrain


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
  """One draw (scalars, box [4]) or one per shard (a leading [shards] axis on each)."""
  lam: jax.Array         # float32: weight of the clip itself
  use_cutmix: jax.Array  # bool
  box: jax.Array         # int32 [..., 4]: yl, yh, xl, xh (an empty box when not cutmix)


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


def sample_per_shard(key, spec: MixupSpec, height: int, width: int, shards: int) -> MixParams:
  """Shard i's draw is ``sample(fold_in(key, i))``: independent per shard, and the same
  for shard i whatever the number of shards."""
  # Every device draws all shards' few scalars itself (replicated). Split over the
  # devices, Beta's rejection loops ran until every shard's draw was done: an
  # all-reduce at every trip (on TPU too), and the newest pair's CI aborted with 8
  # fake devices stuck in such an all-reduce (2026-12-07).
  # tests/test_loop_collectives.py keeps collectives out of such loops.
  replicated = lambda x: constrain(x, (None,) * x.ndim)
  keys = replicated(jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(shards)))
  draws = jax.vmap(lambda k: sample(k, spec, height, width))(keys)
  return jax.tree.map(replicated, draws)


def apply_block(video, targets, params: MixParams):
  """Mixes one shard's clips [R, T, H, W, C] (returns float32) and targets [R, K] with
  the flipped block, as timm's Mixup does on one GPU's batch."""
  v = video.astype(jnp.float32)
  other = v[::-1]
  h, w = video.shape[2:4]
  yl, yh, xl, xh = params.box[0], params.box[1], params.box[2], params.box[3]
  rows = jnp.arange(h)[:, None]
  cols = jnp.arange(w)[None, :]
  in_box = (rows >= yl) & (rows < yh) & (cols >= xl) & (cols < xh)  # [H, W], all frames
  cut = jnp.where(in_box[None, None, :, :, None], other, v)
  blend = v * params.lam + other * (1.0 - params.lam)
  mixed = jnp.where(params.use_cutmix, cut, blend)
  return mixed, targets * params.lam + targets[::-1] * (1.0 - params.lam)


def apply(video, targets, params: MixParams):
  """Mixes the global batch [B, T, H, W, C] and targets [B, K] shard by shard.

  ``params`` holds one draw per shard (``sample_per_shard``); shard i owns rows
  [i*B/S, (i+1)*B/S), the block one device holds, so no clip crosses devices.
  """
  shards = params.lam.shape[0]
  b = video.shape[0]
  blocks = lambda x: x.reshape((shards, b // shards) + x.shape[1:])
  mixed, mixed_targets = jax.vmap(apply_block)(blocks(video), blocks(targets), params)
  return mixed.reshape(video.shape), mixed_targets.reshape(targets.shape)
