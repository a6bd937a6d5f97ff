"""The FFI CPU kernels equal the XLA paths they replace, build once, and fall back cleanly."""

import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vmae2_jax.kernels import build, cpu
from vmae2_jax.models.layers import (Attention, BlockStack, Dense, dense_matmul,
                                     softmax_attention)
from vmae2_jax.models.options import ModelOptions

pytestmark = pytest.mark.skipif(build.find_compiler() is None,
                                reason="no C++ compiler to build the CPU kernels")


def _qkv(shape_q, n_k, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  b, n_q, h, d = shape_q
  q = jax.random.normal(keys[0], shape_q) * (2.0 / np.sqrt(d))  # peaked softmax rows
  k = jax.random.normal(keys[1], (b, n_k, h, d))
  v = jax.random.normal(keys[2], (b, n_k, h, d))
  ct = jax.random.normal(keys[3], shape_q)
  return q, k, v, ct


def test_library_builds_and_loads_here():
  assert cpu.available(), "the CPU kernels should build with this machine's compiler"


@pytest.mark.parametrize("shape_q,n_k", [
    ((2, 37, 3, 64), 37),     # length not a multiple of the vector width
    ((1, 100, 2, 88), 100),   # ViT-g's head dim 88: padded inside to 96
    ((3, 5, 1, 16), 5),       # tiny
    ((2, 20, 2, 32), 37),     # fewer queries than keys (the decoder's last block)
    ((1, 300, 2, 64), 300),   # several row blocks per head
    ((3, 200, 5, 32), 260),   # more heads than workers, several blocks each (packing pass)
])
def test_attention_and_gradients_equal_xla_path(shape_q, n_k):
  q, k, v, ct = _qkv(shape_q, n_k)
  np.testing.assert_allclose(jax.jit(cpu.attention)(q, k, v), softmax_attention(q, k, v),
                             atol=2e-6, rtol=1e-5)
  ours = jax.grad(lambda *a: jnp.sum(cpu.attention(*a) * ct), (0, 1, 2))(q, k, v)
  ref = jax.grad(lambda *a: jnp.sum(softmax_attention(*a) * ct), (0, 1, 2))(q, k, v)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


def test_attention_under_vmap_and_bfloat16():
  q, k, v, _ = _qkv((2, 24, 2, 16), 24)
  stacked = [jnp.stack([x, 2 * x]) for x in (q, k, v)]
  out = jax.vmap(cpu.attention)(*stacked)
  np.testing.assert_allclose(out[1], softmax_attention(*(2 * x for x in (q, k, v))),
                             atol=1e-5, rtol=1e-5)
  low = cpu.attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)))
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(low.astype(jnp.float32), softmax_attention(q, k, v), atol=5e-2)


