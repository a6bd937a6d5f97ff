"""The AVA action detector: the ViT encoder on whole frames plus a RoIAlign head.

As the VideoMAE detection recipe: tokens of the (non-square) frame through the
encoder and its final norm, averaged over time into a [H', W', C] map; each
person box is RoIAligned to 7x7 (aligned=False, adaptive sampling), max-pooled
to one vector, then dropout and Linear(C, classes). Positions are the
encoder's sinusoid table for its pre-training grid (image_size), resized per
temporal slice to the frame's grid with PyTorch's bicubic kernel, as the
reference resizes it online.

Test frames are batched padded (valid_hw gives each frame's real size): each
frame gets the positions of its own grid, padded tokens are hidden from
attention and RoIAlign samples only the real part of the map, so a box scores
the same padded or not. Box jitter (training) and widening (test) are the
data's (vmae2_jax.data.ava.boxes); the model pools the boxes it is given.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vmae2_jax.models import patching
from vmae2_jax.models.layers import Dense
from vmae2_jax.models.options import ModelOptions
from vmae2_jax.models.posemb import bicubic_matrix, sinusoid_table
from vmae2_jax.models.roi_align import roi_align
from vmae2_jax.models.variants import ViTSize
from vmae2_jax.models.vit import Encoder

POOL = 7


class Detector(nnx.Module):
  """Encoder (final norm kept) -> time-mean map -> RoIAlign 7x7 -> max -> dropout -> head."""

  def __init__(self, size: ViTSize, num_classes: int, *, frames: int, image_size,
               opts: ModelOptions, rngs: nnx.Rngs, drop_path_rate: float = 0.0,
               head_dropout: float = 0.0, head_init_scale: float = 0.001):
    # image_size: the grid the position table is built for (the pre-training size).
    self.encoder = Encoder(size, frames=frames, image_size=image_size, opts=opts,
                           rngs=rngs, drop_path_rate=drop_path_rate, final_norm=True)
    self.head = Dense(size.width, num_classes, axes=("embed", "classes"), opts=opts,
                      rngs=rngs, init="finetune")
    self.head.kernel[...] = self.head.kernel[...] * head_init_scale
    self.head.bias[...] = self.head.bias[...] * head_init_scale
    self.head_dropout = head_dropout
    self.patch = size.patch
    self.dtype = opts.dtype

  def positions(self, grid_hw: tuple[int, int], valid_grid=None):
    """[T', H', W', D] (or [B, ...] with valid_grid [B, 2]) resized position table."""
    t, gh, gw = self.encoder.grid
    d = self.encoder.size.width
    table = sinusoid_table(self.encoder.num_tokens, d).reshape(t, gh, gw, d)
    h, w = grid_hw
    if valid_grid is None:
      if (h, w) == (gh, gw):
        return jnp.asarray(table)
      out = np.einsum("Hh,Ww,thwd->tHWd", bicubic_matrix(gh, h), bicubic_matrix(gw, w),
                      table.astype(np.float64))
      return jnp.asarray(out.astype(np.float32))
    mh = bicubic_matrix(gh, valid_grid[:, 0], h, xp=jnp)   # [B, H', gh]
    mw = bicubic_matrix(gw, valid_grid[:, 1], w, xp=jnp)   # [B, W', gw]
    return jnp.einsum("bHh,bWw,thwd->btHWd", mh, mw, jnp.asarray(table),
                      precision=jax.lax.Precision.HIGHEST)

  def feature_map(self, video, valid_hw=None, *, key=None, deterministic=True):
    """video [B, T, H, W, 3] -> (map [B, H', W', C] float32, valid grid [B, 2] or None).

    H and W are cut down to whole patches, as the reference's strided conv does.
    """
    p = self.patch
    b, frames, hp, wp = video.shape[:4]
    h, w = hp // p, wp // p
    video = video[:, :, :h * p, :w * p]
    t = frames // patching.TUBELET
    if t != self.encoder.grid[0]:
      raise ValueError(f"clip has {frames} frames; the model was built for "
                       f"{self.encoder.grid[0] * patching.TUBELET} (config.data.frames)")
    enc = self.encoder
    x = enc.patch_embed(patching.normalize_cubes(patching.patchify(video, p), enc.pixel_mean,
                                                  enc.pixel_std))
    valid_grid = key_mask = None
    if valid_hw is None:
      pos = self.positions((h, w)).reshape(1, t * h * w, -1)
    else:
      valid_grid = jnp.minimum(jnp.asarray(valid_hw, jnp.int32) // p,
                               jnp.asarray([h, w], jnp.int32))
      pos = self.positions((h, w), valid_grid).reshape(b, t * h * w, -1)
      rows = jnp.arange(h)[None, :, None] < valid_grid[:, 0, None, None]
      cols = jnp.arange(w)[None, None, :] < valid_grid[:, 1, None, None]
      key_mask = jnp.broadcast_to((rows & cols)[:, None], (b, t, h, w)).reshape(b, t * h * w)
    x = x + pos.astype(x.dtype)
    x = enc.blocks(x, key=key, deterministic=deterministic, key_mask=key_mask)
    x = enc.norm(x)
    fmap = jnp.mean(x.astype(jnp.float32).reshape(b, t, h, w, -1), axis=1)
    return fmap, valid_grid

  def __call__(self, video, boxes, *, valid_hw=None, key=None, deterministic=True):
    """Class logits [B, N, K] float32 for boxes [B, N, 4] (x1, y1, x2, y2, frame pixels).

    valid_hw [B, 2]: each padded frame's real (height, width) in pixels.
    """
    fkey = hkey = None
    if key is not None:
      fkey, hkey = jax.random.split(key)
    fmap, valid_grid = self.feature_map(video, valid_hw, key=fkey, deterministic=deterministic)
    # pooled in the compute dtype (bf16 matmuls in a bf16 model), accumulated in float32
    rois = roi_align(fmap.astype(self.dtype), boxes, output_size=POOL,
                     spatial_scale=1.0 / self.patch, valid_hw=valid_grid)
    x = jnp.max(rois, axis=(2, 3))                       # the 7x7 max-pool: [B, N, C]
    if not deterministic and self.head_dropout > 0 and hkey is not None:
      keep = 1.0 - self.head_dropout
      x = jnp.where(jax.random.bernoulli(hkey, keep, x.shape), x / keep, 0)
    return self.head(x.astype(self.dtype)).astype(jnp.float32)

