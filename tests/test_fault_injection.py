"""SIGKILL at random moments, across the four stages, never loses more than the uncommitted steps.

Real `python -m vmae2_jax.main` processes of the tiny configs (mu/16, 4 frames,
32x32, a checkpoint every step, asynchronous saves) are killed with SIGKILL at
seeded random moments: some while an asynchronous checkpoint write is under
way (its temporary directory exists), some at a random time during training
or the multi-view test. After every kill the test notes the newest committed
step on disk, restarts the same command and checks that it resumes from
exactly that step (a half-written step is never listed, never read). Once a
run finishes, its per-step losses (WORKDIR/metrics.jsonl: full-precision
floats, the later row of a step wins), validation results and multi-view test
results must equal, bit for bit, those of one uninterrupted run of the same
config.

Stages: pre-training; fine-tuning from the pre-training run (config.init_from);
the multi-view test of the fine-tuned run (config.eval_only); distillation of a
student started from the pre-training run, taught by the fine-tuned run (its
frozen teacher is reloaded by every restart).

The subprocesses share a JAX persistent compilation cache, so only the first
process of each stage compiles.
"""

import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time


from vmae2_jax.evaluation.curves import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 10
KILLS = {"pretrain": 5, "finetune": 5, "test": 2, "distill": 3}   # 15 in all
# One process, at most: 240 s on an idle machine, times the load per core when it starts (a
# shared or busy CI machine runs every process slower), up to 4x; VMAE2_TEST_PROCESS_TIMEOUT_S
# sets it outright.
TIMEOUT_S = 240.0


def _timeout_s():
  if os.environ.get("VMAE2_TEST_PROCESS_TIMEOUT_S"):
    return float(os.environ["VMAE2_TEST_PROCESS_TIMEOUT_S"])
  per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
  return TIMEOUT_S * min(4.0, max(1.0, per_core))

PRETRAIN = dict(total_steps=14, warmup_steps=2, checkpoint_every=1, log_every=1,
                keep_checkpoints=2, async_checkpoint=True)
FINETUNE = dict(total_steps=14, warmup_steps=1, checkpoint_every=1, log_every=1,
                keep_checkpoints=2, async_checkpoint=True,
                **{"eval.every_steps": 4, "mixup.mixup_alpha": 0.8, "mixup.cutmix_alpha": 1.0})
DISTILL = dict(FINETUNE, total_steps=8, stage="distill",
               **{"eval.test_at_end": False, "distill.label_weight": 0.5})


def _config_file(path, helper, overrides):
  with open(path, "w") as f:
    f.write(f"from tests.helpers import {helper}\n\n\n"
            f"def get_config(arg=None):\n  return {helper}(**{overrides!r})\n")
  return path


def _env(cache_dir):
  env = dict(os.environ)
  # One CPU device (the tests' 8 fake ones compile and run slower); every process the same.
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if "force_host_platform_device_count" not in f)
  env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", PYTHONUNBUFFERED="1")
  return env


class _Stage:
  """One stage's command; starts it, kills it, reads what it left."""

  def __init__(self, name, config, workdir, env, logs, extra=()):
    self.name, self.config, self.workdir, self.env = name, config, workdir, env
    self.logs, self.extra, self.n = logs, list(extra), 0
    self.ckpt_dir = os.path.join(workdir, "checkpoints")

  def start(self):
    self.n += 1
    self.log_path = os.path.join(self.logs, f"{self.name}_{os.path.basename(self.workdir)}_"
                                 f"{self.n}.log")
    self._log = open(self.log_path, "w")
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "vmae2_jax.main", f"--config={self.config}",
         f"--workdir={self.workdir}", *self.extra],
        cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
    self._read, self._seen = 0, ""
    self.timeout_s = _timeout_s()
    return self

  def wait(self):
    try:
      rc = self.proc.wait(timeout=self.timeout_s)
    finally:
      if self.proc.poll() is None:
        self.proc.kill()
      self._log.close()
    return rc

  def log(self):
    with open(self.log_path) as f:
      return f.read()

  def running(self):
    return self.proc.poll() is None

  def committed(self):
    if not os.path.isdir(self.ckpt_dir):
      return []
    return sorted(int(n) for n in os.listdir(self.ckpt_dir) if n.isdigit())

  def writes_in_progress(self):
    if not os.path.isdir(self.ckpt_dir):
      return set()
    return {n for n in os.listdir(self.ckpt_dir) if "orbax-checkpoint-tmp" in n}

  def count(self, pattern):
    """How often `pattern` occurs in the lines this process logged so far."""
    with open(self.log_path, "rb") as f:
      f.seek(self._read)
      data = f.read()
    cut = data.rfind(b"\n") + 1  # whole lines only
    self._read += cut
    self._seen += data[:cut].decode(errors="replace")
    return len(re.findall(pattern, self._seen))

  def wait_for(self, ready, limit_s=None):
    """Polls `ready()` while the process runs; True when it became true."""
    deadline = time.monotonic() + (self.timeout_s if limit_s is None else limit_s)
    while self.running() and time.monotonic() < deadline:
      if ready():
        return True
      time.sleep(0.005)
    return False

  def kill(self):
    self.proc.send_signal(signal.SIGKILL)
    self.wait()


