"""Which frames of a video a clip uses (official_semantics.md section 5).

All functions return int indices in [0, num_frames) and take a NumPy
Generator, so a clip is a pure function of (seed, element index).
"""

from __future__ import annotations

import numpy as np


def pretrain_indices(num_frames: int, rng: np.random.Generator, frames: int = 16,
                     stride: int = 4) -> np.ndarray:
  """Start uniform in [0, N - frames*stride], ``frames`` steps of ``stride``, clamped to N-1."""
  span = frames * stride
  start = int(rng.integers(0, max(num_frames - span, 0) + 1))
  return np.minimum(start + np.arange(frames) * stride, num_frames - 1)


def dense_train_indices(num_frames: int, rng: np.random.Generator, frames: int = 16,
                        stride: int = 4) -> np.ndarray:
  """``frames`` indices linearly spaced over a random window of frames*stride frames.

  A video shorter than the window is read at ``stride`` from its start and
  padded with its last frame, as the reference's dense sampler does.
  """
  span = frames * stride
  if num_frames <= span:
    n = num_frames // stride
    idx = np.linspace(0, num_frames, num=n)
    idx = np.concatenate([idx, np.full(frames - n, num_frames)])
    return np.clip(idx, 0, num_frames - 1).astype(np.int64)
  end = int(rng.integers(span, num_frames))
  start = end - span
  idx = np.linspace(start, end, num=frames)
  return np.clip(idx, start, end - 1).astype(np.int64)


def dense_eval_indices(num_frames: int, view: int, num_views: int, frames: int = 16,
                       stride: int = 4) -> np.ndarray:
  """Temporal view ``view`` of ``num_views``, as the reference's test mode.

  The video is read at ``stride`` from frame 0 (padded with its last frame to
  at least ``frames``), and view v takes ``frames`` consecutive strided frames
  starting at int(v * (M - frames) / (num_views - 1)).
  """
  strided = np.arange(0, num_frames, stride)
  if len(strided) < frames:
    strided = np.concatenate([strided, np.full(frames - len(strided), strided[-1])])
  slack = len(strided) - frames
  start = int(view * slack / (num_views - 1)) if num_views > 1 else slack // 2
  return strided[start:start + frames].astype(np.int64)


def segment_train_indices(num_frames: int, rng: np.random.Generator,
                          frames: int = 16) -> np.ndarray:
  """Something-Something: one uniformly random frame in each of ``frames`` equal segments."""
  edges = np.linspace(0, num_frames, frames + 1)
  lo = np.floor(edges[:-1]).astype(np.int64)
  hi = np.maximum(np.floor(edges[1:]).astype(np.int64), lo + 1)
  idx = lo + (rng.random(frames) * (hi - lo)).astype(np.int64)
  return np.minimum(idx, num_frames - 1)


def segment_eval_indices(num_frames: int, view: int, num_views: int,
                         frames: int = 16) -> np.ndarray:
  """Segment sampling at test time: view 0 takes each segment's middle frame.

  With two temporal views (the SSv2 protocol) view 1 takes each segment's
  first frame, as the reference does; more views spread the offset evenly.
  """
  tick = num_frames / frames
  frac = (0.5 + view / max(num_views, 1)) % 1.0
  idx = (tick * (np.arange(frames) + frac)).astype(np.int64)
  return np.minimum(idx, num_frames - 1)


def train_indices(mode: str, num_frames: int, rng: np.random.Generator, frames: int,
                  stride: int) -> np.ndarray:
  if mode == "dense":
    return dense_train_indices(num_frames, rng, frames, stride)
  if mode == "segment":
    return segment_train_indices(num_frames, rng, frames)
  if mode == "pretrain":
    return pretrain_indices(num_frames, rng, frames, stride)
  raise ValueError(f"unknown sampling mode {mode!r} (dense, segment, pretrain)")


def eval_indices(mode: str, num_frames: int, view: int, num_views: int, frames: int,
                 stride: int) -> np.ndarray:
  if mode in ("dense", "pretrain"):
    return dense_eval_indices(num_frames, view, num_views, frames, stride)
  if mode == "segment":
    return segment_eval_indices(num_frames, view, num_views, frames)
  raise ValueError(f"unknown sampling mode {mode!r} (dense, segment)")
