"""Ahead-of-time compile of the train step for the configured mesh, without running it.

`python -m vmae2_jax.main --config=configs/pretrain_g.py --workdir=/tmp/x
--config.compile_only=True` (any stage's config) lowers and compiles the step on abstract shapes
(jax.ShapeDtypeStruct with shardings: no parameter is materialised) and prints
the per-device memory and FLOPs that XLA reports for the compiled program.
Fake devices are enough to size a target mesh:

  XLA_FLAGS=--xla_force_host_platform_device_count=64 JAX_PLATFORMS=cpu python -m ...

On CPU the numbers are the CPU backend's buffer assignment for the same SPMD
program; a GPU/TPU compile fuses differently, so treat them as an estimate of
the accelerator footprint (see docs/scaling.md).
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np

from vmae2_jax.bench.flops import train_flops_per_clip
from vmae2_jax.training.experiment import setup

GB = 1e9


def _bytes_per_device(tree) -> int:
  """Bytes one device holds of `tree` (abstract arrays with shardings)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shard = x.sharding.shard_shape(x.shape)
    total += int(np.prod(shard)) * np.dtype(x.dtype).itemsize
  return total


def compile_train_step(config, devices=None, on_compiled=None) -> dict:
  """Lowers and compiles the train step of `config`'s stage; returns the report dict.

  on_compiled(compiled, report), when given, is called with the compiled
  program (e.g. to read its optimised HLO) before the report is returned.

  Memory entries are bytes per device from compiled.memory_analysis():
  `arguments` (state + batch shard), `outputs`, `aliased` (outputs written in
  place of donated arguments), `temporaries` (activations, gradients, XLA
  scratch), and `peak_estimate` = arguments + outputs - aliased + temporaries.
  `flops_per_device` is compiled.cost_analysis()'s count (it includes the
  remat recompute, and counts a scanned layer loop's body once);
  `model_flops_per_device` is the analytic count of vmae2_jax.bench.flops
  (no recompute), the one MFU uses.
  """
  exp = setup(config, devices)
  mesh = exp.mesh
  step_fn = exp.jit_train_step()
  t0 = time.perf_counter()
  lowered = step_fn.lower(exp.abstract_state, exp.abstract_batch())
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()

  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else {}
  cost = dict(cost or {})
  clips = exp.layout.clips
  report = {
      "stage": config.stage,
      "variant": config.model.variant,
      "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "devices": int(mesh.size),
      "platform": jax.devices()[0].platform,
      "clips_global": int(clips),
      "clips_per_device": clips / mesh.size,
      "videos_per_device": config.batch_size / mesh.size,
      "accum_steps": exp.layout.accum_steps,
      "dtype": config.model.dtype, "remat": config.model.remat,
      "scan_layers": bool(config.model.scan_layers),
      "num_params": exp.num_params,
      "state_bytes_per_device": _bytes_per_device(exp.abstract_state),
      "lower_seconds": t1 - t0, "compile_seconds": t2 - t1,
      "flops_per_device": float(cost.get("flops", float("nan"))),
      "model_flops_per_device": float(train_flops_per_clip(exp) * clips / mesh.size),
  }
  if mem is not None:
    m = {"arguments": mem.argument_size_in_bytes, "outputs": mem.output_size_in_bytes,
         "aliased": mem.alias_size_in_bytes, "temporaries": mem.temp_size_in_bytes,
         "generated_code": mem.generated_code_size_in_bytes}
    m["peak_estimate"] = m["arguments"] + m["outputs"] - m["aliased"] + m["temporaries"]
    report["memory_bytes_per_device"] = {k: int(v) for k, v in m.items()}
  if "optimal_seconds" in cost:
    report["optimal_seconds"] = float(cost["optimal_seconds"])
  if on_compiled is not None:
    on_compiled(compiled, report)
  return report


def format_report(r: dict) -> str:
  lines = [f"compile-only ({r['stage']}): ViT-{r['variant']} on mesh {r['mesh']} ({r['devices']} "
           f"{r['platform']} devices), {r['clips_per_device']:g} clips/device "
           f"({r['videos_per_device']:g} videos), {r['dtype']} compute, remat={r['remat']}, "
           f"scan={r['scan_layers']}",
           f"  params {r['num_params'] / 1e6:.1f}M; train state per device "
           f"{r['state_bytes_per_device'] / GB:.3f} GB",
           f"  lowered in {r['lower_seconds']:.1f}s, compiled in {r['compile_seconds']:.1f}s"]
  m = r.get("memory_bytes_per_device")
  if m:
    lines.append("  per-device memory (GB): " + ", ".join(
        f"{k} {m[k] / GB:.3f}" for k in
        ("arguments", "outputs", "aliased", "temporaries", "peak_estimate")))
  lines.append(f"  FLOPs per device per step: XLA {r['flops_per_device'] / 1e12:.2f} TFLOP "
               f"(incl. recompute; a scanned loop body counted once), model "
               f"{r['model_flops_per_device'] / 1e12:.2f} TFLOP (analytic, no recompute)")
  return "\n".join(lines)


def run(config) -> dict:
  """Compiles, logs and prints the report (process 0 prints); returns it."""
  report = compile_train_step(config)
  text = format_report(report)
  if jax.process_index() == 0:
    print(text)
    print("COMPILE_ONLY_JSON " + json.dumps(report))
  return report
