"""Ahead-of-time compile of the train step for the configured mesh, without running it.

`python -m vmae2_jax.main --config=configs/pretrain_g.py --workdir=/tmp/x
--config.compile_only=True` (any stage's config) lowers and compiles the step on abstract shapes
(jax.ShapeDtypeStruct with shardings: no parameter is materialised) and prints
the per-device memory and FLOPs that XLA reports for the compiled program.
Fake devices are enough to size a target mesh:

  XLA_FLAGS=--xla_force_host_platform_device_count=64 JAX_PLATFORMS=cpu python -m ...

On CPU the numbers are the CPU backend's buffer assignment for the same SPMD
program; a GPU/TPU compile fuses differently, so treat them as an estimate of
the accelerator footprint (see docs/scaling.md). With
`--config.compile_topology=v5p-128` (a TPU name as booked; needs libtpu, the
`aot` extra) the devices are compile-only TPU devices and the numbers are the
TPU compiler's own: its HBM assignment, its cost model, its collectives
(`python -m vmae2_jax.bench aot` is the same with batch search; docs/scaling.md).
"""

from __future__ import annotations

import collections
import json
import math
import time

import jax
import numpy as np

from vmae2_jax.bench.flops import classifier_flops_per_clip, train_flops_per_clip
from vmae2_jax.models.layers import resolved_numerics
from vmae2_jax.models.options import ModelOptions
from vmae2_jax.models.platform import building_for
from vmae2_jax.sharding import topologies
from vmae2_jax.training import hlo_summary
from vmae2_jax.training.config_checks import ConfigError
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
  remat recompute, and counts a loop's body once: `hlo.matmul_loops` > 0 says
  the step has one, e.g. the scanned layers); `optimal_seconds` is the cost
  model's time where the backend has one (TPU); `model_flops_per_device` is
  the analytic count of vmae2_jax.bench.flops (no recompute), the one MFU
  uses. `hlo` is hlo_summary.summarize of the optimised program.
  on_compiled(compiled, report), when given, is called with the compiled
  program (e.g. to read its optimised HLO) before the report is returned.
  """
  exp = setup(config, devices)
  clips = exp.layout.clips
  report = _compile(exp, exp.jit_train_step(), (exp.abstract_state, exp.abstract_batch(), *exp.abstract_frozen),
                    train_flops_per_clip(exp) * clips, on_compiled)
  report.update({
      "clips_global": int(clips),
      "clips_per_device": clips / exp.mesh.size,
      "videos_per_device": config.batch_size / exp.mesh.size,
      "accum_steps": exp.layout.accum_steps,
      "state_bytes_per_device": _bytes_per_device(exp.abstract_state),
      "frozen_bytes_per_device": _bytes_per_device(exp.abstract_frozen),
  })
  return report


def compile_test_forward(config, devices=None, rows: int | None = None,
                         on_compiled=None) -> dict:
  """Lowers and compiles the multi-view test's forward (Experiment.predict_fn) of a
  supervised config: `rows` views per call (default config.eval.batch_size, else
  batch_size), as the test feeds them; the same report as compile_train_step."""
  exp = setup(config, devices)
  if config.stage == "pretrain":
    raise ConfigError("the multi-view test's forward needs a supervised stage "
                      "(config.stage=postpretrain|finetune), not pretrain")
  d = config.data
  rows = int(rows or config.eval.batch_size or config.batch_size)
  if config.stage == "detect":
    return _compile_detect_forward(exp, rows, on_compiled)
  video = jax.ShapeDtypeStruct((rows, d.frames, d.image_size, d.image_size, 3), np.uint8,
                               sharding=exp.batch_sharding(5))
  flops = classifier_flops_per_clip(config.model.variant, d.frames, d.image_size,
                                    exp.task.num_classes)["forward"] * rows
  report = _compile(exp, exp.predict_fn, (exp.abstract_state.params, video), flops,
                    on_compiled)
  report.update({"step": "test_forward", "clips_global": rows,
                 "clips_per_device": rows / exp.mesh.size,
                 "state_bytes_per_device": _bytes_per_device(exp.abstract_state.params)})
  return report


def _compile_detect_forward(exp, rows: int, on_compiled) -> dict:
  """The detector's test forward (evaluation.detection's program) on padded frames of the
  largest config.detect.buckets entry (the costliest of the programs a test compiles) with
  config.detect.eval_max_boxes boxes each."""
  from vmae2_jax.evaluation.detection import _predict_fn
  c = exp.config
  h, w = max((tuple(int(v) for v in b) for b in c.detect.buckets), key=lambda b: b[0] * b[1])
  n = int(c.detect.eval_max_boxes)
  args = (exp.abstract_state.params,
          jax.ShapeDtypeStruct((rows, c.data.frames, h, w, 3), np.uint8,
                               sharding=exp.batch_sharding(5)),
          jax.ShapeDtypeStruct((rows, n, 4), np.float32, sharding=exp.batch_sharding(3)),
          jax.ShapeDtypeStruct((rows, 2), np.int32, sharding=exp.batch_sharding(2)))
  # the encoder on the whole padded frame (RoIAlign and the head are a rounding error)
  flops = classifier_flops_per_clip(c.model.variant, c.data.frames, (h, w),
                                    exp.task.num_classes)["forward"] * rows
  report = _compile(exp, _predict_fn(exp), args, flops, on_compiled)
  report.update({"step": "test_forward", "clips_global": rows,
                 "clips_per_device": rows / exp.mesh.size, "frame_hw": [h, w], "boxes": n,
                 "state_bytes_per_device": _bytes_per_device(exp.abstract_state.params)})
  return report


def _compile(exp, jitted, args, model_flops: float, on_compiled) -> dict:
  """Lowers and compiles `jitted` on the abstract `args`; the report's shared part."""
  config, mesh = exp.config, exp.mesh
  device = mesh.devices.flat[0]
  t0 = time.perf_counter()
  lowered = jitted.lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()

  mem = compiled.memory_analysis()
  cost = _cost(compiled)
  report = {
      "stage": config.stage,
      "step": "train",
      "variant": config.model.variant,
      "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "devices": int(mesh.size),
      "platform": device.platform,
      "device_kind": device.device_kind,
      "dtype": config.model.dtype, "remat": config.model.remat,
      "scan_layers": bool(config.model.scan_layers),
      "attention": _attention(config, device.platform),
      "num_params": exp.num_params,
      "lower_seconds": t1 - t0, "compile_seconds": t2 - t1,
      "flops_per_device": float(cost.get("flops", float("nan"))),
      "bytes_accessed_per_device": float(cost.get("bytes accessed", float("nan"))),
      "model_flops_per_device": float(model_flops / mesh.size),
      "hlo": hlo_summary.summarize(compiled.as_text()),
  }
  if cost.get("optimal_seconds", 0) > 0:
    report["optimal_seconds"] = float(cost["optimal_seconds"])
  if mem is not None:
    m = {"arguments": mem.argument_size_in_bytes, "outputs": mem.output_size_in_bytes,
         "aliased": mem.alias_size_in_bytes, "temporaries": mem.temp_size_in_bytes,
         "generated_code": mem.generated_code_size_in_bytes}
    m["peak_estimate"] = m["arguments"] + m["outputs"] - m["aliased"] + m["temporaries"]
    report["memory_bytes_per_device"] = {k: int(v) for k, v in m.items()}
  if on_compiled is not None:
    on_compiled(compiled, report)
  return report


