"""`python -m vmae2_jax.extract`: per-window classifier features for temporal action localisation.

  python -m vmae2_jax.extract --init_from=DIR --videos=LIST|FOLDER|SHARDS --out=OUTDIR
      [--window=T --stride=4] [--size=S] [--batch=32] [--dtype=float32|bfloat16]
      [--reference_normalization]

The reference's extract_tad_feature.py: windows start at
range(0, num_frames - window + 1, stride) (it writes range(0, N - 15, 4) for
16-frame windows; stride 16 for FineAction), a window is ``window``
consecutive frames, every frame resized to size x size (bilinear, aspect
ignored, no crop), and the feature is the classifier's pooled feature
fc_norm(mean of tokens) (Classifier.features). Each video gives one float32
[windows, D] array, OUTDIR/<name>.npy, named after the file's stem (or, for
shards, the stem of the record's name). A video shorter than one window is
padded with its last frame to one window (one feature row) instead of
failing, as the reference would give it no row at all.

Frames are resized on the host to uint8 (cv2 bilinear, half-pixel centres,
no antialiasing: the reference's F.interpolate(align_corners=False) up to
uint8 rounding), as the training pipeline feeds the model.

Normalisation: by default as in training (the model's own mean/std from its
model.json, ImageNet's by default, applied to 0..255 pixels).
--reference_normalization reproduces the reference script, which feeds
pixels/255 in [0, 1] without mean/std: the model computes (x'/255 - mean)/std,
so it is fed x' = 255 * (x/255 * std + mean) = x * std + 255 * mean (computed
on the device, with the model's mean/std), which it maps back to x/255.

--window and --size default to the model's clip shape (model.json frames and
image_size: what it was trained on).

--videos: a video file, a text file of video paths (one a line, # comments, a
label column ignored, paths relative to the list's folder), a folder of video
files, or a shard set (a folder with manifest.json, a manifest file,
demo:train / demo:val). Windows of several videos share fixed-size batches
(one compiled shape; the last batch padded); each frame is decoded and
resized once however many windows hold it.

Resumable: a video whose .npy exists is skipped; files are written to .tmp
and renamed, so a killed run leaves no partial .npy. The settings that make
the features (model source and its step, window, stride, size, normalisation,
dtype) are kept in OUTDIR/extract.json; a rerun with other settings (or a run
that has trained on) into the same OUTDIR is refused, naming the
differences, so features never mix. Failures
are appended to OUTDIR/failures.tsv (time, video, reason; one block per
run) and make the exit code 1.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import jax.numpy as jnp
import numpy as np

from vmae2_jax import paths
from vmae2_jax.conversion.report import ConversionError
from vmae2_jax.data import shards, video_file
from vmae2_jax.data.shards import CorruptRecordError
from vmae2_jax.evaluation import inference
from vmae2_jax.evaluation.inference import UserError
from vmae2_jax.progress import Progress

FAILURES = "failures.tsv"
SETTINGS = "extract.json"
DECODE_CHUNK = 32  # shard frames decoded per call


# ---------------------------------------------------------------- windows
def window_starts(num_frames: int, window: int = 16, stride: int = 4) -> range:
  """Start frames of the windows: range(0, num_frames - window + 1, stride).

  A video shorter than one window (but not empty) has one window at 0,
  padded with its last frame.
  """
  if 0 < num_frames < window:
    return range(0, 1)
  return range(0, max(num_frames - window + 1, 0), stride)


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
  """RGB uint8 [h, w, 3] -> [size, size, 3], bilinear, aspect ignored."""
  if frame.shape[:2] == (size, size):
    return frame
  return cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)


def iter_windows(frames: Iterable[np.ndarray], window: int,
                 stride: int) -> Iterator[tuple[int, np.ndarray]]:
  """(start, [window, ...] stacked frames) for window_starts of the stream's length.

  Streams: only the last ``window`` frames are kept, so each frame is read
  once however many windows overlap it. A stream shorter than one window
  yields one window padded with its last frame; an empty one yields nothing.
  """
  buf: list[np.ndarray] = []
  n = 0
  for frame in frames:
    buf.append(frame)
    if len(buf) > window:
      buf.pop(0)
    n += 1
    start = n - window
    if start >= 0 and start % stride == 0:
      yield start, np.stack(buf)
  if 0 < n < window:
    yield 0, np.stack(buf + [buf[-1]] * (window - n))


# ---------------------------------------------------------------- inputs
@dataclasses.dataclass
class FileVideo:
  """A video file; its output is named after the file's stem."""
  path: str

  @property
  def label(self) -> str:
    return self.path

  def open(self) -> tuple[str, Callable[[], Iterator[np.ndarray]], Callable[[], int]]:
    """(output name, frame iterator factory, frame count estimate (0 = unknown) factory);
    the factories run only for a video that is not skipped."""
    name = os.path.splitext(os.path.basename(self.path))[0]
    return (name, lambda: video_file.iter_frames(self.path),
            lambda: video_file.probe_num_frames(self.path))


