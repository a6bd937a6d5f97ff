"""Action detection end to end: real footage with hand-made boxes through data_prep.ava, the
detect stage and predict --detect; what a detector takes from other models (init_from)."""

from __future__ import annotations

import contextlib
import io
import os
import pickle

import numpy as np
import pytest

from data_prep import ava as ava_prep
from tests.helpers import tiny_detect_config
from tests.test_predict_extract import write_mp4
from vmae2_jax import detect_predict
from vmae2_jax.conversion.init_from import _detector_from
from vmae2_jax.conversion.report import ConversionError
from vmae2_jax.data import pipelines, shards
from vmae2_jax.training import trainer

# The synthetic set and recipe of the frame-mAP test: 8 training movies of 4 scenes (96
# keyframes), the held-out movie's 9 keyframes (one excluded) scored on noisy proposals.
# Square 96 x 96 frames: the train crop is the whole frame, so training and test see the same
# 6 x 6 token grid and positions (a 64 x 80 frame's 64 x 64 crops put each person at a random
# offset to the tokens and the test resizes the positions: ~85 at best); each person's third
# of the frame is two whole tokens wide. Ti/16 at lr 3e-3 without layer decay, drop path or
# colour jitter (the motion is the signal).
SIZE = 96
SYNTHETIC = dict(train_movies=8, val_movies=1, scenes=4, height=SIZE, width=SIZE)
PRETRAIN_STEPS = 10
DETECT_RECIPE = {"detect.short_side": SIZE, "detect.crop_size": SIZE, "detect.max_boxes": 4,
                 "detect.eval_max_boxes": 8, "detect.buckets": ((SIZE, SIZE),),
                 "detect.color_jitter": (), "model.drop_path_rate": 0.0,
                 "model.head_init_scale": 1.0, "optim.base_lr": 0.1, "optim.layer_decay": 1.0,
                 "total_steps": 100, "warmup_steps": 30, "eval.every_steps": 50,
                 "checkpoint_every": 100, "log_every": 50}

# The demo's real clips (96 frames each, short side 128) as AVA movies: two to train on,
# one held out; two hand-made boxes per keyframe with made-up actions.
TRAIN, VAL = ("bikes.mp4", "bigbuckbunny.mp4"), ("carphone_pristine.mp4",)
BOXES = [((0.05, 0.1, 0.5, 0.95), 1), ((0.45, 0.15, 0.95, 0.9), 2)]


def _natural_clips() -> dict[str, np.ndarray]:
  source = shards.ShardSource("demo:train")
  out = {}
  for i in range(len(source)):
    rec = pipelines._as_record(source[i])
    if rec.header["name"] in TRAIN + VAL:
      out[rec.header["name"]] = rec.decode_frames(range(rec.num_frames))
  return out


