"""A video file (mp4 and anything else PyAV reads) as a record for the data pipelines.

`VideoFileRecord(path)` has the interface of shards.VideoRecord (num_frames,
height, width, label, header["name"], decode_frames), so the evaluation
transforms (pipelines.EvalTransform) build their views from a file exactly as
from a shard record. Frames come out at full resolution as RGB uint8, which is
what the reference reads with decord before its own resize.

The frame count is the number of video packets (one per frame), the count the
reference's decord VideoReader reports as len(vr); it needs no decoding. A
file that cannot be opened, has no video stream, has no frames or ends before
a requested frame raises shards.CorruptRecordError naming the file.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from typing import Iterator, Sequence

import numpy as np

from vmae2_jax import paths
from vmae2_jax.data.shards import CorruptRecordError, HeaderFields

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp",
              ".ts", ".wmv")


def _open(path: str):
  """(container, video stream); CorruptRecordError naming the file on failure."""
  import av
  remote = paths.is_remote(path)
  if not (paths.isfile(path) if remote else os.path.isfile(path)):
    raise CorruptRecordError(f"{path}: no such file")
  try:
    # A bucket's video is read through a file object (ranged reads, no local copy).
    container = av.open(paths.open_file(path, "rb") if remote else path)
  except Exception as e:  # noqa: BLE001 - av raises many error types for bad files
    raise CorruptRecordError(f"{path}: unreadable video ({_reason(e)})") from e
  if not container.streams.video:
    container.close()
    raise CorruptRecordError(f"{path}: no video stream")
  return container, container.streams.video[0]


def _reason(e: Exception) -> str:
  # PyAV messages repeat the file name; keep the part that says what went wrong.
  msg = getattr(e, "strerror", None) or str(e)
  return f"{type(e).__name__}: {msg}"


def iter_frames(path: str) -> Iterator[np.ndarray]:
  """Every frame of the file in order, RGB uint8 [h, w, 3], decoded once, streaming."""
  container, stream = _open(path)
  stream.thread_type = "AUTO"  # frame threading: several cores on long videos
  try:
    for frame in container.decode(stream):
      yield frame.to_ndarray(format="rgb24")
  except Exception as e:  # noqa: BLE001
    raise CorruptRecordError(f"{path}: decoding failed ({_reason(e)})") from e
  finally:
    container.close()


def probe_num_frames(path: str) -> int:
  """The frame count from the container header (0 when it does not say); no decoding."""
  try:
    container, stream = _open(path)
  except CorruptRecordError:
    return 0
  with container:
    return int(stream.frames or 0)


class VideoFileRecord(HeaderFields):
  """One video file with the shards.VideoRecord interface (see module doc)."""

  def __init__(self, path: str, label: int = -1, name: str | None = None):
    self.path = path
    self.where = path  # what error messages name, as VideoRecord.where
    container, stream = _open(path)
    try:
      ctx = stream.codec_context
      height, width = int(ctx.height), int(ctx.width)
      fps = float(stream.average_rate or stream.guessed_rate or 0)
      count = sum(1 for p in container.demux(stream) if p.size > 0)  # flush packets are empty
    except Exception as e:  # noqa: BLE001
      raise CorruptRecordError(f"{path}: unreadable video ({_reason(e)})") from e
    finally:
      container.close()
    if count < 1 or height < 1 or width < 1:
      raise CorruptRecordError(f"{path}: no decodable frames")
    self.header = {"name": name if name is not None else os.path.basename(path),
                   "source": path, "label": int(label), "fps": fps, "num_frames": count,
                   "height": height, "width": width}

  def decode_frames(self, indices: Sequence[int], min_height: int = 0,
                    min_width: int = 0) -> np.ndarray:
    """uint8 [len(indices), h, w, 3] at full size (min_* only bound the size from below).

    One sequential pass up to the last wanted frame; each frame decoded once.
    """
    del min_height, min_width  # full size is always at least as large
    indices = [int(i) for i in indices]
    if not indices:
      return np.zeros((0, self.height, self.width, 3), np.uint8)
    bad = [i for i in indices if not 0 <= i < self.num_frames]
    if bad:
      raise CorruptRecordError(f"{self.path}: frame {bad[0]} out of range [0, {self.num_frames})")
    wanted: dict[int, list[int]] = {}
    for k, i in enumerate(indices):
      wanted.setdefault(i, []).append(k)
    last = max(wanted)
    out = None
    decoded = 0
    with contextlib.closing(iter_frames(self.path)) as frames:  # closes the file on return
      for i, frame in enumerate(frames):
        decoded = i + 1
        if i in wanted:
          if out is None:
            out = np.empty((len(indices),) + frame.shape, np.uint8)
          elif frame.shape != out.shape[1:]:
            raise CorruptRecordError(f"{self.path}: frame {i} is {frame.shape[:2]}, earlier "
                                     f"frames are {out.shape[1:3]}")
          out[wanted[i]] = frame
        if i >= last:
          return out
    raise CorruptRecordError(f"{self.path}: only {decoded} of {self.num_frames} frames decode "
                             "(truncated or corrupt video)")


def read_video_list(path: str, root: str | None = None) -> list[str]:
  """Video paths from a list file: one a line, blank and # lines skipped.

  A second column (a label) is allowed and ignored: a line holding a tab is
  split on tabs, else a line that is not itself an existing path on
  whitespace. A relative path is relative to ``root`` when given, else to the
  list file's folder (or, where only that exists, the current directory, as
  lists written for it before are).
  """
  if not paths.isfile(path):
    raise FileNotFoundError(f"{path}: no such list file")
  base = root if root is not None else paths.dirname(paths.resolve(path))
  found = []
  with paths.open_file(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      if "\t" in line:
        line = line.split("\t")[0].strip()
      elif not (paths.exists(line) or paths.exists(paths.join(base, line))):
        line = line.split()[0]
      if not (paths.is_remote(line) or os.path.isabs(line)):
        joined = paths.join(base, line)
        if root is not None or paths.exists(joined) or not paths.exists(line):
          line = joined
      found.append(line)
  return found


def videos_in_tree(folder: str) -> list[str]:
  """The video files in ``folder`` and its subfolders (a class-per-folder split), each
  folder's in name order, the folders in name order; a bucket folder alike."""
  if not paths.is_remote(folder):
    return [p for d, _, _ in sorted(os.walk(folder)) for p in videos_in_folder(d)]
  found = [rel for rel, _ in paths.walk_files(folder) if rel.lower().endswith(VIDEO_EXTS)]
  found.sort(key=lambda rel: (posixpath.dirname(rel), posixpath.basename(rel)))
  return [paths.join(folder, rel) for rel in found]


def videos_in_folder(folder: str) -> list[str]:
  """The video files (by extension) directly inside ``folder``, in name order."""
  if paths.is_remote(folder):  # one listing; a bucket has no sub-folder to skip by name
    return [paths.join(folder, n) for n in paths.listdir(folder)
            if n.lower().endswith(VIDEO_EXTS) and "/" not in n]
  return [os.path.join(folder, n) for n in sorted(os.listdir(folder))
          if n.lower().endswith(VIDEO_EXTS) and os.path.isfile(os.path.join(folder, n))]
