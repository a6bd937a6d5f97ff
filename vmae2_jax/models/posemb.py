"""Fixed 1-D sinusoid position tables (not parameters, never checkpointed)."""

import functools

import numpy as np


@functools.lru_cache(maxsize=32)
def sinusoid_table(num_tokens: int, dim: int) -> np.ndarray:
  """[num_tokens, dim] float32; angle(pos, j) = pos / 10000^(2*(j//2)/dim).

  Even columns hold sin, odd columns cos, as in the reference. Computed in
  float64 and rounded once so it equals the reference table bit for bit.
  """
  pos = np.arange(num_tokens, dtype=np.float64)[:, None]
  j = np.arange(dim)
  angles = pos / np.power(10000.0, 2 * (j // 2) / dim)
  table = np.where(j % 2 == 0, np.sin(angles), np.cos(angles))
  table = table.astype(np.float32)
  table.setflags(write=False)
  return table
