"""Writes tests/data/torch_reference/roi_align.npz: torchvision's roi_align on fixed inputs.

The reference detection head pools with torchvision.ops.roi_align(aligned=False,
sampling_ratio=0: ceil(roi / output) samples per bin side). Run from the
repository root in an environment with torch and torchvision (CPU wheels):

  python -m tests.make_roi_reference

It needs only numpy besides them; inputs are drawn here from a fixed seed and
stored beside the outputs, so the test reads both.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torchvision
from torchvision.ops import roi_align

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torch_reference")
NAME = "roi_align.npz"
SCALE = 1.0 / 16
OUT = 7


def inputs() -> dict[str, np.ndarray]:
  """A 2-image map of 9 x 13 cells (144 x 208 pixels at scale 1/16), 8 boxes per image."""
  rng = np.random.default_rng(20)
  features = rng.standard_normal((2, 9, 13, 5)).astype(np.float32)     # [B, H, W, C]
  h, w = 9 * 16, 13 * 16
  boxes = np.array([
      [[0, 0, w - 1, h - 1],            # the whole frame
       [0, 0, 20, 30],                  # at the top-left corner
       [w - 25, h - 17, w - 1, h - 1],  # at the bottom-right edge
       [50.3, 60.7, 52.1, 61.0],        # tiny (under one cell: roi size clamped to 1)
       [-40, -30, w + 60, h + 50],      # larger than the map on every side
       [100.5, 20.25, 180.75, 130.5],   # generic
       [w - 3, 10, w + 30, 40],         # mostly outside on the right
       [10, 10, 10, 10]],               # degenerate (a padded slot)
      [[5, 5, 120, 100],
       [30.2, 40.9, 200.1, 140.3],
       [0, 70, 15, h - 1],
       [150, 0, w - 1, 8],
       [-10, -10, 5, 5],
       [60, 60, 61, 61],
       [0, 0, w * 2, h * 2],
       [77.7, 33.3, 140.4, 111.1]]], np.float32)
  return {"features": features, "boxes": boxes}


def torchvision_roi_align(features: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """[B, H, W, C], [B, N, 4] -> [B, N, OUT, OUT, C] through one flat rois [K, 5] call."""
  b, n = boxes.shape[:2]
  ids = np.repeat(np.arange(b, dtype=np.float32), n)[:, None]
  rois = torch.from_numpy(np.concatenate([ids, boxes.reshape(-1, 4)], axis=1))
  x = torch.from_numpy(features).permute(0, 3, 1, 2).contiguous()
  out = roi_align(x, rois, (OUT, OUT), spatial_scale=SCALE, sampling_ratio=0, aligned=False)
  return out.permute(0, 2, 3, 1).numpy().reshape(b, n, OUT, OUT, -1)


def main() -> None:
  x = inputs()
  out = torchvision_roi_align(x["features"], x["boxes"])
  np.savez(os.path.join(ROOT, NAME), output=out, **x)
  manifest_path = os.path.join(ROOT, "MANIFEST.json")
  with open(manifest_path) as f:
    manifest = json.load(f)
  manifest[NAME] = {"made_by": "python -m tests.make_roi_reference",
                    "torch": torch.__version__, "torchvision": torchvision.__version__,
                    "numpy": np.__version__}
  with open(manifest_path, "w") as f:
    json.dump(manifest, f, indent=1)
  print(f"wrote {NAME}: output {out.shape}")


if __name__ == "__main__":
  main()
