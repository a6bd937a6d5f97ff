"""The picture of a run: training loss (and lr) and, for supervised stages, validation accuracy.

Drawn with PIL from WORKDIR/metrics.jsonl (one JSON object a line, written by
training.metrics_log), so it covers every segment of a resumed run: when a
step appears twice (a run killed after logging it resumed from an earlier
checkpoint), the later line wins.
"""

from __future__ import annotations

import json
import math
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from vmae2_jax import paths

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"

_W, _H = 640, 260                 # one panel
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 28, 34
_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))


def open_metrics(workdir: str):
  """WORKDIR/metrics.jsonl for appending (a paths.SegmentLog: a local file line-buffered,
  starting on a fresh line after a kill; in a bucket, this segment's own objects)."""
  return paths.SegmentLog(paths.join(workdir, METRICS_FILE))


def read_metrics(workdir: str) -> tuple[list[dict], list[dict]]:
  """(training rows, evaluation rows) of the whole run, one per step, by step."""
  train: dict[int, dict] = {}
  evals: dict[int, dict] = {}
  for line in paths.read_lines(paths.join(workdir, METRICS_FILE)):
    try:
      row = json.loads(line)
    except ValueError:  # a line cut short by a kill
      continue
    table = {"train": train, "val": evals}.get(row.get("kind"))
    if table is not None and "step" in row:
      table[int(row["step"])] = row
  return ([train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)])


def _nice(x: float, span: float) -> str:
  """x with enough digits to tell grid lines `span` apart."""
  if x == 0 or not math.isfinite(x):
    return f"{x:g}"
  if not 1e-3 <= abs(x) < 1e5:
    return f"{x:.2e}"
  digits = max(3, 2 + int(math.ceil(math.log10(abs(x) / max(span, 1e-30)))))
  return f"{x:.{min(digits, 8)}g}"


def _panel(title: str, series: Sequence[tuple[str, list[tuple[int, float]]]],
           log_y: bool = False) -> Image.Image:
  img = Image.new("RGB", (_W, _H), "white")
  draw = ImageDraw.Draw(img)
  font = ImageFont.load_default()
  draw.text((_LEFT, 6), title, fill="black", font=font)
  points = [(s, v) for _, pts in series for s, v in pts
            if math.isfinite(v) and (v > 0 or not log_y)]
  x0, x1 = _LEFT, _W - _RIGHT
  y0, y1 = _H - _BOTTOM, _TOP
  draw.rectangle((x0, y1, x1, y0), outline=(160, 160, 160))
  if not points:
    draw.text((x0 + 8, (y0 + y1) // 2), "no data", fill="gray", font=font)
    return img
  f = (lambda v: math.log10(v)) if log_y else (lambda v: v)
  smin, smax = min(p[0] for p in points), max(p[0] for p in points)
  vmin, vmax = min(f(p[1]) for p in points), max(f(p[1]) for p in points)
  if smax == smin:
    smax = smin + 1
  if vmax == vmin:
    vmin, vmax = vmin - 0.5, vmax + 0.5
  pad = 0.05 * (vmax - vmin)
  nonneg = not log_y and vmin >= 0  # rates and accuracies: no axis below zero
  vmin, vmax = (max(vmin - pad, 0.0) if nonneg else vmin - pad), vmax + pad

  def xy(s, v):
    return (x0 + (s - smin) / (smax - smin) * (x1 - x0),
            y0 - (f(v) - vmin) / (vmax - vmin) * (y0 - y1))

  for i in range(5):  # grid and labels
    yv = vmin + (vmax - vmin) * i / 4
    y = y0 - (y0 - y1) * i / 4
    draw.line((x0, y, x1, y), fill=(232, 232, 232))
    span = abs((10 ** vmax - 10 ** vmin) if log_y else (vmax - vmin)) / 4
    draw.text((4, y - 6), _nice(10 ** yv if log_y else yv, span), fill="black", font=font)
    xs = smin + (smax - smin) * i / 4
    x = x0 + (x1 - x0) * i / 4
    draw.text((x - 10, y0 + 6), f"{int(round(xs))}", fill="black", font=font)
  draw.text(((x0 + x1) // 2 - 12, _H - 14), "step", fill="black", font=font)
  legend_x = x1
  for (name, pts), colour in zip(series, _COLOURS):
    pts = [p for p in pts if math.isfinite(p[1]) and (p[1] > 0 or not log_y)]
    if len(pts) == 1:
      x, y = xy(*pts[0])
      draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    elif pts:
      draw.line([xy(s, v) for s, v in pts], fill=colour, width=2)
    legend_x -= 8 * len(name) + 24
    draw.line((legend_x, 12, legend_x + 14, 12), fill=colour, width=3)
    draw.text((legend_x + 18, 6), name, fill="black", font=font)
  return img


def draw_curves(train: list[dict], evals: list[dict]) -> Image.Image:
  """Loss and lr panels; an accuracy panel when there are validation rows."""
  panels = [_panel("training loss", [("loss", [(r["step"], r["loss"]) for r in train
                                                 if "loss" in r])]),
            _panel("learning rate", [("lr", [(r["step"], r["lr"]) for r in train
                                            if "lr" in r])])]
  acc = [(name, [(r["step"], r[key]) for r in evals if key in r])  # already in %
         for name, key in (("top-5 %", "val_top5"), ("top-1 %", "val_top1"))]  # top-1 on top
  if any(pts for _, pts in acc):
    panels.append(_panel("validation accuracy (single view)", acc))
  out = Image.new("RGB", (_W, _H * len(panels)), "white")
  for i, p in enumerate(panels):
    out.paste(p, (0, i * _H))
  return out


def write_curves(workdir: str) -> str | None:
  """WORKDIR/curves.png from WORKDIR/metrics.jsonl; None when nothing was logged."""
  train, evals = read_metrics(workdir)
  if not train and not evals:
    return None
  import io
  path = paths.join(workdir, CURVES_FILE)
  png = io.BytesIO()
  draw_curves(train, evals).save(png, format="PNG")
  paths.write_bytes(path, png.getvalue())
  return path
