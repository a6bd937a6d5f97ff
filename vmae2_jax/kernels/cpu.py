"""CPU kernels through the XLA FFI: fused softmax attention and a dense matmul.

Why they exist: XLA:CPU has no fused attention. Its softmax attention streams
the [H, N, N] score matrix through memory several times per pass, so the
~1,600-token pre-training decoder ran at half the speed of PyTorch's fused
CPU kernel. cpu_kernels.cc keeps a block of score rows in cache from logits
to output (forward: o and the row log-sum-exp; backward: the scores are
recomputed per key block). The same file's matmul computes the dense layers'
weight gradients x^T dy: XLA's matmul for that contraction over all tokens
ran at about 60% of its forward rate on CPU. Same math and float32 rounding as the XLA
paths they replace (`softmax_attention`, `dense_matmul`).

The library is compiled on first use (vmae2_jax.kernels.build); without a
C++ compiler `available()` is False and models use XLA. VMAE2_JAX_CPU_KERNELS=0
turns them off for "auto".
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vmae2_jax.kernels.build import KernelBuildError, build_library

_SOURCE = Path(__file__).with_name("cpu_kernels.cc")
_TARGETS = {
    "vmae2_cpu_attention_fwd": "Vmae2CpuAttentionForward",
    "vmae2_cpu_attention_bwd": "Vmae2CpuAttentionBackward",
    "vmae2_cpu_qkv_attention_fwd": "Vmae2CpuQkvAttentionForward",
    "vmae2_cpu_qkv_attention_bwd": "Vmae2CpuQkvAttentionBackward",
    "vmae2_cpu_weight_gradient": "Vmae2CpuWeightGradient",
}
_F32 = jnp.float32


@functools.lru_cache(maxsize=None)
def load() -> ctypes.CDLL:
  """Builds (or finds) the library and registers its FFI targets; raises KernelBuildError."""
  path = build_library(_SOURCE, jax.ffi.include_dir(), "cpu_kernels")
  try:
    lib = ctypes.cdll.LoadLibrary(str(path))
  except OSError as e:
    raise KernelBuildError(f"cannot load {path}: {e}") from e
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  return lib


@functools.lru_cache(maxsize=None)
def weight_gradient_preferred() -> bool:
  """Whether dense layers should compute x^T dy with `weight_gradient` here.

  Chosen per ISA when the library is built (cpu_kernels.cc, VMAE2_WG_KERNEL):
  yes with AVX-512, where it beats XLA's dot; no with AVX2 only (Zen 3), where
  XLA's dot is faster. VMAE2_JAX_CPU_WEIGHT_GRADIENT=1 / 0 overrides (A/B runs).
  """
  env = os.environ.get("VMAE2_JAX_CPU_WEIGHT_GRADIENT", "")
  if env in ("0", "1"):
    return env == "1"
  return available() and bool(load().vmae2_weight_gradient_preferred())


@functools.lru_cache(maxsize=None)
def available() -> bool:
  """True when the kernels are enabled, the backend is CPU and the library loads."""
  if os.environ.get("VMAE2_JAX_CPU_KERNELS", "1") == "0" or jax.default_backend() != "cpu":
    return False
  try:
    load()
    return True
  except KernelBuildError as e:
    logging.warning("CPU kernels unavailable, using XLA: %s", e)
    return False


def _multi_device_mesh():
  """(mesh, rules) while tracing inside the trainer's sharding context on >1 device."""
  from vmae2_jax.sharding.constraints import active_mesh_and_rules
  active = active_mesh_and_rules()
  return active if active is not None and active[0].size > 1 else None


# ------------------------------------------------------------------ attention
def _attention_forward_call(q, k, v):
  lse_shape = q.shape[:-3] + (q.shape[-2], q.shape[-3])  # [..., H, Nq]
  return jax.ffi.ffi_call("vmae2_cpu_attention_fwd",
                          (jax.ShapeDtypeStruct(q.shape, _F32),
                           jax.ShapeDtypeStruct(lse_shape, _F32)),
                          vmap_method="broadcast_all")(q, k, v)


@jax.custom_vjp
def _attention(q, k, v):
  return _attention_forward_call(q, k, v)[0]


def _attention_fwd(q, k, v):
  out, lse = _attention_forward_call(q, k, v)
  return out, (q, k, v, out, lse)


