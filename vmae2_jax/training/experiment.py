"""One object built from a config that every entry point uses: `experiment.setup(config)`.

It runs the config checks once and holds what the trainer, compile-only,
the benchmarks, the reconstruction picture and the evaluators need: the
mesh, the stage's task, the model graph, the optimizer and its schedule,
abstract train state with its shardings, the batch layout, and the jitted
step and prediction functions built from them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, PartitionSpec as P

from vmae2_jax import sharding
from vmae2_jax.models import get_variant
from vmae2_jax.models.layers import resolved_numerics
from vmae2_jax.models.options import ModelOptions
from vmae2_jax.models.platform import building_for, forward_compiler_options
from vmae2_jax.sharding.constraints import activation_sharding
from vmae2_jax.training import optimizer as optim
from vmae2_jax.training.config_checks import ConfigError, check_common
from vmae2_jax.training.schedules import Schedule, make_schedule, small_batch_warning
from vmae2_jax.training.state import TrainState
from vmae2_jax.training.step import make_train_step
from vmae2_jax.training.tasks import make_task


@dataclasses.dataclass(frozen=True)
class BatchLayout:
  """How one optimizer update's videos split over devices, micro-batches and views."""

  videos: int          # per update, all devices (the recipe's batch: lr scales with it)
  views: int           # repeated views per video (data.num_sample; not counted in videos)
  accum_steps: int     # micro-batches per update
  batch_shards: int    # devices the batch is split over (data x fsdp)
  processes: int

  @property
  def clips(self) -> int:
    return self.videos * self.views

  @property
  def local_videos(self) -> int:
    return self.videos // self.processes

  def describe(self) -> str:
    per_device = self.videos / (self.batch_shards * self.accum_steps)
    text = (f"effective batch {self.videos} videos per update = {self.batch_shards} devices x "
            f"{per_device:g} videos x {self.accum_steps} accumulation step"
            f"{'s' if self.accum_steps > 1 else ''}")
    if self.views > 1:
      text += (f"; x {self.views} repeated views = {self.clips} clips per update "
               f"(views are not counted in the lr scaling)")
    return text


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything about a run that follows from its config (nothing here is trained state)."""

  config: Any
  mesh: Mesh
  rules: tuple
  task: Any
  graphdef: Any
  tx: optax.GradientTransformation
  schedule: Schedule
  layout: BatchLayout
  abstract_state: TrainState      # ShapeDtypeStructs carrying their shardings
  state_sharding: TrainState
  init_fn: Callable[[], TrainState]
  # Shardings of frozen models' parameters the step takes after the batch (a distillation
  # teacher: task.load_frozen); () for stages without one.
  frozen_sharding: tuple = ()

  # ------------------------------------------------------------- state
  def init_state(self) -> TrainState:
    """Fresh parameters and optimizer state, born sharded."""
    return jax.jit(self.init_fn, out_shardings=self.state_sharding)()

  @property
  def num_params(self) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(self.abstract_state.params)))

  def host_params(self, params) -> dict:
    """Whole numpy values of (sharded) parameters on this host; a collective across processes."""
    if jax.process_count() == 1:
      return jax.device_get(params)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(params, tiled=True)

  # ------------------------------------------------------------- frozen models
  @property
  def abstract_frozen(self) -> tuple:
    """The frozen parameters as ShapeDtypeStructs with shardings (compile-only)."""
    if not self.frozen_sharding:
      return ()
    return (jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         self.task.teacher_abstract, self.frozen_sharding[0]),)

  def init_frozen(self) -> tuple:
    """Randomly initialised frozen parameters, born sharded (benchmarks time these)."""
    if not self.frozen_sharding:
      return ()
    def init():
      return nnx.state(self.task.build_teacher(nnx.Rngs(self.config.seed + 1)),
                       nnx.Param).to_pure_dict()
    return (jax.jit(init, out_shardings=self.frozen_sharding[0])(),)

  def load_frozen(self) -> tuple[tuple, dict]:
    """(frozen parameters on device, what run.json records of them): the task's teacher."""
    if not self.frozen_sharding:
      return (), {}
    return self.task.load_frozen(self)

  # ------------------------------------------------------------- batches
  def batch_sharding(self, ndim: int):
    return sharding.batch_sharding(self.mesh, ndim)

  def abstract_batch(self) -> dict:
    """The global train batch as ShapeDtypeStructs with shardings (compile-only, tests)."""
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=self.batch_sharding(len(shape)))
            for k, (shape, dtype) in self.task.batch_shapes(self.layout.clips).items()}

  def global_batch(self, local: dict) -> dict:
    """This host's numpy batch -> global arrays split over the batch axes (device keys only)."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding(local[k].ndim),
                                                      local[k])
            for k in self.task.device_keys}

  def host_rows(self, array) -> np.ndarray:
    """A batch-sharded global array -> this host's rows, in its local batch order."""
    if jax.process_count() == 1:
      return np.asarray(array)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.global_array_to_host_local_array(
        array, self.mesh, P(sharding.mesh.BATCH_AXES)))

  # ------------------------------------------------------------- compiled functions
  def _constrained(self, fn):
    def wrapped(*args):  # activation constraints apply while tracing
      with activation_sharding(self.mesh, self.rules):
        return fn(*args)
    return wrapped

  def jit_train_step(self):
    """The step jitted with explicit shardings: state in/out (donated), the batch split
    over the batch axes, metrics replicated."""
    step = make_train_step(self.task, self.graphdef, self.tx, self.schedule,
                           jax.random.key(self.config.seed),
                           accum_steps=self.layout.accum_steps, views=self.layout.views,
                           skip_nonfinite=self.config.nonfinite == "skip")
    batch_sh = {k: s.sharding for k, s in self.abstract_batch().items()}
    return jax.jit(self._constrained(step),
                   in_shardings=(self.state_sharding, batch_sh, *self.frozen_sharding),
                   out_shardings=(self.state_sharding, sharding.replicated(self.mesh)),
                   donate_argnums=(0,))

  @functools.cached_property
  def predict_fn(self):
    """params, video [rows, T, H, W, 3] -> the task's per-row scores, batch-sharded
    (jitted once per Experiment: every evaluation pass reuses the compiled program)."""
    def predict(params, video):
      return self.task.predict(params, self.graphdef, video)
    return jax.jit(self._constrained(predict),
                   in_shardings=(self.state_sharding.params, self.batch_sharding(5)),
                   out_shardings=self.batch_sharding(2),
                   compiler_options=forward_compiler_options(self.mesh.devices.flat[0].platform))

  # ------------------------------------------------------------- reporting
  def describe(self) -> list[str]:
    """The start-up summary: what runs, how the batch and lr are built, numerics, layout."""
    c = self.config
    opts = ModelOptions.from_config(c.model)
    with building_for(self.mesh.devices.flat[0].platform):
      used = resolved_numerics(opts)
    layout = sharding.rules.layout_summary(self.abstract_state, self.state_sharding)
    unsplit = sum(n for _, n in layout["unsplit"])
    lines = [
        f"stage {c.stage}: ViT-{c.model.variant} {self.task.kind}, {self.num_params / 1e6:.2f}M "
        f"params; {self.task.describe()}",
        self.layout.describe(),
        self.schedule.describe(),
        optim.describe(c, self.abstract_state.params, get_variant(c.model.variant).depth),
        f"numerics: compute {jnp.dtype(opts.dtype).name}, params {jnp.dtype(opts.param_dtype).name}"
        f", attention {used['attention']}, CPU kernels {'on' if used['cpu_kernels'] else 'off'}, "
        f"remat {opts.remat}",
        f"mesh {dict(self.mesh.shape)} over {self.mesh.size} {self.mesh.devices.flat[0].platform} "
        "devices; "
        f"train state {layout['whole'] / 1e9:.3f} GB in all, {layout['per_device'] / 1e9:.3f} GB "
        f"per device; {len(layout['unsplit'])} arrays ({unsplit / 1e6:.1f} MB) whole on every "
        "device",
    ]
    if self.frozen_sharding:
      lines.append(_frozen_summary(self))
    lr_warning = small_batch_warning(self.schedule)
    if lr_warning and not c.eval_only:
      lines.append(lr_warning)
    if self.mesh.size > 1 and unsplit > 0.05 * layout["per_device"]:
      lines.append(f"warning: {100 * unsplit / layout['per_device']:.0f}% of the per-device train "
                   "state is not split (mesh sizes do not divide these dims; see "
                   "docs/scaling.md): " + ", ".join(
                       p for p, _ in sorted(layout["unsplit"], key=lambda t: -t[1])[:5]))
    return lines


