"""benchmarks/gpu_vit_g.py runs end to end (on CPU, with a tiny variant)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_vit_g_script_runs_on_cpu_with_a_tiny_variant():
  # The CPU ISA is capped at AVX: jaxlib 0.12.1's XLA:CPU aborts compiling this bfloat16
  # program on CPUs with AVX2 but no AVX-512 (LLVM "Cannot select: v8bf16 =
  # X86ISD::VBROADCAST" in a transpose fusion; README, "Tested Python x JAX pairs"). The
  # script is a GPU benchmark: on CPU it is only run, not timed.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {
      "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_max_isa=AVX"}
  proc = subprocess.run(
      [sys.executable, "benchmarks/gpu_vit_g.py", "--variant=mu/16", "--frames=4",
       "--image_size=32", "--runs=full:2,dots:2", "--steps=1", "--warmup=1", "--peak_tflops=1"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("GPU_VIT_G_JSON "))
  out = json.loads(line.split(" ", 1)[1])
  r, r_dots = out["results"]
  assert (r["remat"], r_dots["remat"]) == ("full", "dots")
  assert r["batch_clips"] == 2 and r["clips_per_s"] > 0 and 0 < r["mfu"] < 1
  assert r["model_tflop_per_clip"] > 0 and r["loss"] > 0
