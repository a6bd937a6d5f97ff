"""Generated clips with a known label: shapes drifting left, right, up or down.

The class of a clip is the direction of drift, which no single frame shows:
positions, colours, sizes, speed and the start phase are drawn per clip and
shapes wrap around the frame edges, so only the change between frames tells
the classes apart (a single-frame model stays at chance). Light shapes on a
dark background: a frame difference then has a fixed sign at the leading edge.

``write_motion_dataset`` writes such clips as a user's own data would be (a
folder per class of JPEG frame folders, or mp4 files) and builds shard sets
from them through data_prep.build_shards. The embedded demo's labelled set
(demo:motion_train / demo:motion_val, data_prep.build_demo) and the "it
learns" check (python -m vmae2_jax.bench learning, tests/test_learning.py)
are made this way.

  from data_prep import generated
  paths = generated.write_motion_dataset("/tmp/motion", num_train=256, num_val=64)
  # paths["train"], paths["val"]: shard-set directories for config.data.*_path
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from data_prep import build_shards, lists
from vmae2_jax.data import shards as shard_format

CLASSES = ("left", "right", "up", "down")
DIRECTIONS = {0: (0.0, -1.0), 1: (0.0, 1.0), 2: (-1.0, 0.0), 3: (1.0, 0.0)}  # (dy, dx)


def motion_clip(label: int, index: int, *, frames: int = 32, size: int = 32, seed: int = 0,
                speed: tuple[float, float] = (0.5, 1.0), shapes: tuple[int, int] = (2, 4),
                light_shapes: bool = True, noise: float = 4.0) -> np.ndarray:
  """uint8 [frames, size, size, 3]: random shapes drifting in the label's direction.

  speed: pixels per frame, drawn uniformly per clip; noise: std of the static
  background noise. The clip is a pure function of (seed, label, index).
  Shapes are drawn anti-aliased (soft edges) so sub-pixel motion shows, and
  wrap around the frame edges (no edge cue).
  """
  if label not in DIRECTIONS:
    raise ValueError(f"label {label} is not one of {sorted(DIRECTIONS)}")
  rng = np.random.default_rng([seed, label, index])
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  # Background: a dark random colour gradient plus faint fixed noise (static: no motion
  # cue). Shapes are brighter than it (light_shapes), so a frame difference has a fixed sign
  # at the leading edge; with light_shapes=False both are random (harder to learn).
  lo, hi = ((0, 70), (130, 255)) if light_shapes else ((40, 215), (0, 255))
  base = rng.uniform(*lo, 3)
  tilt = rng.uniform(-20, 20, (2, 3))
  background = (base + (yy / size)[..., None] * tilt[0] + (xx / size)[..., None] * tilt[1]
                + rng.normal(0, 1, (size, size, 3)) * noise)
  clip = np.broadcast_to(background, (frames, size, size, 3)).astype(np.float32)
  dy, dx = DIRECTIONS[label]
  v = rng.uniform(*speed)
  t = np.arange(frames, dtype=np.float32)[:, None, None]
  for _ in range(int(rng.integers(shapes[0], shapes[1] + 1))):
    colour = rng.uniform(*hi, 3).astype(np.float32)
    radius = rng.uniform(0.10, 0.22) * size
    y0, x0 = rng.uniform(0, size, 2)
    square = rng.random() < 0.5
    cy = (y0 + dy * v * t) % size
    cx = (x0 + dx * v * t) % size
    # Distance on the torus, so a shape crossing an edge re-enters on the other side.
    ddy = np.abs(yy[None] - cy)
    ddy = np.minimum(ddy, size - ddy)
    ddx = np.abs(xx[None] - cx)
    ddx = np.minimum(ddx, size - ddx)
    dist = np.maximum(ddy, ddx) if square else np.sqrt(ddy ** 2 + ddx ** 2)
    alpha = np.clip(radius - dist + 0.5, 0.0, 1.0)[..., None]  # 1-pixel soft edge
    clip = clip * (1 - alpha) + colour * alpha
  return np.clip(np.round(clip), 0, 255).astype(np.uint8)


def write_frame_folder(folder: str, clip: np.ndarray, quality: int = 95) -> None:
  """JPEG frames img_00001.jpg, ... (the frame-folder layout build_shards reads)."""
  os.makedirs(folder, exist_ok=True)
  for t, frame in enumerate(clip):
    with open(os.path.join(folder, f"img_{t + 1:05d}.jpg"), "wb") as f:
      f.write(shard_format.encode_jpeg(frame, quality=quality))


def write_mp4(path: str, clip: np.ndarray, fps: int = 25) -> str:
  """H.264 mp4 (PyAV, yuv420p, near-lossless crf) of a uint8 [T, H, W, 3] clip (even H, W)."""
  import av
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with av.open(path, mode="w") as container:
    stream = container.add_stream("libx264", rate=fps)
    stream.height, stream.width = clip.shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": "10"}
    for frame in clip:
      for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                             format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return path


def write_motion_dataset(out: str, *, num_train: int = 64, num_val: int = 32,
                         frames: int = 32, size: int = 32, seed: int = 0,
                         speed: tuple[float, float] = (0.5, 1.0), file_format: str = "frames",
                         quality: int = 95, noise: float = 4.0, prefix: str = "",
                         log=None) -> dict:
  """Writes ``num_train`` + ``num_val`` clips (classes balanced, held-out clips from
  another seed) as a folder per class, builds shards with data_prep.build_shards
  and returns {"train": path, "val": path} (shard-set paths for config.data.*_path).

  file_format: "frames" (JPEG frame folders) or "mp4" (one video file a clip).
  prefix "": shard sets in out/train and out/val; prefix "motion": both in the flat
  folder ``out`` as motion_train.manifest.json / motion_val.manifest.json (the
  embedded demo's layout, read as demo:motion_train).
  """
  if file_format not in ("frames", "mp4"):
    raise ValueError(f"file_format={file_format!r} is not frames|mp4")
  paths = {}
  with tempfile.TemporaryDirectory() as tmp:
    for split, count, split_seed in (("train", num_train, 2 * seed),
                                     ("val", num_val, 2 * seed + 1)):
      folder = os.path.join(tmp, split)
      for i in range(count):
        label = i % len(CLASSES)
        clip = motion_clip(label, i // len(CLASSES), frames=frames, size=size,
                           seed=split_seed, speed=speed, noise=noise)
        dest = os.path.join(folder, CLASSES[label], f"clip_{i:04d}")
        if file_format == "frames":
          write_frame_folder(dest, clip)
        else:
          write_mp4(dest + ".mp4", clip)
      for name in CLASSES:  # a class with no clip still gets its index
        os.makedirs(os.path.join(folder, name), exist_ok=True)
      listing = lists.scan_folder(folder, label_names=CLASSES)
      name = f"{prefix or 'motion'}_{split}"
      if prefix:
        target = out
        manifest_name = f"{name}.manifest.json"
        paths[split] = os.path.join(out, manifest_name)
      else:
        target = paths[split] = os.path.join(out, split)
        manifest_name = shard_format.MANIFEST
        if os.path.isdir(target):
          shutil.rmtree(target)
      opts = build_shards.BuildOptions(root=folder, out=target, short_side=0, quality=quality,
                                       min_frames=4, videos_per_shard=max(count, 1),
                                       name=name, source=name, manifest_name=manifest_name)
      manifest = build_shards.build(listing.entries, opts, workers=1,
                                    label_names=listing.names, log=log or (lambda s: None),
                                    progress=False)
      if manifest["num_failed"]:
        raise RuntimeError(f"motion {split}: {manifest['failures']}")
  return paths
