"""The pre-training target (per-cube normalised pixels) and the weighted loss."""

import jax.numpy as jnp

from vmae2_jax.models import patching

TARGET_STD_EPS = 1e-6


def pixel_targets(video, target_idx, patch: int, normalize: bool = True):
  """Targets for the decoder's tokens, [B, N_dec, 2*p*p*3] float32.

  Gathers the target cubes from the uint8 clip first (cheap), then, as the
  reference, normalises each cube per channel with the unbiased std:
  (x - mean) / (sqrt(var) + 1e-6), over pixels in [0, 1].
  """
  cubes = patching.gather_tokens(patching.patchify(video, patch), target_idx)
  if not normalize:
    return cubes.astype(jnp.float32) * (1.0 / 255.0)
  b, n, c = cubes.shape
  # Channel-major view [B, n, 3, 2*p*p] so the statistics reduce over the
  # minor axis (contiguous, vectorised), then back to channel-last order.
  x = jnp.swapaxes(cubes.reshape(b, n, c // 3, 3), 2, 3).astype(jnp.float32) * (1.0 / 255.0)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.sum(jnp.square(x - mean), axis=-1, keepdims=True) / (c // 3 - 1)  # unbiased
  x = (x - mean) / (jnp.sqrt(var) + TARGET_STD_EPS)
  return jnp.swapaxes(x, 2, 3).reshape(b, n, c)


def weighted_mse(pred, target, weights):
  """sum_tokens w * mean_sq_err / sum(w): only encoder-masked tokens count."""
  err = jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=-1)
  return jnp.sum(err * weights) / jnp.sum(weights)
