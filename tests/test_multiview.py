"""Multi-view merging, metrics, gathering and the test report (host side)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vmae2_jax.evaluation.multiview import (
    ViewMerger, VideoSummary, _pack, _unpack, accuracy, confusion, gather_results, per_class)
from vmae2_jax.evaluation.report import write_test_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _reference(rows):
  """engine_for_finetuning.merge + compute_video restated: rows of (name, pos, label, logits).

  Per name, the first row at each position counts; softmax (float64) per view,
  mean over views, argmax, argsort(-feat)[:5]. Returns name -> (mean, pred, top5, label).
  """
  feats, labels, positions = {}, {}, {}
  for name, pos, label, logits in rows:
    feats.setdefault(name, [])
    positions.setdefault(name, [])
    if pos in positions[name]:
      continue
    feats[name].append(_softmax(np.asarray(logits, np.float64)))
    positions[name].append(pos)
    labels[name] = label
  out = {}
  for name, data in feats.items():
    feat = np.mean(data, axis=0)
    out[name] = (feat, int(np.argmax(feat)), np.argsort(-feat)[:5], labels[name])
  return out


def _random_stream(rng, num_videos=40, num_classes=12, views=6, dup_rows=15):
  """Shuffled view rows with repeated positions (different logits), unlabelled videos."""
  labels = rng.integers(0, num_classes, num_videos)
  labels[rng.choice(num_videos, num_videos // 8, replace=False)] = -1
  ids = rng.choice(10_000, num_videos, replace=False)  # sparse, unsorted ids
  rows = [(int(ids[v]), view, int(labels[v]), rng.normal(0, 2, num_classes))
          for v in range(num_videos) for view in range(int(rng.integers(1, views + 1)))]
  for i in rng.choice(len(rows), min(dup_rows, len(rows)), replace=False):
    vid, view, label, _ = rows[i]
    rows.append((vid, view, label, rng.normal(0, 2, num_classes)))
  order = rng.permutation(len(rows))
  return [rows[i] for i in order]


def _feed(merger, rows, rng, num_classes):
  """Feeds `rows` in batches of random size, each with a few padding rows mixed in."""
  start = 0
  while start < len(rows):
    batch = rows[start:start + int(rng.integers(1, 9))]
    start += len(batch)
    pad = [(-1, 0, -1, rng.normal(0, 2, num_classes))] * int(rng.integers(0, 3))
    batch = batch + pad
    merger.add(np.asarray([r[0] for r in batch]), np.asarray([r[1] for r in batch]),
               np.asarray([r[2] for r in batch]),
               _softmax(np.stack([r[3] for r in batch])).astype(np.float32),
               [f"video {r[0]}" if r[0] >= 0 else "pad" for r in batch])


def _summary(rng, num_videos=30, num_classes=7) -> VideoSummary:
  merger = ViewMerger()
  rows = _random_stream(rng, num_videos, num_classes)
  _feed(merger, rows, rng, num_classes)
  return merger.results().summarize()


def test_merger_matches_reference_merge():
  rng = np.random.default_rng(0)
  k = 12
  rows = _random_stream(rng, num_classes=k)
  merger = ViewMerger()
  _feed(merger, rows, rng, k)
  results = merger.results()
  summary = results.summarize()
  ref = _reference([(f"video {vid}", str(view), label, logits)
                    for vid, view, label, logits in rows])

  assert list(results.video_ids) == sorted(int(n.split()[1]) for n in ref)
  assert list(summary.names) == [f"video {v}" for v in results.video_ids]
  assert results.mean_probs.dtype == np.float32 and results.mean_probs.shape == (len(ref), k)
  top1 = top5 = labelled = 0
  for i, vid in enumerate(results.video_ids):
    feat, pred, top, label = ref[f"video {vid}"]
    np.testing.assert_allclose(results.mean_probs[i], feat, rtol=0, atol=2e-6)
    assert summary.predictions[i] == pred
    assert list(summary.topk_classes[i]) == list(top)
    np.testing.assert_allclose(summary.topk_probs[i], feat[top], atol=2e-6)
    assert summary.labels[i] == label
    assert results.num_views[i] == len({view for v, view, _, _ in rows if v == vid})
    if label >= 0:
      labelled += 1
      top1 += pred == label
      top5 += label in top
  acc = accuracy(summary)
  assert acc["num_labelled"] == labelled and acc["num_videos"] == len(ref)
  assert acc["top1"] == pytest.approx(top1 / labelled)
  assert acc["top5"] == pytest.approx(top5 / labelled)
  assert acc["views_per_video"] == pytest.approx(results.num_views.mean())


def test_merger_first_repeat_wins_and_checks_input():
  merger = ViewMerger()
  p = np.eye(3, dtype=np.float32)
  # Same (video, view) twice in one batch and again later: only the first counts.
  merger.add([5, 5, -1], [0, 0, 0], [2, 2, -1], p[[0, 1, 2]], ["a", "a", "pad"])
  merger.add([5, 5], [0, 1], [-1, 2], p[[2, 2]], [b"a", b"a"])
  r = merger.results()
  np.testing.assert_allclose(r.mean_probs, [[0.5, 0, 0.5]])
  assert list(r.num_views) == [2] and list(r.labels) == [2] and list(r.names) == ["a"]
  with pytest.raises(ValueError, match="classes"):
    merger.add([6], [0], [1], np.ones((1, 4), np.float32), ["b"])
  with pytest.raises(ValueError, match="labels"):
    merger.add([5], [3], [1], p[:1], ["a"])
  empty = ViewMerger().results()
  assert len(empty) == 0 and accuracy(empty.summarize())["num_videos"] == 0


def test_unknown_label_is_filled_by_a_known_one():
  merger = ViewMerger()
  merger.add([1], [0], [-1], np.ones((1, 6), np.float32) / 6, ["x"])
  merger.add([1], [1], [4], np.ones((1, 6), np.float32) / 6, ["x"])
  assert list(merger.results().labels) == [4]


def test_top5_ties_go_to_the_lower_class_index():
  """Exact ties: stable order, so the prediction is the argmax (lowest tied index) and
  the 5th place goes to the lower index (the reference's unstable argsort leaves it open)."""
  merger = ViewMerger()
  uniform = np.full(8, 1 / 8, np.float32)
  tie5 = np.asarray([.2, .2, .15, .15, .1, .05, .1, .05], np.float32)  # classes 4 and 6 tie
  merger.add([0, 1, 2], [0, 0, 0], [5, 6, 4], np.stack([uniform, tie5, tie5]), ["u", "t", "s"])
  s = merger.results().summarize()
  assert list(s.topk_classes[0]) == [0, 1, 2, 3, 4] and s.predictions[0] == 0
  assert list(s.topk_classes[1]) == [0, 1, 2, 3, 4]
  assert [bool(x) for x in (s.labels[:, None] == s.topk_classes).any(axis=1)] == [
      False, False, True]
  assert accuracy(s)["top5"] == pytest.approx(1 / 3)
  # Many classes (numpy's unstable sorts reorder ties beyond small sizes): 7 classes
  # tie for first place; the 5 lowest of them are the top-5, the lowest the prediction.
  levels = np.random.default_rng(7).permutation(np.repeat(np.arange(10), 7)).astype(np.float32)
  probs = levels / levels.sum()
  many = ViewMerger()
  many.add([0], [0], [0], probs[None], ["m"])
  top = many.results().summarize().topk_classes[0]
  assert list(top) == sorted(range(70), key=lambda c: (-probs[c], c))[:5]
  # Fewer classes than k: top-k is every class, so top-5 always hits.
  small = ViewMerger()
  small.add([0], [0], [2], np.asarray([[.5, .3, .2]], np.float32), ["v"])
  assert small.results().summarize().topk_classes.shape == (1, 3)
  assert accuracy(small.results().summarize())["top5"] == 1.0


def test_per_class_and_confusion_match_direct_counts():
  rng = np.random.default_rng(1)
  k = 7
  s = _summary(rng, num_videos=60, num_classes=k)
  stats, conf = per_class(s, k), confusion(s, k)
  direct = np.zeros((k, k), np.int64)
  for label, pred, top in zip(s.labels, s.predictions, s.topk_classes):
    if label >= 0:
      direct[label, pred] += 1
  np.testing.assert_array_equal(conf, direct)
  for c in range(k):
    mine = [i for i in range(len(s)) if s.labels[i] == c]
    assert stats["count"][c] == len(mine)
    if not mine:
      assert np.isnan(stats["top1"][c]) and np.isnan(stats["top5"][c])
      continue
    assert stats["top1"][c] == pytest.approx(np.mean([s.predictions[i] == c for i in mine]))
    assert stats["top5"][c] == pytest.approx(np.mean([c in s.topk_classes[i] for i in mine]))
  with pytest.raises(ValueError, match="out of range"):
    confusion(s, int(s.labels.max()))


def _read_csv(path):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.reader(f))


