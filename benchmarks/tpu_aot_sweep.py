"""What the TPU compiler says about a train step: memory, cost-model time, collectives.

A thin measuring script for tuning (issue 15): it compiles the real train step
of any config for a TPU topology on this CPU machine (libtpu, no TPU) through
vmae2_jax.training.compile_only.compile_train_step and prints per chip the HBM
the compiler assigned, its FLOPs and `optimal_seconds`, the MFU those imply
(compiler-estimated, never a measurement), and the collectives of the optimised
program with their sizes (to see whether FSDP gradients are reduce-scattered).

  TPU_SKIP_MDS_QUERY=1 JAX_PLATFORMS=cpu python benchmarks/tpu_aot_sweep.py \\
      --config=configs/pretrain_g.py --topology=v5p:2x2x1 --clips=128 \\
      [--depth=4] [--config.model.remat=dots ...] [--libtpu_flags=overlap]

--topology takes what `bench aot` takes (v5p:4x4x4, v5p-128, 2xv5p-128) and builds
the same devices (one per chip on v4 and v5p) through vmae2_jax.sharding.topologies.
--depth overrides the encoder depth (a quick look at a few layers before the
full model). An unrolled ViT-g compile of all 40 layers takes an hour or more
on a small shared CPU machine, so whole-step estimates come from two unrolled
compiles at reduced depths instead: every encoder layer is the same program,
so the cost model's time and the model FLOPs are both a + b x depth, and

  python benchmarks/tpu_aot_sweep.py --extrapolate=40 LOG_D2 LOG_D4

fits the line through the TPU_AOT_JSON lines of the given logs and prints the
compiler-estimated step time and MFU at depth 40 (labelled extrapolated). Needs `pip install "jax[tpu]"` (libtpu). One JSON line per run
(prefix TPU_AOT_JSON) for BENCHMARKS.md.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from vmae2_jax import paths
from vmae2_jax.sharding import topologies
from vmae2_jax.training import hlo_summary

# MaxText's libtpu flags for overlapping collectives with compute (its
# benchmarks/xla_flags_library.py); set before libtpu loads.
LIBTPU_FLAG_SETS = {
    "none": "",
    "overlap": " ".join([
        "--xla_tpu_enable_async_collective_fusion=true",
        "--xla_tpu_enable_async_collective_fusion_fuse_all_gather=true",
        "--xla_tpu_enable_async_collective_fusion_multiple_steps=true",
        "--xla_tpu_overlap_compute_collective_tc=true",
        "--xla_enable_async_all_gather=true",
        "--xla_enable_async_all_reduce=true",
    ]),
    # No collective matmuls, so that the cost model counts every matmul (topologies.py).
    "no_collective_matmul": " ".join(topologies.NO_COLLECTIVE_MATMUL),
    "overlap_ds": " ".join([
        "--xla_tpu_enable_data_parallel_all_reduce_opt=true",
        "--xla_tpu_data_parallel_opt_different_sized_ops=true",
        "--xla_tpu_enable_async_collective_fusion=true",
        "--xla_tpu_enable_async_collective_fusion_fuse_all_gather=true",
        "--xla_tpu_enable_async_collective_fusion_multiple_steps=true",
        "--xla_tpu_overlap_compute_collective_tc=true",
        "--xla_enable_async_all_gather=true",
        "--xla_enable_async_all_reduce=true",
    ]),
}


def extrapolate(rows: list[dict], depth: int) -> dict:
  """Whole-model estimate from unrolled compiles at two or more encoder depths.

  Each encoder layer adds the same program, so optimal_seconds, the compiled
  and the model FLOPs are linear in depth: least squares through the rows,
  read at `depth`. Rows must differ only in depth (same clips, options, chip)."""
  def depth_of(r):
    return int(r["variant"].split("@d")[1])
  if len({depth_of(r) for r in rows}) < 2:
    raise SystemExit("error: --extrapolate needs compiles at two different --depth values")
  looped = [r.get("tag") or r["variant"] for r in rows
            if r.get("scan_layers") or r.get("hlo", {}).get("matmul_loops")]
  if looped:
    raise SystemExit(f"error: --extrapolate: {', '.join(looped[:3])}"
                     f"{f' and {len(looped) - 3} more' if len(looped) > 3 else ''} ran matmul "
                     "loops whose bodies the cost model counts once (scanned layers or "
                     "collective matmuls): compile unrolled, with --libtpu_flags=no_collective_matmul")
  keys = ("optimal_seconds", "flops_per_device", "model_flops_per_device")
  xs = [depth_of(r) for r in rows]
  mx = sum(xs) / len(xs)
  out = {"depth": depth, "from_depths": sorted(xs)}
  for k in keys:
    ys = [r[k] for r in rows]
    my = sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    out[k] = my + b * (depth - mx)
    out[k + "_per_layer"] = b
  peak = topologies.target(rows[0]["topology"]).chip.peak_bf16_flops
  out["compiler_estimated_mfu"] = out["model_flops_per_device"] / out["optimal_seconds"] / peak
  out["per_layer_mfu"] = (out["model_flops_per_device_per_layer"]
                          / out["optimal_seconds_per_layer"] / peak)
  return out


def _extrapolate_main(argv) -> int:
  depth = int(argv[0].split("=", 1)[1])
  rows = []
  for path in argv[1:]:
    try:
      text = paths.read_text(path)  # a bucket path too
    except FileNotFoundError:
      raise SystemExit(f"error: --extrapolate: no log at {path}") from None
    rows += [json.loads(line.split(" ", 1)[1]) for line in text.splitlines()
             if line.startswith("TPU_AOT_JSON ")]
  r = extrapolate(rows, depth)
  print(f"extrapolated to depth {depth} from unrolled compiles at depths {r['from_depths']}:")
  print(f"  compiler-estimated step time {r['optimal_seconds']:.4f} s "
        f"({1e3 * r['optimal_seconds_per_layer']:.2f} ms per encoder layer)")
  print(f"  model {r['model_flops_per_device'] / 1e12:.1f} TFLOP, compiled "
        f"{r['flops_per_device'] / 1e12:.1f} TFLOP per chip")
  print(f"  compiler-estimated MFU {100 * r['compiler_estimated_mfu']:.1f}% "
        f"(an encoder layer alone: {100 * r['per_layer_mfu']:.1f}%)")
  print("TPU_AOT_EXTRAPOLATED_JSON " + json.dumps(r))
  return 0


def main(argv) -> int:
  if len(argv) > 1 and argv[1].startswith("--extrapolate="):
    return _extrapolate_main(argv[1:])
  from absl import app, flags
  from ml_collections import config_flags

  config = config_flags.DEFINE_config_file("config", None, "Config file.")
  topology = flags.DEFINE_string("topology", "v5p:2x2x1",
                                 "A TPU topology (v5p:4x4x4) or booked name (v5p-128).")
  num_slices = flags.DEFINE_integer("num_slices", 1, "Slices (DCN), for multi-slice meshes.")
  clips = flags.DEFINE_integer("clips", 0, "Clips per chip (0: the config's batch).")
  depth = flags.DEFINE_integer("depth", 0, "Override the encoder depth (quick looks).")
  libtpu = flags.DEFINE_string("libtpu_flags", "none", f"One of {sorted(LIBTPU_FLAG_SETS)}.")
  dump = flags.DEFINE_string("dump_hlo", "", "Write the optimised HLO text here.")
  tag = flags.DEFINE_string("tag", "", "A label copied into the JSON line.")

  def run(_):
    name = (f"{num_slices.value}x{topology.value}" if num_slices.value > 1
            else topology.value)
    try:  # the same names, devices and libtpu settings as `bench aot`
      target = topologies.target(name)
      if target.chip.platform != "tpu":
        raise topologies.TopologyError(f"--topology={name}: this sweep is for TPUs; "
                                       "`python -m vmae2_jax.bench aot` compiles for GPUs")
      topologies.prepare_environment(name, tuple(LIBTPU_FLAG_SETS[libtpu.value].split()))
      devices = topologies.tpu_devices(target)
    except topologies.TopologyError as e:
      raise SystemExit(f"error: {e}") from None
    import jax
    from vmae2_jax.models import variants
    from vmae2_jax.training.compile_only import compile_train_step, format_report

    from vmae2_jax.bench.common import without_data
    c = without_data(config.value)  # the step needs no data: a supervised stage has no shards here
    if depth.value:
      name = f"{c.model.variant}@d{depth.value}"
      variants.VARIANTS[name] = dataclasses.replace(
          variants.get_variant(c.model.variant), depth=depth.value)
      c.model.variant = name
    if target.num_slices > 1 and all(int(c.mesh.get(f"dcn_{a}", 1)) == 1
                                    for a in ("data", "fsdp", "tensor")):
      c.mesh.dcn_data = target.num_slices  # data parallel across slices, as bench aot does
    if clips.value:
      views = int(c.data.get("num_sample", 1) or 1) if "data" in c else 1
      c.batch_size = clips.value * len(devices) // views
    found = {}

    def inspect(compiled, report):
      hlo = compiled.as_text()
      # by kind: count, bytes, ops over 1 MB (the TPU's fused reduce-scatters included)
      found["collectives"] = hlo_summary.collectives(hlo)
      found["custom_calls"] = report["hlo"]["custom_call_targets"]
      found["dcn"] = hlo_summary.dcn_transfers(hlo)  # cross-slice traffic (multi-slice)
      if dump.value:
        paths.write_text(dump.value, hlo)  # a bucket path too

    r = compile_train_step(c, devices, on_compiled=inspect)
    r.update(found, topology=target.topology, num_slices=target.num_slices,
             libtpu_flags=libtpu.value, tag=tag.value, jax=jax.__version__,
             attention=c.model.attention, mesh_config=dict(c.mesh))
    try:
      import importlib.metadata as md
      r["libtpu"] = md.version("libtpu")
    except Exception:  # noqa: BLE001
      r["libtpu"] = "?"
    peak, hbm = target.chip.peak_bf16_flops / 1e12, round(target.chip.hbm_bytes / 1e9, 1)
    print(format_report(r))
    m = r["memory_bytes_per_device"]
    print(f"  HBM peak {m['peak_estimate'] / 1e9:.2f} GB of {hbm} GB per chip")
    if r.get("optimal_seconds", 0) <= 0:  # libtpu 0.0.42.1 reports negative ones for v6e
      print(f"  optimal_seconds {r.get('optimal_seconds')}: no usable cost-model estimate")
    elif r["scan_layers"]:
      print(f"  optimal_seconds {r['optimal_seconds']:.4f} s covers one pass of each scanned "
            "loop body: no MFU estimate (compile with --config.model.scan_layers=False)")
    elif r["hlo"]["matmul_loops"]:
      print(f"  optimal_seconds {r['optimal_seconds']:.4f} s counts {r['hlo']['matmul_loops']} "
            "matmul loops' bodies once (collective matmuls): no MFU estimate (try "
            "--libtpu_flags=no_collective_matmul)")
    elif "optimal_seconds" in r:
      mfu = r["model_flops_per_device"] / r["optimal_seconds"] / (peak * 1e12)
      r["compiler_estimated_mfu"] = mfu
      print(f"  optimal_seconds {r['optimal_seconds']:.4f} s -> compiler-estimated MFU "
            f"{100 * mfu:.1f}% (of {peak} TFLOP/s peak bf16)")
    for kind, v in sorted(r["collectives"].items()):
      if v["count"]:
        print(f"  {kind}: {v['count']} ({v['large']} over 1 MB), {v['bytes'] / 1e9:.3f} GB")
    for kind, v in sorted(r["dcn"].items()):
      print(f"  across slices (DCN) {kind}: {v['count']}, {v['bytes'] / 1e9:.3f} GB sent per chip")
    print("  custom calls: " + ", ".join(f"{k} x{n}" for k, n in r["custom_calls"].items()))
    print("TPU_AOT_JSON " + json.dumps(r))

  app.run(run, argv=argv)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
