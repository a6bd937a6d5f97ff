"""Bad input where it enters the data pipelines: shard files, records, labels, short videos.

Each fault either raises one line naming the file / record / frame / label, or
(corrupt records with config.data.skip_corrupt) is counted and skipped; short
videos are padded as the reference pads them, never an error.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from configs.common import base_config
from vmae2_jax.data import pipelines, sampling, shards, tfds_source

SHARD = "s-00000-of-00001.array_record"
H, W = 24, 32


# ------------------------------------------------------------------ helpers


def _gray(value: int, h: int = H, w: int = W) -> bytes:
  """A constant frame: after crops and resizes its pixels still say which frame it was."""
  return shards.encode_jpeg(np.full((h, w, 3), value, np.uint8), quality=95)


def _value(i: int) -> int:
  return 30 + 20 * i  # frame i's grey level; 20 apart survives JPEG and resizing


def _record(n: int, label: int = 0, frames: list[bytes] | None = None) -> bytes:
  frames = [_gray(_value(i)) for i in range(n)] if frames is None else frames
  return shards.encode_record(frames, label=label, name=f"v{n}", height=H, width=W)


def _write_set(out, records: list[bytes], num_classes: int = 3) -> str:
  """One shard holding ``records`` and a manifest recording its size."""
  from array_record.python import array_record_module as arm
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, SHARD)
  w = arm.ArrayRecordWriter(path, "group_size:1,uncompressed")
  for r in records:
    w.write(r)
  w.close()
  manifest = {"format": shards.FORMAT, "classes": {"num_classes": num_classes},
              "shards": [{"name": SHARD, "num_records": len(records),
                          "bytes": os.path.getsize(path)}]}
  with open(os.path.join(out, shards.MANIFEST), "w") as f:
    json.dump(manifest, f)
  return str(out)


def _config(train_path, **data):
  c = base_config()
  c.batch_size = 1
  c.eval.batch_size = 1
  c.data.update(dict(frames=4, image_size=16, sampling_rate=1, num_sample=1, source="shards",
                     train_path=train_path, num_workers=0, read_threads=1, shuffle=False,
                     randaug="", reprob=0.0))
  c.data.update(data)
  return c


def _transforms(mode: str = "dense", skip_corrupt: bool = False, num_classes: int = 0):
  """Every clip transform, on 4-frame clips at stride 2."""
  common = dict(frames=4, size=16, stride=2, skip_corrupt=skip_corrupt)
  return {
      "pretrain": pipelines.PretrainTransform(num_sample=2, scales=(1.0, 0.875), **common),
      "train": pipelines.FinetuneTransform(
          num_sample=2, mode=mode, flip=False, randaug="", reprob=0.0, scale=(0.5, 1.0),
          ratio=(0.75, 1.33), randaug_after_crop=True, num_classes=num_classes, **common),
      "eval": pipelines.EvalTransform(mode=mode, num_segment=2, num_crop=1,
                                      num_classes=num_classes, **common),
      "validation": pipelines.ValidationTransform(mode=mode, num_classes=num_classes,
                                                  **common),
  }


def _element(kind: str, data: bytes, where: str = f"shard {SHARD} record 0"):
  return (0, (data, where)) if kind in ("eval", "validation") else (data, where)


def _frame_ids(video: np.ndarray) -> np.ndarray:
  """[..., T, h, w, 3] constant-frame clips -> the frame index of every time step."""
  means = video.reshape(video.shape[:-3] + (-1,)).mean(-1)
  return np.rint((means - 30) / 20).astype(int)


# ---------------------------------------------------------------- shard files


def test_missing_shard_file_fails_at_construction(tmp_path):
  out = _write_set(tmp_path / "s", [_record(4)])
  os.remove(os.path.join(out, SHARD))
  with pytest.raises(shards.ShardFileError) as e:
    shards.ShardSource(out)
  text = str(e.value)
  assert text.startswith(f"{os.path.join(out, SHARD)}: shard listed in ")
  assert "manifest.json cannot be read" in text and "\n" not in text


def truncated_shard_set(out) -> tuple[str, str, int]:
  """A two-record set whose shard file lost its last 100 bytes: (set, shard path, size the
  manifest records)."""
  out = _write_set(out, [_record(4), _record(5)])
  path = os.path.join(out, SHARD)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size - 100)
  return out, path, size


def test_truncated_shard_file_fails_at_construction(tmp_path):
  out, path, size = truncated_shard_set(tmp_path / "s")
  with pytest.raises(shards.ShardFileError,
                     match=rf"^{path}: {size - 100} bytes, .*manifest.json records {size} "
                           r"\(truncated or overwritten"):
    shards.ShardSource(out)
  # The pipelines build their source the same way: the run stops before any step.
  with pytest.raises(shards.ShardFileError, match=path):
    next(pipelines.make_pretrain_iterator(_config(out), process_index=0, process_count=1,
                                          seed=0))


def test_not_an_array_record_file_is_named_at_first_read(tmp_path):
  out = _write_set(tmp_path / "s", [_record(4), _record(5)])
  path = os.path.join(out, SHARD)
  size = os.path.getsize(path)
  with open(path, "wb") as f:  # same size, so the stat check passes
    f.write(b"x" * size)
  src = shards.ShardSource(out)
  item = src[1]
  assert isinstance(item, shards.BrokenRecord)
  assert item.message == (f"shard {SHARD} record 1: cannot read (ShardFileError: {path}: holds "
                          "0 records, the manifest lists 2 (not an ArrayRecord file, or damaged))")
  c = _config(out)
  with pytest.raises(shards.CorruptRecordError, match=f"{path}: holds 0 records"):
    next(pipelines.make_pretrain_iterator(c, process_index=0, process_count=1, seed=0))
  # skip_corrupt: every record of the file is counted and logged, none trains.
  pipelines.SKIPPED.clear()
  t = _transforms(skip_corrupt=True)["pretrain"]
  assert t(src[0], np.random.default_rng(0)) is None
  assert pipelines.SKIPPED[f"shard {SHARD} record 0"] == 1


def test_damaged_chunk_in_a_shard_is_a_corrupt_record_error(tmp_path):
  out = _write_set(tmp_path / "s", [_record(4, frames=[
      shards.encode_jpeg(np.random.default_rng(i).integers(0, 255, (H, W, 3), np.uint8))
      for i in range(4)]) for _ in range(5)])
  path = os.path.join(out, SHARD)
  data = bytearray(open(path, "rb").read())
  starts = [i for i in range(len(data)) if data.startswith(shards.MAGIC, i)]
  assert len(starts) == 5  # uncompressed chunks: each record's bytes appear as written
  mid = starts[2] + 2000  # inside record 2's JPEG bytes
  data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
  open(path, "wb").write(bytes(data))  # same size: only the chunk hashes can tell
  src = shards.ShardSource(out)
  items = [src[i] for i in range(5)]
  assert [isinstance(x, shards.BrokenRecord) for x in items] == [False, False, True, False, False]
  msg = items[2].message
  assert msg.startswith(f"shard {SHARD} record 2: cannot read (RuntimeError: Corrupted")
  assert "\n" not in msg
  t = _transforms()["pretrain"]
  with pytest.raises(shards.CorruptRecordError, match=f"shard {SHARD} record 2: "):
    t(items[2], np.random.default_rng(0))
  assert t(items[3], np.random.default_rng(0))["video"].shape == (2, 4, 16, 16, 3)


# -------------------------------------------------------------------- records


def _bad_record(kind: str) -> bytes:
  """A 4-frame record with fault ``kind``; frame 0 (which every sampler reads) is the bad one."""
  frames = [_gray(_value(i)) for i in range(4)]
  if kind == "crc":
    rec = bytearray(_record(4, frames=frames))
    rec[shards.parse_record(bytes(rec)).payload_start + 10] ^= 0xFF  # inside frame 0
    return bytes(rec)
  if kind == "undecodable":
    return _record(4, frames=[b"\xff\xd8 this is not a JPEG"] + frames[1:])
  if kind == "sizes":  # another aspect ratio: no reduced-size decode can make them agree
    return _record(4, frames=[_gray(_value(0), H, H)] + frames[1:])
  if kind == "truncated":
    return _record(4, frames=frames)[:-30]
  if kind == "header":
    return b"VMF1" + b"\x05\x00\x00\x00" + b"{nope"
  if kind == "no_frames":
    return _record(0, frames=[])
  raise ValueError(kind)


@pytest.mark.parametrize("kind, message", [
    ("crc", "frame 0 fails its CRC check"),
    ("undecodable", "frame 0 does not decode"),
    ("sizes", "), frame 0 is (24, 24) (height, width)"),
    ("truncated", "unreadable record (payload is"),
    ("header", "unreadable record"),
    ("no_frames", "unreadable record (no frames"),
])
@pytest.mark.parametrize("stage", ["pretrain", "train", "eval", "validation"])
def test_corrupt_record_names_shard_record_and_frame(kind, message, stage):
  t = _transforms()[stage]
  with pytest.raises(shards.CorruptRecordError) as e:
    t(_element(stage, _bad_record(kind)), np.random.default_rng(0))
  text = str(e.value)
  assert text.startswith(f"shard {SHARD} record 0: ") and message in text, text
  assert "\n" not in text
  # skip_corrupt: counted under its location, the slot dropped (training) or padded (eval).
  pipelines.SKIPPED.clear()
  out = _transforms(skip_corrupt=True)[stage](_element(stage, _bad_record(kind)),
                                              np.random.default_rng(0))
  if stage in ("eval", "validation"):
    assert (out["video_id"] == -1).all() and not out["video"].any()
  else:
    assert out is None
  assert dict(pipelines.SKIPPED) == {f"shard {SHARD} record 0": 1}


def test_a_record_object_without_frames_is_corrupt():
  class Empty:  # any source's record: the transform checks, not only the shard parser
    num_frames, label, height, width, where = 0, 0, H, W, "somewhere record 7"

  for stage, t in _transforms().items():
    with pytest.raises(shards.CorruptRecordError, match="^somewhere record 7: no frames$"):
      t((0, Empty()) if stage in ("eval", "validation") else Empty(), np.random.default_rng(0))
  assert isinstance(tfds_source.TfdsSource(None, source=[{"video": [], "label": 0}])[0],
                    shards.BrokenRecord)


# --------------------------------------------------------------------- labels


def test_label_outside_the_class_count_always_raises(tmp_path):
  out = _write_set(tmp_path / "s", [_record(4, 0), _record(4, 1), _record(4, 5)],
                   num_classes=3)
  c = _config(out, skip_corrupt=True)  # a label error is not corruption: never skipped
  c.model.num_classes = 3
  it = pipelines.make_finetune_iterator(c, process_index=0, process_count=1, seed=0)
  assert [int(next(it)["label"][0]) for _ in range(2)] == [0, 1]
  with pytest.raises(pipelines.LabelError) as e:
    next(it)
  assert str(e.value) == (f"shard {SHARD} record 2: label 5 is outside the classes [0, 3) "
                          "(config.model.num_classes=3)")
  # num_classes 0: the training set's manifest sizes the head, and the labels.
  c.model.num_classes = 0
  t = pipelines.FinetuneTransform.from_config(c, 1)
  assert t.num_classes == 3
  with pytest.raises(pipelines.LabelError, match=r"record 0: label 5 is outside the classes "
                     r"\[0, 3\) \(config.model.num_classes=0, so the training set's 3 classes\)"):
    t((_record(4, 5), f"shard {SHARD} record 0"), np.random.default_rng(0))


@pytest.mark.parametrize("stage, label, ok", [
    ("train", -1, False), ("train", 3, False), ("train", 2, True),
    ("eval", -1, True), ("eval", 3, False), ("eval", -2, False),
    ("validation", -1, True), ("validation", 7, False),
])
def test_label_check_per_stage(stage, label, ok):
  """Training needs a class for every clip; evaluation reports unlabelled (-1) videos."""
  t = _transforms(num_classes=3)[stage]
  el = _element(stage, _record(4, label))
  if ok:
    out = t(el, np.random.default_rng(0))
    assert (out["label"] == label).all()
  else:
    with pytest.raises(pipelines.LabelError, match=f"record 0: label {label} is outside"):
      t(el, np.random.default_rng(0))


def test_unlabelled_record_in_supervised_training_without_a_class_count():
  t = _transforms(num_classes=0)["train"]
  with pytest.raises(pipelines.LabelError, match=r"label -1 is outside the classes \[0, \.\.\.\)"):
    t(_element("train", _record(4, -1)), np.random.default_rng(0))


# ---------------------------------------------------------------- short videos


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("stage, mode", [
    ("pretrain", "dense"), ("train", "dense"), ("train", "segment"), ("eval", "dense"),
    ("eval", "segment"), ("validation", "dense"), ("validation", "segment")])
def test_short_videos_are_padded_in_every_sampler(n, stage, mode):
  """A video with fewer frames than the clip spans (4 x stride 2) gives a full clip whose
  frames are the sampler's indices (last frame repeated), not an error."""
  t = _transforms(mode)[stage]
  out = t(_element(stage, _record(n)), np.random.default_rng(3))
  video = out["video"]
  assert video.shape[1:] == (4, 16, 16, 3)
  ids = _frame_ids(video)
  assert ((0 <= ids) & (ids < n)).all() and (np.diff(ids, axis=-1) >= 0).all()
  if stage != "eval" and mode == "dense":  # padded with the last frame
    assert (ids[:, -1] == n - 1).all(), ids
  # The clip is exactly what the sampler asks for on this frame count.
  if stage == "validation":
    want = [sampling.val_indices(mode, n, 4, 2)]
  elif stage == "eval":
    want = [sampling.eval_indices(mode, n, v, 2, 4, 2) for v in range(2)]
  elif stage == "pretrain":
    want = [sampling.pretrain_indices(n, np.random.default_rng(3), 4, 2)] * 2
  else:
    want = None  # random per view; the bounds above hold
  if want is not None:
    assert np.array_equal(ids, np.stack(want)), (ids, want)


