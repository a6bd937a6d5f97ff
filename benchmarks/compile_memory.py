"""Per-device memory of a config's train step from compile-only runs (no accelerator).

Sets the fake device count before JAX starts, then compiles the step at the
given per-device clip counts, or binary-searches the largest one whose
peak estimate fits a memory budget:

  python benchmarks/compile_memory.py --devices=8 --clips=32
  python benchmarks/compile_memory.py --devices=8 --search --budget_gb=80

Defaults: configs/pretrain_g.py (ViT-g/14, 16x224x224, 4 views per video,
full remat, scan over layers), bfloat16 compute, pure FSDP. Prints one JSON
line per compile (COMPILE_ONLY_JSON ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", default="configs/pretrain_g.py")
  ap.add_argument("--devices", type=int, default=8)
  ap.add_argument("--clips", type=int, nargs="*", default=[32], help="clips (views) per device")
  ap.add_argument("--search", action="store_true", help="largest clips/device under the budget")
  ap.add_argument("--budget_gb", type=float, default=80.0, help="1e9 bytes")
  ap.add_argument("--dtype", default="bfloat16")
  ap.add_argument("--remat", default="full")
  args = ap.parse_args()

  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={args.devices}").strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import importlib.util

  from vmae2_jax.training import compile_only

  spec = importlib.util.spec_from_file_location("cfg", args.config)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)

  def measure(clips_per_device: int) -> dict:
    c = mod.get_config()
    views_per_video = c.data.get("num_sample", 1)
    total = clips_per_device * args.devices
    if total % views_per_video:
      raise SystemExit(f"{clips_per_device} clips/device x {args.devices} devices is not a "
                       f"multiple of num_sample={views_per_video}")
    c.batch_size = total // views_per_video
    c.model.dtype, c.model.remat = args.dtype, args.remat
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    r = compile_only.compile_train_step(c)
    print(compile_only.format_report(r), flush=True)
    print("COMPILE_ONLY_JSON " + json.dumps(r), flush=True)
    return r

  if not args.search:
    for n in args.clips:
      measure(n)
    return
  budget = args.budget_gb * 1e9
  fits = lambda r: r["memory_bytes_per_device"]["peak_estimate"] <= budget  # noqa: E731
  lo, hi = 0, max(args.clips)
  while fits(measure(hi)):  # grow until it does not fit
    lo, hi = hi, hi * 2
  step = max(1, 4 // args.devices if args.devices < 4 else 1)
  while hi - lo > step:
    mid = (lo + hi) // 2
    if fits(measure(mid)):
      lo = mid
    else:
      hi = mid
  print(f"LARGEST_FIT clips_per_device={lo} (budget {args.budget_gb} GB, {args.devices} devices)")


if __name__ == "__main__":
  main()
