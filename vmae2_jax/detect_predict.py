"""`python -m vmae2_jax.predict --detect`: the top actions of person boxes on a keyframe.

  python -m vmae2_jax.predict --detect --init_from=DIR --video=clip.mp4 \
      --boxes=x1,y1,x2,y2 [--boxes=...] | --boxes=BOXES.csv [--time=SECONDS] [--top=3] \
      [--min_score=0.1] [--out=picture.png] [--dtype=float32|bfloat16] [--json]

DIR holds a detector (a stage "detect" run WORKDIR, its best, or a step). The
clip is the model's: 16 frames at its stride (model.json) around the keyframe
at --time (default: the middle of the file), frames resized to the model's
short side, as the test clips of training. Boxes are normalised (0..1) corner
coordinates of the keyframe, given inline or in a file of rows (x1,y1,x2,y2 or
AVA rows video,timestamp,x1,y1,x2,y2,...). Each box is widened for pooling as
in testing and scored with the sigmoid of its action logits.

Prints one line per box (``box 1 (0.10,0.20,0.40,0.90): 1. stand 0.912 | ...``) or
JSON, and with --out draws the keyframe with each box and its top actions
(matplotlib, Agg).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vmae2_jax import paths
from vmae2_jax.checkpointing import model_io
from vmae2_jax.conversion.report import ConversionError
from vmae2_jax.data import transforms
from vmae2_jax.data.ava.boxes import widen
from vmae2_jax.data.ava.clips import clip_offsets
from vmae2_jax.data.shards import CorruptRecordError
from vmae2_jax.data.video_file import VideoFileRecord
from vmae2_jax.evaluation.inference import DTYPES, Parser, UserError, parse_args, read_model_meta
from vmae2_jax.models import get_variant
from vmae2_jax.models.detector import Detector
from vmae2_jax.models.options import ModelOptions, normalization_from_meta

DEFAULT_TEST = {"sampling_rate": 4, "short_side": 256, "widen": [0.1, 0.05]}


def load_detector(init_from: str, dtype: str = "float32") -> tuple[Detector, dict[str, Any]]:
  """(Detector with DIR's weights, its model.json meta); UserError for another kind."""
  meta = read_model_meta(init_from, dtype)
  if meta.get("kind") != "detector":
    raise UserError(f"--init_from={init_from} holds a {meta.get('kind')} model, not a "
                    "detector; train one with config.stage='detect' (configs/detect_*.py)")
  params, meta = model_io.load_source(init_from)
  model = nnx.eval_shape(lambda: Detector(
      get_variant(meta["variant"]), int(meta["num_classes"]), frames=int(meta["frames"]),
      image_size=meta["image_size"],
      opts=ModelOptions(dtype=dtype, init="finetune", **normalization_from_meta(meta)),
      rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
  return nnx.merge(graphdef, state), meta


def parse_boxes(specs: Sequence[str]) -> np.ndarray:
  """--boxes values -> float32 [N, 4] normalised; UserError naming a bad value or row."""
  rows = []
  for spec in specs:
    if os.path.exists(spec) or "://" in spec:
      text = paths.read_text(spec)
      for i, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
          fields = [f.strip() for f in line.split(",")]
          rows.append((_box(fields[2:6] if len(fields) >= 6 else fields, f"{spec} row {i}")))
    else:
      rows.append(_box(spec.split(","), f"--boxes={spec}"))
  if not rows:
    raise UserError("no boxes: give --boxes=x1,y1,x2,y2 (normalised, repeatable) or a file")
  return np.asarray(rows, np.float32)


def _box(fields: Sequence[str], where: str) -> tuple[float, ...]:
  try:
    box = tuple(float(f) for f in fields)
  except ValueError:
    box = ()
  if len(box) != 4:
    raise UserError(f"{where}: expected x1,y1,x2,y2 (4 numbers)")
  x1, y1, x2, y2 = box
  if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
    raise UserError(f"{where}: box {box} is not inside [0, 1] with x1 < x2 and y1 < y2")
  return box


def keyframe_clip(path: str, meta: dict, time: float | None) -> tuple[np.ndarray, np.ndarray]:
  """(clip uint8 [T, h, w, 3] at the model's short side, the keyframe at full size)."""
  test = dict(DEFAULT_TEST, **(meta.get("test") or {}))
  rec = VideoFileRecord(path)
  n, fps = rec.num_frames, rec.header["fps"] or 30.0
  key = n // 2 if time is None else int(round(time * fps))
  if not 0 <= key < n:
    raise UserError(f"--time={time}: {path} has {n / fps:.2f} s ({n} frames)")
  idx = np.clip(key + clip_offsets(int(meta["frames"]), int(test["sampling_rate"])), 0, n - 1)
  frames = rec.decode_frames(sorted(set(idx.tolist()) | {key}))
  by_index = dict(zip(sorted(set(idx.tolist()) | {key}), frames))
  clip = np.stack([by_index[i] for i in idx])
  h, w = clip.shape[1:3]
  return transforms.resize_short_side(clip, int(test["short_side"]), src_hw=(h, w)), by_index[key]


def score_boxes(model: Detector, meta: dict, clip: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """Sigmoid action probabilities [N, K] of normalised boxes on the clip."""
  test = dict(DEFAULT_TEST, **(meta.get("test") or {}))
  h, w = clip.shape[1:3]
  pixels = boxes * np.array([w, h, w, h], np.float32)
  hw = np.array([[h, w]], np.int32)
  pooled = widen(pixels[None], hw, tuple(test["widen"]))
  fn = nnx.jit(lambda m, v, b: jax.nn.sigmoid(m(v, b)))
  return np.asarray(fn(model, clip[None], pooled))[0]


def class_names(meta: dict) -> list[str]:
  k = int(meta["num_classes"])
  names = meta.get("class_names") or []
  return [str(n) for n in names] if len(names) == k else [f"action {i + 1}" for i in range(k)]


def draw(frame: np.ndarray, boxes: np.ndarray, probs: np.ndarray, names: Sequence[str],
         out: str, *, top: int = 3, title: str = "") -> None:
  """The keyframe with each box and its top actions, written to `out` (PNG)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  h, w = frame.shape[:2]
  fig, ax = plt.subplots(figsize=(8, 8 * h / w), dpi=100)
  ax.imshow(frame)
  colours = plt.get_cmap("tab10").colors
  for i, (box, p) in enumerate(zip(boxes, probs)):
    x1, y1, x2, y2 = box * np.array([w, h, w, h])
    c = colours[i % len(colours)]
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2, color=c))
    order = np.argsort(-p, kind="stable")[:top]
    text = "\n".join(f"{names[k]} {p[k]:.2f}" for k in order)
    ax.text(x1 + 2, y1 + 2, text, va="top", fontsize=9, color="white",
            bbox=dict(facecolor=c, alpha=0.7, lw=0, pad=2))
  ax.set_axis_off()
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  with paths.open_file(out, "wb") as f:
    fig.savefig(f, format="png")
  plt.close(fig)


def parser() -> Parser:
  p = Parser(prog="python -m vmae2_jax.predict --detect",
             description="Top actions of person boxes on a video's keyframe with a detector.")
  p.add_argument("--init_from", required=True, help="a detection run WORKDIR, its best or a step")
  p.add_argument("--video", required=True, help="a video file")
  p.add_argument("--boxes", action="append", default=[],
                 help="x1,y1,x2,y2 normalised (repeatable), or a file of such rows")
  p.add_argument("--time", type=float, default=None, help="keyframe time in seconds "
                 "(default: the middle of the video)")
  p.add_argument("--top", type=int, default=3, help="actions per box")
  p.add_argument("--out", default="", help="write the keyframe with boxes and actions (PNG)")
  p.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype")
  p.add_argument("--json", action="store_true", help="one JSON object per box")
  return p


def main(argv: list[str] | None = None) -> int:
  args = parse_args(parser(), argv)
  if isinstance(args, int):
    return args
  try:
    if args.top < 1:
      raise UserError(f"--top={args.top} must be >= 1")
    boxes = parse_boxes(args.boxes)
    model, meta = load_detector(args.init_from, args.dtype)
    clip, keyframe = keyframe_clip(args.video, meta, args.time)
  except (UserError, ConversionError, CorruptRecordError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  probs = score_boxes(model, meta, clip, boxes)
  names = class_names(meta)
  for i, (box, p) in enumerate(zip(boxes, probs), 1):
    order = np.argsort(-p, kind="stable")[:args.top]
    if args.json:
      print(json.dumps({"box": [round(float(v), 4) for v in box],
                        "top": [{"rank": r, "action": int(k) + 1, "name": names[k],
                                 "prob": float(p[k])} for r, k in enumerate(order, 1)]}))
    else:
      coords = ",".join(f"{v:.2f}" for v in box)
      print(f"box {i} ({coords}): " + " | ".join(
          f"{r}. {names[k]} {p[k]:.3f}" for r, k in enumerate(order, 1)))
  if args.out:
    draw(keyframe, boxes, probs, names, args.out, top=args.top,
         title=f"{os.path.basename(args.video)}, {paths.basename(args.init_from.rstrip('/'))}")
    print(f"wrote {args.out}", file=sys.stderr)
  return 0
