"""Shared test helpers: tiny configs."""

from configs import demo
from configs.common import base_config


def apply_overrides(c, overrides: dict):
  """Sets dotted fields ("data.frames") of a ConfigDict; returns it."""
  for key, value in overrides.items():
    target = c
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return c


def tiny_pretrain_config(**overrides):
  """The demo config shrunk to a 2-block, 32-wide ViT on 4x32x32 clips."""
  c = demo.get_config()
  c.model.variant = "mu/16"
  c.data.source = "synthetic"
  c.data.frames = 4
  c.data.image_size = 32
  c.data.num_sample = 2
  c.masking.encoder_ratio = 0.5
  c.batch_size = 4
  c.total_steps = 6
  c.warmup_steps = 2
  c.log_every = 2
  c.checkpoint_every = 3
  c.reconstruction.enabled = False
  c.async_checkpoint = False
  return apply_overrides(c, overrides)


def tiny_finetune_config(**overrides):
  """Fine-tuning the same tiny ViT on the embedded demo shards (5 classes), 2x2 test views."""
  c = base_config()
  c.stage = "finetune"
  c.model.variant = "mu/16"
  c.data.update(dict(frames=4, image_size=32, train_path="demo:train", val_path="demo:val",
                     num_sample=2, test_num_segment=2, test_num_crop=2))
  c.batch_size, c.total_steps, c.warmup_steps = 8, 4, 1
  c.log_every, c.checkpoint_every = 2, 2
  c.eval.every_steps, c.eval.batch_size = 2, 4
  c.async_checkpoint = False
  c.mixup.mixup_alpha, c.mixup.cutmix_alpha = 0.8, 1.0
  c.optim.layer_decay = 0.75
  return apply_overrides(c, overrides)


def tiny_detect_config(**overrides):
  """AVA-style detection with the same tiny ViT: 4-frame 32 px crops, 3 boxes a clip, 3
  actions (data paths are the caller's: data_prep.ava shards of the synthetic AVA set)."""
  c = base_config()
  c.stage = "detect"
  c.model.variant = "mu/16"
  c.model.num_classes = 3
  c.data.update(dict(frames=4, sampling_rate=4, image_size=32, num_sample=1))
  c.detect.update(dict(short_side=32, crop_size=32, max_boxes=3, eval_max_boxes=4,
                       buckets=((32, 48), (32, 32), (48, 32))))
  c.batch_size, c.total_steps, c.warmup_steps = 8, 4, 1
  c.log_every, c.checkpoint_every = 2, 2
  c.eval.every_steps, c.eval.batch_size = 2, 8
  c.async_checkpoint = False
  c.optim.layer_decay = 0.75
  return apply_overrides(c, overrides)


def synthetic_ava_shards(root: str, *, short_side: int = 32, **generator) -> dict:
  """data_prep.ava_synthetic's set under root, built into keyframe shards by data_prep.ava
  (train: ground truth; val: with its noisy proposals). Returns the generator's paths plus
  train_shards and val_shards."""
  import contextlib
  import io
  import os

  from data_prep import ava, ava_synthetic
  p = ava_synthetic.write_synthetic_ava(os.path.join(root, "raw"), **generator)
  for split in ("train", "val"):
    p[f"{split}_shards"] = os.path.join(root, f"shards_{split}")
    with contextlib.redirect_stdout(io.StringIO()):
      rc = ava.main([f"--frames={p['frames']}", f"--annotations={p[f'{split}_csv']}",
                     f"--label_map={p['label_map']}", f"--proposals={p[f'{split}_proposals']}",
                     f"--out={p[f'{split}_shards']}", f"--short_side={short_side}"])
    assert rc == 0, split
  return p


def detect_data_overrides(p: dict) -> dict:
  """tiny_detect_config overrides reading synthetic_ava_shards' set (16-frame clips)."""
  return {"data.train_path": p["train_shards"], "data.val_path": p["val_shards"],
          "data.frames": 16, "detect.groundtruth": p["val_csv"],
          "detect.label_map": p["label_map"], "detect.exclusions": p["exclusions"]}
