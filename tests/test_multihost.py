"""Two real JAX processes (4 fake CPU devices each) train, checkpoint together, resume.

Launched through launch/local_multiprocess.sh: a coordinator on localhost,
jax.distributed with gloo CPU collectives, each process feeding its own half
of every batch (jax.make_array_from_process_local_data) and one Orbax
checkpoint written by both. The resumed run must reproduce the uninterrupted
run's losses exactly (same program, same devices, same data and mask keys).

Not compared with a one-process run: the synthetic stream hands process p of
n every n-th clip, so the rows of the global batch are ordered differently
from a one-process batch, and masks are drawn per row; the losses are equal
in distribution, not in value.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch", "local_multiprocess.sh")

TINY = [
    "--config=configs/demo.py", "--config.model.variant=mu/16",
    "--config.model.scan_layers=True", "--config.data.source=synthetic",
    "--config.data.frames=4", "--config.data.image_size=32", "--config.data.num_sample=2",
    "--config.masking.encoder_ratio=0.5", "--config.batch_size=4", "--config.total_steps=4",
    "--config.warmup_steps=1", "--config.log_every=1", "--config.checkpoint_every=2",
    "--config.reconstruction.enabled=False", "--config.async_checkpoint=False", "--v=1",
]
STEP_LINE = re.compile(r"step (\d+)/\d+  loss (\S+)")


def _launch(workdir: str, logdir: str) -> None:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [LAUNCH, "-n", "2", "-d", "4", "-l", logdir, "--",
         sys.executable, "-m", "vmae2_jax.main", f"--workdir={workdir}", *TINY]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  logs = {i: open(os.path.join(logdir, f"process_{i}.log")).read() for i in range(2)}
  assert proc.returncode == 0, proc.stderr + "\n".join(v[-3000:] for v in logs.values())
  for i, text in logs.items():
    assert f"jax.distributed: process {i} of 2, 4 local / 8 global devices" in text


def _step_lines(logdir: str, i: int) -> list[tuple[int, str]]:
  text = open(os.path.join(logdir, f"process_{i}.log")).read()
  return [(int(s), loss) for s, loss in STEP_LINE.findall(text)]


def test_two_processes_checkpoint_restart_and_agree(tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  _launch(straight, str(tmp_path / "logs_a"))
  summary = json.load(open(os.path.join(straight, "summary.json")))
  losses = {s: loss for s, loss in summary["losses"]}
  assert sorted(losses) == [1, 2, 3, 4]
  # Both processes saw the same (replicated) loss at every step.
  assert _step_lines(str(tmp_path / "logs_a"), 0) == _step_lines(str(tmp_path / "logs_a"), 1)
  assert len(_step_lines(str(tmp_path / "logs_a"), 1)) == 4

  # The checkpoint holds each process's own data iterator state.
  data = json.load(open(os.path.join(straight, "checkpoints", "4", "data", "metadata")))
  assert data == {"process_count": 2, "processes": [{"position": 4}, {"position": 4}]}
  # Both processes wrote their shards of the state.
  state_dir = os.path.join(straight, "checkpoints", "4", "state")
  assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(state_dir))

  # Restart from the step-2 checkpoint: a copy of the run without step 4.
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))
  os.remove(os.path.join(resumed, "summary.json"))
  _launch(resumed, str(tmp_path / "logs_b"))
  for i in range(2):
    assert "resumed from step 2" in open(str(tmp_path / "logs_b" / f"process_{i}.log")).read()
  again = json.load(open(os.path.join(resumed, "summary.json")))
  assert again["steps_run"] == 2
  assert {s: loss for s, loss in again["losses"]} == {3: losses[3], 4: losses[4]}
  assert _step_lines(str(tmp_path / "logs_b"), 0) == _step_lines(str(tmp_path / "logs_b"), 1)


def test_coordinator_settings_from_config_or_environment(monkeypatch):
  import pytest

  from configs.common import base_config
  from vmae2_jax.sharding.distributed import _explicit_settings
  for var in ("VMAE2_COORDINATOR", "VMAE2_NUM_PROCESSES", "VMAE2_PROCESS_ID",
              "VMAE2_LOCAL_DEVICE_IDS"):
    monkeypatch.delenv(var, raising=False)
  defaults = dict(base_config().distributed)
  assert _explicit_settings(defaults) is None  # a plain local run: no jax.distributed
  explicit = defaults | {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                         "process_id": 3}
  assert _explicit_settings(explicit) == {"coordinator_address": "10.0.0.1:1234",
                                          "num_processes": 4, "process_id": 3,
                                          "local_device_ids": None}
  monkeypatch.setenv("VMAE2_COORDINATOR", "localhost:999")
  monkeypatch.setenv("VMAE2_NUM_PROCESSES", "2")
  monkeypatch.setenv("VMAE2_PROCESS_ID", "1")
  monkeypatch.setenv("VMAE2_LOCAL_DEVICE_IDS", "0,1")
  assert _explicit_settings(defaults) == {"coordinator_address": "localhost:999",
                                          "num_processes": 2, "process_id": 1,
                                          "local_device_ids": [0, 1]}
  assert _explicit_settings(explicit)["process_id"] == 3  # config wins over the environment
  monkeypatch.setenv("VMAE2_PROCESS_ID", "2")
  with pytest.raises(ValueError, match="process_id"):
    _explicit_settings(defaults)


def test_two_processes_fine_tune_validate_and_test_every_video_once(tmp_path):
  """Supervised stage over two processes: validation and the multi-view test see every
  video exactly once, and agree with a one-process test of the same checkpoint."""
  import csv
  workdir, logdir = str(tmp_path / "ft"), str(tmp_path / "logs")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  args = ["--config=configs/finetune_demo.py", "--config.init_from=",
          "--config.model.variant=mu/16", "--config.data.frames=4",
          "--config.data.image_size=32", "--config.batch_size=4", "--config.total_steps=2",
          "--config.warmup_steps=1", "--config.eval.every_steps=2", "--config.eval.batch_size=2",
          "--config.async_checkpoint=False", "--config.checkpoint_every=2"]
  cmd = [LAUNCH, "-n", "2", "-d", "4", "-l", logdir, "--", sys.executable, "-m",
         "vmae2_jax.main", f"--workdir={workdir}", *args]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  logs = "\n".join(open(os.path.join(logdir, f"process_{i}.log")).read()[-3000:]
                   for i in range(2))
  assert proc.returncode == 0, proc.stderr + logs
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  manifest = os.path.join(ROOT, "vmae2_jax", "resources", "demo", "motion_val.manifest.json")
  n = json.load(open(manifest))["num_written"]
  assert n % 8 != 0 or n > 8  # more videos than devices: each process reads several
  assert summary["test_videos"] == n and summary["evaluations"][0]["val_videos"] == n
  rows = list(csv.DictReader(open(os.path.join(workdir, "test_step2_2x2", "predictions.csv"))))
  assert sorted(int(r["video_id"]) for r in rows) == list(range(n))
  # Every view's scores: one part per process, each video in exactly one of them.
  from vmae2_jax.evaluation.view_scores import read_views
  report = os.path.join(workdir, "test_step2_2x2")
  assert sorted(f for f in os.listdir(report) if f.startswith("views")) == [
      "views-00000-of-00002.npz", "views-00001-of-00002.npz"]
  two = read_views(report)
  assert list(two.video_ids) == list(range(n)) and not np.isnan(two.scores).any()
  # The same checkpoint tested by one process gives the same predictions.
  single = subprocess.run(
      [sys.executable, "-m", "vmae2_jax.main", f"--workdir={workdir}", *args,
       "--config.eval_only=True"], cwd=ROOT,
      env=dict(env, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4"),
      capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  again = {r["video_id"]: r for r in csv.DictReader(
      open(os.path.join(workdir, "test_step2_2x2", "predictions.csv")))}
  for r in rows:
    assert again[r["video_id"]]["class_1"] == r["class_1"]
    assert abs(float(again[r["video_id"]]["prob_1"]) - float(r["prob_1"])) < 1e-4
  # One process rewrote the views as one file; the two-process parts are gone.
  assert sorted(f for f in os.listdir(report) if f.startswith("views")) == ["views.npz"]
  np.testing.assert_allclose(read_views(report).scores, two.scores, atol=1e-4)


def test_a_preemption_notice_to_one_process_saves_the_agreed_step_in_both(tmp_path):
  """JAX's preemption service: a SIGTERM to process 1 alone (as a TPU VM's maintenance
  notice reaches one host) is caught by JAX's notifier, both processes agree on a step
  through Orbax's reached_preemption, save it together and end with exit 0."""
  import signal
  import socket
  import time
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  work = str(tmp_path / "run")
  args = [a for a in TINY
          if not a.startswith(("--config.total_steps", "--config.checkpoint_every"))]
  args += ["--config.total_steps=40", "--config.checkpoint_every=1000"]  # the notice saves
  procs, logs = [], [str(tmp_path / f"process_{i}.log") for i in range(2)]
  for i in range(2):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4",
               VMAE2_COORDINATOR=f"127.0.0.1:{port}", VMAE2_NUM_PROCESSES="2",
               VMAE2_PROCESS_ID=str(i),
               PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    procs.append(subprocess.Popen([sys.executable, "-m", "vmae2_jax.main", f"--workdir={work}",
                                   *args], cwd=ROOT, env=env, stdout=open(logs[i], "w"),
                                  stderr=subprocess.STDOUT))
  try:
    deadline = time.monotonic() + 600
    while not re.search(r"step 3/40", open(logs[1]).read()):
      assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
          open(logs[1]).read()[-3000:]
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    rcs = [p.wait(timeout=300) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  texts = [open(f).read() for f in logs]
  assert rcs == [0, 0], "\n".join(t[-3000:] for t in texts)
  saved = [re.findall(r"preempted: step (\d+) saved in (\S+); the same command resumes", t)
           for t in texts]
  assert saved[0] == saved[1] and len(saved[0]) == 1, saved
  step = int(saved[0][0][0])
  assert 3 <= step < 40 and saved[0][0][1] == os.path.join(work, "checkpoints")
  assert _step_lines(str(tmp_path), 0) == _step_lines(str(tmp_path), 1)  # the same steps run
  assert max(s for s, _ in _step_lines(str(tmp_path), 0)) == step
  assert max(int(n) for n in os.listdir(os.path.join(work, "checkpoints"))) == step
  state_dir = os.path.join(work, "checkpoints", str(step), "state")
  assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(state_dir))
  assert json.load(open(os.path.join(work, "summary.json")))["preempted_at"] == step


