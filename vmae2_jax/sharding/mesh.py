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
    if len(devices) % num_slices:
      raise ValueError(f"config.mesh dcn_* sizes {dcn} do not divide {len(devices)} devices")
    ici = resolve_sizes(mesh_cfg, len(devices) // num_slices)
    dcn_shape = tuple(dcn[a] for a in MESH_AXES)
    try:
      # TPU slices carry slice_index; elsewhere each process is one granule.
      arr = mesh_utils.create_hybrid_device_mesh(
          ici, dcn_shape, devices, process_is_granule=not hasattr(devices[0], "slice_index"))
    except (ValueError, AssertionError, AttributeError):
      arr = _hybrid_row_major(devices, ici, dcn_shape)
  else:
    shape = resolve_sizes(mesh_cfg, len(devices))
    try:
      from jax.experimental import mesh_utils
      arr = mesh_utils.create_device_mesh(shape, devices)
    except Exception:  # CPU / unusual topologies: plain row-major order.
      arr = np.asarray(devices).reshape(shape)
  return Mesh(arr, MESH_AXES)


def _hybrid_row_major(devices, ici, dcn) -> np.ndarray:
  """Granules (processes) in row-major order on the dcn grid, devices inside.

  Used where mesh_utils cannot group devices into granules (e.g. one process
  with fake CPU devices): axis i of the result is dcn[i] blocks of ici[i].
  """
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  arr = np.asarray(devices, dtype=object).reshape(tuple(dcn) + tuple(ici))
  n = len(MESH_AXES)
  arr = arr.transpose([j for i in range(n) for j in (i, n + i)])
  return arr.reshape(tuple(a * b for a, b in zip(dcn, ici)))


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Leading (batch) dim split over data and fsdp; the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
