"""stage="distill": the KL loss, the teacher inside the step, its run record, faults, resume.

The teacher is a tiny Ti/16 fine-tuned for two steps on the demo shards; students are mu/16
(tests/helpers.py). The evidence that distillation helps is tests/test_learning.py's.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import tiny_finetune_config
from vmae2_jax.checkpointing import model_io
from vmae2_jax.conversion.report import ConversionError
from vmae2_jax.training import trainer
from vmae2_jax.training.config_checks import ConfigError
from vmae2_jax.training.experiment import setup
from vmae2_jax.training.run_record import ConfigChangeError
from vmae2_jax.training.step import step_key
from vmae2_jax.training.tasks.distill import distillation_kl, params_hash


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_kl(student, teacher, t):
  """Batch mean of sum p_t (log p_t - log p_s) at temperature t, times t^2 (float64)."""
  lt, ls = _np_log_softmax(teacher / t), _np_log_softmax(student / t)
  return float((np.exp(lt) * (lt - ls)).sum(-1).mean() * t * t)


@pytest.mark.parametrize("t", [1.0, 2.5])
def test_kl_loss_and_its_gradient_match_numpy(t):
  rng = np.random.default_rng(0)
  s, te = rng.normal(size=(6, 7)) * 3, rng.normal(size=(6, 7)) * 3
  got = float(distillation_kl(jnp.asarray(s, jnp.float32), jnp.asarray(te, jnp.float32), t))
  assert got == pytest.approx(_np_kl(s, te, t), rel=1e-5)
  gs, gt = jax.grad(distillation_kl, argnums=(0, 1))(jnp.asarray(s, jnp.float32),
                                                     jnp.asarray(te, jnp.float32), t)
  # d/ds of t^2 * mean_b KL = t / B * (softmax(s/t) - softmax(t_logits/t))
  expected = t / s.shape[0] * (np.exp(_np_log_softmax(s / t)) - np.exp(_np_log_softmax(te / t)))
  np.testing.assert_allclose(np.asarray(gs), expected, rtol=1e-4, atol=1e-7)
  assert not np.any(np.asarray(gt)), "a gradient reached the teacher's logits"


def _student(teacher_from, **overrides):
  return tiny_finetune_config(**{"stage": "distill", "distill.teacher_from": teacher_from,
                                 "eval.every_steps": -1, "eval.test_at_end": False,
                                 **overrides})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A Ti/16 classifier run on demo:train (5 classes, 4 frames at 32x32)."""
  workdir = str(tmp_path_factory.mktemp("distill") / "teacher")
  trainer.train(tiny_finetune_config(**{"model.variant": "Ti/16", "total_steps": 2,
                                        "eval.every_steps": -1, "eval.test_at_end": False}),
                workdir)
  return workdir


def test_the_teacher_inside_the_step_sees_the_students_mixed_clips(tmp_path):
  """The step's KL equals KL(separate teacher forward, separate student forward) on the same
  mixed batch; the teacher runs at its own resolution (48 px) on the student's 32 px crop."""
  c = _student("/nonexistent/teacher", **{"distill.teacher_variant": "Ti/16",
                                          "distill.teacher_image_size": 48,
                                          "model.drop_path_rate": 0.0,
                                          "model.head_init_scale": 1.0,
                                          "mixup.cutmix_alpha": 0.0})
  exp = setup(c)
  task = exp.task
  state, (teacher_params,) = exp.init_state(), exp.init_frozen()
  # A random teacher's head is scaled by 0.001 at init: confident logits make the KL count
  teacher_params["head"] = jax.tree.map(lambda x: x * 20000.0, teacher_params["head"])
  rng = np.random.default_rng(1)
  # 16 rows: 2 per device, so the per-device mixup mirror mixes two different clips
  host = {"video": rng.integers(0, 256, (16, 4, 32, 32, 3), np.uint8),
          "label": rng.integers(0, 5, (16,), np.int32)}
  batch = exp.global_batch(host)
  host_params = jax.device_get(state.params)
  host_teacher = jax.device_get(teacher_params)
  _, metrics = exp.jit_train_step()(state, batch, teacher_params)
  assert float(metrics["kl"]) > 0.1

  video, _, _ = task.mixed_input({k: jnp.asarray(v) for k, v in host.items()},
                                 step_key(jax.random.key(c.seed), 0))
  resized = jax.image.resize(video, (16, 4, 48, 48, 3), "bilinear")
  teacher = nnx.merge(task.teacher_graphdef, host_teacher)(resized, deterministic=True)
  student = nnx.merge(exp.graphdef, host_params)(video, deterministic=True)
  expected = _np_kl(np.asarray(student, np.float64), np.asarray(teacher, np.float64), 1.0)
  assert float(metrics["kl"]) == pytest.approx(expected, rel=1e-4)
  agree = np.mean(np.argmax(student, -1) == np.argmax(teacher, -1))
  assert float(metrics["teacher_agreement"]) == pytest.approx(agree)
  # The check can fail: the teacher on the unmixed clips gives another KL.
  plain = jax.image.resize(jnp.asarray(host["video"], jnp.float32), (16, 4, 48, 48, 3),
                           "bilinear")
  unmixed = nnx.merge(task.teacher_graphdef, host_teacher)(plain, deterministic=True)
  assert abs(_np_kl(np.asarray(student, np.float64), np.asarray(unmixed, np.float64), 1.0)
             - expected) > 0.01 * expected
  # The teacher is sharded over the mesh like the student (FSDP), not replicated.
  kernel = teacher_params["encoder"]["blocks"]["layers"]["mlp"]["fc1"]["kernel"]
  assert kernel.sharding.shard_shape(kernel.shape) != kernel.shape


