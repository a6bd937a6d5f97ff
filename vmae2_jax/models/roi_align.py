"""RoIAlign with static shapes: torchvision's roi_align(aligned=False), adaptive sampling.

torchvision (and the reference detection head, sampling_ratio 0) averages a
grid of bilinear samples in each output bin, ceil(roi_size / output_size)
samples per side: the count depends on the box. Here every box gets a fixed
grid of `max_samples` per side and the samples past its own count are masked
out, so the result is exact whenever ceil(roi_size / output_size) <=
max_samples. The default cap ceil((map_size + 1) / output_size) covers every
box inside the frame (a frame of P pixels has floor(P / 16) cells, and a box
in it spans under one cell more); a caller with larger boxes passes a larger
cap.

Bilinear sampling is separable (torchvision zeroes a sample when y or x lies
outside [-1, size], clamps each coordinate on its own), so a box's 7x7 bins
are two small weight matrices, rows [out, H] and columns [out, W], applied
to the feature map: two einsums, no gather.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def default_max_samples(map_size: int, output_size: int) -> int:
  """The sample-grid cap that is exact for every box inside the frame of this map."""
  return max(1, math.ceil((map_size + 1) / output_size))


def _axis_weights(start, end, size, valid_size, output_size: int, max_samples: int):
  """[..., output_size, size] weights of one axis (mean over the box's samples).

  start, end: box edges in feature units [...]; valid_size: the map's extent on
  this axis [...] (a padded map's unpadded part), samples beyond it read as
  torchvision reads beyond the map's edge.
  """
  f32 = jnp.float32
  start, end = start.astype(f32), end.astype(f32)
  valid = valid_size.astype(f32)
  roi = jnp.maximum(end - start, 1.0)
  bin_size = roi / output_size
  grid = jnp.ceil(roi / output_size)                          # samples per bin, per box
  p = jnp.arange(output_size, dtype=f32)
  i = jnp.arange(max_samples, dtype=f32)
  # [..., out, S] sample coordinates, as torchvision computes them
  pos = (start[..., None, None] + p[:, None] * bin_size[..., None, None]
         + (i + 0.5) * bin_size[..., None, None] / grid[..., None, None])
  taken = i < grid[..., None, None]
  inside = (pos >= -1.0) & (pos <= valid[..., None, None])
  pos = jnp.maximum(pos, 0.0)
  low = jnp.floor(pos)
  at_edge = low >= valid[..., None, None] - 1
  low = jnp.where(at_edge, valid[..., None, None] - 1, low)
  high = jnp.where(at_edge, low, low + 1)
  pos = jnp.where(at_edge, low, pos)
  frac = pos - low
  keep = (taken & inside).astype(f32) / grid[..., None, None]
  idx = jnp.arange(size, dtype=f32)
  w = (((low[..., None] == idx) * (1.0 - frac)[..., None]
        + (high[..., None] == idx) * frac[..., None]) * keep[..., None])
  return jnp.sum(w, axis=-2)                                  # over the samples


def roi_align(features, boxes, *, output_size: int = 7, spatial_scale: float = 1.0 / 16,
              max_samples: int | None = None, valid_hw=None):
  """Bins of each image's boxes: features [B, H, W, C], boxes [B, N, 4] -> [B, N, out, out, C].

  boxes are (x1, y1, x2, y2) in input pixels (scaled by spatial_scale into the
  map), image b's boxes read image b's map. valid_hw [B, 2] (feature cells):
  the unpadded part of each map, which bounds sampling as the map's own size
  does in torchvision; None uses the full map. Padded box slots give
  garbage-free zeros only if their boxes are inside the map: mask them after.
  Gradients flow to the features only.
  """
  b, h, w, _ = features.shape
  boxes = jax.lax.stop_gradient(boxes.astype(jnp.float32)) * spatial_scale
  if valid_hw is None:
    valid_hw = jnp.broadcast_to(jnp.asarray([h, w], jnp.int32), (b, 2))
  vh = jnp.broadcast_to(valid_hw[:, 0:1], boxes.shape[:2])
  vw = jnp.broadcast_to(valid_hw[:, 1:2], boxes.shape[:2])
  if max_samples is None:
    max_samples = default_max_samples(max(h, w), output_size)
  wy = _axis_weights(boxes[..., 1], boxes[..., 3], h, vh, output_size, max_samples)
  wx = _axis_weights(boxes[..., 0], boxes[..., 2], w, vw, output_size, max_samples)
  wy, wx = wy.astype(features.dtype), wx.astype(features.dtype)
  rows = jnp.einsum("bnph,bhwc->bnpwc", wy, features, preferred_element_type=jnp.float32)
  return jnp.einsum("bnqw,bnpwc->bnpqc", wx, rows.astype(features.dtype),
                    preferred_element_type=jnp.float32)
