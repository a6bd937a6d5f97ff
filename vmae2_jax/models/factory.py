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
      drop_path_rate=m.drop_path_rate)


def build_classifier(config, rngs: nnx.Rngs, num_classes: int | None = None) -> Classifier:
  """The classifier described by config.model (dropouts, head) and config.data.

  num_classes: the head's size when config.model.num_classes is 0 (resolved
  from the training data by the caller).
  """
  m = config.model
  return Classifier(
      get_variant(m.variant), num_classes or m.num_classes, frames=config.data.frames,
      image_size=config.data.image_size, opts=ModelOptions.from_config(m, init="finetune"),
      rngs=rngs, drop_path_rate=m.drop_path_rate, head_dropout=m.head_dropout,
      head_init_scale=m.head_init_scale)


def count_params(tree) -> int:
  """Number of parameters in a module or state, concrete or abstract."""
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree, nnx.Param)
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
