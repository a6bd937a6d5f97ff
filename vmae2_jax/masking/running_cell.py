"""The decoder's running-cell maps (VideoMAE V2), as constant tables."""

from __future__ import annotations

import functools

import numpy as np


def cell_ones(ratio: float) -> int:
  n = int(4 * ratio)
  if not 0 < n < 4:
    raise ValueError(
        f"config.masking.decoder_ratio={ratio} gives {n} masked of 4 cells; use 0.25, 0.5 or 0.75")
  return n


@functools.lru_cache(maxsize=16)
def running_cell_maps(grid: tuple[int, int, int], ratio: float) -> np.ndarray:
  """The 4 decoder maps, bool [4, T'*h*w], 1 = dropped by the decoder.

  With queue q = [1]*n + [0]*(4-n), start s and time slot t the 2x2 cell is
  c[i] = q[(i + s + t + 1) % 4] and mask[t, y, x] = c[(y % 2) * 2 + (x % 2)].
  """
  t_slots, h, w = grid
  if h % 2 or w % 2:
    raise ValueError(
        f"running-cell decoder masking needs an even token grid, got H/p={h}, W/p={w} "
        "(config.data.image_size / patch)")
  n = cell_ones(ratio)
  queue = np.array([1] * n + [0] * (4 - n), bool)
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  cell_pos = (yy % 2) * 2 + (xx % 2)
  maps = np.zeros((4, t_slots, h, w), bool)
  for s in range(4):
    for t in range(t_slots):
      cell = queue[(np.arange(4) + s + t + 1) % 4]
      maps[s, t] = cell[cell_pos]
  out = maps.reshape(4, -1)
  out.setflags(write=False)
  return out


@functools.lru_cache(maxsize=16)
def running_cell_keep_table(grid: tuple[int, int, int], ratio: float) -> np.ndarray:
  """int32 [4, N_dec]: ascending token indices each map keeps for the decoder."""
  maps = running_cell_maps(grid, ratio)
  table = np.stack([np.flatnonzero(~m) for m in maps]).astype(np.int32)
  table.setflags(write=False)
  return table
