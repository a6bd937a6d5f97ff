"""The jitted pre-training step: sample dual masks, predict, weighted loss, AdamW."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vmae2_jax.masking import MaskSpec, sample_masks
from vmae2_jax.training.losses import pixel_targets, weighted_mse
from vmae2_jax.training.state import TrainState


def step_key(base_key, step):
  """Every random draw of a step derives from fold_in(base, step): resumes replay exactly."""
  return jax.random.fold_in(base_key, step)


def pretrain_loss(params, graphdef, video, key, spec: MaskSpec, patch: int,
                  normalize_target: bool = True, deterministic: bool = False):
  """Loss of one batch of uint8 clips [B, T, H, W, 3] and its aux outputs."""
  mask_key, drop_key = jax.random.split(key)
  masks = sample_masks(mask_key, video.shape[0], spec)
  target = pixel_targets(video, masks.target_idx, patch, normalize_target)
  model = nnx.merge(graphdef, params)
  pred = model(video, masks.visible_idx, masks.target_idx, key=drop_key,
               deterministic=deterministic)
  return weighted_mse(pred, target, masks.weights), (pred, masks)


def make_train_step(graphdef, tx: optax.GradientTransformation, spec: MaskSpec, patch: int,
                    schedule, base_key, normalize_target: bool = True):
  """Returns train_step(state, batch) -> (state, metrics); jit it with shardings."""

  def train_step(state: TrainState, batch):
    key = step_key(base_key, state.step)
    loss_fn = functools.partial(pretrain_loss, graphdef=graphdef, video=batch["video"],
                                key=key, spec=spec, patch=patch,
                                normalize_target=normalize_target)
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "lr": jnp.asarray(schedule(state.step), jnp.float32),
    }
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step