@dataclasses.dataclass
class ShardVideo:
  """Record ``index`` of a shard set; its output is named after its record name's stem."""
  source: Any  # shards.ShardSource
  index: int

  @property
  def label(self) -> str:
    return f"{self.source.path}: {self.source.where(self.index)}"

  def open(self) -> tuple[str, Callable[[], Iterator[np.ndarray]], Callable[[], int]]:
    """As FileVideo.open; reads the record (its name is in its header)."""
    item = self.source[self.index]
    if isinstance(item, shards.BrokenRecord):
      item.raise_error()
    rec = shards.parse_record(*item)  # raises CorruptRecordError naming shard and record
    name = os.path.splitext(os.path.basename(str(rec.header.get("name", "")).rstrip("/")))[0]
    name = name or f"record_{self.index:06d}"

    def frames():
      for a in range(0, rec.num_frames, DECODE_CHUNK):
        yield from rec.decode_frames(range(a, min(a + DECODE_CHUNK, rec.num_frames)))
    return name, frames, lambda: rec.num_frames


def open_videos(spec: str) -> list:
  """--videos: a list file, a folder of videos, or a shard set -> FileVideo/ShardVideo items."""
  is_shards = (spec == "demo" or spec.startswith("demo:") or spec.endswith(".json")
               or paths.isfile(paths.join(spec, shards.MANIFEST)))
  if is_shards:
    try:
      source = shards.ShardSource(spec)
    except (FileNotFoundError, ValueError) as e:
      raise UserError(f"--videos={spec}: {e}") from e
    return [ShardVideo(source, i) for i in range(len(source))]
  if paths.isdir(spec):
    return [FileVideo(p) for p in video_file.videos_in_folder(spec)]
  if paths.isfile(spec) and spec.lower().endswith(video_file.VIDEO_EXTS):
    return [FileVideo(spec)]
  if paths.isfile(spec):
    try:
      return [FileVideo(p) for p in video_file.read_video_list(spec)]
    except UnicodeDecodeError as e:
      raise UserError(f"--videos={spec}: not a text list of video paths ({e})") from e
  raise UserError(f"--videos={spec}: no such list file, video folder or shard set")


# ---------------------------------------------------------------- output
def save_atomic(path: str, array: np.ndarray) -> None:
  """np.save, then the whole file at once (paths.write_bytes: a local temporary renamed, or
  one upload): a killed run never leaves a partial ``path``."""
  buffer = io.BytesIO()  # a file object: np.save would append .npy to a name
  np.save(buffer, array)
  paths.write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------- extraction
@dataclasses.dataclass
class ExtractSummary:
  """What a run did: videos written / skipped (existing) / failed, windows, seconds."""
  written: int = 0
  skipped: int = 0
  failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  windows: int = 0
  seconds: float = 0.0
  window: int = 0  # frames per window and frame size used (the model's by default)
  size: int = 0


def feature_fn(reference_normalization: bool) -> Callable:
  """model, uint8 clips [B, T, S, S, 3] -> float32 features [B, D]."""

  def fn(model, x):
    if reference_normalization:
      # The model maps x' to (x'/255 - mean)/std with its own statistics; this x' makes
      # that x/255.
      mean, std = (np.asarray(v, np.float32) for v in (model.encoder.pixel_mean,
                                                       model.encoder.pixel_std))
      x = x.astype(jnp.float32) * std + 255.0 * mean
    return model.features(x).astype(jnp.float32)
  return fn


def _events(videos: Sequence, out: str, window: int, stride: int, size: int):
  """Producer (background thread): per video "start"/"skip"/"win"/"end"/"fail" events."""
  names: dict[str, int] = {}
  for vi, video in enumerate(videos):
    try:
      name, frames, num_frames = video.open()
      if name in names:
        raise CorruptRecordError(f"{video.label}: {name}.npy is also the output of "
                                 f"{videos[names[name]].label}; rename one of them")
      names[name] = vi
      path = paths.join(out, name + ".npy")
      if paths.exists(path):
        yield ("skip", vi, path)
        continue
      yield ("start", vi, len(window_starts(num_frames(), window, stride)), path)
      n = 0
      for _, clip in iter_windows((resize_frame(f, size) for f in frames()), window, stride):
        yield ("win", vi, n, clip)
        n += 1
      if n == 0:
        raise CorruptRecordError(f"{video.label}: no frames")
      yield ("end", vi, n)
    except CorruptRecordError as e:
      yield ("fail", vi, str(e))
    except (OSError, ValueError) as e:
      yield ("fail", vi, f"{video.label}: {type(e).__name__}: {e}")


