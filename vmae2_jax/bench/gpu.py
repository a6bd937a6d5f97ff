"""ViT-g/14 pre-training step on one GPU: clips/s, TFLOP/s and MFU at a few batch sizes.

  python benchmarks/gpu_vit_g.py                      # H100/H200: ViT-g/14, 16x224^2
  python -m vmae2_jax.bench gpu                       # the same
  python benchmarks/gpu_vit_g.py --variant=mu/16 --frames=4 --image_size=32   # CPU smoke run

The step is the trainer's own (experiment.setup -> jit_train_step: AdamW,
dual masking -- tube 0.9 encoder, running-cell 0.5 decoder -- bfloat16
compute with float32 parameters and optimizer state, scan over layers,
cuDNN attention through attention="auto"; remat full, and dots at the
smallest batch), fed a fixed batch of uint8 clips already on the device (no
input pipeline in the timing).

MFU = model FLOPs / step time / peak, measured; beside it the compiler-estimated MFU,
model FLOPs / (the compiled step's cost-analysis optimal_seconds x peak), where
XLA's cost model gives a time for the backend and the layers are unrolled
(--unroll: a scanned layer loop is counted once, so it is n/a with the reason). Model FLOPs come from the analytic
counter vmae2_jax.bench.flops (2*P*M per dense layer, 4*M^2*D per attention,
training = 3x forward; no remat recompute, no norms/softmax/GELU), and the
peak is the chip's dense bf16 rate (H100 SXM / H200: 989 TFLOP/s; H100 PCIe
756; override with --peak_tflops). A batch size that runs out of memory is
reported and skipped. The whole run stops starting new runs after
--budget_s seconds (default 300), so it ends in under 8 minutes. The last
line is `GPU_VIT_G_JSON {...}`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# Dense bf16 peak per chip, TFLOP/s (no sparsity), by device_kind substring.
PEAKS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0),
         ("L40S", 362.0))


def peak_tflops(device_kind: str) -> float | None:
  for key, value in PEAKS:
    if key.lower() in device_kind.lower():
      return value
  return None


def make_config(args, batch: int, remat: str):
  from configs import pretrain_g
  from vmae2_jax.bench.common import without_data

  c = pretrain_g.get_config()
  c.model.variant = args.variant
  c.model.dtype = "bfloat16"
  c.model.remat = remat
  c.model.scan_layers = not args.unroll
  c.model.attention = args.attention
  c.data.frames, c.data.image_size = args.frames, args.image_size
  c = without_data(c, clips=batch)   # batch_size counts clips here; a flat lr
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  return c


def measure(args, batch: int, remat: str, devices, peak: float | None = None) -> dict:
  from vmae2_jax.bench.common import StepRunner
  from vmae2_jax.bench.flops import pretrain_flops_per_clip
  from vmae2_jax.training.compile_only import estimated_mfu

  config = make_config(args, batch, remat)
  runner = StepRunner(f"{remat}:{batch}", config, devices)
  runner.run(args.warmup, record=False)
  runner.run(args.steps)
  step = statistics.median(runner.times)
  flops = pretrain_flops_per_clip(config.model.variant, args.frames, args.image_size,
                                  runner.exp.task.spec)
  tflops = flops["train"] * batch / step / 1e12
  # What the compiler's cost model expects of the same program (no run involved).
  estimate, why = (estimated_mfu(runner.step_fn, flops["train"] * batch, peak * 1e12)
                   if peak else (None, "no peak TFLOP/s for this device"))
  return {"batch_clips": batch, "step_s": step, "clips_per_s": batch / step,
          "tflops_per_s": tflops, "model_tflop_per_clip": flops["train"] / 1e12,
          "compile_s": runner.compile_s, "loss": runner.loss,
          "params": runner.exp.num_params, "visible": flops["visible"],
          "targets": flops["targets"], "compiler_estimated_mfu": estimate,
          "compiler_estimate_note": why}


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.bench gpu",
                              description=__doc__.split("\n")[0])
  p.add_argument("--variant", default="g/14")
  p.add_argument("--frames", type=int, default=16)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--runs", default="", help="remat:clips pairs, comma-separated (default "
                 "full:32,full:96,dots:32 on GPU, full:2,full:4 on CPU). Compile-only "
                 "estimates for one device: full 22 GB at 32 clips, 34 GB at 96; dots "
                 "50 GB at 32; none 74 GB at 32 (BENCHMARKS.md)")
  p.add_argument("--batches", default="", help="clips per step, comma-separated, all with "
                 "--remat (instead of --runs)")
  p.add_argument("--remat", default="full")
  p.add_argument("--attention", default="auto")
  p.add_argument("--steps", type=int, default=8)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--peak_tflops", type=float, default=0.0)
  p.add_argument("--budget_s", type=float, default=300.0)
  p.add_argument("--unroll", action="store_true", help="layers unrolled (scan_layers=False): "
                 "slower to compile, but the compiler's cost analysis then covers the whole "
                 "step, so the compiler-estimated MFU is printed beside the measured one")
  return p.parse_args(argv)


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "gpu":
    argv = argv[1:]
  args = parse_args(argv)
  # Let XLA's allocator have most of the card (default 75%) for the larger batches.
  os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
  import jax

  devices = jax.devices()[:1]
  kind = devices[0].device_kind
  on_cpu = jax.default_backend() == "cpu"
  if args.batches:
    runs = [(args.remat, int(b)) for b in args.batches.split(",")]
  else:
    spec = args.runs or ("full:2,full:4" if on_cpu else "full:32,full:96,dots:32")
    runs = [(r, int(b)) for r, b in (item.split(":") for item in spec.split(","))]
  peak = args.peak_tflops or peak_tflops(kind)
  print(f"ViT-{args.variant} pre-training, {args.frames}x{args.image_size}^2, bf16, "
        f"dual masking, on 1x {kind} (JAX {jax.__version__}); "
        f"peak {peak or 'unknown'} TFLOP/s", flush=True)
  t_start = time.perf_counter()
  results = []
  for remat, b in runs:
    if time.perf_counter() - t_start > args.budget_s:
      print(f"remat={remat} batch {b}: skipped (time budget {args.budget_s:.0f}s spent)",
            flush=True)
      continue
    try:
      r = measure(args, b, remat, devices, peak)
    except Exception as e:  # noqa: BLE001  out of memory at this size: report, go on
      if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
        raise
      print(f"remat={remat} batch {b}: out of memory", flush=True)
      continue
    r["mfu"] = r["tflops_per_s"] / peak if peak else None
    r["remat"] = remat
    results.append(r)
    print(f"remat={remat:5s} batch {b:4d} clips: {r['step_s'] * 1e3:8.1f} ms/step  "
          f"{r['clips_per_s']:8.2f} clips/s  {r['tflops_per_s']:7.1f} TFLOP/s"
          + (f"  MFU {r['mfu'] * 100:5.1f}%" if peak else "")
          + ("  compiler-estimated MFU "
             + (f"{r['compiler_estimated_mfu'] * 100:.1f}%" if r["compiler_estimated_mfu"]
                is not None else f"n/a ({r['compiler_estimate_note']})"))
          + f"  (compile {r['compile_s']:.0f}s, loss {r['loss']:.4f})", flush=True)
  print("GPU_VIT_G_JSON " + json.dumps({
      "device_kind": kind, "jax": jax.__version__, "variant": args.variant,
      "frames": args.frames, "image_size": args.image_size,
      "peak_tflops": peak, "date": time.strftime("%Y-%m-%d"), "results": results,
      "seconds": time.perf_counter() - t_start}))
  return 0 if results else 1
