"""Box arithmetic for detection clips, in pixels of the clip's frame (x1, y1, x2, y2).

Continuous coordinates: a box spans [x1, x2) and the frame [0, W); flipping
maps x to W - x. (The reference's BoxList counts inclusive pixels, x2 = W - 1
at the border, a one-pixel difference the RoI features do not notice.)

``jitter`` and ``widen`` follow the reference's training and test box
changes; ``widen`` also runs under jit (the model widens test boxes for
pooling and reports the boxes it was given).
"""

from __future__ import annotations

import numpy as np

# The reference's train-time box jitter, random_aug(0.2, 0.1, 0.1, 0.05): edges move
# by a fraction of the box size, outward up to the first number, inward up to the second.
JITTER = (0.2, 0.1, 0.1, 0.05)   # x out, x in, y out, y in
# The reference's test-time widening: 10% of the width, 5% of the height, split over both sides.
WIDEN = (0.1, 0.05)


def to_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """Normalised [N, 4] -> pixels of a height x width frame."""
  return np.asarray(boxes, np.float32).reshape(-1, 4) * np.array(
      [width, height, width, height], np.float32)


def to_normalised(boxes, valid_hw):
  """Pixel boxes [..., N, 4] of frames whose content is valid_hw [..., 2] (h, w) -> [0, 1]."""
  h = valid_hw[..., 0:1, None].astype(np.float32)
  w = valid_hw[..., 1:2, None].astype(np.float32)
  scale = np.maximum(np.concatenate([w, h, w, h], axis=-1), 1.0)  # padding rows: 0 x 0
  return np.clip(boxes / scale, 0.0, 1.0)


def clip_to_frame(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """Boxes clamped into the frame."""
  return np.clip(boxes, 0, np.array([width, height, width, height], np.float32))


def nonempty(boxes: np.ndarray, min_size: float = 1.0) -> np.ndarray:
  """bool [N]: boxes at least ``min_size`` pixels wide and high (the others vanished)."""
  return ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)


def crop(boxes: np.ndarray, x0: int, y0: int, height: int, width: int) -> np.ndarray:
  """Boxes in a height x width crop whose top-left corner is (x0, y0), clamped into it."""
  return clip_to_frame(boxes - np.array([x0, y0, x0, y0], np.float32), height, width)


def flip(boxes: np.ndarray, width: int) -> np.ndarray:
  """Boxes of a frame flipped left-right."""
  out = boxes.copy()
  out[:, 0] = width - boxes[:, 2]
  out[:, 2] = width - boxes[:, 0]
  return out


def jitter(boxes: np.ndarray, height: int, width: int, rng: np.random.Generator,
           amounts=JITTER) -> np.ndarray:
  """The reference's training box jitter, each edge independently, kept inside the frame
  and at least one pixel wide and high."""
  x_out, x_in, y_out, y_in = amounts
  n = len(boxes)
  bw = boxes[:, 2] - boxes[:, 0]
  bh = boxes[:, 3] - boxes[:, 1]
  x1 = boxes[:, 0] + bw * rng.uniform(-x_out, x_in, n)
  y1 = boxes[:, 1] + bh * rng.uniform(-y_out, y_in, n)
  x2 = boxes[:, 2] + bw * rng.uniform(-x_in, x_out, n)
  y2 = boxes[:, 3] + bh * rng.uniform(-y_in, y_out, n)
  x1 = np.clip(x1, 0, width - 1)
  y1 = np.clip(y1, 0, height - 1)
  x2 = np.maximum(np.minimum(x2, width), x1 + 1)
  y2 = np.maximum(np.minimum(y2, height), y1 + 1)
  return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


def widen(boxes, valid_hw, amounts=WIDEN):
  """Test boxes [..., N, 4] widened as the reference before RoI pooling, clamped to the
  frame content valid_hw [..., 2] (h, w). NumPy or jax arrays (jit-safe)."""
  xp = _array_module(boxes)
  sx, sy = amounts
  bw = boxes[..., 2] - boxes[..., 0]
  bh = boxes[..., 3] - boxes[..., 1]
  h = valid_hw[..., 0:1].astype(boxes.dtype)
  w = valid_hw[..., 1:2].astype(boxes.dtype)
  px, py = sx * bw / 2, sy * bh / 2
  return xp.stack([xp.clip(boxes[..., 0] - px, 0, w), xp.clip(boxes[..., 1] - py, 0, h),
                   xp.clip(boxes[..., 2] + px, 0, w), xp.clip(boxes[..., 3] + py, 0, h)],
                  axis=-1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[N, M] intersection over union of boxes a [N, 4] and b [M, 4] (any one order of axes)."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  iw = np.maximum(0.0, np.minimum(a[:, None, 2], b[None, :, 2])
                  - np.maximum(a[:, None, 0], b[None, :, 0]))
  ih = np.maximum(0.0, np.minimum(a[:, None, 3], b[None, :, 3])
                  - np.maximum(a[:, None, 1], b[None, :, 1]))
  inter = iw * ih
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  return inter / (area_a[:, None] + area_b[None, :] - inter)


def _array_module(x):
  if isinstance(x, np.ndarray):
    return np
  import jax.numpy as jnp
  return jnp