def _real_footage_set(root: str) -> dict[str, str]:
  """AVA's layout: frames/<video>/<video>_%06d.jpg (30 fps from second 900), the GT CSVs,
  a label map, the held-out movie's proposals (the boxes at 0.9 plus a 0.3 decoy)."""
  import cv2
  clips = _natural_clips()
  ann = os.path.join(root, "annotations")
  os.makedirs(ann)
  with open(os.path.join(ann, "labels.pbtxt"), "w") as f:
    f.write('item {\n  name: "cycle"\n  id: 1\n}\nitem {\n  name: "watch"\n  id: 2\n}\n')
  p = {"label_map": os.path.join(ann, "labels.pbtxt"), "frames": os.path.join(root, "frames")}
  for split, names in (("train", TRAIN), ("val", VAL)):
    rows, proposals = [], {}
    for name in names:
      vid = name.split(".")[0]
      os.makedirs(os.path.join(p["frames"], vid))
      for k, frame in enumerate(clips[name], 1):
        cv2.imwrite(os.path.join(p["frames"], vid, f"{vid}_{k:06d}.jpg"), frame[..., ::-1])
      for ts in (901, 902):
        for box, action in BOXES:
          rows.append(",".join([vid, str(ts), *(f"{v:.3f}" for v in box), str(action)]))
        proposals[f"{vid},{ts:04d}"] = np.array(
            [[*b, 0.9] for b, _ in BOXES] + [[0.3, 0.3, 0.6, 0.6, 0.3]], np.float32)
    p[f"{split}_csv"] = os.path.join(ann, f"{split}.csv")
    with open(p[f"{split}_csv"], "w") as f:
      f.write("\n".join(rows) + "\n")
    p[f"{split}_proposals"] = os.path.join(ann, f"{split}_proposals.pkl")
    with open(p[f"{split}_proposals"], "wb") as f:
      pickle.dump(proposals, f)
    p[f"{split}_shards"] = os.path.join(root, f"shards_{split}")
    with contextlib.redirect_stdout(io.StringIO()):
      assert ava_prep.main([f"--frames={p['frames']}", f"--annotations={p[f'{split}_csv']}",
                            f"--label_map={p['label_map']}", f"--out={p[f'{split}_shards']}",
                            f"--proposals={p[f'{split}_proposals']}", "--short_side=64"]) == 0
  p["val_mp4"] = write_mp4(os.path.join(root, "carphone.mp4"), clips[VAL[0]], fps=30)
  return p


def test_real_footage_with_hand_made_boxes_runs_end_to_end(tmp_path, capsys):
  p = _real_footage_set(str(tmp_path / "real"))
  config = tiny_detect_config(**{
      "data.train_path": p["train_shards"], "data.val_path": p["val_shards"],
      "data.frames": 16, "model.num_classes": 0,          # the shards' label map: 2 actions
      "detect.short_side": 64, "detect.crop_size": 64, "detect.buckets": ((64, 128),),
      "detect.groundtruth": p["val_csv"], "detect.label_map": p["label_map"],
      "total_steps": 4, "eval.every_steps": 2})
  work = str(tmp_path / "run")
  summary = trainer.train(config, work)
  evals = summary["evaluations"]
  assert [e["step"] for e in evals] == [2, 4]
  assert all(0.0 <= e["val_map"] <= 100.0 for e in evals)
  # the held-out keyframes' detections in AVA's CSV format: 2 boxes x 2 actions each
  # (the 0.3 decoy is below the person score)
  with open(summary["test_csv"]) as f:
    rows = [line.split(",") for line in f.read().splitlines()]
  assert len(rows) == 2 * 2 * 2 and {r[0] for r in rows} == {"carphone_pristine"}
  assert {(r[1], r[6]) for r in rows} == {(t, a) for t in ("0901", "0902") for a in "12"}
  assert all(0.0 <= float(r[7]) <= 0.9 for r in rows)  # sigmoid x the proposal's 0.9
  assert os.path.exists(os.path.join(work, "test_step4_map.txt"))

  # predict --detect on the held-out movie as a video file, with a picture
  out = str(tmp_path / "keyframe.png")
  capsys.readouterr()
  rc = detect_predict.main([f"--init_from={work}", f"--video={p['val_mp4']}", "--time=1.0",
                            "--boxes=0.05,0.1,0.5,0.95", "--boxes=0.45,0.15,0.95,0.9",
                            f"--out={out}", "--top=2"])
  lines = capsys.readouterr().out.strip().splitlines()
  assert rc == 0 and len(lines) == 2
  assert lines[0].startswith("box 1 (0.05,0.10,0.50,0.95): 1. ") and "watch" in "".join(lines)
  assert os.path.getsize(out) > 10_000
  # bad input: one line naming the value
  rc = detect_predict.main([f"--init_from={work}", f"--video={p['val_mp4']}",
                            "--boxes=0.6,0.1,0.5,0.9"])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 1 and err == ["error: --boxes=0.6,0.1,0.5,0.9: box (0.6, 0.1, 0.5, 0.9) is not "
                             "inside [0, 1] with x1 < x2 and y1 < y2"]


