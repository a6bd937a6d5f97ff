"""AVA frame mAP against hand-computed cases (vmae2_jax/evaluation/ava.py)."""

import math

import numpy as np
import pytest

from vmae2_jax.data.ava import formats
from vmae2_jax.data.ava.formats import BoxRow
from vmae2_jax.evaluation import ava

A, B, C = ("vidA", 902), ("vidA", 903), ("vidB", 1000)
BOX1 = (0.1, 0.1, 0.4, 0.6)
BOX2 = (0.5, 0.2, 0.9, 0.8)


def gt(at, box, action):
  return BoxRow(at[0], at[1], box, action)


def det(at, box, action, score):
  return BoxRow(at[0], at[1], box, action, score=score)


def test_perfect_detections_score_one():
  g = [gt(A, BOX1, 1), gt(A, BOX1, 2), gt(B, BOX2, 1), gt(C, BOX2, 3)]
  d = [det((r.video_id, r.timestamp), r.box, r.action_id, 0.5 + 0.1 * i)
       for i, r in enumerate(g)]
  mean_ap, per_class = ava.frame_map(g, d)
  assert mean_ap == 1.0 and per_class == {1: 1.0, 2: 1.0, 3: 1.0}


def test_tied_scores_rank_as_the_official_evaluator():
  # A false positive in keyframe A and a true positive in keyframe B, equal scores. The
  # official ranks with NumPy's argsort reversed: of two tied entries the later one (B's)
  # comes first, so precision is 1 at full recall: AP 1.0 (a stable sort would give 0.5).
  g = [gt(B, BOX1, 1)]
  d = [det(A, BOX1, 1, 0.5), det(B, BOX1, 1, 0.5)]
  assert ava.frame_map(g, d)[0] == pytest.approx(1.0)
  # The other file order puts the false positive first: precision 0 then 1/2 -> AP 0.5.
  assert ava.frame_map(g, d[::-1])[0] == pytest.approx(0.5)


def test_exclusions_drop_ground_truth_and_detections():
  g = [gt(A, BOX1, 1), gt(B, BOX1, 1)]
  d = [det(A, BOX1, 1, 0.9), det(C, BOX2, 1, 0.95)]
  # Without exclusions: FP (C, 0.95), TP (A) -> precision 0, 1/2 at recall 0, 1/2 -> AP 0.25.
  assert ava.frame_map(g, d)[0] == pytest.approx(0.25)
  # B's missed box and C's false positive excluded: one box, found -> 1.0.
  keys = {formats.image_key(*B), formats.image_key(*C)}
  assert ava.frame_map(g, d, exclusions=keys)[0] == pytest.approx(1.0)


def test_class_whitelist_and_a_class_without_detections():
  g = [gt(A, BOX1, 1), gt(A, BOX2, 2)]
  d = [det(A, BOX1, 1, 0.9), det(A, BOX2, 7, 0.9)]  # class 7: no ground truth anywhere
  mean_ap, per_class = ava.frame_map(g, d)
  # Class 2 has ground truth and no detection: AP 0, in the mean; class 7 none: NaN, out.
  assert per_class[1] == 1.0 and per_class[2] == 0.0 and math.isnan(per_class[7])
  assert mean_ap == pytest.approx(0.5)
  mean_ap, per_class = ava.frame_map(g, d, class_ids=[1])
  assert mean_ap == 1.0 and list(per_class) == [1]


def test_top_k_caps_detections_per_keyframe_over_all_classes():
  g = [gt(A, BOX1, 1), gt(A, BOX2, 2)]
  d = [det(A, BOX1, 1, 0.9), det(A, BOX2, 2, 0.4), det(A, BOX1, 2, 0.3)]
  assert ava.frame_map(g, d)[0] == pytest.approx(1.0)
  # top_k=1 keeps only (BOX1, class 1): class 2 loses its true positive -> AP 0.
  mean_ap, per_class = ava.frame_map(g, d, top_k=1)
  assert per_class == {1: 1.0, 2: 0.0} and mean_ap == pytest.approx(0.5)


def test_duplicate_detection_is_a_false_positive():
  g = [gt(A, BOX1, 1), gt(B, BOX1, 1)]
  d = [det(A, BOX1, 1, 0.9), det(A, BOX1, 1, 0.8), det(B, BOX1, 1, 0.7)]
  # TP, FP (A's box taken), TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; the envelope
  # gives 1 over the first half and 2/3 over the second: AP = 0.5 + 1/3.
  assert ava.frame_map(g, d)[0] == pytest.approx(0.5 + 1 / 3)


def test_a_detection_matches_only_its_best_overlapping_box():
  a, b = (0.0, 0.0, 0.4, 1.0), (0.2, 0.0, 0.6, 1.0)
  second = (0.08, 0.0, 0.48, 1.0)  # IoU 0.667 with a (taken), 0.538 with b (free)
  g = [gt(A, a, 1), gt(A, b, 1)]
  d = [det(A, a, 1, 0.9), det(A, second, 1, 0.8)]
  # The official matches the best-overlap box only: the second detection is a false
  # positive although b is free. TP, FP with 2 boxes -> AP 0.5.
  assert ava.frame_map(g, d)[0] == pytest.approx(0.5)


