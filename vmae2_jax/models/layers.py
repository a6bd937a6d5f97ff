"""Transformer building blocks faithful to the reference (pre-norm, q/v bias).

Parameters carry logical axis names in a `logical_axes` metadata field that
vmae2_jax.sharding maps to mesh axes; no mesh axis appears here.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from vmae2_jax.models.options import ModelOptions
from vmae2_jax.models.platform import named_target, per_platform, target_platform
from vmae2_jax.sharding.constraints import constrain

# Logical axes of the [B, N, D] activations between blocks (see sharding rules).
ACTIVATION_AXES = ("batch", "length", "act_embed")

LN_EPS = 1e-6


# ---------------------------------------------------------------- initialisers
def xavier_uniform(key, fan_in: int, fan_out: int, dtype):
  bound = math.sqrt(6.0 / (fan_in + fan_out))
  return jax.random.uniform(key, (fan_in, fan_out), dtype, -bound, bound)


def trunc_normal(key, shape, dtype, std=0.02, bound=2.0):
  """timm's trunc_normal_(std): normal(0, std) cut at absolute +-bound."""
  return jax.random.truncated_normal(key, -bound / std, bound / std, shape, dtype) * std


def torch_default_uniform(key, fan_in: int, shape, dtype):
  """PyTorch's default Linear/Conv init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def param(value, axes: Sequence[str | None]) -> nnx.Param:
  """A parameter annotated with logical axis names (one per dim)."""
  assert value.ndim == len(axes), (value.shape, axes)
  return nnx.Param(value, logical_axes=tuple(axes))


# --------------------------------------------------------------------- layers
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def dense_matmul(x, kernel, cpu_weight_gradient: bool = False, target: str | None = None):
  """x [..., in] @ kernel [in, *out] -> [..., *out] with a hand-written backward.

  Same math as autodiff; what it fixes is the shape of the weight gradient's
  matmul: tokens flattened to one contracting dim and dW^T = dy^T x with the
  output gradient on the left, so the operand a backend transposes is the
  stored activation x. With autodiff's form (x^T dy over the batch and token
  dims) XLA CPU materialises dy^T instead, and dy -- the residual stream's
  running gradient sum -- is recomputed inside each such transpose: about a
  fifth of the ViT-S pre-training step on CPU. Neutral elsewhere.

  cpu_weight_gradient (float32 on CPU) computes x^T dy with the kernel in
  vmae2_jax.kernels instead; the forward and input gradient stay XLA dots,
  which read the kernel straight from the stacked per-layer parameters. target:
  the platform the model was built for (platform.named_target), if one was named.
  """
  return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _dense_matmul_fwd(x, kernel, cpu_weight_gradient, target):
  return dense_matmul(x, kernel, cpu_weight_gradient, target), (x, kernel)


def _dense_matmul_bwd(cpu_weight_gradient, target, res, dy):
  x, kernel = res
  out = tuple(range(x.ndim - 1, dy.ndim))              # output dims of dy
  dx = jax.lax.dot_general(dy, kernel, ((out, tuple(range(1, kernel.ndim))), ((), ())))
  x2 = x.reshape(-1, x.shape[-1])
  dy2 = dy.reshape(-1, math.prod(kernel.shape[1:]))    # tokens flattened
  def xla_weight_gradient(x2, dy2):  # [out, T] @ [T, in], then to [in, *out]
    return jax.lax.dot_general(dy2, x2, (((0,), (0,)), ((), ()))).T
  if cpu_weight_gradient:
    from vmae2_jax.kernels import cpu
    # The kernel exists only in CPU programs (not in one compiled for TPU from here).
    dk = per_platform(x2, dy2, target=target, cpu=cpu.weight_gradient,
                      default=xla_weight_gradient)
  else:
    dk = xla_weight_gradient(x2, dy2)
  return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


class Dense(nnx.Module):
  """y = x @ W + b with the reference's init, kernel stored [in, *out_shape]."""

  def __init__(self, in_features: int, out_shape: int | Sequence[int], *,
               axes: Sequence[str | None], opts: ModelOptions, rngs: nnx.Rngs,
               use_bias: bool = True, init: str | None = None):
    out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
    out_features = int(np.prod(out_shape))
    init = init or opts.init
    key = rngs.params()
    pd = opts.param_dtype
    if init == "pretrain":
      w = xavier_uniform(key, in_features, out_features, pd)
    elif init == "finetune":
      w = trunc_normal(key, (in_features, out_features), pd)
    elif init == "torch_default":
      w = torch_default_uniform(key, in_features, (in_features, out_features), pd)
    else:
      raise ValueError(f"unknown init {init!r}")
    self.kernel = param(w.reshape((in_features,) + out_shape), axes)
    if not use_bias:
      b = None
    elif init == "torch_default":
      b = torch_default_uniform(rngs.params(), in_features, out_shape, pd)
    else:
      b = jnp.zeros(out_shape, pd)
    self.bias = param(b, axes[1:]) if use_bias else None
    self.dtype = opts.dtype
    self.out_rank = len(out_shape)
    self.cpu_kernel = cpu_kernels_enabled(opts)
    self.target = named_target()

  def __call__(self, x):
    k = self.kernel[...].astype(self.dtype)
    on_kernel = False
    if self.cpu_kernel:
      from vmae2_jax.kernels import cpu
      on_kernel = cpu.whole_arrays() and cpu.weight_gradient_preferred()
    y = dense_matmul(x.astype(self.dtype), k, on_kernel, self.target)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class LayerNorm(nnx.Module):
  """LayerNorm (eps 1e-6) computed in float32, output in the compute dtype."""

  def __init__(self, dim: int, *, opts: ModelOptions, axis_name: str = "embed"):
    self.scale = param(jnp.ones((dim,), opts.param_dtype), (axis_name,))
    self.bias = param(jnp.zeros((dim,), opts.param_dtype), (axis_name,))
    self.dtype = opts.dtype

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centred = x32 - mean
    var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
    y = centred * jax.lax.rsqrt(var + LN_EPS)
    y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y.astype(self.dtype)


