"""Learning-rate schedule of the reference: linear warmup from 0, then cosine to min_lr."""

import jax.numpy as jnp


def warmup_cosine(base_lr: float, min_lr: float, warmup_steps: int, total_steps: int):
  """lr(step) equal to the reference's per-iteration cosine_scheduler table.

  Warmup is np.linspace(0, base_lr, warmup_steps) (reaching base_lr on its
  last step); then min + (base - min)/2 * (1 + cos(pi * i / decay_steps)).
  """
  decay_steps = max(1, total_steps - warmup_steps)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = base_lr * step / max(1, warmup_steps - 1)
    i = jnp.clip(step - warmup_steps, 0, decay_steps)
    cos = min_lr + 0.5 * (base_lr - min_lr) * (1 + jnp.cos(jnp.pi * i / decay_steps))
    return jnp.where(step < warmup_steps, warm, cos)

  return schedule