def _frozen_summary(exp: Experiment) -> str:
  """The teacher's size, bytes per device and share of the step's model FLOPs."""
  from vmae2_jax.bench.flops import classifier_flops_per_clip
  t, c = exp.task, exp.config
  leaves = jax.tree.leaves(exp.abstract_frozen[0])
  whole = sum(math.prod(x.shape) * x.dtype.itemsize for x in leaves)
  per_device = sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                   for x in leaves)
  teacher = classifier_flops_per_clip(t.teacher_size, c.data.frames, t.teacher_image_size,
                                      t.num_classes)["forward"]
  student = classifier_flops_per_clip(c.model.variant, c.data.frames, c.data.image_size,
                                      t.num_classes)["train"]
  return (f"teacher ViT-{t.teacher_variant}: {sum(math.prod(x.shape) for x in leaves) / 1e6:.2f}M "
          f"frozen params ({jnp.dtype(leaves[0].dtype).name}), {whole / 1e9:.3f} GB in all, "
          f"{per_device / 1e9:.3f} GB per device; its forward is {teacher / 1e12:.3g} TFLOP a "
          f"clip = {100 * teacher / (teacher + student):.0f}% of the step's model FLOPs (student "
          f"training {student / 1e12:.3g} TFLOP)")


def _batch_shards(mesh: Mesh) -> int:
  return int(math.prod(mesh.shape[a] for a in sharding.mesh.BATCH_AXES))


