"""Side by side on this machine: Hugging Face VideoMAEForPreTraining vs our step.

  python benchmarks/hf_videomae_step.py [--batch=2] [--steps=6] [--rounds=3] [--json]

The PyTorch stand-in for the reference backbone: transformers'
VideoMAEForPreTraining, random init, ViT-S/16 (384 wide, 12 layers, 6 heads;
decoder 192 wide, 4 layers, 3 heads), q/v bias, normalised-pixel loss,
16x224x224 clips, the same 0.9 tube mask as a bool_masked_pos (so its
decoder reconstructs every encoder-masked token), SDPA attention, one full
AdamW step (forward, loss, backward, step) per iteration, float32.

Ours: the trainer's jitted step (vmae2_jax.bench.train_bench) with decoder
masking on (running cell 0.5) and off. The three steps are timed
interleaved, in rounds, after warm-up, with the same number of threads, and
medians are reported. OPENBLAS_* variables are left as they are. Both sides
share the process and so its glibc malloc settings (--host_malloc; "auto"
keeps freed memory on a CPU-only host, as `python -m vmae2_jax.main` does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def hf_step(batch: int, frames: int, image: int, threads: int, seed: int = 0):
  """A closure running one HF AdamW step, and the model's parameter count."""
  import torch
  from transformers import VideoMAEConfig, VideoMAEForPreTraining

  torch.set_num_threads(threads)
  torch.manual_seed(seed)
  cfg = VideoMAEConfig(
      image_size=image, patch_size=16, num_channels=3, num_frames=frames, tubelet_size=2,
      hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
      hidden_act="gelu", qkv_bias=True, use_mean_pooling=False,
      decoder_hidden_size=192, decoder_num_hidden_layers=4, decoder_num_attention_heads=3,
      decoder_intermediate_size=768, norm_pix_loss=True)
  cfg._attn_implementation = "sdpa"
  model = VideoMAEForPreTraining(cfg)
  model.config._attn_implementation = "sdpa"
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                          weight_decay=0.05)

  rng = np.random.default_rng(seed)
  t, hw = frames // 2, (image // 16) ** 2
  n_mask = int(0.9 * hw)
  masks = []
  for _ in range(batch):  # tube: one spatial mask repeated over the time slots
    spatial = np.zeros(hw, bool)
    spatial[rng.permutation(hw)[:n_mask]] = True
    masks.append(np.tile(spatial, t))
  bool_masked_pos = torch.from_numpy(np.stack(masks))
  mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
  video = torch.from_numpy(rng.integers(0, 256, (batch, frames, 3, image, image), dtype=np.uint8))
  pixel_values = ((video.float() / 255.0 - mean) / std).contiguous()

  def step():
    opt.zero_grad(set_to_none=True)
    out = model(pixel_values, bool_masked_pos=bool_masked_pos)
    out.loss.backward()
    opt.step()
    return out.loss.item()

  return step, sum(p.numel() for p in model.parameters())


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
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
  a = p.parse_args(argv)

  from vmae2_jax.host_memory import tune_for_cpu_compute
  malloc_kept = tune_for_cpu_compute(a.host_malloc)  # before torch or JAX start threads
  import jax
  from vmae2_jax.bench import train_bench

  step, hf_params = hf_step(a.batch, a.frames, a.image_size, a.threads)
  ours_cfg = train_bench.apply_overrides(
      train_bench.load_config(os.path.join(ROOT, "configs/pretrain_s.py")),
      train_bench.parse_args([f"--batch={a.batch}", f"--frames={a.frames}",
                              f"--image_size={a.image_size}"]))
  import copy
  enc_cfg = copy.deepcopy(ours_cfg)
  enc_cfg.masking.decoder = "none"
  devices = jax.devices()[:1]
  ours = {"dual": train_bench._Runner(ours_cfg, devices),
          "encoder_only": train_bench._Runner(enc_cfg, devices)}
  hf_times: list[float] = []
  hf_cpu: list[float] = []
  load_before = os.getloadavg()[0]
  for _ in range(a.warmup):
    step()
  for r in ours.values():
    r.run(a.warmup, record=False)
  per_round = [a.steps // a.rounds + (i < a.steps % a.rounds) for i in range(a.rounds)]
  for n in per_round:
    for _ in range(n):
      t0, c0 = time.perf_counter(), time.process_time()
      step()
      hf_times.append(time.perf_counter() - t0)
      hf_cpu.append(time.process_time() - c0)
    for r in ours.values():
      r.run(n)

  load_after = os.getloadavg()[0]
  b = a.batch
  hf = b / statistics.median(hf_times)
  best = {"hf": b / min(hf_times), "dual": b / min(ours["dual"].times),
          "encoder_only": b / min(ours["encoder_only"].times)}
  cpu = {"hf": statistics.median(hf_cpu), "dual": statistics.median(ours["dual"].cpu_times),
         "encoder_only": statistics.median(ours["encoder_only"].cpu_times)}
  dual = b / ours["dual"].median
  enc = b / ours["encoder_only"].median
  out = {
      "batch": b, "frames": a.frames, "image_size": a.image_size, "threads": a.threads,
      "host_malloc": a.host_malloc, "malloc_kept": malloc_kept,
      "hf_params": hf_params,
      "hf_clips_per_s": hf, "ours_encoder_only_clips_per_s": enc, "ours_dual_clips_per_s": dual,
      "hf_step_times_s": hf_times, "ours_encoder_only_step_times_s": ours["encoder_only"].times,
      "ours_dual_step_times_s": ours["dual"].times,
      "ratio_ours_encoder_only_over_hf": enc / hf,
      "ratio_ours_dual_over_hf": dual / hf,
      "ratio_ours_dual_over_ours_encoder_only": dual / enc,
      "best_step_ratios": {"encoder_only_over_hf": best["encoder_only"] / best["hf"],
                           "dual_over_hf": best["dual"] / best["hf"],
                           "dual_over_encoder_only": best["dual"] / best["encoder_only"]},
      "cpu_s_per_step": cpu,
      "loadavg_1min_before_after": [load_before, load_after],
  }
  print(f"ViT-S/16 {a.frames}x{a.image_size}^2 batch {b}, {a.threads} threads, "
        f"medians of {a.steps} steps in {a.rounds} interleaved rounds")
  print(f"  HF VideoMAEForPreTraining (sdpa)  {hf:.3f} clips/s  "
        f"({statistics.median(hf_times) * 1e3:.0f} ms/step)")
  print(f"  ours, encoder-only masking        {enc:.3f} clips/s  "
        f"({ours['encoder_only'].median * 1e3:.0f} ms/step)")
  print(f"  ours, dual masking (cell 0.5)     {dual:.3f} clips/s  "
        f"({ours['dual'].median * 1e3:.0f} ms/step)")
  print(f"  ours_encoder_only/HF = {enc / hf:.2f}x   ours_dual/HF = {dual / hf:.2f}x   "
        f"ours_dual/ours_encoder_only = {dual / enc:.2f}x")
  print(f"  fastest steps: ours_encoder_only/HF = {out['best_step_ratios']['encoder_only_over_hf']:.2f}x"
        f"   ours_dual/HF = {out['best_step_ratios']['dual_over_hf']:.2f}x")
  print(f"  CPU seconds per step: HF {cpu['hf']:.2f}, ours encoder-only {cpu['encoder_only']:.2f},"
        f" ours dual {cpu['dual']:.2f}; 1-min load average {load_before:.1f} -> {load_after:.1f}"
        " (other processes' load skews wall-clock ratios)")
  print(f"  glibc malloc for both sides: {'freed memory kept' if malloc_kept else 'default'}"
        f" (--host_malloc={a.host_malloc})")
  if a.json:
    print(json.dumps(out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
