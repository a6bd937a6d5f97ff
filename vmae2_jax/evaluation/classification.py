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

from vmae2_jax.data import pipelines
from vmae2_jax.evaluation import multiview, report
from vmae2_jax.progress import Progress


def _predict_pass(exp, params, batches: Iterator[dict], num_batches: int,
                  merger: multiview.ViewMerger, label: str) -> tuple[float, int]:
  """Feeds `num_batches` batches through the model into `merger`; returns (sum of
  -log p(label) over labelled views, their count). Process 0 shows progress."""
  predict = exp.predict_fn
  loss_sum, count = 0.0, 0
  bar = Progress(label, "batches") if jax.process_index() == 0 else None

  def consume(local, out):
    nonlocal loss_sum, count
    logp = exp.host_rows(out)
    merger.add(local["video_id"], local["view"], local["label"], np.exp(logp), local["name"])
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
  return {"val_top1": float(100.0 * acc["top1"]), "val_top5": float(100.0 * acc["top5"]),
          "val_loss": float(loss_sum / max(count, 1)), "val_videos": int(acc["num_videos"])}


def test(exp, params, out_dir: str) -> dict:
  """The multi-view test (test_num_segment x test_num_crop views per video); writes the
  report (predictions.csv, per_class.csv, metrics.json, confusion.png) into out_dir."""
  c = exp.config
  pi, pc = jax.process_index(), jax.process_count()
  batches = pipelines.make_eval_iterator(c, process_index=pi, process_count=pc)
  merger = multiview.ViewMerger()
  _predict_pass(exp, params, batches, pipelines.num_eval_batches(c, process_count=pc), merger,
                "multi-view test")
  summary = multiview.gather_results(merger.results().summarize())
  acc = multiview.accuracy(summary)
  views = c.data.test_num_segment * c.data.test_num_crop
  results = {"test_top1": float(100.0 * acc["top1"]), "test_top5": float(100.0 * acc["top5"]),
             "test_videos": int(acc["num_videos"]), "test_views": views, "test_dir": out_dir}
  if jax.process_index() == 0:
    report.write_test_report(out_dir, summary, exp.task.num_classes, exp.task.class_names,
                             max_confusion_classes=c.eval.confusion_max_classes)
    logging.info("multi-view test (%d temporal x %d spatial views) on %d videos: top-1 %.2f%%, "
                 "top-5 %.2f%%; report in %s", c.data.test_num_segment, c.data.test_num_crop,
                 results["test_videos"], results["test_top1"], results["test_top5"], out_dir)
  return results
