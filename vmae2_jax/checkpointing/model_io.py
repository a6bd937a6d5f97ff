"""Model weights by path: converted checkpoints, training runs and their steps.

A model source is any of:
  DIR with params/ + model.json   what `vmae2_jax.convert` writes (model-only):
                                  params/ is an Orbax PyTree of the model's
                                  parameters as a nested dict, model.json says
                                  what they are ({"kind": "pretrain"|"classifier"|
                                  "encoder", "variant", "num_classes", "frames",
                                  "image_size", "class_names", ...}).
  WORKDIR                         a training run of any stage: its latest step
                                  (WORKDIR/checkpoints) with WORKDIR/model.json,
                                  which the trainer writes when the run starts.
  WORKDIR/best                    that run's best validation step (supervised stages).
  WORKDIR/checkpoints[/STEP]      a run's latest step, or one step.
model.json is written last (atomically), so a directory without it is
incomplete and never loaded; Orbax lists a step only once it is complete.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

META_FILE = "model.json"
RUN_CONFIG = "config.json"


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
  write_meta(directory, meta)


def write_meta(directory: str, meta: dict[str, Any]) -> None:
  """DIR/model.json, replaced atomically."""
  path = os.path.join(directory, META_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)


def read_model_meta(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, META_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{directory}: no {META_FILE}; not a vmae2_jax model checkpoint or an incomplete write")
  with open(path) as f:
    return json.load(f)


def load_model_params(directory: str) -> tuple[dict, dict[str, Any]]:
  """(nested dict of numpy arrays, meta) of a model-only checkpoint."""
  meta = read_model_meta(directory)
  with ocp.PyTreeCheckpointer() as ckptr:
    params = ckptr.restore(os.path.abspath(os.path.join(directory, "params")))
  return jax.tree.map(np.asarray, params), meta


# ---------------------------------------------------------------- any source
def _is_model_dir(path: str) -> bool:
  return (os.path.exists(os.path.join(path, META_FILE))
          and os.path.isdir(os.path.join(path, "params")))


def _latest_step(directory: str) -> str | None:
  """The newest complete step directory of an Orbax checkpoint directory."""
  if not os.path.isdir(directory):
    return None
  steps = [int(n) for n in os.listdir(directory)
           if n.isdigit() and os.path.isdir(os.path.join(directory, n, "state"))]
  return os.path.join(directory, str(max(steps))) if steps else None


def resolve(path: str) -> tuple[str, str | None, str]:
  """A model source path -> (kind, step directory or None, directory holding the meta).

  kind is "model" (converted, params/ + model.json) or "run" (a training
  step; the meta directory is the run's workdir).
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: no such directory (a converted checkpoint or a "
                            "training run's workdir)")
  if _is_model_dir(path):
    return "model", None, path
  if os.path.isdir(os.path.join(path, "checkpoints")):  # a workdir: its final step
    step = _latest_step(os.path.join(path, "checkpoints"))
    if step is None:
      raise FileNotFoundError(f"{path}: a run directory without a complete checkpoint")
    return "run", step, path
  if os.path.isdir(os.path.join(path, "state")):  # one step: WORKDIR/checkpoints/STEP
    return "run", path, os.path.dirname(os.path.dirname(path))
  step = _latest_step(path)  # WORKDIR/checkpoints or WORKDIR/best
  if step is not None:
    return "run", step, os.path.dirname(path)
  raise FileNotFoundError(
      f"{path}: neither a model checkpoint (no {META_FILE} + params/; make one with "
      "python -m vmae2_jax.convert) nor a training run (no checkpoints/ with a complete step)")


def is_source(path: str) -> bool:
  """Whether `path` is one of this project's model sources (not a PyTorch file or HF folder)."""
  try:
    resolve(path)
    return True
  except FileNotFoundError:
    return False


def run_meta(workdir: str, step_dir: str | None = None) -> dict[str, Any]:
  """What a run's model is: WORKDIR/model.json; for runs from before it existed, their
  config.json; for a bare checkpoint directory, the step's own meta item."""
  if os.path.exists(os.path.join(workdir, META_FILE)):
    return read_model_meta(workdir)
  cfg = _read_json(os.path.join(workdir, RUN_CONFIG))
  if cfg and "model" in cfg and "data" in cfg:
    kind = "pretrain" if cfg.get("stage", "pretrain") == "pretrain" else "classifier"
    return {"kind": kind, "variant": cfg["model"]["variant"],
            "stage": cfg.get("stage", "pretrain"),
            "num_classes": cfg["model"].get("num_classes") or None,
            "frames": cfg["data"]["frames"], "image_size": cfg["data"]["image_size"],
            "encoder_norm": kind == "pretrain"}
  step_meta = _read_json(os.path.join(step_dir, "meta", "metadata")) if step_dir else None
  if step_meta is not None:
    return dict(step_meta)
  raise FileNotFoundError(f"{workdir}: no {META_FILE} or {RUN_CONFIG} saying what the run "
                          "trained")


def _read_json(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_source_meta(path: str) -> dict[str, Any]:
  """The meta of any model source (see module doc), without reading weights."""
  kind, step, meta_dir = resolve(path)
  meta = read_model_meta(meta_dir) if kind == "model" else run_meta(meta_dir, step)
  if step is not None:
    meta = dict(meta, source=step, step=int(os.path.basename(step)))
  return meta


class _NoItemMetadataWarning(logging.Filter):
  """Reading one item of a CheckpointManager step, Orbax looks for the step's metadata
  file inside the item and warns that it is missing; it lives one level up."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "Metadata file does not exist" not in record.getMessage()


def read_step_params(step_dir: str) -> dict:
  """Only the parameters of a training checkpoint step, as numpy (no optimizer state)."""
  path = os.path.join(step_dir, "state")
  quiet = _NoItemMetadataWarning()
  logging.getLogger("absl").addFilter(quiet)
  try:
    return _read_params(path)
  finally:
    logging.getLogger("absl").removeFilter(quiet)


def _read_params(path: str) -> dict:
  with ocp.PyTreeCheckpointer() as ckptr:
    tree = ckptr.metadata(path).item_metadata.tree
    if "params" not in tree:
      raise ValueError(f"{path}: a checkpoint without 'params'")
    want = {"params": tree["params"]}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), want)
    params = ckptr.restore(path, args=ocp.args.PyTreeRestore(
        item=want, restore_args=restore_args, partial_restore=True))["params"]
  return jax.tree.map(np.asarray, params)


def load_source(path: str) -> tuple[dict, dict[str, Any]]:
  """(params as numpy, meta) of any model source (see module doc)."""
  kind, step, meta_dir = resolve(path)
  if kind == "model":
    return load_model_params(meta_dir)
  return read_step_params(step), read_source_meta(path)
