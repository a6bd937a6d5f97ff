"""The status line of long commands (extraction, the multi-view test)."""

import io

from vmae2_jax.progress import Progress, duration


def test_lines_show_count_rate_and_eta():
  out = io.StringIO()
  bar = Progress("multi-view test", "batches", stream=out, interval=0.0)
  bar.start -= 10.0  # 10 s elapsed
  bar.update(5, 20, "3 videos")
  bar.update(20, 20, force=True)
  bar.close()
  first, last = out.getvalue().splitlines()
  assert first.startswith("multi-view test: 3 videos, 5/20 batches, 0.5 batches/s, ETA 0m30s")
  assert last.startswith("multi-view test: 20/20 batches, 2.0 batches/s, done in 0m10s")


def test_throttled_off_a_terminal_and_eta_unknown_without_total():
  out = io.StringIO()
  bar = Progress("extract", "windows", stream=out)  # not a tty: a line every 30 s
  bar.update(1, 10)
  assert out.getvalue() == ""
  bar.interval = 0.0
  bar.update(3)
  assert out.getvalue().rstrip().endswith("ETA ?")
  assert duration(3725) == "1h02m" and duration(59.6) == "1m00s"
  assert duration(float("inf")) == "?"  # the shard builder's ETA before any rate
