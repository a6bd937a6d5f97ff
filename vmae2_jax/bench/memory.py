"""Per-device memory of a config's train step from compile-only runs (no accelerator).

  python -m vmae2_jax.bench memory --devices=8 --clips 32 128
  python -m vmae2_jax.bench memory --devices=8 --search --budget_gb=80
  python -m vmae2_jax.bench memory --config=configs/postpretrain_g_k710.py --devices=8 \\
      --batch_size=96 [--accum_steps=2]

Sets the fake device count (--xla_force_host_platform_device_count) before
JAX starts, then compiles the step of any stage through
vmae2_jax.training.compile_only at the given sizes, or binary-searches the
largest per-device clip count whose peak estimate fits a memory budget.
Sizes: --clips counts clips (views) per device per update (batch_size =
clips x devices / views); --batch_size gives the recipe's videos per update
instead. The step needs no data: shard paths are dropped (see
bench.common.without_data), the views per video stay the config's.

Defaults: configs/pretrain_g.py (ViT-g/14, 16x224x224, 4 views per video,
full remat, scan over layers), bfloat16 compute, pure FSDP. Prints one JSON
line per compile (COMPILE_ONLY_JSON ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from vmae2_jax import cpu_threads


def parse_args(argv):
  ap = argparse.ArgumentParser(prog="python -m vmae2_jax.bench memory", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", default="configs/pretrain_g.py")
  ap.add_argument("--devices", type=int, default=8)
  ap.add_argument("--clips", type=int, nargs="*", default=[32],
                  help="clips (views) per device per update")
  ap.add_argument("--batch_size", type=int, nargs="*", default=[],
                  help="videos per update, all devices (instead of --clips)")
  ap.add_argument("--accum_steps", type=int, default=0, help="override config.optim.accum_steps")
  ap.add_argument("--search", action="store_true", help="largest clips/device under the budget")
  ap.add_argument("--budget_gb", type=float, default=80.0, help="1e9 bytes")
  ap.add_argument("--dtype", default="bfloat16", help="compute dtype ('' = the config's)")
  ap.add_argument("--remat", default="full", help="remat policy ('' = the config's)")
  return ap.parse_args(argv)


def _start_jax(devices: int):
  """Fake CPU devices, unless JAX already runs (in-process callers such as tests)."""
  if "jax" not in sys.modules:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={devices}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    cpu_threads.widen()  # XLA's CPU pool for that many devices (cpu_threads.py)
  import jax
  if jax.device_count() < devices:
    raise SystemExit(f"--devices={devices}: JAX already started with {jax.device_count()} "
                     "devices; run `python -m vmae2_jax.bench memory` in a fresh process")
  return jax


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "memory":
    argv = argv[1:]
  args = parse_args(argv)
  jax = _start_jax(args.devices)

  from vmae2_jax.bench.common import load_config, without_data
  from vmae2_jax.training import compile_only

  def measure(*, clips_per_device: int = 0, videos: int = 0) -> dict:
    c = without_data(load_config(args.config))
    views = c.data.num_sample
    if not videos:
      total = clips_per_device * args.devices
      if total % views:
        raise SystemExit(f"{clips_per_device} clips/device x {args.devices} devices is not a "
                         f"multiple of num_sample={views}")
      videos = total // views
    c.batch_size = videos
    if args.accum_steps:
      c.optim.accum_steps = args.accum_steps
    if args.dtype:
      c.model.dtype = args.dtype
    if args.remat:
      c.model.remat = args.remat
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    r = compile_only.compile_train_step(c, jax.devices()[:args.devices])
    print(compile_only.format_report(r), flush=True)
    print("COMPILE_ONLY_JSON " + json.dumps(r), flush=True)
    return r

  if args.batch_size:
    for v in args.batch_size:
      measure(videos=v)
    return 0
  if not args.search:
    for n in args.clips:
      measure(clips_per_device=n)
    return 0
  budget = args.budget_gb * 1e9
  fits = lambda r: r["memory_bytes_per_device"]["peak_estimate"] <= budget  # noqa: E731
  lo, hi = 0, max(args.clips)
  while fits(measure(clips_per_device=hi)):  # grow until it does not fit
    lo, hi = hi, hi * 2
  step = max(1, 4 // args.devices if args.devices < 4 else 1)
  while hi - lo > step:
    mid = (lo + hi) // 2
    if fits(measure(clips_per_device=mid)):
      lo = mid
    else:
      hi = mid
  print(f"LARGEST_FIT clips_per_device={lo} (budget {args.budget_gb} GB, {args.devices} devices)")
  return 0
