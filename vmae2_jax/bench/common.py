"""What every benchmark shares: loading a config, a stage's step built through
`experiment.setup`, synthetic batches, and timing in interleaved rounds.

Timing rules used throughout: every implementation gets an untimed warm-up,
then the implementations take turns in rounds (noise from other processes on
a shared machine hits all of them alike), and medians are reported next to
the fastest steps, the process's CPU seconds, its minor page faults per call
and the 1-minute load average. Page faults matter on VMs whose kernel
reclaims memory behind a process's back (this project's CPU VM runs a DAMON
"pageout" scheme): a step that has to fault its buffers back in costs seconds
of system time, and such steps are outliers that the fastest-step figures
leave out.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import resource
import statistics
import time
from typing import Callable


def load_config(spec: str):
  """`path/to/config.py[:arg]` -> the ConfigDict its get_config(arg) returns."""
  path, _, arg = spec.partition(":")
  mod_spec = importlib.util.spec_from_file_location("_bench_config", path)
  if mod_spec is None:
    raise SystemExit(f"--config={spec}: no such config file")
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(arg or None)


def is_supervised(config) -> bool:
  return config.stage != "pretrain"


def without_data(config, *, clips: int | None = None, views: int | None = None):
  """A copy of `config` whose step needs no data set: synthetic batches are fed instead.

  Pre-training reads generated clips; a supervised config keeps its stage and
  head size but forgets its shard paths, validation set and init_from (the
  bench times freshly initialised weights). A flat schedule long enough that
  the lr never hits an edge. With `clips` the batch is that many clips per
  step (one view per video, as `batch` means in every bench); with `views`
  the batch keeps the recipe's repeated views.
  """
  config = copy.deepcopy(config)
  d = config.data
  if config.stage == "pretrain":
    d.source = "synthetic"
  else:
    if not config.model.num_classes:
      raise SystemExit("the config leaves config.model.num_classes to the training data; "
                       "set it (e.g. --num_classes=400) to benchmark without data")
    d.source = "shards"
    d.train_path, d.val_path, d.class_names = "", "", ""
    d.sources = ()
    config.init_from = ""
  if clips is not None:
    config.batch_size = clips
    d.num_sample = 1
  if views is not None:
    d.num_sample = views
  config.total_steps = 10_000
  config.warmup_steps = 100
  return config


def synthetic_batch(exp, seed: int = 0) -> dict:
  """Random uint8 clips (and labels) shaped and sharded as the experiment's train batch."""
  import jax
  import numpy as np

  rng = np.random.default_rng(seed)
  batch = {}
  for k, s in exp.abstract_batch().items():
    high = 256 if s.dtype == np.uint8 else max(1, exp.task.num_classes)
    batch[k] = jax.device_put(rng.integers(0, high, s.shape).astype(s.dtype), s.sharding)
  return batch


def random_videos(n: int, frames: int, size: int, seed: int = 0):
  """uint8 clips [n, T, H, W, 3] as numpy."""
  import numpy as np
  return np.random.default_rng(seed).integers(0, 256, (n, frames, size, size, 3), np.uint8)


class Timed:
  """Something timed in rounds: `call()` runs one step and waits for it."""

  def __init__(self, name: str, call: Callable[[], object]):
    self.name = name
    self.call = call
    self.times: list[float] = []
    self.cpu_times: list[float] = []
    self.faults: list[int] = []   # minor page faults of the whole process during each call
    self.last = None

  def run(self, n: int, record: bool = True) -> None:
    for _ in range(n):
      f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      t0, c0 = time.perf_counter(), time.process_time()
      self.last = self.call()
      if record:
        self.times.append(time.perf_counter() - t0)
        self.cpu_times.append(time.process_time() - c0)
        self.faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)

  @property
  def median(self) -> float:
    return statistics.median(self.times)

  @property
  def best(self) -> float:
    return min(self.times)

  @property
  def cpu_median(self) -> float:
    return statistics.median(self.cpu_times)

  @property
  def faulted_calls(self) -> int:
    """Calls that faulted in more than 40 MB (10,000 pages) of memory."""
    return sum(f > 10_000 for f in self.faults)


class StepRunner(Timed):
  """An experiment's compiled train step with its own donated state and a fixed batch."""

  def __init__(self, name: str, config, devices=None):
    import jax

    from vmae2_jax.training.experiment import setup

    self.config = config
    self.exp = setup(config, devices)
    self.batch = synthetic_batch(self.exp)
    self.state = self.exp.init_state()
    self.frozen = self.exp.init_frozen()  # a distillation teacher: random weights, same cost
    t0 = time.perf_counter()
    self.step_fn = self.exp.jit_train_step().lower(self.state, self.batch, *self.frozen).compile()
    self.compile_s = time.perf_counter() - t0
    self.metrics = None

    def call():
      self.state, self.metrics = self.step_fn(self.state, self.batch, *self.frozen)
      jax.block_until_ready((self.state, self.metrics))

    super().__init__(name, call)

  @property
  def loss(self) -> float:
    return float(self.metrics["loss"]) if self.metrics is not None else float("nan")


def interleave(timed: list[Timed], steps: int, rounds: int, warmup: int) -> list[float]:
  """Warm-up for each, then `steps` timed calls each in `rounds` alternating rounds.

  Returns the 1-minute load average before and after the timed rounds.
  """
  for t in timed:
    t.run(warmup, record=False)
  rounds = max(1, min(rounds, steps))
  per_round = [steps // rounds + (i < steps % rounds) for i in range(rounds)]
  before = os.getloadavg()[0]
  for n in per_round:
    for t in timed:
      t.run(n)
  return [before, os.getloadavg()[0]]
