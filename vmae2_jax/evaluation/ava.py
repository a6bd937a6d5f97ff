"""AVA frame-level mAP at IoU 0.5, with the official AVA evaluator's semantics.

  python -m vmae2_jax.evaluation.ava --groundtruth=GT.csv --detections=DET.csv \
      [--exclusions=CSV] [--label_map=PBTXT] [--top_k=N]

prints the frame mAP and every class's AP. What it reproduces of the official
evaluator (ActivityNet's get_ava_performance.py over the TF Object Detection
API's PascalDetectionEvaluator):
  * keyframes in the exclusions file are dropped from ground truth and detections;
  * only the label map's classes count (the 60-class list for AVA v2.x results),
    rows of other classes are ignored in both files;
  * ``top_k``: per keyframe, only the k highest-scored (box, class) detections are
    kept (ActivityNet's evaluator keeps 50; 0/None keeps all, as the VideoMAE
    reference evaluates);
  * per keyframe and class, detections in descending score order each match the
    ground-truth box they overlap most; a match at IoU >= 0.5 to a box not yet
    taken is a true positive, anything else (a second detection of the same box,
    a best box already taken, a keyframe without ground truth) a false positive;
  * per class, detections of all keyframes ranked by score; AP is PASCAL VOC's
    all-point area under the precision envelope; a class with ground truth but no
    detection has AP 0, one without ground truth is left out of the mean;
  * ties in score keep the official order: a keyframe's rows pass through a heap of
    (score, action id, y1, x1, y2, x2) and a stable descending sort, then NumPy's
    argsort reversed, per keyframe and class and again over all keyframes.
"""

from __future__ import annotations

import argparse
import collections
import heapq
import math
import sys
from typing import Iterable, Sequence

import numpy as np

from vmae2_jax.data.ava import boxes as box_ops
from vmae2_jax.data.ava import formats
from vmae2_jax.data.ava.formats import BoxRow

IOU_THRESHOLD = 0.5


def _per_keyframe(rows: Iterable[BoxRow], class_ids, excluded, capacity: int):
  """{key: [(score, action, y1, x1, y2, x2)] best first}, keys in order of first appearance."""
  heaps: dict[str, list] = {}
  for r in rows:
    if r.box is None or r.key in excluded:
      continue
    if class_ids is not None and r.action_id not in class_ids:
      continue
    x1, y1, x2, y2 = r.box
    item = (float(r.score), int(r.action_id), y1, x1, y2, x2)
    heap = heaps.setdefault(r.key, [])
    if capacity < 1 or len(heap) < capacity:
      heapq.heappush(heap, item)
    elif item[0] > heap[0][0]:
      heapq.heapreplace(heap, item)
  return {k: sorted(h, key=lambda t: -t[0]) for k, h in heaps.items()}


