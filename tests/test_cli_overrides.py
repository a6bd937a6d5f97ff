"""Every `--config.X=V` override the documents show parses on the command line, as a user
would type it, and sets the field; a config error at start-up is one line."""

import glob
import os
import re
import shlex
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# docs/faults.md is left out: it shows bad overrides on purpose (tests/test_bad_input.py
# holds that each is refused in one line).
DOCS = ([os.path.join(ROOT, "README.md")]
        + sorted(p for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))
                 if os.path.basename(p) != "faults.md")
        + sorted(glob.glob(os.path.join(ROOT, "launch", "*"))))
# Placeholders the documents use where a user puts a number of their own.
PLACEHOLDERS = {"<slices>": "2", "<nodes>": "2", "=N": "=2", "=K": "=7"}
OVERRIDE = re.compile(r"--config\.([A-Za-z0-9_.]+)=('[^']*'|\"[^\"]*\"|\S+)")


def documented_overrides():
  found = {}
  for path in DOCS:
    if os.path.isdir(path):
      continue
    text = open(path, encoding="utf-8").read()
    for m in OVERRIDE.finditer(text):
      arg = m.group(0).rstrip("`),.;")
      for k, v in PLACEHOLDERS.items():
        arg = arg.replace(k, v)
      found.setdefault(arg, os.path.relpath(path, ROOT))
  return sorted(found.items())


def _parse(config_file: str, arg: str):
  """The config main.py would get for `--config=config_file arg` (argv as a shell splits it)."""
  argv = ["prog", f"--config={config_file}"] + shlex.split(arg)
  fv = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                           sys_argv=argv)
  fv(argv)
  return holder.value


def test_documents_show_overrides():
  assert len(documented_overrides()) >= 10


@pytest.mark.parametrize("arg, where", documented_overrides())
def test_documented_override_parses(arg, where):
  config_file = os.path.join(ROOT, "configs", "pretrain_g.py")
  config = _parse(config_file, arg)
  field, _, value = shlex.split(arg)[0].partition("=")
  node = config
  for part in field.removeprefix("--config.").split("."):
    node = node[part]
  if isinstance(node, (int, float)) and not isinstance(node, bool):
    assert node == type(node)(value), (where, arg)
  elif isinstance(node, str):
    assert node == value, (where, arg)
  else:
    assert node is not None, (where, arg)


def test_data_sources_take_a_list_on_the_command_line():
  arg = ("--config.data.sources=[{'path': '/shards/k710', 'weight': 0.7}, "
         "{'path': '/shards/ssv2', 'weight': 0.3, 'sampling_rate': 2}]")
  config = _parse(os.path.join(ROOT, "configs", "pretrain_g.py"), shlex.quote(arg))
  assert [s["path"] for s in config.data.sources] == ["/shards/k710", "/shards/ssv2"]
  assert config.data.sources[1]["sampling_rate"] == 2


@pytest.mark.parametrize("args, field", [
    (["--config.stage=pretrian"], "config.stage"),
    (["--config.optim.accum_steps=3"], "config.optim.accum_steps"),
    (["--config.init_from=/nonexistent/run"], "/nonexistent/run"),
])
def test_main_reports_start_up_errors_in_one_line(tmp_path, args, field):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "vmae2_jax.main", "--config=configs/demo.py",
       f"--workdir={tmp_path / 'run'}", "--config.model.variant=mu/16",
       "--config.data.source=synthetic"] + args,
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and field in errors[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
