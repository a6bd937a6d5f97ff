"""What the tests compare against PyTorch code: stored outputs and how they were made.

The reference and Hugging Face run on torch, which the test install leaves
out (on Linux its wheel pulls gigabytes of CUDA libraries). Their outputs
for fixed inputs are kept in tests/data/torch_reference, written by
`python -m tests.make_torch_reference` in an environment with torch and
transformers (pip install -e ".[cpu,test,bench]"). Weights and inputs are
drawn here with numpy from fixed seeds, so the tests rebuild exactly what
torch saw without storing the weights.

HF sizes: "tiny" has the Ti/16 shapes on 4 frames of 32 px (8 tokens); "S" is
ViT-S/16 at full width and depth (384 x 12, decoder 192 x 4) on one clip of
8 frames at 112 px (196 tokens) to keep the run short on CPU.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torch_reference")

SIZES = {
    # name: (hf config kwargs, frames, image size, batch)
    "tiny": (dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=3,
                  intermediate_size=384, decoder_hidden_size=64, decoder_num_hidden_layers=2,
                  decoder_num_attention_heads=2, decoder_intermediate_size=256), 4, 32, 2),
    "S": (dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
               intermediate_size=1536, decoder_hidden_size=192, decoder_num_hidden_layers=4,
               decoder_num_attention_heads=3, decoder_intermediate_size=768), 8, 112, 1),
}

# case name: (size, HF class, weight seed, number of labels for classifiers)
HF_CASES = {
    "tiny_pretrain": ("tiny", "VideoMAEForPreTraining", 1, None),
    "tiny_classifier": ("tiny", "VideoMAEForVideoClassification", 2, 10),
    "tiny_encoder": ("tiny", "VideoMAEModel", 11, None),
    "tiny_k710": ("tiny", "VideoMAEForVideoClassification", 9, 710),
    "S_pretrain": ("S", "VideoMAEForPreTraining", 1, None),
    "S_classifier": ("S", "VideoMAEForVideoClassification", 2, 10),
}
# Every S pre-training output row would be 0.9 MB; every 8th masked token is kept.
S_PRETRAIN_ROW_STRIDE = 8


def grid_of(size: str) -> tuple[int, int, int]:
  _, frames, image, _ = SIZES[size]
  return frames // 2, image // 16, image // 16


def video_of(size: str, seed: int) -> np.ndarray:
  """A random clip in HF's layout [B, T, 3, H, W] (ImageNet-normalised scale)."""
  _, frames, image, batch = SIZES[size]
  return np.random.default_rng(seed).standard_normal(
      (batch, frames, 3, image, image), dtype=np.float32)


def tube_mask(batch: int, grid, ratio: float, seed: int) -> np.ndarray:
  t, h, w = grid
  rng = np.random.default_rng(seed)
  masks = []
  for _ in range(batch):
    spatial = np.zeros(h * w, bool)
    spatial[rng.permutation(h * w)[:int(ratio * h * w)]] = True
    masks.append(np.tile(spatial, t))
  return np.stack(masks)


def random_state(schema: list, seed: int) -> dict[str, np.ndarray]:
  """Every parameter random at scales that keep activations O(1): biases, LayerNorms and
  the mask token included (a fresh model's q/v biases are zero and would hide a converter
  that drops them)."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in schema:
    noise = rng.standard_normal(shape, dtype=np.float32)
    if name.endswith("mask_token"):
      out[name] = noise
    elif len(shape) >= 2:
      out[name] = noise / np.float32(np.prod(shape[1:]) ** 0.5)
    elif "norm" in name and name.endswith("weight"):
      out[name] = np.float32(1.0) + np.float32(0.2) * noise
    else:
      out[name] = np.float32(0.2) * noise
  return out


def case_dir(case: str) -> str:
  return os.path.join(ROOT, "hf", case)


def schema_of(case: str) -> list:
  with open(os.path.join(case_dir(case), "schema.json")) as f:
    return [(k, tuple(s)) for k, s in json.load(f)]


def outputs_of(case: str) -> dict[str, np.ndarray]:
  with np.load(os.path.join(case_dir(case), "outputs.npz")) as z:
    return dict(z)


def weights_of(case: str) -> dict[str, np.ndarray]:
  """The HF state dict the stored outputs came from (the reference's LayerNorm eps 1e-6)."""
  return random_state(schema_of(case), HF_CASES[case][2])


def write_hf_folder(case: str, directory: str, state: dict | None = None) -> str:
  """An HF snapshot folder (model.safetensors + config.json) of a case; returns the file."""
  from safetensors.numpy import save_file
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "model.safetensors")
  save_file(weights_of(case) if state is None else state, path)
  with open(os.path.join(case_dir(case), "config.json")) as f:
    cfg = f.read()
  with open(os.path.join(directory, "config.json"), "w") as f:
    f.write(cfg)
  return path


