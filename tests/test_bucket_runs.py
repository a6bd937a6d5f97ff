"""Runs whose workdir, init_from and shards live in a bucket (fake-gcs-server and moto's S3
server, started here).

Real `python -m vmae2_jax.main` processes, the clients pointed at the servers
through their own variables (tests/cloud_servers.py): a pre-training run in
gs:// and in s3:// killed with SIGKILL at a random committed step and resumed,
to the same per-step losses as an uninterrupted local run; one stopped by
SIGTERM and rerun, likewise; an incompatible resume refused; a fine-tuning run
reading its shards from the bucket and starting from the bucket run
(init_from); a bucket that does not exist, and a workdir of a scheme nothing
reaches (hf://), refused in one line before anything is compiled, with nothing
written. In process: a non-finite stop setting the bad step aside in the bucket.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.test_fault_injection import _config_file, _env
from vmae2_jax import paths
from vmae2_jax.checkpointing.staging import committed_steps
from vmae2_jax.evaluation.curves import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 240
PRETRAIN = dict(total_steps=6, warmup_steps=2, checkpoint_every=1, log_every=1,
                keep_checkpoints=2, async_checkpoint=True)


def _start(config, workdir, env, log, *extra):
  return subprocess.Popen(
      [sys.executable, "-m", "vmae2_jax.main", f"--config={config}", f"--workdir={workdir}",
       *extra], cwd=env.get("_CWD", ROOT), env=env, stdout=open(log, "w"),
      stderr=subprocess.STDOUT)


def _run(config, workdir, env, log, *extra):
  proc = _start(config, workdir, env, log, *extra)
  rc = proc.wait(TIMEOUT_S)
  with open(log) as f:
    return rc, f.read()


def _steps(folder):
  """Committed steps: in a bucket (no rename) STEP/commit_success.txt is written last."""
  return committed_steps(folder)


def _losses(workdir):
  return [(r["step"], r["loss"]) for r in read_metrics(workdir)[0]]


def test_bucket_workdir_resumes_after_sigkill_like_a_local_one(bucket, tmp_path):
  """gs:// (Orbax writes the bucket) and s3:// (a staging folder uploaded step by step): the
  kill may land in a step's write or upload; the resume starts from the last committed one."""
  cache = os.environ.get("VMAE2_TEST_JAX_CACHE") or str(tmp_path / "jax_cache")
  env = _env(cache)  # carries the server variables the fixture set
  cfg = _config_file(str(tmp_path / "pt.py"), "tiny_pretrain_config", PRETRAIN)
  local, remote = str(tmp_path / "pt_ref"), paths.join(bucket, "runs", "pt")
  rc, log = _run(cfg, local, env, str(tmp_path / "ref.log"))
  assert rc == 0, log[-3000:]

  # SIGKILL once a random step (1 to 4) is committed in the bucket, then resume.
  kill_at = random.randint(1, 4)
  proc = _start(cfg, remote, env, str(tmp_path / "killed.log"))
  deadline = time.monotonic() + TIMEOUT_S
  while time.monotonic() < deadline and proc.poll() is None:
    if [s for s in _steps(paths.join(remote, "checkpoints")) if s >= kill_at]:
      break
    time.sleep(0.05)
  assert proc.poll() is None, (kill_at, open(tmp_path / "killed.log").read()[-3000:])
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  committed = _steps(paths.join(remote, "checkpoints"))
  rc, log = _run(cfg, remote, env, str(tmp_path / "resumed.log"))
  assert rc == 0, log[-3000:]
  assert f"resumed from step {committed[-1]}" in log, (kill_at, committed, log[-3000:])
  assert _losses(remote) == _losses(local), kill_at
  assert len(_losses(local)) == PRETRAIN["total_steps"]
  for name in ("config.json", "model.json", "run.json", "summary.json", "curves.png"):
    assert paths.isfile(paths.join(remote, name)), name
  assert paths.glob(paths.join(remote, "tensorboard"), "events.out.tfevents.*")
  # retention as locally (keep_checkpoints + 1 for the non-finite guard)
  assert _steps(paths.join(remote, "checkpoints")) == _steps(os.path.join(local, "checkpoints"))
  for scheme in ("gs:", "s3:"):  # no local folder named after the URL
    assert not os.path.exists(os.path.join(ROOT, scheme))

  # Another seed is another run: refused, one line, the bucket run untouched.
  other = _config_file(str(tmp_path / "pt2.py"), "tiny_pretrain_config",
                       dict(PRETRAIN, seed=123))
  before = dict(paths.walk_files(remote))
  rc, log = _run(other, remote, env, str(tmp_path / "refused.log"))
  assert rc != 0 and "holds a run at step 6 with another config" in log, log[-3000:]
  assert "Traceback" not in log
  assert dict(paths.walk_files(remote)) == before


