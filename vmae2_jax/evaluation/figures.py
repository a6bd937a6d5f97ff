"""Figures with matplotlib's Agg backend: no display, no pyplot global state.

Every picture the project writes (curves.png, confusion.png, the reconstruction
grid) is a `Figure` built here and saved atomically, so a reader never sees
half a PNG and concurrent runs in one process never share a current figure.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vmae2_jax import paths

DPI = 100


def new_figure(width_px: int, height_px: int) -> Figure:
  """A white figure of the given size in pixels, with an Agg canvas."""
  fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white",
               layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def save_png(fig: Figure, path) -> str:
  """Writes `fig` as PNG to `path` (a local path or a bucket URL) all at once."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=DPI)
  paths.write_bytes(path, buf.getvalue())
  return str(path)
