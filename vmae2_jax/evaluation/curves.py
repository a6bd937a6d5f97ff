"""The picture of a run: training loss (and lr) and, for supervised stages, validation accuracy.

Drawn with matplotlib (Agg) from WORKDIR/metrics.jsonl (one JSON object a line, written by
training.metrics_log), so it covers every segment of a resumed run: when a
step appears twice (a run killed after logging it resumed from an earlier
checkpoint), the later line wins.
"""

from __future__ import annotations

import json
import math
from typing import Sequence

from matplotlib import ticker
from matplotlib.figure import Figure

from vmae2_jax.evaluation.figures import new_figure, save_png

from vmae2_jax import paths

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
PANEL_W, PANEL_H = 640, 260  # pixels of one panel


def open_metrics(workdir: str):
  """WORKDIR/metrics.jsonl for appending (a paths.SegmentLog: a local file line-buffered,
  starting on a fresh line after a kill; in a bucket, this segment's own objects)."""
  return paths.SegmentLog(paths.join(workdir, METRICS_FILE))


def read_metrics(workdir: str) -> tuple[list[dict], list[dict]]:
  """(training rows, evaluation rows) of the whole run, one per step, by step."""
  train: dict[int, dict] = {}
  evals: dict[int, dict] = {}
  for line in paths.read_lines(paths.join(workdir, METRICS_FILE)):
    try:
      row = json.loads(line)
    except ValueError:  # a line cut short by a kill
      continue
    table = {"train": train, "val": evals}.get(row.get("kind"))
    if table is not None and "step" in row:
      table[int(row["step"])] = row
  return ([train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)])


_LOG_MANTISSAS = ((1,), (1, 3), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8),
                  (1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 9))


def log_ticks(lo: float, hi: float, least: int = 3) -> list[float]:
  """Round ticks for a log axis over [lo, hi]: the sparsest of 1/3, 1-2-5, ... per decade
  that puts at least `least` ticks in range (so a loss spanning 1.05-2.6 still gets some)."""
  lo, hi = max(lo, 1e-30), max(hi, lo * 1.0001)
  decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
  ticks = []
  for mantissas in _LOG_MANTISSAS:
    ticks = [float(f"{m * 10.0 ** e:.6g}") for e in decades for m in mantissas]
    ticks = [t for t in ticks if lo <= t <= hi]
    if len(ticks) >= least:
      break
  return ticks


def _panel(ax, title: str, series: Sequence[tuple[str, list[tuple[int, float]]]], *,
           log_y: bool = False, percent: bool = False) -> None:
  """One axes: a line per series over steps (a dot for a single point)."""
  ax.set_title(title, fontsize=10, loc="left")
  ax.set_xlabel("step")
  ax.grid(True, color="0.9")
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  drawn = False
  for name, pts in series:
    pts = [(s, v) for s, v in pts if math.isfinite(v) and (v > 0 or not log_y)]
    if pts:
      steps, values = zip(*pts)
      ax.plot(steps, values, marker="o" if len(pts) == 1 else None, label=name, lw=1.5)
      drawn = True
  if log_y and drawn:
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.yaxis.set_major_locator(ticker.FixedLocator(log_ticks(lo, hi)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
  if percent:  # accuracies: always the whole 0-100% range, ticks every 20%
    ax.set_ylim(0, 100)
    ax.yaxis.set_major_locator(ticker.MultipleLocator(20))
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(100, decimals=0))
  elif not log_y:
    ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useOffset=False)
  if drawn:
    ax.legend(loc="best", fontsize=8, frameon=False)
  else:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="0.5")


def draw_curves(train: list[dict], evals: list[dict], *, title: str = "",
                log_loss: bool = False) -> Figure:
  """Loss and lr panels; an accuracy panel (0-100%) when there are validation rows."""
  acc = [(name, [(r["step"], r[key]) for r in evals if key in r])  # already in %
         for name, key in (("top-1", "val_top1"), ("top-5", "val_top5"))]
  panels = 3 if any(pts for _, pts in acc) else 2
  fig = new_figure(PANEL_W, PANEL_H * panels)
  axes = fig.subplots(panels, 1)
  if title:
    fig.suptitle(title, fontsize=11)
  _panel(axes[0], "training loss" + (" (log scale)" if log_loss else ""),
         [("loss", [(r["step"], r["loss"]) for r in train if "loss" in r])], log_y=log_loss)
  _panel(axes[1], "learning rate", [("lr", [(r["step"], r["lr"]) for r in train if "lr" in r])])
  if panels == 3:
    _panel(axes[2], "validation accuracy (single view)", acc, percent=True)
  return fig


def run_title(workdir: str, train: list[dict], evals: list[dict]) -> str:
  """'<run folder name>, step <last logged step>'."""
  steps = [r["step"] for r in train + evals]
  name = paths.basename(str(workdir).rstrip("/"))
  return f"{name}, step {max(steps)}" if steps else name


def write_curves(workdir: str, *, log_loss: bool = False) -> str | None:
  """WORKDIR/curves.png from WORKDIR/metrics.jsonl; None when nothing was logged."""
  train, evals = read_metrics(workdir)
  if not train and not evals:
    return None
  fig = draw_curves(train, evals, title=run_title(workdir, train, evals), log_loss=log_loss)
  return save_png(fig, paths.join(workdir, CURVES_FILE))


def main(argv=None) -> int:
  import argparse
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.evaluation.curves",
                              description="Redraw WORKDIR/curves.png from metrics.jsonl.")
  p.add_argument("workdir")
  p.add_argument("--log_loss", action="store_true", help="log-scale loss axis")
  args = p.parse_args(argv)
  path = write_curves(args.workdir, log_loss=args.log_loss)
  print(path or f"{args.workdir}: no {METRICS_FILE} rows to draw")
  return 0 if path else 1


if __name__ == "__main__":
  raise SystemExit(main())
