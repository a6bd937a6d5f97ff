"""WORKDIR's record of a run, the resume compatibility check, and clean failed starts.

Files (process 0 writes them once a start has succeeded: setup, restore or
init_from; a start that fails removes what it created):
  config.json  the config the run continues with (rewritten by each accepted start).
  model.json   what the run's model is (trainer.model_meta).
  run.json     {"history": [{"event": "start" | "resume", "step", "time", "mesh",
               "devices", "processes", "changes": {field: [saved, now]}}, ...]}.

A resume compares the config with config.json field by field. Fields that
change how, not what, is trained pass silently (COMPATIBLE below: logging,
checkpointing, evaluation, execution choices, fields only a fresh start reads).
Every other difference (model, masking, batch, data and its order, seed, stage,
schedule and optimizer, mixup, and the number of processes, which splits the
data) is refused with the differences listed, unless
config.allow_config_change=True: then they are logged, with the lr the
schedule jumps between, and kept in run.json. A changed mesh or device count
is logged (the state is re-sharded on restore; the last bits of the losses may
differ) but not refused.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os

import jax
from absl import logging

from configs.common import base_config, config_from_json
from vmae2_jax import paths
from vmae2_jax.training.config_checks import ConfigError
from vmae2_jax.training.schedules import make_schedule

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"

# Field names, or prefixes ending in ".", that a resume may change freely.
COMPATIBLE = (
    "log_every", "checkpoint_every", "keep_checkpoints", "keep_period", "async_checkpoint",
    "stop_after", "eval_only", "compile_only", "compile_topology", "eval.", "reconstruction.",
    "host_malloc",
    "distributed.", "mesh.", "sharding_rules",
    "init_from", "init_label_map", "init_fresh_head",        # read by a fresh start only
    "distill.teacher_eval",
    "nonfinite", "checkpoint_fallback", "allow_config_change",
    "model.attention", "model.cpu_kernels", "model.remat", "model.scan_layers",  # same params
    "data.val_path", "data.test_num_segment", "data.test_num_crop",               # evaluation
    "data.tfds_validation_split",
    "data.read_threads", "data.num_workers", "data.tune_malloc", "data.skip_corrupt",
    # detection: what the test scores (boxes, frame buckets) and against what; no train step
    # reads these (model.json is rewritten at each start, so predict sees the new widen)
    "detect.test_boxes", "detect.proposals", "detect.person_score", "detect.widen",
    "detect.eval_max_boxes", "detect.buckets", "detect.groundtruth", "detect.label_map",
    "detect.exclusions", "detect.top_k",
)
# What an eval_only run may not change (the model and what its head was trained on);
# everything else (views, sampling, batch, the test set) is the test's own choice.
EVAL_FIXED = ("stage", "model.", "data.frames", "data.image_size", "data.train_path",
              "data.class_names", "data.source", "data.tfds_name")
# Fields whose change moves the lr schedule: the message shows the lr before and after.
_SCHEDULE = ("batch_size", "epochs", "total_steps", "warmup_steps", "optim.base_lr",
             "optim.min_lr", "optim.warmup_epochs", "data.num_videos")


class WorkdirError(ValueError):
  """--workdir cannot be created or written."""


class ConfigChangeError(ConfigError):
  """A resume with a config that would make a different run than the one in WORKDIR."""


def _matches(field: str, names) -> bool:
  return any(field == c or (c.endswith(".") and field.startswith(c)) for c in names)


def compatible(field: str, eval_only: bool = False) -> bool:
  if eval_only:
    return not _matches(field, EVAL_FIXED) or _matches(field, COMPATIBLE)
  return _matches(field, COMPATIBLE)


# ---------------------------------------------------------------- a clean start
@contextlib.contextmanager
def starting(workdir: str):
  """Creates WORKDIR if needed and checks it can be written (a bucket too: missing, no
  permission or no credentials fail here, before compilation); if the body fails, removes
  what this start created (never what was there before). Process 0 only."""
  workdir = paths.resolve(workdir)
  try:  # every process: a workdir Orbax cannot reach would fail at the first checkpoint
    paths.check_native(workdir, "--workdir", "its checkpoints are written by Orbax")
  except paths.UnreachableURLError as e:
    raise WorkdirError(str(e)) from None
  if jax.process_index() != 0:
    yield
    return
  try:
    created = _topmost_missing(workdir)
  except Exception as e:  # noqa: BLE001  a bucket that cannot even be listed
    raise WorkdirError(f"--workdir={workdir}: cannot create or write it "
                       f"({paths.reason(e, workdir)})") from None
  try:
    paths.check_writable(workdir, "--workdir")
  except paths.PathAccessError as e:
    if created and paths.isdir(created):
      paths.rmtree(created)
    raise WorkdirError(str(e)) from None
  before = None if created else set(paths.listdir(workdir))
  try:
    yield
  except BaseException:
    if created:
      paths.rmtree(created)
    else:
      for name in set(paths.listdir(workdir)) - before:
        path = paths.join(workdir, name)
        paths.rmtree(path) if paths.isdir(path) else paths.remove(path)
    raise


def _topmost_missing(path: str) -> str | None:
  """The highest directory on `path` that does not exist yet (None: path exists). In a
  bucket only `path` itself counts (an object store has no empty folders)."""
  if paths.is_remote(path):
    return None if paths.exists(path) else path
  missing = None
  while not paths.exists(path) and not os.path.islink(path):
    missing, parent = path, os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


# ---------------------------------------------------------------- the resume check
def check_resume(workdir: str, exp, step: int) -> dict:
  """{field: [saved, now]} of accepted incompatible changes; raises ConfigChangeError."""
  path = paths.join(workdir, CONFIG_FILE)
  config = exp.config
  if not paths.exists(path):
    logging.warning("%s: no %s to compare this config with; resuming step %d", workdir,
                    CONFIG_FILE, step)
    return {}
  try:
    saved = _flat(json.loads(paths.read_text(path)))
  except (OSError, ValueError) as e:
    if config.allow_config_change:
      logging.warning("%s unreadable (%s); resuming anyway (allow_config_change)", path, e)
      return {}
    raise ConfigChangeError(f"{path}: unreadable ({e}); cannot check the resume of step {step} "
                            "(rerun with --config.allow_config_change=True to resume anyway)")
  now = _flat(json.loads(config.to_json_best_effort()))
  defaults = _flat(json.loads(base_config().to_json_best_effort()))
  changes = {}
  for field, value in now.items():
    before = saved.get(field, defaults.get(field, value))  # a field added since: its default
    if before != value and not compatible(field, config.eval_only):
      changes[field] = [before, value]
  if not config.eval_only:  # a test splits no training data: any mesh or process count
    processes = _last_entry(workdir).get("processes")
    if processes is not None and processes != jax.process_count():
      changes["processes"] = [processes, jax.process_count()]
    _note_mesh_change(workdir, exp)
  if not changes:
    return {}
  lines = [f"  {field}: {_show(a)} -> {_show(b)}" for field, (a, b) in changes.items()]
  lr = _lr_jump(path, exp, step) if any(f in _SCHEDULE for f in changes) else None
  if lr:
    lines.append(f"  lr at step {step}: {lr[0]:.4g} -> {lr[1]:.4g}")
  if config.eval_only and not config.allow_config_change:
    raise ConfigChangeError(
        f"{workdir} holds a model of step {step} made with another config; eval_only tests it "
        "as it was made (leave these off the command line, or use another --workdir):\n"
        + "\n".join(lines))
  if not config.allow_config_change:
    raise ConfigChangeError(
        f"{workdir} holds a run at step {step} with another config (rerun with "
        "--config.allow_config_change=True to resume with it anyway, or use another "
        "--workdir):\n" + "\n".join(lines))
  logging.warning("resuming step %d with a changed config (allow_config_change):\n%s", step,
                  "\n".join(lines))
  return changes


# ---------------------------------------------------------------- eval_only
def eval_only_config(workdir: str, config, overridden: list[str]):
  """The config an eval_only run of WORKDIR tests with: the run's own config.json (its
  clip shape, sampling, views, normalisation, classes) with only the fields given on the
  command line (``overridden``: dotted paths) taken from ``config``. Without a config.json
  (a fresh workdir testing an init_from model), ``config`` itself."""
  path = paths.join(workdir, CONFIG_FILE)
  if not paths.exists(path):
    return config
  try:
    saved = config_from_json(path)
  except (OSError, ValueError) as e:
    raise ConfigChangeError(f"{path}: unreadable ({e}); eval_only reads the run's config "
                            "from it") from None
  for field in overridden:
    parts = field.split(".")
    source, target = config, saved
    for part in parts[:-1]:
      source, target = source[part], target[part]
    target[parts[-1]] = source[parts[-1]]
  saved.eval_only = True
  logging.info("eval_only: the run's %s%s", path,
               f" with {', '.join(overridden)} from the command line" if overridden else "")
  return saved


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _show(value) -> str:
  return json.dumps(value)


def _lr_jump(saved_path: str, exp, step: int) -> tuple[float, float] | None:
  """(lr the saved config's schedule gives at `step`, lr this config's gives)."""
  try:
    saved = config_from_json(saved_path)
    per_epoch = exp.schedule.steps_per_epoch
    num_videos = saved.data.num_videos or per_epoch * exp.config.batch_size
    old = float(make_schedule(saved, num_videos)(step))
  except (ValueError, KeyError, TypeError):
    return None
  new = float(exp.schedule(step))
  return (old, new) if old != new else None


def _last_entry(workdir: str) -> dict:
  history = _read_run(workdir).get("history") or [{}]
  return history[-1]


def _note_mesh_change(workdir: str, exp) -> None:
  last = _last_entry(workdir)
  now = _where(exp)
  if last.get("devices") not in (None, now["devices"]) or last.get("mesh") not in (None,
                                                                                   now["mesh"]):
    logging.warning("resuming on mesh %s (%d devices); the run was on %s (%s devices): the state "
                    "is re-sharded and losses may differ in the last bits", now["mesh"],
                    now["devices"], last.get("mesh"), last.get("devices"))


# ---------------------------------------------------------------- the files
def _where(exp) -> dict:
  return {"mesh": {k: int(v) for k, v in exp.mesh.shape.items()}, "devices": jax.device_count(),
          "processes": jax.process_count(), "platform": jax.devices()[0].platform}


def _read_run(workdir: str) -> dict:
  path = paths.join(workdir, RUN_FILE)
  if not paths.exists(path):
    return {}
  try:
    return json.loads(paths.read_text(path))
  except (OSError, ValueError):
    logging.warning("%s unreadable: starting its history afresh", path)
    return {}


def record(workdir: str, exp, model_meta: dict, *, step: int, resumed: bool,
           changes: dict, extra: dict | None = None) -> None:
  """config.json, model.json and a run.json entry for this start (process 0).

  `extra` joins the entry: {"teacher": {"from", "sha256", ...}} of a distillation. A resume
  whose teacher weights hash differently from the last start's is refused unless
  config.allow_config_change (then logged and recorded under "changes").
  """
  if resumed and extra and "teacher" in extra:
    _check_teacher(workdir, exp, extra["teacher"], step, changes)
  if jax.process_index() != 0:
    return
  from vmae2_jax.checkpointing import write_meta
  paths.write_text(paths.join(workdir, CONFIG_FILE),
                   exp.config.to_json_best_effort(indent=2, sort_keys=True))
  write_meta(workdir, model_meta)
  run = _read_run(workdir)
  entry = {"event": "resume" if resumed else "start", "step": step,
           "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           **_where(exp)}
  if changes:
    entry["changes"] = changes
  entry.update(extra or {})
  run["history"] = (run.get("history") or []) + [entry]
  paths.write_text(paths.join(workdir, RUN_FILE), json.dumps(run, indent=2))


def _check_teacher(workdir: str, exp, teacher: dict, step: int, changes: dict) -> None:
  before = next((e["teacher"] for e in reversed(_read_run(workdir).get("history") or [])
                 if "teacher" in e), None)
  if before is None or before.get("sha256") == teacher["sha256"]:
    return
  text = (f"the teacher's weights changed since the last start "
          f"({before.get('from')} sha256 {str(before.get('sha256'))[:12]}... -> "
          f"{teacher['from']} {teacher['sha256'][:12]}...)")
  if not exp.config.allow_config_change:
    raise ConfigChangeError(f"{workdir} holds a distillation at step {step} from another "
                            f"teacher: {text} (rerun with --config.allow_config_change=True "
                            "to resume with it anyway)")
  logging.warning("resuming step %d with %s (allow_config_change)", step, text)
  changes["distill.teacher_sha256"] = [before.get("sha256"), teacher["sha256"]]

