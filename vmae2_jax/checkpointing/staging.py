"""Checkpoints in a bucket Orbax cannot open itself (s3://): a local folder, mirrored step by step.

Orbax writes and reads a local staging folder; each step it commits there is
uploaded to the bucket, every file first and STEP/commit_success.txt LAST (the
marker Orbax itself writes on gs://, so both buckets hold the same layout).
Only steps with the marker are listed or restored: an upload cut short by a
kill is never loaded and is removed when the folder is next opened; the step
before it stays whole. A step is deleted marker first, so a reader never finds
a committed step with files missing. Restoring downloads the step's files into
the staging folder first.

Several processes: each writes its own staging folder (Orbax's host-local mode,
`orbax_options`), holding only the shards it owns; every process uploads its
folder, then process 0 uploads its own (the files both wrote are process 0's)
and writes the marker after all of them (`upload`). A restore downloads the
whole step on every process. Deletes in the bucket are process 0's.

Disk: the staging folder holds what Orbax keeps (the newest `keep` steps of
this run plus a restored one), under $TMPDIR/vmae2_staging (tempfile.gettempdir());
it is removed on close, and a killed process's folder when the next one opens.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from typing import Callable, Iterator

import jax

from vmae2_jax import paths

COMMIT_MARKER = "commit_success.txt"  # Orbax's own name for it on gs://


def committed_steps(directory: str) -> list[int]:
  """Steps in a checkpoint folder that are complete. Locally Orbax renames a finished step
  into place; a bucket has no rename, so a step counts once its marker exists."""
  names = [n for n in paths.listdir(directory) if n.isdigit()]
  if paths.is_remote(directory):
    names = [n for n in names if paths.exists(paths.join(directory, n, COMMIT_MARKER))]
  return sorted(int(n) for n in names)


@contextlib.contextmanager
def readable(folder: str) -> Iterator[str]:
  """A path Orbax can read `folder` from: itself, or a local download of it (s3://)."""
  if not paths.is_staged(folder):
    yield paths.resolve(folder)
    return
  with tempfile.TemporaryDirectory(prefix="vmae2_read_") as tmp:
    local = os.path.join(tmp, paths.basename(folder))
    paths.copy_tree(folder, local)
    yield local


@contextlib.contextmanager
def writable(folder: str, last: tuple[str, ...] = ()) -> Iterator[str]:
  """A path Orbax can write `folder` at: itself, or a local folder uploaded on success, the
  files named in `last` after all others (s3://)."""
  if not paths.is_staged(folder):
    paths.makedirs(folder)
    yield paths.resolve(folder)
    return
  with paths.staged_dir(folder, last=last) as local:
    yield local


def orbax_options(directory: str) -> dict:
  """CheckpointManager item handlers and options for a checkpoint folder: none but Orbax's
  defaults, except s3:// with several processes, where each process's staging folder
  is a disk no other process sees. Then every process is its own primary (creates,
  commits and prunes its folder; Orbax's mode for host-local storage) and arrays are
  plain zarr files (no OCDBT: its merge reads every process's files from one folder)."""
  if not paths.is_staged(directory) or jax.process_count() == 1:
    return {"item_names": ("state", "data", "meta")}
  import orbax.checkpoint as ocp
  local = ocp.options.MultiprocessingOptions(primary_host=None)
  return {
      "item_handlers": {
          "state": ocp.StandardCheckpointHandler(use_ocdbt=False, multiprocessing_options=local),
          "data": ocp.JsonCheckpointHandler(multiprocessing_options=local),
          "meta": ocp.JsonCheckpointHandler(multiprocessing_options=local),
      },
      "multiprocessing_options": local,
  }


def _sync(name: str) -> None:
  """A barrier of every process (nothing with one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"vmae2_staging_{name}")


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class StepMirror:
  """A local folder for Orbax and the bucket folder its committed steps are copied to."""

  def __init__(self, remote: str):
    self.remote = paths.resolve(remote)
    # One folder per bucket folder and process (KEY-PID-RANDOM); the folders of processes
    # that are gone (killed) are removed here, so kills do not fill the disk.
    key = hashlib.sha1(self.remote.encode()).hexdigest()[:16]
    root = os.path.join(tempfile.gettempdir(), "vmae2_staging")
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):
      pid = name.split("-")[1] if name.count("-") >= 2 else ""
      if pid.isdigit() and not _pid_alive(int(pid)):
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    self.local = tempfile.mkdtemp(prefix=f"{key}-{os.getpid()}-", dir=root)

  def local_step(self, step: int) -> str:
    return os.path.join(self.local, str(step))

  def remote_step(self, step: int) -> str:
    return paths.join(self.remote, str(step))

  def steps(self) -> list[int]:
    return committed_steps(self.remote)

  def remove_uncommitted(self) -> None:
    """Deletes step folders whose upload a kill cut short (no marker)."""
    if jax.process_index() == 0:
      committed = set(self.steps())
      for name in paths.listdir(self.remote):
        if name.isdigit() and int(name) not in committed:
          paths.rmtree(self.remote_step(int(name)))
    _sync("remove_uncommitted")

  def upload(self, step: int, before_marker: Callable[[], None] | None = None) -> None:
    """Copies local step `step` to the bucket, the marker last (any earlier copy of that
    step number, half-uploaded or set aside since, is removed first). Every process
    calls it: the others' files go up first, then process 0's, `before_marker` (run
    by process 0), and the marker."""
    primary = jax.process_index() == 0
    src, dst = self.local_step(step), self.remote_step(step)
    if primary:
      self.delete(step)
    _sync(f"upload_{step}_start")
    if not primary and os.path.isdir(src):
      self._copy_files(src, dst)
    _sync(f"upload_{step}_others")
    if primary and os.path.isdir(src):
      self._copy_files(src, dst)
      if before_marker is not None:
        before_marker()
      marker = os.path.join(src, COMMIT_MARKER)  # Orbax writes one locally too: keep its bytes
      if os.path.exists(marker):
        paths.copy(marker, paths.join(dst, COMMIT_MARKER))
      else:
        paths.write_text(paths.join(dst, COMMIT_MARKER), f"step {step} uploaded whole\n")
    _sync(f"upload_{step}_done")

  @staticmethod
  def _copy_files(src: str, dst: str) -> None:
    for rel, _ in paths.walk_files(src):
      if rel != COMMIT_MARKER:
        paths.copy(os.path.join(src, rel), paths.join(dst, *rel.split(os.sep)))

  def download(self, step: int) -> str:
    """The local folder of committed step `step`, downloaded unless it is there already."""
    local = self.local_step(step)
    if not os.path.isdir(local):
      part = local + ".download"
      shutil.rmtree(part, ignore_errors=True)
      paths.copy_tree(self.remote_step(step), part)
      os.rename(part, local)
    return local

  def delete(self, step: int) -> None:
    """Removes a step from the bucket, the marker first: never a committed partial step."""
    paths.remove(paths.join(self.remote_step(step), COMMIT_MARKER))
    paths.rmtree(self.remote_step(step))

  def move_out(self, step: int, dst: str) -> None:
    """Moves a committed step out of the resume order (set_aside): the marker goes first."""
    if jax.process_index() == 0:
      paths.copy_tree(self.remote_step(step), dst)
      self.delete(step)
    shutil.rmtree(self.local_step(step), ignore_errors=True)
    _sync(f"move_out_{step}")

  def retain(self, keep: int | None, keep_period: int | None) -> None:
    """Orbax's retention applied to the bucket: the newest `keep` steps and every multiple
    of `keep_period` stay, others go (steps of earlier segments of the run included)."""
    if not keep:
      return
    if jax.process_index() == 0:
      for step in self.steps()[:-keep]:
        if not (keep_period and step % keep_period == 0):
          self.delete(step)
    _sync("retain")

  def close(self) -> None:
    shutil.rmtree(self.local, ignore_errors=True)
