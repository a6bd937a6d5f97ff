"""One status line for long commands: done/total, rate and an ETA, on stderr.

Redrawn in place on a terminal (at most every 0.5 s); elsewhere (logs, CI) a
line every 30 s, so a long job's log shows it is alive without flooding it.
"""

from __future__ import annotations

import math
import sys
import time


def duration(seconds: float) -> str:
  """1h02m / 3m05s; "?" when unknown (not finite)."""
  if not math.isfinite(seconds):
    return "?"
  s = int(seconds + 0.5)
  return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
  """`update(done, total)` counts units (windows, views, batches); `note` adds context."""

  def __init__(self, label: str, unit: str, stream=None, interval: float | None = None):
    self.label, self.unit = label, unit
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.interval = interval if interval is not None else (0.5 if self.tty else 30.0)
    self.start = time.monotonic()
    self.last = self.start  # nothing to show before the first interval
    self.shown = False

  def update(self, done: float, total: float | None = None, note: str = "",
             force: bool = False) -> None:
    now = time.monotonic()
    if not force and now - self.last < self.interval:
      return
    self.last = now
    elapsed = now - self.start
    rate = done / elapsed if elapsed > 0 else 0.0
    if force:
      eta = f"done in {duration(elapsed)}"
    elif total is not None and rate > 0 and total > done:
      eta = f"ETA {duration((total - done) / rate)}"
    else:
      eta = "ETA ?"
    count = f"{done:.0f}/{total:.0f}" if total is not None else f"{done:.0f}"
    parts = [f"{self.label}:", note + "," if note else "", f"{count} {self.unit},",
             f"{rate:.1f} {self.unit}/s,", eta]
    line = " ".join(p for p in parts if p)
    if self.tty:
      self.stream.write("\r" + line.ljust(78))
    else:
      self.stream.write(line + "\n")
    self.stream.flush()
    self.shown = True

  def close(self) -> None:
    if self.tty and self.shown:
      self.stream.write("\n")
      self.stream.flush()