def _kill_somewhere(stage, rng, mode):
  """Waits for a moment of `mode`, SIGKILLs; returns what was under way (None: it ended)."""
  j = rng.randint(1, 2)
  if mode == "write":  # within 30 ms of this process's j-th asynchronous save starting
    ready = lambda: stage.count(r"checkpoint: saving step") >= j
    pause = rng.uniform(0, 0.03)
  elif mode == "step":  # a random moment of the step after this process's j-th logged step
    ready = lambda: stage.count(r"\] step \d+/\d+") >= j
    pause = rng.uniform(0, 0.3)
  else:  # "test": a random moment once the process restored the run (eval_only: no steps)
    ready = lambda: stage.count(r"resumed from step") >= 1
    pause = rng.uniform(0, 0.3)  # a warm compilation cache can end the tiny test within 1 s
  if not stage.wait_for(ready):
    return None
  time.sleep(pause)
  if not stage.running():
    return None
  stage.kill()
  return "write" if stage.writes_in_progress() else "other"


def _resumed_from(log):
  found = re.findall(r"resumed from step (\d+)", log)
  return int(found[-1]) if found else None


def _run_with_kills(stage, rng, kills, modes):
  """Kills the stage's command `kills` times, restarting it each time; then lets it finish.

  modes: the kinds of moment to kill at, used in a seeded random order.

  Returns the kinds of moments killed at. After each kill the next process
  must resume from the newest committed step on disk.
  """
  expected, what = None, []
  plan = [modes[i % len(modes)] for i in range(kills)]
  rng.shuffle(plan)
  misses = 0
  while True:
    stage.start()
    if len(what) < kills:
      killed = _kill_somewhere(stage, rng, plan[len(what)])
    else:
      killed = None
    if killed is None and stage.name == "test" and len(what) < kills and misses < 5:
      # The test ended before the chosen moment: it is rerun from scratch (nothing to
      # resume), so try again rather than count a kill that did not happen.
      assert stage.wait() == 0, stage.log()[-3000:]
      misses += 1
      continue
    if killed is None:  # not killed: it ran to its end
      rc = stage.wait()
      log = stage.log()
      assert rc == 0, log[-3000:]
    else:
      log = stage.log()
      what.append(killed)
    if stage.name != "test":
      started = "resumed from step" in log or re.search(r"step \d+/\d+", log)
      if started:  # it got far enough to tell where it started
        assert _resumed_from(log) == expected, (stage.log_path, expected, log[-3000:])
      for step in stage.committed():  # a committed step holds no part still being written
        assert not glob.glob(os.path.join(stage.ckpt_dir, str(step), "*orbax-checkpoint-tmp*"))
    if killed is None:
      return what
    committed = stage.committed()
    expected = committed[-1] if committed else None


def _losses(workdir):
  train, evals = read_metrics(workdir)
  return [(r["step"], r["loss"]) for r in train], [
      {k: v for k, v in r.items() if k not in ("seconds",)} for r in evals]


def _test_results(workdir):
  (path,) = glob.glob(os.path.join(workdir, "test_step*", "metrics.json"))
  with open(path) as f:
    return os.path.basename(os.path.dirname(path)), json.load(f)


