"""Train-state checkpoints: one Orbax step holds the state, the data iterator and metadata.

Orbax writes each step into a temporary directory and renames it only when
complete, so a half-written step is never listed or loaded; leftover
temporary directories from a crash are removed when the manager opens.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
  """Async saves every `save_every` steps, keeps the latest `keep` (+ milestones)."""

  def __init__(self, directory: str, *, save_every: int, keep: int = 3,
               keep_period: int | None = None, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        keep_period=keep_period or None,
        save_interval_steps=max(1, save_every),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        create=True,
    )
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    """True at the save interval or when the cluster signals preemption."""
    return self._manager.should_save(step) or self._manager.reached_preemption(step)

  def save(self, step: int, state: Any, data_state: dict | None = None,
           meta: dict | None = None, *, force: bool = False) -> bool:
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(_all_processes(data_state or {})),
        meta=ocp.args.JsonSave(meta or {}),
    )
    saved = self._manager.save(step, args=args, force=force)
    if saved:
      logging.info("checkpoint: saving step %d to %s", step, self.directory)
    return saved

  def restore(self, step: int, abstract_state: Any, *, data: bool = True
              ) -> tuple[Any, dict, dict]:
    """Restores `step` into the shapes and shardings of `abstract_state`.

    data=False skips this process's iterator state (an evaluation that reads no
    training data may run on another number of processes than the run did).
    """
    abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore(),
    ))
    data_state = _this_process(dict(out.data or {})) if data else {}
    return out.state, data_state, dict(out.meta or {})

  def wait(self) -> None:
    """Blocks until pending async saves are durable."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


# Orbax's JSON items are written by the primary host only, but every process
# reads its own slice of the data and so has its own iterator state: with
# several processes the saved item holds all of them, gathered here.
def _all_processes(data_state: dict) -> dict:
  """The data item to save: this state alone, or every process's (one collective)."""
  if jax.process_count() == 1:
    return data_state
  import json

  import numpy as np
  from jax.experimental import multihost_utils
  raw = np.frombuffer(json.dumps(data_state, sort_keys=True).encode(), np.uint8)
  lengths = multihost_utils.process_allgather(np.asarray([raw.size], np.int32))
  padded = np.zeros(int(np.max(lengths)), np.uint8)
  padded[:raw.size] = raw
  rows = multihost_utils.process_allgather(padded)
  states = [json.loads(bytes(rows[i, :int(lengths[i, 0])]).decode())
            for i in range(jax.process_count())]
  return {"process_count": jax.process_count(), "processes": states}


def _this_process(saved: dict) -> dict:
  """This process's iterator state from a saved data item (either layout)."""
  if "processes" not in saved:
    if jax.process_count() > 1 and saved:
      raise ValueError("the checkpoint holds one process's data state; this run has "
                       f"{jax.process_count()} processes (data order would not resume)")
    return saved
  if saved["process_count"] != jax.process_count():
    raise ValueError(f"the checkpoint's data state is for {saved['process_count']} processes; "
                     f"this run has {jax.process_count()}")
  return saved["processes"][jax.process_index()]
