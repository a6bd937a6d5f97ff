"""The pre-training stage end to end: learning, exact resume, failure modes."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.helpers import tiny_pretrain_config
from vmae2_jax.checkpointing import Checkpointer
from vmae2_jax.training import trainer
from vmae2_jax.training.experiment import setup
from vmae2_jax.training.config_checks import ConfigError, check_pretrain_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _final_params(workdir, config):
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1)
  step = ckpt.latest_step()
  state, data_state, meta = ckpt.restore(step, setup(config).abstract_state)
  ckpt.close()
  return step, jax.device_get(state.params), data_state, meta


def test_resume_replays_the_uninterrupted_run_exactly(tmp_path):
  # Real video from the embedded shards through Grain: the iterator's state
  # travels in the same checkpoint step as the train state.
  shards = {"data.source": "shards", "data.train_path": "demo"}
  config = tiny_pretrain_config(**shards)
  straight = trainer.train(config, str(tmp_path / "straight"))
  # Same run, stopped after 4 steps and resumed (from the step-4 checkpoint).
  first = trainer.train(tiny_pretrain_config(stop_after=4, **shards), str(tmp_path / "resumed"))
  assert first["final_step"] == 4
  second = trainer.train(config, str(tmp_path / "resumed"))
  assert second["steps_run"] == 2 and second["final_step"] == 6
  assert straight["history"][-1]["loss"] == second["history"][-1]["loss"]
  s1, p1, d1, meta = _final_params(str(tmp_path / "straight"), config)
  s2, p2, d2, _ = _final_params(str(tmp_path / "resumed"), config)
  assert s1 == s2 == 6 and d1 == d2 and d1 and meta["stage"] == "pretrain"
  jax.tree.map(np.testing.assert_array_equal, p1, p2)
  # The resolved config and TensorBoard events sit beside the checkpoints.
  assert os.path.exists(tmp_path / "straight" / "config.json")
  assert os.listdir(tmp_path / "straight" / "tensorboard")


def test_loss_falls(tmp_path):
  # Two clips seen again and again under fresh masks: the loss must fall well
  # below the ~1.0 of predicting the (normalised) mean.
  config = tiny_pretrain_config(total_steps=60, warmup_steps=4, log_every=10,
                                checkpoint_every=100,
                                **{"optim.base_lr": 0.5, "data.num_videos": 2})
  hist = trainer.train(config, str(tmp_path))["history"]
  assert hist[-1]["loss"] < 0.9 * hist[0]["loss"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = tiny_pretrain_config(total_steps=20, warmup_steps=1, checkpoint_every=1,
                                **{"optim.base_lr": 1e32})
  with pytest.raises(trainer.NonFiniteLossError, match=r"at step \d+") as err:
    trainer.train(config, str(tmp_path))
  e = err.value
  assert e.last_good is not None and e.last_good < e.bad_step <= e.step
  assert f"last good checkpoint: step {e.last_good}" in str(e)
  step, params, _, _ = _final_params(str(tmp_path), config)  # what a rerun resumes from
  assert step == e.last_good
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  assert not any(n.endswith("tmp") for n in os.listdir(tmp_path / "checkpoints"))


@pytest.mark.parametrize("override, field", [
    (dict(**{"data.image_size": 40}), "config.data.image_size"),
    (dict(**{"data.image_size": 48}), "even token grid"),
    (dict(**{"masking.encoder_ratio": 1.0}), "config.masking.encoder_ratio"),
    (dict(batch_size=3, **{"data.num_sample": 1}), "config.batch_size"),
    (dict(**{"model.variant": "Q/16"}), "config.model.variant"),
])
def test_config_errors_name_the_field(override, field):
  with pytest.raises((ConfigError, ValueError), match=field):
    check_pretrain_config(tiny_pretrain_config(**override), num_devices=2)


def test_main_reports_a_bad_config_in_one_line(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "vmae2_jax.main", "--config=configs/demo.py",
       f"--workdir={tmp_path}", "--config.data.image_size=40"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "config.data.image_size=40" in errors[0]


def test_demo_config_trains_on_the_embedded_shards_and_draws(tmp_path):
  """The README's main job, shortened: embedded demo shards in, picture out."""
  from configs import demo
  config = demo.get_config()
  config.model.variant = "mu/16"  # the demo's data and picture; a smaller model to compile
  config.total_steps = 2
  config.warmup_steps = 1
  config.log_every = 1
  config.async_checkpoint = False
  config.reconstruction.num_clips = 2
  summary = trainer.train(config, str(tmp_path))
  assert summary["final_step"] == 2 and np.isfinite(summary["history"][-1]["loss"])
  from PIL import Image
  img = Image.open(summary["reconstruction"])
  from vmae2_jax.evaluation.reconstruction import CELL_PX
  # 2 clips x (original, masked, reconstruction) rows, 4 frames, a title line.
  assert img.size == (4 * CELL_PX + 110, 2 * 3 * CELL_PX + 40)
  # ...and on request, from the run's checkpoint.
  from vmae2_jax.evaluation.draw_reconstruction import draw
  path = draw(str(tmp_path), num_clips=1, out=str(tmp_path / "again.png"))
  assert Image.open(path).size == (4 * CELL_PX + 110, 3 * CELL_PX + 40)
