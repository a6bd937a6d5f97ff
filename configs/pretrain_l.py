"""Pre-training ViT-L/16 on UnlabeledHybrid with dual masking (reference recipe).

ViT-L: 32 x 48 GPUs, lr 1e-3, warmup 30, 300 epochs.
Batch is the reference's per-GPU videos x GPUs; lr is scaled by batch/256 (views
not counted). Override on the command line, e.g. --config.batch_size=64.
"""

from configs.common import base_config, unlabeled_hybrid_sources


def get_config(arg=None):
  c = base_config()
  c.model.variant = "L/16"
  c.model.remat = "none"
  c.model.scan_layers = False
  c.batch_size = 32 * 48
  c.epochs = 300
  c.optim.base_lr = 0.001
  c.optim.warmup_epochs = 30
  c.optim.clip_grad = 0.0
  c.data.source = "shards"
  c.data.sources = unlabeled_hybrid_sources()
  c.data.num_videos = 1_350_000
  c.data.num_sample = 4
  return c
