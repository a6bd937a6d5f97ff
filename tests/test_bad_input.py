"""Bad input at start-up, tried as a user would, through real `python -m vmae2_jax.main`
processes: each ends with exit status 1 and one line on stderr, `error: ...`, naming the
field and what it may be (or the path and what is wrong there), never a traceback; and a
start that fails leaves nothing behind in --workdir (docs/faults.md, "Start-up")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny model on generated clips: a start that passes every check would train.
BASE = ["--config=configs/demo.py", "--config.model.variant=mu/16",
        "--config.data.source=synthetic", "--config.data.frames=4",
        "--config.data.image_size=32", "--config.batch_size=4", "--config.total_steps=2",
        "--config.reconstruction.enabled=False"]


def _main(args: list[str], workdir) -> tuple[str, str]:
  """Runs main; asserts it failed in exactly one `error:` line (the last) with no traceback;
  returns (that line, the whole stderr)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-m", "vmae2_jax.main", *BASE,
                         f"--workdir={workdir}", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  err = proc.stderr
  assert proc.returncode == 1, err[-3000:]
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, err[-3000:]
  assert err.rstrip().splitlines()[-1] == errors[0], err[-3000:]
  for noise in ("Traceback", "Event loop is closed", "FATAL"):
    assert noise not in err, err[-3000:]
  return errors[0], err


# ------------------------------------------------------------- the command line
@pytest.mark.parametrize("args, want", [
    # an unknown field: named, and the fields there are
    (["--config.foo=1"], ["--config.foo: config has no field 'foo'", "batch_size, ",
                          "total_steps"]),
    # a typo in a nested field: the likely field suggested
    (["--config.model.varaint=B/16"],
     ["--config.model.varaint: config.model has no field 'varaint' (did you mean "
      "config.model.variant?", "drop_path_rate"]),
    (["--config.optim.lr=0.1"], ["config.optim has no field 'lr'", "base_lr"]),
    (["--config.model.variant.size=3"],
     ["--config.model.variant.size: config.model.variant is a str"]),
    (["--config.batch_size=abc"], ["--config.batch_size=abc: invalid literal for int()"]),
    (["--config=configs/no_such_recipe.py"], ["--config=configs/no_such_recipe.py: no such file"]),
    (["--workdri=/tmp/x"], ["Unknown command line flag 'workdri'", "workdir"]),
    # a config file's own refusal of its argument: its message, not its traceback
    (["--config=configs/finetune_own.py:X/16"],
     ["error: configs/finetune_own.py:X/16: choose one of ['B/16', "]),
    # both training-data fields given on the command line
    (["--config.data.source=shards", "--config.data.train_path=demo:train",
      '--config.data.sources=[{"path": "demo:train", "weight": 1.0}]'],
     ["config.data.train_path='demo:train' and config.data.sources are both set"]),
    # README's list override on configs/demo.py (train_path "demo") replaces its path: the
    # start goes past the data checks to the next fault
    (["--config.data.source=shards", '--config.data.sources=[{"path": "demo:train", '
      '"weight": 1.0}]', "--config.init_from=/nonexistent/ckpt"],
     ["error: /nonexistent/ckpt: no such directory"]),
])
def test_command_line_mistakes(tmp_path, args, want):
  line, _ = _main(args, tmp_path / "run")
  for text in want:
    assert text in line, line
  assert not (tmp_path / "run").exists()


# ------------------------------------------------------------- config values
@pytest.mark.parametrize("arg, want", [
    ("--config.model.variant=X/99", "config.model.variant='X/99' is unknown; choose one of "
                                    "['B/16', 'H/16', 'L/16', 'S/16', 'Ti/16', 'g/14', 'mu/16']"),
    ("--config.stage=segment",
     "config.stage='segment' is not one of ('pretrain', 'postpretrain', 'finetune', 'distill', "
     "'detect')"),
    ("--config.nonfinite=maybe", "config.nonfinite='maybe' is not one of ('stop', 'skip')"),
    ("--config.data.sampling=tsn", "config.data.sampling='tsn' is not one of ('dense', "
                                   "'segment')"),
    ("--config.masking.encoder=blob", "config.masking.encoder='blob' is not tube|random"),
    ("--config.model.remat=some", "config.model.remat='some' is not one of ['dots', "),
    ("--config.data.image_size=40", "config.data.image_size=40 is not divisible by the patch "
                                    "size 16"),
])
def test_config_values_name_field_and_allowed_values(tmp_path, arg, want):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "notes.txt").write_text("mine")
  line, _ = _main([arg], tmp_path / "run")
  assert line == f"error: {want}" or line.startswith(f"error: {want}"), line
  assert os.listdir(tmp_path / "run") == ["notes.txt"]  # untouched


# ------------------------------------------------------------------- workdir
def test_unwritable_workdir(tmp_path):
  (tmp_path / "a_file").write_text("")
  line, _ = _main([], tmp_path / "a_file" / "run")
  assert line == (f"error: --workdir={tmp_path / 'a_file' / 'run'}: cannot create or write "
                  "it (Not a directory)")
  # A missing parent is created, and removed again when the start fails later.
  line, _ = _main(["--config.init_from=/nonexistent/ckpt"], tmp_path / "new" / "deeper" / "run")
  assert "/nonexistent/ckpt" in line
  assert os.listdir(tmp_path) == ["a_file"]


