"""A tiny VideoMAE V2 pre-training run on embedded demo clips: minutes on 2 CPU cores.

python -m vmae2_jax.main --config=configs/demo.py --workdir=/tmp/vmae2_demo
"""

from configs.common import base_config


def get_config(arg=None):
  c = base_config()
  c.model.variant = "Ti/16"
  c.data.source = "synthetic"
  c.data.frames = 8
  c.data.image_size = 64
  c.data.num_sample = 2
  c.data.num_videos = 0
  c.masking.encoder_ratio = 0.75
  c.batch_size = 8
  c.total_steps = 300
  c.epochs = 1
  c.optim.warmup_epochs = 0
  c.warmup_steps = 30
  c.optim.base_lr = 0.032        # x batch 8 / 256 = 1e-3 after the reference scaling
  c.optim.min_lr = 1e-5
  c.log_every = 25
  c.checkpoint_every = 100
  c.reconstruction.enabled = True
  return c
