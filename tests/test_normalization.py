"""The input normalisation (mean/std) is part of a model: set by config.model.pixel_mean/std,
written to model.json, and used by whatever rebuilds the model from it (predict, extract,
init_from, a distillation teacher), so a model trained with other statistics is evaluated
with its own. Sources without the fields (older runs, converted published models) keep the
reference's ImageNet statistics."""

from __future__ import annotations

import re

import numpy as np
import pytest
from flax import nnx

from tests.helpers import tiny_finetune_config, tiny_pretrain_config
from tests.test_predict_extract import source  # noqa: F401  (module fixture)
from vmae2_jax.checkpointing import save_model_params
from vmae2_jax.conversion.api import build_model
from vmae2_jax.data import transforms
from vmae2_jax.evaluation import inference
from vmae2_jax.extract import feature_fn
from vmae2_jax.models.options import IMAGENET_MEAN, IMAGENET_STD
from vmae2_jax.training import config_checks
from vmae2_jax.training.experiment import setup
from vmae2_jax.training.trainer import model_meta

MEAN, STD = (0.45, 0.45, 0.45), (0.2, 0.25, 0.125)


def test_model_json_holds_the_statistics_the_run_trains_with():
  exp = setup(tiny_pretrain_config(**{"model.pixel_mean": MEAN, "model.pixel_std": STD}))
  meta = model_meta(exp)
  assert (meta["pixel_mean"], meta["pixel_std"]) == (list(MEAN), list(STD))
  model = exp.task.build_model(nnx.Rngs(0))
  assert (model.encoder.pixel_mean, model.encoder.pixel_std) == (MEAN, STD)
  assert model_meta(setup(tiny_pretrain_config()))["pixel_mean"] == list(IMAGENET_MEAN)


def test_bad_statistics_are_refused_naming_the_field():
  for field, value, want in (("pixel_std", (0.2, 0.0, 0.2), "3 numbers (R, G, B) > 0"),
                             ("pixel_mean", (0.5, 0.5), "3 numbers (R, G, B)")):
    c = tiny_finetune_config(**{f"model.{field}": value})
    with pytest.raises(config_checks.ConfigError,
                       match=rf"^config\.model\.{field}=.*{re.escape(want)}"):
      config_checks.check_common(c, 1)


def _clips(n=2):
  return np.random.default_rng(0).integers(0, 256, (n, 4, 32, 32, 3), dtype=np.uint8)


def test_predict_and_extract_use_the_models_own_statistics(source, tmp_path):  # noqa: F811
  _, params, meta = source
  own = str(tmp_path / "own")
  save_model_params(own, params, dict(meta, pixel_mean=list(MEAN), pixel_std=list(STD)))
  model, got_meta = inference.load_classifier(own)  # what predict and extract load
  assert (model.encoder.pixel_mean, model.encoder.pixel_std) == (MEAN, STD)
  assert got_meta["pixel_std"] == list(STD)
  imagenet = build_model(params, meta)  # a source without the fields: ImageNet's
  assert (imagenet.encoder.pixel_mean, imagenet.encoder.pixel_std) == (IMAGENET_MEAN,
                                                                       IMAGENET_STD)
  x = _clips()
  # the same weights with other statistics are another function of the pixels
  assert not np.allclose(model(x), imagenet(x), atol=1e-3)
  # and it is exactly (x/255 - MEAN) / STD the encoder sees: shifting the pixels so that
  # ImageNet's normalisation gives the same numbers gives the same logits
  shifted = (x / 255.0 - np.array(MEAN)) / np.array(STD)
  as_imagenet = (shifted * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255.0
  np.testing.assert_allclose(np.asarray(model(x)), np.asarray(imagenet(
      as_imagenet.astype(np.float32))), atol=2e-4)
  # extract --reference_normalization feeds x/255 whatever the model's statistics: the
  # features of both models agree; the training normalisation differs
  ref = feature_fn(True)
  np.testing.assert_allclose(np.asarray(ref(model, x)), np.asarray(ref(imagenet, x)),
                             atol=2e-4)
  train = feature_fn(False)
  assert not np.allclose(train(model, x), train(imagenet, x), atol=1e-3)


def test_random_erasing_draws_noise_in_the_models_space():
  """The reference draws N(0, 1) after normalisation: mapped back with the model's stats."""
  clip = np.zeros((2, 32, 32, 3), np.uint8)
  box = (0, 0, 32, 32)
  a = transforms.apply_erasing(clip, box, np.random.default_rng(0), MEAN, STD)
  b = transforms.apply_erasing(clip, box, np.random.default_rng(0))
  z = (a / 255.0 - np.array(MEAN)) / np.array(STD)
  assert abs(z.mean()) < 0.05 and 0.8 < z.std() < 1.1  # N(0, 1) in the model's space
  assert not np.array_equal(a, b)
