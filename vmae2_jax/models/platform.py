"""The platform a model is built for: the mesh's devices, which need not be JAX's default.

Compiling ahead of time for a TPU or GPU on a CPU host (vmae2_jax.bench aot)
builds the model while JAX's default backend is the CPU; the implementation
choices made at build time (attention="auto", the CPU kernels) must follow the
devices the program is compiled for, or a CPU custom call would land in a TPU
program. `experiment.setup` enters `building_for(mesh platform)`.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax

_PLATFORM: contextvars.ContextVar[str | None] = contextvars.ContextVar("platform", default=None)


def target_platform() -> str:
  """"cpu", "gpu" or "tpu": the platform being built for, else JAX's default backend."""
  return _PLATFORM.get() or jax.default_backend()


@contextlib.contextmanager
def building_for(platform: str):
  """Models built inside choose their kernels for `platform` (a device's .platform;
  "cuda"/"rocm" count as "gpu")."""
  name = "gpu" if platform in ("cuda", "rocm") else platform
  token = _PLATFORM.set(name)
  try:
    yield
  finally:
    _PLATFORM.reset(token)