def test_iou_exactly_one_half_matches():
  g = [gt(A, (0.0, 0.0, 0.5, 0.5), 1)]
  assert ava.frame_map(g, [det(A, (0.0, 0.0, 0.5, 0.25), 1, 0.9)])[0] == 1.0  # IoU 0.5
  assert ava.frame_map(g, [det(A, (0.0, 0.0, 0.5, 0.24), 1, 0.9)])[0] == 0.0  # IoU 0.48


def test_detections_on_keyframes_without_ground_truth_are_false_positives():
  g = [gt(A, BOX1, 1)]
  d = [det(C, BOX1, 1, 0.9), det(A, BOX1, 1, 0.5)]
  assert ava.frame_map(g, d)[0] == pytest.approx(0.5)


def test_results_csv_round_trip_and_cli(tmp_path, capsys):
  g = [gt(A, BOX1, 1), gt(B, BOX2, 2)]
  d = [det(A, BOX1, 1, 0.875), det(B, BOX2, 2, 0.25), det(B, BOX1, 2, 0.5)]
  formats.write_box_csv(tmp_path / "gt.csv", g, detections=False)
  formats.write_box_csv(tmp_path / "det.csv", d)
  back = formats.read_box_csv(tmp_path / "det.csv", detections=True)
  assert [(r.key, r.box, r.action_id, r.score) for r in back] == \
      [(r.key, r.box, r.action_id, r.score) for r in d]
  (tmp_path / "map.pbtxt").write_text('item {\n  name: "a"\n  id: 1\n}\nitem { name: "b" id: 2 }\n')
  (tmp_path / "ex.csv").write_text("")
  assert ava.main([f"--groundtruth={tmp_path / 'gt.csv'}", f"--detections={tmp_path / 'det.csv'}",
                   f"--label_map={tmp_path / 'map.pbtxt'}", f"--exclusions={tmp_path / 'ex.csv'}"
                   ]) == 0
  out = capsys.readouterr().out
  # Class 2: FP (0.5) then TP (0.25) -> AP 0.5; class 1: 1.0.
  assert "frame mAP@0.5IoU: 0.7500" in out and "0.5000" in out and " b " in out


def test_cli_bad_detections_file_is_one_line(tmp_path, capsys):
  (tmp_path / "gt.csv").write_text("vidA,0902,0.1,0.1,0.5,0.5,1\n")
  (tmp_path / "det.csv").write_text("vidA,0902,0.1,0.1,0.5,0.5,1\n")  # no score column
  assert ava.main([f"--groundtruth={tmp_path / 'gt.csv'}",
                   f"--detections={tmp_path / 'det.csv'}"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "det.csv row 1: 7 columns, expected 8" in err


def test_detection_rows_from_a_test_batch():
  batch = {"boxes": np.array([[[10, 20, 110, 220], [0, 0, 0, 0]]], np.float32),
           "box_mask": np.array([[True, False]]), "scores": np.array([[0.5, 0.0]], np.float32),
           "keyframe": np.array([1], np.int32), "valid_hw": np.array([[256, 320]], np.int32)}
  probs = np.array([[[0.8, 0.1, 0.4], [0.9, 0.9, 0.9]]], np.float32)
  rows = ava.detection_rows(batch, probs, [A, B], class_ids=[1, 3])
  assert [(r.key, r.action_id) for r in rows] == [("vidA,0903", 1), ("vidA,0903", 3)]
  assert rows[0].score == pytest.approx(0.4) and rows[1].score == pytest.approx(0.2)
  assert rows[0].box == pytest.approx((10 / 320, 20 / 256, 110 / 320, 220 / 256))


def test_matches_the_official_evaluator_on_stored_random_cases():
  # tests/make_ava_reference.py ran the official code (ActivityNet's reader + the TF
  # Object Detection API's PascalDetectionEvaluator) on these cases: ties, duplicates,
  # empty keyframes, exclusions, caps.
  import json
  import os
  with open(os.path.join(os.path.dirname(__file__), "data", "ava_official_map.json")) as f:
    cases = json.load(f)["cases"]
  assert len(cases) >= 40
  for i, case in enumerate(cases):
    g = [BoxRow(r[0], r[1], tuple(r[2:6]), r[6]) for r in case["groundtruth"]]
    d = [BoxRow(r[0], r[1], tuple(r[2:6]), r[6], score=r[7]) for r in case["detections"]]
    ours, _ = ava.frame_map(g, d, exclusions=case["exclusions"], class_ids=case["classes"],
                            top_k=case["top_k"])
    want = case["official_map"]
    assert (math.isnan(ours) and math.isnan(want)) or ours == pytest.approx(want, abs=1e-12), i