def _attention(config, platform: str) -> str:
  """The attention implementation the model was built with for `platform`."""
  with building_for(platform):
    return resolved_numerics(ModelOptions.from_config(config.model))["attention"]


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else {}
  return {k: float(v) for k, v in dict(cost or {}).items()}


# Unrolled layers can still hold matmul loops: libtpu's collective matmuls on FSDP groups of
# 8-32 TPU chips.
COLLECTIVE_MATMUL_FIX = ("collective matmuls off (bench aot --nocollective_matmul, or "
                         f"LIBTPU_INIT_ARGS='{' '.join(topologies.NO_COLLECTIVE_MATMUL)}')")


def _mfu(model_flops: float, seconds: float | None, matmul_loops: int,
         peak_flops: float) -> tuple[float | None, str]:
  """(compiler-estimated MFU, why it is None)."""
  if not seconds or seconds <= 0:
    return None, "the compiler's cost analysis gives no time for this backend"
  if matmul_loops:
    return None, ("the cost analysis counts a loop body once (scanned layers or collective "
                  "matmuls): compile with scan_layers=False and with " + COLLECTIVE_MATMUL_FIX
                  + ", for a whole-step estimate")
  return model_flops / (seconds * peak_flops), ""


def estimated_mfu(compiled, model_flops_per_device: float,
                  peak_flops: float) -> tuple[float | None, str]:
  """(compiler-estimated MFU of a compiled step, why it is None): model FLOPs over the cost
  model's optimal_seconds x the device's peak. An estimate, never a measurement."""
  loops = hlo_summary.summarize(compiled.as_text())["matmul_loops"]
  return _mfu(model_flops_per_device, _cost(compiled).get("optimal_seconds"), loops, peak_flops)


