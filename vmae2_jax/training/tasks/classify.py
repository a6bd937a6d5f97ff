"""Supervised stages (post-pre-training, fine-tuning): video classification.

Inside the step: mixup / cutmix on device, label smoothing, soft-target
cross-entropy. Around it: single-view validation while training (the best
checkpoint is kept by its top-1) and the multi-view test at the end.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vmae2_jax import paths
from vmae2_jax.data import make_train_iterator
from vmae2_jax.evaluation import classification
from vmae2_jax.models import build_classifier
from vmae2_jax.training import mixup
from vmae2_jax.training.config_checks import ConfigError, check_classify_config
from vmae2_jax.training.losses import smoothed_one_hot, soft_target_cross_entropy


class ClassifyTask:
  """The classifier, its loss with mixup, its data, validation and multi-view test."""

  kind = "classifier"
  device_keys = ("video", "label")
  best_metric = "val_top1"

  def __init__(self, config, batch_shards: int, num_classes: int,
               class_names: tuple[str, ...] | None):
    check_classify_config(config, batch_shards, num_classes)
    if class_names is not None and len(class_names) != num_classes:
      raise ConfigError(f"{len(class_names)} class names for config.model.num_classes="
                        f"{num_classes} (names from config.data.class_names or the shards)")
    self.config = config
    self.num_classes = num_classes
    self.class_names = tuple(class_names) if class_names else None
    self.mixup = mixup.MixupSpec.from_config(config.mixup)
    self.smoothing = float(config.mixup.label_smoothing)
    self.batch_shards = batch_shards

  def build_model(self, rngs: nnx.Rngs):
    return build_classifier(self.config, rngs, num_classes=self.num_classes)

  def batch_shapes(self, clips: int) -> dict:
    d = self.config.data
    return {"video": ((clips, d.frames, d.image_size, d.image_size, 3), np.uint8),
            "label": ((clips,), np.int32)}

  def mixed_input(self, batch, key):
    """(clips after mixup / cutmix, their soft targets, the dropout key) of one batch."""
    mix_key, drop_key = jax.random.split(key)
    video, labels = batch["video"], batch["label"]
    targets = smoothed_one_hot(labels, self.num_classes, self.smoothing)
    if self.mixup.enabled:
      h, w = video.shape[2:4]
      draws = mixup.sample_per_shard(mix_key, self.mixup, h, w, self.batch_shards)
      video, targets = mixup.apply(video, targets, draws)
    return video, targets, drop_key

  def loss(self, params, graphdef, batch, key):
    video, targets, drop_key = self.mixed_input(batch, key)
    labels = batch["label"]
    model = nnx.merge(graphdef, params)
    logits = model(video, key=drop_key, deterministic=False)
    loss = soft_target_cross_entropy(logits, targets)
    if self.mixup.enabled:  # mixed targets have no single right answer
      return loss, {}
    return loss, {"train_top1": jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))}

  def predict(self, params, graphdef, video):
    """log-softmax class scores [B, K] in float32, no dropout."""
    model = nnx.merge(graphdef, params)
    return jax.nn.log_softmax(model(video, deterministic=True).astype(jnp.float32), axis=-1)

  def train_iterator(self, process_index: int, process_count: int):
    return make_train_iterator(self.config, process_index=process_index,
                               process_count=process_count, seed=self.config.seed)

  def describe(self) -> str:
    m = self.config.mixup
    mix = (f"mixup {m.mixup_alpha:g} / cutmix {m.cutmix_alpha:g} (p {m.prob:g}, switch "
           f"{m.switch_prob:g})" if self.mixup.enabled else "no mixup")
    return (f"{self.num_classes} classes, {mix}, label smoothing {self.smoothing:g}, "
            f"drop path {self.config.model.drop_path_rate:g}, head dropout "
            f"{self.config.model.head_dropout:g}")

  @property
  def has_eval_set(self) -> bool:
    """config.data.val_path, or with TFDS its data.tfds_validation_split."""
    d = self.config.data
    return bool(d.val_path or d.source == "tfds")

  def evaluate(self, exp, params) -> dict | None:
    """Single-view validation on the evaluation set: val_top1, val_top5, val_loss."""
    if not self.has_eval_set:
      return None
    return classification.validate(exp, params)

  def finish(self, exp, params, workdir: str, step: int) -> dict:
    """The multi-view test on the evaluation set, written to
    WORKDIR/test_step<N>_<segments>x<crops>/ (each protocol its own report)."""
    if not (self.has_eval_set and (self.config.eval.test_at_end or self.config.eval_only)):
      return {}
    return classification.test(exp, params, paths.join(workdir, test_dir_name(self.config, step)))


def test_dir_name(config, step: int) -> str:
  """test_step<N>_<segments>x<crops>: another view count never overwrites a report."""
  d = config.data
  return f"test_step{step}_{d.test_num_segment}x{d.test_num_crop}"