# ------------------------------------------------------------------ init_from
def _save(directory, variant: str) -> str:
  """A converted (model-only) pre-training checkpoint of `variant` at 4 x 32 x 32."""
  from tests.helpers import tiny_pretrain_config
  from vmae2_jax.checkpointing.model_io import save_model_params
  from vmae2_jax.models.factory import build_pretrain_model
  c = tiny_pretrain_config(**{"model.variant": variant})
  model = nnx.eval_shape(lambda: build_pretrain_model(c, nnx.Rngs(0)))
  params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                        nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  save_model_params(str(directory), params, {"kind": "pretrain", "variant": variant,
                                             "frames": 4, "image_size": 32})
  return str(directory)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  root = tmp_path_factory.mktemp("init_from")
  good = _save(root / "mu", "mu/16")
  out = {"ti": _save(root / "ti", "Ti/16")}
  for name in ("no_data", "empty_manifest", "no_meta"):
    out[name] = str(root / name)
    shutil.copytree(good, out[name])
  shutil.rmtree(os.path.join(out["no_data"], "params", "d"))
  open(os.path.join(out["empty_manifest"], "params", "manifest.ocdbt"), "w").close()
  os.remove(os.path.join(out["no_meta"], "model.json"))
  return out


@pytest.mark.parametrize("name, want", [
    ("missing", "error: {path}: no such directory (a converted checkpoint or a training "
                "run's workdir)"),
    ("no_meta", "error: {path}: neither a model checkpoint (no model.json + params/"),
    ("no_data", r"error: config.init_from={path}: cannot read its weights ({path}/params/d/"),
    ("empty_manifest", "error: config.init_from={path}: cannot read its weights "
                       "({path}/params/manifest.ocdbt: Error decoding manifest"),
    ("ti", "error: config.init_from={path}: it holds a Ti/16 pretrain model, "
           "config.model.variant='mu/16': init_from does not fit the model (35 mis-shaped): "
           "mis-shaped: encoder.patch_embed.bias checkpoint [96], model [32]; "),
])
def test_init_from_missing_partial_or_mismatched(tmp_path, checkpoints, name, want):
  path = checkpoints.get(name, str(tmp_path / "nowhere"))
  line, _ = _main([f"--config.init_from={path}"], tmp_path / "run")
  assert line.startswith(want.format(path=path)), line
  if name == "ti":  # the variants first, then the first mismatched tensors, then a count
    assert line.count("mis-shaped: ") == 3 and line.endswith("; and 32 more")
    assert len(line.replace(path, "PATH")) < 450  # every key: ~3,000
  if name == "no_data":
    assert line.endswith(": missing [NOT_FOUND])"), line
  assert not (tmp_path / "run").exists()  # the workdir this start created is gone


# ------------------------------------------- reference options these models lack
@pytest.mark.parametrize("extra, what", [
    ({"encoder.blocks.0.gamma_1": (32,), "encoder.blocks.0.gamma_2": (32,)},
     "uses layer scale (the reference's init_values > 0), 2 tensors such as "
     "encoder.blocks.0.gamma_1"),
    ({"encoder.blocks.1.attn.scale": (2, 1, 1)},
     "uses cosine attention (the reference's cos_attn=True), 1 tensors such as "
     "encoder.blocks.1.attn.scale"),
])
def test_conversion_refuses_layer_scale_and_cosine_attention(tmp_path, extra, what):
  """docs/checkpoints.md: a reference checkpoint trained with init_values > 0 or
  cos_attn=True is refused by name instead of reported as unknown keys."""
  from vmae2_jax.conversion import api
  from vmae2_jax.conversion.mapping import export_state_dict
  from vmae2_jax.conversion.report import ConversionError
  from vmae2_jax.conversion.layouts import Spec
  from vmae2_jax.conversion.torch_io import write_state_dict
  from vmae2_jax.models import get_variant
  from vmae2_jax.models.options import ModelOptions
  from vmae2_jax.models.vit import PretrainModel
  model = PretrainModel(get_variant("mu/16"), frames=4, image_size=32, opts=ModelOptions(),
                        rngs=nnx.Rngs(0))
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  state = export_state_dict(params, "official", Spec("pretrain", get_variant("mu/16")))
  path = str(tmp_path / "ref.safetensors")
  write_state_dict(path, state, None)
  api.import_checkpoint(path, variant="mu/16")  # the plain file converts
  state.update({k: np.ones(s, np.float32) for k, s in extra.items()})
  write_state_dict(path, state, None)
  with pytest.raises(ConversionError) as e:
    api.import_checkpoint(path, variant="mu/16")
  assert str(e.value).startswith(f"{path}: {what}; these models do not implement it")
  assert "\n" not in str(e.value)


# --------------------------------------------------------------------- data
def test_truncated_shard_file_stops_the_start_in_one_line(tmp_path):
  """A shard file shorter than its manifest says: named before any step, nothing left."""
  from tests.test_bad_data import truncated_shard_set
  out, path, size = truncated_shard_set(tmp_path / "shards")
  line, _ = _main(["--config.data.source=shards", f"--config.data.train_path={out}",
                   "--config.data.num_sample=1", "--config.data.sampling_rate=1"],
                  tmp_path / "run")
  assert line.startswith(f"error: {path}: {size - 100} bytes, ") and "truncated" in line, line
  assert not (tmp_path / "run").exists()
