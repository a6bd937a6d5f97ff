"""Reading and writing PyTorch-side checkpoint files as flat dicts of numpy arrays.

torch is needed only for pickle files (.pth/.pt/.bin, the `convert` extra);
safetensors files are read and written with the safetensors package alone.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

TORCH_MISSING = ("reading/writing {path} needs PyTorch: pip install 'vmae2_jax[convert]' "
                 "(or convert the file to .safetensors elsewhere)")
SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl")
# Containers the reference and common trainers wrap the state dict in, in the
# order the reference fine-tuning script tries them ('model|module').
CONTAINER_KEYS = ("model", "module", "state_dict", "model_state", "model_state_dict")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _import_torch(path: str):
  try:
    import torch  # noqa: PLC0415  (optional dependency)
  except ImportError as e:
    raise ImportError(TORCH_MISSING.format(path=path)) from e
  return torch


def resolve_source(path: str) -> tuple[str, dict[str, Any] | None]:
  """A weights file and the Hugging Face config.json beside it, if any.

  `path` may be a file or a Hugging Face snapshot directory holding
  model.safetensors / pytorch_model.bin and config.json.
  """
  if os.path.isdir(path):
    for name in HF_WEIGHT_FILES:
      if os.path.exists(os.path.join(path, name)):
        path = os.path.join(path, name)
        break
    else:
      raise FileNotFoundError(f"{path}: a directory without {' or '.join(HF_WEIGHT_FILES)}")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such file or directory")
  cfg_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
  hf_config = None
  if os.path.exists(cfg_path):
    with open(cfg_path) as f:
      cfg = json.load(f)
    if cfg.get("model_type") == "videomae":
      hf_config = cfg
  return path, hf_config


def _to_numpy(t) -> tuple[np.ndarray, str | None]:
  """torch tensor -> numpy; bfloat16 (no numpy dtype) is widened to float32."""
  import torch  # noqa: PLC0415
  t = t.detach().cpu()
  if t.dtype == torch.bfloat16:
    return t.float().numpy(), "bfloat16"
  return t.numpy(), None


def _is_tensor_dict(d) -> bool:
  if not isinstance(d, dict) or not d:
    return False
  return all(hasattr(v, "shape") for v in d.values())


def read_state_dict(path: str, *, trust_pickle: bool = False
                    ) -> tuple[dict[str, np.ndarray], list[str]]:
  """Returns (flat {key: array}, notes) from a .safetensors or torch pickle file.

  A pickle holding {'model': sd} / {'module': sd} / ... is unwrapped (the
  first container key present wins, as in the reference's 'model|module').
  Pickles are loaded with torch's weights_only loader; `trust_pickle` allows
  full unpickling for files that hold other Python objects.
  """
  notes = []
  if path.endswith(SAFETENSORS_SUFFIXES):
    from safetensors import safe_open  # noqa: PLC0415
    out = {}
    try:
      with safe_open(path, framework="numpy") as f:
        for k in f.keys():
          out[k] = f.get_tensor(k)
    except (TypeError, ValueError) as e:  # bfloat16 and friends have no numpy dtype
      torch = _import_torch(path)
      del torch
      with safe_open(path, framework="pt") as f:
        for k in f.keys():
          out[k], widened = _to_numpy(f.get_tensor(k))
      notes.append(f"read through torch ({e}); bfloat16 tensors widened to float32")
    return out, notes

  torch = _import_torch(path)
  try:
    torch.serialization.add_safe_globals([argparse.Namespace])
  except AttributeError:  # older torch
    pass
  try:
    obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
  except Exception as e:  # noqa: BLE001  (torch raises several types here)
    if trust_pickle:
      raise
    raise ValueError(
        f"{path}: torch's safe (weights_only) loader refused the file: {e}\n"
        "If you trust the file, pass --trust_pickle (convert.load(..., trust_pickle=True)).") from e
  container = None
  if isinstance(obj, dict) and not _is_tensor_dict(obj):
    for key in CONTAINER_KEYS:
      if key in obj and isinstance(obj[key], dict):
        container = key
        obj = obj[key]
        break
    else:
      raise ValueError(f"{path}: no state dict found; top-level keys {sorted(obj)[:20]}")
  if container:
    notes.append(f"state dict taken from the {container!r} entry of the file")
  out, widened = {}, set()
  for k, v in obj.items():
    if not hasattr(v, "shape"):
      notes.append(f"ignored non-tensor entry {k!r} ({type(v).__name__})")
      continue
    out[k], w = _to_numpy(v)
    if w:
      widened.add(w)
  if widened:
    notes.append("bfloat16 tensors widened to float32")
  return out, notes


def write_state_dict(path: str, state: dict[str, np.ndarray], container: str | None) -> None:
  """Writes `state` as .safetensors (bare, no container) or a torch pickle {container: sd}."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  state = {k: np.ascontiguousarray(v) for k, v in state.items()}
  if path.endswith(SAFETENSORS_SUFFIXES):
    from safetensors.numpy import save_file  # noqa: PLC0415
    save_file(state, path, metadata={"format": "pt"})
    return
  if not path.endswith(PICKLE_SUFFIXES):
    raise ValueError(f"{path}: unknown file type; use .safetensors, .pth or .bin")
  torch = _import_torch(path)
  tensors = {k: torch.from_numpy(v) for k, v in state.items()}
  torch.save({container: tensors} if container else tensors, path)
