"""Pre-training, top to bottom: mesh -> data -> model -> shardings -> init or
restore -> step -> loop -> checkpoint -> reconstruction picture."""

from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from vmae2_jax import sharding
from vmae2_jax.checkpointing import Checkpointer
from vmae2_jax.sharding.constraints import activation_sharding
from vmae2_jax.data import make_train_iterator
from vmae2_jax.models import build_pretrain_model, get_variant
from vmae2_jax.training import optimizer as optim
from vmae2_jax.training.config_checks import check_pretrain_config
from vmae2_jax.training.metrics_log import MetricsLog
from vmae2_jax.training.pretrain_step import make_train_step
from vmae2_jax.training.state import TrainState


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/Inf loss; the last good checkpoint is untouched."""


def schedule_steps(config) -> tuple[int, int]:
  """(total steps, warmup steps) from config.total_steps or epochs x steps/epoch."""
  if config.get("total_steps", 0):
    total = int(config.total_steps)
    warmup = int(config.get("warmup_steps", 0)) or int(
        round(total * config.optim.warmup_epochs / max(1, config.epochs)))
    return total, min(warmup, total)
  num_videos = config.data.get("num_videos", 0)
  if not num_videos:
    raise ValueError("set config.total_steps or config.data.num_videos (to count epochs)")
  per_epoch = max(1, num_videos // config.batch_size)
  return config.epochs * per_epoch, config.optim.warmup_epochs * per_epoch


def build(config, mesh):
  """Abstract model, shardings, optimizer and the init function for `config`."""
  rules = sharding.rules.rules_from_config(config)
  abstract_model = nnx.eval_shape(lambda: build_pretrain_model(config, nnx.Rngs(0)))
  graphdef, _ = nnx.split(abstract_model)
  axes = sharding.logical_axes_tree(abstract_model)
  total, warmup = schedule_steps(config)
  schedule = optim.make_schedule(config, total, warmup)
  tx = optim.make_optimizer(config, schedule)

  def init():
    model = build_pretrain_model(config, nnx.Rngs(params=config.seed))
    return TrainState.create(nnx.state(model, nnx.Param).to_pure_dict(), tx)

  abstract_state = jax.eval_shape(init)
  param_sh = sharding.tree_shardings(abstract_state.params, axes, mesh, rules)
  state_sh = TrainState(
      step=sharding.replicated(mesh), params=param_sh,
      opt_state=sharding.match_shardings_by_path(abstract_state.opt_state, param_sh, mesh))
  return graphdef, tx, schedule, init, abstract_state, state_sh, (total, warmup)


def jit_train_step(config, mesh, graphdef, tx, spec, schedule, state_sh):
  """The step jitted with explicit shardings: state in/out as `state_sh` (donated),
  the batch split over the batch axes, metrics replicated."""
  step = make_train_step(graphdef, tx, spec, get_variant(config.model.variant).patch, schedule,
                         jax.random.key(config.seed),
                         normalize_target=config.get("normalize_target", True))
  rules = sharding.rules.rules_from_config(config)

  def constrained_step(state, batch):  # activation constraints apply while tracing
    with activation_sharding(mesh, rules):
      return step(state, batch)

  return jax.jit(constrained_step,
                 in_shardings=(state_sh, {"video": sharding.batch_sharding(mesh, 5)}),
                 out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))


def _global_batch(local: dict, mesh) -> dict:
  """Per-host numpy batch -> global jax arrays split over the batch axes."""
  return {k: jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, v.ndim), v)
          for k, v in local.items()}


def _save_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _numerics_summary(config) -> str:
  """Compute dtype, the attention implementation and whether the CPU kernels are in use."""
  from vmae2_jax.models.layers import resolved_numerics
  from vmae2_jax.models.options import ModelOptions
  opts = ModelOptions.from_config(config.model)
  used = resolved_numerics(opts)
  return (f"compute {jnp.dtype(opts.dtype).name}, params {jnp.dtype(opts.param_dtype).name}, "
          f"attention {used['attention']}, CPU kernels {'on' if used['cpu_kernels'] else 'off'}, "
          f"remat {opts.remat}")


def train(config, workdir: str) -> dict:
  """Runs (or resumes) pre-training; returns a summary with the loss history."""
  # ---------------------------------------------------------------- mesh, checks
  mesh = sharding.make_mesh(config.get("mesh"))
  spec = check_pretrain_config(config, mesh.size)
  _save_config(config, workdir)
  logging.info("mesh %s over %d devices (%s)", dict(mesh.shape), mesh.size,
               jax.devices()[0].platform)

  # ------------------------------------------------- model, optimizer, shardings
  graphdef, tx, schedule, init, abstract_state, state_sh, (total, warmup) = build(config, mesh)
  logging.info("ViT-%s: %.2fM params, %d steps (%d warmup), masks: %d visible / %d decoded "
               "of %d tokens", config.model.variant,
               sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_state.params)) / 1e6,
               total, warmup, spec.num_visible, spec.num_targets, spec.num_tokens)
  logging.info("numerics: %s", _numerics_summary(config))

  layout = sharding.rules.layout_summary(abstract_state, state_sh)
  unsplit = sum(n for _, n in layout["unsplit"])
  logging.info("train state: %.3f GB in all, %.3f GB per device; %d arrays (%.1f MB) whole "
               "on every device", layout["whole"] / 1e9, layout["per_device"] / 1e9,
               len(layout["unsplit"]), unsplit / 1e6)
  if mesh.size > 1 and unsplit > 0.05 * layout["per_device"]:
    logging.warning("%.0f%% of the per-device train state is not split (mesh sizes do not "
                    "divide these dims; see docs/scaling.md): %s",
                    100 * unsplit / layout["per_device"],
                    ", ".join(p for p, _ in sorted(layout["unsplit"], key=lambda t: -t[1])[:5]))

  # ------------------------------------------------------- init or restore state
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"),
                      save_every=config.checkpoint_every, keep=config.keep_checkpoints,
                      keep_period=config.get("keep_period", 0),
                      async_save=config.get("async_checkpoint", True))
  data_iter = make_train_iterator(config, process_index=jax.process_index(),
                                  process_count=jax.process_count(), seed=config.seed)
  latest = ckpt.latest_step()
  if latest is not None:
    state, data_state, meta = ckpt.restore(latest, jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, state_sh))
    if data_state:
      data_iter.set_state(data_state)
    logging.info("resumed from step %d in %s", latest, ckpt.directory)
  else:
    state = jax.jit(init, out_shardings=state_sh)()
    if config.get("init_from"):
      state = _apply_init_from(config, state, state_sh)

  # ---------------------------------------------------------------- the step
  step_fn = jit_train_step(config, mesh, graphdef, tx, spec, schedule, state_sh)

  # ---------------------------------------------------------------- the loop
  views = config.batch_size * config.data.get("num_sample", 1)
  log = MetricsLog(workdir, total, views)
  step = int(jax.device_get(state.step))
  first_step = step
  # stop_after > 0 ends this run early (e.g. a job's time slot); it resumes later.
  last = min(total, step + config.stop_after) if config.get("stop_after", 0) else total
  t_start = time.perf_counter()
  pending = None  # (step, metrics on device) of the step dispatched last

  def check_and_log(done_step, device_metrics):
    metrics = jax.device_get(device_metrics)
    if not np.isfinite(metrics["loss"]):
      ckpt.close()
      raise NonFiniteLossError(
          f"non-finite loss {metrics['loss']} at step {done_step}; last good checkpoint: "
          f"{ckpt.latest_step()} in {ckpt.directory}")
    log.add(metrics)
    if done_step % config.log_every == 0 or done_step == last:
      log.flush(done_step)

  while step < last:
    batch = _global_batch(next(data_iter), mesh)
    state, metrics = step_fn(state, batch)
    step += 1
    # Read the previous step's metrics only now, so the host loads and ships
    # the next batch while the device still runs this one.
    if pending is not None:
      check_and_log(*pending)
    pending = (step, metrics)
    if ckpt.should_save(step) or step == last:
      check_and_log(*pending)  # never save a state whose loss was not finite
      pending = None
      ckpt.save(step, state, data_iter.get_state(),
                {"step": step, "variant": config.model.variant, "stage": "pretrain"},
                force=step == last)
  ckpt.close()
  log.close()

  # ------------------------------------------------------ reconstruction picture
  summary = {"history": log.history, "steps_run": step - first_step, "final_step": step,
             "seconds": time.perf_counter() - t_start}
  if config.get("reconstruction", {}).get("enabled", False):
    params = _host_copy(state.params)  # a collective with several processes: all join
    if jax.process_index() == 0:
      from vmae2_jax.evaluation.reconstruction import write_reconstruction_grid
      path = os.path.join(workdir, f"reconstruction_step{step}.png")
      write_reconstruction_grid(config, graphdef, params, path,
                                num_clips=config.reconstruction.get("num_clips", 3))
      summary["reconstruction"] = path
      logging.info("wrote %s", path)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump({k: v for k, v in summary.items() if k != "history"} | {
          "last": log.history[-1] if log.history else None,
          "losses": [[h["step"], h["loss"]] for h in log.history if "loss" in h]},
          f, indent=2, default=float)
  return summary


def _host_copy(tree):
  """Whole numpy values of sharded arrays on this host (gathered across processes)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def _apply_init_from(config, state: TrainState, state_sh: TrainState) -> TrainState:
  """Replaces freshly initialised parameters with a converted/previous model's."""
  from vmae2_jax.conversion.init_from import apply_init_from
  params = apply_init_from(_host_copy(state.params), config.init_from, "pretrain")
  params = jax.device_put(params, state_sh.params)
  logging.info("initialised parameters from %s", config.init_from)
  return state.replace(params=params)