def cpu_kernels_enabled(opts: ModelOptions) -> bool:
  """Whether this float32 model on the CPU backend may call vmae2_jax.kernels."""
  if not opts.cpu_kernels or target_platform() != "cpu":
    return False
  if jnp.dtype(opts.dtype) != jnp.dtype(jnp.float32):
    return False
  from vmae2_jax.kernels import cpu
  return cpu.available()


def resolved_numerics(opts: ModelOptions) -> dict:
  """What a model built with `opts` runs here: the attention implementation and
  whether the CPU kernels are in use (for logs and benchmark records)."""
  kernels = cpu_kernels_enabled(opts)
  if kernels:
    from vmae2_jax.kernels import cpu
  return {"attention": attention_implementation(opts.attention, opts.dtype, opts.cpu_kernels),
          "cpu_kernels": kernels,
          "weight_gradient": "cpu_kernel" if kernels and cpu.weight_gradient_preferred()
                             else "xla"}


def attention_implementation(name: str, dtype=jnp.bfloat16, cpu_kernels: bool = True) -> str | None:
  """Resolves "auto" for this backend and compute dtype.

  GPU: cuDNN flash attention for bf16/fp16 on compute capability 8.0 or newer
  (it rejects float32, so float32 models such as a converted checkpoint loaded
  for parity checks use XLA; older GPUs such as Colab's T4 have no flash
  attention in cuDNN and use XLA too).
  CPU: the fused kernel of vmae2_jax.kernels for float32 when it builds on
  this machine, else XLA. Models under "auto" still pick per lowering platform
  (Attention._attend): a program compiled for TPU gets the Pallas TPU kernel.
  """
  backend = target_platform()
  if name == "fused_cpu" and backend != "cpu":
    raise ValueError(f"config.model.attention='fused_cpu' needs the CPU backend, not {backend}")
  if name != "auto":
    return name
  low_precision = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  if backend == "gpu" and low_precision and _cuda_capability() >= (8, 0):
    return "cudnn"
  if backend == "tpu":
    return "flash_tpu"
  if cpu_kernels and cpu_kernels_enabled(ModelOptions(dtype=dtype)):
    return "fused_cpu"
  return "xla"


def _cuda_capability() -> tuple[int, int]:
  """The first GPU's compute capability, (0, 0) when unknown."""
  try:
    return tuple(int(x) for x in str(jax.devices()[0].compute_capability).split(".")[:2])
  except (AttributeError, ValueError):
    return (0, 0)


def _attention_fwd(q, k, v):
  f32 = jnp.float32
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=f32)
  e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  inv = 1.0 / jnp.sum(e, axis=-1)  # [B, H, Nq]
  e = e.astype(v.dtype)
  # Normalise after the PV product: N*hd multiplies instead of N^2.
  out = jnp.einsum("bhqk,bkhd->bqhd", e, v, preferred_element_type=f32)
  out = (out * jnp.swapaxes(inv, 1, 2)[..., None]).astype(q.dtype)
  return out, (q, k, v, e, inv, out)


