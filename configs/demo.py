"""A tiny VideoMAE V2 pre-training run on embedded demo clips: minutes on 2 CPU cores.

python -m vmae2_jax.main --config=configs/demo.py --workdir=/tmp/vmae2_demo
"""

from configs.common import base_config


def get_config(arg=None):
  c = base_config()
  c.model.variant = "Ti/16"
  c.data.source = "shards"
  c.data.train_path = "demo"     # the embedded demo shards (vmae2_jax/resources/demo)
  c.data.frames = 8
  c.data.image_size = 64
  c.data.num_sample = 2
  c.data.num_videos = 0
  c.masking.encoder_ratio = 0.75
  c.batch_size = 8
  c.total_steps = 1500
  c.epochs = 1
  c.optim.warmup_epochs = 0
  c.warmup_steps = 30
  c.optim.base_lr = 0.064        # x batch 8 / 256 = 2e-3 after the reference scaling
  c.optim.min_lr = 1e-5
  c.log_every = 100
  c.checkpoint_every = 500
  c.reconstruction.enabled = True
  c.reconstruction.first_classes = ("natural",)  # the real footage before the generated clips
  return c
