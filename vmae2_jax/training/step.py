"""The jitted train step every stage shares: task loss, accumulated gradients, optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from vmae2_jax.training.state import TrainState


def step_key(base_key, step):
  """Every random draw of a step derives from fold_in(base, step): resumes replay exactly."""
  return jax.random.fold_in(base_key, step)


def split_microbatches(batch: dict, accum_steps: int, views: int) -> dict:
  """[videos*views, ...] rows -> [accum_steps, videos/accum_steps*views, ...].

  Micro-batch i takes videos i, i+a, i+2a, ... (a = accum_steps) with all
  their views, so every device keeps contributing its own rows to every
  micro-batch and a video's repeated views stay together.
  """
  def one(x):
    videos = x.shape[0] // views
    x = x.reshape((videos // accum_steps, accum_steps, views) + x.shape[1:])
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape((accum_steps, videos // accum_steps * views) + x.shape[3:])
  return {k: one(v) for k, v in batch.items()}


def make_train_step(task, graphdef, tx: optax.GradientTransformation, schedule, base_key, *,
                    accum_steps: int = 1, views: int = 1, skip_nonfinite: bool = False):
  """Returns train_step(state, batch) -> (state, metrics); jit it with shardings.

  With accum_steps > 1 the batch is split into micro-batches whose gradients
  are averaged before one optimizer update (the reference's update_freq:
  loss / update_freq summed over micro-batches, clipped once).

  skip_nonfinite (config.nonfinite="skip"): when the loss, the gradient norm
  or the updated parameters' norm is not finite, the step keeps the parameters
  and the optimizer's moments as they were and reports metrics["skipped"] = 1.
  Step counts (the state's and the optimizer's) still advance, so the lr
  follows the step number as the reference's per-iteration schedule does when
  its loss scaler skips an update. Without it the program is unchanged: the
  loop checks loss, grad_norm and param_norm, which it reads anyway.

  `frozen`: parameters of frozen models the task's loss reads after its own
  (a distillation teacher), passed after the batch; no gradient reaches them
  and they are not part of the state.
  """
  grad_fn = jax.value_and_grad(
      lambda params, batch, key, *frozen: task.loss(params, graphdef, batch, key, *frozen),
      has_aux=True)

  def gradients(params, batch, key, frozen):
    if accum_steps == 1:
      return grad_fn(params, batch, key, *frozen)
    micro = split_microbatches(batch, accum_steps, views)

    def body(acc, xs):
      i, mb = xs
      out = grad_fn(params, mb, jax.random.fold_in(key, i), *frozen)
      return jax.tree.map(jnp.add, acc, out), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, first, key, *frozen))
    total, _ = jax.lax.scan(body, zeros, (jnp.arange(accum_steps), micro))
    return jax.tree.map(lambda x: x / accum_steps, total)

  def train_step(state: TrainState, batch, *frozen):
    key = step_key(base_key, state.step)
    (loss, aux), grads = gradients(state.params, batch, key, frozen)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        **aux,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "lr": jnp.asarray(schedule(state.step), jnp.float32),
    }
    if skip_nonfinite:
      applied = (jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"])
                 & jnp.isfinite(metrics["param_norm"]))
      params = _unless(applied, params, state.params)
      opt_state = _unless(applied, opt_state, state.opt_state)
      metrics["skipped"] = 1.0 - applied.astype(jnp.float32)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def _unless(applied, new, old):
  """new where `applied`, else old; integer leaves (step counts) always take new."""
  def pick(n, o):
    if jnp.issubdtype(n.dtype, jnp.integer):
      return n
    return jnp.where(applied, n, o)
  return jax.tree.map(pick, new, old)
