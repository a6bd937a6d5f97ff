"""Spatial clip transforms on uint8 [T, H, W, 3] arrays.

Each random transform is split into a ``*_params`` function (drawn once per
clip from a NumPy Generator) and an apply step used for every frame, so all
frames of a clip share the same crop, flip and erasing box. Boxes are
(y, x, h, w) in the source frame's pixels; ``crop_resize`` maps them onto a
frame decoded at reduced size, which is how the pipeline uses reduced-size
JPEG DCT decoding without changing what the crop covers.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # (y, x, h, w)

PRETRAIN_SCALES = (1.0, 0.875, 0.75, 0.66)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


# --------------------------------------------------------------------------
# Multi-scale crop (pre-training; the reference's GroupMultiScaleCrop)
# --------------------------------------------------------------------------


def fixed_offsets(h: int, w: int, crop_h: int, crop_w: int,
                  more_fix_crop: bool = True) -> list[tuple[int, int]]:
  """The reference's fixed (y, x) crop offsets: 5 or, with more_fix_crop, 13.

  Positions are multiples of a quarter of the slack on each axis: the four
  corners and the centre, then centre-left/right, bottom/top-centre and the
  four quarter points.
  """
  ws, hs = (w - crop_w) // 4, (h - crop_h) // 4
  xy = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
  if more_fix_crop:
    xy += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
           (1 * ws, 1 * hs), (3 * ws, 1 * hs), (1 * ws, 3 * hs), (3 * ws, 3 * hs)]
  return [(y, x) for x, y in xy]


def multiscale_crop_sizes(h: int, w: int, out_h: int, out_w: int,
                          scales: Sequence[float] = PRETRAIN_SCALES,
                          max_distort: int = 1) -> list[tuple[int, int]]:
  """Candidate (crop_h, crop_w): scales of the short side, aspect distortion <= max_distort."""
  base = min(h, w)
  sizes = [int(base * s) for s in scales]
  crop_h = [out_h if abs(s - out_h) < 3 else s for s in sizes]
  crop_w = [out_w if abs(s - out_w) < 3 else s for s in sizes]
  return [(ch, cw) for i, ch in enumerate(crop_h) for j, cw in enumerate(crop_w)
          if abs(i - j) <= max_distort]


def multiscale_crop_params(h: int, w: int, out_h: int, out_w: int, rng: np.random.Generator,
                           scales: Sequence[float] = PRETRAIN_SCALES, max_distort: int = 1,
                           more_fix_crop: bool = True) -> Box:
  """One random (size pair, fixed offset) of GroupMultiScaleCrop(fix_crop=True)."""
  pairs = multiscale_crop_sizes(h, w, out_h, out_w, scales, max_distort)
  ch, cw = pairs[int(rng.integers(len(pairs)))]
  offsets = fixed_offsets(h, w, ch, cw, more_fix_crop)
  y, x = offsets[int(rng.integers(len(offsets)))]
  return y, x, ch, cw


# --------------------------------------------------------------------------
# Random resized crop (fine-tuning)
# --------------------------------------------------------------------------


def random_resized_crop_params(h: int, w: int, rng: np.random.Generator,
                               scale: tuple[float, float] = (0.08, 1.0),
                               ratio: tuple[float, float] = (3 / 4, 4 / 3),
                               attempts: int = 10) -> Box:
  """Area fraction uniform in ``scale``, log aspect uniform in ``ratio``; centre-crop fallback."""
  area = h * w
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(attempts):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    cw = int(round(math.sqrt(target * aspect)))
    ch = int(round(math.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      y = int(rng.integers(0, h - ch + 1))
      x = int(rng.integers(0, w - cw + 1))
      return y, x, ch, cw
  in_ratio = w / h
  if in_ratio < min(ratio):
    cw, ch = w, int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    ch, cw = h, int(round(h * max(ratio)))
  else:
    ch, cw = h, w
  return (h - ch) // 2, (w - cw) // 2, ch, cw


# --------------------------------------------------------------------------
# Applying crops
# --------------------------------------------------------------------------


def min_decode_size(h: int, w: int, boxes: Sequence[Box], out_h: int,
                    out_w: int) -> tuple[int, int]:
  """Smallest decoded (h, w) at which every box still has >= out pixels per axis."""
  s = max(max(out_h / b[2], out_w / b[3]) for b in boxes)
  s = min(s, 1.0)
  return int(math.ceil(h * s)), int(math.ceil(w * s))


def scale_box(box: Box, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Box:
  """A box in src pixels -> the same region in a frame resized to dst."""
  if src_hw == dst_hw:
    return box
  sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
  y, x, h, w = box
  y2, x2 = min(int(round(y * sy)), dst_hw[0] - 1), min(int(round(x * sx)), dst_hw[1] - 1)
  h2 = max(1, min(int(round(h * sy)), dst_hw[0] - y2))
  w2 = max(1, min(int(round(w * sx)), dst_hw[1] - x2))
  return y2, x2, h2, w2


def crop_resize(clip: np.ndarray, box: Box, out_h: int, out_w: int,
                src_hw: tuple[int, int] | None = None, flip: bool = False,
                out: np.ndarray | None = None) -> np.ndarray:
  """Crop every frame to ``box`` (given in src_hw pixels), resize bilinearly, optionally flip.

  ``out`` (uint8 [T, out_h, out_w, 3]) receives the result when given (not with flip).
  """
  if src_hw is not None:
    box = scale_box(box, src_hw, clip.shape[1:3])
  y, x, h, w = box
  if out is None or flip:
    out = np.empty((clip.shape[0], out_h, out_w, clip.shape[3]), np.uint8)
  for t in range(clip.shape[0]):
    region = clip[t, y:y + h, x:x + w]
    if (h, w) == (out_h, out_w):
      out[t] = region
    else:
      cv2.resize(region, (out_w, out_h), dst=out[t], interpolation=cv2.INTER_LINEAR)
  if flip:
    return np.ascontiguousarray(out[:, :, ::-1])
  return out


# --------------------------------------------------------------------------
# Evaluation: short-side resize, spatial test crops, centre crop
# (the reference's video_transforms.Resize / CenterCrop and test-mode crops)
# --------------------------------------------------------------------------


def short_side_sizes(h: int, w: int, size: int) -> tuple[int, int]:
  """(out_h, out_w) of the reference's Resize(size) for an h x w frame.

  The short side becomes ``size`` and the long side int(size * long / short)
  (truncated, as get_resize_sizes); a frame whose short side already is
  ``size`` keeps its size (resize_clip returns it untouched).
  """
  if (w <= h and w == size) or (h <= w and h == size):
    return h, w
  if w < h:
    return int(size * h / w), size
  return size, int(size * w / h)


def resize_short_side(clip: np.ndarray, size: int,
                      src_hw: tuple[int, int] | None = None) -> np.ndarray:
  """Every frame resized (cv2 bilinear) to the reference's short-side size.

  The output size is computed from ``src_hw`` (the stored frame size) when
  given, so frames decoded at a reduced JPEG DCT size end up exactly as large
  as the reference's full-size frames would.
  """
  out_h, out_w = short_side_sizes(*(src_hw or clip.shape[1:3]), size)
  if clip.shape[1:3] == (out_h, out_w):
    return clip
  out = np.empty((clip.shape[0], out_h, out_w, clip.shape[3]), np.uint8)
  for t in range(clip.shape[0]):
    cv2.resize(clip[t], (out_w, out_h), dst=out[t], interpolation=cv2.INTER_LINEAR)
  return out


def spatial_crop_starts(long: int, size: int, num_crops: int) -> list[int]:
  """Offsets along the long side of the reference's ``num_crops`` test crops.

  int(i * (long - size) / (num_crops - 1)) in the reference's float order;
  one crop (where the reference divides by zero) is the centre, (long - size) // 2.
  """
  if num_crops == 1:
    return [(long - size) // 2]
  step = 1.0 * (long - size) / (num_crops - 1)
  return [int(i * step) for i in range(num_crops)]


def spatial_crops(clip: np.ndarray, size: int, num_crops: int) -> list[np.ndarray]:
  """The reference's test-time crops: ``num_crops`` windows of ``size`` along the long side.

  Rows are cropped when h >= w, else columns; the other axis is kept whole,
  so ``clip`` must already have its short side resized to ``size``.
  """
  h, w = clip.shape[1:3]
  if min(h, w) != size:
    raise ValueError(f"test crops need the short side resized to {size}, got {h}x{w}")
  crops = []
  for start in spatial_crop_starts(max(h, w), size, num_crops):
    if h >= w:
      crops.append(clip[:, start:start + size])
    else:
      crops.append(clip[:, :, start:start + size])
  return [np.ascontiguousarray(c) for c in crops]


def center_crop_offsets(h: int, w: int, size: int) -> tuple[int, int]:
  """(y, x) of the reference's CenterCrop(size): int(round((dim - size) / 2.))."""
  if size > h or size > w:
    raise ValueError(f"centre crop {size} is larger than the {h}x{w} frame")
  return int(round((h - size) / 2.)), int(round((w - size) / 2.))


