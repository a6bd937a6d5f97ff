"""A stage is a task: its model, its loss and metrics inside the step, its data, its evaluation.

`config.stage` picks it: "pretrain" -> PretrainTask; "postpretrain" and
"finetune" -> ClassifyTask (the same supervised task; the name stays with the run);
"distill" -> DistillTask (a classifier learning a frozen teacher's logits);
"detect" -> DetectTask (AVA action detection on person boxes).
"""

from __future__ import annotations

from absl import logging

from vmae2_jax.checkpointing.model_io import read_source_meta
from vmae2_jax.data.info import read_class_names, train_info
from vmae2_jax.training.tasks.classify import ClassifyTask
from vmae2_jax.training.tasks.detect import DetectTask
from vmae2_jax.training.tasks.distill import DistillTask
from vmae2_jax.training.tasks.pretrain import PretrainTask


def _training_set_info(config, required: bool):
  """(videos per epoch, classes, class names) of the training data, read from its manifest.

  Unless `required` (the epoch length or class count must come from it), a
  missing manifest gives zeros: compile-only and benchmarks run recipe configs
  whose data paths are placeholders, and training opens the data first anyway.
  """
  d = config.data
  has_train = d.source != "synthetic" and (d.train_path or d.sources or d.source == "tfds")
  if not has_train:
    return 0, 0, None
  try:
    info = train_info(config)
  except FileNotFoundError:
    if required:
      raise
    return 0, 0, None
  return info.num_videos, info.num_classes, info.class_names


def _init_from_classes(config):
  """(classes, names) a classifier checkpoint in config.init_from declares, else (0, None)."""
  if not config.init_from:
    return 0, None
  try:
    meta = read_source_meta(config.init_from)
  except (FileNotFoundError, ValueError):
    return 0, None  # reported properly when the weights are read
  if meta.get("kind") != "classifier":
    return 0, None
  return int(meta.get("num_classes") or 0), meta.get("class_names")


def _detect_training_set(config) -> tuple[int, int, tuple[str, ...] | None]:
  """(keyframes with boxes, classes, names by column) of AVA keyframe shards (the training
  set's manifest; without one, the evaluation set's classes); zeros when there are none to
  read (compile-only of a recipe config with placeholder paths)."""
  from vmae2_jax.data.ava import detect_train_info
  d = config.data
  if not (d.train_path or d.val_path):
    return 0, 0, None
  try:
    if d.train_path:
      info = detect_train_info(config)
      return info.num_videos, info.num_classes, info.class_names
    from vmae2_jax.data.ava.pipeline import KeyframeSet  # eval_only on a test set alone
    kset = KeyframeSet(d.val_path, "config.data.val_path")
    n = kset.num_classes(config)
    return 0, n, tuple(kset.label_map.get(i, "") for i in range(1, n + 1))
  except FileNotFoundError:
    if config.total_steps or config.eval_only or config.compile_only:
      return 0, 0, None
    raise


def make_task(config, batch_shards: int):
  """(task, training videos per epoch or 0) for config.stage; checks the config on the way.

  Classes and their names come from config.model.num_classes and
  config.data.class_names when set, else the training set's manifest, else a
  classifier checkpoint in config.init_from (e.g. eval_only of a converted model).
  """
  if config.stage == "pretrain":
    num_videos = config.data.num_videos
    if not num_videos and not config.total_steps:
      num_videos = _training_set_info(config, required=True)[0]
    return PretrainTask(config, batch_shards), num_videos
  if config.stage == "detect":  # AVA: an epoch is the training keyframes with boxes
    keyframes, classes, names = _detect_training_set(config)
    return (DetectTask(config, batch_shards, config.model.num_classes or classes, names),
            config.data.num_videos or keyframes)
  needs_length = not (config.data.num_videos or config.total_steps)
  videos, classes, names = _training_set_info(
      config, required=needs_length or not (config.model.num_classes or config.init_from))
  if names is None and config.data.class_names:  # no training data: the names file alone
    names = read_class_names(config.data.class_names)
  if not classes or names is None:
    init_classes, init_names = _init_from_classes(config)
    classes = classes or init_classes
    if names is None and init_names:
      names = tuple(init_names)
  num_classes = config.model.num_classes or classes or (len(names) if names else 0)
  if names is not None and len(names) != num_classes and not config.data.class_names:
    logging.warning("%d class names for a %d-way head: names dropped", len(names), num_classes)
    names = None
  # eval_only tests the student alone: a distillation's teacher is neither read nor needed
  task_class = DistillTask if config.stage == "distill" and not config.eval_only else ClassifyTask
  return (task_class(config, batch_shards, num_classes, names),
          config.data.num_videos or videos)


__all__ = ["ClassifyTask", "DetectTask", "DistillTask", "PretrainTask", "make_task"]
