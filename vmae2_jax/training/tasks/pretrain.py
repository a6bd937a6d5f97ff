"""Pre-training: masked video modelling with dual masking (encoder tube, decoder running cell)."""

from __future__ import annotations


import jax
import numpy as np
from absl import logging
from flax import nnx

from vmae2_jax import paths
from vmae2_jax.data import make_train_iterator
from vmae2_jax.evaluation.reconstruction import write_reconstruction_grid
from vmae2_jax.masking import MaskSpec, sample_masks
from vmae2_jax.models import build_pretrain_model, get_variant
from vmae2_jax.training.config_checks import check_pretrain_config
from vmae2_jax.training.losses import pixel_targets, weighted_mse


def pretrain_loss(params, graphdef, video, key, spec: MaskSpec, patch: int,
                  normalize_target: bool = True, deterministic: bool = False):
  """Loss of one batch of uint8 clips [B, T, H, W, 3] and its aux outputs."""
  mask_key, drop_key = jax.random.split(key)
  masks = sample_masks(mask_key, video.shape[0], spec)
  target = pixel_targets(video, masks.target_idx, patch, normalize_target)
  model = nnx.merge(graphdef, params)
  pred = model(video, masks.visible_idx, masks.target_idx, key=drop_key,
               deterministic=deterministic)
  return weighted_mse(pred, target, masks.weights), (pred, masks)


class PretrainTask:
  """The pre-training model, its loss and data; the reconstruction picture at the end."""

  kind = "pretrain"            # the model kind checkpoints and model.json record
  device_keys = ("video",)     # batch entries that go to the device
  best_metric = None           # no validation metric to keep a best checkpoint by

  def __init__(self, config, batch_shards: int):
    self.config = config
    self.spec = check_pretrain_config(config, batch_shards)
    self.patch = get_variant(config.model.variant).patch
    self.num_classes = 0
    self.class_names = None

  def build_model(self, rngs: nnx.Rngs):
    return build_pretrain_model(self.config, rngs)

  def batch_shapes(self, clips: int) -> dict:
    d = self.config.data
    return {"video": ((clips, d.frames, d.image_size, d.image_size, 3), np.uint8)}

  def loss(self, params, graphdef, batch, key):
    loss, _ = pretrain_loss(params, graphdef, batch["video"], key, self.spec, self.patch,
                            normalize_target=self.config.normalize_target)
    return loss, {}

  def train_iterator(self, process_index: int, process_count: int):
    return make_train_iterator(self.config, process_index=process_index,
                               process_count=process_count, seed=self.config.seed)

  def describe(self) -> str:
    s = self.spec
    return (f"masks: {s.encoder} {s.encoder_ratio} encoder, {s.decoder} decoder "
            f"({s.decoder_ratio}): {s.num_visible} visible / {s.num_targets} decoded "
            f"of {s.num_tokens} tokens")

  def evaluate(self, exp, params) -> dict | None:
    del exp, params
    return None

  def finish(self, exp, params, workdir: str, step: int) -> dict:
    """The reconstruction picture, when config.reconstruction.enabled (process 0 draws)."""
    if not self.config.reconstruction.enabled:
      return {}
    params = exp.host_params(params)  # a collective with several processes: all join
    if jax.process_index() != 0:
      return {}
    path = paths.join(workdir, f"reconstruction_step{step}.png")
    write_reconstruction_grid(self.config, exp.graphdef, params, path,
                              num_clips=self.config.reconstruction.num_clips,
                              title=f"{paths.basename(workdir.rstrip('/'))}, step {step}")
    logging.info("wrote %s", path)
    return {"reconstruction": path}
