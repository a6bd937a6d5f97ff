"""`python -m vmae2_jax.bench kernels`: the CPU kernels' speed as a fraction of FMA peak.

Times the fused attention (forward, backward) and the weight-gradient matmul
on the ViT-S/16 fine-tuning shapes (2 clips of 16x224x224: 1,568 tokens, 6
heads of 64; dense layers over 3,136 tokens), XLA's own dot on the same
weight-gradient shapes, and this machine's float32 FMA peak (12 independent
FMA chains per core, vmae2_jax/kernels/fma_peak.cc, with as many threads as
XLA's CPU pool). Peak and kernels are measured in alternation, so on a
shared, loaded machine both see the same load; the minimum of the repeats is
the least disturbed run.

`--sweep` rebuilds the kernels with other block sizes (-D flags, see
cpu_kernels.cc) and times each build in its own process, rounds interleaved:
  python -m vmae2_jax.bench kernels --sweep="; -DVMAE2_SCORE_KB=256; -DVMAE2_WG_KC=128"
(variants separated by ';', an empty one = the ISA defaults)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ATTN = dict(batch=2, tokens=1568, heads=6, head_dim=64)
TOKENS = 3136  # 2 clips x 1,568 tokens through one dense layer
WG_SHAPES = {  # name: (in, out) of x [TOKENS, in]^T dy [TOKENS, out]
    "wg_qkv 384x1152": (384, 1152),
    "wg_proj 384x384": (384, 384),
    "wg_fc1 384x1536": (384, 1536),
    "wg_fc2 1536x384": (1536, 384),
}


def _peak_lib():
  import jax  # noqa: PLC0415
  from vmae2_jax.kernels.build import build_library  # noqa: PLC0415
  src = Path(__file__).resolve().parent.parent / "kernels" / "fma_peak.cc"
  lib = ctypes.CDLL(str(build_library(src, jax.ffi.include_dir(), "fma_peak")))
  lib.vmae2_fma_run.restype = ctypes.c_double
  lib.vmae2_fma_run.argtypes = [ctypes.c_int64]
  return lib


def fma_peak(lib, threads: int, seconds: float = 0.2) -> tuple[float, float]:
  """(GFLOP/s, GFLOP per CPU second) of `threads` threads each running FMA chains for
  ~`seconds`. The second is one core's peak whatever else the machine runs."""
  iters = int(seconds * 3e9 / 12)  # ~3 GHz, one round of 12 FMAs per cycle at most
  out = [0.0] * threads

  def run(i):
    out[i] = lib.vmae2_fma_run(iters)

  workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
  t0, c0 = time.perf_counter(), time.process_time()
  for w in workers:
    w.start()
  for w in workers:
    w.join()
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  return sum(out) / wall / 1e9, sum(out) / max(cpu, 1e-9) / 1e9


def _cases(only: str = ""):
  """name -> (jitted fn, args, FLOPs); with `only`, the cases whose names contain one of
  its comma-separated parts."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  from vmae2_jax.kernels import cpu  # noqa: PLC0415

  b, n, h, d = ATTN["batch"], ATTN["tokens"], ATTN["heads"], ATTN["head_dim"]
  keys = jax.random.split(jax.random.key(0), 8)
  qkv = jax.random.normal(keys[0], (b, n, 3, h, d), jnp.float32)
  qb = jax.random.normal(keys[1], (h, d), jnp.float32) * 0.1
  vb = jax.random.normal(keys[2], (h, d), jnp.float32) * 0.1
  do = jax.random.normal(keys[3], (b, n, h, d), jnp.float32)
  scale = d ** -0.5
  fwd = jax.jit(lambda x: cpu.qkv_attention(x, qb, vb, scale))
  _, vjp = jax.vjp(lambda x: cpu.qkv_attention(x, qb, vb, scale), qkv)
  bwd = jax.jit(lambda g: vjp(g)[0])
  attn = 2.0 * b * h * n * n * d  # one [n, n, d] matmul
  cases = {"attention fwd": (fwd, (qkv,), 2 * attn),     # Q.K^T, P.V
           "attention bwd": (bwd, (do,), 5 * attn)}      # S again, dP, dV, dK, dQ
  for i, (name, (m, k)) in enumerate(WG_SHAPES.items()):
    x = jax.random.normal(keys[4], (TOKENS, m), jnp.float32)
    dy = jax.random.normal(keys[5 + i % 3], (TOKENS, k), jnp.float32)
    flops = 2.0 * TOKENS * m * k
    cases[name] = (jax.jit(cpu.weight_gradient), (x, dy), flops)
    # XLA's form of it in layers.dense_matmul without the kernel: (dy^T x)^T
    xla = jax.jit(lambda a, g: jax.lax.dot_general(g, a, (((0,), (0,)), ((), ()))).T)
    cases[name.replace("wg_", "xla_")] = (xla, (x, dy), flops)
  parts = [p for p in only.split(",") if p]
  return {k: v for k, v in cases.items() if not parts or any(p in k for p in parts)}


def _time(fn, args) -> tuple[float, float]:
  """(wall, CPU) seconds of one call; CPU seconds of all the process's threads."""
  t0, c0 = time.perf_counter(), time.process_time()
  fn(*args).block_until_ready()
  return time.perf_counter() - t0, time.process_time() - c0


