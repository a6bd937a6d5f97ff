"""Shared test helpers: tiny configs."""

from configs import demo


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
  for key, value in overrides.items():
    target = c
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return c
