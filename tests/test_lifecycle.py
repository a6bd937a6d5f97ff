"""A run's life: non-finite steps, SIGTERM, damaged checkpoints, resuming with another config.

Non-finite values are forced at a chosen step by a learning-rate spike
(the schedule patched to multiply one step's lr), deterministic on CPU: a
finite spike makes the next step's parameters huge, so the loss and gradients
computed from them are not finite one step later (the defect's case: the
parameters saved just before are the bad ones); an infinite spike makes that
step's own update non-finite.
"""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs.common import base_config
from tests.helpers import tiny_finetune_config, tiny_pretrain_config
from vmae2_jax.checkpointing.manager import FILE_SIZES, CheckpointDamagedError, Checkpointer
from vmae2_jax.evaluation.curves import read_metrics
from vmae2_jax.training import experiment, run_record, trainer
from vmae2_jax.training.schedules import Schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- helpers
@dataclasses.dataclass(frozen=True)
class _Spiked(Schedule):
  """The run's schedule with the lr of update `at` (0-based: the update making step at+1)
  multiplied by `factor`."""

  at: int = -1
  factor: float = 1.0

  def __call__(self, step):
    lr = super().__call__(step)
    return jnp.where(jnp.asarray(step) == self.at, lr * self.factor, lr)


def _spike(monkeypatch, at, factor):
  make = experiment.make_schedule

  def spiked(config, num_videos=0):
    return _Spiked(**dataclasses.asdict(make(config, num_videos)), at=at, factor=factor)
  monkeypatch.setattr(experiment, "make_schedule", spiked)


def _losses(workdir):
  train, _ = read_metrics(workdir)
  return {r["step"]: r.get("loss") for r in train}


def _step_dirs(workdir):
  """{name: path} of every checkpoint step written: kept ones and those set aside."""
  out = {}
  for sub in ("checkpoints", "set_aside"):
    root = os.path.join(workdir, sub)
    if os.path.isdir(root):
      out.update({f"{sub}/{n}": os.path.join(root, n) for n in os.listdir(root)
                  if os.path.isdir(os.path.join(root, n)) and "tmp" not in n})
  return out


def _saved_state(step_dir):
  """The train state saved in a step directory, as numpy arrays (no target needed)."""
  with ocp.PyTreeCheckpointer() as c:
    return c.restore(os.path.join(step_dir, "state"))


def _all_finite(tree):
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.floating))


# ----------------------------------------------------------------------------- non-finite: stop
def test_nonfinite_stop_names_a_checkpoint_whose_loss_was_finite_and_keeps_it(tmp_path,
                                                                               monkeypatch):
  # Update 4 gets a 1e9 x lr: step 4's parameters are huge but finite, the gradients computed
  # from them at step 5 are not. The step-4 checkpoint is the bad one; step 3 gave a finite loss
  # (read at step 4). keep_checkpoints=1 and a checkpoint every step: a rotation that keeps only
  # the newest would have deleted step 3 by then.
  _spike(monkeypatch, at=3, factor=1e9)
  config = tiny_pretrain_config(total_steps=8, warmup_steps=1, checkpoint_every=1, log_every=1,
                                keep_checkpoints=1)
  with pytest.raises(trainer.NonFiniteLossError) as err:
    trainer.train(config, str(tmp_path))
  e = err.value
  assert (e.step, e.bad_step, e.last_good) == (5, 4, 3), str(e)
  text = str(e)
  assert "\n" not in text and "at step 5 (computed from the parameters of step 4)" in text
  assert f"last good checkpoint: step 3 in {tmp_path / 'checkpoints'}" in text
  assert "set_aside/4_nonfinite" in text and "--config.nonfinite=skip" in text
  # A rerun resumes from step 3: the only committed step left; step 4 is set aside.
  assert Checkpointer(str(tmp_path / "checkpoints"), save_every=1).all_steps() == [3]
  assert sorted(os.listdir(tmp_path / "set_aside")) == ["4_nonfinite"]
  # Step 3's parameters gave the finite loss logged for step 4.
  assert np.isfinite(_losses(str(tmp_path))[4])
  # No checkpoint holding a non-finite value was ever written (kept or set aside).
  steps = _step_dirs(str(tmp_path))
  assert set(steps) == {"checkpoints/3", "set_aside/4_nonfinite"}
  for name, path in steps.items():
    assert _all_finite(_saved_state(path)), name


