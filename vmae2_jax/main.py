"""Entry point of every stage: `python -m vmae2_jax.main --config=CONFIG --workdir=DIR`.

config.stage picks the stage (pretrain, postpretrain, finetune); config fields
can be overridden on the command line (--config.batch_size=8). A run resumes
automatically from the latest checkpoint in --workdir; --config.eval_only=True
runs the stage's final evaluation (the multi-view test) without training.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and TensorBoard events.")
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_library_info_logs() -> None:
  """Orbax logs every file it writes at INFO; keep its warnings, drop the chatter."""
  import logging as pylogging

  class _Filter(pylogging.Filter):
    def filter(self, record):
      return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname

  logging.get_absl_handler().addFilter(_Filter())


def main(argv):
  del argv
  _quiet_library_info_logs()
  config = _CONFIG.value
  from vmae2_jax.host_memory import tune_for_cpu_compute
  if tune_for_cpu_compute(config.host_malloc):  # before JAX starts threads
    logging.info("glibc malloc keeps freed memory (host_malloc=%s)", config.host_malloc)
  from vmae2_jax.sharding.distributed import maybe_initialize_distributed
  maybe_initialize_distributed(config.distributed)
  import jax

  from vmae2_jax.conversion.report import ConversionError
  from vmae2_jax.training.config_checks import ConfigError
  from vmae2_jax.training.trainer import NonFiniteLossError, train
  logging.info("JAX %s on %d %s devices (%d processes)", jax.__version__, jax.device_count(),
               jax.default_backend(), jax.process_count())
  logging.info("config:\n%s", config)
  try:
    if config.compile_only:
      from vmae2_jax.training import compile_only
      compile_only.run(config)
    else:
      train(config, _WORKDIR.value)
  except (ConfigError, NonFiniteLossError, ConversionError, FileNotFoundError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
