"""Multi-view merging, metrics, gathering and the test report (host side)."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vmae2_jax.evaluation.multiview import (
    ViewMerger, VideoSummary, _pack, _unpack, accuracy, confusion, gather_results, per_class)
from vmae2_jax.evaluation.report import draw_confusion, write_test_report

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
  rows_in = _random_stream(rng, num_videos=25, num_classes=k)
  merger = ViewMerger()
  _feed(merger, rows_in, rng, k)
  s = merger.results().summarize()
  names = ["run", 'jump, "high"', "swim", "ski", "row"]
  out = write_test_report(str(tmp_path), s, k, class_names=names)
  # Expected contents from the reference's merge restated on the view logits.
  ref = _reference([(f"video {vid}", view, label, logits)
                    for vid, view, label, logits in rows_in])

  rows = _read_csv(out["paths"]["predictions"])
  assert rows[0][:5] == ["video_id", "name", "label", "label_name", "correct"]
  assert rows[0][5:] == [f"{w}_{j}" for j in range(1, 6) for w in ("class", "name", "prob")]
  assert len(rows) == len(ref) + 1
  assert [int(r[0]) for r in rows[1:]] == sorted(int(n.split()[1]) for n in ref)
  for row in rows[1:]:
    feat, pred, top, label = ref[row[1]]
    assert row[1] == f"video {row[0]}" and int(row[2]) == label
    assert row[3] == (names[label] if label >= 0 else "")
    assert row[4] == (str(int(pred == label)) if label >= 0 else "")
    assert [int(c) for c in row[5::3]] == list(top) and row[6::3] == [names[c] for c in top]
    np.testing.assert_allclose([float(p) for p in row[7::3]], feat[top], atol=2e-6)

  labelled = [(pred, top, label) for _, pred, top, label in ref.values() if label >= 0]
  per = _read_csv(out["paths"]["per_class"])
  assert per[0] == ["class", "name", "videos", "top1", "top5"]
  assert [r[1] for r in per[1:]] == names  # the comma and quotes survive
  assert [int(r[2]) for r in per[1:]] == [sum(l == c for *_, l in labelled) for c in range(k)]
  for c in range(k):
    hits = [pred == label for pred, _, label in labelled if label == c]
    assert per[1 + c][3] == (f"{100 * np.mean(hits):.2f}" if hits else "")
  metrics = json.load(open(out["paths"]["metrics"]))
  assert metrics["top1"] == pytest.approx(100 * np.mean([p == l for p, _, l in labelled]))
  assert metrics["top5"] == pytest.approx(100 * np.mean([l in t for _, t, l in labelled]))
  assert metrics["num_videos"] == len(ref) and metrics == out["metrics"]
  class_top1 = [np.mean([p == l for p, _, l in labelled if l == c]) for c in range(k)
                if any(l == c for *_, l in labelled)]
  assert metrics["mean_class_top1"] == pytest.approx(100 * np.mean(class_top1))

  with Image.open(out["paths"]["confusion"]) as png:
    assert png.format == "PNG" and all(400 <= side <= 1400 for side in png.size)
  # The picture's cells: each true class's share (%) per predicted class, by hand.
  fig = draw_confusion(confusion(s, k), names, "run: test_step9")
  fig.canvas.draw()
  ax = fig.axes[0]
  want = np.zeros((k, k))
  for pred, _, label in labelled:
    want[label, pred] += 1
  want = 100 * want / np.maximum(want.sum(1, keepdims=True), 1)
  np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), want)
  assert ax.images[0].get_clim() == (0, 100) and ax.get_title() == "run: test_step9"
  assert [t.get_text() for t in ax.get_yticklabels()] == ["run", 'jump, "high"', "swim", "ski",
                                                          "row"]
  bar = fig.axes[1]
  lo, hi = bar.get_ylim()
  assert [t.get_text() for v, t in zip(bar.get_yticks(), bar.get_yticklabels())
          if lo <= v <= hi] == ["0%", "20%", "40%", "60%", "80%", "100%"]
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


def test_confusion_picture_size_bounds_and_index_ticks(tmp_path):
  rng = np.random.default_rng(4)
  for k in (2, 40, 100):
    s = _summary(rng, num_videos=20, num_classes=k)
    out = write_test_report(str(tmp_path / str(k)), s, k, title="r: test_step1")
    with Image.open(out["paths"]["confusion"]) as png:
      assert all(400 <= side <= 1400 for side in png.size), (k, png.size)
  fig = draw_confusion(np.eye(100, dtype=np.int64), [f"c{i}" for i in range(100)], "")
  fig.canvas.draw()
  ticks = [t for t in fig.axes[0].get_xticks() if 0 <= t <= 99]
  assert ticks == list(range(0, 100, 10))  # too many classes to name: round indices


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


# -- per-view scores and the merge tool ------------------------------------------


def _views_run(tmp_path, name, rows, k, views=6, class_names=None, parts=1):
  """Writes `rows` (video id, view, label, logits) as a test report's views file(s)."""
  from vmae2_jax.evaluation import view_scores
  stores = [view_scores.ViewStore(views) for _ in range(parts)]
  for vid, view, label, logits in rows:
    logp = logits - np.log(np.exp(logits).sum())
    stores[vid % parts].add([vid], [view], [label], logp[None].astype(np.float32),
                            [f"video {vid}"])
  for i, store in enumerate(stores):
    view_scores.write_views(tmp_path / name, store, class_names=class_names, num_segment=3,
                            num_crop=2, process_index=i, process_count=parts)
  return str(tmp_path / name)


