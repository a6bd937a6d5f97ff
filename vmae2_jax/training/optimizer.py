"""AdamW with the reference's weight-decay exclusions, clipping and lr scaling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from vmae2_jax.training.schedules import warmup_cosine


def decay_mask(params):
  """Weight decay on matmul/conv kernels only.

  The reference exempts 1-D tensors, biases, q_bias/v_bias, position tables
  and mask_token; in this layout those are exactly the leaves not named
  "kernel" (position tables are not parameters at all).
  """
  def is_kernel(path, _):
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", str(last)))
    return name == "kernel"
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def scaled_lrs(config) -> tuple[float, float]:
  """(peak lr, min lr) scaled by the global video batch / 256 (views not counted)."""
  scale = config.batch_size / 256.0
  return config.optim.base_lr * scale, config.optim.min_lr * scale


def make_schedule(config, total_steps: int, warmup_steps: int):
  lr, min_lr = scaled_lrs(config)
  return warmup_cosine(lr, min_lr, warmup_steps, total_steps)


def make_optimizer(config, schedule) -> optax.GradientTransformation:
  o = config.optim
  parts = []
  if o.get("clip_grad", 0.0):
    parts.append(optax.clip_by_global_norm(o.clip_grad))
  mu_dtype = o.get("mu_dtype", None) or None
  nu_dtype = o.get("nu_dtype", None) or None
  if nu_dtype is None:
    parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps,
                             weight_decay=o.weight_decay, mask=decay_mask, mu_dtype=mu_dtype))
  else:
    # optax.adamw has no nu_dtype: the same chain adamw builds, with the
    # second moment stored in nu_dtype (same state tree as adamw's).
    parts.append(optax.chain(
        _nu_stored_as(optax.scale_by_adam(o.b1, o.b2, o.eps, mu_dtype=mu_dtype),
                      jnp.dtype(nu_dtype)),
        optax.add_decayed_weights(o.weight_decay, decay_mask),
        optax.scale_by_learning_rate(schedule)))
  return optax.chain(*parts)


def _nu_stored_as(adam: optax.GradientTransformation, dtype) -> optax.GradientTransformation:
  """Keeps Adam's second moment in `dtype` between steps; updates in float32."""
  def cast(state, to):
    return state._replace(nu=jax.tree.map(lambda v: v.astype(to), state.nu))

  def init(params):
    return cast(adam.init(params), dtype)

  def update(updates, state, params=None):
    updates, new = adam.update(updates, cast(state, jnp.float32), params)
    return updates, cast(new, dtype)

  return optax.GradientTransformation(init, update)
