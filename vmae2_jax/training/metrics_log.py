"""Metrics a person can follow: a log line every N steps, TensorBoard events,
WORKDIR/metrics.jsonl (every logged row of every segment of the run) and, at
the end of each segment, WORKDIR/curves.png drawn from it.

In a bucket (no append there) metrics.jsonl is one object per segment (see
paths.SegmentLog), and the events are written to a local folder whose files,
each named by its writer, are uploaded every UPLOAD_EVERY_S and at the end."""

from __future__ import annotations

import json
import shutil
import tempfile
import time

import jax
from absl import logging

from vmae2_jax import paths

UPLOAD_EVERY_S = 30.0  # TensorBoard events of a bucket workdir: a kill loses at most this


class MetricsLog:
  """Averages scalars between log steps; writes on process 0 only."""

  def __init__(self, workdir: str, total_steps: int, clips_per_step: int):
    self.total_steps = total_steps
    self.clips_per_step = clips_per_step
    self._sums: dict[str, float] = {}
    self._count = 0
    self._t0 = time.perf_counter()
    self._writer = None
    self._jsonl = None
    self._events_local = None  # bucket workdir: the local folder the events are written to
    self._uploaded = time.monotonic()
    self.history: list[dict] = []       # training averages, one per log step
    self.evaluations: list[dict] = []   # validation results
    if jax.process_index() == 0:
      from vmae2_jax.evaluation.curves import open_metrics
      self.workdir = workdir
      self._jsonl = open_metrics(workdir)  # a kill loses at most the line being written
      self._events = paths.join(workdir, "tensorboard")
      try:
        from tensorboardX import SummaryWriter
        if paths.is_remote(self._events):
          self._events_local = tempfile.mkdtemp(prefix="vmae2_tensorboard_")
        self._writer = SummaryWriter(self._events_local or self._events)
      except ImportError:  # TensorBoard events are optional.
        logging.warning("tensorboardX not installed: no TensorBoard events")

  def add(self, metrics: dict) -> None:
    for k, v in metrics.items():
      self._sums[k] = self._sums.get(k, 0.0) + float(v)
    self._count += 1

  def flush(self, step: int, extra: dict | None = None) -> dict:
    """Logs the averages since the last flush; returns them."""
    elapsed = time.perf_counter() - self._t0
    n = max(1, self._count)
    out = {k: v / n for k, v in self._sums.items()}
    step_time = elapsed / n
    out["step_time_s"] = step_time
    out["clips_per_s"] = self.clips_per_step / step_time
    out.update(extra or {})
    eta = (self.total_steps - step) * step_time
    # Every process computes the same replicated metrics; process 0 reports them
    # (the others at --v=1, for checking that they agree).
    logging.vlog(0 if jax.process_index() == 0 else 1,
                 "step %d/%d  loss %.4f  lr %.3g  grad_norm %.3f  %.1f clips/s  ETA %s",
                 step, self.total_steps, out.get("loss", float("nan")), out.get("lr", 0.0),
                 out.get("grad_norm", 0.0), out["clips_per_s"], _hms(eta))
    if self._writer is not None:
      for k, v in out.items():
        self._writer.add_scalar(f"train/{k}", v, step)
      self._writer.flush()
      self._upload_events()
    self.history.append({"step": step, **out})
    self._append({"step": step, "kind": "train", **out})
    self._sums, self._count, self._t0 = {}, 0, time.perf_counter()
    return out

  def report(self, step: int, metrics: dict, group: str) -> None:
    """Logs and records evaluation results (e.g. group "val": val_top1 -> val/top1)."""
    text = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items())
    logging.vlog(0 if jax.process_index() == 0 else 1, "step %d  %s", step, text)
    if self._writer is not None:
      for k, v in metrics.items():
        if isinstance(v, (int, float)):
          self._writer.add_scalar(f"{group}/{k.removeprefix(group + '_')}", v, step)
      self._writer.flush()
      self._upload_events()
    self.evaluations.append({"step": step, **metrics})
    self._append({"step": step, "kind": group, **metrics})

  def _append(self, row: dict) -> None:
    if self._jsonl is not None:
      self._jsonl.write(json.dumps({k: v for k, v in row.items()
                                    if isinstance(v, (int, float, str))}) + "\n")

  def _upload_events(self, force: bool = False) -> None:
    """Copies the local event files (one per writer: no two processes share one) over their
    objects in the bucket workdir, at most every UPLOAD_EVERY_S unless forced."""
    if self._events_local is None or (
        not force and time.monotonic() - self._uploaded < UPLOAD_EVERY_S):
      return
    try:
      paths.copy_tree(self._events_local, self._events)
    except OSError as e:  # TensorBoard is never worth failing a run; retried at the next
      logging.warning("TensorBoard events not uploaded to %s: %s", self._events, e)
    self._uploaded = time.monotonic()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._upload_events(force=True)
      if self._events_local is not None:
        shutil.rmtree(self._events_local, ignore_errors=True)
        self._events_local = None
        self._writer = None
    if self._jsonl is not None:
      from vmae2_jax.evaluation.curves import write_curves
      self._jsonl.close()
      self._jsonl = None
      try:
        path = write_curves(self.workdir)
      except (OSError, ValueError) as e:  # a picture is never worth failing a run
        logging.warning("curves.png not written: %s", e)
      else:
        if path:
          logging.info("loss curves: %s", path)


def _hms(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
