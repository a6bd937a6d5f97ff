"""No train step runs a collective inside a loop of unknown length or a conditional (8 devices).

jax.random.beta (mixup's and cutmix's lam) samples by rejection: a while loop that runs
until the draw is accepted. With one draw per data shard split over the devices, XLA's
partitioner made each such loop wait on an all-reduce of "is every device done?" at every
trip, and the finetune step had eight such loops, independent of each other. The newest
pair's CI aborted twice in the distillation test with "Termination timeout for all reduce
... only 1 of them arrived" (2026-12-07); 8 of that step's 9 all-reduces were these (the
exact interleaving on the CI machine was not reproduced). The draws are now made replicated (vmae2_jax/training/mixup.py), so the
loops run on each device by itself. The scanned layers' loops, whose length is known, may
run collectives; hlo_summary tells the two apart.
"""

import pytest

from tests.helpers import tiny_detect_config, tiny_finetune_config, tiny_pretrain_config
from vmae2_jax.training import compile_only

STEPS = {
    "pretrain": lambda: tiny_pretrain_config(**{"batch_size": 8}),
    # mixup and cutmix both on: two Beta draws per shard
    "finetune": lambda: tiny_finetune_config(),
    "distill": lambda: tiny_finetune_config(**{"stage": "distill",
                                               "distill.teacher_from": "/nowhere/teacher",
                                               "distill.teacher_variant": "mu/16"}),
    "detect": lambda: tiny_detect_config(**{"batch_size": 8}),
}


@pytest.mark.parametrize("stage", list(STEPS))
def test_no_collective_runs_inside_a_loop_of_unknown_length(stage):
  report = compile_only.compile_train_step(STEPS[stage]())
  assert report["devices"] == 8
  hlo = report["hlo"]
  assert hlo["open_ended_collective_loops"] == 0, hlo
  # nor inside a conditional (lax.platform_dependent left to XLA did that: issue 19)
  assert hlo["conditional_collectives"] == 0, hlo
  assert sum(hlo["collectives"].values()) > 0  # the step is split over the devices at all


def test_the_counters_see_both_in_a_program_xla_cpu_compiled():
  """The same counters on XLA:CPU's own text: a while loop whose condition all-reduces, and a
  conditional whose branch does."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, PartitionSpec as P

  from vmae2_jax.training import hlo_summary

  mesh = Mesh(np.array(jax.devices()), ("d",))

  def per_device(x):
    def more(v):  # until every device's value passes 1
      return jax.lax.psum(jnp.sum(v < 1.0).astype(jnp.int32), "d") > 0
    v = jax.lax.while_loop(more, lambda v: v * 2.0 + 0.1, x)
    return jax.lax.cond(v.sum() > 0, lambda v: v + jax.lax.psum(v, "d"), lambda v: v * 2.0, v)

  step = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("d"), out_specs=P("d")))
  hlo = hlo_summary.summarize(step.lower(np.zeros(8, np.float32)).compile().as_text())
  assert hlo["open_ended_collective_loops"] == 1 and hlo["conditional_collectives"] == 1, hlo
