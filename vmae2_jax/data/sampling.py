"""Which frames of a video a clip uses (official_semantics.md section 5).

Every function restates the reference's arithmetic (dataset/datasets.py:
VideoClsDataset for dense sampling, RawFrameClsDataset for segment sampling)
in the same floating-point order, so the indices are the reference's to the
frame. All return int64 indices in [0, num_frames); the random ones take a
NumPy Generator, so a clip is a pure function of (seed, element index).

Three modes, as the reference's dataset modes:
  train       random (dense window or one random frame per segment)
  validation  one deterministic view per video (in-training evaluation)
  test        ``num_views`` deterministic temporal views per video
"""

from __future__ import annotations

import numpy as np

MODES = ("dense", "segment")


def pretrain_indices(num_frames: int, rng: np.random.Generator, frames: int,
                     stride: int) -> np.ndarray:
  """Start uniform in [0, N - frames*stride], ``frames`` steps of ``stride``, clamped to N-1."""
  span = frames * stride
  start = int(rng.integers(0, max(num_frames - span, 0) + 1))
  return np.minimum(start + np.arange(frames) * stride, num_frames - 1)


# --------------------------------------------------------------------------
# Dense sampling (VideoClsDataset, num_segment = 1)
# --------------------------------------------------------------------------


def _dense_window(num_frames: int, frames: int, stride: int, end: int | None) -> np.ndarray:
  """The reference's load_video for one segment; ``end`` None means a short video."""
  span = int(frames * stride)
  if end is None:
    # Short video: read at the stride from 0, padded with N, clipped to the last frame.
    n = num_frames // stride
    idx = np.linspace(0, num_frames, num=n)
    idx = np.concatenate((idx, np.ones(frames - n) * num_frames))
    return np.clip(idx, 0, num_frames - 1).astype(np.int64)
  start = end - span
  idx = np.linspace(start, end, num=frames)
  return np.clip(idx, start, end - 1).astype(np.int64)


def dense_train_indices(num_frames: int, rng: np.random.Generator, frames: int,
                        stride: int) -> np.ndarray:
  """``frames`` indices linearly spaced over a random window of frames*stride frames.

  A video no longer than the window is read at ``stride`` from its start and
  padded with its last frame, as the reference's dense sampler does.
  """
  span = frames * stride
  if num_frames <= span:
    return _dense_window(num_frames, frames, stride, None)
  return _dense_window(num_frames, frames, stride, int(rng.integers(span, num_frames)))


def dense_val_indices(num_frames: int, frames: int, stride: int) -> np.ndarray:
  """Validation mode: the window of frames*stride frames centred in the video."""
  span = frames * stride
  if num_frames <= span:
    return _dense_window(num_frames, frames, stride, None)
  return _dense_window(num_frames, frames, stride, (span + num_frames) // 2)


def dense_eval_indices(num_frames: int, view: int, num_views: int, frames: int,
                       stride: int) -> np.ndarray:
  """Temporal view ``view`` of ``num_views``, as the reference's test mode.

  The video is read at ``stride`` from frame 0 (padded with its last index to
  at least ``frames``: M indices), and view v takes ``frames`` consecutive
  entries from int(v * max((M - frames) / (num_views - 1), 0)). With one view
  (where the reference divides by zero) the window is centred:
  start = (M - frames) // 2.
  """
  strided = list(range(0, num_frames, stride))
  while len(strided) < frames:
    strided.append(strided[-1])
  if num_views > 1:
    step = max(1.0 * (len(strided) - frames) / (num_views - 1), 0)
    start = int(view * step)
  else:
    start = (len(strided) - frames) // 2
  return np.asarray(strided[start:start + frames], np.int64)


# --------------------------------------------------------------------------
# Segment sampling (RawFrameClsDataset with num_segment = frames, clip_len 1)
# --------------------------------------------------------------------------


def segment_train_indices(num_frames: int, rng: np.random.Generator,
                          frames: int) -> np.ndarray:
  """TSN sampling: one uniformly random frame in each of ``frames`` equal segments.

  Segments are N // frames frames long (the remainder at the end is never
  read). A video with fewer frames than segments repeats frame 0 in front of
  all its frames. (The reference's third branch, N > frames with no whole
  segment, cannot occur; it is kept to mirror the reference line by line.)
  """
  avg = num_frames // frames
  if avg > 0:
    idx = np.multiply(list(range(frames)), avg) + rng.integers(avg, size=frames)
  elif num_frames > frames:
    idx = np.sort(rng.integers(num_frames, size=frames))
  else:
    idx = [0] * (frames - num_frames) + list(range(num_frames))
  return np.asarray(idx, np.int64)


def segment_val_indices(num_frames: int, frames: int) -> np.ndarray:
  """Validation mode: the middle frame of each segment (TSN test sampling)."""
  avg = num_frames // frames
  if avg > 0:
    idx = np.multiply(list(range(frames)), avg) + np.ones(frames, dtype=int) * (avg // 2)
  elif num_frames > frames:
    idx = list(range(frames))
  else:
    idx = [0] * (frames - num_frames) + list(range(num_frames))
  return np.asarray(idx, np.int64)


def segment_eval_indices(num_frames: int, view: int, num_views: int,
                         frames: int) -> np.ndarray:
  """Temporal view ``view`` of ``num_views`` in the reference's segment test mode.

  tick = N / frames; view t reads int(t * tick / num_views + tick * x) for
  segment x. (The reference sorts all views' indices and deals them out with
  a stride of num_views, which gives each view exactly this list.) So with
  two views, view 0 takes each segment's first frame and view 1 its middle.

  With one view the reference would read segment starts; here it reads the
  segment middles instead, int(tick / 2 + tick * x), which is what the
  reference's validation mode and official_semantics.md ("segment middle at
  test time") describe for a single view.
  """
  tick = num_frames / float(frames)
  if num_views == 1:
    return np.asarray([int(tick / 2 + tick * x) for x in range(frames)], np.int64)
  return np.asarray([int(view * tick / num_views + tick * x) for x in range(frames)], np.int64)


# --------------------------------------------------------------------------
# Dispatch on config.data.sampling
# --------------------------------------------------------------------------


def _unknown(mode: str) -> ValueError:
  return ValueError(f"config.data.sampling={mode!r}: expected one of {MODES}")


def train_indices(mode: str, num_frames: int, rng: np.random.Generator, frames: int,
                  stride: int) -> np.ndarray:
  """Training clip indices for config.data.sampling ``mode``."""
  if mode == "dense":
    return dense_train_indices(num_frames, rng, frames, stride)
  if mode == "segment":
    return segment_train_indices(num_frames, rng, frames)
  raise _unknown(mode)


def val_indices(mode: str, num_frames: int, frames: int, stride: int) -> np.ndarray:
  """The single validation view's indices for config.data.sampling ``mode``."""
  if mode == "dense":
    return dense_val_indices(num_frames, frames, stride)
  if mode == "segment":
    return segment_val_indices(num_frames, frames)
  raise _unknown(mode)


def eval_indices(mode: str, num_frames: int, view: int, num_views: int, frames: int,
                 stride: int) -> np.ndarray:
  """Test view ``view`` of ``num_views`` for config.data.sampling ``mode``."""
  if mode == "dense":
    return dense_eval_indices(num_frames, view, num_views, frames, stride)
  if mode == "segment":
    return segment_eval_indices(num_frames, view, num_views, frames)
  raise _unknown(mode)
