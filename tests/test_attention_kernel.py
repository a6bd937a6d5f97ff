"""Hand-written kernels (attention and dense backward, exact GELU) equal the reference formulas."""

import jax
import jax.numpy as jnp
import numpy as np

from vmae2_jax.models.layers import softmax_attention


def _reference(q, k, v, scale):
  return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation="xla")


def test_softmax_attention_matches_dot_product_attention_and_its_gradient():
  keys = jax.random.split(jax.random.key(0), 4)
  b, n, h, d = 2, 37, 3, 16
  q, k, v = (jax.random.normal(kk, (b, n, h, d)) * 2.0 for kk in keys[:3])
  ct = jax.random.normal(keys[3], (b, n, h, d))
  scale = d ** -0.5

  def loss_ours(q, k, v):
    return jnp.sum(softmax_attention(q * scale, k, v) * ct)

  def loss_ref(q, k, v):
    return jnp.sum(_reference(q, k, v, scale) * ct)

  np.testing.assert_allclose(softmax_attention(q * scale, k, v), _reference(q, k, v, scale),
                             atol=2e-6, rtol=1e-5)
  for g_ours, g_ref in zip(jax.grad(loss_ours, (0, 1, 2))(q, k, v),
                           jax.grad(loss_ref, (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(g_ours, g_ref, atol=2e-5, rtol=1e-4)


def test_softmax_attention_bfloat16_keeps_fp32_softmax():
  """Against float32 on the same bf16-rounded inputs, peaked rows (logits ~ +-40): the
  output is off by its own bf16 rounding; a bf16 softmax is ~10x further off and fails
  (see also tests/test_reference_restatements.py, float64)."""
  keys = jax.random.split(jax.random.key(1), 3)
  q, k, v = (jax.random.normal(kk, (2, 64, 2, 16)).astype(jnp.bfloat16) for kk in keys)
  q = q * 3
  out = softmax_attention(q, k, v)
  assert out.dtype == jnp.bfloat16
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  np.testing.assert_allclose(out.astype(jnp.float32), _reference(*f32, 1.0), rtol=2 ** -8,
                             atol=2e-3)
  grads = jax.grad(lambda q: jnp.sum(softmax_attention(q, k.astype(jnp.bfloat16),
                                                       v.astype(jnp.bfloat16)).astype(jnp.float32)))(
                                                           q.astype(jnp.bfloat16))
  assert grads.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(grads.astype(jnp.float32))))


def test_gelu_exact_matches_erf_gelu_and_its_derivative():
  from vmae2_jax.models.layers import gelu_exact
  x = jnp.linspace(-8.0, 8.0, 4001)
  np.testing.assert_allclose(gelu_exact(x), jax.nn.gelu(x, approximate=False), atol=2e-6)
  grad = jax.vmap(jax.grad(gelu_exact))(x)
  ref = jax.vmap(jax.grad(lambda t: jax.nn.gelu(t, approximate=False)))(x)
  np.testing.assert_allclose(grad, ref, atol=2e-6)
  assert gelu_exact(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_dense_matmul_gradient_equals_autodiff():
  from vmae2_jax.models.layers import dense_matmul
  keys = jax.random.split(jax.random.key(2), 3)
  x = jax.random.normal(keys[0], (2, 5, 8))
  for kshape in [(8, 6), (8, 3, 2, 4)]:
    k = jax.random.normal(keys[1], kshape)
    ct = jax.random.normal(keys[2], (2, 5) + kshape[1:])
    ref = lambda x, k: jax.lax.dot_general(x, k, (((2,), (0,)), ((), ())))
    np.testing.assert_allclose(dense_matmul(x, k), ref(x, k), atol=1e-5)
    ours = jax.grad(lambda x, k: jnp.sum(dense_matmul(x, k) * ct), (0, 1))(x, k)
    theirs = jax.grad(lambda x, k: jnp.sum(ref(x, k) * ct), (0, 1))(x, k)
    for a, b in zip(ours, theirs):
      assert a.shape == b.shape
      np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