def test_nonfinite_update_is_never_saved(tmp_path, monkeypatch):
  # An infinite lr for update 3: step 3's own parameters are not finite (a finite loss and
  # gradient). The loop reads step 3's metrics before it would save step 3: not written.
  _spike(monkeypatch, at=2, factor=np.inf)
  config = tiny_pretrain_config(total_steps=6, warmup_steps=1, checkpoint_every=1, log_every=1)
  with pytest.raises(trainer.NonFiniteLossError, match=r"parameter norm .* at step 3 \(after "
                     r"the update of step 3\); last good checkpoint: step 2") as err:
    trainer.train(config, str(tmp_path))
  assert (err.value.bad_step, err.value.last_good) == (3, 2)
  steps = _step_dirs(str(tmp_path))
  assert set(steps) == {"checkpoints/1", "checkpoints/2"}
  assert all(_all_finite(_saved_state(p)) for p in steps.values())


def test_diverged_run_resumes_from_the_named_checkpoint_with_a_lower_lr(tmp_path):
  # A real divergence: lr 1e6 explodes the parameters at update 2; the gradients computed from
  # them (step 3) are NaN. Resuming from step 2 would fail again whatever the lr (step 3's
  # gradients depend on step 2's parameters only); from the named step 1 a lower lr goes on.
  diverging = tiny_pretrain_config(total_steps=6, warmup_steps=1, checkpoint_every=1,
                                   log_every=1, **{"optim.base_lr": 1e6})
  with pytest.raises(trainer.NonFiniteLossError) as err:
    trainer.train(diverging, str(tmp_path))
  e = err.value
  assert (e.step, e.bad_step, e.last_good) == (3, 2, 1), str(e)
  logged = _losses(str(tmp_path))
  assert set(logged) == {1, 2} and np.isfinite(logged[2])
  calmer = tiny_pretrain_config(total_steps=6, warmup_steps=1, checkpoint_every=1, log_every=1,
                                allow_config_change=True)
  summary = trainer.train(calmer, str(tmp_path))
  assert summary["final_step"] == 6 and summary["steps_run"] == 5
  resumed = [h["loss"] for h in summary["history"]]
  assert all(np.isfinite(resumed))
  assert resumed[0] == logged[2]  # the loss computed from step 1's parameters, again
  history = json.load(open(tmp_path / "run.json"))["history"]
  assert [h["event"] for h in history] == ["start", "resume"]
  assert history[1]["changes"]["optim.base_lr"] == [1e6, 0.064]


# ----------------------------------------------------------------------------- non-finite: skip
def test_nonfinite_skip_keeps_the_state_on_device_counts_it_and_finishes(tmp_path, monkeypatch):
  _spike(monkeypatch, at=2, factor=np.inf)  # update 3 is not finite
  config = tiny_pretrain_config(total_steps=6, warmup_steps=1, checkpoint_every=1, log_every=1,
                                keep_checkpoints=10, nonfinite="skip")
  summary = trainer.train(config, str(tmp_path))
  assert summary["final_step"] == 6 and summary["skipped_updates"] == 1
  saved = json.load(open(tmp_path / "summary.json"))
  assert saved["skipped_updates"] == 1
  rows = {r["step"]: r for r in read_metrics(str(tmp_path))[0]}
  assert "loss" not in rows[3] and rows[3]["skipped_updates"] == 1
  assert all(np.isfinite(rows[s]["loss"]) for s in (1, 2, 4, 5, 6))
  # Step 3 kept step 2's parameters and Adam moments; its step counter advanced.
  s2, s3, s4 = (_saved_state(str(tmp_path / "checkpoints" / str(k))) for k in (2, 3, 4))
  assert int(s3["step"]) == 3
  jax.tree.map(np.testing.assert_array_equal, s3["params"], s2["params"])
  floats = lambda t: [np.asarray(x) for x in jax.tree.leaves(t)
                      if np.issubdtype(np.asarray(x).dtype, np.floating)]
  for a, b in zip(floats(s3["opt_state"]), floats(s2["opt_state"]), strict=True):
    np.testing.assert_array_equal(a, b)
  ints = lambda t: [int(np.asarray(x).max()) for x in jax.tree.leaves(t)
                    if np.issubdtype(np.asarray(x).dtype, np.integer)]
  assert ints(s3["opt_state"]) == [c + 1 for c in ints(s2["opt_state"])]  # counts advance
  # ...and the next update changes them again.
  assert any((a != b).any() for a, b in zip(floats(s4["params"]), floats(s3["params"])))
  assert all(_all_finite(_saved_state(p)) for p in _step_dirs(str(tmp_path)).values())


