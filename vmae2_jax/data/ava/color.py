"""The reference's HSV colour jitter for detection clips, on device (dm-pix).

The reference (VideoMAE's AVA recipe, AlphAction's ColorJitter) converts each
training clip to HSV with OpenCV, shifts hue, saturation and value by one
integer per clip drawn uniformly from [-b, b], wraps the hue and clips the
others, and converts back. OpenCV's 8-bit HSV has hue in [0, 180) and
saturation/value in [0, 255]; the bounds are round(hue_degrees / 2),
round(saturation * 255), round(value * 255): 10, 26 and 26 for the recipe's
(20, 0.1, 0.1). Here the same shifts act on dm-pix's continuous HSV (hue in
[0, 1)), so results match OpenCV's up to its 8-bit rounding of H, S and V.
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp

HUE, SATURATION, VALUE = 20.0, 0.1, 0.1   # the reference's HUE/SAT/VAL_JITTER


def jitter_bounds(hue: float = HUE, saturation: float = SATURATION,
                  value: float = VALUE) -> tuple[int, int, int]:
  """Largest integer shifts in OpenCV's 8-bit HSV units (hue 0..179, S and V 0..255)."""
  return int(round(hue / 2)), int(round(saturation * 255)), int(round(value * 255))


def hsv_shift(video: jax.Array, shifts: jax.Array) -> jax.Array:
  """Clips [B, ..., 3] (RGB in [0, 255]) shifted by shifts [B, 3] = (dh, ds, dv) in OpenCV
  units; float32 in [0, 255]."""
  x = video.astype(jnp.float32) / 255.0
  h, s, v = jnp.moveaxis(pix.rgb_to_hsv(x), -1, 0)
  per_clip = shifts.astype(jnp.float32).reshape(shifts.shape[:1] + (1,) * (video.ndim - 2) + (3,))
  h = jnp.mod(h + per_clip[..., 0] / 180.0, 1.0)
  s = jnp.clip(s + per_clip[..., 1] / 255.0, 0.0, 1.0)
  v = jnp.clip(v + per_clip[..., 2] / 255.0, 0.0, 1.0)
  return pix.hsv_to_rgb(jnp.stack([h, s, v], axis=-1)) * 255.0


def color_jitter(video: jax.Array, key: jax.Array, *, hue: float = HUE,
                 saturation: float = SATURATION, value: float = VALUE) -> jax.Array:
  """The reference's per-clip HSV jitter of video [B, T, H, W, 3] (uint8, or float in
  [0, 255]); returns the input's dtype (uint8: rounded). Jittable; one draw per clip."""
  bounds = jnp.array(jitter_bounds(hue, saturation, value), jnp.int32)
  shifts = jax.random.randint(key, (video.shape[0], 3), -bounds, bounds + 1)
  out = hsv_shift(video, shifts)
  if video.dtype == jnp.uint8:
    return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)
  return out.astype(video.dtype)
