"""Activation sharding constraints by logical axis name.

Model code calls `constrain(x, ("batch", "length", "embed"))` at block
boundaries. Outside `activation_sharding(mesh, rules)` it returns x
unchanged, so models run the same in tests, conversion and eval without a
mesh; inside (the trainer's step), it pins the activation's layout to what the
rules table says, so XLA's propagation does not pick a layout that gathers the
batch or leaves activations replicated.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Sequence

import jax
from jax.sharding import Mesh, NamedSharding

from vmae2_jax.sharding.rules import logical_to_spec

_ACTIVE = threading.local()


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules) -> Iterator[None]:
  """Within this context (while tracing), `constrain` applies `rules` on `mesh`."""
  prev = getattr(_ACTIVE, "value", None)
  _ACTIVE.value = (mesh, tuple(rules))
  try:
    yield
  finally:
    _ACTIVE.value = prev


def active_mesh_and_rules():
  """(mesh, rules) of the enclosing `activation_sharding`, or None outside one."""
  return getattr(_ACTIVE, "value", None)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """with_sharding_constraint by logical names; a no-op without an active context.

  Dims whose mesh axes do not divide them stay unsplit (same rule as params).
  """
  active: Any = getattr(_ACTIVE, "value", None)
  if active is None:
    return x
  mesh, rules = active
  if mesh.size == 1:
    return x
  spec = logical_to_spec(axes, rules, x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
