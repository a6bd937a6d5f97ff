"""Generated moving-pattern clips: deterministic, download-free training data.

Each clip is a function of (seed, index): a drifting colour grating behind a
few moving shapes, some of them textured. Every cube has structure at the
scale of a patch that its neighbours in space and time predict, which is what
the per-cube normalised MAE target rewards (flat or gently shaded cubes would
normalise to pure quantisation noise).
"""

from __future__ import annotations

import numpy as np


def _grating(rng, frames: int, size: int) -> np.ndarray:
  """[frames, size, size, 3] float in [0, 1]: a drifting two-colour sinusoid."""
  t = np.arange(frames, dtype=np.float32)[:, None, None]
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  theta = rng.uniform(0, np.pi)
  wavelength = rng.uniform(16, 40)
  speed = rng.uniform(-1.5, 1.5)
  phase = rng.uniform(0, 2 * np.pi)
  u = (np.cos(theta) * xx + np.sin(theta) * yy)[None] + speed * t
  wave = 0.5 + 0.5 * np.sin(2 * np.pi * u / wavelength + phase)
  c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
  return c0 + (c1 - c0) * wave[..., None]


def moving_pattern_clip(index: int, frames: int, size: int, seed: int = 0) -> np.ndarray:
  """uint8 [frames, size, size, 3]."""
  rng = np.random.default_rng([seed, index])
  clip = _grating(rng, frames, size)
  t = np.arange(frames, dtype=np.float32)[:, None, None]
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  for _ in range(rng.integers(1, 4)):
    radius = rng.uniform(0.1, 0.25)
    cy, cx = rng.uniform(0.2, 0.8, 2)
    vy, vx = rng.uniform(-0.03, 0.03, 2)
    dy, dx = yy[None] - (cy + vy * t), xx[None] - (cx + vx * t)
    if rng.random() < 0.5:
      inside = (np.abs(dy) < radius) & (np.abs(dx) < radius)
    else:
      inside = dy ** 2 + dx ** 2 < radius ** 2
    fill = _grating(rng, frames, size) if rng.random() < 0.5 else rng.uniform(0, 1, 3)
    clip = np.where(inside[..., None], fill, clip)
  return np.clip(clip * 255.0 + 0.5, 0, 255).astype(np.uint8)


class SyntheticIterator:
  """Batches of generated clips with Grain's iterator protocol (get/set_state).

  Clip i of the global stream is the same whatever the host count: process p
  of n takes every n-th clip, so resumption and multi-host slicing replay
  exactly.
  """

  def __init__(self, *, batch_size: int, frames: int, size: int, num_sample: int,
               seed: int = 0, process_index: int = 0, process_count: int = 1,
               num_videos: int = 0):
    if batch_size % process_count:
      raise ValueError(f"config.batch_size={batch_size} does not split over {process_count} hosts")
    self.local_batch = batch_size // process_count
    self.frames, self.size, self.num_sample, self.seed = frames, size, num_sample, seed
    self.process_index, self.process_count = process_index, process_count
    self.num_videos = num_videos  # 0 = endless stream of new clips
    self.position = 0  # batches produced by this iterator

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    clips = []
    for j in range(self.local_batch):
      global_index = (self.position * self.local_batch + j) * self.process_count + self.process_index
      if self.num_videos:
        global_index %= self.num_videos
      clip = moving_pattern_clip(global_index, self.frames, self.size, self.seed)
      clips.extend([clip] * self.num_sample)
    self.position += 1
    return {"video": np.stack(clips)}

  def get_state(self) -> dict:
    return {"position": self.position}

  def set_state(self, state: dict) -> None:
    self.position = int(state.get("position", 0))
