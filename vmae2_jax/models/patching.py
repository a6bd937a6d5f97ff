"""Cutting clips into tubelet cubes and gathering tokens by index.

Clips are channels-last [B, T, H, W, 3]; a cube is (2, p, p, 3) flattened in
(t, h, w, c) order, and tokens are ordered (t, h, w) row-major, as in the
reference.
"""

import jax.numpy as jnp
import numpy as np

TUBELET = 2
# ImageNet statistics used by the reference for inputs and to un-normalise targets.
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def grid_shape(frames: int, size: int | tuple[int, int], patch: int) -> tuple[int, int, int]:
  h, w = (size, size) if isinstance(size, int) else size
  return frames // TUBELET, h // patch, w // patch


def patchify(video, patch: int):
  """[B, T, H, W, C] -> [B, N, 2*p*p*C] in the video's own dtype."""
  b, t, h, w, c = video.shape
  x = video.reshape(b, t // TUBELET, TUBELET, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, (t // TUBELET) * (h // patch) * (w // patch), TUBELET * patch * patch * c)


def unpatchify(tokens, frames: int, size: tuple[int, int], patch: int, channels: int = 3):
  """Inverse of patchify: [B, N, 2*p*p*C] -> [B, T, H, W, C]."""
  b = tokens.shape[0]
  h, w = size
  x = tokens.reshape(b, frames // TUBELET, h // patch, w // patch, TUBELET, patch, patch, channels)
  x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, frames, h, w, channels)


def gather_tokens(x, idx):
  """x [B, N, ...], idx [B, M] -> [B, M, ...]."""
  return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def normalize_pixels(x, mean=MEAN, std=STD):
  """uint8 (or [0, 255] float) pixels, channel last -> (x/255 - mean) / std, float32
  (ImageNet statistics unless the model was trained with others)."""
  x = x.astype(jnp.float32) * (1.0 / 255.0)
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def normalize_cubes(cubes, mean=MEAN, std=STD):
  """Normalises flattened (2, p, p, 3) cubes channel-wise; channel is the last of each cube."""
  shape = cubes.shape
  x = normalize_pixels(cubes.reshape(shape[:-1] + (-1, 3)), mean, std)
  return x.reshape(shape)
