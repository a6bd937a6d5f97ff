"""Entry point of every stage: `python -m vmae2_jax.main --config=CONFIG --workdir=DIR`.

config.stage picks the stage (pretrain, postpretrain, finetune, distill, detect); config fields
can be overridden on the command line (--config.batch_size=8). A run resumes
automatically from the latest checkpoint in --workdir; --config.eval_only=True
runs the stage's final evaluation (the multi-view test) without training.

Bad input ends in one line on stderr, `error: ...`, and exit status 1, never
a traceback (docs/faults.md lists every fault tried): an unknown flag or
config field (with the fields that exist), a value that does not parse, a
missing config file, and everything the start-up checks refuse (config
values, workdir, init_from, checkpoints, data files and records).
"""

from __future__ import annotations

import difflib
import os
import sys

from absl import app, flags, logging
from ml_collections import config_dict, config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and TensorBoard events.")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(message: str) -> None:
  """`error: message` on stderr (also in the absl log file, when there is one); exit 1."""
  handler = logging.get_absl_handler().python_handler
  if getattr(handler, "stream", sys.stderr) not in (sys.stderr, sys.__stderr__):
    logging.error("%s", message)
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


# ------------------------------------------------------------ command-line errors
def _flag_args(argv: list[str], name: str) -> list[tuple[str, str]]:
  """(flag, value) of every --name=value / --name value / --name.x=... in argv."""
  out = []
  for i, arg in enumerate(argv[1:], 1):
    if not arg.startswith("--" + name):
      continue
    flag, eq, value = arg[2:].partition("=")
    if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
      value = argv[i + 1]
    out.append((flag, value))
  return out


def _config_file(argv: list[str]) -> str | None:
  files = [v for f, v in _flag_args(argv, "config") if f == "config"]
  return files[-1] if files else None


def _load_config(spec: str):
  """get_config() of `FILE[:ARG]` as config_flags loads it (None when it cannot)."""
  import runpy
  path, _, arg = spec.partition(":")
  try:
    module = runpy.run_path(path)
    return module["get_config"](*([arg] if arg else []))
  except Exception:  # noqa: BLE001 - diagnosis only; the original error is reported
    return None


def _unknown_field(argv: list[str]) -> str | None:
  """The message for the first --config.X whose field X does not exist, or None."""
  spec = _config_file(argv)
  config = _load_config(spec) if spec else None
  if config is None:
    return None
  for flag, _ in _flag_args(argv, "config."):
    path = flag[len("config."):]
    node, done = config, []
    for part in path.split("."):
      if isinstance(node, config_dict.ConfigDict) and part in node:
        node = node[part]
        done.append(part)
        continue
      parent = "config" + "".join(f".{p}" for p in done)
      if not isinstance(node, config_dict.ConfigDict):
        return (f"--config.{path}: {parent} is a {type(node).__name__} "
                f"({node!r}), not a section with fields")
      fields = sorted(node.keys())
      close = difflib.get_close_matches(part, fields, n=1)
      hint = f"did you mean {parent}.{close[0]}? " if close else ""
      return (f"--config.{path}: {parent} has no field {part!r} ({hint}"
              f"{parent} has: {', '.join(fields)})")
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every command-line mistake reported in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(_config_file_error(argv, str(e)) or _one_line(e))
  except (KeyError, AttributeError, TypeError) as e:  # ml_collections: an override of no field
    message = _unknown_field(argv)
    if message is None and isinstance(e, TypeError):
      raise  # e.g. a config file's own bug: its traceback is the useful report
    _fail(message or f"cannot apply a --config override: {_one_line(e)}")
  except config_flags.config_flags.UnsupportedOperationError as e:
    _fail(_one_line(e))
  except OSError as e:  # an override given while the config file itself failed to load
    _fail(_config_load_error(argv, e))
  return argv  # not reached


def _config_file_error(argv: list[str], text: str) -> str | None:
  """A config file's get_config(arg) that raised (e.g. an unknown `FILE:ARG`): ml_collections
  wraps its traceback into the flag error; its last line is the message."""
  if "Error whilst parsing config file" not in text or "Traceback" not in text:
    return None
  last = text.strip().splitlines()[-1]
  kind, _, message = last.partition(": ")
  if not message or kind in ("SyntaxError", "ImportError", "ModuleNotFoundError",
                             "NameError", "AttributeError", "TypeError"):
    return None  # the config file's own bug: keep the whole report
  spec = _config_file(argv) or ""
  if os.path.basename(spec.partition(":")[0]) in message:  # it names itself already
    return message
  return f"--config={spec}: {message}"


def _config_load_error(argv: list[str], e: BaseException) -> str:
  spec = _config_file(argv) or ""
  path = spec.partition(":")[0]
  if path and not os.path.exists(path):
    return f"--config={spec}: no such file"
  return f"--config={spec}: cannot load it ({_one_line(e)})"