def measure(repeats: int, only: str = "") -> dict:
  import jax  # noqa: PLC0415
  from vmae2_jax.kernels import cpu  # noqa: PLC0415
  if not cpu.available():
    raise SystemExit("error: the CPU kernels are not available here (see the build error above)")
  threads = max(1, os.cpu_count() or 1)
  lib = _peak_lib()
  cases = _cases(only)
  if not cases:
    raise SystemExit(f"error: --only={only!r} matches no case")
  for fn, args, _ in cases.values():  # compile and warm
    _time(fn, args)
  times = {name: [] for name in cases}
  cpus = {name: [] for name in cases}
  peaks1, peaksn, peaks_cpu = [], [], []
  for _ in range(repeats):
    wall1, cpu1 = fma_peak(lib, 1)
    peaks1.append(wall1)
    peaks_cpu.append(cpu1)
    peaksn.append(fma_peak(lib, threads)[0])
    for name, (fn, args, _) in cases.items():
      wall, cpu_s = _time(fn, args)
      times[name].append(wall)
      cpus[name].append(cpu_s)
  peak, peak_core = max(peaksn), max(peaks_cpu)
  out = {"machine": _cpu_name(), "isa_width_floats": lib.vmae2_fma_width(),
         "defines": os.environ.get("VMAE2_JAX_KERNEL_DEFINES", ""),
         "threads": threads, "jax": jax.__version__, "load_avg_1min": os.getloadavg()[0],
         "fma_peak_gflops_1core": round(max(peaks1), 1),
         "fma_peak_gflops": round(peak, 1),
         "fma_peak_gflops_per_cpu_s": round(peak_core, 1), "cases": {}}
  for name, (_, _, flops) in cases.items():
    best, med = min(times[name]), statistics.median(times[name])
    cpu_best = min(cpus[name])
    # Two measures: wall-clock against the all-threads peak (the real speed on an idle
    # machine), and FLOPs per CPU second against one core's (robust on a loaded one).
    out["cases"][name] = {"ms_min": round(best * 1e3, 2), "ms_median": round(med * 1e3, 2),
                          "cpu_ms_min": round(cpu_best * 1e3, 2),
                          "gflops_best": round(flops / best / 1e9, 1),
                          "peak_fraction_best": round(flops / best / 1e9 / peak, 3),
                          "cpu_peak_fraction": round(flops / cpu_best / 1e9 / peak_core, 3)}
  return out


def _cpu_name() -> str:
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return "?"


def _print(res: dict) -> None:
  print(f"{res['machine']} ({res['isa_width_floats'] * 32}-bit vectors), {res['threads']} "
        f"threads, defines {res['defines'] or '(ISA defaults)'}, load {res['load_avg_1min']:.1f}")
  print(f"FMA peak: {res['fma_peak_gflops_1core']} GFLOP/s one core, {res['fma_peak_gflops']} "
        f"all threads; {res['fma_peak_gflops_per_cpu_s']} GFLOP per CPU second")
  for name, c in res["cases"].items():
    print(f"  {name:22s} {c['ms_min']:8.2f} ms (median {c['ms_median']:8.2f})  "
          f"{c['gflops_best']:6.1f} GFLOP/s = {100 * c['peak_fraction_best']:5.1f}% of peak; "
          f"{c['cpu_ms_min']:8.2f} CPU ms = {100 * c['cpu_peak_fraction']:5.1f}% of a core's peak")


def sweep(variants: list[str], rounds: int, repeats: int, only: str = "") -> dict:
  """Each -D set in its own process, rounds interleaved; per case the best over rounds."""
  results: dict[str, list[dict]] = {v: [] for v in variants}
  for _ in range(rounds):
    for v in variants:
      env = dict(os.environ, VMAE2_JAX_KERNEL_DEFINES=v)
      proc = subprocess.run([sys.executable, "-m", "vmae2_jax.bench", "kernels", "--json",
                             f"--repeats={repeats}", f"--only={only}"], capture_output=True, text=True, env=env)
      if proc.returncode:
        raise SystemExit(f"error: defines {v!r}: {proc.stderr.strip().splitlines()[-1:]}")
      results[v].append(json.loads(proc.stdout.strip().splitlines()[-1]))
      print(f"# {v or '(ISA defaults)'}: " + json.dumps(results[v][-1]), file=sys.stderr,
            flush=True)  # each run as it ends: a long sweep on a busy machine shows progress
  summary = {}
  for v, runs in results.items():
    summary[v or "(ISA defaults)"] = {
        name: {"ms_min": min(r["cases"][name]["ms_min"] for r in runs),
               "peak_fraction_best": max(r["cases"][name]["peak_fraction_best"] for r in runs),
               "cpu_peak_fraction": max(r["cases"][name]["cpu_peak_fraction"] for r in runs)}
        for name in runs[0]["cases"]}
  return summary


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.bench kernels", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--json", action="store_true", help="print one JSON line")
  p.add_argument("--sweep", default=None, metavar="DEFINES;DEFINES...",
                 help="-D sets to compare, separated by ';' (an empty one: the ISA defaults)")
  p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --sweep")
  p.add_argument("--only", default="", metavar="NAME,NAME...",
                 help="time only the cases whose names contain one of these (e.g. 'attention fwd')")
  args = p.parse_args(argv)
  if args.sweep is not None:
    res = sweep([v.strip() for v in args.sweep.split(";")], args.rounds, args.repeats, args.only)
    if args.json:
      print(json.dumps(res))
    else:
      names = list(next(iter(res.values())))
      for name in names:
        print(name)
        for v, cases in res.items():
          c = cases[name]
          print(f"  {v:50s} {c['ms_min']:8.2f} ms  {100 * c['peak_fraction_best']:5.1f}% "
                f"(per CPU second {100 * c['cpu_peak_fraction']:5.1f}%)")
    return 0
  res = measure(args.repeats, args.only)
  if args.json:
    print(json.dumps(res))
  else:
    _print(res)
  return 0


if __name__ == "__main__":
  sys.exit(main())
