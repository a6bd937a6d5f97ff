"""Start-up checks: a bad config stops with one line naming the field."""

from __future__ import annotations

from vmae2_jax.masking import MaskSpec
from vmae2_jax.models import get_variant, patching


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def check_pretrain_config(config, num_devices: int) -> MaskSpec:
  """Validates config for pre-training and returns the mask spec it implies."""
  size = get_variant(config.model.variant)
  d = config.data
  image = d.image_size
  if image % size.patch:
    raise ConfigError(
        f"config.data.image_size={image} is not divisible by the patch size {size.patch} "
        f"of {config.model.variant}")
  if d.frames % patching.TUBELET:
    raise ConfigError(f"config.data.frames={d.frames} must be even (tubelet size 2)")
  views = config.batch_size * d.get("num_sample", 1)
  if config.batch_size < 1:
    raise ConfigError(f"config.batch_size={config.batch_size} must be positive")
  if views % num_devices:
    raise ConfigError(
        f"config.batch_size={config.batch_size} x config.data.num_sample={d.get('num_sample', 1)}"
        f" = {views} clips is not divisible by the {num_devices} devices")
  grid = patching.grid_shape(d.frames, image, size.patch)
  try:
    return MaskSpec.from_config(config.masking, grid)
  except ValueError as e:
    raise ConfigError(str(e)) from None
