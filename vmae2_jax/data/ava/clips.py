"""Which frames a keyframe's clip holds, as the reference samples them.

AVA annotates one keyframe per second. The reference (VideoMAE's AVA
detection code) loads the 64 frames around the keyframe (32 before it, the
keyframe and 31 after) and takes 16 of them at stride 4 starting one frame in:
offsets -31, -27, ..., +29 from the keyframe. Frames before the movie's
first or after its last are clamped to those, as the reference clamps to the
frames it loaded.

Frame folders follow AVA's common layout: ``<video>/<video>_%06d.jpg`` at
30 fps, numbered from 1, frame 1 at second ``first_second`` (900: AVA's
annotated 15 minutes start at 15:00). Per-second clips (``<video>/<t>.mp4``,
the reference's own layout) start at second t, so the keyframe is their
first frame.
"""

from __future__ import annotations

import numpy as np

FPS = 30
FIRST_SECOND = 900


def clip_offsets(frames: int = 16, stride: int = 4) -> np.ndarray:
  """Frame offsets from the keyframe: -31, -27, ..., 29 for 16 frames at stride 4."""
  start = -(frames * stride) // 2 + (stride - 1) // 2
  return start + stride * np.arange(frames)


def keyframe_index(timestamp: int, *, fps: float = FPS, first_second: int = FIRST_SECOND) -> int:
  """0-based index (in the movie's frame sequence) of the keyframe at ``timestamp`` seconds."""
  return int(round((timestamp - first_second) * fps))


def clip_frame_indices(key_index: int, num_frames: int, *, frames: int = 16,
                       stride: int = 4) -> np.ndarray:
  """0-based frame indices of the keyframe's clip, clamped into [0, num_frames)."""
  return np.clip(key_index + clip_offsets(frames, stride), 0, num_frames - 1)
