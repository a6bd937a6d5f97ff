"""data_prep.build_shards reads the formats of the field: the reference's list files
(VideoMAE V2 pre-training / video / rawframe lists), mmaction2's video and
rawframe lists, PySlowFast's video CSVs and frame lists, Kinetics' official CSV,
UCF101's split files with classInd.txt, Something-Something V2's JSON, and a
folder per class; --dry_run reports what a build would do."""

from __future__ import annotations

import json
import os

import pytest

from data_prep import build_demo, build_shards, lists
from vmae2_jax.data import shards


def _touch(path, data=b"x"):
  os.makedirs(os.path.dirname(str(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


def _frames(path, label=0, index=0, frames=6):
  clip = build_demo.moving_shapes(label % 4, index, frames=frames, size=32)
  build_demo.write_frame_folder(str(path), clip)


def _dry(capsys, *args) -> tuple[int, str]:
  rc = build_shards.main([*map(str, args), "--dry_run"])
  return rc, capsys.readouterr().out


def _entries(listing):
  return [(e.path, e.start, e.total, e.label) for e in listing.entries]


# ------------------------------------------------------------ reference / mmaction2


def test_reference_mmaction2_and_slowfast_lists():
  # VideoMAE V2 pre-training list: videos and rawframes (docs/DATASET.md of the reference).
  pre = lists.read_list(["k400/---QUuC4vJs.mp4 0 -1",
                                "AVA/frames/clip/zlVkeKC6Ha8 9601 300",
                                "SomethingV2/frames/182040 1 58"], "pretrain")
  assert _entries(pre) == [("k400/---QUuC4vJs.mp4", 0, -1, -1),
                           ("AVA/frames/clip/zlVkeKC6Ha8", 9601, 300, -1),
                           ("SomethingV2/frames/182040", 1, 58, -1)]
  # Fine-tuning lists: video (mmaction2 VideoDataset, PySlowFast Kinetics CSV: the same
  # "path label" with a space) and rawframes (mmaction2 RawframeDataset).
  vid = lists.read_list(["k400/jf7RDuUTrsQ.mp4 325", "k400/JTlatknwOrY.mp4 233"])
  assert _entries(vid) == [("k400/jf7RDuUTrsQ.mp4", 0, -1, 325),
                           ("k400/JTlatknwOrY.mp4", 0, -1, 233)]
  assert vid.format.startswith("space/tab-separated list; video (path label): 2 lines")
  raw = lists.read_list(["SomethingV2/frames/74225 62 140",
                                "SomethingV2/frames/116154 51 127"])
  assert _entries(raw) == [("SomethingV2/frames/74225", 0, 62, 140),
                           ("SomethingV2/frames/116154", 0, 51, 127)]
  assert [e.kind for e in raw.entries] == ["frames", "frames"]
  # mmaction2 rawframes with an offset column: frame_dir offset total_frames label.
  off = lists.read_list(["some/dir 10 40 3"])
  assert _entries(off) == [("some/dir", 10, 40, 3)]


def test_labels_starting_at_one_are_flagged():
  listing = lists.read_list(["A/a.avi 1", "B/b.avi 2"])
  assert any("no line has label 0" in n and "--format=ucf101" in n for n in listing.notes)


# ------------------------------------------------------------------ Kinetics CSV


KINETICS_CSV = """label,youtube_id,time_start,time_end,split
abseiling,--07WQ2iBlw,1,11,train
air drumming,-0Mcc9ElNwk,43,53,train
abseiling,0347ZoDXyP0,2,12,train
zumba,zzz_missing,5,15,train
"""


def test_kinetics_csv_finds_clips_and_builds(tmp_path, capsys):
  root = tmp_path / "k400" / "train"
  # The official downloader's layout (a folder per class, "_" for spaces), a flat
  # copy named by YouTube id, and another container.
  _frames(root / "abseiling" / "--07WQ2iBlw_000001_000011", 0, 0)  # frame folder named so
  _touch(root / "air_drumming" / "-0Mcc9ElNwk_000043_000053.mkv")
  _touch(root / "0347ZoDXyP0.mp4")
  (tmp_path / "train.csv").write_text(KINETICS_CSV)
  listing = lists.read_list(KINETICS_CSV.splitlines())
  assert listing.names == ["abseiling", "air drumming", "zumba"]  # sorted, as Kinetics indexes
  assert [e.label for e in listing.entries] == [0, 1, 0, 2]
  assert listing.format.startswith("Kinetics csv (label,youtube_id,time_start,time_end,split)")

  rc, out = _dry(capsys, f"--list={tmp_path / 'train.csv'}", f"--root={root}")
  assert rc == 1  # one clip is missing
  assert "format: Kinetics csv" in out and "4 clips (split: train 4)" in out
  assert "note: 3 of 4 videos found under" in out
  assert ("abseiling/--07WQ2iBlw_000001_000011.mp4, --07WQ2iBlw_000001_000011.mp4, "
          "abseiling/--07WQ2iBlw.mp4, --07WQ2iBlw.mp4 (any video extension)") in out
  assert "videos: 4 in 3 classes\n  class 0 abseiling: 2\n  class 1 air drumming: 1\n" in out
  assert "missing: 1 of 4" in out and "line 5: zumba/zzz_missing_000005_000015.mp4" in out

  # The test CSV has no label column: unlabelled clips, flat.
  test = lists.read_list(["youtube_id,time_start,time_end,split", "abc,0,10,test"])
  assert _entries(test) == [("abc_000000_000010.mp4", 0, -1, -1)] and test.names is None

  # A build over the clips that are there: the frame folder becomes a record.
  (tmp_path / "one.csv").write_text(KINETICS_CSV.splitlines()[0] + "\n"
                                    + KINETICS_CSV.splitlines()[1] + "\n")
  out_dir = tmp_path / "shards"
  assert build_shards.main([f"--list={tmp_path / 'one.csv'}", f"--root={root}",
                            f"--out={out_dir}", "--workers=1", "--short_side=0"]) == 0
  src = shards.ShardSource(str(out_dir))
  rec = shards.parse_record(*src[0])
  assert (rec.header["name"], rec.label, rec.num_frames) == \
      ("abseiling/--07WQ2iBlw_000001_000011", 0, 6)
  assert src.class_names == ("abseiling",)


def test_kinetics_csv_errors_and_labels_file(tmp_path):
  with pytest.raises(lists.ListError, match=r"train.csv line 2: time_start / time_end"):
    lists.read_list(["label,youtube_id,time_start,time_end,split", "a,x,one,11,train"],
                           source="train.csv")
  with pytest.raises(lists.ListError, match=r"line 2: 4 fields, the header on line 1"):
    lists.read_list(["label,youtube_id,time_start,time_end,split", "a,x,1,11"])
  # --labels fixes the indices (e.g. the reference's label map for Kinetics-710).
  labels = tmp_path / "k.txt"
  labels.write_text("zumba\nabseiling\nair drumming\n")
  listing = lists.read_list(KINETICS_CSV.splitlines(),
                                   label_names=lists.read_label_names(str(labels)))
  assert [e.label for e in listing.entries] == [1, 2, 1, 0]


# ------------------------------------------------------------ PySlowFast frame lists


def test_slowfast_frame_list(tmp_path, capsys):
  root = tmp_path / "frames"
  for vid, n in (("78687", 5), ("42326", 4)):
    _frames(root / vid, 0, int(vid) % 7, frames=n)
  rows = ["original_vido_id video_id frame_id path labels"]
  rows += [f'78687 0 {i} 78687/{i + 1:06d}.jpg ""' for i in range(5)]
  rows += [f"42326 1 {i} 42326/{i + 1:06d}.jpg 3" for i in range(4)]
  (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
  listing = lists.read_list(rows)
  assert _entries(listing) == [("78687", 0, 5, -1), ("42326", 0, 4, 3)]
  assert listing.format.startswith("PySlowFast frame list")
  rc, out = _dry(capsys, f"--list={tmp_path / 'train.csv'}", f"--root={root}")
  assert rc == 0 and "2 videos of 9 frames" in out and "missing: 0 of 2" in out
  # Charades: several classes in one video -> refused, naming the line.
  multi = rows[:1] + ['1 0 0 a/1.jpg "3,5"', '1 0 1 a/2.jpg "3,5"']
  with pytest.raises(lists.ListError, match=r"line 2: video 1 has labels .*multi-label"):
    lists.read_list(multi)


# ------------------------------------------------------------- UCF101 split files


def test_ucf101_split_files_with_class_ind(tmp_path, capsys):
  (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n3 Archery\n")
  names = lists.read_label_names(str(tmp_path / "classInd.txt"))
  assert names == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
  train = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
           "Archery/v_Archery_g08_c01.avi 3"]
  listing = lists.read_list(train, "ucf101", label_names=names)
  assert [e.label for e in listing.entries] == [0, 2]  # 1-based in the file, 0-based here
  test = lists.read_list(["ApplyLipstick/v_ApplyLipstick_g01_c01.avi"], "ucf101",
                                label_names=names)
  assert [e.label for e in test.entries] == [1]
  with pytest.raises(lists.ListError, match=r"index 2 is 'ApplyLipstick'.*'Archery'"):
    lists.read_list(["Archery/v_Archery_g08_c01.avi 2"], "ucf101", label_names=names)
  root = tmp_path / "UCF101"
  _touch(root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi")
  (tmp_path / "trainlist01.txt").write_text("\n".join(train) + "\n")
  rc, out = _dry(capsys, f"--list={tmp_path / 'trainlist01.txt'}", "--format=ucf101",
                 f"--labels={tmp_path / 'classInd.txt'}", f"--root={root}")
  assert rc == 1 and "format: UCF101 split list; 2 videos, class = folder" in out
  assert "videos: 2 in 3 classes\n  class 0 ApplyEyeMakeup: 1\n  class 1 ApplyLipstick: 0\n" \
      in out and "line 2: Archery/v_Archery_g08_c01.avi" in out


# ------------------------------------------------------- Something-Something V2 JSON


def test_something_something_json(tmp_path, capsys):
  items = [{"id": "78687", "label": "holding potato next to vicks vaporub bottle",
            "template": "Holding [something] next to [something]",
            "placeholders": ["potato", "vicks vaporub bottle"]},
           {"id": "42326", "label": "spreading margarine onto bread",
            "template": "Spreading [something] onto [something]", "placeholders": []},
           {"id": "100", "template": "Holding [something] next to [something]"}]
  (tmp_path / "something-something-v2-train.json").write_text(json.dumps(items))
  (tmp_path / "labels.json").write_text(json.dumps(
      {"Spreading something onto something": "1", "Holding something next to something": "0",
       "Approaching something with your camera": "2"}))
  root = tmp_path / "20bn"
  _touch(root / "78687.webm")
  _frames(root / "42326", 0, 1)  # rawframes: a folder named by the id
  rc, out = _dry(capsys, f"--list={tmp_path / 'something-something-v2-train.json'}",
                 f"--labels={tmp_path / 'labels.json'}", f"--root={root}")
  assert rc == 1 and "format: Something-Something JSON; 3 videos" in out
  assert "note: 2 of 3 videos found" in out and "line 3: 100.webm" in out
  assert ("videos: 3 in 3 classes\n  class 0 Holding something next to something: 2\n"
          "  class 1 Spreading something onto something: 1\n") in out
  listing = lists.resolve_candidates(lists.read_ssv2_json(items), str(root))
  assert [e.path for e in listing.entries] == ["78687.webm", "42326", "100.webm"]
  assert any("--labels=something-something-v2-labels.json" in n for n in listing.notes)
  with pytest.raises(lists.ListError, match="bad.json: indices are not 0..1"):
    (tmp_path / "bad.json").write_text('{"a": "0", "b": "2"}')
    lists.read_label_names(str(tmp_path / "bad.json"))


# ----------------------------------------------------------- folder per class


def test_folder_per_class_dry_run_reports_the_plan(tmp_path, capsys):
  data = tmp_path / "mine"
  _touch(data / "jump" / "a.mp4")
  _frames(data / "jump" / "b", 0, 0)
  _touch(data / "walk" / "c.webm")
  rc, out = _dry(capsys, f"--folder={data}", "--videos_per_shard=2")
  assert rc == 0 and out.startswith("format: folder per class: 2 video files, 1 frame folders")
  assert "videos: 3 in 2 classes\n  class 0 jump: 2\n  class 1 walk: 1\n" in out
  assert "shards: would write 2 (2 videos per shard)" in out


def test_forced_formats_need_their_headers():
  with pytest.raises(lists.ListError, match=r"l.csv line 1: a Kinetics CSV starts with"):
    lists.read_list(["path,label", "a.mp4,1"], "kinetics", source="l.csv")
  with pytest.raises(lists.ListError, match=r"line 1: a PySlowFast frame list starts"):
    lists.read_list(["a.mp4 1"], "frame_list")
  with pytest.raises(lists.ListError, match=r"line 1: expected 'Class/video.avi \[index\]'"):
    lists.read_list(["a.avi 1 2"], "ucf101")