def test_finetune_from_a_bucket_run_with_bucket_shards(bucket, tmp_path):
  """gs:// shards are read by ArrayRecord itself, s3:// ones through this host's cache."""
  cache = os.environ.get("VMAE2_TEST_JAX_CACHE") or str(tmp_path / "jax_cache")
  env = _env(cache)
  env["VMAE2_JAX_SHARD_CACHE"] = str(tmp_path / "shard_cache")
  pt = paths.join(bucket, "pt")
  cfg = _config_file(str(tmp_path / "pt.py"), "tiny_pretrain_config", dict(total_steps=2))
  rc, log = _run(cfg, pt, env, str(tmp_path / "pt.log"))
  assert rc == 0, log[-3000:]
  from vmae2_jax.data.shards import demo_path
  for split in ("train", "val"):  # the demo shard sets, copied into the bucket
    local = demo_path(split)
    manifest = paths.read_text(local).replace(f"demo_{split}-", f"demo_{split}-")
    paths.write_text(paths.join(bucket, "shards", split, "manifest.json"), manifest)
    for name in os.listdir(os.path.dirname(local)):
      if name.startswith(f"demo_{split}-"):
        paths.copy(os.path.join(os.path.dirname(local), name),
                   paths.join(bucket, "shards", split, name))
  ft = paths.join(bucket, "ft")
  ft_cfg = _config_file(str(tmp_path / "ft.py"), "tiny_finetune_config", {
      "init_from": pt, "total_steps": 2, "eval.every_steps": 2,
      "data.train_path": paths.join(bucket, "shards", "train"),
      "data.val_path": paths.join(bucket, "shards", "val")})
  rc, log = _run(ft_cfg, ft, env, str(tmp_path / "ft.log"))
  assert rc == 0, log[-3000:]
  assert f"initialised parameters from {pt}" in log
  assert _steps(paths.join(ft, "best"))  # the best step kept in the bucket
  assert paths.glob(ft, "test_step2_*/*")  # the multi-view test report
  cached = os.listdir(tmp_path / "shard_cache") if (tmp_path / "shard_cache").exists() else []
  assert len(cached) == (2 if bucket.startswith("s3://") else 0), cached  # train and val sets


def test_missing_bucket_fails_in_one_line_before_compiling(gcs_server, tmp_path):
  env = _env(str(tmp_path / "jax_cache"))
  env["_CWD"] = str(tmp_path)
  cfg = _config_file(str(tmp_path / "pt.py"), "tiny_pretrain_config", {})
  env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
  rc, log = _run(cfg, "gs://vmae2-no-such-bucket/run", env, str(tmp_path / "missing.log"))
  assert rc != 0
  assert "--workdir=gs://vmae2-no-such-bucket/run: cannot create or write it (the bucket " \
         "gs://vmae2-no-such-bucket does not exist)" in log, log[-3000:]
  assert "Traceback" not in log and "Compiling" not in log
  assert sorted(os.listdir(tmp_path)) == ["missing.log", "pt.py"]  # nothing named gs:


def test_unreachable_workdir_is_refused_in_one_line_before_compiling(tmp_path):
  """A workdir of a scheme nothing here reaches (hf://): one line naming --workdir, before the
  data is read or anything compiled, nothing written."""
  env = _env(str(tmp_path / "jax_cache"))
  env["_CWD"] = str(tmp_path)
  env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
  cfg = _config_file(str(tmp_path / "pt.py"), "tiny_pretrain_config", {})
  rc, log = _run(cfg, "hf://org/run", env, str(tmp_path / "hf.log"))
  assert rc == 1
  errors = [line for line in log.splitlines() if line.startswith("error:")]
  assert errors == ["error: --workdir=hf://org/run: its checkpoints are written by Orbax, which "
                    "reaches local paths, gs:// and s3:// only, not hf://; copy it to one of "
                    "those, or mount it on every worker and give the mounted path "
                    "(docs/scaling.md)"], log[-3000:]
  assert "Traceback" not in log and "Compiling" not in log
  assert sorted(os.listdir(tmp_path)) == ["hf.log", "pt.py"]


