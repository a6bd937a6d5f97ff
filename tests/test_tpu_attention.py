"""The Pallas TPU attention path (padded, segment-masked) equals softmax attention.

Runs the kernel in Pallas's TPU interpret mode on CPU: the same kernel code,
block sizes, padding and masking as on a TPU, simulated.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from vmae2_jax.models import tpu_attention
from vmae2_jax.models.layers import softmax_attention


@pytest.mark.parametrize("nq", [20, 36])  # 36 queries of 36 keys; 20 = the last 20 of them
def test_padded_flash_attention_matches_softmax_attention_and_gradient(nq):
  keys = jax.random.split(jax.random.key(0), 4)
  b, n, h, d = 2, 36, 2, 8    # n pads to 128: 92 masked keys
  q = jax.random.normal(keys[0], (b, nq, h, d)) * 2.0
  k, v = (jax.random.normal(kk, (b, n, h, d)) for kk in keys[1:3])
  ct = jax.random.normal(keys[3], (b, nq, h, d))
  scale = d ** -0.5

  def loss(fn, q, k, v):
    return jnp.sum(fn(q, k, v) * ct)

  ours = lambda q, k, v: tpu_attention.flash_attention(q, k, v, scale)
  ref = lambda q, k, v: softmax_attention(q * scale, k, v)
  with pltpu.force_tpu_interpret_mode():
    out = jax.jit(ours)(q, k, v)
    grads = jax.jit(jax.grad(lambda *a: loss(ours, *a), (0, 1, 2)))(q, k, v)
  np.testing.assert_allclose(out, ref(q, k, v), atol=1e-5, rtol=1e-5)
  for g, g_ref in zip(grads, jax.grad(lambda *a: loss(ref, *a), (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(g, g_ref, atol=1e-4, rtol=1e-4)


def test_auto_attention_lowers_to_the_pallas_kernel_for_tpu_and_no_cpu_kernel():
  """A float32 model with CPU kernels on, lowered for TPU devices from this CPU host:
  "auto" must pick per lowering platform (the Pallas kernel, no CPU custom call)."""
  pytest.importorskip("libtpu", reason="needs libtpu (pip install 'jax[tpu]')")
  import os
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies
  from tests.helpers import tiny_pretrain_config
  from vmae2_jax.training.experiment import setup
  devices = topologies.get_topology_desc(platform="tpu", topology_name="v5p:2x2x1",
                                         chips_per_host_bounds=(2, 2, 1), num_slices=1).devices
  c = tiny_pretrain_config(**{"model.dtype": "float32", "model.cpu_kernels": True})
  c.batch_size = 8
  exp = setup(c, devices)
  text = exp.jit_train_step().lower(exp.abstract_state, exp.abstract_batch()).as_text()
  assert "tpu_custom_call" in text
  assert "vmae2_cpu" not in text