def test_views_file_holds_every_view_and_restates_the_merge(tmp_path):
  from vmae2_jax.evaluation import view_scores
  rng = np.random.default_rng(5)
  k = 9
  rows = _random_stream(rng, num_videos=20, num_classes=k)
  for parts in (1, 3):  # one process, or one part per process
    d = _views_run(tmp_path, f"p{parts}", rows, k, parts=parts)
    run = view_scores.read_views(d)
    ref = _reference([(f"video {vid}", view, label, logits) for vid, view, label, logits in rows])
    assert sorted(run.names.tolist()) == sorted(ref) and run.scores.shape == (20, 6, k)
    for i, name in enumerate(run.names):
      first = {}
      for vid, view, _, logits in rows:  # the first row of each view is kept
        if f"video {vid}" == name:
          first.setdefault(view, logits)
      seen = ~np.isnan(run.scores[i, :, 0])
      assert sorted(np.flatnonzero(seen)) == sorted(first)
      for view, logits in first.items():  # log-softmax: softmax gives the view's probs
        np.testing.assert_allclose(np.exp(run.scores[i, view]), _softmax(logits), atol=1e-6)
      np.testing.assert_allclose(run.mean_probs()[i], ref[name][0], atol=1e-6)
      assert run.labels[i] == ref[name][3]
  os.remove(tmp_path / "p3" / "views-00001-of-00003.npz")
  with pytest.raises(view_scores.ViewsError, match="2 views-.*parts, not one complete set"):
    view_scores.read_views(tmp_path / "p3")
  _views_run(tmp_path, "p3", rows, k, parts=1)  # a later one-process test of the same step
  assert sorted(os.listdir(tmp_path / "p3")) == ["views.npz"]


def test_merge_ensembles_runs_and_refuses_other_videos(tmp_path, capsys):
  from vmae2_jax.evaluation import merge
  rng = np.random.default_rng(6)
  k, n = 6, 12
  labels = rng.integers(0, k, n)
  logits = {run: rng.normal(0, 2, (n, 6, k)) for run in "ab"}
  rows = {run: [(v, view, int(labels[v]), logits[run][v, view]) for v in range(n)
                for view in range(6)] for run in "ab"}
  names = [f"c{i}" for i in range(k)]
  a = _views_run(tmp_path, "a", rows["a"], k, class_names=names)
  b = _views_run(tmp_path, "b", rows["b"][::-1], k, class_names=names, parts=2)
  out = tmp_path / "merged"
  assert merge.main([a, b, f"--out={out}"]) == 0
  printed = capsys.readouterr().out.splitlines()
  # By hand: each run's softmax averaged over its 6 views, then the two runs averaged.
  per_run = {r: _softmax(logits[r]).mean(axis=1) for r in "ab"}
  merged = (per_run["a"] + per_run["b"]) / 2
  for line, r in zip(printed, "ab"):
    assert line.startswith(f"{tmp_path / r}: top-1 {100 * np.mean(per_run[r].argmax(1) == labels):.2f}%")
  assert printed[-1].startswith(f"merged 2 runs on {n} videos: top-1 "
                                f"{100 * np.mean(merged.argmax(1) == labels):.2f}%, top-5 ")
  csv_rows = _read_csv(out / "predictions.csv")[1:]
  assert [r[1] for r in csv_rows] == [f"video {v}" for v in range(n)]
  assert [int(r[5]) for r in csv_rows] == list(merged.argmax(1))
  np.testing.assert_allclose([float(r[7]) for r in csv_rows], merged.max(1), atol=2e-6)
  assert json.load(open(out / "merge.json"))["runs"][1]["views"] == 6
  # Other videos, other classes: one line naming the run, exit status 2.
  c = _views_run(tmp_path, "c", rows["a"][:-6], k, class_names=names)
  d = _views_run(tmp_path, "d", rows["a"], k, class_names=names[::-1])
  for other, want in ((c, "lacks 1 of .* videos \\(e.g. 'video 11'\\)"),
                      (d, "class names differ .* first 0: 'c5' vs 'c0'")):
    assert merge.main([a, other, f"--out={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(want, err), err
  assert not os.path.exists(tmp_path / "x")
