"""Evaluating a classifier on config.data.val_path: single-view validation and the multi-view test.

Both run the Experiment's jitted prediction over batches whose rows are views
tagged with (video_id, view); padding rows (video_id -1) keep every host's
batch count equal and are dropped. Softmax probabilities are averaged over
each video's views (the reference's merge), videos are split between
processes (never their views), and the small per-video summaries are
gathered so every video counts exactly once.
"""

from __future__ import annotations

from typing import Iterator

import jax
import numpy as np
from absl import logging

from vmae2_jax import paths
from vmae2_jax.data import pipelines
from vmae2_jax.evaluation import multiview, report, view_scores
from vmae2_jax.progress import Progress


def _predict_pass(exp, params, batches: Iterator[dict], num_batches: int,
                  merger: multiview.ViewMerger, label: str,
                  store: view_scores.ViewStore | None = None) -> tuple[float, int]:
  """Feeds `num_batches` batches through the model into `merger` (and every view's
  scores into `store`); returns (sum of -log p(label) over labelled views, their
  count). Process 0 shows progress."""
  predict = exp.predict_fn
  loss_sum, count = 0.0, 0
  bar = Progress(label, "batches") if jax.process_index() == 0 else None

  def consume(local, out):
    nonlocal loss_sum, count
    logp = exp.host_rows(out)
    merger.add(local["video_id"], local["view"], local["label"], np.exp(logp), local["name"])
    if store is not None:
      store.add(local["video_id"], local["view"], local["label"], logp, local["name"])
    ok = (local["video_id"] >= 0) & (local["label"] >= 0)
    loss_sum += float(-logp[ok, local["label"][ok]].sum())
    count += int(ok.sum())

  # Rows are padded to a whole number per device, so any evaluation batch size works.
  multiple = max(1, exp.layout.batch_shards // jax.process_count())
  pending = None
  for i in range(num_batches):
    local = _pad_rows(next(batches), multiple)
    video = jax.make_array_from_process_local_data(exp.batch_sharding(5), local["video"])
    out = predict(params, video)  # dispatched; the host reads the next batch meanwhile
    if pending is not None:
      consume(*pending)
    pending = (local, out)
    if bar is not None:
      bar.update(i + 1, num_batches)
  if pending is not None:
    consume(*pending)
  if bar is not None:
    bar.close()
  return loss_sum, count


def _pad_rows(local: dict, multiple: int) -> dict:
  """Appends padding rows (video_id -1) so the row count divides by `multiple`."""
  extra = -len(local["video_id"]) % multiple
  if not extra:
    return local
  pad = {"video_id": -1, "view": 0, "label": -1, "name": ""}
  return {k: np.concatenate([v, np.full((extra,) + v.shape[1:], pad.get(k, 0), v.dtype)])
          for k, v in local.items()}


def _sum_over_processes(*values: float) -> list[float]:
  if jax.process_count() == 1:
    return list(values)
  from jax.experimental import multihost_utils
  return list(np.asarray(multihost_utils.process_allgather(
      np.asarray(values, np.float64))).sum(axis=0))


def validate(exp, params) -> dict:
  """Single view per video (the reference's validation mode): val_top1/5 in %, val_loss."""
  c = exp.config
  pi, pc = jax.process_index(), jax.process_count()
  batches = pipelines.make_validation_iterator(c, process_index=pi, process_count=pc)
  merger = multiview.ViewMerger()
  loss_sum, count = _predict_pass(exp, params, batches,
                                  pipelines.num_validation_batches(c, process_count=pc), merger,
                                  "validation")
  loss_sum, count = _sum_over_processes(loss_sum, count)
  summary = multiview.gather_results(merger.results().summarize())
  acc = multiview.accuracy(summary)
  results = {"val_top1": float(100.0 * acc["top1"]), "val_top5": float(100.0 * acc["top5"]),
             "val_loss": float(loss_sum / max(count, 1)), "val_videos": int(acc["num_videos"])}
  one_class = one_class_note(summary, exp.task.class_names)
  if one_class:
    results["val_one_class"] = one_class
    logging.warning("validation: %s (a model that has not learnt yet, e.g. an lr too small "
                    "for the batch)", one_class)
  return results


def one_class_note(summary: multiview.VideoSummary, class_names) -> str | None:
  """"all N videos predicted as X" when every video of a set of several got one class."""
  predicted = np.unique(summary.predictions)
  if len(summary) < 2 or len(predicted) != 1:
    return None
  k = int(predicted[0])
  name = class_names[k] if class_names and k < len(class_names) else f"class {k}"
  return f"all {len(summary)} videos predicted as {name}"


def test(exp, params, out_dir: str) -> dict:
  """The multi-view test (test_num_segment x test_num_crop views per video); writes the
  report (predictions.csv, per_class.csv, metrics.json, confusion.png) and every view's
  scores (views.npz, see view_scores) into out_dir."""
  c = exp.config
  pi, pc = jax.process_index(), jax.process_count()
  batches = pipelines.make_eval_iterator(c, process_index=pi, process_count=pc)
  merger = multiview.ViewMerger()
  views = c.data.test_num_segment * c.data.test_num_crop
  store = view_scores.ViewStore(views)
  _predict_pass(exp, params, batches, pipelines.num_eval_batches(c, process_count=pc), merger,
                "multi-view test", store)
  # Every process writes its own videos' view scores (the reference's per-GPU files).
  view_scores.write_views(out_dir, store, class_names=exp.task.class_names,
                          num_segment=c.data.test_num_segment, num_crop=c.data.test_num_crop,
                          process_index=pi, process_count=pc)
  summary = multiview.gather_results(merger.results().summarize())
  acc = multiview.accuracy(summary)
  results = {"test_top1": float(100.0 * acc["top1"]), "test_top5": float(100.0 * acc["top5"]),
             "test_videos": int(acc["num_videos"]), "test_views": views, "test_dir": out_dir}
  one_class = one_class_note(summary, exp.task.class_names)
  if one_class:
    results["test_one_class"] = one_class
    logging.warning("multi-view test: %s", one_class)
  if jax.process_index() == 0:
    run = paths.basename(paths.dirname(out_dir.rstrip("/")))
    report.write_test_report(out_dir, summary, exp.task.num_classes, exp.task.class_names,
                             max_confusion_classes=c.eval.confusion_max_classes,
                             title=f"{run}: {paths.basename(out_dir.rstrip('/'))}")
    logging.info("multi-view test (%d temporal x %d spatial views) on %d videos: top-1 %.2f%%, "
                 "top-5 %.2f%%; report in %s", c.data.test_num_segment, c.data.test_num_crop,
                 results["test_videos"], results["test_top1"], results["test_top5"], out_dir)
  return results
