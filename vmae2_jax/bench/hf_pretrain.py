"""Side by side on this machine: Hugging Face VideoMAEForPreTraining vs our pre-training step.

  python -m vmae2_jax.bench hf [--config=configs/pretrain_s.py] [--batch=2] [--steps=6]
                               [--rounds=3] [--json]

The PyTorch stand-in for the reference backbone: transformers'
VideoMAEForPreTraining, random init, the config's variant (ViT-S/16: 384
wide, 12 layers, 6 heads; decoder 192 wide, 4 layers, 3 heads), q/v bias,
normalised-pixel loss, 16x224x224 clips, the same tube mask ratio as a
bool_masked_pos (so its decoder reconstructs every encoder-masked token),
SDPA attention, one full AdamW step (forward, loss, backward, step) per
iteration, float32, inputs already normalised (as the reference's data
loader hands them over).

Ours: the trainer's jitted step (vmae2_jax.bench.common.StepRunner) with
decoder masking on (the config's running cell) and off. The three steps are
timed interleaved, in rounds, after warm-up, with the same number of
threads, and medians are reported. OPENBLAS_* variables are left as they
are. Both sides share the process and so its glibc malloc settings
(--host_malloc; "auto" keeps freed memory on a CPU-only host, as
`python -m vmae2_jax.main` does).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

import numpy as np

from vmae2_jax.bench.common import StepRunner, Timed, interleave, load_config, without_data


def hf_videomae_config(size, frames: int, image: int, **extra):
  """transformers' VideoMAEConfig for one of our ViTSize variants, SDPA attention."""
  from transformers import VideoMAEConfig

  cfg = VideoMAEConfig(
      image_size=image, patch_size=size.patch, num_channels=3, num_frames=frames, tubelet_size=2,
      hidden_size=size.width, num_hidden_layers=size.depth, num_attention_heads=size.heads,
      intermediate_size=size.mlp_dim, hidden_act="gelu", qkv_bias=True,
      decoder_hidden_size=size.decoder_width, decoder_num_hidden_layers=size.decoder_depth,
      decoder_num_attention_heads=size.decoder_heads,
      decoder_intermediate_size=size.decoder_mlp_dim, **extra)
  cfg._attn_implementation = "sdpa"
  return cfg


def hf_pixel_values(videos_uint8: np.ndarray):
  """uint8 [B, T, H, W, 3] -> ImageNet-normalised float32 torch [B, T, 3, H, W] (host side)."""
  import torch

  from vmae2_jax.models.patching import MEAN, STD
  x = (videos_uint8.astype(np.float32) / 255.0 - MEAN) / STD
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3)))