def center_crop(clip: np.ndarray, size: int) -> np.ndarray:
  """The size x size centre window of every frame (validation mode)."""
  y, x = center_crop_offsets(*clip.shape[1:3], size)
  return np.ascontiguousarray(clip[:, y:y + size, x:x + size])


def decode_size_for_resize(h: int, w: int, size: int) -> tuple[int, int]:
  """Smallest decoded (h, w) for a short-side resize of an h x w frame to ``size``.

  The decoder returns the smallest reduced DCT size at least this large; the
  resize then maps it onto the reference's size, so nothing is upsampled
  that the reference would not upsample.
  """
  out_h, out_w = short_side_sizes(h, w, size)
  return min(out_h, h), min(out_w, w)


# --------------------------------------------------------------------------
# Random erasing (one box for all frames, per-pixel normal noise)
# --------------------------------------------------------------------------


def random_erasing_params(h: int, w: int, rng: np.random.Generator, probability: float = 0.25,
                          min_area: float = 0.02, max_area: float = 1 / 3,
                          min_aspect: float = 0.3, attempts: int = 10) -> Box | None:
  """The erased box shared by all frames, or None (not applied / no box fits)."""
  if rng.random() >= probability:
    return None
  log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
  for _ in range(attempts):
    target = rng.uniform(min_area, max_area) * h * w
    aspect = math.exp(rng.uniform(*log_aspect))
    eh = int(round(math.sqrt(target * aspect)))
    ew = int(round(math.sqrt(target / aspect)))
    if ew < w and eh < h:
      y = int(rng.integers(0, h - eh + 1))
      x = int(rng.integers(0, w - ew + 1))
      return y, x, eh, ew
  return None


def apply_erasing(clip: np.ndarray, box: Box | None, rng: np.random.Generator,
                  mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
  """Fill ``box`` in every frame with per-pixel N(0,1) noise of the normalised space.

  The reference draws noise after normalisation; here it is mapped back to
  pixels (mean + std * z, the model's statistics) and clipped to 0..255, so
  the device's normalisation sees the same noise up to clipping and rounding.
  """
  if box is None:
    return clip
  y, x, h, w = box
  z = rng.standard_normal((clip.shape[0], h, w, 3), dtype=np.float32)
  pixels = (np.asarray(mean, np.float32) + np.asarray(std, np.float32) * z) * 255.0
  clip = clip.copy()
  clip[:, y:y + h, x:x + w] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
  return clip
