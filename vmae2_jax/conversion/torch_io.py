"""Reading and writing PyTorch-side checkpoint files as flat dicts of numpy arrays.

No PyTorch needed: pickle files (.pth/.pt/.bin) go through torch_pickle,
safetensors files through the safetensors package.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import ml_dtypes
import numpy as np

from vmae2_jax import paths
from vmae2_jax.conversion import hub, torch_pickle

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl")
# Containers the reference and common trainers wrap the state dict in, in the
# order the reference fine-tuning script tries them ('model|module').
CONTAINER_KEYS = ("model", "module", "state_dict", "model_state", "model_state_dict")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_source(path: str) -> tuple[str, dict[str, Any] | None]:
  """A weights file and the Hugging Face config.json beside it, if any.

  `path` may be a file, a Hugging Face snapshot directory holding
  model.safetensors / pytorch_model.bin and config.json, or hf://ORG/NAME
  (that snapshot in the local hub cache; see conversion.hub). The config is
  returned in transformers' VideoMAEConfig keys; OpenGVLab's VideoMAEv2
  config (a `model_config` dict of the reference's arguments) is translated.
  """
  uri = path if hub.is_hub(path) else None
  if uri:
    path = hub.resolve(uri)
  if paths.isdir(path):
    for name in HF_WEIGHT_FILES:
      if paths.exists(paths.join(path, name)):
        path = paths.join(path, name)
        break
    else:
      hint = f"; fetch the weights with: {hub.download_hint(*hub.parse(uri))}" if uri else ""
      raise FileNotFoundError(f"{uri or path}: a directory without "
                              f"{' or '.join(HF_WEIGHT_FILES)}{hint}")
  if not paths.exists(path):
    raise FileNotFoundError(f"{path}: no such file or directory")
  cfg_path = paths.join(paths.dirname(paths.resolve(path)), "config.json")
  hf_config = None
  if paths.exists(cfg_path):
    cfg = json.loads(paths.read_text(cfg_path))
    if cfg.get("model_type") == "videomae":
      hf_config = cfg
    elif isinstance(cfg.get("model_config"), dict):
      hf_config = opengvlab_config(cfg["model_config"], cfg_path)
  return path, hf_config


def opengvlab_config(mc: dict[str, Any], where: str) -> dict[str, Any]:
  """OpenGVLab/VideoMAEv2-* config.json `model_config` (the reference VisionTransformer's
  arguments) -> the VideoMAEConfig keys detect.infer_spec reads. Options these models do
  not implement are refused here, naming the field."""
  supported = {"init_values": 0, "cos_attn": False, "use_learnable_pos_emb": False,
               "tubelet_size": 2, "in_chans": 3}
  for key, want in supported.items():
    if mc.get(key) not in (want, None):  # 0 == 0.0 == False: init_values 0.0 passes
      raise ValueError(f"{where}: model_config.{key}={mc[key]!r}; these models support only "
                       f"{want!r} (as every published VideoMAE V2 model)")
  if not mc.get("use_mean_pooling", True):
    raise ValueError(f"{where}: model_config.use_mean_pooling=false classifies the first "
                     "token; the reference's published models and this port mean-pool")
  out = {"hidden_act": "gelu", "layer_norm_eps": mc.get("layer_norm_eps", 1e-6),
         "num_frames": mc.get("num_frames", 16), "image_size": mc.get("img_size", 224)}
  if mc.get("num_heads"):
    out["num_attention_heads"] = int(mc["num_heads"])
  return out


def _widen(arrays: dict[str, Any], notes: list[str]) -> dict[str, np.ndarray]:
  """bfloat16 arrays widened to float32 (exact), said once in the notes."""
  out = {k: v.astype(np.float32) if v.dtype == ml_dtypes.bfloat16 else v
         for k, v in arrays.items()}
  if any(v.dtype == ml_dtypes.bfloat16 for v in arrays.values()):
    notes.append("bfloat16 tensors widened to float32")
  return out


def _is_tensor_dict(d) -> bool:
  if not isinstance(d, dict) or not d:
    return False
  return all(hasattr(v, "shape") for v in d.values())


def read_state_dict(path: str, on_bytes=None) -> tuple[dict[str, np.ndarray], list[str]]:
  """Returns (flat {key: array}, notes) from a .safetensors or torch pickle file.

  A pickle holding {'model': sd} / {'module': sd} / ... is unwrapped (the
  first container key present wins, as in the reference's 'model|module').
  Pickles are read without running any code from them (torch_pickle).
  `on_bytes(done, total)` reports reading progress.
  """
  if paths.is_remote(path):  # both readers map a local file: stage the object, name the URL
    with paths.local_copy(path) as local:
      try:
        return read_state_dict(local, on_bytes)
      except ValueError as e:
        raise ValueError(str(e).replace(local, path)) from None
  notes: list[str] = []
  if path.endswith(SAFETENSORS_SUFFIXES):
    from safetensors import safe_open  # noqa: PLC0415
    # bfloat16 files read too: importing ml_dtypes (above) makes it a numpy dtype.
    state, done, total = {}, 0, os.path.getsize(path)
    with safe_open(path, framework="numpy") as f:
      for k in f.keys():
        state[k] = f.get_tensor(k)
        done += state[k].nbytes
        if on_bytes:
          on_bytes(done, total)
    return _widen(state, notes), notes

  try:
    obj = torch_pickle.load(path, on_bytes)
  except torch_pickle.UnreadableCheckpoint as e:
    raise ValueError(str(e) if str(e).startswith(path) else f"{path}: {e}") from e
  container = None
  if isinstance(obj, dict) and not _is_tensor_dict(obj):
    for key in CONTAINER_KEYS:
      if key in obj and isinstance(obj[key], dict):
        container = key
        obj = obj[key]
        break
    else:
      raise ValueError(f"{path}: no state dict found; top-level keys {sorted(obj)[:20]}")
  if not isinstance(obj, dict):
    raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict")
  if container:
    notes.append(f"state dict taken from the {container!r} entry of the file")
  out = {}
  for k, v in obj.items():
    if not isinstance(v, np.ndarray):
      notes.append(f"ignored non-tensor entry {k!r} ({type(v).__name__})")
      continue
    out[k] = v
  return _widen(out, notes), notes


def write_state_dict(path: str, state: dict[str, np.ndarray], container: str | None,
                     on_bytes=None) -> None:
  """Writes `state` as .safetensors (bare, no container) or a torch pickle {container: sd}.

  `on_bytes(done, total)` reports progress while a pickle's tensors are written."""
  if paths.is_remote(path):  # written locally, then uploaded whole
    with tempfile.TemporaryDirectory(prefix="vmae2_export_") as tmp:
      local = os.path.join(tmp, paths.basename(path))
      write_state_dict(local, state, container, on_bytes)
      paths.copy(local, path)
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  state = {k: v if v.flags.c_contiguous else np.array(v, order="C") for k, v in state.items()}
  if path.endswith(SAFETENSORS_SUFFIXES):
    from safetensors.numpy import save_file  # noqa: PLC0415
    save_file(state, path, metadata={"format": "pt"})
    return
  if not path.endswith(PICKLE_SUFFIXES):
    raise ValueError(f"{path}: unknown file type; use .safetensors, .pth or .bin")
  torch_pickle.save({container: state} if container else state, path, on_bytes=on_bytes)
