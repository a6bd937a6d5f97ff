"""Model-only checkpoints: what `convert` writes and `--config.init_from` reads.

Layout of DIR:
  DIR/params/      Orbax PyTree of the model's parameters as a nested dict
                   (the pure dict of nnx.state(model, nnx.Param))
  DIR/model.json   what the parameters are: {"kind": "pretrain"|"classifier"|
                   "encoder", "variant": "g/14", "num_classes": ..., "frames": ...,
                   "image_size": ..., "source": ..., "format_version": ...}
                   (vmae2_jax.conversion adds size/encoder_norm/source_layout)
model.json is written last, so a directory without it is incomplete and is
never loaded.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

META_FILE = "model.json"


def save_model_params(directory: str, params: dict, meta: dict[str, Any]) -> None:
  """Writes a nested dict of arrays and its description (atomically complete)."""
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  meta_path = os.path.join(directory, META_FILE)
  if os.path.exists(meta_path):
    os.remove(meta_path)
  params = jax.tree.map(np.asarray, params)
  with ocp.PyTreeCheckpointer() as ckptr:
    ckptr.save(os.path.join(directory, "params"), params, force=True)
  tmp = meta_path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
  os.replace(tmp, meta_path)


def read_model_meta(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, META_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{directory}: no {META_FILE}; not a vmae2_jax model checkpoint or an incomplete write")
  with open(path) as f:
    return json.load(f)


def load_model_params(directory: str) -> tuple[dict, dict[str, Any]]:
  """Returns (nested dict of numpy arrays, meta)."""
  meta = read_model_meta(directory)
  with ocp.PyTreeCheckpointer() as ckptr:
    params = ckptr.restore(os.path.abspath(os.path.join(directory, "params")))
  return jax.tree.map(np.asarray, params), meta
