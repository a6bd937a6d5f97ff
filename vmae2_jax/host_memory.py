"""glibc malloc settings for this process: fewer fresh pages faulted in.

Two costs this avoids, both from buffers larger than glibc's mmap threshold,
which glibc maps fresh on every allocation and unmaps on free, so each use
faults in (and the kernel zeroes) every page again:

* XLA:CPU allocates each step's temporaries (~540 MB for the ViT-S
  pre-training step at batch 2) from the thread that runs the program; in a
  thread arena a block that large is always mmapped. That was ~140,000 page
  faults per step, about 12% of the step time. `keep_freed_memory` puts every
  thread on the main heap with mmap and trimming off, so the step's memory is
  reused from the second step on (zero faults per step).
* The data pipeline's whole-video records are several MB: a 9 MB ArrayRecord
  read ran 4x slower through fresh maps. `raise_mmap_threshold` keeps those
  in the heap.

Process-wide and glibc-only (a no-op returning False elsewhere). The price of
`keep_freed_memory` is that freed memory stays with the process (its RSS is
its high-water mark), the right trade for a training job on a CPU host.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -3, -4, -8
_DONE: dict[str, bool] = {}


def _mallopt(*settings: tuple[int, int]) -> bool:
  try:
    libc = ctypes.CDLL("libc.so.6")
    return all(libc.mallopt(param, value) == 1 for param, value in settings)
  except (OSError, AttributeError):
    return False


def keep_freed_memory() -> bool:
  """One malloc arena, no mmapped blocks, no trimming. Call before jax starts its threads."""
  if "keep" not in _DONE:
    _DONE["keep"] = _mallopt((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
                             (_M_TRIM_THRESHOLD, 2**31 - 1))
  return _DONE["keep"]


def raise_mmap_threshold(threshold: int = 32 << 20) -> bool:
  """Serve blocks below `threshold` bytes from the heap (32 MiB: above the largest
  records, and the most some glibc builds accept)."""
  if _DONE.get("keep"):  # nothing is mmapped any more; keep its trim setting
    return True
  if "threshold" not in _DONE:
    _DONE["threshold"] = _mallopt((_M_MMAP_THRESHOLD, threshold),
                                  (_M_TRIM_THRESHOLD, 2 * threshold))
  return _DONE["threshold"]


def cpu_only_host() -> bool:
  """True when JAX will compute on the CPU: JAX_PLATFORMS says cpu, or no GPU/TPU plugin.

  Decided without initialising a JAX backend, which starts the threads whose
  arenas `keep_freed_memory` must come before.
  """
  platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    return platforms.split(",")[0] == "cpu"
  accelerators = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin")
  if any(importlib.util.find_spec(name) for name in accelerators):
    return False
  # libtpu is also installed on CPU hosts to compile for TPUs (the `aot` and `test` extras):
  # it counts only where the host has TPU chips (/dev/accel*: v4/v5e; /dev/vfio/N: v5p/v6e).
  if importlib.util.find_spec("libtpu") is None:
    return True
  return not (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def tune_for_cpu_compute(setting: str = "auto") -> bool:
  """`keep_freed_memory` when setting is "keep", or "auto" on a CPU-only host."""
  if setting not in ("auto", "keep", "default"):
    raise ValueError(f"config.host_malloc={setting!r} is not auto|keep|default")
  if setting == "keep" or (setting == "auto" and cpu_only_host()):
    return keep_freed_memory()
  return False