def hf_pretrain_step(size, batch: int, frames: int, image: int, encoder_ratio: float,
                     threads: int, seed: int = 0):
  """A closure running one HF AdamW pre-training step, and the model's parameter count."""
  import torch
  from transformers import VideoMAEForPreTraining

  from vmae2_jax.bench.common import random_videos

  torch.set_num_threads(threads)
  torch.manual_seed(seed)
  cfg = hf_videomae_config(size, frames, image, use_mean_pooling=False, norm_pix_loss=True)
  model = VideoMAEForPreTraining(cfg)
  model.config._attn_implementation = "sdpa"
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                          weight_decay=0.05)

  rng = np.random.default_rng(seed)
  t, hw = frames // 2, (image // size.patch) ** 2
  n_mask = int(encoder_ratio * hw)
  masks = []
  for _ in range(batch):  # tube: one spatial mask repeated over the time slots
    spatial = np.zeros(hw, bool)
    spatial[rng.permutation(hw)[:n_mask]] = True
    masks.append(np.tile(spatial, t))
  bool_masked_pos = torch.from_numpy(np.stack(masks))
  pixel_values = hf_pixel_values(random_videos(batch, frames, image, seed))

  def step():
    opt.zero_grad(set_to_none=True)
    out = model(pixel_values, bool_masked_pos=bool_masked_pos)
    out.loss.backward()
    opt.step()
    return out.loss.item()

  return step, sum(p.numel() for p in model.parameters())


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.bench hf", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/pretrain_s.py")
  p.add_argument("--variant", default="", help="override config.model.variant")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--frames", type=int, default=16)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--steps", type=int, default=6, help="timed steps per implementation")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--host_malloc", default="auto", choices=("auto", "keep", "default"),
                 help="glibc malloc setting for the whole process, so both sides (see "
                      "vmae2_jax/host_memory.py)")
  p.add_argument("--json", action="store_true")
  return p.parse_args(argv)


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "hf":
    argv = argv[1:]
  a = parse_args(argv)

  from vmae2_jax.host_memory import tune_for_cpu_compute
  malloc_kept = tune_for_cpu_compute(a.host_malloc)  # before torch or JAX start threads
  import jax

  from vmae2_jax.models import get_variant

  config = load_config(a.config)
  if a.variant:
    config.model.variant = a.variant
  config.data.frames, config.data.image_size = a.frames, a.image_size
  config = without_data(config, clips=a.batch)
  config.mesh = {"data": 1, "fsdp": -1, "tensor": 1}
  size = get_variant(config.model.variant)
  step, hf_params = hf_pretrain_step(size, a.batch, a.frames, a.image_size,
                                     config.masking.encoder_ratio, a.threads)
  enc_cfg = copy.deepcopy(config)
  enc_cfg.masking.decoder = "none"
  devices = jax.devices()[:1]
  hf = Timed("hf", step)
  dual = StepRunner("dual", config, devices)
  enc = StepRunner("encoder_only", enc_cfg, devices)
  load = interleave([hf, dual, enc], a.steps, a.rounds, a.warmup)

  b = a.batch
  rate = {t.name: b / t.median for t in (hf, dual, enc)}
  best = {t.name: b / t.best for t in (hf, dual, enc)}
  cpu = {t.name: t.cpu_median for t in (hf, dual, enc)}
  out = {
      "variant": config.model.variant, "batch": b, "frames": a.frames,
      "image_size": a.image_size, "threads": a.threads,
      "host_malloc": a.host_malloc, "malloc_kept": malloc_kept,
      "hf_params": hf_params,
      "hf_clips_per_s": rate["hf"], "ours_encoder_only_clips_per_s": rate["encoder_only"],
      "ours_dual_clips_per_s": rate["dual"],
      "hf_step_times_s": hf.times, "ours_encoder_only_step_times_s": enc.times,
      "ours_dual_step_times_s": dual.times,
      "ratio_ours_encoder_only_over_hf": rate["encoder_only"] / rate["hf"],
      "ratio_ours_dual_over_hf": rate["dual"] / rate["hf"],
      "ratio_ours_dual_over_ours_encoder_only": rate["dual"] / rate["encoder_only"],
      "best_step_ratios": {"encoder_only_over_hf": best["encoder_only"] / best["hf"],
                           "dual_over_hf": best["dual"] / best["hf"],
                           "dual_over_encoder_only": best["dual"] / best["encoder_only"]},
      "cpu_s_per_step": cpu,
      "minor_faults": {t.name: t.faults for t in (hf, dual, enc)},
      "loadavg_1min_before_after": load,
  }
  print(f"ViT-{config.model.variant} {a.frames}x{a.image_size}^2 batch {b}, {a.threads} "
        f"threads, medians of {a.steps} steps in {a.rounds} interleaved rounds")
  print(f"  HF VideoMAEForPreTraining (sdpa)  {rate['hf']:.3f} clips/s  "
        f"({hf.median * 1e3:.0f} ms/step)")
  print(f"  ours, encoder-only masking        {rate['encoder_only']:.3f} clips/s  "
        f"({enc.median * 1e3:.0f} ms/step)")
  print(f"  ours, dual masking (cell {config.masking.decoder_ratio:g})     "
        f"{rate['dual']:.3f} clips/s  ({dual.median * 1e3:.0f} ms/step)")
  print(f"  ours_encoder_only/HF = {out['ratio_ours_encoder_only_over_hf']:.2f}x   "
        f"ours_dual/HF = {out['ratio_ours_dual_over_hf']:.2f}x   "
        f"ours_dual/ours_encoder_only = {out['ratio_ours_dual_over_ours_encoder_only']:.2f}x")
  print(f"  fastest steps: ours_encoder_only/HF = "
        f"{out['best_step_ratios']['encoder_only_over_hf']:.2f}x   ours_dual/HF = "
        f"{out['best_step_ratios']['dual_over_hf']:.2f}x")
  print(f"  CPU seconds per step: HF {cpu['hf']:.2f}, ours encoder-only {cpu['encoder_only']:.2f},"
        f" ours dual {cpu['dual']:.2f}; 1-min load average {load[0]:.1f} -> {load[1]:.1f}"
        " (other processes' load skews wall-clock ratios)")
  print(f"  glibc malloc for both sides: {'freed memory kept' if malloc_kept else 'default'}"
        f" (--host_malloc={a.host_malloc})")
  if a.json:
    print(json.dumps(out))
  return 0
