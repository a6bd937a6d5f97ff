"""`python -m vmae2_jax.predict`: the top classes of video files with a classifier.

With --detect, the top actions of person boxes on a keyframe with a detector
(vmae2_jax/detect_predict.py says how).

  python -m vmae2_jax.predict --init_from=DIR --video=clip.mp4|FOLDER [--video=b.mp4 ...]
      [--list=FILE [--root=DIR]] [--top=5] [--num_segment=N --num_crop=M --sampling=dense|segment
      --sampling_rate=R] [--batch=V] [--dtype=float32|bfloat16] [--json]

DIR is any model source holding a classifier (a converted checkpoint, a
training run WORKDIR, WORKDIR/best or a step; checkpointing/model_io.py).
Each video file is decoded once (PyAV, no shards needed) and cut into the
multi-view test protocol exactly as evaluation does (pipelines.EvalTransform:
num_segment temporal clips x num_crop spatial crops of the short-side-resized
frames). The reported probabilities are the mean over views of the softmax, as
the reference's merge. The protocol defaults to the model's model.json "test"
entry (what the run was trained for), else Kinetics' dense 5 x 3 at sampling
rate 4; flags override.

--video takes a file or a folder (its video files and its subfolders', as a
class-per-folder split, in name order); --list a
file of paths, one a line, relative to the list's folder or to --root.

Output: one line per video, ``clip.mp4: 1. riding a bike 0.913 | 2. ...``, or
with --json one JSON object per video. A video that does not decode is
reported in one line (stderr) and the others still run; the exit code is 1
if any failed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, Iterator, Sequence

import jax
import numpy as np

from vmae2_jax import paths as paths_lib
from vmae2_jax.conversion.report import ConversionError
from vmae2_jax.data.pipelines import EvalTransform
from vmae2_jax.data.shards import CorruptRecordError
from vmae2_jax.data.video_file import (VIDEO_EXTS, VideoFileRecord, read_video_list,
                                       videos_in_tree)
from vmae2_jax.evaluation.inference import (DTYPES, BatchRunner, Parser, UserError,
                                            class_names_for, load_classifier, parse_args,
                                            prefetch, square_size)

DEFAULT_TEST = {"sampling": "dense", "sampling_rate": 4, "test_num_segment": 5,
                "test_num_crop": 3}


def test_protocol(meta: dict[str, Any], *, sampling: str | None = None,
                  sampling_rate: int | None = None, num_segment: int | None = None,
                  num_crop: int | None = None) -> dict[str, Any]:
  """The views to average: the model's "test" entry, else Kinetics 5x3 dense at rate 4;
  arguments that are not None override."""
  p = dict(DEFAULT_TEST, **(meta.get("test") or {}))
  for key, value in (("sampling", sampling), ("sampling_rate", sampling_rate),
                     ("test_num_segment", num_segment), ("test_num_crop", num_crop)):
    if value is not None:
      p[key] = value
  flag = {"sampling_rate": "--sampling_rate", "test_num_segment": "--num_segment",
          "test_num_crop": "--num_crop"}
  for key, name in flag.items():
    if int(p[key]) < 1:
      raise UserError(f"{name}={p[key]} must be >= 1")
    p[key] = int(p[key])
  if p["sampling"] not in ("dense", "segment"):
    raise UserError(f"--sampling={p['sampling']!r} is not dense|segment")
  return p


# ---------------------------------------------------------------- prediction
@dataclasses.dataclass
class VideoPrediction:
  """One video's result: mean softmax over its views, or the error that stopped it."""
  video: str
  probs: np.ndarray | None = None  # float64 [num_classes]
  num_views: int = 0
  error: str | None = None

  def top(self, k: int) -> list[tuple[int, float]]:
    """(class, probability) by descending probability; ties toward the lower class index."""
    order = np.argsort(-self.probs, kind="stable")[:k]
    return [(int(c), float(self.probs[c])) for c in order]


