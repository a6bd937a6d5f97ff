"""Spatio-temporal action detection on AVA: the detector, its loss, its data, frame mAP.

As the VideoMAE detection recipe: person boxes (jittered ground truth for
training, widened detections at test) pooled from the encoder's map
(vmae2_jax.models.detector), sigmoid binary cross-entropy over the 80 action
classes of every real box, the reference's HSV colour jitter on device.
Validation is the frame mAP of the evaluation set (score = sigmoid x the
person detector's score, the official 60-class list); the best checkpoint is
kept by it and each validation writes its detections in AVA's CSV format.

The loss is the sum over boxes and classes of the element-wise BCE, divided
by 80 and by the clips of the batch. The reference's is the same sum per GPU
divided by 80, averaged over GPUs: a constant factor (clips per GPU) apart,
which AdamW does not see.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vmae2_jax.models import get_variant
from vmae2_jax.models.detector import Detector
from vmae2_jax.models.options import ModelOptions
from vmae2_jax.training.config_checks import ConfigError, check_common


def check_detect_config(config, batch_shards: int) -> None:
  """The detection fields: a config without config.detect, or with impossible values, stops."""
  check_common(config, batch_shards)
  if "detect" not in config:
    raise ConfigError("config.stage='detect' needs the config.detect block (configs/_detect.py "
                      "detect_defaults(); see configs/detect_b_ava22.py)")
  if config.model.num_classes < 0:
    raise ConfigError(f"config.model.num_classes={config.model.num_classes} must be >= 0 "
                      "(0: the training shards' label map)")
  if config.data.num_sample != 1:
    raise ConfigError(f"config.data.num_sample={config.data.num_sample}: detection reads one "
                      "clip per keyframe (set 1)")
  for field in ("head_dropout", "drop_path_rate"):
    if not 0.0 <= config.model[field] < 1.0:
      raise ConfigError(f"config.model.{field}={config.model[field]} must be in [0, 1)")
  for field in ("max_boxes", "eval_max_boxes", "crop_size", "short_side"):
    if config.detect[field] < 1:
      raise ConfigError(f"config.detect.{field}={config.detect[field]} must be >= 1")
  size = get_variant(config.model.variant)
  if config.detect.crop_size % size.patch:
    raise ConfigError(f"config.detect.crop_size={config.detect.crop_size} is not divisible by "
                      f"the patch size {size.patch} of {config.model.variant}")
  if config.detect.color_jitter and len(config.detect.color_jitter) != 3:
    raise ConfigError(f"config.detect.color_jitter={config.detect.color_jitter}: (hue degrees, "
                      "saturation, value), or () for none")


def detection_loss(logits, labels, box_mask):
  """Sum over real boxes and classes of BCE(logits, labels) / classes / clips (float32)."""
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
  per_box = jnp.mean(bce, axis=-1) * box_mask.astype(jnp.float32)
  return jnp.sum(per_box) / logits.shape[0]


class DetectTask:
  """The detector, its BCE loss with colour jitter on device, frame-mAP validation."""

  kind = "detector"
  device_keys = ("video", "boxes", "box_mask", "labels")
  best_metric = "val_map"

  def __init__(self, config, batch_shards: int, num_classes: int,
               class_names: tuple[str, ...] | None = None):
    check_detect_config(config, batch_shards)
    if num_classes < 1:
      raise ConfigError("config.model.num_classes=0 and no training shards to read the label "
                        "map from: set config.model.num_classes (80 for AVA)")
    self.config = config
    self.num_classes = int(num_classes)
    self.class_names = class_names
    self.batch_shards = batch_shards
    self.patch = get_variant(config.model.variant).patch

  def build_model(self, rngs: nnx.Rngs) -> Detector:
    m = self.config.model
    return Detector(get_variant(m.variant), self.num_classes, frames=self.config.data.frames,
                    image_size=self.config.data.image_size,
                    opts=ModelOptions.from_config(m, init="finetune"), rngs=rngs,
                    drop_path_rate=m.drop_path_rate, head_dropout=m.head_dropout,
                    head_init_scale=m.head_init_scale)

  def batch_shapes(self, clips: int) -> dict:
    d, n = self.config.data, self.config.detect.max_boxes
    s = self.config.detect.crop_size
    return {"video": ((clips, d.frames, s, s, 3), np.uint8),
            "boxes": ((clips, n, 4), np.float32),
            "box_mask": ((clips, n), np.bool_),
            "labels": ((clips, n, self.num_classes), np.float32)}

  def loss(self, params, graphdef, batch, key):
    jitter_key, drop_key = jax.random.split(key)
    video = batch["video"]
    hsv = self.config.detect.color_jitter
    if hsv:
      from vmae2_jax.data.ava.color import color_jitter
      video = color_jitter(video, jitter_key, hue=hsv[0], saturation=hsv[1], value=hsv[2])
    model = nnx.merge(graphdef, params)
    logits = model(video, batch["boxes"], key=drop_key, deterministic=False)
    return detection_loss(logits, batch["labels"], batch["box_mask"]), {}

  def predict(self, params, graphdef, video, boxes, valid_hw):
    """Per-box class probabilities [B, N, K] (sigmoid), no dropout. Boxes are widened
    inside the frame for pooling as the reference's test does."""
    from vmae2_jax.data.ava.boxes import widen
    model = nnx.merge(graphdef, params)
    amounts = tuple(self.config.detect.widen) or (0.0, 0.0)
    logits = model(video, widen(boxes, valid_hw, amounts), valid_hw=valid_hw,
                   deterministic=True)
    return jax.nn.sigmoid(logits)

  def train_iterator(self, process_index: int, process_count: int):
    from vmae2_jax.data.ava import make_detect_train_iterator
    return make_detect_train_iterator(self.config, process_index=process_index,
                                      process_count=process_count, seed=self.config.seed)

  def describe(self) -> str:
    c = self.config
    return (f"{self.num_classes} actions, up to {c.detect.max_boxes} boxes a clip "
            f"({c.detect.crop_size}px crops), RoIAlign 7x7 at 1/{self.patch}, colour jitter "
            f"{tuple(c.detect.color_jitter) or 'off'}, "
            f"drop path {c.model.drop_path_rate:g}, head dropout {c.model.head_dropout:g}")

  @property
  def has_eval_set(self) -> bool:
    return bool(self.config.data.val_path)

  def evaluate(self, exp, params) -> dict | None:
    """Frame mAP of the evaluation set (val_map, in %), its detections written to
    WORKDIR/detections/val_step<N>.csv."""
    if not self.has_eval_set:
      return None
    from vmae2_jax.evaluation import detection
    return detection.evaluate(exp, params, prefix="val")

  def finish(self, exp, params, workdir: str, step: int) -> dict:
    """The final evaluation (also eval_only): test_map and the detections CSV."""
    if not (self.has_eval_set and (self.config.eval.test_at_end or self.config.eval_only)):
      return {}
    from vmae2_jax.evaluation import detection
    return detection.evaluate(exp, params, prefix="test", workdir=workdir, step=step)
