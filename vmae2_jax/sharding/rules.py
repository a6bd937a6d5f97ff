"""Logical axis names -> mesh axes, through one rules table (config.sharding_rules)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# FSDP over the model width inside a slice, tensor parallelism on heads/MLP
# when the "tensor" axis is > 1, stacked layers never split.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("attn_inner", "tensor"),
    ("head_dim", None),
    ("patch", None),
    ("classes", None),
    ("layers", None),
)


def logical_to_spec(axes: Sequence[str | None], rules, shape=None, mesh: Mesh | None = None) -> P:
  """PartitionSpec for logical `axes`.

  A mesh axis is used at most once per array, and (when shape and mesh are
  given) only where it divides the dimension; otherwise that dim stays whole.
  """
  table = dict(rules)
  used: set[str] = set()
  out = []
  for i, name in enumerate(axes):
    target = table.get(name) if name is not None else None
    names = (target,) if isinstance(target, str) else tuple(target or ())
    names = tuple(n for n in names
                  if n not in used and (mesh is None or mesh.shape[n] > 1))
    if names and shape is not None and mesh is not None:
      if shape[i] % math.prod(mesh.shape[n] for n in names):
        names = ()
    used.update(names)
    out.append(None if not names else names[0] if len(names) == 1 else names)
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