class Predictor:
  """A classifier and a test protocol, applied to video files.

  Views of ``batch`` videos go through the model together in one fixed-shape
  compiled call (the last batch padded with zero clips).
  """

  def __init__(self, init_from: str, *, dtype: str = "float32", sampling: str | None = None,
               sampling_rate: int | None = None, num_segment: int | None = None,
               num_crop: int | None = None):
    self.model, self.meta = load_classifier(init_from, dtype=dtype)
    self.size = square_size(self.meta, init_from)
    self.protocol = test_protocol(self.meta, sampling=sampling, sampling_rate=sampling_rate,
                                  num_segment=num_segment, num_crop=num_crop)
    self.class_names, self.names_note = class_names_for(self.meta)
    p = self.protocol
    self.transform = EvalTransform(frames=int(self.meta["frames"]), size=self.size,
                                   stride=p["sampling_rate"], mode=p["sampling"],
                                   num_segment=p["test_num_segment"],
                                   num_crop=p["test_num_crop"], skip_corrupt=False)
    self._runners: dict[int, BatchRunner] = {}

  @property
  def num_views(self) -> int:
    return self.transform.num_views

  def views(self, path: str) -> np.ndarray:
    """uint8 [num_views, T, S, S, 3]: the test views of one file (view k = clip k // crops,
    crop k % crops). Raises CorruptRecordError naming the file."""
    return self.transform.transform(VideoFileRecord(path), None)["video"]

  def _runner(self, videos_per_batch: int) -> BatchRunner:
    if videos_per_batch not in self._runners:
      self._runners[videos_per_batch] = BatchRunner(
          self.model, lambda m, x: jax.nn.softmax(m(x), axis=-1),
          videos_per_batch * self.num_views)
    return self._runners[videos_per_batch]

  def _decoded(self, paths: Sequence[str]) -> Iterator[tuple[int, np.ndarray | str]]:
    for i, path in enumerate(paths):
      try:
        yield i, self.views(path)
      except CorruptRecordError as e:
        yield i, str(e)
      except (ValueError, OSError) as e:  # e.g. a frame too small for the crop
        yield i, f"{path}: {type(e).__name__}: {e}"

  def iter_predict(self, paths: Sequence[str], batch: int = 2) -> Iterator[VideoPrediction]:
    """One VideoPrediction per path, in input order, each as soon as it and those
    before it are done (failed videos carry ``error``)."""
    if batch < 1:
      raise UserError(f"--batch={batch} must be >= 1")
    if not paths:
      return
    results = [VideoPrediction(p) for p in paths]
    finished = [False] * len(paths)
    next_out = 0
    per_batch = min(batch, len(paths))  # one compiled shape for the whole run
    runner = self._runner(per_batch)
    v = self.num_views
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
      clips = np.zeros((runner.batch,) + pending[0][1].shape[1:], np.uint8)
      for j, (_, views) in enumerate(pending):
        clips[j * v:(j + 1) * v] = views
      probs = np.asarray(runner(clips), np.float64)
      for j, (i, _) in enumerate(pending):
        results[i].probs = probs[j * v:(j + 1) * v].mean(axis=0)
        results[i].num_views = v
        finished[i] = True
      pending.clear()

    for i, out in prefetch(self._decoded(paths), size=2 * per_batch):
      if isinstance(out, str):
        results[i].error, finished[i] = out, True
      else:
        pending.append((i, out))
        if len(pending) == per_batch:
          flush()
      while next_out < len(paths) and finished[next_out]:
        yield results[next_out]
        next_out += 1
    if pending:
      flush()
    yield from results[next_out:]

  def predict(self, paths: Sequence[str], batch: int = 2) -> list[VideoPrediction]:
    """One VideoPrediction per path, in order (failed videos carry ``error``)."""
    return list(self.iter_predict(paths, batch))

  def format_line(self, r: VideoPrediction, top: int) -> str:
    """``clip.mp4: 1. name 0.913 | 2. ...``"""
    return f"{r.video}: " + " | ".join(
        f"{k}. {self.class_names[c]} {p:.3f}" for k, (c, p) in enumerate(r.top(top), 1))

  def as_json(self, r: VideoPrediction, top: int) -> dict[str, Any]:
    """One video's JSON object: top classes (rank, class, name, prob) or the error."""
    if r.error is not None:
      return {"video": r.video, "error": r.error}
    return {"video": r.video, "num_views": r.num_views,
            "top": [{"rank": k, "class": c, "name": self.class_names[c], "prob": p}
                    for k, (c, p) in enumerate(r.top(top), 1)]}


