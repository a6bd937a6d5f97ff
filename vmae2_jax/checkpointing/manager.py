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
        data=ocp.args.JsonSave(data_state or {}),
        meta=ocp.args.JsonSave(meta or {}),
    )
    saved = self._manager.save(step, args=args, force=force)
    if saved:
      logging.info("checkpoint: saving step %d to %s", step, self.directory)
    return saved

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
    """Restores `step` into the shapes and shardings of `abstract_state`."""
    abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore(),
    ))
    return out.state, dict(out.data or {}), dict(out.meta or {})

  def wait(self) -> None:
    """Blocks until pending async saves are durable."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
