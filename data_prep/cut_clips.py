"""Cut longer videos into short labelled clips, a folder per class and split.

  python -m data_prep.cut_clips --list=cuts.txt --out=/data/mine [--seconds=2] [--val_every=4]

cuts.txt has one segment a line, ``video class [start end]`` (space, tab or comma
separated; times in seconds or m:ss / h:mm:ss; no times = the whole video; paths relative
to the list's folder unless absolute; ``#`` starts a comment). Each segment is cut into
consecutive clips of --seconds (0 = the segment is one clip; a last piece shorter than
half of it is dropped) and written as H.264 mp4 at the source frame rate to
OUT/train/<class>/ or, for every --val_every-th clip of a class, OUT/val/<class>/: the
--folder layout of data_prep.build_shards. A clip is written to a temporary name and
renamed when complete, so a rerun skips the clips that exist. The last lines print the
build_shards commands for both splits.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import sys
from typing import Sequence

import numpy as np
from etils import epath


class CutError(ValueError):
  """A list line or video that cannot be cut; the message names it."""


@dataclasses.dataclass(frozen=True)
class Segment:
  video: str
  label: str
  start: float  # seconds
  end: float    # seconds; inf = the end of the video
  line: int


def parse_time(text: str) -> float:
  """Seconds from ``12.5``, ``1:05`` or ``1:02:03.5``."""
  parts = text.strip().split(":")
  if len(parts) > 3:
    raise ValueError(text)
  seconds = 0.0
  for part in parts:
    value = float(part)
    if value < 0:
      raise ValueError(text)
    seconds = seconds * 60 + value
  return seconds


def read_cuts(path: str) -> list[Segment]:
  """The segments of a cut list; a bad line raises CutError naming the file and line."""
  file = epath.Path(path)
  if not file.exists():
    raise CutError(f"--list={path}: no such file")
  base = file.parent
  segments = []
  for n, raw in enumerate(file.read_text().splitlines(), 1):
    line = raw.split("#", 1)[0].strip()
    if not line:
      continue
    sep = "\t" if "\t" in line else "," if "," in line else None
    cols = [c.strip() for c in line.split(sep)]
    where = f"{path}:{n}"
    if len(cols) not in (2, 4):
      raise CutError(f"{where}: expected `video class [start end]`, got {len(cols)} fields")
    video, label = cols[0], cols[1]
    if not label or "/" in label or label in (".", ".."):
      raise CutError(f"{where}: {label!r} is not usable as a class folder name")
    start, end = 0.0, float("inf")
    if len(cols) == 4:
      try:
        start, end = parse_time(cols[2]), parse_time(cols[3])
      except ValueError:
        raise CutError(f"{where}: times {cols[2]!r} {cols[3]!r} are not seconds or m:ss") from None
      if end <= start:
        raise CutError(f"{where}: the segment ends ({cols[3]}) before it starts ({cols[2]})")
    if not os.path.isabs(video):
      video = os.fspath(base / video)
    segments.append(Segment(video, label, start, end, n))
  if not segments:
    raise CutError(f"--list={path}: no segments in it")
  missing = sorted({s.video for s in segments if not os.path.isfile(s.video)})
  if missing:
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    raise CutError(f"{path}: {len(missing)} video file(s) not found: {shown}")
  return segments


def _pieces(start: float, end: float, seconds: float) -> list[tuple[float, float]]:
  """[start, end) in consecutive pieces of ``seconds`` (0: one piece); a tail shorter than
  half a piece is dropped."""
  if seconds <= 0:
    return [(start, end)]
  count = int((end - start) // seconds) + ((end - start) % seconds >= seconds / 2)
  return [(start + k * seconds, min(start + (k + 1) * seconds, end)) for k in range(count)]


class _ClipWriter:
  """One mp4 being written (to ``path``.part, renamed by close)."""

  def __init__(self, path: str, fps: float, height: int, width: int):
    import av
    from fractions import Fraction
    self.path, self.tmp = path, path + ".part.mp4"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    self.container = av.open(self.tmp, mode="w")
    self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    self.h, self.w = height - height % 2, width - width % 2  # yuv420p: even sizes
    self.stream.height, self.stream.width = self.h, self.w
    self.stream.pix_fmt = "yuv420p"
    self.stream.options = {"crf": "18"}
    self.frames = 0

  def add(self, rgb: np.ndarray) -> None:
    import av
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:self.h, :self.w]), format="rgb24")
    self.container.mux(self.stream.encode(frame))
    self.frames += 1

  def close(self) -> int:
    self.container.mux(self.stream.encode())
    self.container.close()
    if self.frames:
      os.replace(self.tmp, self.path)
    else:
      os.remove(self.tmp)
    return self.frames


def _clip_name(video: str, start: float, end: float) -> str:
  stem = os.path.splitext(os.path.basename(video))[0]
  return f"{stem}_{int(round(start * 1000)):08d}_{int(round(end * 1000)):08d}.mp4"


def cut_video(video: str, jobs: list[tuple[float, float, str]]) -> tuple[int, int]:
  """Decodes ``video`` once and writes each (start, end, out_path) clip that does not exist.
  Returns (clips written, clips skipped as existing)."""
  import av
  todo = sorted((j for j in jobs if not os.path.exists(j[2])), key=lambda j: j[0])
  skipped = len(jobs) - len(todo)
  if not todo:
    return 0, skipped
  written, open_writers = 0, {}
  last_end = max(j[1] for j in todo)
  try:
    container = av.open(video)
  except Exception as e:  # noqa: BLE001 - PyAV raises many kinds; one line names the file
    raise CutError(f"{video}: cannot open it as a video ({' '.join(str(e).split())})") from None
  with container:
    if not container.streams.video:
      raise CutError(f"{video}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    for i, frame in enumerate(container.decode(stream)):
      t = frame.time if frame.time is not None else i / fps
      if t >= last_end:
        break
      rgb = None
      for job in todo:
        start, end, path = job
        if start <= t < end:
          if rgb is None:
            rgb = frame.to_ndarray(format="rgb24")
          if path not in open_writers:
            open_writers[path] = _ClipWriter(path, fps, rgb.shape[0], rgb.shape[1])
          open_writers[path].add(rgb)
        elif t >= end and path in open_writers:
          written += bool(open_writers.pop(path).close())
    for writer in open_writers.values():
      written += bool(writer.close())
  return written, skipped


def cut(segments: Sequence[Segment], out: str, *, seconds: float, val_every: int,
        log=print) -> dict:
  """Cuts every segment; returns {split: {class: clip count}}."""
  per_video = collections.defaultdict(list)
  counts = {"train": collections.Counter(), "val": collections.Counter()}
  seen = collections.Counter()
  for seg in segments:
    end = seg.end
    if end == float("inf"):
      end = _duration(seg.video)
    pieces = _pieces(seg.start, end, seconds)
    if not pieces:
      log(f"warning: {seg.video} (line {seg.line}): shorter than half a --seconds clip; "
          "nothing cut")
    for start, stop in pieces:
      seen[seg.label] += 1
      split = "val" if val_every > 0 and seen[seg.label] % val_every == 0 else "train"
      counts[split][seg.label] += 1
      path = os.path.join(out, split, seg.label, _clip_name(seg.video, start, stop))
      per_video[seg.video].append((start, stop, path))
  for video, jobs in per_video.items():
    written, skipped = cut_video(video, jobs)
    log(f"{video}: {written} clips written" + (f", {skipped} existing kept" if skipped else ""))
  return counts


def _duration(video: str) -> float:
  import av
  try:
    with av.open(video) as container:
      if container.duration:
        return container.duration / 1e6
      stream = container.streams.video[0]
      if stream.duration:
        return float(stream.duration * stream.time_base)
      raise CutError(f"{video}: its duration is unknown; give the segment's start and end")
  except CutError:
    raise
  except Exception as e:  # noqa: BLE001
    raise CutError(f"{video}: cannot open it as a video ({' '.join(str(e).split())})") from None


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument("--list", required=True, help="one segment a line: video class [start end]")
  p.add_argument("--out", required=True, help="writes OUT/train/<class>/, OUT/val/<class>/")
  p.add_argument("--seconds", type=float, default=2.0,
                 help="clip length; 0 = each segment is one clip")
  p.add_argument("--val_every", type=int, default=4,
                 help="every N-th clip of a class goes to OUT/val (0 = no validation split)")
  a = p.parse_args(argv)
  if a.seconds < 0 or a.val_every < 0:
    p.error("--seconds and --val_every must be >= 0")
  try:
    segments = read_cuts(a.list)
    counts = cut(segments, a.out, seconds=a.seconds, val_every=a.val_every)
  except CutError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  classes = sorted(set(counts["train"]) | set(counts["val"]))
  for split in ("train", "val"):
    if counts[split]:
      per = ", ".join(f"{c} {counts[split][c]}" for c in classes)
      print(f"{split}: {sum(counts[split].values())} clips ({per})")
  empty = [c for c in classes if not counts["train"][c] or (a.val_every and not counts["val"][c])]
  if empty:
    print(f"warning: {len(empty)} class(es) without clips in a split: {', '.join(empty[:5])}"
          " (more footage or a smaller --seconds / --val_every fixes it)")
  labels = os.path.join(a.out, "classes.txt")
  epath.Path(labels).write_text("".join(f"{c}\n" for c in classes))
  print("next, the frame shards of both splits (one labels file keeps their indices equal):")
  for split in ("train", "val"):
    print(f"  python -m data_prep.build_shards --folder={os.path.join(a.out, split)} "
          f"--labels={labels} --out={a.out.rstrip('/')}_shards/{split}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
