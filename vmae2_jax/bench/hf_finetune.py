"""Side by side on this machine: Hugging Face VideoMAEForVideoClassification vs our classifier.

  python -m vmae2_jax.bench hf_finetune --config=configs/finetune_s_k400.py [--batch=2]
      [--steps=6] [--infer_steps=3] [--rounds=3] [--parts=train,predict,features] [--json]

Three comparisons, every implementation timed interleaved in rounds after
warm-up, same threads, medians reported:

  train     one fine-tuning step on `--batch` clips. Ours: the trainer's jitted
            step for the config (experiment.setup -> jit_train_step: mixup /
            cutmix on device from the uint8 clips, label smoothing,
            soft-target cross-entropy, drop path, layer decay, AdamW). HF:
            VideoMAEForVideoClassification (the config's variant, q/v bias,
            mean pooling -> fc_norm -> head, SDPA attention) on normalised
            float clips as the reference's data loader hands them over, the
            batch mixed per step the way timm's Mixup does (alternating a
            mixup blend and a cutmix box with the batch flipped), the same
            smoothed and mixed soft targets and soft-target cross-entropy,
            torch AdamW. HF has no drop path or layer decay: those are extra
            work on our side only.
  predict   multi-view inference: the `--views` views of one video (default the
            config's test views, 5 x 3 = 15 for Kinetics). Ours: `exp.predict_fn`,
            the evaluator's jitted log-softmax prediction, from uint8 clips. HF:
            eval-mode forward + log_softmax under torch.inference_mode on the
            same views, normalised.
  features  the pooled feature fc_norm(mean of tokens) of `--feature_batch`
            windows (default 16). Ours: Classifier.features as
            `python -m vmae2_jax.extract` runs it (its feature_fn in a
            BatchRunner); HF: its encoder, the mean and fc_norm under
            torch.inference_mode.

Both sides share the process and its glibc malloc setting (--host_malloc).
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from vmae2_jax.bench.common import (StepRunner, Timed, interleave, load_config, random_videos,
                                    without_data)
from vmae2_jax.bench.hf_pretrain import hf_pixel_values, hf_videomae_config

PARTS = ("train", "predict", "features")


def hf_classifier(size, num_classes: int, frames: int, image: int, threads: int, seed: int = 0):
  import torch
  from transformers import VideoMAEForVideoClassification

  torch.set_num_threads(threads)
  torch.manual_seed(seed)
  cfg = hf_videomae_config(size, frames, image, use_mean_pooling=True, num_labels=num_classes)
  model = VideoMAEForVideoClassification(cfg)
  model.config._attn_implementation = "sdpa"
  return model


def hf_train_step(model, config, batch: int, seed: int = 0):
  """A closure running one HF fine-tuning step: mixup/cutmix, soft targets, AdamW."""
  import torch

  o, mx = config.optim, config.mixup
  k = model.config.num_labels
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(o.b1, o.b2), eps=o.eps,
                          weight_decay=o.weight_decay)
  rng = np.random.default_rng(seed)
  frames, image = config.data.frames, config.data.image_size
  pixel_values = hf_pixel_values(random_videos(batch, frames, image, seed))
  labels = torch.from_numpy(rng.integers(0, k, batch))
  smooth = float(mx.label_smoothing)
  one_hot = torch.nn.functional.one_hot(labels, k).float() * (1 - smooth) + smooth / k
  alpha_mix, alpha_cut = max(float(mx.mixup_alpha), 1e-3), max(float(mx.cutmix_alpha), 1e-3)
  calls = [0]

  def step():
    model.train()
    opt.zero_grad(set_to_none=True)
    calls[0] += 1
    x, flipped = pixel_values, pixel_values.flip(0)
    if calls[0] % 2:  # cutmix: one box over every frame, lam from its area
      lam = float(rng.beta(alpha_cut, alpha_cut))
      cut = int(image * np.sqrt(1 - lam))
      y0, x0 = (int(v) for v in rng.integers(0, image - cut + 1, 2))
      x = x.clone()
      x[..., y0:y0 + cut, x0:x0 + cut] = flipped[..., y0:y0 + cut, x0:x0 + cut]
      lam = 1 - cut * cut / (image * image)
    else:
      lam = float(rng.beta(alpha_mix, alpha_mix))
      x = x * lam + flipped * (1 - lam)
    targets = one_hot * lam + one_hot.flip(0) * (1 - lam)
    logits = model(x).logits
    loss = torch.sum(-targets * torch.log_softmax(logits, dim=-1), dim=-1).mean()
    loss.backward()
    opt.step()
    return loss.item()

  return step


def hf_predict(model, videos_uint8):
  import torch

  x = hf_pixel_values(videos_uint8)

  def predict():
    model.eval()
    with torch.inference_mode():
      return torch.log_softmax(model(x).logits, dim=-1)

  return predict


def hf_features(model, videos_uint8):
  import torch

  x = hf_pixel_values(videos_uint8)

  def features():
    model.eval()
    with torch.inference_mode():
      return model.fc_norm(model.videomae(x)[0].mean(1))

  return features


def ours_features_runner(exp, params, batch: int):
  """Classifier.features as `python -m vmae2_jax.extract` runs it: its feature_fn in one
  compiled fixed-batch function (evaluation.inference.BatchRunner)."""
  from flax import nnx

  from vmae2_jax.evaluation.inference import BatchRunner
  from vmae2_jax.extract import feature_fn
  return BatchRunner(nnx.merge(exp.graphdef, params), feature_fn(False), batch)


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.bench hf_finetune", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/finetune_s_k400.py")
  p.add_argument("--variant", default="", help="override config.model.variant")
  p.add_argument("--frames", type=int, default=0, help="override config.data.frames")
  p.add_argument("--image_size", type=int, default=0, help="override config.data.image_size")
  p.add_argument("--num_classes", type=int, default=0, help="override config.model.num_classes")
  p.add_argument("--batch", type=int, default=2, help="clips per training step")
  p.add_argument("--views", type=int, default=0,
                 help="views of one video for `predict` (default: the config's test views)")
  p.add_argument("--feature_batch", type=int, default=16, help="windows per features call")
  p.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " +
                 ", ".join(PARTS))
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--steps", type=int, default=6, help="timed training steps per implementation")
  p.add_argument("--infer_steps", type=int, default=3,
                 help="timed predict / features calls per implementation")
  p.add_argument("--warmup", type=int, default=2, help="untimed training steps")
  p.add_argument("--infer_warmup", type=int, default=1, help="untimed predict / features calls")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--host_malloc", default="auto", choices=("auto", "keep", "default"))
  p.add_argument("--json", action="store_true")
  return p.parse_args(argv)


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "hf_finetune":
    argv = argv[1:]
  a = parse_args(argv)
  parts = [p for p in a.parts.split(",") if p]
  if not parts or set(parts) - set(PARTS):
    raise SystemExit(f"--parts={a.parts}: choose from {', '.join(PARTS)}")

  from vmae2_jax.host_memory import tune_for_cpu_compute
  malloc_kept = tune_for_cpu_compute(a.host_malloc)  # before torch or JAX start threads
  import jax

  from vmae2_jax.bench.common import is_supervised
  from vmae2_jax.models import get_variant
  from vmae2_jax.training.experiment import setup

  config = load_config(a.config)
  if not is_supervised(config):
    raise SystemExit(f"--config={a.config} is a pre-training config (stage "
                     f"{config.stage!r}); `hf` is its side-by-side")
  if a.variant:
    config.model.variant = a.variant
  if a.frames:
    config.data.frames = a.frames
  if a.image_size:
    config.data.image_size = a.image_size
  if a.num_classes:
    config.model.num_classes = a.num_classes
  views = a.views or config.data.test_num_segment * config.data.test_num_crop
  config = without_data(config, clips=a.batch)
  config.optim.accum_steps = 1
  config.mesh = {"data": 1, "fsdp": -1, "tensor": 1}
  devices = jax.devices()[:1]
  size = get_variant(config.model.variant)
  frames, image = config.data.frames, config.data.image_size
  model = hf_classifier(size, config.model.num_classes, frames, image, a.threads)
  hf_params = sum(p.numel() for p in model.parameters())

  timed: dict[str, list[Timed]] = {}
  ours_exp = None
  if "train" in parts:
    runner = StepRunner("ours_train", config, devices)
    ours_exp = runner.exp
    timed["train"] = [Timed("hf_train", hf_train_step(model, config, a.batch)), runner]
  if "predict" in parts or "features" in parts:
    exp = ours_exp or setup(config, devices)
    params = exp.init_state().params
  if "predict" in parts:
    video = random_videos(views, frames, image, seed=1)
    x = jax.device_put(video, exp.batch_sharding(5))
    predict = exp.predict_fn.lower(params, x).compile()
    timed["predict"] = [Timed("hf_predict", hf_predict(model, video)),
                        Timed("ours_predict", lambda: jax.block_until_ready(predict(params, x)))]
  if "features" in parts:
    video = random_videos(a.feature_batch, frames, image, seed=2)
    features = ours_features_runner(exp, params, a.feature_batch)
    timed["features"] = [Timed("hf_features", hf_features(model, video)),
                         Timed("ours_features",
                               lambda: np.asarray(features(video)))]

  loads = {}
  for part, pair in timed.items():  # each part's pair interleaved on its own
    steps, warmup = (a.steps, a.warmup) if part == "train" else (a.infer_steps, a.infer_warmup)
    loads[part] = interleave(pair, steps, a.rounds, warmup)

  out = {"variant": config.model.variant, "frames": frames, "image_size": image,
         "num_classes": config.model.num_classes, "threads": a.threads,
         "host_malloc": a.host_malloc, "malloc_kept": malloc_kept, "hf_params": hf_params,
         "loadavg_1min_before_after": loads}
  units = {"train": ("clips", a.batch), "predict": ("views", views),
           "features": ("windows", a.feature_batch)}
  print(f"ViT-{config.model.variant} {frames}x{image}^2, {config.model.num_classes} classes, "
        f"{a.threads} threads, HF VideoMAEForVideoClassification (sdpa) vs ours")
  for part, (hf, ours) in timed.items():
    unit, n = units[part]
    hf_rate, ours_rate = n / hf.median, n / ours.median
    out[part] = {
        unit: n, f"hf_{unit}_per_s": hf_rate, f"ours_{unit}_per_s": ours_rate,
        "ratio_ours_over_hf": ours_rate / hf_rate, "best_ratio_ours_over_hf": hf.best / ours.best,
        "hf_times_s": hf.times, "ours_times_s": ours.times,
        "cpu_s": {"hf": hf.cpu_median, "ours": ours.cpu_median},
        "minor_faults": {"hf": hf.faults, "ours": ours.faults},
    }
    lo, hi = loads[part]
    print(f"  {part:8s} ({n} {unit}): HF {hf.median * 1e3:7.0f} ms, ours {ours.median * 1e3:7.0f} "
          f"ms -> {hf_rate:.3f} vs {ours_rate:.3f} {unit}/s, ours/HF = "
          f"{ours_rate / hf_rate:.2f}x (fastest {hf.best / ours.best:.2f}x); CPU s HF "
          f"{hf.cpu_median:.2f}, ours {ours.cpu_median:.2f}; calls that faulted in > 40 MB: HF "
          f"{hf.faulted_calls}/{len(hf.times)}, ours {ours.faulted_calls}/{len(ours.times)}; "
          f"load {lo:.1f} -> {hi:.1f}")
  if "train" in timed:
    from vmae2_jax.bench.flops import train_flops_per_clip
    runner = timed["train"][1]
    out["train"].update({"ours_loss": runner.loss,
                         "model_tflops_per_clip": train_flops_per_clip(runner.exp) / 1e12})
  if a.json:
    print(json.dumps(out))
  return 0