def test_two_processes_in_an_s3_workdir_save_together_and_resume(s3_server, tmp_path):
  """s3:// (staged) with two processes: each stages the shards it owns, every process uploads
  its files and process 0 writes the file-size list and the marker after all of them; a
  step without its marker is dropped and the resume, downloading step 2 on both
  processes, reproduces the uninterrupted run's losses."""
  from vmae2_jax import paths
  from vmae2_jax.checkpointing.manager import FILE_SIZES
  from vmae2_jax.checkpointing.staging import COMMIT_MARKER, committed_steps
  run = paths.join(s3_server.make_bucket(), "run")
  ckpts = paths.join(run, "checkpoints")
  _launch(run, str(tmp_path / "logs_a"))
  losses = dict(json.loads(paths.read_text(paths.join(run, "summary.json")))["losses"])
  assert sorted(losses) == [1, 2, 3, 4] and committed_steps(ckpts)[-2:] == [2, 4]
  files = dict(paths.walk_files(paths.join(ckpts, "4")))
  # Both processes' staged files are in the step (process 1 owns half of every sharded array).
  assert {"state/array_metadatas/process_0", "state/array_metadatas/process_1"} <= set(files)
  listed = json.loads(paths.read_text(paths.join(ckpts, "4", FILE_SIZES)))["files"]
  assert listed == {r: n for r, n in files.items() if r not in (FILE_SIZES, COMMIT_MARKER)}

  # A kill between the uploads and the marker: step 4 is not committed, so it is removed
  # and the run resumes from step 2.
  paths.remove(paths.join(ckpts, "4", COMMIT_MARKER))
  paths.remove(paths.join(run, "summary.json"))
  _launch(run, str(tmp_path / "logs_b"))
  for i in range(2):
    assert "resumed from step 2" in open(str(tmp_path / "logs_b" / f"process_{i}.log")).read()
  again = json.loads(paths.read_text(paths.join(run, "summary.json")))
  assert again["steps_run"] == 2
  assert {s: loss for s, loss in again["losses"]} == {3: losses[3], 4: losses[4]}
  assert committed_steps(ckpts)[-2:] == [2, 4]
