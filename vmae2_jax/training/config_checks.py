"""Start-up checks: a bad config stops with one line naming the field."""

from __future__ import annotations

from configs.common import STAGES
from vmae2_jax import paths
from vmae2_jax.masking import MaskSpec
from vmae2_jax.models import get_variant, patching
from vmae2_jax.models.options import ModelOptions


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def _fail_as_config_error(fn, *args, **kwargs):
  try:
    return fn(*args, **kwargs)
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(str(e)) from None


def _one_of(config, field: str, allowed: tuple) -> None:
  node = config
  for part in field.split("."):
    node = node[part]
  if node not in allowed:
    raise ConfigError(f"config.{field}={node!r} is not one of {allowed}")


def _at_least(config, field: str, low) -> None:
  node = config
  for part in field.split("."):
    node = node[part]
  if node < low:
    raise ConfigError(f"config.{field}={node!r} must be >= {low}")


def check_run_fields(config) -> None:
  """The loop's own fields: lengths, log and checkpoint intervals, what a fault does."""
  _one_of(config, "nonfinite", ("stop", "skip"))
  _one_of(config, "data.source", ("shards", "tfds", "synthetic"))
  _one_of(config, "data.sampling", ("dense", "segment"))
  _one_of(config, "host_malloc", ("auto", "keep", "default"))
  for field in ("optim.mu_dtype", "optim.nu_dtype"):
    _one_of(config, field, ("", "float32", "bfloat16", "float16"))
  for field in ("log_every", "checkpoint_every", "keep_checkpoints", "data.sampling_rate"):
    _at_least(config, field, 1)
  for field in ("keep_period", "stop_after", "total_steps", "warmup_steps", "optim.base_lr",
                "optim.min_lr", "optim.weight_decay"):
    _at_least(config, field, 0)
  _at_least(config, "eval.every_steps", -1)
  if not config.total_steps and config.epochs < 1:
    raise ConfigError(f"config.epochs={config.epochs} must be >= 1 (or set config.total_steps)")


def check_common(config, batch_shards: int) -> None:
  """Fields every stage reads: stage, model, clip shape, batch split over the devices."""
  if config.stage not in STAGES:
    raise ConfigError(f"config.stage={config.stage!r} is not one of {STAGES}")
  check_run_fields(config)
  size = _fail_as_config_error(get_variant, config.model.variant)
  _fail_as_config_error(ModelOptions.from_config, config.model)
  d = config.data
  if d.image_size % size.patch:
    raise ConfigError(
        f"config.data.image_size={d.image_size} is not divisible by the patch size {size.patch} "
        f"of {config.model.variant}")
  if d.source == "shards" and d.train_path and d.sources:
    raise ConfigError(f"config.data.train_path={d.train_path!r} and config.data.sources are "
                      "both set: name the training shards in one of them (--config.data."
                      "train_path= clears the file's path)")
  if d.frames % patching.TUBELET:
    raise ConfigError(f"config.data.frames={d.frames} must be even (tubelet size 2)")
  if d.source == "shards":
    _check_shard_urls(d)
  if config.batch_size < 1:
    raise ConfigError(f"config.batch_size={config.batch_size} must be positive")
  if d.num_sample < 1:
    raise ConfigError(f"config.data.num_sample={d.num_sample} must be positive")
  accum = config.optim.accum_steps
  if accum < 1 or config.batch_size % accum:
    raise ConfigError(f"config.optim.accum_steps={accum} must be positive and divide "
                      f"config.batch_size={config.batch_size}")
  clips = config.batch_size // accum * d.num_sample
  if clips % batch_shards:
    raise ConfigError(
        f"config.batch_size={config.batch_size} / config.optim.accum_steps={accum} x "
        f"config.data.num_sample={d.num_sample} = {clips} clips per micro-batch is not "
        f"divisible by the {batch_shards} devices the batch is split over")
  if not 0.0 < config.optim.layer_decay <= 1.0:
    raise ConfigError(f"config.optim.layer_decay={config.optim.layer_decay} must be in (0, 1]")


def _check_shard_urls(d) -> None:
  """Shard folders in a store no reader reaches (neither local, gs:// nor s3://): refused
  before any read."""
  named = [("config.data.train_path", d.train_path), ("config.data.val_path", d.val_path)]
  for i, entry in enumerate(d.sources or ()):
    path = entry if isinstance(entry, str) else (
        entry.get("path", "") if hasattr(entry, "get") else getattr(entry, "path", ""))
    named.append((f"config.data.sources[{i}].path", path))
  for field, path in named:
    if path:
      try:
        paths.check_native(path, field, "the shards are read")
      except paths.UnreachableURLError as e:
        raise ConfigError(str(e)) from None


def check_pretrain_config(config, num_devices: int) -> MaskSpec:
  """Validates config for pre-training and returns the mask spec it implies."""
  check_common(config, num_devices)
  size = get_variant(config.model.variant)
  grid = patching.grid_shape(config.data.frames, config.data.image_size, size.patch)
  return _fail_as_config_error(MaskSpec.from_config, config.masking, grid)


def check_classify_config(config, num_devices: int, num_classes: int) -> None:
  """Validates config for post-pre-training / fine-tuning (num_classes already resolved)."""
  check_common(config, num_devices)
  if num_classes < 1:
    raise ConfigError("config.model.num_classes=0 and the training shards name no classes: "
                      "set config.model.num_classes")
  if config.data.source == "synthetic":
    raise ConfigError("config.data.source='synthetic' has no labels; supervised stages read "
                      "'shards' or 'tfds'")
  if config.data.sampling not in ("dense", "segment"):
    raise ConfigError(f"config.data.sampling={config.data.sampling!r} is not dense|segment")
  m = config.mixup
  for field in ("mixup_alpha", "cutmix_alpha"):
    if m[field] < 0:
      raise ConfigError(f"config.mixup.{field}={m[field]} must be >= 0")
  for field in ("prob", "switch_prob"):
    if not 0.0 <= m[field] <= 1.0:
      raise ConfigError(f"config.mixup.{field}={m[field]} must be in [0, 1]")
  if not 0.0 <= m.label_smoothing < 1.0:
    raise ConfigError(f"config.mixup.label_smoothing={m.label_smoothing} must be in [0, 1)")
  for field in ("head_dropout", "drop_path_rate"):
    if not 0.0 <= config.model[field] < 1.0:
      raise ConfigError(f"config.model.{field}={config.model[field]} must be in [0, 1)")
  for field in ("test_num_segment", "test_num_crop"):
    if config.data[field] < 1:
      raise ConfigError(f"config.data.{field}={config.data[field]} must be >= 1")