def test_bf16_compute_keeps_a_bf16_teacher():
  exp = setup(_student("/nonexistent/teacher", **{"distill.teacher_variant": "Ti/16",
                                                  "model.dtype": "bfloat16"}))
  dtypes = {x.dtype for x in jax.tree.leaves(exp.abstract_frozen[0])}
  assert dtypes == {jnp.dtype(jnp.bfloat16)}
  assert "teacher ViT-Ti/16" in "\n".join(exp.describe())


def test_distillation_run_records_the_teacher_and_never_saves_it(teacher, tmp_path):
  workdir = str(tmp_path / "student")
  summary = trainer.train(_student(teacher, **{"eval.every_steps": 2}), workdir)
  assert summary["final_step"] == 4 and np.isfinite(summary["history"][-1]["kl"])
  assert "teacher_val_top1" in summary and "val_top1" in summary["evaluations"][-1]
  entry = json.load(open(os.path.join(workdir, "run.json")))["history"][0]
  exp = setup(_student(teacher))
  expected = params_hash(jax.device_get(exp.load_frozen()[0][0]))
  assert entry["teacher"]["from"] == os.path.abspath(teacher)
  assert entry["teacher"]["sha256"] == expected
  # The checkpoint holds the student (params and its optimizer moments) and nothing else.
  step_dir = os.path.join(workdir, "checkpoints", "4")
  saved = model_io.read_step_params(step_dir)
  assert jax.tree.structure(saved) == jax.tree.structure(
      jax.tree.map(lambda x: 0, exp.abstract_state.params))
  def nbytes(tree):
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  on_disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(step_dir)
                for f in fs)
  # The student's state plus Orbax's metadata (whose size varies from run to run) stays
  # well short of what a saved teacher would add.
  assert on_disk < nbytes(exp.abstract_state) + nbytes(exp.abstract_frozen) / 2
  meta = model_io.read_source_meta(workdir)  # the student is an ordinary classifier
  assert meta["kind"] == "classifier" and meta["variant"] == "mu/16"


