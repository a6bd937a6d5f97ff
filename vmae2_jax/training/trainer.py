"""Every stage, top to bottom: setup -> run files -> init, init_from or restore -> step ->
loop (log, validate, keep the best, checkpoint) -> the stage's finish (reconstruction
picture or multi-view test) -> summary.

Faults (docs/faults.md): a failed start leaves nothing it created (run_record);
a non-finite step stops naming the last good checkpoint or is skipped
(nonfinite); SIGTERM saves the current step and returns (preemption); a
damaged checkpoint is named or, on request, the previous one restored
(checkpointing.manager); a resume with another config is refused (run_record).
"""

from __future__ import annotations

import dataclasses
import json
import time

import jax
from absl import logging

from vmae2_jax import paths
from vmae2_jax.checkpointing import Checkpointer
from vmae2_jax.checkpointing.manager import CheckpointError
from vmae2_jax.conversion.init_from import apply_init_from
from vmae2_jax.conversion.report import ConversionError
from vmae2_jax.models import get_variant
from vmae2_jax.training import preemption, run_record
from vmae2_jax.training.experiment import Experiment, setup
from vmae2_jax.training.metrics_log import MetricsLog
from vmae2_jax.training.nonfinite import Guard, NonFiniteLossError
from vmae2_jax.training.state import TrainState

MODEL_META_VERSION = 1

__all__ = ["NonFiniteLossError", "train", "model_meta"]


def train(config, workdir: str) -> dict:
  """Runs, resumes or (config.eval_only) evaluates a run of any stage; returns a summary.

  A SIGTERM, from start-up on, ends the loop after the current step, saved: the
  summary then has "preempted_at" (that step), and the same call later resumes
  from it. An evaluation under way when it comes finishes first.
  """
  # SIGTERM is a request from the very start (compilation, restore) to the end: the loop
  # saves at its next step and stops; an evaluation under way (the final or eval_only
  # multi-view test) finishes first.
  with preemption.watch() as sigterm:
    return _run(config, workdir, sigterm)


