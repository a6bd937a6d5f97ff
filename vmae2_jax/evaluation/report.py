"""Test report files from a (gathered) `VideoSummary`: CSVs, metrics JSON, confusion PNG
(matplotlib).

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
from matplotlib import ticker
from matplotlib.figure import Figure

from vmae2_jax.evaluation.figures import new_figure, save_png
from vmae2_jax import paths as storage  # `paths` names the report's files below
from vmae2_jax.evaluation.multiview import VideoSummary, accuracy, confusion, per_class

FIGURE_MIN_PX, FIGURE_MAX_PX = 400, 1000  # side of the heat map's part of confusion.png
NAMED_CLASSES = 40  # up to this many classes the axes name every class, else indices
LABEL_CHARS = 18  # longer class names are cut on the confusion picture


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
                      max_confusion_classes: int = 100, title: str = "") -> dict:
  """Writes predictions.csv, per_class.csv, metrics.json and (K small) confusion.png.

  Accuracies in per_class.csv and metrics.json are percentages, as the
  reference prints them. `title` (the run and step) heads confusion.png. Returns
  {"paths": {kind: path}, "metrics": metrics}.
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
    paths["confusion"] = save_png(
        draw_confusion(confusion(summary, num_classes), names, _title(metrics, title)),
        storage.join(directory, "confusion.png"))
  return {"paths": paths, "metrics": metrics}


# -- confusion picture ------------------------------------------------------------


def _title(metrics: dict, title: str = "") -> str:
  pct = lambda x: "n/a" if x is None else f"{x:.2f}%"
  head = f"{title}\n" if title else ""
  return (f"{head}top-1 {pct(metrics['top1'])}, top-5 {pct(metrics['top5'])}, "
          f"{metrics['num_labelled']} videos")


def _short(name: str) -> str:
  return name if len(name) <= LABEL_CHARS else name[:LABEL_CHARS - 1] + "~"


def draw_confusion(counts: np.ndarray, names: list[str], title: str) -> Figure:
  """A K x K heat map of each true class's share per predicted class (0-100%): class
  names on both axes up to NAMED_CLASSES classes, round class indices beyond."""
  k = len(counts)
  rows = counts.sum(axis=1, keepdims=True)
  share = 100.0 * np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
  named = k <= NAMED_CLASSES
  side = int(np.clip(360 + 12 * k, FIGURE_MIN_PX, FIGURE_MAX_PX))
  fig = new_figure(side + 120 + (110 if named else 0), side + 60 + (110 if named else 0))
  ax = fig.add_subplot()
  image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100, interpolation="nearest")
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  ax.set_title(title, fontsize=10)
  if named:
    ax.set_xticks(range(k), [_short(n) for n in names], rotation=90, fontsize=8)
    ax.set_yticks(range(k), [_short(n) for n in names], fontsize=8)
  else:
    for axis in (ax.xaxis, ax.yaxis):
      axis.set_major_locator(ticker.MaxNLocator(nbins=10, integer=True, steps=[1, 2, 5, 10]))
  bar = fig.colorbar(image, ax=ax, shrink=0.8)
  bar.set_label("share of the true class's videos")
  bar.ax.yaxis.set_major_locator(ticker.MultipleLocator(20))
  bar.ax.yaxis.set_major_formatter(ticker.PercentFormatter(100, decimals=0))
  return fig