def test_resume_equals_an_uninterrupted_run_and_refuses_another_teacher(teacher, tmp_path):
  mine = str(tmp_path / "teacher")
  shutil.copytree(teacher, mine)
  whole = trainer.train(_student(mine), str(tmp_path / "whole"))
  part, stopped = str(tmp_path / "part"), str(tmp_path / "stopped")
  first = trainer.train(_student(mine, stop_after=2), part)
  assert first["final_step"] == 2
  shutil.copytree(part, stopped)
  rest = trainer.train(_student(mine), part)  # the teacher is reloaded, not restored
  assert rest["final_step"] == 4
  losses = {h["step"]: h["loss"] for h in first["history"] + rest["history"]}
  assert losses == {h["step"]: h["loss"] for h in whole["history"]}
  events = [e["event"] for e in json.load(open(os.path.join(part, "run.json")))["history"]]
  assert events == ["start", "resume"]
  # Other weights at the same path: the resume is refused, with one line.
  trainer.train(tiny_finetune_config(**{"model.variant": "Ti/16", "total_steps": 3,
                                        "eval.every_steps": -1, "eval.test_at_end": False,
                                        "allow_config_change": True}), mine)
  with pytest.raises(ConfigChangeError, match="teacher's weights changed") as e:
    trainer.train(_student(mine), stopped)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("change,message", [
    ({"data.train_path": "demo:motion_train", "data.val_path": "demo:motion_val"},
     r"has 5 classes, the student 4"),
    ({"data.frames": 8}, r"trained on 4-frame clips, the student's are config.data.frames=8"),
    ({"distill.teacher_variant": "mu/16"}, r"holds a ViT-Ti/16, but config.distill"),
    ({"distill.teacher_image_size": 48}, r"trained at 32x32, but config.distill"),
])
def test_teacher_student_mismatch_is_one_line_at_setup(teacher, change, message):
  with pytest.raises(ConfigError, match=message) as e:
    setup(_student(teacher, **change))
  assert "\n" not in str(e.value) and "config.distill.teacher_from=" in str(e.value)


def test_other_label_order_and_a_pretraining_teacher_are_refused(teacher, tmp_path):
  other = str(tmp_path / "reordered")
  shutil.copytree(teacher, other)
  meta = json.load(open(os.path.join(other, "model.json")))
  meta["class_names"] = meta["class_names"][::-1]
  json.dump(meta, open(os.path.join(other, "model.json"), "w"))
  with pytest.raises(ConfigError, match=r"label order differs .*index 0: "):
    setup(_student(other))
  meta.update(kind="pretrain")
  json.dump(meta, open(os.path.join(other, "model.json"), "w"))
  with pytest.raises(ConfigError, match=r"holds a pretrain model; the teacher must be"):
    setup(_student(other))
  with pytest.raises(ConfigError, match=r"teacher_from is empty"):
    setup(_student(""))
  with pytest.raises(ConfigError, match=r"teacher_variant is empty and config.distill"):
    setup(_student(str(tmp_path / "missing")))
  exp = setup(_student(str(tmp_path / "missing"), **{"distill.teacher_variant": "Ti/16"}))
  with pytest.raises(ConversionError, match=r"teacher_from=.*missing: .*no such directory"):
    exp.load_frozen()


def test_distill_b_config_runs_in_the_cpu_benchmark(capsys):
  """The bench builds the K710 distillation step from the same Experiment (a random teacher,
  shrunk here: mu/16 student, Ti/16 teacher) and reports clips/s with the teacher's FLOPs."""
  from vmae2_jax.bench import __main__ as bench_main
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  argv = [f"--config={os.path.join(root, 'configs', 'distill_b_k710.py')}", "--variant=mu/16",
          "--teacher_variant=Ti/16", "--frames=4", "--image_size=32", "--steps=1",
          "--warmup=1", "--rounds=1", "--dtype=float32", "--json"]
  assert bench_main.main(argv) == 0
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert out["stage"] == "distill" and out["teacher_variant"] == "Ti/16"
  assert out["clips_per_s"] > 0 and np.isfinite(out["loss"])
  from vmae2_jax.bench.flops import classifier_flops_per_clip
  student = classifier_flops_per_clip("mu/16", 4, 32, 710)["train"]
  teacher = classifier_flops_per_clip("Ti/16", 4, 32, 710)["forward"]
  assert out["model_tflops_per_clip"] == pytest.approx((student + teacher) / 1e12)


def test_compile_only_counts_the_teacher_without_its_weights():
  from vmae2_jax.training import compile_only
  c = _student("/nonexistent/teacher", **{"distill.teacher_variant": "Ti/16"})
  r = compile_only.compile_train_step(c)
  exp = setup(c)
  teacher_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(exp.abstract_frozen))
  # FSDP over the 8 devices: about an eighth of the teacher on each (small arrays stay whole)
  assert teacher_bytes / 8 <= r["frozen_bytes_per_device"] < teacher_bytes / 4
  assert r["memory_bytes_per_device"]["arguments"] > r["frozen_bytes_per_device"]
  assert "frozen teacher per device" in compile_only.format_report(r)
