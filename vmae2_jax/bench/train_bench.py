"""Train-step throughput of any stage: the trainer's jitted AdamW step, timed.

  python -m vmae2_jax.bench [step] --config=configs/pretrain_s.py --json [--batch=N]
  python -m vmae2_jax.bench [step] --config=configs/finetune_s_k400.py --json

The step is built exactly as the trainer builds it (experiment.setup ->
jit_train_step: same shardings and donation) and fed a fixed synthetic batch
of uint8 clips (and labels). "batch" counts clips per step: one view per
video (data.num_sample = 1, batch_size = --batch).

Pre-training configs are compiled twice -- with the config's decoder masking
and with decoder masking off (the decoder then reconstructs every
encoder-masked token, VideoMAE v1) -- and both are timed, interleaved in
rounds so machine noise hits both alike. Supervised configs (postpretrain,
finetune) time the fine-tuning step as configured: mixup / cutmix on device,
label smoothing, soft-target cross-entropy, drop path, layer decay.

Reports medians, analytic TFLOP/s (vmae2_jax.bench.flops) and MFU with
--peak_tflops. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

from vmae2_jax.bench.common import (StepRunner, interleave, is_supervised, load_config,
                                    without_data)

__all__ = ["load_config", "parse_args", "apply_overrides", "run", "main"]


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.bench [step]", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/pretrain_s.py")
  p.add_argument("--batch", type=int, default=0,
                 help="clips per step (default: 2 on CPU, 32 per device elsewhere)")
  p.add_argument("--variant", default="", help="override config.model.variant")
  p.add_argument("--teacher_variant", default="",
                 help="stage distill: override config.distill.teacher_variant")
  p.add_argument("--frames", type=int, default=0, help="override config.data.frames")
  p.add_argument("--image_size", type=int, default=0, help="override config.data.image_size")
  p.add_argument("--num_classes", type=int, default=0,
                 help="override config.model.num_classes (supervised stages)")
  p.add_argument("--dtype", default="", help="compute dtype: float32 | bfloat16")
  p.add_argument("--remat", default="", help="remat policy name (none, full, dots, ...)")
  p.add_argument("--scan_layers", choices=("", "true", "false"), default="")
  p.add_argument("--attention", default="", help="auto | xla | cudnn | fused_cpu")
  p.add_argument("--cpu_kernels", choices=("", "true", "false"), default="",
                 help="override config.model.cpu_kernels")
  p.add_argument("--decoder_ratio", type=float, default=0.0,
                 help="running-cell ratio of the dual-masking run (default: config's)")
  p.add_argument("--steps", type=int, default=6, help="timed steps per mode")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps per mode after compile")
  p.add_argument("--rounds", type=int, default=0,
                 help="interleaving rounds (default: min(steps, 3))")
  p.add_argument("--devices", type=int, default=1, help="devices in the mesh (-1 = all)")
  p.add_argument("--peak_tflops", type=float, default=0.0,
                 help="peak dense TFLOP/s per device, for MFU")
  p.add_argument("--no_encoder_only", action="store_true",
                 help="pre-training: skip the decoder-masking-off comparison run")
  p.add_argument("--json", action="store_true", help="print the JSON summary last")
  return p.parse_args(argv)


def apply_overrides(config, a):
  """Bench-specific config: batch in clips, sizes, numerics, no data set, one flat schedule."""
  import jax

  config = copy.deepcopy(config)
  if a.variant:
    config.model.variant = a.variant
  if a.frames:
    config.data.frames = a.frames
  if a.image_size:
    config.data.image_size = a.image_size
  if config.stage == "distill":  # a random teacher of the config's size (no weights read)
    config.distill.teacher_variant = a.teacher_variant or config.distill.teacher_variant
    if a.image_size:  # the teacher at the student's crop size
      config.distill.teacher_image_size = 0
    config.distill.teacher_eval = False
  if a.num_classes:
    config.model.num_classes = a.num_classes
  if a.dtype:
    config.model.dtype = a.dtype
  if a.remat:
    config.model.remat = a.remat
  if a.scan_layers:
    config.model.scan_layers = a.scan_layers == "true"
  if a.attention:
    config.model.attention = a.attention
  if a.cpu_kernels:
    config.model.cpu_kernels = a.cpu_kernels == "true"
  if a.decoder_ratio:
    config.masking.decoder_ratio = a.decoder_ratio
  on_cpu = jax.default_backend() == "cpu"
  n_dev = a.devices if a.devices > 0 else jax.device_count()
  config = without_data(config, clips=a.batch or (2 if on_cpu else 32 * n_dev))
  config.optim.accum_steps = 1
  config.mesh = {"data": 1, "fsdp": -1, "tensor": 1}
  return config


def _common_fields(config, runner: StepRunner, devices, peak: float) -> dict:
  import jax

  from vmae2_jax.bench.flops import train_flops_per_clip
  from vmae2_jax.models.layers import resolved_numerics
  from vmae2_jax.models.options import ModelOptions

  m = config.model
  b = config.batch_size
  n_dev = len(devices)
  flops = train_flops_per_clip(runner.exp)
  step = runner.median
  achieved = flops * b / step / 1e12
  return {
      "stage": config.stage, "task": runner.exp.task.kind,
      "variant": m.variant, "batch": b, "frames": config.data.frames,
      "image_size": config.data.image_size, "dtype": m.dtype, "remat": m.remat,
      "scan_layers": bool(m.scan_layers), "devices": n_dev,
      "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
      "step_time_s": step, "step_times_s": runner.times,
      "cpu_s_per_step": runner.cpu_median,
      "minor_faults": runner.faults,
      "clips_per_s": b / step,
      "model_tflops_per_clip": flops / 1e12,
      "achieved_tflops": achieved,
      "achieved_tflops_per_device": achieved / n_dev,
      "mfu": (achieved / n_dev / peak) if peak else None,
      "loss": runner.loss, "compile_s": runner.compile_s,
      **resolved_numerics(ModelOptions.from_config(m)),
  }


def run(argv=None) -> dict:
  """Runs the benchmark and returns the summary dict (also what --json prints)."""
  a = parse_args(list(sys.argv[1:] if argv is None else argv))
  config = load_config(a.config)
  from vmae2_jax.host_memory import tune_for_cpu_compute
  malloc_kept = tune_for_cpu_compute(config.host_malloc)  # as main.py does, before JAX starts
  import jax

  config = apply_overrides(config, a)
  devices = jax.devices()[: (a.devices if a.devices > 0 else jax.device_count())]

  modes = {"dual": config} if not is_supervised(config) else {"finetune": config}
  if not is_supervised(config) and not a.no_encoder_only:
    enc_only = copy.deepcopy(config)
    enc_only.masking.decoder = "none"
    modes["encoder_only"] = enc_only
  runners = {}
  for name, cfg in modes.items():
    runners[name] = StepRunner(name, cfg, devices)
    print(f"[{name}] compiled in {runners[name].compile_s:.1f}s", flush=True)
  load = interleave(list(runners.values()), a.steps, a.rounds or min(a.steps, 3), a.warmup)

  main_runner = next(iter(runners.values()))
  out = _common_fields(config, main_runner, devices, a.peak_tflops)
  out["host_malloc_kept"] = malloc_kept
  out["loadavg_1min_before_after"] = load
  params = main_runner.exp.abstract_state.params
  from vmae2_jax.models import count_params
  n_enc = count_params(params["encoder"])
  if is_supervised(config):
    task = main_runner.exp.task
    mix = config.mixup
    out.update({
        "num_classes": task.num_classes, "params_encoder": n_enc,
        "params_head": count_params(params) - n_enc,
        "mixup": {"mixup_alpha": mix.mixup_alpha, "cutmix_alpha": mix.cutmix_alpha,
                  "prob": mix.prob, "switch_prob": mix.switch_prob,
                  "label_smoothing": mix.label_smoothing},
        "drop_path_rate": config.model.drop_path_rate,
        "layer_decay": config.optim.layer_decay,
    })
    if config.stage == "distill":  # model_tflops_per_clip above includes its forward
      out.update({"teacher_variant": task.teacher_variant,
                  "teacher_image_size": task.teacher_image_size,
                  "params_teacher": count_params(task.teacher_abstract)})
    return out

  from vmae2_jax.bench.flops import pretrain_flops_per_clip
  dual = runners["dual"]
  spec = dual.exp.task.spec
  flops = pretrain_flops_per_clip(config.model.variant, config.data.frames,
                                  config.data.image_size, spec)
  b = config.batch_size
  out.update({
      "masking": {"encoder": config.masking.encoder, "encoder_ratio": config.masking.encoder_ratio,
                  "decoder": config.masking.decoder,
                  "decoder_ratio": config.masking.decoder_ratio,
                  "visible": flops["visible"], "targets": flops["targets"]},
      "params_encoder": n_enc, "params_decoder": count_params(params) - n_enc,
  })
  if "encoder_only" in runners:
    eo = runners["encoder_only"]
    flops_eo = pretrain_flops_per_clip(config.model.variant, config.data.frames,
                                       config.data.image_size, eo.exp.task.spec)
    out.update({
        "step_time_s_encoder_only": eo.median, "step_times_s_encoder_only": eo.times,
        "clips_per_s_encoder_only": b / eo.median,
        "model_tflops_per_clip_encoder_only": flops_eo["train"] / 1e12,
        "achieved_tflops_encoder_only": flops_eo["train"] * b / eo.median / 1e12,
        "speedup_dual_masking": eo.median / dual.median,
    })
  return out


def _human(out: dict) -> None:
  print(f"ViT-{out['variant']} {out['stage']} step, {out['frames']}x{out['image_size']}^2 batch "
        f"{out['batch']} {out['dtype']} remat={out['remat']} on {out['devices']}x "
        f"{out['device_kind']} (attention {out['attention']}, CPU kernels "
        f"{'on' if out['cpu_kernels'] else 'off'})")
  mfu = f", MFU {out['mfu'] * 100:.1f}%" if out["mfu"] is not None else ""
  rate = (f"{out['step_time_s'] * 1e3:.1f} ms/step, {out['clips_per_s']:.3f} clips/s, "
          f"{out['model_tflops_per_clip']:.4f} TFLOP/clip, {out['achieved_tflops']:.3f} TFLOP/s"
          + mfu)
  if out["task"] != "pretrain":
    print(f"  params: encoder {out['params_encoder'] / 1e6:.2f}M, head and fc_norm "
          f"{out['params_head'] / 1e6:.3f}M; {out['num_classes']} classes")
    mx = out["mixup"]
    print(f"  fine-tuning step (mixup {mx['mixup_alpha']:g} / cutmix {mx['cutmix_alpha']:g}, "
          f"smoothing {mx['label_smoothing']:g}, drop path {out['drop_path_rate']:g}, layer "
          f"decay {out['layer_decay']:g}): {rate}")
  else:
    print(f"  params: encoder {out['params_encoder'] / 1e6:.2f}M, "
          f"decoder {out['params_decoder'] / 1e6:.2f}M")
    mk = out["masking"]
    print(f"  dual masking ({mk['encoder']} {mk['encoder_ratio']}, {mk['decoder']} "
          f"{mk['decoder_ratio']}: {mk['visible']} visible, {mk['targets']} decoded): {rate}")
    if "step_time_s_encoder_only" in out:
      print(f"  encoder-only masking: {out['step_time_s_encoder_only'] * 1e3:.1f} ms/step, "
            f"{out['clips_per_s_encoder_only']:.3f} clips/s, "
            f"{out['achieved_tflops_encoder_only']:.3f} TFLOP/s")
      print(f"  dual-masking speed-up: {out['speedup_dual_masking']:.2f}x")
  lo, hi = out["loadavg_1min_before_after"]
  faulted = sum(f > 10_000 for f in out["minor_faults"])
  print(f"  CPU seconds per step {out['cpu_s_per_step']:.2f}; steps that faulted in > 40 MB "
        f"{faulted}/{len(out['minor_faults'])}; 1-min load average {lo:.1f} -> {hi:.1f}")


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "step":
    argv = argv[1:]
  out = run(argv)
  _human(out)
  if "--json" in argv:
    print(json.dumps(out, default=float))
  return 0
