"""Test report files from a (gathered) `VideoSummary`: CSVs, metrics JSON, confusion PNG.

Call on one process (process 0) after `gather_results`. Every file is written
under a temporary name and moved into place, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vmae2_jax import paths as storage  # `paths` names the report's files below
from vmae2_jax.evaluation.multiview import VideoSummary, accuracy, confusion, per_class

HEAT_TARGET_PX = 640  # side of the heat map before clamping the cell size
HEAT_MIN_PX, HEAT_MAX_PX = 300, 1600
LABEL_CHARS = 18  # longer class names are cut on the confusion picture
WHITE, DARK_BLUE = np.array([255, 255, 255.0]), np.array([8, 48, 107.0])


@contextlib.contextmanager
def _atomic(path: str, mode: str = "w", encoding: str = "utf-8", **kwargs):
  """A buffer whose content becomes `path` whole on success (storage.write_bytes: a local
  temporary renamed, or one upload to a bucket)."""
  del kwargs  # newline="": the buffer keeps line ends as written
  buffer = io.BytesIO() if "b" in mode else io.StringIO()
  yield buffer
  data = buffer.getvalue()
  storage.write_bytes(path, data if isinstance(data, bytes) else data.encode(encoding))


def _class_names(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
  if class_names is None:
    return [f"class_{i}" for i in range(num_classes)]
  if len(class_names) != num_classes:
    raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
  return [str(n) for n in class_names]


def _percent(x: float) -> float | None:
  """Percent, or None (JSON null) for NaN (no labelled video)."""
  return None if math.isnan(x) else 100.0 * x


def _write_predictions(path: str, summary: VideoSummary, names: list[str]) -> None:
  k = summary.topk_classes.shape[1]
  header = ["video_id", "name", "label", "label_name", "correct"]
  for j in range(1, k + 1):
    header += [f"class_{j}", f"name_{j}", f"prob_{j}"]
  with _atomic(path, newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(header)
    for i in range(len(summary)):
      label = int(summary.labels[i])
      known = label >= 0
      row = [int(summary.video_ids[i]), summary.names[i], label, names[label] if known else "",
             int(summary.predictions[i] == label) if known else ""]
      for c, p in zip(summary.topk_classes[i], summary.topk_probs[i]):
        row += [int(c), names[c], f"{p:.6f}"]
      w.writerow(row)


def _write_per_class(path: str, stats: dict, names: list[str]) -> None:
  fmt = lambda x: "" if np.isnan(x) else f"{100 * x:.2f}"
  with _atomic(path, newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["class", "name", "videos", "top1", "top5"])
    for c, name in enumerate(names):
      w.writerow([c, name, int(stats["count"][c]), fmt(stats["top1"][c]), fmt(stats["top5"][c])])


def _metrics(summary: VideoSummary, stats: dict, num_classes: int) -> dict:
  acc = accuracy(summary)
  present = stats["count"] > 0
  mean_class = lambda key: float(stats[key][present].mean()) if present.any() else float("nan")
  return {
      "top1": _percent(acc["top1"]),
      "top5": _percent(acc["top5"]),
      "num_videos": acc["num_videos"],
      "num_labelled": acc["num_labelled"],
      "views_per_video": acc["views_per_video"],
      "num_classes": num_classes,
      "classes_with_videos": int(present.sum()),
      "mean_class_top1": _percent(mean_class("top1")),
      "mean_class_top5": _percent(mean_class("top5")),
  }


def write_test_report(directory: str, summary: VideoSummary, num_classes: int,
                      class_names: Sequence[str] | None = None,
                      max_confusion_classes: int = 100) -> dict:
  """Writes predictions.csv, per_class.csv, metrics.json and (K small) confusion.png.

  Accuracies in per_class.csv and metrics.json are percentages, as the
  reference prints them. Returns {"paths": {kind: path}, "metrics": metrics}.
  """
  storage.makedirs(directory)
  names = _class_names(num_classes, class_names)
  stats = per_class(summary, num_classes)
  metrics = _metrics(summary, stats, num_classes)
  paths = {kind: storage.join(directory, f"{kind}.{ext}") for kind, ext in
           (("predictions", "csv"), ("per_class", "csv"), ("metrics", "json"))}
  _write_predictions(paths["predictions"], summary, names)
  _write_per_class(paths["per_class"], stats, names)
  with _atomic(paths["metrics"], encoding="utf-8") as f:
    json.dump(metrics, f, indent=2)
  if num_classes <= max_confusion_classes:
    paths["confusion"] = storage.join(directory, "confusion.png")
    image = draw_confusion(confusion(summary, num_classes), names, _title(metrics))
    with _atomic(paths["confusion"], "wb") as f:
      image.save(f, format="PNG")
  return {"paths": paths, "metrics": metrics}


# -- confusion picture ------------------------------------------------------------


def _title(metrics: dict) -> str:
  pct = lambda x: "n/a" if x is None else f"{x:.2f}%"
  return (f"top-1 {pct(metrics['top1'])}  top-5 {pct(metrics['top5'])}  "
          f"{metrics['num_labelled']} videos  (rows: true, columns: predicted)")


def _cell_size(k: int) -> int:
  """Pixels per cell: heat map near HEAT_TARGET_PX, within [HEAT_MIN_PX, HEAT_MAX_PX] if it can."""
  cell = max(1, round(HEAT_TARGET_PX / k))
  return max(1, min(max(cell, math.ceil(HEAT_MIN_PX / k)), HEAT_MAX_PX // k))


def _heat_pixels(counts: np.ndarray, cell: int) -> np.ndarray:
  """uint8 [K*cell, K*cell, 3]: row-normalised counts, white (0) to dark blue (1)."""
  rows = counts.sum(axis=1, keepdims=True)
  frac = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
  rgb = WHITE + frac[..., None] * (DARK_BLUE - WHITE)
  return np.round(rgb).astype(np.uint8).repeat(cell, axis=0).repeat(cell, axis=1)


def _axis_labels(names: list[str], cell: int, line: int) -> dict[int, str]:
  """Class index -> label text: every name if rows are a line tall, else every n-th index."""
  if cell >= line:
    return {i: n if len(n) <= LABEL_CHARS else n[:LABEL_CHARS - 1] + "~"
            for i, n in enumerate(names)}
  step = math.ceil(line / cell)
  return {i: str(i) for i in range(0, len(names), step)}


def draw_confusion(counts: np.ndarray, names: list[str], title: str) -> Image.Image:
  """A K x K row-normalised heat map with class labels on both axes and a title line."""
  k = len(counts)
  cell = _cell_size(k)
  font = ImageFont.load_default()
  text_w = lambda s: math.ceil(font.getbbox(s)[2]) if s else 0
  line = math.ceil(font.getbbox("Ag0")[3]) + 2
  labels = _axis_labels(names, cell, line)
  pad, label_w = 6, max([text_w(s) for s in labels.values()], default=0)
  heat_side = k * cell
  left, top = pad + label_w + pad, pad + line + pad + label_w + pad
  width = max(left + heat_side + pad, text_w(title) + 2 * pad)
  image = Image.new("RGB", (width, top + heat_side + pad), "white")
  image.paste(Image.fromarray(_heat_pixels(counts, cell)), (left, top))
  draw = ImageDraw.Draw(image)
  draw.rectangle([left - 1, top - 1, left + heat_side, top + heat_side], outline=(128, 128, 128))
  draw.text((pad, pad), title, fill="black", font=font)
  for i, text in labels.items():
    centre = i * cell + cell // 2 - line // 2
    draw.text((left - pad - text_w(text), top + centre), text, fill="black", font=font)
    # Column labels: the text drawn on its own strip, turned to read bottom-up.
    strip = Image.new("L", (max(text_w(text), 1), line), 255)
    ImageDraw.Draw(strip).text((0, 0), text, fill=0, font=font)
    turned = strip.rotate(90, expand=True)
    image.paste(Image.new("RGB", turned.size, "black"),
                (left + centre, top - pad - turned.size[1]), Image.eval(turned, lambda v: 255 - v))
  return image
