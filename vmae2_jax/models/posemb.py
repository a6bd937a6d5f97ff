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


def keys_cubic_taps(t, a: float = -0.75):
  """The 4 weights of PyTorch's bicubic kernel (Keys, a=-0.75) at offset t in [0, 1),
  for the taps floor(x)-1 .. floor(x)+2; works on numpy and jax arrays."""
  near = lambda d: ((a + 2) * d - (a + 3)) * d * d + 1          # |d| <= 1
  far = lambda d: ((a * d - 5 * a) * d + 8 * a) * d - 4 * a     # 1 < |d| < 2
  return far(t + 1), near(t), near(1 - t), far(2 - t)


def bicubic_matrix(n_in: int, n_out, rows: int | None = None, xp=np):
  """[..., rows, n_in] weights of torch interpolate(mode="bicubic", align_corners=False)
  from n_in to n_out samples in 1-D (taps clamped to the edge).

  n_out may be an integer array (jax, traced): one matrix per entry, rows past
  its n_out are zero, so a batch of frames padded to `rows` grid cells gets
  each frame's own resize at static shape.
  """
  rows = int(n_out) if rows is None else rows
  dtype = xp.float64 if xp is np else xp.float32
  n_out = xp.asarray(n_out, dtype)[..., None]
  j = xp.arange(rows, dtype=dtype)
  x = (n_in / n_out) * (j + 0.5) - 0.5
  i = xp.floor(x)
  cols = xp.arange(n_in)
  m = 0.0
  for k, w in zip(range(-1, 3), keys_cubic_taps(x - i)):
    idx = xp.clip(i + k, 0, n_in - 1).astype(xp.int32)
    m = m + w[..., None] * (idx[..., None] == cols)
  return xp.where((j < n_out)[..., None], m, 0.0)
