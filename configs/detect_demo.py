"""Adapted: not a published recipe. A tiny action-detection run on the synthetic AVA set
(python -m data_prep.ava_synthetic --height=96 --width=96 --train_movies=8, then data_prep.ava
into shards with --short_side=96; docs/detection.md): Ti/16 on 16-frame clips at stride 4 of
square 96 x 96 frames (the train crop is the whole frame, so training and test share the 6 x 6
token grid), three motion actions, frame mAP on the held-out movie with its noisy person
proposals. The reference recipe's schedule shape (AdamW 0.9/0.999, warmup then cosine) at a CPU
size: 300 steps of 8 clips at lr 3e-3, no layer decay, drop path or colour jitter (what
tests/test_detect.py's frame-mAP test runs, there 120 steps). Start it from a pre-training of the
same clips (configs/demo.py's model on --config.data.train_path=<train shards>
--config.data.frames=16) or from nothing.

python -m vmae2_jax.main --config=configs/detect_demo.py --workdir=/tmp/vmae2_demo_detect --config.init_from=/tmp/vmae2_demo_ava_pretrain
"""

from configs.common import base_config

SYN = "/tmp/vmae2_ava_synthetic"


def get_config(arg=None):
  if arg:
    raise ValueError(f"configs/detect_demo.py:{arg}: this config takes no arg")
  c = base_config()
  c.stage = "detect"
  c.model.variant = "Ti/16"
  c.model.num_classes = 3
  c.model.drop_path_rate = 0.0
  c.model.head_init_scale = 1.0
  c.data.train_path = f"{SYN}/shards_train"
  c.data.val_path = f"{SYN}/shards_val"
  c.data.frames, c.data.sampling_rate, c.data.image_size = 16, 4, 96
  c.data.num_sample = 1
  c.detect.update(dict(short_side=96, crop_size=96, max_boxes=4, eval_max_boxes=8,
                       buckets=((96, 96), (96, 128), (128, 96)), color_jitter=(),
                       groundtruth=f"{SYN}/annotations/ava_val.csv",
                       label_map=f"{SYN}/annotations/action_list.pbtxt",
                       exclusions=f"{SYN}/annotations/val_excluded_timestamps.csv"))
  c.batch_size = 8
  c.total_steps = 300
  c.epochs = 1
  c.warmup_steps = 30
  c.optim.update(dict(base_lr=0.1, min_lr=1e-5, warmup_epochs=0, b1=0.9, b2=0.999,
                      weight_decay=0.05, layer_decay=1.0))
  c.eval.every_steps = 100
  c.eval.batch_size = 8
  c.log_every = 25
  c.checkpoint_every = 100
  return c