def test_attention_runs_per_shard_on_a_mesh():
  """Inside the trainer's sharding context the call is split over batch and heads."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  from vmae2_jax.sharding import make_mesh
  from vmae2_jax.sharding.constraints import activation_sharding
  from vmae2_jax.sharding.rules import DEFAULT_RULES

  mesh = make_mesh({"data": 4, "fsdp": 1, "tensor": 2})
  q, k, v, ct = _qkv((4, 29, 2, 16), 29)

  def loss(q, k, v):
    with activation_sharding(mesh, DEFAULT_RULES):
      return jnp.sum(cpu.attention(q, k, v) * ct)

  spec = NamedSharding(mesh, P("data", None, "tensor", None))
  args = [jax.device_put(x, spec) for x in (q, k, v)]
  fn = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))
  assert "shard_map" in str(jax.make_jaxpr(fn)(*args))
  val, grads = fn(*args)
  ref_val, ref_grads = jax.value_and_grad(
      lambda *a: jnp.sum(softmax_attention(*a) * ct), (0, 1, 2))(q, k, v)
  np.testing.assert_allclose(val, ref_val, rtol=1e-5)
  for a, b in zip(grads, ref_grads):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("x_shape,k_shape", [((2, 5, 8), (8, 6)), ((2, 5, 8), (8, 3, 2, 4)),
                                             ((3, 70, 40), (40, 100)), ((1, 9, 19), (19, 33))])
def test_dense_matmul_and_weight_gradient_equal_xla(x_shape, k_shape):
  keys = jax.random.split(jax.random.key(3), 3)
  x = jax.random.normal(keys[0], x_shape)
  w = jax.random.normal(keys[1], k_shape)
  ct = jax.random.normal(keys[2], x_shape[:-1] + k_shape[1:])
  # Independent float64 NumPy: y = x . w, dx = ct . w^T, dw = x^T . ct over all tokens.
  x64, w64, ct64 = (np.asarray(a, np.float64) for a in (x, w, ct))
  out = w64.ndim - 1
  y = np.tensordot(x64, w64, axes=([x64.ndim - 1], [0]))
  dx = np.tensordot(ct64, w64, axes=(list(range(x64.ndim - 1, ct64.ndim)),
                                     list(range(1, w64.ndim))))
  dw = np.tensordot(x64, ct64, axes=(list(range(x64.ndim - 1)), list(range(x64.ndim - 1))))
  assert dw.shape == w64.shape and out >= 1
  for cpu_grad in (True, False):  # the FFI weight-gradient kernel and the XLA backward
    np.testing.assert_allclose(dense_matmul(x, w, cpu_grad), y, atol=2e-5, rtol=1e-5)
    got = jax.grad(lambda x, w: jnp.sum(dense_matmul(x, w, cpu_grad) * ct), (0, 1))(x, w)
    for a, b in zip(got, (dx, dw)):
      assert a.shape == b.shape
      np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)


def test_model_layers_pick_the_kernels_and_match_xla():
  x = jax.random.normal(jax.random.key(4), (2, 21, 32))
  fused = Attention(32, 2, opts=ModelOptions(), rngs=nnx.Rngs(0))
  plain = Attention(32, 2, opts=ModelOptions(attention="xla", cpu_kernels=False), rngs=nnx.Rngs(0))
  assert fused.implementation == "fused_cpu" and fused.qkv.cpu_kernel
  assert plain.implementation == "xla" and not plain.qkv.cpu_kernel
  for a, b in zip(jax.tree.leaves(nnx.state(fused)), jax.tree.leaves(nnx.state(plain))):
    np.testing.assert_array_equal(a, b)

  def grads(m):
    gd, st = nnx.split(m)
    return jax.grad(lambda st, x: jnp.sum(jnp.sin(nnx.merge(gd, st)(x))), (0, 1))(st, x)

  np.testing.assert_allclose(fused(x), plain(x), atol=2e-6)
  for a, b in zip(jax.tree.leaves(grads(fused)), jax.tree.leaves(grads(plain))):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


def test_weight_gradient_kernel_chosen_per_isa(monkeypatch):
  """The build says whether its weight-gradient matmul beats XLA's dot on this ISA (no with
  AVX2 only, measured on Zen 3); Dense layers follow it, and the env var overrides it."""
  flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
  if "avx2" in flags:
    want = "avx512f" in flags
    assert bool(cpu.load().vmae2_weight_gradient_preferred()) == want
  layer = Dense(16, 24, axes=(None, None), opts=ModelOptions(), rngs=nnx.Rngs(0))
  gd, st = nnx.split(layer)
  x = jnp.ones((2, 5, 16))
  for env in ("1", "0", ""):
    monkeypatch.setenv("VMAE2_JAX_CPU_WEIGHT_GRADIENT", env)
    cpu.weight_gradient_preferred.cache_clear()
    hlo = jax.jit(jax.grad(lambda st: jnp.sum(nnx.merge(gd, st)(x)))).lower(st).as_text()
    uses = "vmae2_cpu_weight_gradient" in hlo
    assert uses == (env == "1" if env else bool(cpu.load().vmae2_weight_gradient_preferred()))
  cpu.weight_gradient_preferred.cache_clear()


def test_block_stack_num_outputs_equals_slicing_the_full_output():
  x = jax.random.normal(jax.random.key(5), (2, 19, 32))
  for scan in (False, True):
    stack = BlockStack(3, 32, 2, 64, opts=ModelOptions(scan_layers=scan), rngs=nnx.Rngs(1))
    full = stack(x)
    np.testing.assert_allclose(stack(x, num_outputs=7), full[:, -7:], atol=2e-6)
    gd, st = nnx.split(stack)
    g_part = jax.grad(lambda st: jnp.sum(nnx.merge(gd, st)(x, num_outputs=7) ** 2))(st)
    g_full = jax.grad(lambda st: jnp.sum(nnx.merge(gd, st)(x)[:, -7:] ** 2))(st)
    for a, b in zip(jax.tree.leaves(g_part), jax.tree.leaves(g_full)):
      np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_build_is_cached_and_a_broken_compiler_is_reported(tmp_path, monkeypatch):
  monkeypatch.setenv("VMAE2_JAX_KERNEL_CACHE", str(tmp_path / "cache"))
  source, include = cpu._SOURCE, jax.ffi.include_dir()
  first = build.build_library(source, include, "cpu_kernels")
  stamp = first.stat().st_mtime_ns
  assert build.build_library(source, include, "cpu_kernels") == first
  assert first.stat().st_mtime_ns == stamp  # found, not rebuilt
  assert not list(first.parent.glob("*.tmp"))

  bad = tmp_path / "broken.cc"
  bad.write_text("this is not C++\n")
  with pytest.raises(build.KernelBuildError, match="broken.cc"):
    build.build_library(bad, include, "broken")
  # tuning -D flags: their own cache entry (the build keys on them), nothing else accepted
  monkeypatch.setenv("VMAE2_JAX_KERNEL_DEFINES", "-DVMAE2_SCORE_KB=256 -DVMAE2_WG_KERNEL=1")
  tuned = build.build_library(source, include, "cpu_kernels")
  assert tuned != first and tuned.exists()
  monkeypatch.setenv("VMAE2_JAX_KERNEL_DEFINES", "-O0 -DVMAE2_NV=1")
  with pytest.raises(build.KernelBuildError, match="only -DNAME=VALUE flags; got -O0"):
    build.build_library(source, include, "cpu_kernels")
  monkeypatch.delenv("VMAE2_JAX_KERNEL_DEFINES")
  monkeypatch.setenv("CXX", "no-such-compiler-anywhere")
  with pytest.raises(build.KernelBuildError, match="no C\\+\\+ compiler"):
    build.build_library(source, include, "cpu_kernels")


def test_kernels_off_falls_back_to_xla_in_a_fresh_process():
  code = ("import jax; from vmae2_jax.models.layers import attention_implementation;"
          "import jax.numpy as jnp; print(attention_implementation('auto', jnp.float32))")
  env = dict(os.environ, VMAE2_JAX_CPU_KERNELS="0", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "xla"


def test_host_memory_settings(monkeypatch):
  from vmae2_jax import host_memory
  with pytest.raises(ValueError, match="config.host_malloc"):
    host_memory.tune_for_cpu_compute("sometimes")
  assert host_memory.tune_for_cpu_compute("default") is False
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert host_memory.cpu_only_host()
  monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
  assert not host_memory.cpu_only_host()
  if shutil.which("ldd") and "GLIBC" in subprocess.run(["ldd", "--version"], capture_output=True,
                                                       text=True).stdout.upper():
    assert host_memory.raise_mmap_threshold()


@pytest.mark.parametrize("n,num_queries,hd", [(37, None, 16), (37, 11, 16), (50, 50, 88),
                                              (9, 0, 8), (400, 250, 32)])
def test_qkv_attention_equals_biases_scale_and_plain_attention(n, num_queries, hd):
  keys = jax.random.split(jax.random.key(6), 4)
  b, h = 2, 3
  qkv = jax.random.normal(keys[0], (b, n, 3, h, hd))
  q_bias, v_bias = (jax.random.normal(kk, (h, hd)) for kk in keys[1:3])
  scale = hd ** -0.5
  nq = n if num_queries is None else num_queries
  ct = jax.random.normal(keys[3], (b, nq, h, hd))

  def reference(qkv, q_bias, v_bias):
    q = (qkv[:, n - nq:, 0] + q_bias) * scale
    return softmax_attention(q, qkv[:, :, 1], qkv[:, :, 2] + v_bias)

  def ours(qkv, q_bias, v_bias):
    return cpu.qkv_attention(qkv, q_bias, v_bias, scale, num_queries)

  np.testing.assert_allclose(jax.jit(ours)(qkv, q_bias, v_bias), reference(qkv, q_bias, v_bias),
                             atol=2e-6, rtol=1e-5)
  g_ours = jax.grad(lambda *a: jnp.sum(ours(*a) * ct), (0, 1, 2))(qkv, q_bias, v_bias)
  g_ref = jax.grad(lambda *a: jnp.sum(reference(*a) * ct), (0, 1, 2))(qkv, q_bias, v_bias)
  for a, r in zip(g_ours, g_ref):
    np.testing.assert_allclose(a, r, atol=2e-5, rtol=1e-4)


def test_qkv_attention_under_vmap():
  qkv = jax.random.normal(jax.random.key(7), (2, 2, 9, 3, 2, 8))
  q_bias, v_bias = jnp.full((2, 8), 0.1), jnp.full((2, 8), 0.2)

  def ours(t):
    return cpu.qkv_attention(t, q_bias, v_bias, 0.3)

  def reference(t):
    return softmax_attention((t[:, :, 0] + q_bias) * 0.3, t[:, :, 1], t[:, :, 2] + v_bias)

  np.testing.assert_allclose(jax.vmap(ours)(qkv), jax.vmap(reference)(qkv), atol=2e-6)
  np.testing.assert_allclose(jax.grad(lambda t: jnp.sum(jax.vmap(ours)(t) ** 2))(qkv),
                             jax.grad(lambda t: jnp.sum(jax.vmap(reference)(t) ** 2))(qkv),
                             atol=1e-5)


def test_attention_with_wide_logit_range_is_as_exact_as_xla():
  """Logits spanning ~[-200, 200]: the exp of the far tail underflows, and float32 logits
  that large carry ~1e-5 of rounding. Against float64 NumPy the kernel must stay within
  twice the XLA path's own error plus one float32 rounding of the largest logit (the
  backward recomputes probabilities from the stored log-sum-exp, which carries it)."""
  keys = jax.random.split(jax.random.key(8), 4)
  b, n, h, d = 1, 70, 2, 32
  q = jax.random.normal(keys[0], (b, n, h, d)) * 3.0
  k = jax.random.normal(keys[1], (b, n, h, d)) * 3.0
  v = jax.random.normal(keys[2], (b, n, h, d))
  ct = jax.random.normal(keys[3], (b, n, h, d))
  q64, k64, v64, ct64 = (np.asarray(x, np.float64) for x in (q, k, v, ct))
  s = np.einsum("bqhd,bkhd->bhqk", q64, k64)
  assert s.max() - s.min() > 300
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  dp = np.einsum("bqhd,bkhd->bhqk", ct64, v64)
  ds = p * (dp - np.sum(dp * p, -1, keepdims=True))
  exact = (np.einsum("bhqk,bkhd->bqhd", p, v64), np.einsum("bhqk,bkhd->bqhd", ds, k64),
           np.einsum("bhqk,bqhd->bkhd", ds, q64), np.einsum("bhqk,bqhd->bkhd", p, ct64))

  def results(fn):
    grads = jax.grad(lambda *a: jnp.sum(fn(*a) * ct), (0, 1, 2))(q, k, v)
    return (jax.jit(fn)(q, k, v),) + tuple(grads)

  for ours, xla, ref in zip(results(cpu.attention), results(softmax_attention), exact):
    err_ours = np.abs(np.asarray(ours, np.float64) - ref).max()
    err_xla = np.abs(np.asarray(xla, np.float64) - ref).max()
    bound = 2 * err_xla + np.finfo(np.float32).eps * np.abs(s).max() * np.abs(ref).max()
    assert err_ours <= bound, (err_ours, err_xla, bound)


@pytest.mark.parametrize("tokens,m,n", [(600, 101, 70), (1030, 40, 96), (257, 7, 5)])
def test_weight_gradient_over_many_tokens_equals_float64(tokens, m, n):
  """Contractions longer than the kernel's 256-token chunks (accumulation across chunks),
  rows not a multiple of the micro-kernel's 6 and widths not a multiple of a vector."""
  keys = jax.random.split(jax.random.key(9), 2)
  x = jax.random.normal(keys[0], (tokens, m))
  dy = jax.random.normal(keys[1], (tokens, n))
  ref = np.asarray(x, np.float64).T @ np.asarray(dy, np.float64)
  np.testing.assert_allclose(jax.jit(cpu.weight_gradient)(x, dy), ref,
                             atol=2e-5 * np.sqrt(tokens), rtol=1e-5)


