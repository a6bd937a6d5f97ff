"""A non-finite loss: stop naming the last good checkpoint ("stop"), or count a skipped update.

Which checkpoint is good: step k holds the parameters after k updates, and the
loss (and gradients) reported for step k+1 are computed from them. So a
non-finite loss or gradient norm at step s condemns the parameters saved as
step s-1, and the last good checkpoint is the newest committed step <= s-2 (the
loss computed from it, at a step <= s-1, was read and finite). A non-finite
norm of the updated parameters at step s (a finite loss, an exploding update)
condemns step s itself, which is never written: the loop reads a step's
metrics before it saves that step. Steps from the condemned one on are set
aside (WORKDIR/set_aside), so a rerun resumes from the good one. For this the
trainer keeps one checkpoint more than config.keep_checkpoints: the newest,
until the loss computed from it has been read.

The checks read loss, grad_norm and param_norm, which the loop reads one
step late for the log anyway: nothing is added to the compiled step. With
config.nonfinite="skip" the step itself keeps the state (step.py) and flags
metrics["skipped"].
"""

from __future__ import annotations

import numpy as np
from absl import logging

_WHAT = {"loss": "loss", "grad_norm": "gradient norm", "param_norm": "parameter norm"}


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/Inf loss, gradient or parameter norm; names the last good step."""

  def __init__(self, message: str, step: int, bad_step: int, last_good: int | None):
    super().__init__(message)
    self.step, self.bad_step, self.last_good = step, bad_step, last_good


def first_nonfinite(metrics: dict) -> str | None:
  """The first of loss, grad_norm, param_norm that is not finite (None: all are)."""
  for key in _WHAT:
    if key in metrics and not np.isfinite(metrics[key]):
      return key
  return None


class Guard:
  """Judges each step's metrics as the loop reads them; `skipped` survives resumes (meta)."""

  def __init__(self, ckpt, skipped: int = 0):
    self.ckpt = ckpt
    self.skipped = skipped

  def accept(self, step: int, metrics: dict) -> bool:
    """True: a finite step for the log; False: an update the step skipped. Raises to stop."""
    what = first_nonfinite(metrics)
    if metrics.get("skipped"):
      self.skipped += 1
      logging.warning("step %d: non-finite %s: update skipped (%d so far)", step,
                      _WHAT.get(what, "value"), self.skipped)
      return False
    if what is None:
      return True
    raise self._stop(step, what, float(metrics[what]))

  def _stop(self, step: int, what: str, value: float) -> NonFiniteLossError:
    """Sets aside the condemned steps, closes the checkpointer; the error to raise."""
    from_params = what in ("loss", "grad_norm")
    bad = step - 1 if from_params else step
    ckpt = self.ckpt
    ckpt.wait()
    steps = ckpt.all_steps()
    good = [k for k in steps if k < bad]
    last_good = max(good) if good else None
    moved = ckpt.set_aside([k for k in steps if k >= bad], "nonfinite")
    ckpt.close()
    origin = ((f"computed from the parameters of step {bad}" if bad else
               "computed from the initial parameters") if from_params
              else f"after the update of step {step}")
    text = f"non-finite {_WHAT[what]} {value} at step {step} ({origin}); "
    text += (f"last good checkpoint: step {last_good} in {ckpt.directory}" if last_good is not None
             else f"no good checkpoint in {ckpt.directory} (a rerun starts afresh)")
    if moved:
      text += f"; set aside: {', '.join(moved)}"
    text += ("; to go on, rerun with a lower --config.optim.base_lr and "
             "--config.allow_config_change=True, or with --config.nonfinite=skip")
    return NonFiniteLossError(text, step, bad, last_good)
