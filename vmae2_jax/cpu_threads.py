"""Enough XLA:CPU threads for collectives over several host devices (fake CPU devices).

XLA's CPU client runs every device's share of a program on one thread pool of
max(cores, devices) threads: 8 for 8 forced devices on a 2-core machine. A
collective (all-gather, ...) holds its thread until every device has joined it,
and one device can hold more than one thread at a time: the program's
independent thunks run concurrently, and a launch waiting for the device's
in-flight limit (32 computations) holds a thread too. When the blocked threads
fill the pool, the device still missing from a collective never gets a thread:
XLA reports "Termination timeout for all gather RendezvousKey ..." after 40 s
and aborts the process (tests/test_cpu_threads.py reproduces it in seconds).

XLA sizes that pool from $PJRT_NPROC when its CPU backend starts; `widen()`
sets it (unless the user did) when XLA_FLAGS forces several host devices.
`import vmae2_jax` calls it, which is early enough for the command-line tools
(JAX starts its backend at the first device query, not at import).
"""

from __future__ import annotations

import os
import re
from typing import MutableMapping

# Threads per forced device. Each device then has room for four threads blocked in
# collectives at once before a starvation is possible (7 x 4 + 1 <= 32 for 8 devices).
THREADS_PER_DEVICE = 4
MAX_THREADS = 256  # 64 fake devices (compile-only runs) need no more
_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def forced_device_count(xla_flags: str) -> int:
  """The last --xla_force_host_platform_device_count in XLA_FLAGS (0 when absent)."""
  found = _FLAG.findall(xla_flags or "")
  return int(found[-1]) if found else 0


def widen(environ: MutableMapping[str, str] | None = None) -> int | None:
  """Sets PJRT_NPROC for a forced host device count of 2 or more; returns the thread
  count it set, or None (no forced devices, or PJRT_NPROC / NPROC already chosen).

  Takes effect only before JAX starts its CPU backend."""
  env = os.environ if environ is None else environ
  devices = forced_device_count(env.get("XLA_FLAGS", ""))
  if devices < 2 or env.get("PJRT_NPROC") or env.get("NPROC"):
    return None
  threads = min(max(os.cpu_count() or 1, THREADS_PER_DEVICE * devices), MAX_THREADS)
  env["PJRT_NPROC"] = str(threads)
  return threads