def _attention_bwd(res, d_out):
  q, k, v, e, inv, out = res
  f32 = jnp.float32
  d_scaled = d_out.astype(f32) * jnp.swapaxes(inv, 1, 2)[..., None]  # dO / rowsum
  # rowsum(P * dP) = rowsum(dO * O): an N*hd reduction instead of an N^2 one.
  delta = jnp.einsum("bqhd,bqhd->bhq", d_scaled, out.astype(f32))
  d_scaled = d_scaled.astype(v.dtype)
  dv = jnp.einsum("bhqk,bqhd->bkhd", e, d_scaled, preferred_element_type=f32)
  dp = jnp.einsum("bqhd,bkhd->bhqk", d_scaled, v, preferred_element_type=f32)
  ds = (e.astype(f32) * (dp - delta[..., None])).astype(q.dtype)
  dq = jnp.einsum("bhqk,bkhd->bqhd", ds, k, preferred_element_type=f32)
  dk = jnp.einsum("bhqk,bqhd->bkhd", ds, q, preferred_element_type=f32)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


@jax.custom_vjp
def softmax_attention(q, k, v):
  """softmax(q k^T) v for [B, N, H, hd] inputs, q already scaled; fp32 softmax.

  The same math as jax.nn.dot_product_attention's XLA path with a
  hand-written backward (flash-attention style): it keeps the unnormalised
  exp(logits) and the row sums and uses rowsum(dO * O) for the softmax
  gradient, which saves full passes over the N^2 score matrix, the dominant
  non-matmul cost of the decoder (~1000-1600 tokens) on every backend.
  """
  return _attention_fwd(q, k, v)[0]


softmax_attention.defvjp(_attention_fwd, _attention_bwd)


def masked_softmax_attention(q, k, v, key_mask):
  """softmax(q k^T) v over the keys where key_mask [B, Nk] holds; q already scaled.

  Masked keys get -inf logits (fp32 softmax), so they carry exactly zero
  weight: a query's output is what it would be without those keys at all.
  """
  f32 = jnp.float32
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=f32)
  logits = jnp.where(key_mask[:, None, None, :], logits, -jnp.inf)
  p = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", p, v, preferred_element_type=f32).astype(q.dtype)


