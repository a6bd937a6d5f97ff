"""Losses: the pre-training pixel target and weighted MSE; soft-target cross-entropy."""

import jax
import jax.numpy as jnp

from vmae2_jax.models import patching

TARGET_STD_EPS = 1e-6


def channel_major(cubes):
  """[B, n, 2*p*p*3] cubes (channel last) -> float32 [B, n, 3, 2*p*p]."""
  b, n, c = cubes.shape
  return jnp.swapaxes(cubes.reshape(b, n, c // 3, 3), 2, 3).astype(jnp.float32)


def channel_last(x):
  """Inverse of channel_major: [B, n, 3, 2*p*p] -> [B, n, 2*p*p*3]."""
  b, n = x.shape[:2]
  return jnp.swapaxes(x, 2, 3).reshape(b, n, -1)


def cube_statistics(x):
  """Per cube and channel: mean and unbiased std + 1e-6 of channel-major x, [B, n, 3, 1].

  The reference's target normalisation; the reconstruction picture maps
  predictions back with the same numbers. Reducing over the minor axis keeps
  the sums contiguous and vectorised.
  """
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.sum(jnp.square(x - mean), axis=-1, keepdims=True) / (x.shape[-1] - 1)  # unbiased
  return mean, jnp.sqrt(var) + TARGET_STD_EPS


def pixel_targets(video, target_idx, patch: int, normalize: bool = True):
  """Targets for the decoder's tokens, [B, N_dec, 2*p*p*3] float32.

  Gathers the target cubes from the uint8 clip first (cheap), then, as the
  reference, normalises each cube per channel with the unbiased std:
  (x - mean) / (sqrt(var) + 1e-6), over pixels in [0, 1].
  """
  cubes = patching.gather_tokens(patching.patchify(video, patch), target_idx)
  if not normalize:
    return cubes.astype(jnp.float32) * (1.0 / 255.0)
  x = channel_major(cubes) * (1.0 / 255.0)
  mean, std = cube_statistics(x)
  return channel_last((x - mean) / std)


def weighted_mse(pred, target, weights):
  """sum_tokens w * mean_sq_err / sum(w): only encoder-masked tokens count."""
  err = jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=-1)
  return jnp.sum(err * weights) / jnp.sum(weights)


def smoothed_one_hot(labels, num_classes: int, smoothing: float = 0.0):
  """[B] int labels -> [B, K] float32 targets: 1 - s + s/K on the label, s/K elsewhere.

  The same distribution as timm's mixup_target (mixup off) and its
  LabelSmoothingCrossEntropy, so one soft-target loss covers every case.
  """
  off = smoothing / num_classes
  return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * (1.0 - smoothing) + off


def soft_target_cross_entropy(logits, targets):
  """mean over the batch of sum_k -target_k * log_softmax(logits)_k, in float32."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.mean(jnp.sum(-targets * logp, axis=-1))
