"""The ("data", "fsdp", "tensor") device mesh, sized from config."""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def resolve_sizes(sizes: dict, num_devices: int, field: str = "config.mesh") -> tuple[int, ...]:
  """Fills the single -1 so the product equals num_devices; fails naming the field."""
  dims = [int(sizes.get(a, 1)) for a in MESH_AXES]
  fills = [i for i, d in enumerate(dims) if d == -1]
  if len(fills) > 1:
    raise ValueError(f"{field}: at most one axis may be -1, got {dict(zip(MESH_AXES, dims))}")
  known = math.prod(d for d in dims if d != -1)
  if fills:
    if num_devices % known:
      raise ValueError(f"{field}: {num_devices} devices do not divide by {known}")
    dims[fills[0]] = num_devices // known
  if math.prod(dims) != num_devices:
    raise ValueError(
        f"{field}={dict(zip(MESH_AXES, dims))} needs {math.prod(dims)} devices, have {num_devices}")
  return tuple(dims)


def make_mesh(mesh_cfg=None, devices=None) -> Mesh:
  """Mesh over all devices. mesh_cfg holds per-axis sizes (-1 fills).

  Optional `dcn_*` sizes split each axis across slices/hosts (data parallelism
  across slices by default); the in-slice sizes then describe one slice.
  """
  devices = list(devices if devices is not None else jax.devices())
  mesh_cfg = dict(mesh_cfg or {"data": 1, "fsdp": -1, "tensor": 1})
  dcn = {a: int(mesh_cfg.get(f"dcn_{a}", 1)) for a in MESH_AXES}
  num_slices = math.prod(dcn.values())
  if num_slices > 1:
    from jax.experimental import mesh_utils
    ici = resolve_sizes(mesh_cfg, len(devices) // num_slices)
    arr = mesh_utils.create_hybrid_device_mesh(ici, tuple(dcn[a] for a in MESH_AXES), devices)
  else:
    shape = resolve_sizes(mesh_cfg, len(devices))
    try:
      from jax.experimental import mesh_utils
      arr = mesh_utils.create_device_mesh(shape, devices)
    except Exception:  # CPU / unusual topologies: plain row-major order.
      arr = np.asarray(devices).reshape(shape)
  return Mesh(arr, MESH_AXES)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Leading (batch) dim split over data and fsdp; the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
