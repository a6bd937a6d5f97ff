"""The detector's pass over the evaluation set: detections, AVA's CSV, the frame mAP.

Every host scores its own test batches (vmae2_jax.data.ava's eval iterator);
the detection rows are gathered to every host, and the frame mAP is computed
with vmae2_jax.evaluation.ava (the official evaluator's semantics) against
config.detect.groundtruth, on config.detect.label_map's classes (AVA's 60),
with config.detect.exclusions and top_k. Process 0 writes the detections in
AVA's CSV format and the per-class report.
"""

from __future__ import annotations

import pickle

import jax
import numpy as np
from absl import logging

from vmae2_jax import paths
from vmae2_jax.models.platform import forward_compiler_options
from vmae2_jax.progress import Progress

# Batch entries the model reads on device (the others stay on the host).
_DEVICE = ("video", "boxes", "valid_hw")


def _predict_fn(exp):
  """params, video, boxes, valid_hw -> sigmoid probabilities [B, N, K], batch-sharded;
  jitted once per Experiment (kept on its task), one program per bucket shape."""
  cache = exp.task.__dict__.setdefault("_compiled_predict", {})
  if id(exp) not in cache:
    def predict(params, video, boxes, valid_hw):
      return exp.task.predict(params, exp.graphdef, video, boxes, valid_hw)
    cache[id(exp)] = jax.jit(exp._constrained(predict),
                             in_shardings=(exp.state_sharding.params, exp.batch_sharding(5),
                                           exp.batch_sharding(3), exp.batch_sharding(2)),
                             out_shardings=exp.batch_sharding(3),
                             compiler_options=forward_compiler_options(
                                 exp.mesh.devices.flat[0].platform))
  return cache[id(exp)]


def _pad_rows(local: dict, multiple: int) -> dict:
  """Padding keyframes (keyframe -1, no boxes) so the rows divide over the devices."""
  extra = -len(local["keyframe"]) % multiple
  if not extra:
    return local
  return {k: np.concatenate([v, np.full((extra,) + v.shape[1:], -1 if k == "keyframe" else 0,
                                        v.dtype)]) for k, v in local.items()}


def _gather_rows(rows: list) -> list:
  """Every host's detection rows, on every host (a collective with several processes)."""
  if jax.process_count() == 1:
    return rows
  from jax.experimental import multihost_utils
  data = np.frombuffer(pickle.dumps(rows), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([len(data)], np.int64))
  padded = np.zeros(int(np.max(sizes)), np.uint8)
  padded[:len(data)] = data
  every = multihost_utils.process_allgather(padded)
  out = []
  for blob, n in zip(every, np.asarray(sizes).reshape(-1)):
    out += pickle.loads(np.asarray(blob[:int(n)], np.uint8).tobytes())
  return out


def score_evaluation_set(exp, params) -> tuple[list, dict]:
  """(AVA detection rows of the whole evaluation set, the iterator's label map)."""
  from vmae2_jax.data.ava import make_detect_eval_iterator
  from vmae2_jax.evaluation.ava import detection_rows
  c = exp.config
  it = make_detect_eval_iterator(c, process_index=jax.process_index(),
                                 process_count=jax.process_count())
  predict = _predict_fn(exp)
  multiple = max(1, exp.layout.batch_shards // jax.process_count())
  bar = Progress("detection test", "batches") if jax.process_index() == 0 else None
  rows, pending = [], None

  def consume(local, out):
    real = local["keyframe"] >= 0  # padding keyframes have no frame to normalise boxes by
    probs = exp.host_rows(out)[:len(real)][real]
    rows.extend(detection_rows({k: v[real] for k, v in local.items()}, probs, it.keyframes))

  for i in range(it.num_batches):
    local = next(it)
    padded = _pad_rows(local, multiple)
    arrays = [jax.make_array_from_process_local_data(exp.batch_sharding(padded[k].ndim),
                                                     padded[k]) for k in _DEVICE]
    out = predict(params, *arrays)  # dispatched; the host reads the next batch meanwhile
    if pending is not None:
      consume(*pending)
    pending = (local, out)
    if bar is not None:
      bar.update(i + 1, it.num_batches)
  if pending is not None:
    consume(*pending)
  if bar is not None:
    bar.close()
  return _gather_rows(rows), it.label_map


def evaluate(exp, params, *, prefix: str, workdir: str | None = None,
             step: int | None = None) -> dict:
  """{prefix}_map (frame mAP in %, NaN without ground truth), {prefix}_detections (rows);
  with workdir, WORKDIR/{prefix}_step<N>_detections.csv and _map.txt (process 0)."""
  from vmae2_jax.data.ava import read_box_csv, read_exclusions, read_label_map, write_box_csv
  from vmae2_jax.evaluation.ava import format_report, frame_map
  d = exp.config.detect
  rows, shard_labels = score_evaluation_set(exp, params)
  results = {f"{prefix}_detections": len(rows)}
  names = read_label_map(d.label_map) if d.label_map else dict(shard_labels)
  report = None
  if d.groundtruth:
    gt = read_box_csv(d.groundtruth)
    exclusions = read_exclusions(d.exclusions) if d.exclusions else ()
    mean_ap, per_class = frame_map(gt, rows, exclusions=exclusions,
                                   class_ids=sorted(names) if d.label_map else None,
                                   top_k=d.top_k or None)
    results[f"{prefix}_map"] = float(100.0 * mean_ap)
    report = format_report(mean_ap, per_class, names)
    logging.info("%s frame mAP %.2f%% over %d detections", prefix, 100.0 * mean_ap, len(rows))
  else:
    logging.warning("config.detect.groundtruth is empty: detections scored, no frame mAP")
  if workdir is not None and jax.process_index() == 0:
    stem = paths.join(workdir, f"{prefix}_step{step}")
    write_box_csv(f"{stem}_detections.csv", rows, detections=True)
    results[f"{prefix}_csv"] = f"{stem}_detections.csv"
    if report is not None:
      paths.write_text(f"{stem}_map.txt", report + "\n")
  return results
