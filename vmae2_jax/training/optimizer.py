"""AdamW with the reference's weight-decay groups, layer-wise lr decay and clipping, from optax pieces."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _name(key) -> str:
  return str(getattr(key, "key", getattr(key, "name", key)))


def decay_mask(params):
  """Weight decay on matmul/conv kernels only.

  The reference exempts 1-D tensors, biases, norm scales, q_bias/v_bias,
  position tables and mask_token; in this layout those are exactly the
  leaves not named "kernel" (position tables are not parameters at all).
  """
  return jax.tree_util.tree_map_with_path(lambda path, _: _name(path[-1]) == "kernel", params)


def layer_id(path: tuple[str, ...], depth: int) -> int | None:
  """The reference's get_num_layer_for_vit for one of our parameter paths.

  patch embedding (and mask_token) = 0, every block = its index + 1 (None
  here: the stacked "layers" axis carries ids 1..depth), everything else
  (fc_norm, head, a final norm) = depth + 1.
  """
  if path[:2] == ("encoder", "patch_embed") or path[-1:] == ("mask_token",):
    return 0
  if path[:3] == ("encoder", "blocks", "layers"):
    return None
  return depth + 1


def layer_scales(params, depth: int, decay: float):
  """Tree of lr multipliers decay^(depth + 1 - layer_id), broadcastable to each leaf.

  Stacked block leaves [depth, ...] get a [depth, 1, ...] array of the
  per-block scales; other leaves a scalar.
  """
  blocks = decay ** (depth + 1 - np.arange(1, depth + 1, dtype=np.float64))

  def one(path, leaf):
    names = tuple(_name(k) for k in path)
    lid = layer_id(names, depth)
    if lid is None:
      return blocks.astype(np.float32).reshape((depth,) + (1,) * (np.ndim(leaf) - 1))
    return np.float32(decay ** (depth + 1 - lid))

  return jax.tree_util.tree_map_with_path(one, params)


def scale_by_layer(scales) -> optax.GradientTransformation:
  """Multiplies each update by its layer's lr scale (after the lr, so it also scales
  the decoupled weight decay, as torch's per-group lr does)."""
  def scale(updates, params=None):
    del params
    return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales)
  return optax.stateless(scale)


def make_optimizer(config, schedule: Callable, params=None, depth: int = 0
                   ) -> optax.GradientTransformation:
  """clip -> AdamW (decay on kernels) -> layer-wise lr decay, per config.optim.

  params (a tree of arrays or shapes) and depth (encoder blocks) are needed
  only for layer decay (config.optim.layer_decay < 1).
  """
  o = config.optim
  parts = []
  if o.clip_grad:
    parts.append(optax.clip_by_global_norm(o.clip_grad))
  mu_dtype = o.mu_dtype or None
  if not o.nu_dtype:
    parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps,
                             weight_decay=o.weight_decay, mask=decay_mask, mu_dtype=mu_dtype))
  else:
    # optax.adamw has no nu_dtype: the same chain adamw builds, with the
    # second moment stored in nu_dtype (same state tree as adamw's).
    parts.append(optax.chain(
        _nu_stored_as(optax.scale_by_adam(o.b1, o.b2, o.eps, mu_dtype=mu_dtype),
                      jnp.dtype(o.nu_dtype)),
        optax.add_decayed_weights(o.weight_decay, decay_mask),
        optax.scale_by_learning_rate(schedule)))
  if o.layer_decay < 1.0:
    if params is None or depth < 1:
      raise ValueError("layer decay needs the parameter tree and the encoder depth")
    parts.append(scale_by_layer(layer_scales(params, depth, o.layer_decay)))
  return optax.chain(*parts)


def describe(config, params, depth: int) -> str:
  """One log line: the AdamW settings and how many tensors decay, layer scales, clipping."""
  o = config.optim
  mask = jax.tree.leaves(decay_mask(params))
  text = (f"AdamW ({o.b1}, {o.b2}) eps {o.eps:g}, weight decay {o.weight_decay:g} on "
          f"{sum(mask)} of {len(mask)} tensors (kernels)")
  if o.layer_decay < 1.0:
    text += (f", layer decay {o.layer_decay:g} (patch embedding x{o.layer_decay ** (depth + 1):.3g}"
             f" ... head x1)")
  if o.clip_grad:
    text += f", clip grad norm {o.clip_grad:g}"
  if o.accum_steps > 1:
    text += f", {o.accum_steps} accumulated micro-batches per update"
  return text


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
