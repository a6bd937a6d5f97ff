"""Ensembles several runs' multi-view tests from their per-view scores.

  python -m vmae2_jax.evaluation.merge RUN_A RUN_B ... [--out=DIR]

Each RUN is a test report folder (holding views.npz, or its per-process
parts) or a workdir with exactly one test_step* report folder. Every run must
have tested the same videos (matched by name, else by id) with the same
classes; each run's videos are scored as the test does (softmax of every
view, averaged over the views), the runs' video probabilities are averaged,
and top-1 / top-5 are printed per run and merged. DIR (default ./merged)
gets predictions.csv, per_class.csv, metrics.json (and confusion.png for few
classes) as a test report does, plus merge.json naming the runs.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from etils import epath

from vmae2_jax.evaluation import multiview, report
from vmae2_jax.evaluation.view_scores import FILE, RunViews, ViewsError, read_views


def _report_folder(run: str) -> epath.Path:
  d = epath.Path(run)
  if not d.exists():
    raise ViewsError(f"{run}: no such folder")
  if (d / FILE).exists() or any(d.glob("views-*-of-*.npz")):
    return d
  found = sorted(p for p in d.glob("test_step*") if p.is_dir() and (
      (p / FILE).exists() or any(p.glob("views-*-of-*.npz"))))
  if len(found) == 1:
    return found[0]
  if not found:
    raise ViewsError(f"{run}: neither a test report folder with {FILE} nor a workdir holding "
                     "one (test_step*/)")
  shown = ", ".join(p.name for p in found[:3]) + (f" (+{len(found) - 3} more)"
                                                  if len(found) > 3 else "")
  raise ViewsError(f"{run}: {len(found)} test report folders ({shown}); name one")


def _keys(run: RunViews) -> np.ndarray:
  """Video names when every video has a distinct one, else video ids."""
  named = all(run.names) and len(set(run.names.tolist())) == len(run.names)
  return run.names if named else run.video_ids.astype(str)


def _align(runs: list[RunViews]) -> list[np.ndarray]:
  """Each run's row order that lines its videos up with the first run's."""
  first = runs[0]
  keys0 = _keys(first)
  index0 = {k: i for i, k in enumerate(keys0)}
  orders = []
  for run in runs:
    if run.scores.shape[-1] != first.scores.shape[-1]:
      raise ViewsError(f"{run.directory}: {run.scores.shape[-1]} classes, "
                       f"{first.directory} has {first.scores.shape[-1]}")
    if run.class_names and first.class_names and run.class_names != first.class_names:
      diff = [i for i, (a, b) in enumerate(zip(run.class_names, first.class_names)) if a != b]
      raise ViewsError(f"{run.directory}: class names differ from {first.directory}'s at "
                       f"{len(diff)} indices, first {diff[0]}: {run.class_names[diff[0]]!r} vs "
                       f"{first.class_names[diff[0]]!r}")
    keys = _keys(run)
    missing = sorted(set(keys0.tolist()) - set(keys.tolist()))
    extra = sorted(set(keys.tolist()) - set(keys0.tolist()))
    if missing or extra:
      what = (f"lacks {len(missing)} of {first.directory}'s videos (e.g. {missing[0]!r})"
              if missing else f"has {len(extra)} videos {first.directory} lacks (e.g. "
              f"{extra[0]!r})")
      raise ViewsError(f"{run.directory}: {what}; merge runs tested on the same videos")
    order = np.empty(len(keys), np.int64)
    order[[index0[k] for k in keys]] = np.arange(len(keys))
    labels = run.labels[order]
    known = (labels >= 0) & (first.labels >= 0)
    if (labels[known] != first.labels[known]).any():
      i = int(np.flatnonzero(known & (labels != first.labels))[0])
      raise ViewsError(f"{run.directory}: video {keys0[i]!r} has label {labels[i]}, "
                       f"{first.labels[i]} in {first.directory}")
    orders.append(order)
  return orders


def _summary(run: RunViews, probs: np.ndarray, labels: np.ndarray) -> multiview.VideoSummary:
  results = multiview.VideoResults(run.video_ids, run.names.astype(object), labels,
                                   probs.astype(np.float32), np.zeros(len(labels), np.int64))
  return results.summarize()


def merge(run_dirs: list[str], out: str) -> dict:
  """Merges the runs' test views; writes the merged report into `out`; returns metrics."""
  runs = [read_views(_report_folder(r)) for r in run_dirs]
  orders = _align(runs)
  first = runs[0]
  labels = first.labels.copy()
  per_run, total = [], np.zeros(first.scores.shape[::2], np.float64)
  for run, order in zip(runs, orders):
    probs = run.mean_probs()[order]
    run_labels = run.labels[order]
    labels = np.where(labels >= 0, labels, run_labels)
    acc = multiview.accuracy(_summary(first, probs, run_labels))
    per_run.append({"run": run.directory, "top1": 100 * acc["top1"], "top5": 100 * acc["top5"],
                    "views": run.num_segment * run.num_crop})
    total += probs
  merged = _summary(first, total / len(runs), labels)
  written = report.write_test_report(str(out), merged, total.shape[1],
                                     first.class_names or None)
  metrics = written["metrics"]
  with (epath.Path(out) / "merge.json").open("w") as f:
    json.dump({"runs": per_run, "top1": metrics["top1"], "top5": metrics["top5"],
               "num_videos": metrics["num_videos"]}, f, indent=2)
  return {"runs": per_run, "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.evaluation.merge",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("runs", nargs="+", help="test report folders or workdirs")
  p.add_argument("--out", default="merged", help="folder for the merged report")
  args = p.parse_args(argv)
  try:
    result = merge(args.runs, args.out)
  except ViewsError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  pct = lambda x: "n/a" if x != x else f"{x:.2f}%"
  for r in result["runs"]:
    print(f"{r['run']}: top-1 {pct(r['top1'])}, top-5 {pct(r['top5'])} ({r['views']} views)")
  m = result["metrics"]
  top1 = float("nan") if m["top1"] is None else m["top1"]
  top5 = float("nan") if m["top5"] is None else m["top5"]
  print(f"merged {len(result['runs'])} runs on {m['num_videos']} videos: top-1 {pct(top1)}, "
        f"top-5 {pct(top5)}; report in {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
