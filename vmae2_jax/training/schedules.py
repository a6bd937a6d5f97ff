"""The learning-rate schedule, all of it: step counts, the batch/256 scaling, warmup + cosine."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

REFERENCE_BATCH = 256
# A peak lr under this after scaling a batch of at most 1/8 of REFERENCE_BATCH is worth a
# warning: a recipe's base lr made for hundreds of videos per update barely moves a fresh
# head at a laptop's batch (seen: 7e-4 x 8/256 = 2.2e-5, a model predicting one class).
SMALL_PEAK_LR = 1e-4


@dataclasses.dataclass(frozen=True)
class Schedule:
  """lr(step) of the reference's per-iteration cosine_scheduler table, and how it was sized.

  Warmup is np.linspace(0, peak_lr, warmup_steps) (reaching the peak on its
  last step); then min + (peak - min)/2 * (1 + cos(pi * i / decay_steps)).
  One step is one optimizer update (accumulated micro-batches count once).
  """

  total_steps: int
  warmup_steps: int
  steps_per_epoch: int   # 0 when the run is sized by total_steps alone
  base_lr: float
  min_lr_base: float
  batch_size: int        # videos per update: the lr scale is batch_size / 256

  @property
  def lr_scale(self) -> float:
    return self.batch_size / REFERENCE_BATCH

  @property
  def peak_lr(self) -> float:
    return self.base_lr * self.lr_scale

  @property
  def min_lr(self) -> float:
    return self.min_lr_base * self.lr_scale

  def __call__(self, step):
    decay_steps = max(1, self.total_steps - self.warmup_steps)
    step = jnp.asarray(step, jnp.float32)
    warm = self.peak_lr * step / max(1, self.warmup_steps - 1)
    i = jnp.clip(step - self.warmup_steps, 0, decay_steps)
    cos = self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1 + jnp.cos(jnp.pi * i / decay_steps))
    return jnp.where(step < self.warmup_steps, warm, cos)

  def describe(self) -> str:
    sizing = (f"{self.total_steps // self.steps_per_epoch} epochs x {self.steps_per_epoch} steps"
              if self.steps_per_epoch else "config.total_steps")
    return (f"lr {self.base_lr:g} x {self.batch_size}/{REFERENCE_BATCH} = {self.peak_lr:.4g} peak, "
            f"min {self.min_lr_base:g} x {self.batch_size}/{REFERENCE_BATCH} = {self.min_lr:.4g}; "
            f"warmup {self.warmup_steps} of {self.total_steps} steps ({sizing})")


def small_batch_warning(schedule: Schedule) -> str | None:
  """The start-up warning when the batch/256 scaling leaves a tiny peak lr, else None."""
  if schedule.lr_scale > 1 / 8 or schedule.peak_lr >= SMALL_PEAK_LR:
    return None
  return (f"warning: batch {schedule.batch_size} scales the lr by {schedule.batch_size}/"
          f"{REFERENCE_BATCH} to a peak of {schedule.peak_lr:.2g}: recipes made for hundreds "
          "of videos per update learn little at this batch (a model that predicts one class); "
          f"raise config.optim.base_lr (0.032 gives a 1e-3 peak at batch 8, as "
          "configs/finetune_own.py:Ti/16)")


def make_schedule(config, num_videos: int = 0) -> Schedule:
  """The run's schedule from config.total_steps, or epochs x (num_videos // batch_size).

  num_videos: config.data.num_videos when set, else the training set's size
  (the reference's len(dataset_train)); only needed without total_steps.
  """
  o = config.optim
  batch = int(config.batch_size)
  if config.total_steps > 0:
    total = int(config.total_steps)
    warmup = int(config.warmup_steps) or int(
        round(total * o.warmup_epochs / max(1, config.epochs)))
    per_epoch = max(1, num_videos // batch) if num_videos else 0
    return Schedule(total, min(warmup, total), per_epoch, o.base_lr, o.min_lr, batch)
  if not num_videos:
    raise ValueError("config.total_steps=0 and the epoch length is unknown: set "
                     "config.total_steps or config.data.num_videos")
  per_epoch = max(1, num_videos // batch)
  total = config.epochs * per_epoch
  warmup = int(config.warmup_steps) or o.warmup_epochs * per_epoch
  return Schedule(total, min(warmup, total), per_epoch, o.base_lr, o.min_lr, batch)