def extract_features(init_from: str, videos: Sequence, out: str, *, window: int | None = None,
                     stride: int = 4, size: int | None = None, batch: int = 32,
                     reference_normalization: bool = False, dtype: str = "float32",
                     progress: bool = True) -> ExtractSummary:
  """Writes OUT/<name>.npy (float32 [windows, D]) for each of ``videos`` (open_videos items)
  that has none yet, OUT/extract.json and OUT/failures.tsv; see the module doc. Paths count
  as FileVideo; window / size None: the model's frames / image_size."""
  videos = [FileVideo(v) if isinstance(v, str) else v for v in videos]
  if window is not None and (window < 2 or window % 2):
    raise UserError(f"--window={window} must be an even number >= 2 (tubelets are 2 frames)")
  if stride < 1 or batch < 1:
    raise UserError(f"--stride={stride} and --batch={batch} must be >= 1")
  model, meta = inference.load_classifier(init_from, dtype=dtype, frames=window,
                                            image_size=size, need_head=False)
  window, size = int(meta["frames"]), inference.square_size(meta, init_from)
  patch = model.encoder.size.patch
  if size % patch:
    raise UserError(f"--size={size} is not a multiple of the model's patch size {patch}")
  try:
    paths.check_writable(out, "--out")  # a bucket: missing, no permission, no credentials
  except paths.PathAccessError as e:
    raise UserError(str(e)) from None
  check_settings(out, {"init_from": paths.resolve(init_from), "step": meta.get("step"),
                       "window": window,
                       "stride": stride, "size": size, "dtype": dtype,
                       "normalization": "reference" if reference_normalization else "training"})
  runner = inference.BatchRunner(model, feature_fn(reference_normalization), batch)
  summary = ExtractSummary(window=window, size=size)
  bar = Progress("extract", "windows") if progress else None
  t0 = time.monotonic()
  rows: dict[int, list] = {}  # features so far, by video
  target: dict[int, str] = {}  # output path
  expected: dict[int, int] = {}  # window count, once the video is fully read
  estimate: dict[int, int] = {}
  state = {"buf": None, "tags": [], "inflight": None, "done": 0}

  def finish(vi: int) -> None:
    if vi in expected and len(rows[vi]) == expected[vi] and all(
        r is not None for r in rows[vi]):
      save_atomic(target[vi], np.stack(rows.pop(vi)).astype(np.float32))
      summary.written += 1
      summary.windows += expected.pop(vi)
      state["done"] += 1

  def resolve() -> None:
    if state["inflight"] is None:
      return
    result, tags = state["inflight"]
    state["inflight"] = None
    feats = np.asarray(result)
    for (vi, wi), f in zip(tags, feats):
      if vi in rows:
        rows[vi][wi] = f
    for vi in dict.fromkeys(vi for vi, _ in tags):
      if vi in rows:
        finish(vi)

  def dispatch() -> None:
    # One batch in flight: the host fills the next while the device computes.
    result = runner(state["buf"])
    resolve()
    state["inflight"] = (result, state["tags"])
    state["buf"], state["tags"] = None, []

  def update(force: bool = False) -> None:
    if bar is None:
      return
    done_w = summary.windows + sum(sum(r is not None for r in v) for v in rows.values())
    started = [vi for vi in rows]
    left = sum(max(estimate.get(vi, 0) - len(rows[vi]), 0) for vi in started)
    avg = summary.windows / summary.written if summary.written else 0.0
    left += avg * max(len(videos) - state["done"] - len(started), 0)
    bar.update(done_w, done_w + left, f"{state['done']}/{len(videos)} videos", force=force)

  events = inference.prefetch(_events(videos, out, window, stride, size), size=2 * batch)
  for ev in events:
    kind, vi = ev[0], ev[1]
    if kind == "skip":
      summary.skipped += 1
      state["done"] += 1
    elif kind == "start":
      rows[vi], estimate[vi], target[vi] = [], ev[2], ev[3]
    elif kind == "win":
      if state["buf"] is None:  # fresh each batch: the device may still read the last one
        state["buf"] = np.zeros((batch,) + ev[3].shape, np.uint8)
      state["buf"][len(state["tags"])] = ev[3]
      state["tags"].append((vi, ev[2]))
      rows[vi].append(None)
      if len(state["tags"]) == batch:
        dispatch()
    elif kind == "end":
      expected[vi] = ev[2]
      finish(vi)
    elif kind == "fail":
      summary.failures.append((videos[vi].label, ev[2]))
      rows.pop(vi, None)
      expected.pop(vi, None)
      state["done"] += 1
    update()
  if state["tags"]:
    dispatch()
  resolve()
  summary.seconds = time.monotonic() - t0
  if bar is not None:
    if bar.tty:  # the final state; elsewhere the summary line says it
      update(force=True)
    bar.close()
  write_failures(out, summary.failures)
  return summary


