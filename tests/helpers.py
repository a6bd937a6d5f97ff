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
