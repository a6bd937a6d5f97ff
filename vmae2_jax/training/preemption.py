"""SIGTERM as a request: the loop finishes its step, saves it, waits for the save and returns.

The handler only counts signals (a second SIGTERM while saving changes
nothing; the save goes on). With several processes JAX's distributed service
owns SIGTERM and agrees on a step for all of them; the loop reads that as
Orbax's reached_preemption, so no handler is installed there.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import jax


class Watch:
  """How many SIGTERMs arrived since the watch began."""

  def __init__(self):
    self.signals = 0

  @property
  def requested(self) -> bool:
    return self.signals > 0

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.signals += 1  # nothing else: this runs between two bytecodes of the loop


@contextlib.contextmanager
def watch():
  """Yields a Watch; SIGTERM goes to it while the context is open (single process only).

  Once a SIGTERM arrived the handler stays installed after the context: the
  process is about to exit 0 and a late signal must not turn that into 143.
  """
  w = Watch()
  if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
    yield w
    return
  previous = signal.signal(signal.SIGTERM, w._on_sigterm)
  try:
    yield w
  finally:
    if not w.requested:
      signal.signal(signal.SIGTERM, previous)
