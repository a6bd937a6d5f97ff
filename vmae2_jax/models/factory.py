"""Builds models from a config and counts parameters from abstract shapes."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from vmae2_jax.models.options import ModelOptions
from vmae2_jax.models.variants import get_variant
from vmae2_jax.models.vit import Classifier, PretrainModel


def build_pretrain_model(config, rngs: nnx.Rngs) -> PretrainModel:
  """The pre-training model described by config.model and config.data."""
  m = config.model
  return PretrainModel(
      get_variant(m.variant), frames=config.data.frames, image_size=config.data.image_size,
      opts=ModelOptions.from_config(m, init="pretrain"), rngs=rngs,
      drop_path_rate=m.get("drop_path_rate", 0.0))


def build_classifier(config, rngs: nnx.Rngs) -> Classifier:
  """The classifier described by config.model (num_classes, dropouts) and config.data."""
  m = config.model
  return Classifier(
      get_variant(m.variant), m.num_classes, frames=config.data.frames,
      image_size=config.data.image_size, opts=ModelOptions.from_config(m, init="finetune"),
      rngs=rngs, drop_path_rate=m.get("drop_path_rate", 0.0),
      head_dropout=m.get("head_dropout", 0.0), head_init_scale=m.get("head_init_scale", 0.001))


def count_params(tree) -> int:
  """Number of parameters in a module or state, concrete or abstract."""
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree, nnx.Param)
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
