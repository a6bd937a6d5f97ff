"""Pre-training ViT-B/16 on UnlabeledHybrid with dual masking (reference recipe).

ViT-B: 32 x 32 GPUs, lr 1e-3, warmup 20, 200 epochs (800 effective with 4 views).
Batch is the reference's per-GPU videos x GPUs; lr is scaled by batch/256 (views
not counted). Override on the command line, e.g. --config.batch_size=64.
"""

from configs.common import base_config, unlabeled_hybrid_sources


def get_config(arg=None):
  c = base_config()
  c.model.variant = "B/16"
  c.model.remat = "none"
  c.model.scan_layers = False
  c.batch_size = 32 * 32
  c.epochs = 200
  c.optim.base_lr = 0.001
  c.optim.warmup_epochs = 20
  c.optim.clip_grad = 0.0
  c.data.source = "shards"
  c.data.sources = unlabeled_hybrid_sources()
  c.data.num_videos = 1_350_000
  c.data.num_sample = 4
  return c