def predict_videos(init_from: str, paths: Sequence[str], *, batch: int = 2,
                   **options) -> list[VideoPrediction]:
  """Predictor(init_from, **options).predict(paths, batch): one result per path."""
  return Predictor(init_from, **options).predict(paths, batch)


# ---------------------------------------------------------------- command line
def parser() -> Parser:
  p = Parser(prog="python -m vmae2_jax.predict",
              description="Top classes of video files with a vmae2_jax classifier "
                          "(multi-view test protocol, mean softmax over views).")
  p.add_argument("--init_from", required=True,
                 help="converted checkpoint DIR, training run WORKDIR, WORKDIR/best or a step")
  p.add_argument("--video", action="append", default=[],
                 help="a video file or a folder of them (repeatable)")
  p.add_argument("--list", default=None,
                 help="a file of video paths, one a line (# comments; a label column is ignored)")
  p.add_argument("--root", default=None,
                 help="folder the --list paths are relative to (default: the list's folder)")
  p.add_argument("--top", type=int, default=5, help="classes to print per video")
  p.add_argument("--num_segment", type=int, default=None, help="temporal clips per video")
  p.add_argument("--num_crop", type=int, default=None, help="spatial crops per clip")
  p.add_argument("--sampling", choices=("dense", "segment"), default=None)
  p.add_argument("--sampling_rate", type=int, default=None, help="frame stride (dense)")
  p.add_argument("--batch", type=int, default=2,
                 help="videos whose views go through the model together")
  p.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype")
  p.add_argument("--json", action="store_true", help="one JSON object per video")
  return p


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if "--detect" in argv:
    from vmae2_jax import detect_predict
    return detect_predict.main([a for a in argv if a != "--detect"])
  args = parse_args(parser(), argv)
  if isinstance(args, int):
    return args
  try:
    paths = []
    for video in args.video:
      if paths_lib.isdir(video):  # a bucket folder too
        found = videos_in_tree(video)
        if not found:
          raise UserError(f"--video={video}: a folder without video files "
                          f"({', '.join(VIDEO_EXTS[:4])}, ...)")
        paths += found
      else:
        paths.append(video)
    if args.root and not args.list:
      raise UserError("--root applies to --list paths; give --list=FILE")
    if args.list:
      try:
        paths += read_video_list(args.list, args.root)
      except (FileNotFoundError, UnicodeDecodeError) as e:
        raise UserError(f"--list: {e}") from e
    if not paths:
      raise UserError("no videos: give --video=FILE (repeatable) or --list=FILE")
    if args.top < 1:
      raise UserError(f"--top={args.top} must be >= 1")
    if args.batch < 1:
      raise UserError(f"--batch={args.batch} must be >= 1")
    predictor = Predictor(args.init_from, dtype=args.dtype, sampling=args.sampling,
                          sampling_rate=args.sampling_rate, num_segment=args.num_segment,
                          num_crop=args.num_crop)
  except (UserError, ConversionError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if predictor.names_note:
    print(f"note: {predictor.names_note}", file=sys.stderr)
  failed = 0
  for r in predictor.iter_predict(paths, args.batch):
    if r.error is not None:
      failed += 1
      print(f"error: {r.error}", file=sys.stderr)
    if args.json:
      print(json.dumps(predictor.as_json(r, args.top)))
    elif r.error is None:
      print(predictor.format_line(r, args.top))
    sys.stdout.flush()
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
