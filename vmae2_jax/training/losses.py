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
  x = cubes.astype(jnp.float32) * (1.0 / 255.0)
  if not normalize:
    return x
  b, n, c = x.shape
  x = x.reshape(b, n, c // 3, 3)
  mean = jnp.mean(x, axis=2, keepdims=True)
  var = jnp.var(x, axis=2, keepdims=True, ddof=1)
  x = (x - mean) / (jnp.sqrt(var) + TARGET_STD_EPS)
  return x.reshape(b, n, c)


def weighted_mse(pred, target, weights):
  """sum_tokens w * mean_sq_err / sum(w): only encoder-masked tokens count."""
  err = jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=-1)
  return jnp.sum(err * weights) / jnp.sum(weights)
