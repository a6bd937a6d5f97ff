"""WORKDIR/metrics.jsonl across the segments of a resumed run, and the curves picture."""

import json

import numpy as np
from PIL import Image

from vmae2_jax.evaluation.curves import draw_curves, open_metrics, read_metrics, write_curves


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


def test_picture_draws_the_curves(tmp_path):
  train = [{"step": s, "loss": 1.0 / s, "lr": 1e-3} for s in range(1, 50)]
  img = np.asarray(draw_curves(train, []))
  assert img.shape == (2 * 260, 640, 3)
  # The loss line (its colour) falls from the top left to the bottom right of panel 1.
  blue = np.all(img[:260] == (31, 119, 180), axis=-1)
  ys, xs = np.nonzero(blue[40:])  # below the legend
  assert ys[xs < 120].mean() < ys[xs > 500].mean()
  with_val = draw_curves(train, [{"step": 49, "val_top1": 40.0, "val_top5": 80.0}])
  assert with_val.size == (640, 3 * 260)
  assert write_curves(str(tmp_path)) is None  # nothing logged, no picture
  _write(tmp_path / "metrics.jsonl", [{"step": 1, "kind": "train", "loss": float("nan")}])
  assert Image.open(write_curves(str(tmp_path))).size == (640, 2 * 260)