def test_nonfinite_detection_adds_nothing_to_the_compiled_step_in_stop_mode():
  def hlo(mode):
    exp = experiment.setup(tiny_pretrain_config(nonfinite=mode))
    return exp.jit_train_step().lower(exp.abstract_state, exp.abstract_batch()).as_text()
  stop, skip = hlo("stop"), hlo("skip")
  assert "is_finite" not in stop and "is_finite" in skip
  assert len(re.findall(r"\bselect\b", skip)) > len(re.findall(r"\bselect\b", stop))


# ----------------------------------------------------------------------------- SIGTERM
def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if "force_host_platform_device_count" not in f)
  cache = os.environ.get("VMAE2_TEST_JAX_CACHE") or jax.config.jax_compilation_cache_dir
  env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache or "",
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", PYTHONUNBUFFERED="1")
  return env


def _config_file(path, **overrides):
  with open(path, "w") as f:
    f.write("from tests.helpers import tiny_finetune_config, tiny_pretrain_config\n\n\n"
            f"def get_config(arg=None):\n  return tiny_pretrain_config(**{overrides!r})\n")
  return str(path)


def _main(config, workdir, log, *extra):
  return subprocess.Popen([sys.executable, "-m", "vmae2_jax.main", f"--config={config}",
                           f"--workdir={workdir}", *extra], cwd=ROOT, env=_env(),
                          stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _wait_for_line(proc, log, pattern, timeout=240):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    ended = proc.poll() is not None
    with open(log) as f:
      text = f.read()
    if re.search(pattern, text):
      return
    assert not ended, text[-3000:]
    time.sleep(0.005)
  raise AssertionError(f"no {pattern!r} in {log}")


def test_sigterm_saves_the_step_exits_0_and_the_rerun_continues_bit_identically(tmp_path):
  # Checkpoints only at the end (checkpoint_every 1000): the SIGTERM save is the only one.
  config = _config_file(tmp_path / "c.py", total_steps=40, warmup_steps=2, log_every=1,
                        checkpoint_every=1000, async_checkpoint=True)
  ref = _main(config, tmp_path / "ref", tmp_path / "ref.log")
  assert ref.wait(timeout=240) == 0, open(tmp_path / "ref.log").read()[-3000:]
  work = tmp_path / "run"
  stops = []
  for n, second_signal in ((1, False), (2, True)):
    log = tmp_path / f"run{n}.log"
    proc = _main(config, work, log)
    _wait_for_line(proc, log, rf"\] step {3 + 8 * (n - 1)}/40")
    proc.send_signal(signal.SIGTERM)
    if second_signal:  # again while the step is being saved
      _wait_for_line(proc, log, r"checkpoint: saving step")
      proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=240) == 0, open(log).read()[-3000:]
    text = open(log).read()
    lines = [l for l in text.splitlines() if "resumes from step" in l]
    assert len(lines) == 1, text[-3000:]
    step = int(re.search(r"resumes from step (\d+)", lines[0]).group(1))
    assert f"step {step} saved in {work / 'checkpoints'}" in lines[0]
    assert Checkpointer(str(work / "checkpoints"), save_every=1).all_steps()[-1] == step
    assert not [d for d in os.listdir(work / "checkpoints") if "tmp" in d]
    assert json.load(open(work / "summary.json"))["preempted_at"] == step
    if second_signal:  # it reached the handler (not the default action) and changed nothing
      assert "2 SIGTERMs arrived while stopping" in text, text[-3000:]
    stops.append(step)
  assert 3 <= stops[0] < stops[1] < 40
  log = tmp_path / "run3.log"
  last = _main(config, work, log)
  assert last.wait(timeout=240) == 0, open(log).read()[-3000:]
  assert f"resumed from step {stops[1]} " in open(log).read()
  want = _losses(str(tmp_path / "ref"))
  assert sorted(want) == list(range(1, 41))
  assert _losses(str(work)) == want  # bit-identical, every step