def test_write_test_report(tmp_path):
  rng = np.random.default_rng(2)
  k = 5
  s = _summary(rng, num_videos=25, num_classes=k)
  names = ["run", 'jump, "high"', "swim", "ski", "row"]
  out = write_test_report(str(tmp_path), s, k, class_names=names)

  rows = _read_csv(out["paths"]["predictions"])
  assert rows[0][:5] == ["video_id", "name", "label", "label_name", "correct"]
  assert rows[0][5:] == [f"{w}_{j}" for j in range(1, 6) for w in ("class", "name", "prob")]
  assert len(rows) == len(s) + 1
  for i, row in enumerate(rows[1:]):
    label = int(row[2])
    assert int(row[0]) == s.video_ids[i] and row[1] == s.names[i] and label == s.labels[i]
    assert row[3] == (names[label] if label >= 0 else "")
    assert row[4] == (str(int(s.predictions[i] == label)) if label >= 0 else "")
    for j in range(5):
      c, name, prob = row[5 + 3 * j:8 + 3 * j]
      assert int(c) == s.topk_classes[i, j] and name == names[int(c)]
      assert prob == f"{s.topk_probs[i, j]:.6f}"
      assert float(prob) == pytest.approx(s.topk_probs[i, j], abs=1e-6)

  stats = per_class(s, k)
  per = _read_csv(out["paths"]["per_class"])
  assert per[0] == ["class", "name", "videos", "top1", "top5"]
  assert [r[1] for r in per[1:]] == names  # the comma and quotes survive
  assert [int(r[2]) for r in per[1:]] == list(stats["count"])
  metrics = json.load(open(out["paths"]["metrics"]))
  acc = accuracy(s)
  assert metrics["top1"] == pytest.approx(100 * acc["top1"])
  assert metrics["top5"] == pytest.approx(100 * acc["top5"])
  assert metrics["num_videos"] == len(s) and metrics == out["metrics"]
  present = stats["count"] > 0
  assert metrics["mean_class_top1"] == pytest.approx(100 * stats["top1"][present].mean())

  with Image.open(out["paths"]["confusion"]) as png:
    assert png.format == "PNG"
    assert all(300 <= side <= 1600 for side in png.size)
    pixels = np.asarray(png.convert("RGB"))
  conf = confusion(s, k)
  darkest = (conf / np.maximum(conf.sum(1, keepdims=True), 1)).max()
  want = np.round(255 + darkest * (np.array([8, 48, 107]) - 255))  # white -> dark blue
  assert (pixels.reshape(-1, 3) == want).all(axis=1).sum() >= 64 * 64  # at least one cell
  assert sorted(os.listdir(tmp_path)) == [
      "confusion.png", "metrics.json", "per_class.csv", "predictions.csv"]


def test_report_without_names_and_without_picture(tmp_path):
  rng = np.random.default_rng(3)
  s = _summary(rng, num_videos=10, num_classes=6)
  out = write_test_report(str(tmp_path / "r"), s, 6, max_confusion_classes=5)
  assert "confusion" not in out["paths"]
  assert not os.path.exists(tmp_path / "r" / "confusion.png")
  per = _read_csv(out["paths"]["per_class"])
  assert [r[1] for r in per[1:]] == [f"class_{i}" for i in range(6)]
  with pytest.raises(ValueError, match="class names"):
    write_test_report(str(tmp_path / "r"), s, 6, class_names=["a"])


def test_confusion_picture_size_bounds(tmp_path):
  rng = np.random.default_rng(4)
  for k in (2, 40, 100):
    s = _summary(rng, num_videos=20, num_classes=k)
    out = write_test_report(str(tmp_path / str(k)), s, k)
    with Image.open(out["paths"]["confusion"]) as png:
      assert all(300 <= side <= 1600 for side in png.size), (k, png.size)


def _fields(s: VideoSummary):
  return [s.video_ids, list(s.names), s.labels, s.topk_classes, s.topk_probs, s.num_views]


def _assert_same(a: VideoSummary, b: VideoSummary):
  for x, y in zip(_fields(a), _fields(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_gather_one_process_is_identity():
  s = _summary(np.random.default_rng(5))
  _assert_same(gather_results(s), s)


def test_pack_unpack_round_trip_over_fake_processes():
  """The padding and decoding of gather_results, with the collective replaced by a stack."""
  rng = np.random.default_rng(6)
  # The middle process saw no batch at all: zero top-k columns until padded.
  parts = [_summary(rng, num_videos=9), ViewMerger().results().summarize(),
           _summary(rng, num_videos=4)]
  parts[2] = VideoSummary(parts[2].video_ids + 20_000, np.array(["é,ü", "", "x", "ℝ"], object),
                          *_fields(parts[2])[2:])
  rows = max(len(p) for p in parts)
  name_len = max(len(n.encode()) for p in parts for n in p.names)
  packs = [_pack(p, rows, name_len, 5) for p in parts]
  gathered = {key: np.stack([p[key] for p in packs]) for key in packs[0]}
  merged = _unpack(gathered, [len(p) for p in parts])
  full = [p for p in parts if len(p)]
  order = np.argsort(np.concatenate([p.video_ids for p in full]))
  expected = [np.concatenate([np.asarray(f) for f in fs])[order]
              for fs in zip(*(_fields(p) for p in full))]
  for got, want in zip(_fields(merged), expected):
    np.testing.assert_array_equal(np.asarray(got), want)
  assert merged.video_ids.dtype == np.int64 and merged.topk_probs.dtype == np.float32


_TWO_PROCESS_SCRIPT = r"""
import json, sys
import numpy as np
from vmae2_jax.sharding.distributed import maybe_initialize_distributed
assert maybe_initialize_distributed()
import jax
from vmae2_jax.evaluation.multiview import ViewMerger, gather_results
rng = np.random.default_rng(0)
logits = rng.normal(0, 2, (10, 3, 9))  # 10 videos x 3 views, the same on both processes
p = jax.process_index()
merger = ViewMerger()
mine = [v for v in range(10) if v % 2 == p and v != 9]  # process 1: 4 videos, process 0: 5
for v in mine:
  probs = np.exp(logits[v]) / np.exp(logits[v]).sum(-1, keepdims=True)
  merger.add([v] * 3, [0, 1, 2], [v % 9] * 3, probs.astype(np.float32), [f"v{v}," + "é" * p] * 3)
s = gather_results(merger.results().summarize())
out = {k: np.asarray(getattr(s, k)).tolist() for k in
       ("video_ids", "names", "labels", "topk_classes", "topk_probs", "num_views")}
json.dump(out, open(sys.argv[1] + f"/gathered_{p}.json", "w"))
"""


def test_gather_across_two_real_processes(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [os.path.join(ROOT, "launch", "local_multiprocess.sh"), "-n", "2", "-d", "1",
         "-l", str(tmp_path / "logs"), "--", sys.executable, "-c", _TWO_PROCESS_SCRIPT,
         str(tmp_path)]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  logs = [open(tmp_path / "logs" / f"process_{i}.log").read()[-2000:] for i in range(2)]
  assert proc.returncode == 0, proc.stderr + "\n".join(logs)
  got = [json.load(open(tmp_path / f"gathered_{i}.json")) for i in range(2)]
  assert got[0] == got[1]  # every process holds the whole result
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 2, (10, 3, 9))
  merger = ViewMerger()
  for v in range(9):
    probs = np.exp(logits[v]) / np.exp(logits[v]).sum(-1, keepdims=True)
    merger.add([v] * 3, [0, 1, 2], [v % 9] * 3, probs.astype(np.float32),
               [f"v{v}," + "é" * (v % 2)] * 3)
  want = merger.results().summarize()
  assert got[0]["video_ids"] == list(range(9))
  assert got[0]["names"] == list(want.names)
  assert got[0]["labels"] == want.labels.tolist()
  assert got[0]["topk_classes"] == want.topk_classes.tolist()
  np.testing.assert_array_equal(np.asarray(got[0]["topk_probs"], np.float32), want.topk_probs)
  assert got[0]["num_views"] == [3] * 9


def test_report_write_failure_leaves_no_partial_file(tmp_path, monkeypatch):
  from vmae2_jax.evaluation import report

  def broken_dump(obj, f, **kwargs):
    f.write('{"top1": ')  # half a file, then the writer dies
    raise OSError("disk full")

  monkeypatch.setattr(report.json, "dump", broken_dump)
  s = _summary(np.random.default_rng(8), num_videos=6, num_classes=4)
  with pytest.raises(OSError, match="disk full"):
    write_test_report(str(tmp_path), s, 4)
  assert sorted(os.listdir(tmp_path)) == ["per_class.csv", "predictions.csv"]
