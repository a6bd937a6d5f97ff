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
import functools

import jax
import numpy as np

_PLATFORM: contextvars.ContextVar[str | None] = contextvars.ContextVar("platform", default=None)


def target_platform() -> str:
  """"cpu", "gpu" or "tpu": the platform being built for, else JAX's default backend."""
  return _PLATFORM.get() or jax.default_backend()


def named_target() -> str | None:
  """The platform named by an enclosing `building_for`, else None (the model may then be
  lowered for any platform)."""
  return _PLATFORM.get()


def per_platform(*args, target: str | None, default, cpu=None, tpu=None):
  """Calls the branch for `target` (recorded by the caller at build time) directly; with
  no target, lax.platform_dependent picks one per lowering platform. Direct where known:
  XLA:CPU may run a conditional's collectives out of order across its devices, which
  deadlocked an 8-device train step (issue 19)."""
  branches = {"cpu": cpu, "tpu": tpu}
  if target is not None:
    return (branches.get(target) or default)(*args)
  return jax.lax.platform_dependent(
      *args, default=default, **{k: f for k, f in branches.items() if f is not None})


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


# XLA:CPU option naming the library fusions XLA may form; empty: none (experimental, so a
# later jaxlib may rename it: `forward_compiler_options` checks that it is accepted).
_YNN_FUSIONS = "xla_cpu_experimental_ynn_fusion_type"


def forward_compiler_options(platform: str | None = None) -> dict[str, str]:
  """XLA options for compiling a model's inference forward for `platform` (default: the
  target platform).

  CPU: no YNNPACK library fusions, so the dense layers are XLA's own dots and layer
  norm and GELU its loop fusions. With them, XLA:CPU materialised the GELU's constants
  as [views, tokens, mlp] arrays that every layer's fusion read again, and 15-view
  ViT-S/16 inference took 19% more CPU time (12% on one thread) on an AVX2 Zen 3
  (BENCHMARKS.md, issue 18). Same numbers either way. Other platforms, or a jaxlib
  without the option: none.
  """
  platform = platform or target_platform()
  if platform == "cpu" and _cpu_accepts(_YNN_FUSIONS, ""):
    return {_YNN_FUSIONS: ""}
  return {}


@functools.lru_cache(maxsize=None)
def _cpu_accepts(option: str, value: str) -> bool:
  """Whether this jaxlib's CPU compiler knows `option` (one tiny compile, once)."""
  try:
    x = jax.device_put(np.float32(0), jax.devices("cpu")[0])
    jax.jit(lambda x: x + 1).lower(x).compile(compiler_options={option: value})
    return True
  except Exception:  # noqa: BLE001 -- an unknown option: the defaults then
    return False