def test_sigterm_with_a_bucket_workdir_saves_and_the_rerun_continues(bucket, tmp_path):
  """Preemption as locally: the SIGTERM's step is saved in the bucket, exit 0 with the
  "resumes from step" line, and the rerun continues to an uninterrupted local run's losses."""
  from tests.test_lifecycle import _wait_for_line
  cache = os.environ.get("VMAE2_TEST_JAX_CACHE") or str(tmp_path / "jax_cache")
  env = _env(cache)
  # checkpoints only at the end: the SIGTERM save is the only one before it
  cfg = _config_file(str(tmp_path / "pt.py"), "tiny_pretrain_config", dict(
      total_steps=12, warmup_steps=2, log_every=1, checkpoint_every=1000,
      async_checkpoint=True))
  local, remote = str(tmp_path / "ref"), paths.join(bucket, "runs", "pt")
  rc, log = _run(cfg, local, env, str(tmp_path / "ref.log"))
  assert rc == 0, log[-3000:]
  proc = _start(cfg, remote, env, str(tmp_path / "stopped.log"))
  _wait_for_line(proc, str(tmp_path / "stopped.log"), r"\] step 3/12")
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(TIMEOUT_S) == 0, open(tmp_path / "stopped.log").read()[-3000:]
  text = open(tmp_path / "stopped.log").read()
  stop = [line for line in text.splitlines() if "resumes from step" in line]
  assert len(stop) == 1, text[-3000:]
  step = int(stop[0].split("resumes from step ")[1].split()[0].rstrip(".,:;"))
  assert f"step {step} saved in {paths.join(remote, 'checkpoints')}" in stop[0], stop
  assert 3 <= step < 12 and _steps(paths.join(remote, "checkpoints"))[-1] == step
  import json
  assert json.loads(paths.read_text(paths.join(remote, "summary.json")))["preempted_at"] == step
  rc, log = _run(cfg, remote, env, str(tmp_path / "resumed.log"))
  assert rc == 0, log[-3000:]
  assert f"resumed from step {step} " in log, log[-3000:]
  assert _losses(remote) == _losses(local) and len(_losses(local)) == 12
  assert not os.path.exists(os.path.join(ROOT, "gs:"))


# reading a whole saved state back without a target, as test_lifecycle checks it
@pytest.mark.filterwarnings("ignore:Sharding info not provided when restoring")
def test_nonfinite_stop_in_a_bucket_sets_the_bad_step_aside(bucket, monkeypatch):
  """tests/test_lifecycle.py's non-finite stop with the workdir in gs:// and s3://: the same
  steps named, the bad step set aside in the bucket (a copy then a delete), the good one kept."""
  import numpy as np

  from tests.helpers import tiny_pretrain_config
  from tests.test_lifecycle import _all_finite, _saved_state, _spike
  from vmae2_jax.checkpointing import Checkpointer
  from vmae2_jax.training import trainer
  _spike(monkeypatch, at=3, factor=1e9)
  config = tiny_pretrain_config(total_steps=8, warmup_steps=1, checkpoint_every=1, log_every=1,
                                keep_checkpoints=1)
  workdir = paths.join(bucket, "run")
  with pytest.raises(trainer.NonFiniteLossError) as err:
    trainer.train(config, workdir)
  e = err.value
  assert (e.step, e.bad_step, e.last_good) == (5, 4, 3), str(e)
  text = str(e)
  assert "\n" not in text and f"last good checkpoint: step 3 in {workdir}/checkpoints" in text
  assert f"{workdir}/set_aside/4_nonfinite" in text, text
  ckpt = Checkpointer(paths.join(workdir, "checkpoints"), save_every=1)
  assert ckpt.all_steps() == [3]
  ckpt.close()
  assert paths.listdir(paths.join(workdir, "set_aside")) == ["4_nonfinite"]
  aside = paths.join(workdir, "set_aside", "4_nonfinite")
  assert paths.exists(paths.join(aside, "commit_success.txt"))  # moved whole
  from vmae2_jax.checkpointing import staging
  for step_dir in (paths.join(workdir, "checkpoints", "3"), aside):
    with staging.readable(step_dir) as local:
      assert _all_finite(_saved_state(local)), step_dir
  assert np.isfinite(dict(_losses(workdir))[4])  # step 3's parameters gave a finite loss
  assert not os.path.exists(os.path.join(ROOT, "gs:"))


def test_bucket_without_credentials_or_network_fails_in_one_line(tmp_path):
  """The real endpoint, no credentials (none in the environment or gcloud's folder): without
  a network (this machine) gcsfs retries for about a minute and the start ends in one line
  naming --workdir, before compilation; with a network the reason is the credentials."""
  env = _env(str(tmp_path / "jax_cache"))
  for name in ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL",
               "CLOUD_STORAGE_EMULATOR_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS",
               "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"):
    env.pop(name, None)
  env["CLOUDSDK_CONFIG"] = str(tmp_path / "gcloud")  # no application default credentials
  env["_CWD"] = str(tmp_path)
  env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
  cfg = _config_file(str(tmp_path / "pt.py"), "tiny_pretrain_config", {})
  rc, log = _run(cfg, "gs://vmae-no-bucket/run", env, str(tmp_path / "offline.log"))
  assert rc == 1, log[-3000:]
  errors = [line for line in log.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and log.rstrip().splitlines()[-1] == errors[0], log[-3000:]
  assert errors[0].startswith("error: --workdir=gs://vmae-no-bucket/run: cannot create or "
                              "write it ("), errors
  assert "Traceback" not in log and "Compiling" not in log
  assert sorted(os.listdir(tmp_path)) == ["offline.log", "pt.py"]  # nothing named gs:
