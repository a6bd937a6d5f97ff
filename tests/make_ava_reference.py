"""Writes tests/data/ava_official_map.json: the official AVA evaluator's mAP on random cases.

The official evaluator is ActivityNet's get_ava_performance.py: its read_csv
(a heap per keyframe, ``capacity`` = top-k) feeding the TF Object Detection
API's PascalDetectionEvaluator. Point --pascal_evaluation at a copy of that
API's evaluation modules (object_detection_evaluation.py and its helpers,
e.g. AlphAction's alphaction/dataset/datasets/evaluation/ava/pascal_evaluation):

  python -m tests.make_ava_reference --pascal_evaluation=DIR

Cases have tied scores, duplicates, boxes of several classes, keyframes
without ground truth, exclusions and caps. tests/test_ava_eval.py checks
vmae2_jax.evaluation.ava against the stored numbers.
"""

from __future__ import annotations

import argparse
import collections
import heapq
import json
import logging
import os
import sys
import types

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "data", "ava_official_map.json")


def make_case(seed: int) -> dict:
  rng = np.random.default_rng(seed)
  keys = [(f"v{i % 3}", 900 + i) for i in range(int(rng.integers(2, 7)))]
  classes = list(range(1, int(rng.integers(2, 6))))
  gts, dets = [], []
  for video, ts in keys:
    boxes = []
    for _ in range(int(rng.integers(0, 4))):
      x1, y1 = rng.uniform(0, 0.6, 2)
      b = [round(x1, 2), round(y1, 2), round(x1 + rng.uniform(0.1, 0.4), 2),
           round(y1 + rng.uniform(0.1, 0.4), 2)]
      boxes.append(b)
      for a in rng.choice(classes, min(len(classes), int(rng.integers(1, 3))), replace=False):
        gts.append([video, ts, *b, int(a)])
    for _ in range(int(rng.integers(0, 8))):
      if boxes and rng.random() < 0.7:
        b = [round(v + rng.normal(0, 0.05), 2) for v in boxes[int(rng.integers(len(boxes)))]]
      else:
        x1, y1 = rng.uniform(0, 0.6, 2)
        b = [round(x1, 3), round(y1, 3), round(x1 + 0.2, 3), round(y1 + 0.2, 3)]
      score = round(float(rng.choice([0.1, 0.3, 0.5, 0.7, 0.9]) if rng.random() < 0.5
                          else rng.random()), 3)
      dets.append([video, ts, *b, int(rng.choice(classes + [max(classes) + 1])), score])
  excluded = [f"{keys[0][0]},{keys[0][1]:04d}"] if rng.random() < 0.3 else []
  return {"groundtruth": gts, "detections": dets, "classes": classes, "exclusions": excluded,
          "top_k": int(rng.choice([0, 0, 2, 3]))}


def official_map(case: dict, ode, fields) -> float:
  def read(rows, capacity, with_score):
    entries = collections.defaultdict(list)
    for r in rows:
      key = f"{r[0]},{int(r[1]):04d}"
      if r[6] not in case["classes"]:
        continue
      score = r[7] if with_score else 1.0
      item = (score, r[6], r[3], r[2], r[5], r[4])
      if capacity < 1 or len(entries[key]) < capacity:
        heapq.heappush(entries[key], item)
      elif score > entries[key][0][0]:
        heapq.heapreplace(entries[key], item)
    return {k: sorted(v, key=lambda t: -t[0]) for k, v in entries.items()}

  ev = ode.PascalDetectionEvaluator([{"id": c, "name": str(c)} for c in case["classes"]])
  for key, e in read(case["groundtruth"], 0, False).items():
    if key in case["exclusions"]:
      continue
    ev.add_single_ground_truth_image_info(key, {
        fields.InputDataFields.groundtruth_boxes: np.array([t[2:] for t in e], float),
        fields.InputDataFields.groundtruth_classes: np.array([t[1] for t in e], int),
        fields.InputDataFields.groundtruth_difficult: np.zeros(len(e), bool)})
  for key, e in read(case["detections"], case["top_k"], True).items():
    if key in case["exclusions"]:
      continue
    ev.add_single_detected_image_info(key, {
        fields.DetectionResultFields.detection_boxes: np.array([t[2:] for t in e], float),
        fields.DetectionResultFields.detection_classes: np.array([t[1] for t in e], int),
        fields.DetectionResultFields.detection_scores: np.array([t[0] for t in e], float)})
  return float(ev.evaluate()["PascalBoxes_Precision/mAP@0.5IOU"])


def main() -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--pascal_evaluation", required=True)
  p.add_argument("--cases", type=int, default=60)
  a = p.parse_args()
  # The TF OD API code predates NumPy 1.24's removal of these aliases.
  np.float, np.bool, np.NaN = float, np.bool_, np.nan
  pkg = types.ModuleType("pascal_evaluation")
  pkg.__path__ = [a.pascal_evaluation]
  sys.modules["pascal_evaluation"] = pkg
  from pascal_evaluation import object_detection_evaluation as ode
  from pascal_evaluation import standard_fields as fields
  logging.disable(logging.WARNING)
  cases = []
  for seed in range(a.cases):
    case = make_case(seed)
    if case["groundtruth"]:
      case["official_map"] = official_map(case, ode, fields)
      cases.append(case)
  with open(OUT, "w") as f:
    json.dump({"source": "ActivityNet get_ava_performance.read_csv + TF OD API "
                         "PascalDetectionEvaluator", "cases": cases}, f, separators=(",", ":"))
  print(f"wrote {len(cases)} cases to {OUT}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
