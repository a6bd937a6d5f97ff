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
incomplete and never loaded; only committed steps count (staging.committed_steps).
In s3:// Orbax reads and writes through a local copy (staging.readable/writable).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from vmae2_jax import paths
from vmae2_jax.checkpointing import staging

META_FILE = "model.json"
RUN_CONFIG = "config.json"


def save_model_params(directory: str, params: dict, meta: dict[str, Any]) -> None:
  """Writes a nested dict of arrays and its description (atomically complete)."""
  directory = paths.resolve(directory)
  paths.makedirs(directory)
  meta_path = paths.join(directory, META_FILE)
  if paths.exists(meta_path):
    paths.remove(meta_path)
  params = jax.tree.map(np.asarray, params)
  with staging.writable(paths.join(directory, "params")) as local, \
      ocp.PyTreeCheckpointer() as ckptr:
    ckptr.save(local, params, force=True)
  write_meta(directory, meta)  # after every params file is in place


def write_meta(directory: str, meta: dict[str, Any]) -> None:
  """DIR/model.json, replaced atomically."""
  paths.write_text(paths.join(directory, META_FILE), json.dumps(meta, indent=2, sort_keys=True))


def read_model_meta(directory: str) -> dict[str, Any]:
  path = paths.join(directory, META_FILE)
  if not paths.exists(path):
    raise FileNotFoundError(
        f"{directory}: no {META_FILE}; not a vmae2_jax model checkpoint or an incomplete write")
  return json.loads(paths.read_text(path))


def load_model_params(directory: str) -> tuple[dict, dict[str, Any]]:
  """(nested dict of numpy arrays, meta) of a model-only checkpoint."""
  meta = read_model_meta(directory)
  with staging.readable(paths.join(directory, "params")) as local, \
      ocp.PyTreeCheckpointer() as ckptr:
    params = ckptr.restore(local)
  return jax.tree.map(np.asarray, params), meta


# ---------------------------------------------------------------- any source
def _is_model_dir(path: str) -> bool:
  return (paths.exists(paths.join(path, META_FILE))
          and paths.isdir(paths.join(path, "params")))


def _latest_step(directory: str) -> str | None:
  """The newest committed step directory of an Orbax checkpoint directory."""
  if not paths.isdir(directory):
    return None
  steps = [s for s in staging.committed_steps(directory)
           if paths.isdir(paths.join(directory, str(s), "state"))]
  return paths.join(directory, str(max(steps))) if steps else None


def resolve(path: str) -> tuple[str, str | None, str]:
  """A model source path -> (kind, step directory or None, directory holding the meta).

  kind is "model" (converted, params/ + model.json) or "run" (a training
  step; the meta directory is the run's workdir).
  """
  path = paths.resolve(path)
  paths.check_native(path, "", "Orbax reads the weights of a model source")  # before any access
  if not paths.isdir(path):
    raise FileNotFoundError(f"{path}: no such directory (a converted checkpoint or a "
                            "training run's workdir)")
  if _is_model_dir(path):
    return "model", None, path
  if paths.isdir(paths.join(path, "checkpoints")):  # a workdir: its final step
    step = _latest_step(paths.join(path, "checkpoints"))
    if step is None:
      raise FileNotFoundError(f"{path}: a run directory without a complete checkpoint")
    return "run", step, path
  if paths.isdir(paths.join(path, "state")):  # one step: WORKDIR/checkpoints/STEP
    return "run", path, paths.dirname(paths.dirname(path))
  step = _latest_step(path)  # WORKDIR/checkpoints or WORKDIR/best
  if step is not None:
    return "run", step, paths.dirname(path)
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
  if paths.exists(paths.join(workdir, META_FILE)):
    return read_model_meta(workdir)
  cfg = _read_json(paths.join(workdir, RUN_CONFIG))
  if cfg and "model" in cfg and "data" in cfg:
    kind = "pretrain" if cfg.get("stage", "pretrain") == "pretrain" else "classifier"
    return {"kind": kind, "variant": cfg["model"]["variant"],
            "stage": cfg.get("stage", "pretrain"),
            "num_classes": cfg["model"].get("num_classes") or None,
            "frames": cfg["data"]["frames"], "image_size": cfg["data"]["image_size"],
            "encoder_norm": kind == "pretrain"}
  step_meta = _read_json(paths.join(step_dir, "meta", "metadata")) if step_dir else None
  if step_meta is not None:
    return dict(step_meta)
  raise FileNotFoundError(f"{workdir}: no {META_FILE} or {RUN_CONFIG} saying what the run "
                          "trained")


def _read_json(path: str) -> dict | None:
  if not paths.exists(path):
    return None
  return json.loads(paths.read_text(path))


def read_source_meta(path: str) -> dict[str, Any]:
  """The meta of any model source (see module doc), without reading weights."""
  kind, step, meta_dir = resolve(path)
  meta = read_model_meta(meta_dir) if kind == "model" else run_meta(meta_dir, step)
  if step is not None:
    meta = dict(meta, source=step, step=int(paths.basename(step)))
  return meta


class _NoItemMetadataWarning(logging.Filter):
  """Reading one item of a CheckpointManager step, Orbax looks for the step's metadata
  file inside the item and warns that it is missing; it lives one level up."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "Metadata file does not exist" not in record.getMessage()


def read_step_params(step_dir: str) -> dict:
  """Only the parameters of a training checkpoint step, as numpy (no optimizer state)."""
  path = paths.join(step_dir, "state")
  quiet = _NoItemMetadataWarning()
  logging.getLogger("absl").addFilter(quiet)
  try:
    with staging.readable(path) as local:
      return _read_params(local)
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