@pytest.mark.parametrize("n", range(1, 20))
def test_every_sampler_pads_short_videos_in_range(n):
  rng = np.random.default_rng(n)
  frames, stride = 8, 2
  got = {
      "pretrain": sampling.pretrain_indices(n, rng, frames, stride),
      "dense_train": sampling.dense_train_indices(n, rng, frames, stride),
      "dense_val": sampling.dense_val_indices(n, frames, stride),
      "segment_train": sampling.segment_train_indices(n, rng, frames),
      "segment_val": sampling.segment_val_indices(n, frames),
  }
  for v in range(3):
    got[f"dense_eval{v}"] = sampling.dense_eval_indices(n, v, 3, frames, stride)
    got[f"segment_eval{v}"] = sampling.segment_eval_indices(n, v, 3, frames)
  for name, idx in got.items():
    assert len(idx) == frames and idx.dtype == np.int64, name
    assert ((0 <= idx) & (idx < n)).all() and (np.diff(idx) >= 0).all(), (name, idx)
  if n <= frames * stride:  # dense: the window does not fit, the last frame repeats
    for name in ("dense_train", "dense_val"):
      assert got[name][-1] == n - 1, (name, got[name])
  if (frames - 1) * stride >= n - 1:  # pretrain: steps past the end clamp to the last frame
    assert got["pretrain"][-1] == n - 1 and got["pretrain"][0] == 0, got["pretrain"]