def add_chip_estimates(report: dict, chip, headroom: float = 0.0) -> dict:
  """Adds what follows from the target chip's HBM and peak: `hbm_bytes_per_chip` (what
  one program may use on it: topologies.CHIPS),
  `peak_bytes_per_chip`, `fits` (peak <= (1 - headroom) x HBM) and
  `compiler_estimated_mfu` = model FLOPs / (optimal_seconds x peak), a fraction; None
  where the cost model counts a loop body once (scanned layers: compile unrolled) or
  gives no time."""
  peak = report.get("memory_bytes_per_device", {}).get("peak_estimate")
  mfu, _ = _mfu(report["model_flops_per_device"], report.get("optimal_seconds"),
                report["hlo"]["matmul_loops"], chip.peak_bf16_flops)
  report.update({
      "chip": chip.name, "hbm_bytes_per_chip": int(chip.hbm_bytes),
      "peak_bf16_flops_per_chip": chip.peak_bf16_flops, "headroom": headroom,
      "peak_bytes_per_chip": peak,
      "fits": None if peak is None else bool(peak <= (1 - headroom) * chip.hbm_bytes),
      "compiler_estimated_mfu": mfu,
  })
  return report


def format_report(r: dict) -> str:
  """The report in lines; the compiler's estimates are always labelled as such."""
  what = "train step" if r.get("step", "train") == "train" else "multi-view test forward"
  videos = f" ({r['videos_per_device']:g} videos)" if "videos_per_device" in r else ""
  lines = [f"compile-only ({r['stage']}, {what}): ViT-{r['variant']} on mesh {r['mesh']} "
           f"({r['devices']} {r.get('device_kind', '')} devices, platform {r['platform']}), "
           f"{r['clips_per_device']:g} clips/device{videos}, {r['dtype']} compute, "
           f"remat={r['remat']}, scan={r['scan_layers']}, attention {r.get('attention')}",
           f"  params {r['num_params'] / 1e6:.1f}M; "
           f"{'train state' if what == 'train step' else 'parameters'} per device "
           f"{r['state_bytes_per_device'] / GB:.3f} GB"
           + (f"; frozen teacher per device {r['frozen_bytes_per_device'] / GB:.3f} GB"
              if r.get("frozen_bytes_per_device") else ""),
           f"  lowered in {r['lower_seconds']:.1f}s, compiled in {r['compile_seconds']:.1f}s"]
  m = r.get("memory_bytes_per_device")
  if m:
    lines.append("  per-device memory (GB): " + ", ".join(
        f"{k} {m[k] / GB:.3f}" for k in
        ("arguments", "outputs", "aliased", "temporaries", "peak_estimate")))
  if r.get("hbm_bytes_per_chip") and m:
    hbm, peak = r["hbm_bytes_per_chip"], m["peak_estimate"]
    verdict = "fits" if r["fits"] else "DOES NOT FIT"
    lines.append(f"  HBM per {r['chip']} chip: peak {peak / GB:.2f} of {hbm / GB:.2f} GB usable "
                 f"({100 * peak / hbm:.0f}%): {verdict}"
                 + (f" with {100 * r['headroom']:g}% headroom" if r["headroom"] else ""))
  h = r["hlo"]
  loops = h["matmul_loops"]
  ratio = r["flops_per_device"] / r["model_flops_per_device"] if r["model_flops_per_device"] else 0
  if math.isnan(r["flops_per_device"]):
    lines.append(f"  FLOPs per device per step: model {r['model_flops_per_device'] / 1e12:.4g} "
                 "TFLOP (analytic); this backend's compiler gives no cost analysis")
  else:
    lines.append(f"  FLOPs per device per step: compiled {r['flops_per_device'] / 1e12:.4g} TFLOP "
                 f"(the compiler's count, incl. remat recompute"
                 f"{'' if not loops else '; loop bodies once'}), model "
                 f"{r['model_flops_per_device'] / 1e12:.4g} TFLOP (analytic, no recompute): "
                 f"ratio {ratio:.2f}")
  if loops:
    trips = ", ".join(f"{t if t is not None else '?'}" + (f" x{n}" if n > 1 else "")
                      for t, n in collections.Counter(h["trip_counts"]).items())
    ring = h.get("collective_matmul_loops", 0)
    what = ("e.g. scanned layers" if not ring else
            f"{ring} of them collective matmuls: FSDP gathers or reduce-scatters done "
            "piecewise around the devices beside the matmul")
    # A scanned layer loop holding collective matmuls counts as one of them: unroll too.
    fixes = ([] if ring == loops and not r["scan_layers"] else
             ["the layers unrolled (--unroll, i.e. config.model.scan_layers=False)"])
    fixes += [COLLECTIVE_MATMUL_FIX] if ring else []
    lines.append(f"  {loops} loop(s) running matmuls (trip counts {trips}; {what}): "
                 "the cost analysis counts each loop body once, so the compiled FLOPs and the "
                 "cost model's time are not the whole step's; compile with "
                 f"{' and '.join(fixes)} for whole-step estimates")
  if "optimal_seconds" in r:
    text = ("  compiler-estimated step time (cost model's optimal_seconds): "
            f"{r['optimal_seconds']:.4g} s")
    if r.get("compiler_estimated_mfu") is not None:
      text += (f" -> compiler-estimated MFU {100 * r['compiler_estimated_mfu']:.1f}% of "
               f"{r['peak_bf16_flops_per_chip'] / 1e12:g} TFLOP/s (an estimate by the "
               "compiler's cost model, not a measurement)")
    lines.append(text)
  elif h.get("dcn_transfers") and r["platform"] == "tpu":
    # libtpu 0.0.42.1 returns a negative optimal_seconds for a multi-slice program
    lines.append("  no compiler-estimated step time: libtpu's cost model gives none for a "
                 "multi-slice program (compile one slice of the same shape for the per-slice "
                 "estimate; the DCN traffic is on the line below)")
  sizes = h.get("collective_bytes", {})
  lines.append("  collectives (the TPU's fused reduce-scatters included; output GB per device"
               + ("; a loop body's once" if loops else "") + "): "
               + ", ".join(f"{k} {v}" + (f" ({sizes[k] / GB:.3g} GB)" if sizes.get(k) else "")
                           for k, v in h["collectives"].items()))
  dcn = h.get("dcn_transfers") or {}
  if dcn:
    lines.append("  across slices (DCN: the megascale runtime's send/recv; GB each chip sends"
                 + ("; a loop body's once" if loops else "") + "): "
                 + ", ".join(f"{k.lower().replace('_', '-')} {n} "
                             f"({h['dcn_bytes'][k] / GB:.3g} GB)" for k, n in dcn.items()))
  calls = h["custom_call_targets"]
  callbacks = hlo_summary.host_callbacks(h)
  lines.append("  custom calls: " + (", ".join(f"{k} x{v}" for k, v in sorted(calls.items()))
                                     or "none")
               + "; host callbacks: " + (", ".join(callbacks) or "none"))
  return "\n".join(lines)