def test_sigterm_during_start_up_saves_the_first_step_and_exits_0(tmp_path):
  # The SIGTERM lands while the run is still starting (the describe lines are out, the step
  # is not compiled yet): the request waits for the loop, which saves step 1 and stops.
  config = _config_file(tmp_path / "c.py", total_steps=40, warmup_steps=2, log_every=1,
                        checkpoint_every=1000)
  log = tmp_path / "run.log"
  proc = _main(config, tmp_path / "run", log)
  _wait_for_line(proc, log, r"stage pretrain:")
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=240) == 0, open(log).read()[-3000:]
  text = open(log).read()
  assert "resumes from step 1" in text and "step 2/40" not in text, text[-3000:]
  assert Checkpointer(str(tmp_path / "run" / "checkpoints"), save_every=1).all_steps() == [1]


def test_sigterm_at_a_validation_step_saves_first_and_the_resume_validates_it(tmp_path,
                                                                              monkeypatch):
  # In-process: the batch of step 2 is fetched, then a SIGTERM arrives (the process sends it to
  # itself); step 2 is a validation step. The stop saves without validating; the resumed run
  # validates step 2 first, so evaluations, the best checkpoint and losses match a run that
  # was never stopped.
  config = dict(checkpoint_every=100, log_every=1)
  straight = trainer.train(tiny_finetune_config(**config), str(tmp_path / "straight"))
  assert [e["step"] for e in straight["evaluations"]] == [2, 4]
  fetch, calls = experiment.Experiment.global_batch, []

  def fetch_then_sigterm(self, local):
    calls.append(1)
    if len(calls) == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return fetch(self, local)
  monkeypatch.setattr(experiment.Experiment, "global_batch", fetch_then_sigterm)
  handler = signal.getsignal(signal.SIGTERM)
  work = str(tmp_path / "run")
  try:
    first = trainer.train(tiny_finetune_config(**config), work)
  finally:
    signal.signal(signal.SIGTERM, handler)
  monkeypatch.undo()
  assert first["preempted_at"] == 2 and first["evaluations"] == []
  assert "test_top1" not in first  # the multi-view test waits for the end of the run
  second = trainer.train(tiny_finetune_config(**config), work)
  assert second["steps_run"] == 2 and second["final_step"] == 4
  assert second["evaluations"] == straight["evaluations"]
  assert (second["best_step"], second["best_val_top1"]) == (straight["best_step"],
                                                            straight["best_val_top1"])
  assert _losses(work) == _losses(str(tmp_path / "straight"))
  assert second["test_top1"] == straight["test_top1"]


# ----------------------------------------------------------------------------- damaged checkpoints
def _file_to_damage(step_dir):
  """The largest file of the step's train state (an array chunk)."""
  files = [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(step_dir, "state"))
           for n in ns]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncate", "delete", "truncate_unlisted"])
