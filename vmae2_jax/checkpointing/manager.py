"""Train-state checkpoints: one Orbax step holds the state, the data iterator and metadata.

Orbax writes each step into a temporary directory and renames it only when
complete, so a half-written step is never listed or loaded; leftover
temporary directories from a crash are removed when the manager opens.

Damage after the commit (a truncated or deleted file) is found by size: once
a step is committed, process 0 writes STEP/vmae2_file_sizes.json listing every
file of the step with its size, and a restore compares the step with it first
(a stat per file, no reading), so the error names the file. A step without
that list (its process died between the commit and the list) is still
restored; if Orbax then fails, the error names the file its message mentions.

In s3:// (which Orbax cannot open) Orbax works on a local staging folder and each
committed step is uploaded with a commit marker last (staging.StepMirror); gs://
and local folders are Orbax's own.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from vmae2_jax import paths
from vmae2_jax.checkpointing import staging

FILE_SIZES = "vmae2_file_sizes.json"
SET_ASIDE = "set_aside"  # WORKDIR/set_aside/STEP_REASON: steps taken out of the resume order


class CheckpointError(ValueError):
  """A checkpoint step that cannot be restored; the message names the step (and the file)."""


class CheckpointDamagedError(CheckpointError):
  """A committed step with a missing or truncated file."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class Checkpointer:
  """Async saves every `save_every` steps, keeps the latest `keep` (+ milestones)."""

  def __init__(self, directory: str, *, save_every: int, keep: int | None = 3,
               keep_period: int | None = None, async_save: bool = True):
    self.directory = paths.resolve(directory)
    try:  # before Orbax starts (the trainer refuses such a --workdir earlier still)
      paths.check_native(self.directory, "", f"Orbax {ocp.__version__} writes checkpoints")
    except paths.UnreachableURLError as e:
      raise CheckpointError(str(e)) from None
    self._keep, self._keep_period = keep, keep_period or None
    self._mirror = staging.StepMirror(self.directory) if paths.is_staged(directory) else None
    if self._mirror is not None:
      self._mirror.remove_uncommitted()
    self._async = async_save
    self._unlisted: list[int] = []  # async saves whose file list is not written yet
    orbax = staging.orbax_options(self.directory)
    options = ocp.CheckpointManagerOptions(
        **{k: v for k, v in orbax.items() if k == "multiprocessing_options"},
        max_to_keep=keep,
        keep_period=keep_period or None,
        save_interval_steps=max(1, save_every),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
        create=True,
    )
    self._manager = ocp.CheckpointManager(
        self._mirror.local if self._mirror else self.directory, options=options,
        **{k: v for k, v in orbax.items() if k != "multiprocessing_options"})

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def all_steps(self) -> list[int]:
    if self._mirror is not None:  # the bucket's committed steps, not the staging folder's
      return self._mirror.steps()
    return sorted(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    """True at the save interval or when the cluster signals preemption."""
    return self._manager.should_save(step) or self._manager.reached_preemption(step)

  def reached_preemption(self, step: int) -> bool:
    """The preemption notice JAX's distributed service gives (TPU VMs); False elsewhere."""
    return self._manager.reached_preemption(step)

  def save(self, step: int, state: Any, data_state: dict | None = None,
           meta: dict | None = None, *, force: bool = False) -> bool:
    if self._mirror is not None and self._unlisted and (force or self._manager.should_save(step)):
      # Orbax waits for the previous save before this one anyway; upload it first, before
      # this save's retention can delete its staging copy.
      self._manager.wait_until_finished()
      self._list_committed()
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(_all_processes(data_state or {})),
        meta=ocp.args.JsonSave(meta or {}),
    )
    saved = self._manager.save(step, args=args, force=force)
    if saved:
      logging.info("checkpoint: saving step %d to %s", step, self.directory)
      # Orbax waited for the previous save before starting this one: it is committed.
      for done in self._unlisted:
        self._committed(done)
      self._unlisted = []
      if self._async:
        self._unlisted.append(step)
      else:
        self._committed(step)
    return saved

  def _committed(self, step: int) -> None:
    """A step Orbax has committed: its size list, then (s3://) its upload, marker last."""
    if self._mirror is None:
      self._list_files(step)
    elif jax.process_count() > 1:  # each staging folder holds one process's files: list
      # the bucket's step once all are uploaded (every process joins the upload's barriers)
      self._mirror.upload(step, before_marker=lambda: self._list_files(
          step, self._mirror.remote_step(step)))
      self._mirror.retain(self._keep, self._keep_period)
    elif os.path.isdir(self._mirror.local_step(step)):
      self._list_files(step)
      self._mirror.upload(step)
      self._mirror.retain(self._keep, self._keep_period)

  # ------------------------------------------------------------- restore
  def restore(self, step: int, abstract_state: Any, *, data: bool = True
              ) -> tuple[Any, dict, dict]:
    """Restores `step` into the shapes and shardings of `abstract_state`.

    data=False skips this process's iterator state (an evaluation that reads no
    training data may run on another number of processes than the run did).
    Raises CheckpointDamagedError naming the file when the step is damaged.
    """
    problem = self.damage(step)
    if problem:
      raise CheckpointDamagedError(
          f"checkpoint step {step} in {self.directory} is damaged: {problem}", step)
    abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    try:
      if self._mirror is not None:
        self._mirror.download(step)
        self._manager.reload()
      out = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=ocp.args.JsonRestore(),
          meta=ocp.args.JsonRestore(),
      ))
    except Exception as e:  # Orbax / TensorStore / json: find the file, else the first line
      raise self._restore_error(step, e) from e
    try:
      data_state = _this_process(dict(out.data or {})) if data else {}
    except ValueError as e:
      raise CheckpointError(f"checkpoint step {step} in {self.directory}: {e}") from None
    return out.state, data_state, dict(out.meta or {})

  def restore_latest(self, abstract_state: Any, *, data: bool = True, fallback: bool = False
                     ) -> tuple[int, Any, dict, dict] | None:
    """(step, state, data state, meta) of the newest committed step, or None when there is none.

    A damaged step raises CheckpointDamagedError; with `fallback` the previous
    committed steps are tried instead and the damaged ones set aside (so later
    saves of those step numbers can happen).
    """
    steps = self.all_steps()
    damaged = []
    for i, step in reversed(list(enumerate(steps))):
      try:
        restored = self.restore(step, abstract_state, data=data)
      except CheckpointDamagedError as e:
        earlier = steps[i - 1] if i else None
        if not fallback:
          hint = (f"; rerun with --config.checkpoint_fallback=True to resume from step {earlier}"
                  if earlier is not None else "; no earlier committed step to fall back to")
          raise CheckpointDamagedError(str(e) + hint, step) from None
        logging.warning("%s; checkpoint_fallback: trying step %s instead", e, earlier)
        damaged.append(step)
        continue
      if _read_file_sizes(paths.join(self.directory, str(step))) is None:
        self._list_files(step)  # unlisted (its process died first), read whole just now
      if damaged:
        moved = self.set_aside(damaged, "damaged")
        logging.warning("checkpoint_fallback: restored step %d instead of damaged step%s %s "
                        "(moved to %s)", step, "s" if len(damaged) > 1 else "",
                        ", ".join(map(str, damaged)), ", ".join(moved))
      return (step, *restored)
    if damaged:
      raise CheckpointDamagedError(f"every committed step in {self.directory} is damaged "
                                   f"(steps {', '.join(map(str, sorted(damaged)))})", damaged[0])
    return None

  def damage(self, step: int) -> str | None:
    """What is wrong with committed `step` by its file list (None: intact or unlisted)."""
    step_dir = paths.join(self.directory, str(step))
    listed = _read_file_sizes(step_dir)
    if listed is None:
      return None
    present = dict(paths.walk_files(step_dir))  # one listing (a bucket: no stat per file)
    for rel, size in sorted(listed.items()):
      path = paths.join(step_dir, rel)
      if rel not in present:
        return f"{path} is missing"
      actual = present[rel]
      if actual != size:
        return f"{path} has {actual} bytes; {size} were written"
    return None

  def _restore_error(self, step: int, error: Exception) -> CheckpointError:
    step_dir = paths.join(self.directory, str(step))
    path = re.escape(step_dir) + r"/[^\s\"':,\]]*"
    # The innermost error of the chain that names a path of the step says most (TensorStore:
    # which array, which byte range); Orbax's own wrappers only say that reading failed.
    for inner in reversed(_chain(error)):
      if re.search(path, str(inner)):
        error = inner
        break
    text = str(error)
    if self._mirror is not None:  # Orbax read the staging copy: name the step in the bucket
      text = text.replace(self._mirror.local, self.directory)
    named = re.search(path, text)
    if named or isinstance(error, (json.JSONDecodeError, FileNotFoundError)):
      where = named.group(0) if named else "a file"
      return CheckpointDamagedError(
          f"checkpoint step {step} in {self.directory} is damaged: {where} cannot be read "
          f"({type(error).__name__}: {_first_line(text)})", step)
    return CheckpointError(f"checkpoint step {step} in {self.directory} cannot be restored into "
                           f"this run's train state: {type(error).__name__}: {_first_line(text)}")

  # ------------------------------------------------------------- housekeeping
  def set_aside(self, steps: list[int], reason: str) -> list[str]:
    """Moves committed steps out of the resume order to WORKDIR/set_aside/STEP_REASON."""
    self._manager.wait_until_finished()
    moved = []
    root = paths.join(paths.dirname(self.directory), SET_ASIDE)
    for step in sorted(steps):
      src = paths.join(self.directory, str(step))
      dst = paths.join(root, f"{step}_{reason}")
      n = 1
      while paths.exists(dst):
        n += 1
        dst = paths.join(root, f"{step}_{reason}.{n}")
      moved.append(dst)
      if self._mirror is not None:
        self._mirror.move_out(step, dst)
      elif jax.process_index() == 0 and paths.isdir(src):
        paths.makedirs(root)
        paths.move(src, dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("vmae2_set_aside")
    self._manager.reload()
    return moved

  def wait(self) -> None:
    """Blocks until pending async saves are durable."""
    self._manager.wait_until_finished()
    self._list_committed()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._list_committed()
    self._manager.close()
    if self._mirror is not None:
      self._mirror.close()

  def _list_committed(self) -> None:
    if self._unlisted and not self._manager.is_saving_in_progress():
      for step in self._unlisted:
        self._committed(step)
      self._unlisted = []

  def _list_files(self, step: int, step_dir: str | None = None) -> None:
    """STEP/vmae2_file_sizes.json: every file of the committed step and its size (process 0)."""
    step_dir = step_dir or (self._mirror.local_step(step) if self._mirror is not None
                            else paths.join(self.directory, str(step)))
    if jax.process_index() != 0 or not paths.isdir(step_dir):
      return  # another process's job, or already removed by max_to_keep
    try:
      sizes = {rel: size for rel, size in paths.walk_files(step_dir)
               if not rel.startswith(FILE_SIZES)}
      paths.write_text(paths.join(step_dir, FILE_SIZES),
                       json.dumps({"step": step, "files": sizes}, indent=0, sort_keys=True))
    except OSError as e:  # the step stays restorable; only the size check is lost
      logging.warning("checkpoint step %d: could not write %s: %s", step, FILE_SIZES, e)


def _read_file_sizes(step_dir: str) -> dict | None:
  path = paths.join(step_dir, FILE_SIZES)
  if not paths.exists(path):
    return None
  try:
    return dict(json.loads(paths.read_text(path))["files"])
  except (ValueError, KeyError, OSError):
    return None  # the list itself damaged: fall back to Orbax's own errors


def _chain(error: BaseException) -> list[BaseException]:
  """error, its cause, the cause's cause, ... (outermost first)."""
  out: list[BaseException] = []
  while error is not None and all(error is not e for e in out):
    out.append(error)
    error = error.__cause__ or error.__context__
  return out


def _first_line(text: str, limit: int = 300) -> str:
  line = text.strip().splitlines()[0] if text.strip() else ""
  return line if len(line) <= limit else line[:limit] + " ..."


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