def hf_inputs(case: str) -> dict[str, np.ndarray]:
  """The inputs each case's outputs were computed on (the test names them the same)."""
  size = HF_CASES[case][0]
  batch = SIZES[size][3]
  if case.endswith("pretrain"):
    return {"video": video_of(size, 3), "mask": tube_mask(batch, grid_of(size), 0.75, 4),
            "export_video": video_of(size, 6),
            "export_mask": tube_mask(batch, grid_of(size), 0.5, 7)}
  if case.endswith("encoder"):
    return {"video": video_of(size, 12), "mask": tube_mask(batch, grid_of(size), 0.5, 13)}
  return {"video": video_of(size, 5), "export_video": video_of(size, 6)}


# ------------------------------------------------------ torch.save files
def saved_objects() -> dict[str, np.ndarray]:
  """Arrays torch.save wrote into torch_save/*.pth (as tensors of the same dtype)."""
  rng = np.random.default_rng(0)
  return {"weight": rng.standard_normal((6, 4), dtype=np.float32),
          "half": rng.standard_normal((3,)).astype(np.float16),
          "index": np.arange(5, dtype=np.int64),
          "flag": np.array([True, False, True]),
          "scalar": np.array(2.5, np.float64)}


# ------------------------------------------ torch interpolate, restated
def torch_bicubic_2d(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """upsample_bicubic2d (align_corners=False) pixel by pixel, as ATen computes it:
  source x = (dst + 0.5) * in/out - 0.5, Keys cubic with A = -0.75, taps clamped."""
  a = -0.75

  def cc1(t):
    return ((a + 2) * t - (a + 3)) * t * t + 1

  def cc2(t):
    return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

  def coeffs(t):
    return [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)]

  in_h, in_w = x.shape[:2]
  out = np.zeros((out_h, out_w) + x.shape[2:])
  for oy in range(out_h):
    ry = (oy + 0.5) * in_h / out_h - 0.5
    iy = math.floor(ry)
    wy = coeffs(ry - iy)
    for ox in range(out_w):
      rx = (ox + 0.5) * in_w / out_w - 0.5
      ix = math.floor(rx)
      wx = coeffs(rx - ix)
      acc = 0.0
      for m in range(4):
        yy = min(max(iy - 1 + m, 0), in_h - 1)
        row = sum(wx[n] * x[yy, min(max(ix - 1 + n, 0), in_w - 1)] for n in range(4))
        acc = acc + wy[m] * row
      out[oy, ox] = acc
  return out


def torch_linear_1d(x: np.ndarray, out_n: int) -> np.ndarray:
  """upsample_linear1d (align_corners=False) over axis 0: source clamped at 0."""
  in_n = x.shape[0]
  out = np.zeros((out_n,) + x.shape[1:])
  for o in range(out_n):
    src = max((o + 0.5) * in_n / out_n - 0.5, 0.0)
    i0 = int(src)
    i1 = i0 + (1 if i0 < in_n - 1 else 0)
    lam = src - i0
    out[o] = (1 - lam) * x[i0] + lam * x[i1]
  return out


def reference_resize(table: np.ndarray, src, dst) -> np.ndarray:
  """run_class_finetuning.py: bicubic over (h, w) per temporal slice, then linear over t."""
  t, h, w = src
  t2, h2, w2 = dst
  x = np.asarray(table, np.float64).reshape(t, h, w, -1)
  if (h, w) != (h2, w2):
    x = np.stack([torch_bicubic_2d(x[i], h2, w2) for i in range(t)])
  if t != t2:
    x = torch_linear_1d(x, t2)
  return x.reshape(t2 * h2 * w2, -1)


def torch_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """upsample_bilinear2d (align_corners=False) over the first two axes: separable linear."""
  x = torch_linear_1d(np.asarray(x, np.float64), out_h)
  return np.swapaxes(torch_linear_1d(np.swapaxes(x, 0, 1), out_w), 0, 1)


# Interpolation cases (torch.nn.functional.interpolate, align_corners=False).
RESIZE_TABLE = dict(seed=1, src=(3, 5, 6), dst=(2, 8, 4), dim=7)   # bicubic then linear
BILINEAR_FRAMES = dict(seed=2, shape=(3, 2, 37, 50), size=(24, 24))  # [C, T, H, W] -> 24x24


def resize_table_input() -> np.ndarray:
  r = RESIZE_TABLE
  return np.random.default_rng(r["seed"]).normal(size=(int(np.prod(r["src"])), r["dim"]))


def bilinear_input() -> np.ndarray:
  b = BILINEAR_FRAMES
  return np.random.default_rng(b["seed"]).uniform(0, 1, b["shape"]).astype(np.float32)


def stored(name: str) -> dict[str, np.ndarray]:
  with np.load(os.path.join(ROOT, name)) as z:
    return dict(z)