def _attention_bwd(res, d_out):
  shapes = tuple(jax.ShapeDtypeStruct(x.shape, _F32) for x in res[:3])
  return jax.ffi.ffi_call("vmae2_cpu_attention_bwd", shapes,
                          vmap_method="broadcast_all")(*res, d_out)


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(q, k, v):
  """softmax(q k^T) v for [..., N, H, hd] inputs, q already scaled; float32 inside.

  Under the trainer's activation-sharding context on a multi-device mesh it
  runs per shard (batch and heads split as the rules say): XLA cannot
  partition a custom call by itself.
  """
  load()
  dtype = q.dtype
  q, k, v = (x.astype(_F32) for x in (q, k, v))
  fn = _attention
  active = _multi_device_mesh()
  if active is not None and q.ndim == 4:
    from vmae2_jax.sharding.rules import logical_to_spec
    mesh, rules = active
    spec = logical_to_spec(("batch", None, "heads", None), rules, q.shape, mesh)
    fn = jax.shard_map(_attention, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec,
                       check_vma=False)
  return fn(q, k, v).astype(dtype)


def _qkv_forward_call(qkv, q_bias, v_bias, scale, num_queries):
  lead, n_q, heads, hd = qkv.shape[:-4], num_queries, qkv.shape[-2], qkv.shape[-1]
  return jax.ffi.ffi_call("vmae2_cpu_qkv_attention_fwd",
                          (jax.ShapeDtypeStruct(lead + (n_q, heads, hd), _F32),
                           jax.ShapeDtypeStruct(lead + (heads, n_q), _F32)),
                          vmap_method="sequential")(  # the [H, hd] biases have no batch dim
                               qkv, q_bias, v_bias, scale=np.float32(scale),
                               num_queries=np.int64(num_queries))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _qkv_attention(qkv, q_bias, v_bias, scale, num_queries):
  return _qkv_forward_call(qkv, q_bias, v_bias, scale, num_queries)[0]


def _qkv_attention_fwd(qkv, q_bias, v_bias, scale, num_queries):
  out, lse = _qkv_forward_call(qkv, q_bias, v_bias, scale, num_queries)
  return out, (qkv, q_bias, v_bias, out, lse)


def _qkv_attention_bwd(scale, num_queries, res, d_out):
  qkv, q_bias, v_bias, out, lse = res
  d_qkv = jax.ffi.ffi_call("vmae2_cpu_qkv_attention_bwd", jax.ShapeDtypeStruct(qkv.shape, _F32),
                           vmap_method="sequential")(
      qkv, q_bias, v_bias, out, lse, d_out, scale=np.float32(scale),
      num_queries=np.int64(num_queries))
  tokens = tuple(range(qkv.ndim - 3))  # batch and length
  return d_qkv, jnp.sum(d_qkv[..., 0, :, :], tokens), jnp.sum(d_qkv[..., 2, :, :], tokens)


_qkv_attention.defvjp(_qkv_attention_fwd, _qkv_attention_bwd)


def qkv_attention(qkv, q_bias, v_bias, scale: float, num_queries: int | None = None):
  """Attention straight from the fused projection qkv [B, N, 3, H, hd].

  q = (qkv[:, :, 0] + q_bias) * scale, k = qkv[:, :, 1], v = qkv[:, :, 2] + v_bias
  (the reference's q/v biases); the kernel applies biases and scale while it
  packs each head, so q, k and v are never copied out of qkv, and the
  backward writes one [B, N, 3, H, hd] gradient. With num_queries only the
  last that many tokens are queries. Returns [B, num_queries or N, H, hd].
  Single-device only (see `whole_arrays`); `attention` is the general form.
  """
  load()
  dtype = qkv.dtype
  n = qkv.shape[-4] if num_queries is None else num_queries
  out = _qkv_attention(qkv.astype(_F32), q_bias.astype(_F32), v_bias.astype(_F32),
                       float(scale), int(n))
  return out.astype(dtype)


def whole_arrays() -> bool:
  """False while tracing inside a multi-device sharding context.

  There XLA's SPMD partitioner must see ordinary ops to split them: the
  models then use `attention` per shard and XLA dots for dense layers.
  """
  return _multi_device_mesh() is None


# ---------------------------------------------------------- weight gradient
def weight_gradient(x, dy):
  """x^T dy for x [T, in] and dy [T, out] in float32: a dense layer's weight gradient.

  The contraction over all tokens is the matmul XLA:CPU runs at ~60% of its
  forward rate; `layers.dense_matmul` sends it here on CPU.
  """
  load()
  return jax.ffi.ffi_call("vmae2_cpu_weight_gradient",
                          jax.ShapeDtypeStruct((x.shape[1], dy.shape[1]), _F32))(x, dy)