def _match(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray,
           threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """One keyframe and class: (scores, true-positive flags) in descending score order."""
  order = np.argsort(det_scores)[::-1]
  det_boxes, det_scores = det_boxes[order], det_scores[order]
  tp = np.zeros(len(det_boxes), bool)
  if len(gt_boxes):
    iou = box_ops.iou_matrix(det_boxes, gt_boxes)
    best = np.argmax(iou, axis=1)
    taken = np.zeros(len(gt_boxes), bool)
    for i, g in enumerate(best):
      if iou[i, g] >= threshold and not taken[g]:
        tp[i] = taken[g] = True
  return det_scores, tp


def voc_ap(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
  """PASCAL VOC all-point average precision of ranked detections."""
  if num_gt == 0:
    return math.nan
  if not len(scores):
    return 0.0
  order = np.argsort(scores)[::-1]
  hits = tp[order].astype(int)
  cum_tp = np.cumsum(hits)
  precision = cum_tp / np.arange(1, len(hits) + 1)
  recall = cum_tp / num_gt
  recall = np.concatenate([[0.0], recall, [1.0]])
  precision = np.concatenate([[0.0], precision, [0.0]])
  precision = np.maximum.accumulate(precision[::-1])[::-1]
  steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
  return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def frame_map(gt_rows: Sequence[BoxRow], det_rows: Sequence[BoxRow], *,
              exclusions: Iterable[str] = (), class_ids: Iterable[int] | None = None,
              top_k: int | None = None, iou_threshold: float = IOU_THRESHOLD
              ) -> tuple[float, dict[int, float]]:
  """Frame mAP and {class id: AP} (NaN: no ground truth, not in the mean); see the module
  docstring. ``class_ids`` None: every class in either file."""
  excluded = set(exclusions)
  if class_ids is None:
    ids = sorted({r.action_id for r in list(gt_rows) + list(det_rows) if r.box is not None})
  else:
    ids = sorted(set(int(i) for i in class_ids))
  whitelist = set(ids)
  gt = _per_keyframe(gt_rows, whitelist, excluded, 0)
  det = _per_keyframe(det_rows, whitelist, excluded, int(top_k or 0))
  num_gt = collections.Counter(e[1] for entries in gt.values() for e in entries)
  scores = collections.defaultdict(list)
  hits = collections.defaultdict(list)
  for key, entries in det.items():
    arr = np.array([e[2:] for e in entries], np.float64)      # y1, x1, y2, x2
    labels = np.array([e[1] for e in entries])
    conf = np.array([e[0] for e in entries], np.float64)
    valid = (arr[:, 0] < arr[:, 2]) & (arr[:, 1] < arr[:, 3])  # the official drops the rest
    arr, labels, conf = arr[valid], labels[valid], conf[valid]
    g = gt.get(key, [])
    g_boxes = np.array([e[2:] for e in g], np.float64).reshape(-1, 4)
    g_labels = np.array([e[1] for e in g])
    for c in np.unique(labels).tolist():  # each class's lists grow in keyframe order
      sel = labels == c
      # IoU is symmetric in the axes: [y1, x1, y2, x2] rows work as they are.
      s, tp = _match(arr[sel], conf[sel], g_boxes[g_labels == c] if len(g) else g_boxes,
                     iou_threshold)
      scores[c].append(s)
      hits[c].append(tp)
  per_class = {}
  for c in ids:
    s = np.concatenate(scores[c]) if scores[c] else np.zeros(0)
    tp = np.concatenate(hits[c]) if hits[c] else np.zeros(0, bool)
    per_class[c] = voc_ap(s, tp, num_gt.get(c, 0))
  values = [v for v in per_class.values() if not math.isnan(v)]
  return (float(np.mean(values)) if values else math.nan), per_class


def detection_rows(batch: dict, probs: np.ndarray, keyframes: Sequence[tuple[str, int]], *,
                   class_ids: Iterable[int] | None = None, min_score: float = 0.0
                   ) -> list[BoxRow]:
  """A test batch and the model's sigmoid outputs probs [B, N, C] -> AVA detection rows.

  The score of (box, class c) is probs x the box's detector score (batch["scores"]), as
  the reference; column c is action id c + 1; boxes are written normalised
  (batch["valid_hw"]); padding rows and boxes are skipped.
  """
  probs = np.asarray(probs, np.float32)
  keep_ids = set(int(i) for i in class_ids) if class_ids is not None else None
  norm = box_ops.to_normalised(np.asarray(batch["boxes"], np.float32),
                               np.asarray(batch["valid_hw"]))
  final = probs * np.asarray(batch["scores"], np.float32)[..., None]
  keyframe = np.asarray(batch["keyframe"])
  take = (final >= min_score) & np.asarray(batch["box_mask"], bool)[..., None]
  take &= (keyframe >= 0)[:, None, None]
  if keep_ids is not None:
    take &= np.isin(np.arange(1, final.shape[-1] + 1), sorted(keep_ids))
  bs, ns, cs = np.nonzero(take)  # row-major: keyframe, then box, then class
  where = [keyframes[int(k)] if k >= 0 else None for k in keyframe.tolist()]
  boxes = {}
  rows = []
  for b, n, c, score in zip(bs.tolist(), ns.tolist(), cs.tolist(), final[bs, ns, cs].tolist()):
    box = boxes.get((b, n))
    if box is None:
      box = boxes[(b, n)] = tuple(norm[b, n].tolist())
    rows.append(BoxRow(where[b][0], int(where[b][1]), box, c + 1, score))
  return rows


def format_report(mean_ap: float, per_class: dict[int, float],
                  names: dict[int, str] | None = None) -> str:
  """The CLI's text: frame mAP, then one line per class."""
  names = names or {}
  lines = [f"frame mAP@{IOU_THRESHOLD}IoU: {mean_ap:.4f} "
           f"({sum(not math.isnan(v) for v in per_class.values())} classes with ground truth)"]
  for c, ap in per_class.items():
    shown = "  n/a (no ground truth)" if math.isnan(ap) else f"{ap:.4f}"
    lines.append(f"  {c:3d} {names.get(c, '')[:40]:40s} {shown}")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.evaluation.ava",
                              description=__doc__.split("\n")[0])
  p.add_argument("--groundtruth", required=True, help="AVA ground-truth CSV")
  p.add_argument("--detections", required=True, help="detections CSV (8 columns, with score)")
  p.add_argument("--exclusions", default="", help="excluded timestamps CSV")
  p.add_argument("--label_map", default="", help="classes to evaluate (pbtxt; '' = all)")
  p.add_argument("--top_k", type=int, default=0,
                 help="detections kept per keyframe (0 = all; ActivityNet's evaluator: 50)")
  a = p.parse_args(argv)
  try:
    names = formats.read_label_map(a.label_map) if a.label_map else {}
    gt = formats.read_box_csv(a.groundtruth)
    det = formats.read_box_csv(a.detections, detections=True)
    excluded = formats.read_exclusions(a.exclusions) if a.exclusions else set()
  except formats.AvaFormatError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  mean_ap, per_class = frame_map(gt, det, exclusions=excluded,
                                 class_ids=list(names) if names else None, top_k=a.top_k)
  print(format_report(mean_ap, per_class, names))
  return 0


if __name__ == "__main__":
  sys.exit(main())
