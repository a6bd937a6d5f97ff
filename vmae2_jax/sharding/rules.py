"""Logical axis names -> mesh axes, through one rules table (config.sharding_rules)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# FSDP over the model width inside a slice, tensor parallelism on heads/MLP
# when the "tensor" axis is > 1, stacked layers never split. A name listed
# twice has a fallback (see logical_to_spec).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("attn_inner", "tensor"),
    # Second choices: 1-D MLP/attention biases have no "embed" dim; without
    # these they would stay whole on every device under pure FSDP.
    ("mlp", "fsdp"),
    ("head_dim", "fsdp"),
    ("patch", None),
    ("classes", None),
    ("layers", None),
    # Activations between blocks: batch split as the data, tokens and width whole.
    ("length", None),
    ("act_embed", None),
)


def rules_from_config(config) -> tuple[tuple[str, Any], ...]:
  """config.sharding_rules as a tuple table; None/empty means DEFAULT_RULES."""
  rules = config.sharding_rules
  if not rules:
    return DEFAULT_RULES
  out = []
  for name, target in rules:
    target = tuple(target) if isinstance(target, (list, tuple)) else target
    out.append((str(name), target))
  return tuple(out)


def logical_to_spec(axes: Sequence[str | None], rules, shape=None, mesh: Mesh | None = None) -> P:
  """PartitionSpec for logical `axes`.

  A logical name may have several rules; they are tried in table order, all
  dims' first choices before any dim's second, so a fallback never takes a
  mesh axis that another dim's first choice wants. A mesh axis is used at
  most once per array, size-1 mesh axes are dropped, and (when shape and mesh
  are given) a choice must divide the dimension; a dim with no usable choice
  stays whole.
  """
  choices: dict[str, list[tuple[str, ...]]] = {}
  for name, target in rules:
    choices.setdefault(name, []).append(
        (target,) if isinstance(target, str) else tuple(target or ()))
  used: set[str] = set()
  out: list = [None] * len(axes)
  done = [name is None or name not in choices for name in axes]
  for rank in range(max((len(v) for v in choices.values()), default=0)):
    for i, name in enumerate(axes):
      if done[i] or rank >= len(choices[name]):
        continue
      names = tuple(n for n in choices[name][rank]
                    if n not in used and (mesh is None or mesh.shape[n] > 1))
      if not names:
        continue
      if shape is not None and mesh is not None and shape[i] % math.prod(
          mesh.shape[n] for n in names):
        continue
      used.update(names)
      done[i] = True
      out[i] = names[0] if len(names) == 1 else names
  return P(*out)


def logical_axes_tree(abstract_model: nnx.Module) -> dict:
  """Pure dict (same structure as the params) of each parameter's logical axes.

  Parameters of stacked blocks have one more leading dim than their
  annotation; it is the "layers" axis.
  """
  state = nnx.state(abstract_model, nnx.Param)

  def axes_of(var):
    axes = tuple(var.get_metadata().get("logical_axes") or ())
    extra = var.get_value().ndim - len(axes) if hasattr(var, "get_value") else 0
    return ("layers",) * extra + axes

  mapped = jax.tree.map(axes_of, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return _to_pure(mapped)


def _to_pure(state) -> dict:
  if hasattr(state, "items"):
    return {k: _to_pure(v) for k, v in state.items()}
  return state


def tree_shardings(abstract_params: dict, axes_tree: dict, mesh: Mesh, rules) -> dict:
  """NamedSharding for every parameter from its logical axes."""
  def one(x, axes):
    return NamedSharding(mesh, logical_to_spec(axes, rules, x.shape, mesh))
  return jax.tree.map(one, abstract_params, axes_tree,
                      is_leaf=lambda x: isinstance(x, tuple) and all(
                          isinstance(a, (str, type(None))) for a in x))


def layout_summary(abstract_tree, shardings) -> dict:
  """Bytes of `abstract_tree` in whole and per device, and the leaves left whole.

  `unsplit` lists (path, bytes) of leaves every device holds in full on a
  mesh of more than one device: a dim the rules wanted split but that the
  mesh size does not divide ends up here (e.g. width 1408 over 256 devices).
  """
  whole = per_device = 0
  unsplit = []
  flat_sh = jax.tree.leaves(shardings)
  for (path, x), sh in zip(jax.tree_util.tree_flatten_with_path(abstract_tree)[0], flat_sh):
    n = math.prod(x.shape) * x.dtype.itemsize
    whole += n
    per_device += math.prod(sh.shard_shape(x.shape)) * x.dtype.itemsize
    if sh.is_fully_replicated and sh.mesh.size > 1 and x.ndim:
      unsplit.append(("/".join(_key(k) for k in path), n))
  return {"whole": whole, "per_device": per_device, "unsplit": unsplit}


def match_shardings_by_path(abstract_tree, param_shardings: dict, mesh: Mesh):
  """Shardings for a tree holding copies of the params (e.g. Adam moments).

  A leaf whose key path ends with a parameter's path and has that parameter's
  shape gets its sharding; anything else (step counters) is replicated.
  """
  flat = {}
  for path, sh in jax.tree_util.tree_flatten_with_path(param_shardings)[0]:
    flat[tuple(_key(k) for k in path)] = sh
  depth = max((len(p) for p in flat), default=0)

  def one(path, leaf):
    keys = tuple(_key(k) for k in path)
    for n in range(min(depth, len(keys)), 0, -1):
      sh = flat.get(keys[-n:])
      if sh is not None and len(sh.spec) <= len(getattr(leaf, "shape", ())):
        return sh
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(one, abstract_tree)


def _key(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)
