"""Writes tests/data/torch_reference/roi_align.npz: torchvision's roi_align on fixed inputs.

The reference detection head pools with torchvision.ops.roi_align(aligned=False,
sampling_ratio=0: ceil(roi / output) samples per bin side). Run from the
repository root in an environment with torch and torchvision (CPU wheels):

  python -m tests.make_roi_reference

It needs only numpy besides them; inputs are drawn here from a fixed seed and
stored beside the outputs, so the test reads both. Where torchvision's compiled
ops do not load (a CUDA torchvision wheel beside a CPU torch: PyPI's only
builds), torchvision.ops.roi_align runs its own pure-PyTorch transcription of
the kernel; MANIFEST.json records which ran. That transcription lacks the
kernel's zeroing of samples beyond [-1, size], so every box here keeps its
samples inside that range (boxes past the map by under a quarter cell); the
zeroing is checked by hand in tests/test_detector.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch


def _import_torchvision():
  """torchvision, and whether its compiled ops loaded."""
  try:
    import torchvision
    return torchvision, True
  except RuntimeError:  # its fake-op registrations fail without the compiled ops
    register_fake = torch.library.register_fake
    torch.library.register_fake = lambda *a, **k: (lambda fn: fn)
    try:
      import torchvision
    finally:
      torch.library.register_fake = register_fake
    return torchvision, False


torchvision, COMPILED = _import_torchvision()

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torch_reference")
NAME = "roi_align.npz"
SCALE = 1.0 / 16
OUT = 7


def inputs() -> dict[str, np.ndarray]:
  """A 2-image map of 9 x 23 cells (144 x 368 pixels at scale 1/16), 8 boxes per image:
  1 to 4 samples per bin side."""
  rng = np.random.default_rng(20)
  features = rng.standard_normal((2, 9, 23, 5)).astype(np.float32)     # [B, H, W, C]
  h, w = 9 * 16, 23 * 16
  boxes = np.array([
      [[0, 0, w - 1, h - 1],            # the whole frame
       [0, 0, 20, 30],                  # at the top-left corner
       [w - 25, h - 17, w - 1, h - 1],  # at the bottom-right edge
       [50.3, 60.7, 52.1, 61.0],        # tiny (under one cell: roi size clamped to 1)
       [-4, -4, w + 4, h + 4],          # larger than the map on every side
       [100.5, 20.25, 180.75, 130.5],   # generic
       [w - 16, 10, w, 40],             # one cell wide at the right edge
       [10, 10, 10, 10]],               # degenerate (a padded slot)
      [[5, 5, 120, 100],
       [30.2, 40.9, 200.1, 140.3],
       [0, 70, 15, h - 1],
       [150, 0, w - 1, 8],
       [-3, -3, 5, 5],
       [60, 60, 61, 61],
       [0, 0, w + 3, h + 3],
       [77.7, 33.3, 140.4, 111.1]]], np.float32)
  return {"features": features, "boxes": boxes}


def check_samples_inside(boxes: np.ndarray, height: int, width: int) -> None:
  """Every box's samples within [-1, size] (see the module doc)."""
  for box in boxes.reshape(-1, 4) * SCALE:
    for start, end, size in ((box[1], box[3], height), (box[0], box[2], width)):
      roi = max(end - start, 1.0)
      grid = int(np.ceil(roi / OUT))
      pos = start + roi / OUT * (np.arange(OUT)[:, None] + (np.arange(grid) + 0.5) / grid)
      assert pos.min() >= -1 and pos.max() <= size, (box / SCALE, pos.min(), pos.max())


def torchvision_roi_align(features: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """[B, H, W, C], [B, N, 4] -> [B, N, OUT, OUT, C] through one flat rois [K, 5] call."""
  b, n = boxes.shape[:2]
  ids = np.repeat(np.arange(b, dtype=np.float32), n)[:, None]
  rois = torch.from_numpy(np.concatenate([ids, boxes.reshape(-1, 4)], axis=1))
  x = torch.from_numpy(features).permute(0, 3, 1, 2).contiguous()
  if COMPILED:
    out = torchvision.ops.roi_align(x, rois, (OUT, OUT), spatial_scale=SCALE, sampling_ratio=0,
                                    aligned=False)
  else:  # the same function's fallback, called without its lazy torch.compile
    from torchvision.ops.roi_align import _roi_align
    out = _roi_align.__wrapped__(x, rois, SCALE, OUT, OUT, 0, False)
  return out.permute(0, 2, 3, 1).numpy().reshape(b, n, OUT, OUT, -1)


def main() -> None:
  x = inputs()
  check_samples_inside(x["boxes"], *x["features"].shape[1:3])
  out = torchvision_roi_align(x["features"], x["boxes"])
  np.savez(os.path.join(ROOT, NAME), output=out, **x)
  manifest_path = os.path.join(ROOT, "MANIFEST.json")
  with open(manifest_path) as f:
    manifest = json.load(f)
  manifest[NAME] = {"made_by": "python -m tests.make_roi_reference",
                    "torch": torch.__version__, "torchvision": torchvision.__version__,
                    "implementation": ("torchvision.ops.roi_align (compiled CPU kernel)"
                                       if COMPILED else "torchvision.ops.roi_align._roi_align "
                                       "(its pure-PyTorch transcription of the kernel)"),
                    "numpy": np.__version__}
  with open(manifest_path, "w") as f:
    json.dump(manifest, f, indent=1)
  print(f"wrote {NAME}: output {out.shape}")


if __name__ == "__main__":
  main()
