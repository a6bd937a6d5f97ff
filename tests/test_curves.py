"""WORKDIR/metrics.jsonl across the segments of a resumed run, and the curves picture."""

import json

import numpy as np
from PIL import Image

from vmae2_jax.evaluation.curves import (draw_curves, log_ticks, open_metrics, read_metrics,
                                        run_title, write_curves)


def _write(path, rows, tail=""):
  with open_metrics(str(path.parent)) as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
    f.write(tail)


def test_later_rows_win_and_a_cut_line_is_ignored(tmp_path):
  # Segment 1 logged steps 1-6 and was killed mid-line; its last checkpoint was step 4,
  # so segment 2 logs steps 5-8 again with other values.
  _write(tmp_path / "metrics.jsonl",
         [{"step": s, "kind": "train", "loss": 10.0 + s, "lr": 1.0} for s in range(1, 7)]
         + [{"step": 4, "kind": "val", "val_top1": 50.0, "val_top5": 90.0}],
         tail='{"step": 7, "kind": "tr')
  _write(tmp_path / "metrics.jsonl",
         [{"step": s, "kind": "train", "loss": float(s), "lr": 1.0} for s in range(5, 9)]
         + [{"step": 8, "kind": "val", "val_top1": 75.0, "val_top5": 100.0},
            {"step": 8, "kind": "test", "test_top1": 1.0}])
  train, val = read_metrics(str(tmp_path))
  assert [r["step"] for r in train] == list(range(1, 9))
  assert [r["loss"] for r in train] == [11.0, 12.0, 13.0, 14.0, 5.0, 6.0, 7.0, 8.0]
  assert [(r["step"], r["val_top1"]) for r in val] == [(4, 50.0), (8, 75.0)]


def _round(ticks) -> bool:
  """Ticks a person would pick: evenly spaced by 1, 2, 2.5 or 5 x 10^n, on multiples of it."""
  ticks = np.asarray(ticks, float)
  step = np.diff(ticks)
  if len(ticks) < 3 or not np.allclose(step, step[0]):
    return False
  mantissa = step[0] / 10 ** np.floor(np.log10(step[0]))
  return (any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5))
          and np.allclose(ticks / step[0], np.round(ticks / step[0])))


def _labels(ax):
  """The y tick labels shown (matplotlib also keeps ticks just outside the limits)."""
  lo, hi = sorted(ax.get_ylim())
  return [t.get_text() for v, t in zip(ax.get_yticks(), ax.get_yticklabels())
          if lo - 1e-9 <= v <= hi + 1e-9]


def test_picture_draws_the_curves(tmp_path):
  # A loss between 0.945 and 1.46 (the hand-drawn axes labelled it 0.945, 1.07, ...).
  train = [{"step": s, "loss": 0.945 + 0.515 / s ** 0.5, "lr": 1e-3 * s / 49}
           for s in range(1, 50)]
  fig = draw_curves(train, [], title="my_run, step 49")
  fig.canvas.draw()
  loss_ax, lr_ax = fig.axes
  assert fig.get_suptitle() == "my_run, step 49"
  np.testing.assert_allclose(loss_ax.lines[0].get_xydata(),
                             [(r["step"], r["loss"]) for r in train])
  for ax in (loss_ax, lr_ax):
    inside = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert _round(inside), inside
    assert all(float(x).is_integer() for x in ax.get_xticks())  # steps: whole numbers
  assert "0.945" not in _labels(loss_ax)

  val = [{"step": 20, "val_top1": 40.0, "val_top5": 80.0},
         {"step": 49, "val_top1": 55.5, "val_top5": 90.0}]
  fig = draw_curves(train, val, log_loss=True)
  fig.canvas.draw()
  loss_ax, _, acc_ax = fig.axes
  assert acc_ax.get_ylim() == (0, 100)  # accuracies on the whole 0-100% range
  assert _labels(acc_ax) == ["0%", "20%", "40%", "60%", "80%", "100%"]
  assert [line.get_label() for line in acc_ax.lines] == ["top-1", "top-5"]
  np.testing.assert_allclose(acc_ax.lines[0].get_xydata(), [(20, 40.0), (49, 55.5)])
  assert loss_ax.get_yscale() == "log"
  shown = [t for t in loss_ax.get_yticks() if loss_ax.get_ylim()[0] <= t <= loss_ax.get_ylim()[1]]
  # 1.02-1.46 spans no power of ten: still round ticks, labelled plainly.
  assert shown == [1.1, 1.2, 1.3, 1.4] and _labels(loss_ax) == ["1.1", "1.2", "1.3", "1.4"]
  assert log_ticks(1.05, 2.6) == [1.2, 1.5, 2.0, 2.5] and log_ticks(0.01, 10) == [0.01, 0.1, 1,
                                                                                   10]

  run = tmp_path / "my_run"
  run.mkdir()
  assert write_curves(str(run)) is None  # nothing logged, no picture
  _write(run / "metrics.jsonl", [{"step": 1, "kind": "train", "loss": float("nan")},
                                 {"step": 8, "kind": "train", "loss": 2.0}])
  assert run_title(str(run), *read_metrics(str(run))) == "my_run, step 8"
  assert Image.open(write_curves(str(run), log_loss=True)).size == (640, 2 * 260)