def check_settings(out: str, settings: dict) -> None:
  """OUT/extract.json holds the settings of OUT's features: written by the first run,
  compared by each rerun (UserError naming the differences: features never mix)."""
  path = paths.join(out, SETTINGS)
  if paths.exists(path):
    try:
      saved = json.loads(paths.read_text(path))
    except (OSError, ValueError) as e:
      raise UserError(f"--out={out}: {SETTINGS} unreadable ({e}); use another --out") from e
    # a setting the file lacks was not recorded by the version that wrote it: not compared
    diff = [f"{k} {saved[k]} -> {v}" for k, v in settings.items() if k in saved and saved[k] != v]
    if diff:
      raise UserError(f"--out={out} holds features made with other settings ("
                      + "; ".join(diff) + "): use another --out, or empty this one to redo "
                      "them")
    return
  existing = ([n for n in paths.listdir(out) if n.endswith(".npy")] if paths.isdir(out)
              else [])
  if existing:
    raise UserError(f"--out={out} holds {len(existing)} .npy files but no {SETTINGS}: the "
                    "settings that made them are unknown; use another --out")
  paths.write_text(path, json.dumps(settings, indent=2))


def write_failures(out: str, failures: Sequence[tuple[str, str]]) -> str:
  """Appends this run's failed videos to OUT/failures.tsv (time, video, reason); a new file
  starts with a header line. Earlier runs' lines are kept (rewritten whole: a bucket object
  has no append; one extract process writes OUT)."""
  path = paths.join(out, FAILURES)
  clean = lambda s: " ".join(str(s).split())  # noqa: E731 - no tabs/newlines inside a field
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  old = paths.read_text(path) if paths.exists(path) else "time\tvideo\treason\n"
  paths.write_text(path, old + "".join(f"{now}\t{clean(video)}\t{clean(reason)}\n"
                                       for video, reason in failures))
  return path


# ---------------------------------------------------------------- command line
def parser() -> inference.Parser:
  p = inference.Parser(prog="python -m vmae2_jax.extract",
                          description="Per-window classifier features (fc_norm of the token "
                                      "mean) of videos, one [windows, D] .npy per video.")
  p.add_argument("--init_from", required=True,
                 help="converted classifier DIR, training run WORKDIR, WORKDIR/best or a step")
  p.add_argument("--videos", required=True,
                 help="video file, list file of video paths, folder of videos, or shard set "
                      "(DIR with manifest.json, demo:train, demo:val)")
  p.add_argument("--out", required=True, help="output folder (<name>.npy per video)")
  p.add_argument("--window", type=int, default=None,
                 help="frames per window (default: the model's clip length)")
  p.add_argument("--stride", type=int, default=4,
                 help="frames between window starts (THUMOS14 4, FineAction 16)")
  p.add_argument("--size", type=int, default=None,
                 help="frames are resized to size x size (default: the model's image size)")
  p.add_argument("--batch", type=int, default=32, help="windows per model call")
  p.add_argument("--dtype", choices=inference.DTYPES, default="float32")
  p.add_argument("--reference_normalization", action="store_true",
                 help="feed pixels/255 without mean/std, as the reference script")
  p.add_argument("--no_progress", action="store_true", help="no progress line on stderr")
  return p


def main(argv: list[str] | None = None) -> int:
  args = inference.parse_args(parser(), argv)
  if isinstance(args, int):
    return args
  try:
    videos = open_videos(args.videos)
    if not videos:
      raise UserError(f"--videos={args.videos}: no videos")
    summary = extract_features(
        args.init_from, videos, args.out, window=args.window, stride=args.stride,
        size=args.size, batch=args.batch, reference_normalization=args.reference_normalization,
        dtype=args.dtype, progress=not args.no_progress)
  except (UserError, ConversionError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  rate = summary.windows / summary.seconds if summary.seconds > 0 else 0.0
  failed = len(summary.failures)
  print(f"extract: {summary.written} written, {summary.skipped} skipped (existing), "
        f"{failed} failed{f' (see {os.path.join(args.out, FAILURES)})' if failed else ''}; "
        f"{summary.windows} windows of {summary.window} frames at {summary.size}x{summary.size} "
        f"in {summary.seconds:.1f} s ({rate:.1f} windows/s)",
        file=sys.stderr)
  for video, reason in summary.failures[:10]:
    print(f"error: {reason}", file=sys.stderr)
  if failed > 10:
    print(f"error: ... and {failed - 10} more in {os.path.join(args.out, FAILURES)}",
          file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