def _quiet_closed_loop_callbacks() -> None:
  """A checkpoint read that fails inside TensorStore (a damaged init_from or resume) leaves
  its pending callbacks to fire on Orbax's closed event loop, each printing a 5-line
  'Event loop is closed' report after the one-line error. Those, and only those, are
  dropped."""
  previous = sys.unraisablehook

  def hook(unraisable):
    if (isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == "Event loop is closed"):
      return
    previous(unraisable)

  sys.unraisablehook = hook

  # The same reads' futures that nobody awaits any more are reported by asyncio when
  # collected ("Future exception was never retrieved"), after the one-line error.
  import logging as pylogging

  class _Unretrieved(pylogging.Filter):
    def filter(self, record):
      exc = record.exc_info[1] if record.exc_info else None
      return not (record.getMessage().startswith("Future exception was never retrieved")
                  and "tensorstore_spec" in str(exc))

  pylogging.getLogger("asyncio").addFilter(_Unretrieved())


def _quiet_library_info_logs() -> None:
  """Orbax logs every file it writes at INFO, and JAX tells at INFO that a host without
  TPUs has no TPU backend; keep their warnings, drop the chatter."""
  import logging as pylogging

  class _Filter(pylogging.Filter):
    def filter(self, record):
      if record.levelno >= pylogging.WARNING:
        return True
      if "/orbax/" in record.pathname:
        return False
      return not (record.pathname.endswith("xla_bridge.py")
                  and "Unable to initialize backend" in record.getMessage())

  logging.get_absl_handler().addFilter(_Filter())


def _config_line(argv: list[str]) -> str:
  """The config file and the command line's overrides, one line (the resolved config is
  WORKDIR/config.json, and the log's with --v=1)."""
  path, overrides = "", []
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1]
    elif arg.startswith("--config."):
      overrides.append(arg[len("--config."):])
  text = f"config {path}" + (f" with {', '.join(overrides)}" if overrides else "")
  return text + "; resolved in WORKDIR/config.json"


def _command_line_source_wins(config, argv: list[str]) -> None:
  """--config.data.sources on a config file that names data.train_path (configs/demo.py)
  replaces it, and the other way round: the command line names the training data."""
  given = {flag[len("config."):] for flag, _ in _flag_args(argv, "config.")}
  d = config.data
  for new, old, empty in (("data.sources", "train_path", ""), ("data.train_path", "sources", ())):
    if new in given and ("data." + old) not in given and d[old] and d[new.split(".")[1]]:
      logging.info("--config.%s replaces the config file's data.%s=%r", new, old, d[old])
      d[old] = empty


def _user_errors() -> tuple[type[BaseException], ...]:
  """Exceptions that are the user's input, not a bug: reported in one line, no traceback."""
  from vmae2_jax.checkpointing.manager import CheckpointError
  from vmae2_jax.conversion.report import ConversionError
  from vmae2_jax.data.pipelines import LabelError
  from vmae2_jax.data.shards import CorruptRecordError, ShardFileError
  from vmae2_jax.training.config_checks import ConfigError
  from vmae2_jax.training.nonfinite import NonFiniteLossError
  from vmae2_jax.training.run_record import WorkdirError
  return (ConfigError, WorkdirError, NonFiniteLossError, ConversionError, CheckpointError,
          ShardFileError, CorruptRecordError, LabelError, FileNotFoundError)


def main(argv):
  del argv
  try:
    config = _CONFIG.value
    config.host_malloc  # noqa: B018 - a config file that failed to load raises here
  except OSError as e:
    _fail(_config_load_error(sys.argv, e))
  _quiet_library_info_logs()
  _quiet_closed_loop_callbacks()
  if config.compile_only and config.get("compile_topology"):
    # Compiled for a TPU (or GPU) target on this host: JAX itself stays on the CPU.
    from vmae2_jax.sharding.topologies import prepare_environment
    prepare_environment(config.compile_topology)
  from vmae2_jax.host_memory import tune_for_cpu_compute
  if tune_for_cpu_compute(config.host_malloc):  # before JAX starts threads
    logging.info("glibc malloc keeps freed memory (host_malloc=%s)", config.host_malloc)
  from vmae2_jax.sharding.distributed import maybe_initialize_distributed
  maybe_initialize_distributed(config.distributed)
  import jax

  from vmae2_jax.training.trainer import train
  user_errors = _user_errors()
  logging.info("JAX %s on %d %s devices (%d processes)", jax.__version__, jax.device_count(),
               jax.default_backend(), jax.process_count())
  logging.info("%s", _config_line(sys.argv))
  logging.vlog(1, "config:\n%s", config)
  _command_line_source_wins(config, sys.argv)
  try:
    if config.eval_only:  # the run's own config.json, with only the command line's fields
      from vmae2_jax.training.run_record import eval_only_config
      overridden = [flag[len("config."):] for flag, _ in _flag_args(sys.argv, "config.")]
      config = eval_only_config(_WORKDIR.value, config, overridden)
    if config.compile_only:
      from vmae2_jax.training import compile_only
      compile_only.run(config)
    else:
      train(config, _WORKDIR.value)
  except user_errors as e:
    _fail(str(e))


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
