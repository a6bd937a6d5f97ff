"""What the command-line inference tools share: loading a classifier from any model source,
its class names, one compiled fixed-shape batch function, background prefetch, and
usage errors as one line (`python -m vmae2_jax.predict` and `python -m vmae2_jax.extract`)."""

from __future__ import annotations

import argparse
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np
from flax import nnx

from vmae2_jax import paths
from vmae2_jax.checkpointing import model_io
from vmae2_jax.conversion import labels
from vmae2_jax.conversion.api import build_model
from vmae2_jax.models.options import ModelOptions
from vmae2_jax.models.platform import forward_compiler_options

KINETICS = {400: "k400", 600: "k600", 700: "k700", 710: "k710"}
DTYPES = ("float32", "bfloat16")


class UserError(ValueError):
  """Bad input from the command line: printed as one ``error: ...`` line."""


def read_model_meta(init_from: str, dtype: str) -> dict[str, Any]:
  """model.json of any model source, the --dtype checked; UserError naming the flag."""
  if dtype not in DTYPES:
    raise UserError(f"--dtype={dtype!r} is not one of {DTYPES}")
  try:
    return model_io.read_source_meta(init_from)
  except FileNotFoundError as e:
    raise UserError(f"--init_from: {e}") from e
  except paths.UnreachableURLError as e:
    raise UserError(f"--init_from={e}") from None


def load_classifier(init_from: str, *, dtype: str = "float32", frames: int | None = None,
                    image_size: int | None = None, need_head: bool = True
                    ) -> tuple[nnx.Module, dict[str, Any]]:
  """(Classifier, meta) from any model source; UserError for a non-classifier source, or
  (need_head) for a feature model without a head (num_classes 0).

  frames / image_size rebuild the model for another clip shape (the weights do
  not depend on it; position tables are regenerated).
  """
  meta = read_model_meta(init_from, dtype)
  if meta.get("kind") != "classifier":
    raise UserError(f"--init_from={init_from} holds a {meta.get('kind')} model without a "
                    "classification head; fine-tune it, or convert a fine-tuned checkpoint "
                    "with python -m vmae2_jax.convert --kind=classifier")
  if need_head and not meta.get("num_classes"):
    raise UserError(f"--init_from={init_from} holds a feature model without a classification "
                    "head (num_classes 0); fine-tune it first (python -m vmae2_jax.extract "
                    "reads its features)")
  params, meta = model_io.load_source(init_from)
  if frames is not None:
    meta["frames"] = int(frames)
  if image_size is not None:
    meta["image_size"] = int(image_size)
  return build_model(params, meta, ModelOptions(dtype=dtype)), meta


def square_size(meta: dict[str, Any], init_from: str) -> int:
  """The model's image_size as one int (test crops and extraction windows are square)."""
  size = meta.get("image_size", 224)
  if isinstance(size, (list, tuple)):
    if len(set(size)) != 1:
      raise UserError(f"--init_from={init_from}: model.json image_size {list(size)} is not "
                      "square; views are square crops")
    size = size[0]
  return int(size)


def class_names_for(meta: dict[str, Any]) -> tuple[list[str], str | None]:
  """(names by class index, a note when they are not the model's own).

  model.json class_names; else the packaged Kinetics names for a 400/600/
  700/710-way head; else class_<i>.
  """
  k = int(meta["num_classes"])
  names = meta.get("class_names")
  if names and len(names) == k:
    return [str(n) for n in names], None
  if k in KINETICS:
    return (list(labels.class_names(KINETICS[k])),
            f"model.json has no class names; using the packaged Kinetics-{k} names")
  return [f"class_{i}" for i in range(k)], None


class BatchRunner:
  """fn(model, clips) compiled once for a fixed [batch, ...] input; callers pad.

  Parameters stay on the device between calls; the result is a device array
  (converting it to numpy is where the host waits).
  """

  def __init__(self, model: nnx.Module, fn: Callable, batch: int):
    graphdef, state = nnx.split(model)
    self.batch = int(batch)
    self._state = jax.device_put(state)
    self._fn = jax.jit(lambda state, x: fn(nnx.merge(graphdef, state), x),
                       compiler_options=forward_compiler_options())

  def __call__(self, clips: np.ndarray) -> jax.Array:
    if len(clips) != self.batch:
      raise ValueError(f"BatchRunner takes exactly {self.batch} clips, got {len(clips)}")
    return self._fn(self._state, clips)


def prefetch(items: Iterable, size: int) -> Iterator:
  """Iterates ``items`` in a background thread, ``size`` ahead (decoding overlaps compute).

  An exception of the iterable is raised here, in the consumer.
  """
  q: queue.Queue = queue.Queue(maxsize=max(1, size))
  done = object()
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False  # the consumer has gone

  def work():
    try:
      for item in items:
        if not put(item):
          return
      put(done)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer
      put(e)

  thread = threading.Thread(target=work, daemon=True)
  thread.start()
  try:
    while True:
      item = q.get()
      if item is done:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()  # the consumer stopped early: let the worker end


# ---------------------------------------------------------------- command line
class Parser(argparse.ArgumentParser):
  """Usage errors as one ``error: ...`` line and exit code 1, like every other user error."""

  def error(self, message):
    self.exit(1, f"error: {message} (see --help)\n")


def parse_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
  """The parsed flags, or the exit code of a usage error / --help (main returns it)."""
  try:
    return p.parse_args(argv)
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else 1