def _params(*parts):
  """A small nested param dict with the named top-level parts."""
  enc = {"patch_embed": {"kernel": np.ones((4, 2))}, "blocks": {"w": np.ones((2, 2))}}
  out = {"encoder": dict(enc)}
  if "norm" in parts:
    out["encoder"]["norm"] = {"scale": np.full(2, 3.0), "bias": np.full(2, 4.0)}
  if "fc_norm" in parts:
    out["fc_norm"] = {"scale": np.full(2, 5.0), "bias": np.zeros(2)}
  if "head" in parts:
    out["head"] = {"kernel": np.full((2, 80), 7.0), "bias": np.zeros(80)}
  return out


def test_a_detector_takes_the_encoder_of_any_model_and_its_norm_where_there_is_one():
  fresh = _params("norm", "head")
  fresh["encoder"]["patch_embed"]["kernel"] = np.zeros((4, 2))
  fresh["encoder"]["norm"] = {"scale": np.ones(2), "bias": np.zeros(2)}
  fresh["head"]["kernel"] = np.zeros((2, 80))
  # a K710 classifier: encoder taken, its fc_norm and head dropped, the final norm fresh
  # (the reference loads a classifier into the detector non-strictly: no "norm" in it)
  out, _ = _detector_from(fresh, _params("fc_norm", "head"), "classifier", "CLS", None, False)
  assert (out["encoder"]["patch_embed"]["kernel"] == 1).all()
  assert (out["encoder"]["norm"]["scale"] == 1).all() and (out["head"]["kernel"] == 0).all()
  # a pre-training model's encoder has its final norm: taken
  out, _ = _detector_from(fresh, _params("norm"), "pretrain", "PT", None, False)
  assert (out["encoder"]["norm"]["scale"] == 3).all() and (out["head"]["kernel"] == 0).all()
  # a detector (a run to continue or evaluate): everything, head included
  out, _ = _detector_from(fresh, _params("norm", "head"), "detector", "DET", None, False)
  assert (out["head"]["kernel"] == 7).all()
  with pytest.raises(ConversionError, match="never re-indexed"):
    _detector_from(fresh, _params("fc_norm", "head"), "classifier", "CLS", "710to400", False)


def test_synthetic_set_pretrained_then_detected_reaches_frame_map(tmp_path):
  """data_prep's synthetic AVA set (actions told apart by motion inside the box only): a
  Ti/16 pre-trained on its training clips (stage pretrain), then fine-tuned to detect, scores
  frame mAP >= 0.9 on the held-out movie with its noisy person proposals."""
  from tests.helpers import detect_data_overrides, synthetic_ava_shards, tiny_pretrain_config
  p = synthetic_ava_shards(str(tmp_path / "ava"), short_side=SIZE, **SYNTHETIC)
  clip = {"model.variant": "Ti/16", "data.frames": 16, "data.image_size": SIZE}
  pretrain = tiny_pretrain_config(**clip, **{
      "data.source": "shards", "data.train_path": p["train_shards"],
      "data.sampling_rate": 1,      # the shards hold each clip's 16 frames (stride 4) only
      "data.num_sample": 1, "batch_size": 8, "total_steps": PRETRAIN_STEPS, "warmup_steps": 5,
      "checkpoint_every": PRETRAIN_STEPS, "log_every": PRETRAIN_STEPS})
  trainer.train(pretrain, str(tmp_path / "pt"))
  detect = tiny_detect_config(**{**detect_data_overrides(p), **clip, **DETECT_RECIPE},
                              init_from=str(tmp_path / "pt"))
  summary = trainer.train(detect, str(tmp_path / "det"))
  maps = [e["val_map"] for e in summary["evaluations"]]
  # the model at the end of training, not the best of the held-out validations
  assert len(maps) == 2 and maps[-1] >= 90.0, maps