class Attention(nnx.Module):
  """Fused qkv without bias plus q_bias and v_bias (no key bias), as the reference."""

  def __init__(self, dim: int, heads: int, *, opts: ModelOptions, rngs: nnx.Rngs,
               head_dim: int | None = None):
    head_dim = head_dim or dim // heads
    self.heads, self.head_dim = heads, head_dim
    inner = heads * head_dim
    # Kernel [D, 3, H, hd]: same init as the reference's [3*inner, D] weight,
    # stored so that tensor parallelism splits whole heads.
    self.qkv = Dense(dim, (3, heads, head_dim), axes=("embed", None, "heads", "head_dim"),
                     opts=opts, rngs=rngs, use_bias=False)
    self.q_bias = param(jnp.zeros((heads, head_dim), opts.param_dtype), ("heads", "head_dim"))
    self.v_bias = param(jnp.zeros((heads, head_dim), opts.param_dtype), ("heads", "head_dim"))
    self.proj = Dense(inner, dim, axes=("attn_inner", "embed"), opts=opts, rngs=rngs)
    self.scale = head_dim ** -0.5
    self.implementation = attention_implementation(opts.attention, opts.dtype, opts.cpu_kernels)
    self.requested = opts.attention
    self.target = named_target()
    self.dtype = opts.dtype

  def __call__(self, x, num_queries: int | None = None, key_mask=None):
    """Self-attention over x [B, N, D]; with num_queries, outputs only the last that
    many tokens (they still attend to all N). key_mask [B, N] bool: keys that may
    be attended to (a padded frame's real tokens); None attends to all."""
    qkv = checkpoint_name(self.qkv(x), "qkv")  # [B, N, 3, H, hd]
    if key_mask is not None:
      out = self._attend_masked(qkv, num_queries, key_mask)
    else:
      out = self._attend(qkv, num_queries)
    b, n = out.shape[:2]
    out = checkpoint_name(out.reshape(b, n, self.heads * self.head_dim), "attn_out")
    return checkpoint_name(self.proj(out), "attn_proj")

  def _attend(self, qkv, num_queries):
    if self.implementation in ("cudnn", "flash_tpu") or self.requested != "auto":
      return self._attend_with(self.implementation, qkv, num_queries)
    # "auto" picks for the platform named at build time, else per lowering platform
    # (not per host backend): a program compiled here for TPU devices (ahead of
    # time, from a CPU host) gets the Pallas TPU kernel, only a CPU program the CPU ones.
    return per_platform(
        qkv, target=self.target,
        tpu=functools.partial(self._attend_with, "flash_tpu", num_queries=num_queries),
        default=functools.partial(self._attend_with, self.implementation,
                                  num_queries=num_queries))

  def _attend_masked(self, qkv, num_queries, key_mask):
    """Masked keys: the Pallas kernel with segment ids in TPU programs, XLA elsewhere
    (the CPU kernels and cuDNN path here take no mask)."""
    q_bias = self.q_bias[...].astype(self.dtype)
    v_bias = self.v_bias[...].astype(self.dtype)
    q = (qkv[:, -num_queries:, 0] if num_queries else qkv[:, :, 0]) + q_bias
    k, v = qkv[:, :, 1], qkv[:, :, 2] + v_bias

    def xla(q, k, v, key_mask):
      return masked_softmax_attention(q * jnp.asarray(self.scale, q.dtype), k, v, key_mask)

    def tpu(q, k, v, key_mask):
      from vmae2_jax.models import tpu_attention
      return tpu_attention.flash_attention(q, k, v, self.scale, key_mask=key_mask)

    if self.implementation == "flash_tpu":
      return tpu(q, k, v, key_mask)
    if self.requested != "auto":
      return xla(q, k, v, key_mask)
    return per_platform(q, k, v, key_mask, target=self.target, tpu=tpu, default=xla)

  def _attend_with(self, implementation, qkv, num_queries):
    q_bias = self.q_bias[...].astype(self.dtype)
    v_bias = self.v_bias[...].astype(self.dtype)
    if implementation == "fused_cpu":
      from vmae2_jax.kernels import cpu
      if cpu.whole_arrays():  # biases and scale applied while packing: no q/k/v copies
        return cpu.qkv_attention(qkv, q_bias, v_bias, self.scale, num_queries)
    q = (qkv[:, -num_queries:, 0] if num_queries else qkv[:, :, 0]) + q_bias
    k, v = qkv[:, :, 1], qkv[:, :, 2] + v_bias
    if implementation == "flash_tpu":
      from vmae2_jax.models import tpu_attention
      return tpu_attention.flash_attention(q, k, v, self.scale)
    if implementation not in ("xla", "fused_cpu"):
      return jax.nn.dot_product_attention(q, k, v, scale=self.scale,
                                          implementation=implementation)
    # The scale goes into q (N*hd multiplies instead of N^2 on the logits).
    q = q * jnp.asarray(self.scale, q.dtype)
    if implementation == "fused_cpu":  # per shard on a multi-device mesh
      from vmae2_jax.kernels import cpu
      return cpu.attention(q, k, v)
    return softmax_attention(q, k, v)


def _gelu_cdf(x):
  return 0.5 + 0.5 * jax.lax.erf(x * (1 / math.sqrt(2)))


@jax.custom_vjp
def gelu_exact(x):
  """Exact (erf) GELU, x * Phi(x), as torch's nn.GELU() in the reference.

  Same values as jax.nn.gelu(approximate=False). The backward keeps only x
  and recomputes Phi(x) + x * phi(x) in one pass with the incoming gradient:
  with autodiff's residuals XLA wrote erf(x) out as an extra [tokens, mlp]
  array in the forward and read it back twice.
  """
  return x * _gelu_cdf(x)


def _gelu_exact_fwd(x):
  return gelu_exact(x), x


def _gelu_exact_bwd(x, dy):
  pdf = jnp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
  return (dy * (_gelu_cdf(x) + x * pdf),)


gelu_exact.defvjp(_gelu_exact_fwd, _gelu_exact_bwd)


class Mlp(nnx.Module):

  def __init__(self, dim: int, hidden: int, *, opts: ModelOptions, rngs: nnx.Rngs):
    self.fc1 = Dense(dim, hidden, axes=("embed", "mlp"), opts=opts, rngs=rngs)
    self.fc2 = Dense(hidden, dim, axes=("mlp", "embed"), opts=opts, rngs=rngs)

  def __call__(self, x):
    h = gelu_exact(checkpoint_name(self.fc1(x), "fc1"))
    return self.fc2(checkpoint_name(h, "mlp_act"))


