"""The inference forward's XLA:CPU options (models.platform.forward_compiler_options):
the multi-view test and the predict / extract CLIs compile without YNNPACK fusions."""

import jax
import numpy as np
from flax import nnx

from tests.helpers import tiny_finetune_config
from vmae2_jax.evaluation.inference import BatchRunner
from vmae2_jax.models import platform
from vmae2_jax.models.platform import forward_compiler_options
from vmae2_jax.training.experiment import setup


def _entry(compiled) -> str:
  text = compiled.as_text()
  return text[text.index("\nENTRY"):]


def test_cpu_forward_has_no_ynn_fusions_and_the_same_scores():
  assert forward_compiler_options("tpu") == {} and forward_compiler_options("gpu") == {}
  assert not platform._cpu_accepts("xla_cpu_no_such_option", "")  # a renamed option: defaults
  exp = setup(tiny_finetune_config(**{"model.num_classes": 5}))
  params = exp.init_state().params
  video = np.random.default_rng(0).integers(0, 256, (8, 4, 32, 32, 3), np.uint8)
  x = jax.device_put(video, exp.batch_sharding(5))
  lowered = exp.predict_fn.lower(params, x)
  # XLA's own default fuses the dense layers into YNNPACK calls; the forward must not.
  plain = jax.jit(lambda p, v: exp.task.predict(p, exp.graphdef, v)).lower(params, x).compile()
  assert "ynn_fusion" in _entry(plain)
  assert "ynn_fusion" not in _entry(lowered.compile())
  np.testing.assert_allclose(exp.predict_fn(params, x), plain(params, x), rtol=1e-5, atol=1e-5)

  runner = BatchRunner(nnx.merge(exp.graphdef, params), lambda m, v: m(v), 2)
  assert "ynn_fusion" not in _entry(runner._fn.lower(runner._state, video[:2]).compile())
