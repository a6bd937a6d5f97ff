"""Collectives over 8 fake CPU devices do not starve XLA:CPU's thread pool (vmae2_jax.cpu_threads).

With the pool XLA sizes by default (max(cores, devices): 8 threads on a 2-core
machine), the program below hung in 3 of 3 runs (2026-12-07, PJRT_NPROC=8; XLA aborts
after the 20 s set here), and finished in about 6 s with the widened pool: once 32 runs
are in flight per device, the next launches wait for a slot holding pool threads, and
the devices of the running collective cannot all get one. (The distillation test of
tests/test_learning.py aborted with the same message for another reason, collectives
run out of order, which no pool size cures: its comment.)
"""

import os
import subprocess
import sys

from vmae2_jax import cpu_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Eight independent all-gathers in one program over the 8 devices, dispatched 64 times
# without waiting (twice XLA's limit of 32 computations in flight per device).
PROGRAM = r"""
import os
import vmae2_jax  # sizes the pool, as for the command-line tools
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
assert jax.device_count() == 8, jax.devices()
print("PJRT_NPROC", os.environ.get("PJRT_NPROC"), flush=True)
mesh = Mesh(np.array(jax.devices()), ("d",))
K = 8

def gathers(*xs):
  return sum(jax.lax.all_gather(jax.numpy.tanh(x) * (i + 1), "d", tiled=True).sum()
             for i, x in enumerate(xs))[None]

step = jax.jit(jax.shard_map(gathers, mesh=mesh, in_specs=(P("d"),) * K, out_specs=P("d")))
xs = [jax.device_put(np.full((8 * 64, 64), 0.01 * i, np.float32), NamedSharding(mesh, P("d")))
      for i in range(K)]
outs = [step(*xs) for _ in range(64)]
jax.block_until_ready(outs)
print("done", float(outs[-1][0]), flush=True)
"""


def test_widen_sets_the_pool_only_for_forced_host_devices(monkeypatch):
  monkeypatch.setattr(os, "cpu_count", lambda: 2)
  env = {"XLA_FLAGS": "--xla_cpu_max_isa=avx2 --xla_force_host_platform_device_count=8"}
  assert cpu_threads.widen(env) == 32 and env["PJRT_NPROC"] == "32"
  # The last flag counts, as in XLA; the cap holds for 64 or more fake devices.
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
                      "--xla_force_host_platform_device_count=128"}
  assert cpu_threads.widen(env) == cpu_threads.MAX_THREADS
  # A machine with more cores than that keeps its own count.
  monkeypatch.setattr(os, "cpu_count", lambda: 96)
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert cpu_threads.widen(env) == 96
  # Nothing to do, or the user's choice stands.
  for env in ({}, {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
              {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PJRT_NPROC": "12"},
              {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "NPROC": "12"}):
    before = dict(env)
    assert cpu_threads.widen(env) is None and env == before


def test_collectives_over_8_fake_devices_finish_in_a_fresh_process():
  # The suite's 8 devices; `import vmae2_jax` in the program widens the pool. XLA's
  # stuck-collective abort at 20 s instead of 40 s, so that a starvation fails quickly.
  env = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "NPROC")}
  env["XLA_FLAGS"] += (" --xla_cpu_collective_call_warn_stuck_timeout_seconds=10"
                       " --xla_cpu_collective_call_terminate_timeout_seconds=20")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
  run = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                       text=True, timeout=240)
  tail = (run.stdout + run.stderr)[-2000:]
  assert run.returncode == 0 and "done" in run.stdout, tail
  expected = cpu_threads.widen({"XLA_FLAGS": env["XLA_FLAGS"]})
  assert f"PJRT_NPROC {expected}" in run.stdout, run.stdout