def test_sigkill_at_random_moments_resumes_bit_identically(tmp_path):
  rng = random.Random(SEED)
  cache = os.environ.get("VMAE2_TEST_JAX_CACHE") or str(tmp_path / "jax_cache")
  env, logs = _env(cache), str(tmp_path / "logs")
  os.makedirs(logs)
  cfg = str(tmp_path)
  pt_ref, pt = str(tmp_path / "pt_ref"), str(tmp_path / "pt")
  ft_ref, ft = str(tmp_path / "ft_ref"), str(tmp_path / "ft")

  # ---- pre-training
  pt_cfg = _config_file(os.path.join(cfg, "pt.py"), "tiny_pretrain_config", PRETRAIN)
  ref = _Stage("pretrain", pt_cfg, pt_ref, env, logs).start()
  assert ref.wait() == 0, ref.log()[-3000:]
  kills = {}
  killed = kills["pretrain"] = _run_with_kills(_Stage("pretrain", pt_cfg, pt, env, logs), rng,
                                               KILLS["pretrain"], ["write", "step"])
  assert len(killed) == KILLS["pretrain"] and "write" in killed, killed
  want, _ = _losses(pt_ref)
  assert [s for s, _ in want] == list(range(1, PRETRAIN["total_steps"] + 1))
  assert _losses(pt) == _losses(pt_ref)

  # ---- fine-tuning from the (uninterrupted) pre-training run
  ft_cfg = _config_file(os.path.join(cfg, "ft.py"), "tiny_finetune_config",
                        dict(FINETUNE, init_from=pt_ref))
  ref = _Stage("finetune", ft_cfg, ft_ref, env, logs).start()
  assert ref.wait() == 0, ref.log()[-3000:]
  killed = kills["finetune"] = _run_with_kills(_Stage("finetune", ft_cfg, ft, env, logs), rng,
                                               KILLS["finetune"], ["write", "step"])
  assert len(killed) == KILLS["finetune"] and "write" in killed, killed
  want, want_val = _losses(ft_ref)
  assert len(want) == FINETUNE["total_steps"] and [v["step"] for v in want_val] == [4, 8, 12, 14]
  assert _losses(ft) == (want, want_val)
  assert _test_results(ft) == _test_results(ft_ref)  # the test at the end of training
  with open(os.path.join(ft_ref, "summary.json")) as f:
    ref_summary = json.load(f)
  with open(os.path.join(ft, "summary.json")) as f:
    summary = json.load(f)
  assert (summary["best_step"], summary["best_val_top1"]) == (ref_summary["best_step"],
                                                              ref_summary["best_val_top1"])

  # ---- the multi-view test of the fine-tuned run, on its own (eval_only), killed twice
  for report in glob.glob(os.path.join(ft, "test_step*")):
    shutil.rmtree(report)
  test = _Stage("test", ft_cfg, ft, env, logs, extra=["--config.eval_only=True"])
  killed = kills["test"] = _run_with_kills(test, rng, KILLS["test"], ["test"])
  assert len(killed) == KILLS["test"], killed
  assert _test_results(ft) == _test_results(ft_ref)

  # ---- distillation: the student from the pre-training run, the fine-tuned run its teacher
  dl_ref, dl = str(tmp_path / "dl_ref"), str(tmp_path / "dl")
  dl_cfg = _config_file(os.path.join(cfg, "dl.py"), "tiny_finetune_config",
                        dict(DISTILL, init_from=pt_ref, **{"distill.teacher_from": ft_ref}))
  ref = _Stage("distill", dl_cfg, dl_ref, env, logs).start()
  assert ref.wait() == 0, ref.log()[-3000:]
  killed = kills["distill"] = _run_with_kills(_Stage("distill", dl_cfg, dl, env, logs), rng,
                                              KILLS["distill"], ["write", "step"])
  assert len(killed) == KILLS["distill"], killed
  want, want_val = _losses(dl_ref)
  assert len(want) == DISTILL["total_steps"] and [v["step"] for v in want_val] == [4, 8]
  assert _losses(dl) == (want, want_val)
  print("kills:", kills)  # shown with pytest -s
  assert sum(map(len, kills.values())) >= 13


# 8 steps leave room for 3 kills of 1 to 2 steps each before the run ends; the test's time is
# its five processes' starts (JAX, the cached programs), not the steps.
DETECT = dict(total_steps=8, warmup_steps=1, checkpoint_every=1, log_every=1,
              keep_checkpoints=2, async_checkpoint=True, **{"eval.every_steps": 4})


def test_sigkill_during_detection_resumes_bit_identically(tmp_path):
  """The detection stage (AVA keyframe shards of the synthetic set, colour jitter and box
  jitter drawn per step) killed 3 times: the same losses, frame mAPs and detections CSV."""
  from tests.helpers import detect_data_overrides, synthetic_ava_shards
  rng = random.Random(SEED + 20)
  # one scene a movie at 32x48: 3 training keyframes, 2 held-out ones (one is excluded)
  p = synthetic_ava_shards(str(tmp_path / "ava"), train_movies=1, val_movies=1, scenes=1,
                           height=32, width=48)
  cache = os.environ.get("VMAE2_TEST_JAX_CACHE") or str(tmp_path / "jax_cache")
  env, logs = _env(cache), str(tmp_path / "logs")
  os.makedirs(logs)
  cfg = _config_file(str(tmp_path / "det.py"), "tiny_detect_config",
                     dict(DETECT, **detect_data_overrides(p)))
  ref_dir, run_dir = str(tmp_path / "det_ref"), str(tmp_path / "det")
  ref = _Stage("detect", cfg, ref_dir, env, logs).start()
  assert ref.wait() == 0, ref.log()[-3000:]
  killed = _run_with_kills(_Stage("detect", cfg, run_dir, env, logs), rng, 3, ["write", "step"])
  assert len(killed) == 3, killed
  want, want_val = _losses(ref_dir)
  assert [s for s, _ in want] == list(range(1, DETECT["total_steps"] + 1))
  assert [v["step"] for v in want_val] == [4, 8] and "val_map" in want_val[0]
  assert _losses(run_dir) == (want, want_val)
  csv = "test_step8_detections.csv"
  with open(os.path.join(ref_dir, csv)) as a, open(os.path.join(run_dir, csv)) as b:
    assert a.read() == b.read()
