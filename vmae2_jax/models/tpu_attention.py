"""Softmax attention through the Pallas TPU flash-attention kernel (Mosaic).

jax.experimental.pallas.ops.tpu.flash_attention needs key/value lengths that
are multiples of its key block (a multiple of 128 lanes) and, for its
backward, query lengths that its query blocks divide; the head dim may be
below 128 (ViT-g's 88 and the decoders' 64 run unpadded: the kernel slices
its 128-lane row statistics down to the head dim). This model's lengths (208
visible tokens, 1232 decoder tokens, 1568 fine-tuning tokens) are not such
multiples, so queries and keys are padded to the next multiple of 128 and the
padded keys are masked with segment ids (real tokens 1, padding 0).

The kernel is one opaque custom call to XLA's SPMD partitioner, so on a
multi-device mesh it runs under shard_map: each device attends over its own
batch rows (and heads, when the tensor axis splits them).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from vmae2_jax.sharding.constraints import active_mesh_and_rules
from vmae2_jax.sharding.rules import logical_to_spec

LANES = 128


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _block(n: int) -> int:
  """The largest of 512/256/128 dividing n (n is a multiple of 128)."""
  return next(b for b in (512, 256, LANES) if n % b == 0)


def _flash_local(q, k, v, key_mask, scale: float):
  """[B, Nq, H, hd], [B, Nk, H, hd] x2 -> [B, Nq, H, hd] on one device's rows.

  key_mask [B, Nk] (or None): keys to attend to. The kernel takes it as segment
  ids: real tokens 1, masked and lane padding 0, so a real query reads real
  keys only (masked queries read masked keys; their outputs are not used)."""
  from jax.experimental.pallas.ops.tpu import flash_attention as fa
  b, nq, _, _ = q.shape
  nk = k.shape[1]
  pq, pk = _round_up(nq, LANES), _round_up(nk, LANES)

  def to_kernel(x, n):  # [B, N, H, hd] -> [B, H, N_padded, hd]
    x = jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0)))
    return jnp.swapaxes(x, 1, 2)

  segments = None
  if pq != nq or pk != nk or key_mask is not None:
    ids = lambda n, real: jnp.broadcast_to((jnp.arange(n) < real).astype(jnp.int32), (b, n))
    q_ids, kv_ids = ids(pq, nq), ids(pk, nk)
    if key_mask is not None:  # self-attention: queries and keys are the same tokens
      real = jnp.pad(key_mask.astype(jnp.int32), ((0, 0), (0, pk - nk)))
      kv_ids = kv_ids * real
      q_ids = q_ids * jnp.pad(key_mask[:, nk - nq:].astype(jnp.int32), ((0, 0), (0, pq - nq)))
    segments = fa.SegmentIds(q=q_ids, kv=kv_ids)
  bq, bk = _block(pq), _block(pk)
  sizes = fa.BlockSizes(block_q=bq, block_k_major=bk, block_k=bk, block_b=1,
                        block_q_major_dkv=bq, block_k_major_dkv=bk, block_k_dkv=bk,
                        block_q_dkv=bq, block_k_major_dq=bk, block_k_dq=bk, block_q_dq=bq)
  out = fa.flash_attention(to_kernel(q, pq), to_kernel(k, pk), to_kernel(v, pk),
                           segment_ids=segments, sm_scale=scale, block_sizes=sizes)
  return jnp.swapaxes(out, 1, 2)[:, :nq]


def flash_attention(q, k, v, scale: float, key_mask=None):
  """softmax(scale * q k^T) v with the Pallas TPU kernel, per device on a mesh;
  key_mask [B, Nk] bool restricts the keys (None: all)."""
  fn = functools.partial(_flash_local, scale=scale)
  active = active_mesh_and_rules()
  if active is None or active[0].size == 1:
    return fn(q, k, v, key_mask)
  mesh, rules = active
  spec_q = logical_to_spec(("batch", None, "heads", None), rules, q.shape, mesh)
  spec_k = logical_to_spec(("batch", None, "heads", None), rules, k.shape, mesh)
  if spec_q != spec_k:  # lengths differ only; the same split must divide both
    spec_k = spec_q = P(*(a if a == b else None for a, b in zip(spec_q, spec_k)))
  if key_mask is None:
    return jax.shard_map(lambda q, k, v: fn(q, k, v, None), mesh=mesh,
                         in_specs=(spec_q, spec_k, spec_k), out_specs=spec_q,
                         check_vma=False)(q, k, v)
  spec_m = P(spec_k[0], None)
  return jax.shard_map(fn, mesh=mesh, in_specs=(spec_q, spec_k, spec_k, spec_m),
                       out_specs=spec_q, check_vma=False)(q, k, v, key_mask)