def test_kernels_bench_only_selects_cases():
  """`python -m vmae2_jax.bench kernels --only=...` times just the named cases."""
  from vmae2_jax.bench import kernels as kernels_bench
  assert list(kernels_bench._cases("attention fwd")) == ["attention fwd"]
  assert sorted(kernels_bench._cases("wg_qkv,xla_qkv")) == ["wg_qkv 384x1152", "xla_qkv 384x1152"]
  assert len(kernels_bench._cases("")) == 10
  with pytest.raises(SystemExit, match="matches no case"):
    kernels_bench.measure(1, only="no such case")


def test_model_built_for_a_named_platform_has_no_platform_conditional():
  """A model built under building_for("cpu") calls the CPU kernels directly; one built
  with no platform named keeps lax.platform_dependent (an XLA conditional), since it may
  be lowered for TPU too. Conditionals holding sharded collectives deadlocked an 8-device
  CPU train step (issue 19), and the trainer always names its mesh's platform."""
  from vmae2_jax.models.platform import building_for

  x = jax.random.normal(jax.random.key(5), (2, 21, 32))

  def step_hlo(attn):
    gd, st = nnx.split(attn)
    loss = lambda st, x: jnp.sum(jnp.sin(nnx.merge(gd, st)(x)))
    return jax.jit(jax.grad(loss, (0, 1))).lower(st, x).as_text()

  with building_for("cpu"):
    named = Attention(32, 2, opts=ModelOptions(), rngs=nnx.Rngs(0))
  unnamed = Attention(32, 2, opts=ModelOptions(), rngs=nnx.Rngs(0))
  assert named.implementation == unnamed.implementation == "fused_cpu"
  assert "stablehlo.case" not in step_hlo(named)
  assert "stablehlo.case" in step_hlo(unnamed)