def drop_path(x, rate, key, deterministic: bool):
  """Stochastic depth: drop the whole residual branch per sample."""
  if deterministic or key is None:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / jnp.maximum(keep, 1e-12).astype(x.dtype), 0).astype(x.dtype)


class Block(nnx.Module):
  """x += DropPath(Attn(LN(x))); x += DropPath(MLP(LN(x)))."""

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, opts: ModelOptions,
               rngs: nnx.Rngs):
    self.norm1 = LayerNorm(dim, opts=opts)
    self.attn = Attention(dim, heads, opts=opts, rngs=rngs)
    self.norm2 = LayerNorm(dim, opts=opts)
    self.mlp = Mlp(dim, mlp_dim, opts=opts, rngs=rngs)

  def __call__(self, x, *, drop_rate=0.0, key=None, deterministic=True,
               num_outputs: int | None = None, key_mask=None):
    """num_outputs: compute only the last that many tokens' outputs (keys/values use all);
    key_mask [B, N]: the tokens attention may read (None: all)."""
    k1 = k2 = None
    if key is not None:
      k1, k2 = jax.random.split(key)
    attn = self.attn(self.norm1(x), num_outputs, key_mask=key_mask)
    if num_outputs:
      x = x[:, -num_outputs:]
    x = x + drop_path(attn, drop_rate, k1, deterministic)
    x = x + drop_path(self.mlp(self.norm2(x)), drop_rate, k2, deterministic)
    return x


class BlockStack(nnx.Module):
  """`depth` blocks with parameters stacked on a leading "layers" axis.

  One layout for both execution modes: `scan_layers` compiles one block inside
  a loop (flat compile time); otherwise the loop is fully unrolled. Remat
  wraps each block with the configured policy.
  """

  def __init__(self, depth: int, dim: int, heads: int, mlp_dim: int, *,
               opts: ModelOptions, rngs: nnx.Rngs, drop_path_rate: float = 0.0):
    @nnx.split_rngs(splits=depth)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(r):
      return Block(dim, heads, mlp_dim, opts=opts, rngs=r)

    self.layers = make(rngs)
    self.depth = depth
    self.drop_rates = tuple(float(r) for r in np.linspace(0.0, drop_path_rate, depth))
    self.opts = opts

  def __call__(self, x, *, key=None, deterministic=True, num_outputs: int | None = None,
               key_mask=None):
    """Runs the blocks; num_outputs keeps only the last that many tokens; key_mask
    [B, N] hides tokens from attention in every block (a padded frame's padding).

    With num_outputs the last block computes queries, projection and MLP for
    those tokens alone (its keys and values still come from every token): the
    pre-training decoder's head reads only the target tokens, so the rest of
    that block's rows would be thrown away. Same numbers, less work.
    """
    from vmae2_jax.models.options import REMAT_POLICIES
    graphdef, state = nnx.split(self.layers)
    use_drop = (key is not None) and (not deterministic) and max(self.drop_rates) > 0
    keys = jax.random.split(key, self.depth) if use_drop else None
    rates = jnp.asarray(self.drop_rates, jnp.float32)
    policy = REMAT_POLICIES[self.opts.remat]

    def block_fn(n_out, in_scan: bool):
      def body(h, xs):
        layer_state, layer_key, rate = xs
        block = nnx.merge(graphdef, layer_state)
        h = block(h, drop_rate=rate, key=layer_key, deterministic=not use_drop,
                  num_outputs=n_out, key_mask=key_mask)
        return constrain(h, ACTIVATION_AXES), None
      if self.opts.remat != "none":
        # Inside a scan the loop already keeps XLA from merging the recomputation with
        # the forward (prevent_cse would only cost); a block called outside the loop
        # (the trimmed last block) needs it, or its activations live until the backward.
        body = jax.checkpoint(body, policy=policy,
                              prevent_cse=not (self.opts.scan_layers and in_scan))
      return body

    xs = (state, keys, rates)
    n_scan = self.depth - 1 if num_outputs else self.depth
    x = constrain(x, ACTIVATION_AXES)
    if n_scan:
      head = jax.tree.map(lambda a: a[:n_scan], xs) if n_scan < self.depth else xs
      unroll = 1 if self.opts.scan_layers else n_scan
      x, _ = jax.lax.scan(block_fn(None, in_scan=True), x, head, unroll=unroll)
    if num_outputs:
      x, _ = block_fn(num_outputs, in_scan=False)(x, jax.tree.map(lambda a: a[-1], xs))
    return x
