"""Pre-training step throughput: the trainer's jitted AdamW step, timed.

  python -m vmae2_jax.bench --config=configs/pretrain_s.py --json [--batch=N]

Builds the step exactly as the trainer does (trainer.build + make_train_step,
same shardings and donation) on synthetic uint8 clips, compiles it twice --
with the config's decoder masking and with decoder masking off (the decoder
then reconstructs every encoder-masked token, VideoMAE v1) -- and times both
after warm-up, interleaved in rounds so machine noise hits both alike.
Reports medians. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import statistics
import sys
import time

import jax
import numpy as np


def load_config(spec: str):
  """`path/to/config.py[:arg]` -> the ConfigDict its get_config(arg) returns."""
  path, _, arg = spec.partition(":")
  mod_spec = importlib.util.spec_from_file_location("_bench_config", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(arg or None)


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.bench", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/pretrain_s.py")
  p.add_argument("--batch", type=int, default=0,
                 help="clips per step (default: 2 on CPU, 32 per device elsewhere)")
  p.add_argument("--variant", default="", help="override config.model.variant")
  p.add_argument("--frames", type=int, default=0, help="override config.data.frames")
  p.add_argument("--image_size", type=int, default=0, help="override config.data.image_size")
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
                 help="skip the decoder-masking-off comparison run")
  p.add_argument("--json", action="store_true", help="print the JSON summary last")
  return p.parse_args(argv)


def apply_overrides(config, a):
  """Bench-specific config: batch, sizes, numerics; schedule long enough to be flat."""
  config = copy.deepcopy(config)
  on_cpu = jax.default_backend() == "cpu"
  n_dev = a.devices if a.devices > 0 else jax.device_count()
  config.batch_size = a.batch or (2 if on_cpu else 32 * n_dev)
  config.data.num_sample = 1
  config.data.source = "synthetic"
  if a.variant:
    config.model.variant = a.variant
  if a.frames:
    config.data.frames = a.frames
  if a.image_size:
    config.data.image_size = a.image_size
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
  config.total_steps = 10_000
  config.warmup_steps = 100
  config.mesh = {"data": 1, "fsdp": -1, "tensor": 1}
  return config


def build_step(config, devices):
  """(jitted step, initial state, batch, experiment) for `config`, as the trainer builds them."""
  from vmae2_jax.training.experiment import setup

  exp = setup(config, devices)
  rng = np.random.default_rng(0)
  batch = {}
  for k, s in exp.abstract_batch().items():
    high = 256 if s.dtype == np.uint8 else max(1, exp.task.num_classes)
    batch[k] = jax.device_put(rng.integers(0, high, s.shape).astype(s.dtype), s.sharding)
  return exp.jit_train_step(), exp.init_state(), batch, exp


class _Runner:
  """One compiled mode: keeps its own donated state between timing rounds."""

  def __init__(self, config, devices):
    self.config = config
    self.step_fn, self.state, self.batch, self.exp = build_step(config, devices)
    self.spec = getattr(self.exp.task, "spec", None)
    t0 = time.perf_counter()
    self.step_fn = self.step_fn.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0
    self.times: list[float] = []
    self.cpu_times: list[float] = []
    self.loss = float("nan")

  def run(self, n: int, record: bool = True):
    for _ in range(n):
      t0, c0 = time.perf_counter(), time.process_time()
      self.state, metrics = self.step_fn(self.state, self.batch)
      jax.block_until_ready((self.state, metrics))
      if record:
        self.times.append(time.perf_counter() - t0)
        self.cpu_times.append(time.process_time() - c0)
    self.loss = float(metrics["loss"])

  @property
  def median(self) -> float:
    return statistics.median(self.times)


def run(argv=None) -> dict:
  """Runs the benchmark and returns the summary dict (also what --json prints)."""
  from vmae2_jax.bench.flops import pretrain_flops_per_clip
  from vmae2_jax.models import count_params
  from vmae2_jax.models.layers import resolved_numerics
  from vmae2_jax.models.options import ModelOptions

  a = parse_args(list(sys.argv[1:] if argv is None else argv))
  config = load_config(a.config)
  from vmae2_jax.host_memory import tune_for_cpu_compute
  malloc_kept = tune_for_cpu_compute(config.host_malloc)  # as main.py does
  config = apply_overrides(config, a)
  devices = jax.devices()[: (a.devices if a.devices > 0 else jax.device_count())]
  b = config.batch_size
  m = config.model

  modes = {"dual": config}
  if not a.no_encoder_only:
    enc_only = copy.deepcopy(config)
    enc_only.masking.decoder = "none"
    modes["encoder_only"] = enc_only
  runners = {}
  for name, cfg in modes.items():
    runners[name] = _Runner(cfg, devices)
    print(f"[{name}] compiled in {runners[name].compile_s:.1f}s "
          f"(decoder masking {cfg.masking.decoder})", flush=True)
  for r in runners.values():
    r.run(a.warmup, record=False)
  rounds = a.rounds or min(a.steps, 3)
  per_round = [a.steps // rounds + (i < a.steps % rounds) for i in range(rounds)]
  for n in per_round:  # interleaved: noise on a shared machine hits both modes alike
    for r in runners.values():
      r.run(n)

  dual = runners["dual"]
  params = dual.exp.abstract_state.params
  n_enc = count_params(params["encoder"])
  n_dec = count_params(params) - n_enc
  flops = pretrain_flops_per_clip(m.variant, config.data.frames, config.data.image_size,
                                  dual.spec)
  n_dev = len(devices)
  step = dual.median
  achieved = flops["train"] * b / step / 1e12
  out = {
      "variant": m.variant, "batch": b, "frames": config.data.frames,
      "image_size": config.data.image_size, "dtype": m.dtype, "remat": m.remat,
      "scan_layers": bool(m.scan_layers), "devices": n_dev,
      "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
      "masking": {"encoder": config.masking.encoder, "encoder_ratio": config.masking.encoder_ratio,
                  "decoder": config.masking.decoder,
                  "decoder_ratio": config.masking.decoder_ratio,
                  "visible": flops["visible"], "targets": flops["targets"]},
      "params_encoder": n_enc, "params_decoder": n_dec,
      "step_time_s": step, "step_times_s": dual.times,
      "clips_per_s": b / step,
      "model_tflops_per_clip": flops["train"] / 1e12,
      "achieved_tflops": achieved,
      "achieved_tflops_per_device": achieved / n_dev,
      "mfu": (achieved / n_dev / a.peak_tflops) if a.peak_tflops else None,
      "loss": dual.loss, "compile_s": dual.compile_s,
      **resolved_numerics(ModelOptions.from_config(m)), "host_malloc_kept": malloc_kept,
  }
  if "encoder_only" in runners:
    eo = runners["encoder_only"]
    flops_eo = pretrain_flops_per_clip(m.variant, config.data.frames, config.data.image_size,
                                       eo.spec)
    out.update({
        "step_time_s_encoder_only": eo.median, "step_times_s_encoder_only": eo.times,
        "clips_per_s_encoder_only": b / eo.median,
        "model_tflops_per_clip_encoder_only": flops_eo["train"] / 1e12,
        "achieved_tflops_encoder_only": flops_eo["train"] * b / eo.median / 1e12,
        "speedup_dual_masking": eo.median / step,
    })
  return out


def _human(out: dict) -> None:
  print(f"ViT-{out['variant']} {out['frames']}x{out['image_size']}^2 batch {out['batch']} "
        f"{out['dtype']} remat={out['remat']} on {out['devices']}x {out['device_kind']}")
  print(f"  params: encoder {out['params_encoder'] / 1e6:.2f}M, "
        f"decoder {out['params_decoder'] / 1e6:.2f}M")
  mk = out["masking"]
  print(f"  dual masking ({mk['encoder']} {mk['encoder_ratio']}, {mk['decoder']} "
        f"{mk['decoder_ratio']}: {mk['visible']} visible, {mk['targets']} decoded): "
        f"{out['step_time_s'] * 1e3:.1f} ms/step, {out['clips_per_s']:.3f} clips/s, "
        f"{out['model_tflops_per_clip']:.4f} TFLOP/clip, {out['achieved_tflops']:.3f} TFLOP/s"
        + (f", MFU {out['mfu'] * 100:.1f}%" if out["mfu"] is not None else ""))
  if "step_time_s_encoder_only" in out:
    print(f"  encoder-only masking: {out['step_time_s_encoder_only'] * 1e3:.1f} ms/step, "
          f"{out['clips_per_s_encoder_only']:.3f} clips/s, "
          f"{out['achieved_tflops_encoder_only']:.3f} TFLOP/s")
    print(f"  dual-masking speed-up: {out['speedup_dual_masking']:.2f}x")


def main(argv=None) -> int:
  out = run(argv)
  _human(out)
  if "--json" in (sys.argv[1:] if argv is None else argv):
    print(json.dumps(out, default=float))
  return 0