def target_devices(config, topology: str, field: str = "config.compile_topology"):
  """(TPU Target, its compile-only devices) for a booked name; a multi-slice target puts the
  config's data axis across slices (dcn_data) unless config.mesh already splits over DCN.
  Raises ConfigError naming `field` (unknown name, no libtpu)."""
  try:
    target = topologies.target(topology, field=field)
    devices = topologies.devices(target, field=field)
  except topologies.TopologyError as e:
    raise ConfigError(str(e)) from None
  mesh = config.mesh
  if target.num_slices > 1 and all(int(mesh.get(f"dcn_{a}", 1)) == 1
                                   for a in ("data", "fsdp", "tensor")):
    mesh.dcn_data = target.num_slices
  return target, devices


def compile_for(config, topology: str = "", *, test_forward: bool = False, rows=None,
                headroom: float = 0.0, field: str = "config.compile_topology") -> dict:
  """compile_train_step (or compile_test_forward) on the TPU `topology` when given (else
  JAX's devices), with the chip's HBM and MFU estimates added."""
  target, devices = (target_devices(config, topology, field) if topology else (None, None))
  try:
    if test_forward:
      report = compile_test_forward(config, devices, rows)
    else:
      report = compile_train_step(config, devices)
  except ValueError as e:  # the mesh does not divide the target's chips
    if target is None or "config.mesh" not in str(e):
      raise
    raise ConfigError(f"{e} ({target.describe()})") from None
  if target is not None:
    report["topology"] = target.name
    add_chip_estimates(report, target.chip, headroom)
  return report


def run(config) -> dict:
  """Compiles, logs and prints the report (process 0 prints); returns it."""
  report = compile_for(config, config.get("compile_topology", ""))
  text = format_report(report)
  if jax.process_index() == 0:
    print(text)
    print("COMPILE_ONLY_JSON " + json.dumps(report))
  return report