def test_damaged_checkpoint_is_named_and_fallback_restores_the_previous_step(tmp_path, damage):
  config = dict(total_steps=6, warmup_steps=1, checkpoint_every=1, log_every=1)
  straight = trainer.train(tiny_pretrain_config(**config), str(tmp_path / "straight"))
  work = str(tmp_path / "run")
  trainer.train(tiny_pretrain_config(stop_after=4, **config), work)
  step_dir = os.path.join(work, "checkpoints", "4")
  victim = named = _file_to_damage(step_dir)
  if damage == "truncate_unlisted":  # its process died before listing the step's file sizes:
    os.remove(os.path.join(step_dir, FILE_SIZES))  # Orbax's reading error names the item
    named = os.path.join(step_dir, "state")
  if damage.startswith("truncate"):
    with open(victim, "r+b") as f:
      f.truncate(os.path.getsize(victim) // 2)
  else:
    os.remove(victim)
  with pytest.raises(CheckpointDamagedError) as err:
    trainer.train(tiny_pretrain_config(**config), work)
  text = str(err.value)
  assert "\n" not in text and named in text and "checkpoint step 4" in text
  assert "--config.checkpoint_fallback=True to resume from step 3" in text
  summary = trainer.train(tiny_pretrain_config(checkpoint_fallback=True, **config), work)
  assert summary["final_step"] == 6 and summary["steps_run"] == 3  # from step 3
  assert os.listdir(os.path.join(work, "set_aside")) == ["4_damaged"]
  want = {h["step"]: h["loss"] for h in straight["history"]}
  assert _losses(work) == want


def test_main_names_the_damaged_file_in_one_line(tmp_path):
  config = _config_file(tmp_path / "c.py", total_steps=3, warmup_steps=1, checkpoint_every=1,
                        async_checkpoint=True)
  work = tmp_path / "run"
  trainer.train(tiny_pretrain_config(total_steps=3, warmup_steps=1, checkpoint_every=1,
                                     async_checkpoint=True, stop_after=2), str(work))
  meta = work / "checkpoints" / "2" / "meta" / "metadata"
  assert meta.exists()
  meta.write_text("{")  # same length would still be damage; a shorter file certainly is
  proc = subprocess.run([sys.executable, "-m", "vmae2_jax.main", f"--config={config}",
                         f"--workdir={work}"], cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=240)
  assert proc.returncode == 1, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and str(meta) in errors[0] and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- resume compatibility
@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
  """A run stopped after 4 of 6 steps (stop_after), as a user would resume it."""
  work = str(tmp_path_factory.mktemp("resume") / "run")
  trainer.train(tiny_pretrain_config(stop_after=4, checkpoint_every=1), work)
  return work


def _copy(run, tmp_path):
  dst = str(tmp_path / "run")
  shutil.copytree(run, dst)
  return dst


@pytest.mark.parametrize("override, shown", [
    ({"model.variant": "Ti/16"}, 'model.variant: "mu/16" -> "Ti/16"'),
    ({"masking.encoder_ratio": 0.75}, "masking.encoder_ratio: 0.5 -> 0.75"),
    ({"batch_size": 8}, "batch_size: 4 -> 8"),
    ({"seed": 1}, "seed: 0 -> 1"),                                     # the data order
    ({"data.source": "shards", "data.train_path": "demo"}, 'data.source: "synthetic" -> "shards"'),
    ({"total_steps": 60}, "total_steps: 6 -> 60"),
])
def test_resume_with_an_incompatible_config_is_refused_listing_the_differences(
    stopped_run, tmp_path, override, shown):
  work = _copy(stopped_run, tmp_path)
  before = {n: open(os.path.join(work, n), "rb").read() for n in ("config.json", "run.json")}
  listing = sorted(os.listdir(work))
  with pytest.raises(run_record.ConfigChangeError) as err:
    trainer.train(tiny_pretrain_config(checkpoint_every=1, **override), work)
  text = str(err.value)
  assert "at step 4 with another config" in text and shown in text
  assert "--config.allow_config_change=True" in text
  if "total_steps" in override:  # the schedule's lr at the resumed step, before and after
    lr = re.search(r"lr at step 4: (\S+) -> (\S+)", text)
    assert lr and float(lr.group(1)) < float(lr.group(2)), text
  # Nothing was changed: config.json, run.json, the workdir's files.
  assert {n: open(os.path.join(work, n), "rb").read() for n in before} == before
  assert sorted(os.listdir(work)) == listing


def test_resume_with_allow_config_change_records_the_change(stopped_run, tmp_path):
  work = _copy(stopped_run, tmp_path)
  summary = trainer.train(tiny_pretrain_config(checkpoint_every=1, total_steps=8,
                                               allow_config_change=True), work)
  assert summary["final_step"] == 8 and summary["steps_run"] == 4
  history = json.load(open(os.path.join(work, "run.json")))["history"]
  assert history[-1]["changes"] == {"total_steps": [6, 8]}
  assert json.load(open(os.path.join(work, "config.json")))["total_steps"] == 8


# What a detection resume may change: the test's boxes, buckets and evaluation inputs (a user
# scores a run on other proposals or the 60-class list), never what a train step reads.
DETECT_TEST_ONLY = ("test_boxes", "proposals", "person_score", "widen", "eval_max_boxes",
                    "buckets", "groundtruth", "label_map", "exclusions", "top_k")
DETECT_TRAINED = ("short_side", "crop_size", "flip", "max_boxes", "box_jitter", "color_jitter")


def test_a_detection_resume_may_change_the_test_fields_only():
  fields = set(base_config().detect)
  # every detect field is one or the other: a new field must be placed deliberately
  assert fields == set(DETECT_TEST_ONLY) | set(DETECT_TRAINED), fields
  assert [f for f in DETECT_TEST_ONLY if not run_record.compatible(f"detect.{f}")] == []
  assert [f for f in DETECT_TRAINED if run_record.compatible(f"detect.{f}")] == []


def test_compatible_changes_resume_and_the_record_holds_config_and_mesh(stopped_run, tmp_path):
  work = _copy(stopped_run, tmp_path)
  summary = trainer.train(tiny_pretrain_config(checkpoint_every=1, log_every=1, stop_after=1),
                          work)
  assert summary["final_step"] == 5 and summary["steps_run"] == 1
  history = json.load(open(os.path.join(work, "run.json")))["history"]
  assert [h["event"] for h in history] == ["start", "resume"] and "changes" not in history[1]
  mesh = dict(experiment.setup(tiny_pretrain_config()).mesh.shape)
  assert history[0]["mesh"] == history[1]["mesh"] == mesh
  assert history[0]["devices"] == jax.device_count() and history[0]["processes"] == 1
  saved = json.load(open(os.path.join(work, "config.json")))
  assert saved["log_every"] == 1 and saved["model"]["variant"] == "mu/16"


def test_sigterm_during_the_eval_only_test_finishes_it_and_exits_0(tmp_path):
  """A SIGTERM while eval_only's multi-view test runs: the test finishes and writes its
  report, nothing is saved, exit 0 (docs/faults.md); the report equals an undisturbed one."""
  from flax import nnx

  from tests.test_fault_injection import _config_file as config_file
  from vmae2_jax.checkpointing import save_model_params
  from vmae2_jax.models.options import ModelOptions
  from vmae2_jax.models.variants import get_variant
  from vmae2_jax.models.vit import Classifier
  model = Classifier(get_variant("mu/16"), 5, frames=4, image_size=32,
                     opts=ModelOptions(init="finetune"), rngs=nnx.Rngs(0))
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  source = str(tmp_path / "model")
  save_model_params(source, params, {"kind": "classifier", "variant": "mu/16",
                                     "num_classes": 5, "frames": 4, "image_size": 32})
  config = config_file(str(tmp_path / "c.py"), "tiny_finetune_config",
                       {"init_from": source, "eval_only": True, "data.test_num_segment": 3})
  ref = _main(config, tmp_path / "ref", tmp_path / "ref.log")
  assert ref.wait(timeout=240) == 0, open(tmp_path / "ref.log").read()[-3000:]
  work, log = tmp_path / "run", tmp_path / "run.log"
  proc = _main(config, work, log)
  _wait_for_line(proc, log, r"initialised parameters from")  # the test starts next
  assert not list(work.glob("test_step*/metrics.json"))  # the signal lands before the end
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=240) == 0, open(log).read()[-3000:]
  text = open(log).read()
  assert "SIGTERM: the final evaluation was finished first; nothing to save" in text, text[-3000:]
  assert "Traceback" not in text
  assert not (work / "checkpoints").exists() or not os.listdir(work / "checkpoints")
  (got,), (want,) = work.glob("test_step0_3x2/metrics.json"), (tmp_path / "ref").glob(
      "test_step0_3x2/metrics.json")
  assert json.loads(got.read_text()) == json.loads(want.read_text())