def _run(config, workdir: str, sigterm: preemption.Watch) -> dict:
  """train() inside the SIGTERM watch."""
  workdir = paths.resolve(workdir)  # a bucket URL stays one (os.path.abspath would not)
  # ------------------------------------------------------------------ setup
  exp = setup(config)  # a bad config fails here, before anything is written
  task = exp.task
  for line in exp.describe():
    logging.info("%s", line)

  # ------------------------------------------------- init, init_from or restore
  with run_record.starting(workdir):  # a failed start removes what it created
    # the data first: a bad shard fails before Orbax starts its threads
    data_iter = None if config.eval_only else task.train_iterator(jax.process_index(),
                                                                  jax.process_count())
    ckpt = Checkpointer(paths.join(workdir, "checkpoints"), save_every=config.checkpoint_every,
                        # + 1: the newest step stays besides until the loss computed
                        # from it is read finite (see nonfinite.py)
                        keep=config.keep_checkpoints + 1 if config.keep_checkpoints else None,
                        keep_period=config.keep_period,
                        async_save=config.async_checkpoint)
    try:
      latest = ckpt.latest_step()
      if latest is not None:
        _check_class_names(workdir, exp)
      # eval_only compares too: a model field changed on the command line cannot restore
      changes = {} if latest is None else run_record.check_resume(workdir, exp, latest)
      restored = None if latest is None else ckpt.restore_latest(
          exp.abstract_state, data=not config.eval_only, fallback=config.checkpoint_fallback)
      skipped, meta = 0, {}
      if restored is not None:
        step, state, data_state, meta = restored
        skipped = int(meta.get("skipped_updates", 0))
        if data_state and data_iter is not None:
          data_iter.set_state(data_state)
        logging.info("resumed from step %d in %s", step, ckpt.directory)
      else:
        state = exp.init_state()
        if config.init_from:
          state = _apply_init_from(exp, state)
      step = int(jax.device_get(state.step))
      # Frozen models (a distillation teacher) are reloaded at every start, never checkpointed.
      frozen, frozen_record = ((), {}) if config.eval_only else exp.load_frozen()
      if not (config.eval_only and restored is not None):  # an evaluation leaves the record be
        run_record.record(workdir, exp, model_meta(exp), step=step, resumed=restored is not None,
                          changes=changes, extra=frozen_record)
    except BaseException:
      ckpt.close()  # Orbax's threads end before the failed start's files are removed
      raise
  best = _BestKeeper(workdir, task.best_metric)

  if config.eval_only:  # the stage's final evaluation of this model, nothing trained
    ckpt.close()
    results = task.finish(exp, state.params, workdir, step)
    _said_sigterm_waited(sigterm)
    return _write_summary(workdir, {"final_step": step, "steps_run": 0, **results})

  # ---------------------------------------------------------------- the loop
  step_fn = exp.jit_train_step()
  total = exp.schedule.total_steps
  log = MetricsLog(workdir, total, exp.layout.clips)
  guard = Guard(ckpt, skipped)
  eval_every = (config.eval.every_steps or exp.schedule.steps_per_epoch
                if config.eval.every_steps >= 0 else 0)
  first_step = step
  # stop_after > 0 ends this run early (e.g. a job's time slot); it resumes later.
  last = min(total, step + config.stop_after) if config.stop_after else total
  preempted = False
  t_start = time.perf_counter()
  pending = None  # (step, metrics on device) of the step dispatched last

  def check_and_log(done_step, device_metrics):
    metrics = jax.device_get(device_metrics)
    if guard.accept(done_step, metrics):  # raises NonFiniteLossError (stop mode)
      log.add({k: v for k, v in metrics.items() if k != "skipped"})
    if done_step % config.log_every == 0 or done_step == last:
      log.flush(done_step, {"skipped_updates": guard.skipped} if guard.skipped else None)
      if guard.skipped:
        logging.warning("skipped %d non-finite updates so far", guard.skipped)

  def validate(at_step):
    results = task.evaluate(exp, state.params)
    if results:
      log.report(at_step, results, "val")
      best.update(at_step, results, state.params, exp)

  if meta.get("validate_pending"):  # preempted at a validation step: validate it now
    validate(step)
  frozen_results = {}
  if frozen and restored is None:  # the teacher's own accuracy, once, for reference
    frozen_results = task.evaluate_frozen(exp, *frozen) or {}
    if frozen_results:
      log.report(step, frozen_results, "teacher")

  if step < last:  # the first step waits for its compilation: say so before the silence
    logging.info("compiling the training step and reading the first batch; the next line comes "
                 "at step %d", min(last, (step // config.log_every + 1) * config.log_every))
  while step < last:
    batch = exp.global_batch(next(data_iter))
    state, metrics = step_fn(state, batch, *frozen)
    step += 1
    # Read the previous step's metrics only now, so the host loads and ships
    # the next batch while the device still runs this one.
    if pending is not None:
      check_and_log(*pending)
    pending = (step, metrics)
    if step < last and (sigterm.requested or ckpt.reached_preemption(step)):
      logging.warning("preemption notice: saving step %d, then stopping", step)
      last, preempted = step, True  # this step is saved (forced) below, then the loop ends
    # A preempted run saves first; the resumed one validates this step (meta).
    due = bool(task.best_metric and eval_every and (step % eval_every == 0 or step == total))
    if ckpt.should_save(step) or step == last or due:
      check_and_log(*pending)  # never save or validate a state whose loss was not finite
      pending = None
    if due and not preempted:
      validate(step)
    if ckpt.should_save(step) or step == last:
      ckpt.save(step, state, data_iter.get_state(),
                {"step": step, "variant": config.model.variant, "stage": config.stage,
                 "skipped_updates": guard.skipped, "validate_pending": due and preempted},
                force=step == last)
  ckpt.close()  # waits for the last save, also when a second SIGTERM came meanwhile
  best.close()
  log.close()

  # ------------------------------------------------------- the stage's finish
  summary = {"history": log.history, "evaluations": log.evaluations,
             "steps_run": step - first_step, "final_step": step,
             "seconds": time.perf_counter() - t_start, **best.summary(), **frozen_results}
  if guard.skipped:
    summary["skipped_updates"] = guard.skipped
  last_eval = log.evaluations[-1] if log.evaluations else {}
  if "val_one_class" in last_eval:  # said in the log at each validation; kept with the run
    summary["val_one_class"] = f"{last_eval['val_one_class']} (step {last_eval['step']})"
  if preempted:
    summary["preempted_at"] = step
    logging.warning("preempted: step %d saved in %s; the same command resumes from step %d",
                    step, ckpt.directory, step)
    if sigterm.signals > 1:
      logging.warning("%d SIGTERMs arrived while stopping: the save was completed regardless",
                      sigterm.signals)
  elif step == total:  # not after a stop_after time slot: the run is not over
    summary.update(task.finish(exp, state.params, workdir, step))
    _said_sigterm_waited(sigterm)
  return _write_summary(workdir, summary)


def _said_sigterm_waited(sigterm: preemption.Watch) -> None:
  """A SIGTERM during the final (or eval_only) evaluation let it finish: say so."""
  if sigterm.requested:
    logging.warning("SIGTERM: the final evaluation was finished first; nothing to save "
                    "(the model's step is on disk)")


# --------------------------------------------------------------------- helpers
class _BestKeeper:
  """WORKDIR/best: the parameters of the best validation step by `metric` (higher is better).

  An Orbax checkpoint directory holding one step ({"params"} and a meta item
  with the metrics), so init_from, convert and predict read it like any run
  step. The best value survives restarts through that meta.
  """

  def __init__(self, workdir: str, metric: str | None):
    self.metric = metric
    self.value, self.step = float("-inf"), None
    self._ckpt = None
    if metric is None:
      return
    self._ckpt = Checkpointer(paths.join(workdir, "best"), save_every=1, keep=1,
                              async_save=False)
    latest = self._ckpt.latest_step()
    if latest is not None:
      meta_file = paths.join(self._ckpt.directory, str(latest), "meta", "metadata")
      if paths.exists(meta_file):
        self.value = float(json.loads(paths.read_text(meta_file)).get(metric, float("-inf")))
        self.step = latest

  def update(self, step: int, results: dict, params, exp: Experiment) -> None:
    value = results.get(self.metric)
    if self._ckpt is None or value is None or not value > self.value:
      return
    self.value, self.step = float(value), step
    self._ckpt.save(step, {"params": params}, None,
                    {"step": step, "stage": exp.config.stage, **results}, force=True)
    logging.info("best %s %.4g at step %d: saved to %s", self.metric, value, step,
                 self._ckpt.directory)

  def summary(self) -> dict:
    if self.step is None:
      return {}
    return {f"best_{self.metric}": self.value, "best_step": self.step}

  def close(self) -> None:
    if self._ckpt is not None:
      self._ckpt.close()


def model_meta(exp: Experiment) -> dict:
  """WORKDIR/model.json: what the run's model is, for init_from, convert, predict, extract."""
  c = exp.config
  size = get_variant(c.model.variant)
  meta = {"kind": exp.task.kind, "stage": c.stage, "variant": c.model.variant,
          "size": dataclasses.asdict(size), "frames": c.data.frames,
          "image_size": c.data.image_size, "encoder_norm": exp.task.kind == "pretrain",
          "pixel_mean": list(c.model.pixel_mean), "pixel_std": list(c.model.pixel_std),
          "format_version": MODEL_META_VERSION, "layout": "run"}
  if exp.task.kind == "classifier":
    d = c.data
    meta.update(num_classes=exp.task.num_classes,
                class_names=list(exp.task.class_names) if exp.task.class_names else None,
                # the test protocol this model was trained for (predict uses it)
                test={"sampling": d.sampling, "sampling_rate": d.sampling_rate,
                      "test_num_segment": d.test_num_segment, "test_num_crop": d.test_num_crop})
  elif exp.task.kind == "detector":  # what predict --detect needs to score boxes on a frame
    meta.update(num_classes=exp.task.num_classes,
                class_names=list(exp.task.class_names) if exp.task.class_names else None,
                test={"sampling_rate": c.data.sampling_rate,
                      "short_side": c.detect.short_side, "widen": list(c.detect.widen)})
  return meta


def _write_summary(workdir: str, summary: dict) -> dict:
  if jax.process_index() == 0:
    history = summary.get("history", [])
    paths.write_text(paths.join(workdir, "summary.json"), json.dumps(
        {k: v for k, v in summary.items() if k not in ("history", "evaluations")} | {
            "last": history[-1] if history else None,
            "losses": [[h["step"], h["loss"]] for h in history if "loss" in h],
            "evaluations": summary.get("evaluations", [])},
        indent=2, default=float))
  return summary


def _apply_init_from(exp: Experiment, state: TrainState) -> TrainState:
  """Replaces freshly initialised parameters with a converted/previous model's (surgery).

  Every failure is one line naming config.init_from: a missing or incomplete
  source, a file inside it that cannot be read (named), or weights that do not
  fit the model (the mismatched keys with both shapes, and the source's variant).
  """
  c = exp.config
  try:
    params = apply_init_from(exp.host_params(state.params), c.init_from, exp.task.kind,
                             label_map=c.init_label_map or None, fresh_head=c.init_fresh_head,
                             class_names=exp.task.class_names)
  except (ConversionError, FileNotFoundError) as e:
    text = " ".join(str(e).split())
    if "does not fit the model" in text:  # what the source holds first: the useful part
      text = _variant_note(c) + text
    if c.init_from not in text and paths.resolve(c.init_from) not in text:
      text = f"config.init_from={c.init_from}: {text}"
    raise type(e)(text) from None
  except paths.UnreachableURLError as e:  # a model source of a scheme nothing reaches
    raise ConversionError(f"config.init_from={e}") from None
  except (CheckpointError, OSError, ValueError, KeyError) as e:  # Orbax / TensorStore reading
    raise ConversionError(f"config.init_from={c.init_from}: cannot read its weights "
                          f"({_read_error(e)})") from None
  params = jax.device_put(params, exp.state_sharding.params)
  logging.info("initialised parameters from %s", c.init_from)
  return state.replace(params=params)


def _check_class_names(workdir: str, exp: Experiment) -> None:
  """A resumed or re-evaluated classifier must see its data's classes in its head's order."""
  names = exp.task.class_names
  path = paths.join(workdir, "model.json")
  if not names or not paths.exists(path):
    return
  held = json.loads(paths.read_text(path)).get("class_names")
  if not held or len(held) != len(names):
    return
  from vmae2_jax.data.kinetics import name_differences
  diff = name_differences(list(names), held)
  if diff:
    raise ConversionError(f"{workdir}: the data's classes are not the model's (data vs "
                          f"{path}): {diff}; evaluate or train on data in the model's order")


def _variant_note(config) -> str:
  """'it holds a Ti/16 pretrain model, config.model.variant='mu/16': ' when known."""
  from vmae2_jax.checkpointing import model_io
  try:
    meta = model_io.read_source_meta(config.init_from)
  except (OSError, ValueError):
    return ""
  held = " ".join(str(meta[k]) for k in ("variant", "kind") if meta.get(k))
  return (f"it holds a {held} model, config.model.variant={config.model.variant!r}: "
          if held else "")


def _read_error(e: BaseException) -> str:
  """One line for an Orbax / TensorStore read error: the file it names last (the one that
  is damaged or missing) and TensorStore's reason, without its JSON spec."""
  import re
  text = " ".join(str(e).split())
  text = re.sub(r"\s*\[tensorstore_spec=.*$", "", text)
  files = re.findall(r'local file "([^"]+)"', text)
  status = re.match(r"([A-Z_]+): ", text)
  if files:
    reason = text[text.rindex(files[-1]) + len(files[-1]) + 1:].lstrip('": ')
    if not reason:
      reason = "missing" if status and status.group(1) == "NOT_FOUND" else "unreadable"
    return (f"{files[-1]}: {reason}"
            + (f" [{status.group(1)}]" if status else ""))
  return f"{type(e).__name__}: {_first_line(text)}"


def _first_line(text: str, limit: int = 300) -> str:
  line = text.strip().splitlines()[0] if text.strip() else ""
  return line if len(line) <= limit else line[:limit] + " ..."