def setup(config, devices=None) -> Experiment:
  """Checks `config` and builds its Experiment (abstract: nothing is allocated yet).

  Raises ConfigError naming the field for a config that cannot run.
  """
  try:
    mesh = sharding.make_mesh(config.mesh, devices=devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  # The model's kernels follow the mesh's devices (a TPU compiled for from a CPU host).
  with building_for(mesh.devices.flat[0].platform):
    return _build(config, mesh)


def _build(config, mesh: Mesh) -> Experiment:
  shards = _batch_shards(mesh)
  check_common(config, shards)
  task, num_videos = make_task(config, shards)
  try:
    schedule = make_schedule(config, num_videos)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  rules = sharding.rules.rules_from_config(config)
  abstract_model = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0)))
  graphdef, _ = nnx.split(abstract_model)
  axes = sharding.logical_axes_tree(abstract_model)
  abstract_params = nnx.to_pure_dict(nnx.state(abstract_model, nnx.Param))
  depth = get_variant(config.model.variant).depth
  tx = optim.make_optimizer(config, schedule, abstract_params, depth)

  def init():
    model = task.build_model(nnx.Rngs(params=config.seed))
    return TrainState.create(nnx.to_pure_dict(nnx.state(model, nnx.Param)), tx)

  shapes = jax.eval_shape(init)
  param_sh = sharding.tree_shardings(shapes.params, axes, mesh, rules)
  state_sh = TrainState(
      step=sharding.replicated(mesh), params=param_sh,
      opt_state=sharding.match_shardings_by_path(shapes.opt_state, param_sh, mesh))
  abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, state_sh)
  layout = BatchLayout(videos=int(config.batch_size), views=int(config.data.num_sample),
                       accum_steps=int(config.optim.accum_steps), batch_shards=shards,
                       processes=jax.process_count())
  frozen_sh = ()
  if hasattr(task, "teacher_abstract"):  # sharded by the same rules as the student's params
    frozen_sh = (sharding.tree_shardings(task.teacher_abstract, task.teacher_axes, mesh, rules),)
  return Experiment(config=config, mesh=mesh, rules=rules, task=task, graphdef=graphdef, tx=tx,
                    schedule=schedule, layout=layout, abstract_state=abstract_state,
                    state_sharding=state_sh, init_fn=init, frozen_sharding=frozen_sh)
