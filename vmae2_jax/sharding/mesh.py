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
  across slices by default); the in-slice sizes then describe one slice, and each
  slice's devices are laid out as a single slice of that shape would be.
  """
  devices = list(devices if devices is not None else jax.devices())
  mesh_cfg = dict(mesh_cfg or {"data": 1, "fsdp": -1, "tensor": 1})
  dcn = tuple(int(mesh_cfg.get(f"dcn_{a}", 1)) for a in MESH_AXES)
  num_slices = math.prod(dcn)
  if num_slices == 1:
    return Mesh(_slice_grid(resolve_sizes(mesh_cfg, len(devices)), devices), MESH_AXES)
  if len(devices) % num_slices:
    raise ValueError(f"config.mesh dcn_* sizes {dict(zip(MESH_AXES, dcn))} do not divide "
                     f"{len(devices)} devices")
  ici = resolve_sizes(mesh_cfg, len(devices) // num_slices)
  grids = [_slice_grid(ici, g) for g in _granules(devices, num_slices)]
  # axis i of the result: dcn[i] blocks of ici[i] (slices outermost on each axis)
  arr = np.empty(dcn + ici, dtype=object)
  for k, grid in enumerate(grids):
    arr[np.unravel_index(k, dcn)] = grid
  n = len(MESH_AXES)
  arr = arr.transpose([j for i in range(n) for j in (i, n + i)])
  return Mesh(arr.reshape(tuple(a * b for a, b in zip(dcn, ici))), MESH_AXES)


def _slice_grid(shape: tuple[int, ...], devices) -> np.ndarray:
  """The devices of one slice (or all, single-slice) as an array of `shape`: the
  topology-aware order of mesh_utils where it can map the shape onto the torus, else
  plain row-major order (CPU devices; shapes such as data 2 x fsdp 32 on a 4x4x4 torus,
  which mesh_utils refuses without splitting physical axes)."""
  from jax.experimental import mesh_utils
  try:
    return mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # noqa: BLE001 - any refusal: row-major is always a valid mesh
    return np.asarray(devices, dtype=object).reshape(shape)


def _granules(devices, num_slices: int) -> list[list]:
  """The devices split into `num_slices` groups joined over the slower network: TPU slices
  (slice_index), else processes (hosts), else (one process with fake devices) consecutive
  blocks of the devices in (process, id) order."""
  for attr in ("slice_index", "process_index"):
    keys = {getattr(d, attr, None) for d in devices}
    if len(keys) == num_slices and None not in keys:
      return [[d for d in devices if getattr(d, attr) == k] for k in sorted(keys)]
  ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
  size = len(ordered) // num_slices
  return [ordered[i * size:(i + 1) * size] for i in range(num_slices)]


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Leading (batch) dim split over data and fsdp; the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
