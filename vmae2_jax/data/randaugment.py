"""RandAugment for clips: one set of op parameters for every frame of a clip.

Follows the timm policy string the reference uses, ``rand-m7-n4-mstd0.5-inc1``:
n ops drawn uniformly with replacement from the 15-op (increasing) set, each
applied with probability 0.5 at magnitude ~ N(m, mstd) clipped to [0, 10],
with a random sign for the signed ops. ``sample`` draws those choices once
per clip; ``apply`` runs them on every frame with OpenCV on uint8, so frames
never differ in the transform they get. Image-statistics ops (AutoContrast,
Equalize, Contrast's mean) use each frame's own statistics, as applying the
PIL op frame by frame does in the reference.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import cv2
import numpy as np

LEVEL_DENOM = 10.0
# The reference's video path builds RandAugment without img_mean
# (video_transforms.create_random_augment), so rand_augment.py's _FILL grey applies.
FILL = (128, 128, 128)

INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                  "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                  "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
                  "TranslateXRel", "TranslateYRel")
ORIGINAL_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                "TranslateXRel", "TranslateYRel")
SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing",
          "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"}


def level_to_arg(op: str, level: float, sign: float, translate_pct: float = 0.45):
  """The op's argument at magnitude ``level`` in [0, 10] (timm's level functions)."""
  f = level / LEVEL_DENOM
  if op == "Rotate":
    return sign * f * 30.0
  if op in ("ShearX", "ShearY"):
    return sign * f * 0.3
  if op in ("TranslateXRel", "TranslateYRel"):
    return sign * f * translate_pct
  if op.endswith("Increasing") and op not in ("PosterizeIncreasing", "SolarizeIncreasing"):
    return 1.0 + sign * f * 0.9
  if op in ("Color", "Contrast", "Brightness", "Sharpness"):
    return f * 1.8 + 0.1
  if op == "PosterizeIncreasing":
    return 4 - int(f * 4)
  if op == "Posterize":
    return int(f * 4) + 4
  if op == "SolarizeIncreasing":
    return 256 - int(f * 256)
  if op == "Solarize":
    return int(f * 256)
  if op == "SolarizeAdd":
    return int(f * 110)
  return None


@dataclasses.dataclass(frozen=True)
class RandAugment:
  """A parsed policy; ``sample`` draws a clip's ops, ``apply`` runs them."""
  magnitude: float = 7.0
  num_layers: int = 4
  magnitude_std: float = 0.5
  increasing: bool = True
  prob: float = 0.5
  translate_pct: float = 0.45

  @classmethod
  def from_string(cls, spec: str) -> "RandAugment":
    parts = spec.split("-")
    if parts[0] != "rand":
      raise ValueError(f"not a RandAugment policy: {spec!r}")
    kw = {}
    for p in parts[1:]:
      if p.startswith("mstd"):
        kw["magnitude_std"] = float(p[4:])
      elif p.startswith("inc"):
        kw["increasing"] = bool(int(p[3:]))
      elif p.startswith("m"):
        kw["magnitude"] = float(p[1:])
      elif p.startswith("n"):
        kw["num_layers"] = int(p[1:])
      elif p.startswith("p"):
        kw["prob"] = float(p[1:])
      else:
        raise ValueError(f"unsupported RandAugment option {p!r} in {spec!r}")
    return cls(**kw)

  @property
  def ops(self) -> Sequence[str]:
    return INCREASING_OPS if self.increasing else ORIGINAL_OPS

  def sample(self, rng: np.random.Generator) -> list[tuple[str, object]]:
    """The (op, argument) list for one clip; ops that the coin skips are left out."""
    chosen = rng.integers(0, len(self.ops), self.num_layers)
    out = []
    for k in chosen:
      op = self.ops[int(k)]
      apply = rng.random() < self.prob
      level = self.magnitude
      if self.magnitude_std == float("inf"):
        level = rng.uniform(0, level)
      elif self.magnitude_std > 0:
        level = rng.normal(level, self.magnitude_std)
      level = float(np.clip(level, 0.0, LEVEL_DENOM))
      sign = -1.0 if rng.random() > 0.5 else 1.0
      if apply:
        out.append((op, level_to_arg(op, level, sign, self.translate_pct)))
    return out

  def __call__(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return apply_ops(clip, self.sample(rng))


# --------------------------------------------------------------------------
# Ops on uint8 [T, H, W, 3]
# --------------------------------------------------------------------------


def _lut(clip: np.ndarray, table: np.ndarray) -> np.ndarray:
  t, h, w, c = clip.shape
  out = cv2.LUT(np.ascontiguousarray(clip).reshape(t * h, w, c), table.astype(np.uint8))
  return out.reshape(t, h, w, c)


def _per_frame(clip: np.ndarray, fn) -> np.ndarray:
  out = np.empty_like(clip)
  for i in range(clip.shape[0]):
    out[i] = fn(clip[i])
  return out


def _gray(frame: np.ndarray) -> np.ndarray:
  """PIL's L conversion (ITU-R 601-2 luma), uint8 [H, W]."""
  return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _blend(a: np.ndarray, degenerate: np.ndarray | float, factor: float) -> np.ndarray:
  """degenerate + factor * (a - degenerate), saturated to uint8 (PIL ImageEnhance)."""
  if np.isscalar(degenerate):
    return cv2.addWeighted(a, factor, a, 0.0, (1.0 - factor) * float(degenerate))
  return cv2.addWeighted(a, factor, degenerate, 1.0 - factor, 0.0)


def _lut3(frame: np.ndarray, tables: np.ndarray) -> np.ndarray:
  """Per-channel lookup: tables uint8 [256, 3]."""
  return cv2.LUT(frame, np.ascontiguousarray(tables.reshape(256, 1, 3).astype(np.uint8)))


def _autocontrast(frame: np.ndarray) -> np.ndarray:
  stats = [cv2.minMaxLoc(c)[:2] for c in cv2.split(frame)]
  lo = np.array([s[0] for s in stats])
  hi = np.array([s[1] for s in stats])
  x = np.arange(256, dtype=np.float64)[:, None]
  scale = 255.0 / np.maximum(hi - lo, 1)
  tables = np.where(hi > lo, np.clip((x - lo) * scale, 0, 255), x)
  return _lut3(frame, tables)


def _equalize(frame: np.ndarray) -> np.ndarray:
  flat = frame.reshape(-1, 3)
  tables = np.empty((256, 3), np.int64)
  for c in range(3):
    hist = cv2.calcHist([frame], [c], None, [256], [0, 256]).ravel().astype(np.int64)
    nonzero = hist[hist > 0]
    step = (len(flat) - nonzero[-1]) // 255 if len(nonzero) else 0
    if step == 0:
      tables[:, c] = np.arange(256)
    else:
      tables[:, c] = np.clip((np.cumsum(hist) - hist + step // 2) // step, 0, 255)
  return _lut3(frame, tables)


def _affine(clip: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """Output pixel (x, y) samples input matrix @ (x, y, 1) (PIL's affine convention)."""
  h, w = clip.shape[1:3]
  flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
  # PIL samples at pixel centres (x + 0.5); OpenCV at integer coordinates.
  matrix = np.array(matrix, np.float64)
  matrix[:, 2] += 0.5 * (matrix[:, 0] + matrix[:, 1] - 1.0)
  return _per_frame(clip, lambda f: cv2.warpAffine(f, matrix, (w, h), flags=flags,
                                                   borderMode=cv2.BORDER_CONSTANT,
                                                   borderValue=FILL))


def apply_op(clip: np.ndarray, op: str, arg) -> np.ndarray:
  """One op with one argument on every frame."""
  h, w = clip.shape[1:3]
  if op == "AutoContrast":
    return _per_frame(clip, _autocontrast)
  if op == "Equalize":
    return _per_frame(clip, _equalize)
  if op == "Invert":
    return 255 - clip
  if op in ("Posterize", "PosterizeIncreasing"):
    bits = int(arg)
    if bits >= 8:
      return clip
    mask = ~(2 ** (8 - bits) - 1) & 0xFF
    return _lut(clip, np.arange(256) & mask)
  if op in ("Solarize", "SolarizeIncreasing"):
    x = np.arange(256)
    return _lut(clip, np.where(x < arg, x, 255 - x))
  if op == "SolarizeAdd":
    x = np.arange(256)
    return _lut(clip, np.where(x < 128, np.minimum(x + arg, 255), x))
  if op in ("Color", "ColorIncreasing"):
    return _per_frame(clip, lambda f: _blend(f, cv2.cvtColor(_gray(f), cv2.COLOR_GRAY2RGB), arg))
  if op in ("Contrast", "ContrastIncreasing"):
    return _per_frame(clip, lambda f: _blend(f, int(_gray(f).mean() + 0.5), arg))
  if op in ("Brightness", "BrightnessIncreasing"):
    return _per_frame(clip, lambda f: _blend(f, 0.0, arg))
  if op in ("Sharpness", "SharpnessIncreasing"):
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0

    def sharpen(f):
      smooth = cv2.filter2D(f, -1, kernel, borderType=cv2.BORDER_REPLICATE)
      smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = f[0], f[-1], f[:, 0], f[:, -1]
      return _blend(f, smooth, arg)
    return _per_frame(clip, sharpen)
  if op == "Rotate":
    # PIL's Image.rotate(arg): counter-clockwise about (w/2, h/2), as an inverse map.
    a = -np.deg2rad(arg)
    cx, cy = w / 2.0, h / 2.0
    m = np.array([[np.cos(a), np.sin(a), 0.0], [-np.sin(a), np.cos(a), 0.0]])
    m[:, 2] = [cx - m[0, 0] * cx - m[0, 1] * cy, cy - m[1, 0] * cx - m[1, 1] * cy]
    return _affine(clip, m)
  if op == "ShearX":
    return _affine(clip, np.array([[1, arg, 0], [0, 1, 0]], np.float64))
  if op == "ShearY":
    return _affine(clip, np.array([[1, 0, 0], [arg, 1, 0]], np.float64))
  if op == "TranslateXRel":
    return _affine(clip, np.array([[1, 0, arg * w], [0, 1, 0]], np.float64))
  if op == "TranslateYRel":
    return _affine(clip, np.array([[1, 0, 0], [0, 1, arg * h]], np.float64))
  raise ValueError(f"unknown RandAugment op {op!r}")


def apply_ops(clip: np.ndarray, ops: Sequence[tuple[str, object]]) -> np.ndarray:
  for op, arg in ops:
    clip = apply_op(clip, op, arg)
  return clip
