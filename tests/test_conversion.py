"""Checkpoint conversion against Hugging Face transformers' VideoMAE (random weights).

HF's outputs are stored (tests/torch_reference.py says how they were made):
every HF parameter random (biases, LayerNorms and the mask token included: a
fresh model's q/v biases are zero and would hide a converter that drops
them), LayerNorm epsilons set to the reference's 1e-6 (HF defaults differ:
1e-12 in blocks, 1e-5 in fc_norm / decoder norm). The weights are redrawn
here from the same seeds, written as the HF folder, converted and run.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tests import torch_reference as ref
from vmae2_jax import convert
from vmae2_jax.checkpointing import model_io
from vmae2_jax.conversion import mapping, torch_pickle
from vmae2_jax.conversion.report import ConversionError
from vmae2_jax.models.options import ModelOptions

TOL = 1e-4
OPTS = ModelOptions(attention="xla", scan_layers=True)
VARIANT = {"tiny": "Ti/16", "S": "S/16"}


# --------------------------------------------------------------- helpers
def hf_to_official(sd, pretrain):
  """An independent rename of an HF state dict into the reference layout."""
  enc = "encoder." if pretrain else ""
  out = {}
  for k, v in sd.items():
    k2 = k.replace("videomae.embeddings.patch_embeddings.projection.", enc + "patch_embed.proj.")
    k2 = re.sub(r"^videomae\.encoder\.layer\.(\d+)\.", enc + r"blocks.\1.", k2)
    k2 = re.sub(r"^decoder\.decoder_layers\.(\d+)\.", r"decoder.blocks.\1.", k2)
    k2 = k2.replace("videomae.layernorm.", "encoder.norm.").replace("classifier.", "head.")
    for a, b in (("layernorm_before", "norm1"), ("layernorm_after", "norm2"),
                 ("attention.output.dense", "attn.proj"), ("intermediate.dense", "mlp.fc1"),
                 ("output.dense", "mlp.fc2"), ("attention.attention.query.bias", "attn.q_bias"),
                 ("attention.attention.value.bias", "attn.v_bias")):
      k2 = k2.replace(a, b)
    out[k2] = v
  for k in [k for k in out if k.endswith("attention.attention.query.weight")]:
    base = k[:-len("attention.attention.query.weight")]
    out[base + "attn.qkv.weight"] = np.concatenate(
        [out.pop(base + f"attention.attention.{n}.weight") for n in ("query", "key", "value")])
  return out


def assert_trees_equal(a, b):
  fa, fb = dict(mapping.flatten(a)), dict(mapping.flatten(b))
  assert set(fa) == set(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=".".join(k))


def max_diff(a, b):
  return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def channels_first(video):
  """HF's [B, T, 3, H, W] -> the reference's [B, 3, T, H, W]."""
  return video.transpose(0, 2, 1, 3, 4)


def ours(work, hf_files, size, kind):
  """Our checkpoint dir converted from the HF folder (converted once, on first use)."""
  d = str(work / f"ours_{size}_{kind}")
  if not os.path.exists(os.path.join(d, "model.json")):
    convert.convert_file(hf_files[f"{size}_{kind}"], d)
  return d


# --------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory):
  return tmp_path_factory.mktemp("conversion")


class _HFFiles(dict):
  """case -> model.safetensors of its HF folder, written on first use."""

  def __init__(self, work):
    super().__init__()
    self.work = work

  def __missing__(self, case):
    self[case] = ref.write_hf_folder(case, str(self.work / f"hf_{case}"))
    return self[case]


@pytest.fixture(scope="module")
def hf_files(work):
  return _HFFiles(work)


# ------------------------------------------------------------------ parity
@pytest.mark.parametrize("size", ["tiny", "S"])
def test_pretrain_parity_with_hf(size, hf_files, work):
  case = f"{size}_pretrain"
  dst = str(work / f"ours_{size}_pretrain")
  rep = convert.convert_file(hf_files[case], dst)
  assert rep.variant == VARIANT[size] and rep.kind == "pretrain" and not rep.warnings
  model = convert.load(dst, opts=OPTS)
  x = ref.hf_inputs(case)
  want = ref.outputs_of(case)["logits"]
  got = convert.reference_forward(model, channels_first(x["video"]), x["mask"])
  if size == "S":  # only every 8th masked token of HF's output is stored
    got = got[:, ::ref.S_PRETRAIN_ROW_STRIDE]
  assert got.shape == want.shape
  diff = max_diff(got, want)
  print(f"\n{size} pretrain max |diff| = {diff:.2e} (max |out| {np.abs(want).max():.1f})")
  assert diff <= TOL


@pytest.mark.parametrize("size", ["tiny", "S"])
def test_classifier_parity_with_hf(size, hf_files, work):
  case = f"{size}_classifier"
  dst = str(work / f"ours_{size}_classifier")
  rep = convert.convert_file(hf_files[case], dst)
  assert rep.kind == "classifier" and rep.variant == VARIANT[size]
  model = convert.load(dst, opts=OPTS)
  want = ref.outputs_of(case)["logits"]
  got = convert.reference_forward(model, channels_first(ref.hf_inputs(case)["video"]))
  diff = max_diff(got, want)
  print(f"\n{size} classifier max |diff| = {diff:.2e} (max |logit| {np.abs(want).max():.1f})")
  assert got.shape == want.shape and diff <= TOL


def test_reference_forward_matches_model_call(hf_files, work):
  """The normalised-pixel path equals the model's own uint8 path."""
  from vmae2_jax.models.patching import MEAN, STD
  model = convert.load(ours(work, hf_files, "tiny", "classifier"), opts=OPTS)
  rng = np.random.default_rng(0)
  clip = rng.integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
  normalised = ((clip / 255.0 - MEAN) / STD).astype(np.float32).transpose(0, 4, 1, 2, 3)
  a = convert.reference_forward(model, normalised)
  b = np.asarray(model(clip))
  assert max_diff(a, b) <= 1e-5


# ----------------------------------------------------------------- export
# config.json fields VideoMAEConfig builds the model from.
HF_ARCH_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "image_size", "patch_size", "num_frames", "tubelet_size", "num_channels",
                  "qkv_bias", "use_mean_pooling", "hidden_act", "decoder_hidden_size",
                  "decoder_num_hidden_layers", "decoder_num_attention_heads",
                  "decoder_intermediate_size", "norm_pix_loss", "layer_norm_eps")


@pytest.mark.parametrize("kind", ["pretrain", "classifier"])
def test_hf_export_loads_strict_and_matches(kind, hf_files, work):
  """The export has exactly HF's keys and shapes (what load_state_dict(strict=True)
  checks), HF's values bit for bit, and a config.json that builds the same model; run
  back through our model it gives HF's stored outputs on another clip."""
  case = f"tiny_{kind}"
  src = ours(work, hf_files, "tiny", kind)
  out_dir = work / f"export_hf_{kind}"
  dst = str(out_dir / "model.safetensors")
  convert.export_checkpoint(src, dst, to="hf")
  sd = load_file(dst)
  schema = ref.schema_of(case)
  assert sorted(sd) == sorted(k for k, _ in schema)
  assert all(sd[k].shape == shape for k, shape in schema)
  for k, v in ref.weights_of(case).items():
    np.testing.assert_array_equal(sd[k], v, err_msg=k)
  with open(out_dir / "config.json") as f:
    ours_cfg = json.load(f)
  with open(os.path.join(ref.case_dir(case), "config.json")) as f:
    hf_cfg = json.load(f)
  for field in HF_ARCH_FIELDS:
    assert ours_cfg.get(field) == hf_cfg.get(field), field
  if kind == "classifier":
    assert len(ours_cfg["id2label"]) == len(hf_cfg["id2label"])
  model = convert.load(str(out_dir), opts=OPTS)
  x, want = ref.hf_inputs(case), ref.outputs_of(case)["export_logits"]
  got = convert.reference_forward(model, channels_first(x["export_video"]),
                                  x.get("export_mask"))
  assert max_diff(got, want) <= TOL


def test_round_trip_bit_exact_hf_and_official(hf_files, work):
  src = str(work / "rt_src")
  convert.convert_file(hf_files["tiny_pretrain"], src)
  first, meta = model_io.load_model_params(src)
  for to, name in (("hf", "rt.safetensors"), ("official", "rt.pth")):
    dst = str(work / name)
    convert.export_checkpoint(src, dst, to=to)
    params, _, rep = convert.import_checkpoint(dst, frames=meta["frames"],
                                               image_size=meta["image_size"])
    assert rep.layout == to and rep.variant == "Ti/16"
    assert_trees_equal(params, first)


@pytest.mark.parametrize("kind", ["pretrain", "classifier"])
def test_official_layout_import_and_strict_export(kind, hf_files, work):
  """Reference-layout files (fused qkv, q_bias/v_bias, container, '_orig_mod.') import to the
  same numbers as the HF file, and export back to exactly the same keys and values."""
  hf_path = hf_files[f"tiny_{kind}"]
  official = hf_to_official(ref.weights_of(f"tiny_{kind}"), kind == "pretrain")
  container = "model" if kind == "pretrain" else "module"
  path = str(work / f"official_{kind}.pth")
  torch_pickle.save({container: {"_orig_mod." + k: v for k, v in official.items()},
                     "epoch": 3}, path)
  from_off, meta, rep = convert.import_checkpoint(path)
  assert rep.layout == "official" and rep.kind == kind and rep.variant == "Ti/16"
  from_hf, _, _ = convert.import_checkpoint(hf_path)
  assert_trees_equal(from_off, from_hf)

  d = str(work / f"official_{kind}_dir")
  model_io.save_model_params(d, from_off, meta)
  out = str(work / f"official_{kind}_export.pth")
  convert.export_checkpoint(d, out, to="official")
  back = torch_pickle.load(out)
  assert list(back) == [container]
  assert set(back[container]) == set(official)  # what strict=True checks
  for k, v in official.items():
    assert back[container][k].dtype == v.dtype
    np.testing.assert_array_equal(back[container][k], v, err_msg=k)


# ---------------------------------------------------------------- refusals
def _hf_state(kind="pretrain"):
  return ref.weights_of(f"tiny_{kind}")


def _write(work, name, state):
  """A bare state dict file (in a folder without config.json)."""
  os.makedirs(work / "bare", exist_ok=True)
  path = str(work / "bare" / name)
  save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, path)
  return path


def test_refuses_missing_key(hf_files, work):
  sd = _hf_state()
  del sd["videomae.encoder.layer.2.attention.attention.value.bias"]
  with pytest.raises(ConversionError, match=r"missing +videomae\.encoder\.layer\.2\.attention\."
                                            r"attention\.value\.bias +expected shape \[96\]"):
    convert.import_checkpoint(_write(work, "missing.safetensors", sd))


def test_refuses_pretrain_without_encoder_norm(hf_files, work):
  sd = {k: v for k, v in _hf_state().items() if not k.startswith("videomae.layernorm")}
  with pytest.raises(ConversionError, match=r"without the encoder's final LayerNorm"):
    convert.import_checkpoint(_write(work, "no_norm.safetensors", sd))


def test_refuses_misshaped_key(hf_files, work):
  sd = _hf_state()
  sd["decoder.head.weight"] = sd["decoder.head.weight"][:-3]
  with pytest.raises(ConversionError,
                     match=r"mis-shaped +decoder\.head\.weight +shape \[1533, 64\], expected "
                           r"\[1536, 64\]"):
    convert.import_checkpoint(_write(work, "misshaped.safetensors", sd))


def test_refuses_unexpected_key_and_learned_pos_embed(hf_files, work):
  sd = _hf_state()
  sd["videomae.encoder.layer.0.attention.attention.key.bias"] = np.ones(96, np.float32)
  with pytest.raises(ConversionError, match=r"unexpected +videomae\.encoder\.layer\.0\."
                                            r"attention\.attention\.key\.bias +shape \[96\]"):
    convert.import_checkpoint(_write(work, "unexpected.safetensors", sd))
  official = hf_to_official(_hf_state("classifier"), False)
  from vmae2_jax.models.posemb import sinusoid_table
  official["pos_embed"] = sinusoid_table(8, 96)[None].copy()
  _, _, rep = convert.import_checkpoint(_write(work, "sin_pos.safetensors", official))
  assert [d[0] for d in rep.dropped] == ["pos_embed"]
  official["pos_embed"] = official["pos_embed"] + 0.5
  with pytest.raises(ConversionError, match=r"unexpected +pos_embed +shape \[1, 8, 96\]"):
    convert.import_checkpoint(_write(work, "learned_pos.safetensors", official))


def test_wrong_variant_refused(hf_files, work):
  with pytest.raises(ConversionError, match="heads but the HF config says"):
    convert.import_checkpoint(hf_files["tiny_classifier"], variant="mu/16")
  bare = _write(work, "no_config.safetensors", _hf_state("classifier"))
  with pytest.raises(ConversionError, match=r"mis-shaped +videomae\.embeddings\."):
    convert.import_checkpoint(bare, variant="mu/16")


def test_zero_qv_biases_warn_and_legacy_names(hf_files, work):
  sd = _hf_state("classifier")
  for k in sd:
    if k.endswith(("query.bias", "value.bias")):
      sd[k][:] = 0
  path = _write(work, "zero_bias.safetensors", sd)
  _, _, rep = convert.import_checkpoint(path)
  assert any("q_bias/v_bias" in w and "zero" in w for w in rep.warnings)
  with pytest.raises(ConversionError, match="all zero"):
    convert.import_checkpoint(path, zero_bias="error")
  # Files from older transformers name the biases q_bias / v_bias.
  sd = _hf_state("classifier")
  legacy = {k.replace("query.bias", "q_bias").replace("value.bias", "v_bias"): v
            for k, v in sd.items()}
  a, _, rep = convert.import_checkpoint(_write(work, "legacy.safetensors", legacy))
  b, _, _ = convert.import_checkpoint(hf_files["tiny_classifier"])
  assert_trees_equal(a, b)
  assert any("legacy" in n for n in rep.notes)


# ---------------------------------------------------------------- surgery
def test_pretrain_to_classifier_surgery(hf_files, work):
  params, meta, rep = convert.import_checkpoint(hf_files["tiny_pretrain"],
                                                kind="classifier", num_classes=7)
  assert meta["kind"] == "classifier" and meta["num_classes"] == 7
  dropped = {k for k, _, _ in rep.dropped}
  assert {"mask_token", "encoder_to_decoder.weight", "videomae.layernorm.weight",
          "decoder.head.weight", "decoder.decoder_layers.1.output.dense.bias"} <= dropped
  assert not dropped & {k for k, _, _ in rep.mapped}
  assert "norm" not in params["encoder"] and "decoder" not in params
  assert np.all(params["fc_norm"]["scale"] == 1) and np.all(params["head"]["bias"] == 0)
  assert 1.5e-5 < params["head"]["kernel"].std() < 2.5e-5  # trunc_normal(0.02) * 0.001
  full, _, _ = convert.import_checkpoint(hf_files["tiny_pretrain"])
  assert_trees_equal(params["encoder"], {k: v for k, v in full["encoder"].items() if k != "norm"})


def test_label_map_surgery_710_to_400(work):
  from vmae2_jax.conversion import labels
  path = ref.write_hf_folder("tiny_k710", str(work / "hf_k710"))
  params710, _, _ = convert.import_checkpoint(path)
  params, meta, rep = convert.import_checkpoint(path, label_map="710to400")
  rows = labels.label_map("710to400")
  assert meta["num_classes"] == 400 and meta["class_names"] == list(labels.class_names("k400"))
  # A 400-way head is asked for, but no map named: the class count alone never re-indexes.
  with pytest.raises(convert.ConversionError, match=r"710 classes, 400 requested .*"
                     r"--label_map=710to400 if the classes are Kinetics'"):
    convert.import_checkpoint(path, num_classes=400)
  np.testing.assert_array_equal(params["head"]["kernel"], params710["head"]["kernel"][:, rows])
  np.testing.assert_array_equal(params["head"]["bias"], params710["head"]["bias"][rows])
  # Class j of K400 is row rows[j] of the 710-way head, by name.
  k400, k710 = labels.class_names("k400"), labels.class_names("k710")
  assert all(k710[r] == k400[j] for j, r in enumerate(rows))
  # The trainer path: a 710-way DIR into a 400-way classifier re-indexes automatically
  # when the run's classes are K400's by name (here spelled as the official CSV does)...
  d = str(work / "k710_dir")
  convert.convert_file(path, d)
  target = {"encoder": params["encoder"], "fc_norm": params["fc_norm"],
            "head": {"kernel": np.zeros((96, 400), np.float32),
                     "bias": np.zeros((400,), np.float32)}}
  official = [{"inflating balloons": "balloon blowing"}.get(n, n) for n in k400]
  out = convert.apply_init_from(target, d, "classifier", class_names=official)
  np.testing.assert_array_equal(out["head"]["kernel"], params["head"]["kernel"])
  # ... never merely because there are 400 classes: other names or none keep a fresh head.
  for names in ([f"class {i}" for i in range(400)], None):
    out = convert.apply_init_from(target, d, "classifier", class_names=names)
    np.testing.assert_array_equal(out["head"]["kernel"], target["head"]["kernel"])
  # K400 names in another order than the head's: refused in one line naming the first.
  swapped = official[:12] + [official[13], official[12]] + official[14:]
  with pytest.raises(convert.ConversionError, match=r"not this run's.*2 of 400 class names "
                     r"differ: index 12: 'bandaging' vs 'inflating balloons'; index 13"):
    convert.apply_init_from(target, d, "classifier", class_names=swapped)


def test_apply_init_from_pretrain_to_classifier(hf_files, work):
  import jax
  from flax import nnx
  from vmae2_jax.models import Classifier, get_variant

  def target(variant):  # abstract params, as a trainer holds before initialising
    model = nnx.eval_shape(lambda: Classifier(get_variant(variant), 5, frames=4, image_size=32,
                                              opts=OPTS, rngs=nnx.Rngs(0)))
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))

  d = ours(work, hf_files, "tiny", "pretrain")
  fresh = target("Ti/16")
  out = convert.apply_init_from(fresh, d, "classifier")
  src, _ = model_io.load_model_params(d)
  np.testing.assert_array_equal(out["encoder"]["blocks"]["layers"]["attn"]["q_bias"],
                                src["encoder"]["blocks"]["layers"]["attn"]["q_bias"])
  assert out["head"]["kernel"] is fresh["head"]["kernel"]  # the target's fresh head is kept
  assert jax.tree.map(np.shape, out) == jax.tree.map(np.shape, fresh)
  with pytest.raises(ConversionError, match=r"mis-shaped: encoder\.patch_embed\.kernel"):
    convert.apply_init_from(target("mu/16"), d, "classifier")
  with pytest.raises(ConversionError, match="no decoder"):
    convert.apply_init_from(fresh, ours(work, hf_files, "tiny", "classifier"), "pretrain")


def test_interpolate_pos_table():
  from vmae2_jax.conversion.surgery import interpolate_pos_table
  rng = np.random.default_rng(0)
  table = rng.normal(size=(1, 2 * 3 * 3, 8)).astype(np.float32)
  np.testing.assert_array_equal(interpolate_pos_table(table, (2, 3, 3), (2, 3, 3)), table)
  const = np.ones((2 * 3 * 3, 8), np.float32)
  out = interpolate_pos_table(const, (2, 3, 3), (4, 5, 5))
  assert out.shape == (4 * 5 * 5, 8)
  np.testing.assert_allclose(out, 1.0, atol=1e-5)


# -------------------------------------------------------------------- CLI
def test_cli_import_and_export(hf_files, work):
  from vmae2_jax.conversion.cli import main
  dst = str(work / "cli_dir")
  assert main(["--src", hf_files["tiny_classifier"], "--dst", dst]) == 0
  assert os.path.exists(os.path.join(dst, "model.json"))
  assert os.path.exists(os.path.join(dst, "conversion_report.txt"))
  out = str(work / "cli_out" / "k.pth")
  assert main(["--to", "official", "--src", dst, "--dst", out]) == 0
  assert "module" in torch_pickle.load(out)
  assert main(["--src", str(work / "nope.pth"), "--dst", dst]) == 1


def test_cli_shows_progress_with_an_eta(hf_files, work, monkeypatch, capsys):
  """Import: reading and mapping each draw a status line with an ETA (here every update),
  then the write is announced; export: writing the .pth; under the default interval small
  files print none."""
  from vmae2_jax.conversion import api
  from vmae2_jax.conversion.cli import main
  src = str(work / "progress.pth")
  torch_pickle.save({"model": hf_to_official(_hf_state(), True)}, src)
  monkeypatch.setattr(api, "PROGRESS_INTERVAL", 0.0)
  assert main(["--src", src, "--dst", str(work / "progress_dir")]) == 0
  err = capsys.readouterr().err.splitlines()
  reading = [l for l in err if l.startswith("convert: reading progress.pth,")]
  mapping = [l for l in err if l.startswith("convert: mapping to Ti/16,")]
  assert reading and mapping and any("ETA" in l for l in reading + mapping), err
  assert "done in" in reading[-1] and "done in" in mapping[-1]
  total = sum(v.nbytes for v in _hf_state().values()) / 2**20
  assert f"/{total:.0f} MB" in mapping[-1]
  assert any(l.startswith("convert: writing ") for l in err)
  out = str(work / "progress_export.pth")  # export: the .pth's tensors as they are written
  assert main(["--to", "official", "--src", str(work / "progress_dir"), "--dst", out]) == 0
  writing = [l for l in capsys.readouterr().err.splitlines()
             if l.startswith("convert: writing progress_export.pth,")]
  assert writing and "done in" in writing[-1] and f"/{total:.0f} MB" in writing[-1]
  monkeypatch.setattr(api, "PROGRESS_INTERVAL", None)
  assert main(["--src", src, "--dst", str(work / "progress_dir2")]) == 0
  assert not any("reading" in l for l in capsys.readouterr().err.splitlines())


def test_python_dash_m_entry_point_without_torch(hf_files, work):
  """The module's __main__ path, as `python -m vmae2_jax.convert` runs it, on a .pth file
  in a process where torch cannot be imported."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root)
  src = str(work / "no_torch.pth")
  torch_pickle.save({"model": hf_to_official(_hf_state(), True)}, src)
  dst = str(work / "dash_m")
  code = ("import runpy, sys; sys.modules['torch'] = None; "
          f"sys.argv = ['convert', '--src', {src!r}, '--dst', {dst!r}]; "
          "runpy.run_module('vmae2_jax.convert', run_name='__main__', alter_sys=True)")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                     cwd=root, timeout=120)
  assert r.returncode == 0, r.stderr
  assert "variant: Ti/16" in r.stdout and os.path.exists(os.path.join(dst, "model.json"))


# ------------------------------------------------- encoder-only and big sizes
def test_hf_bare_encoder_import_export(work):
  """A bare VideoMAEModel (keys without 'videomae.', final layernorm) as an encoder."""
  path = ref.write_hf_folder("tiny_encoder", str(work / "hf_bare"))
  dst = str(work / "bare_dir")
  rep = convert.convert_file(path, dst)
  assert rep.kind == "encoder" and rep.variant == "Ti/16"
  model = convert.load(dst, opts=OPTS)
  x = ref.hf_inputs("tiny_encoder")
  got = convert.reference_forward(model, channels_first(x["video"]), x["mask"])
  assert max_diff(got, ref.outputs_of("tiny_encoder")["last_hidden_state"]) <= TOL
  out = str(work / "bare_export" / "model.safetensors")
  convert.export_checkpoint(dst, out, to="hf")
  sd = load_file(out)
  assert {k: v.shape for k, v in sd.items()} == dict(ref.schema_of("tiny_encoder"))


@pytest.mark.parametrize("variant,kind", [("g/14", "pretrain"), ("g/14", "classifier"),
                                          ("S/16", "classifier"), ("B/16", "pretrain"),
                                          ("L/16", "pretrain"), ("H/16", "classifier")])
def test_published_sizes_are_inferred_from_shapes(variant, kind):
  """Reference-layout key sets of the published models (zero-stride arrays: no memory)."""
  from vmae2_jax.conversion import detect, layouts
  from vmae2_jax.models import get_variant
  spec = layouts.Spec(kind, get_variant(variant), 710 if kind == "classifier" else None,
                      kind == "pretrain")
  state = {}
  for r in layouts.rules_for("official", spec):
    for key, shape in zip(r.srcs, r.src_shapes):
      state[key] = np.broadcast_to(np.zeros((), np.float32), shape)
  if kind == "classifier":
    state = {"module." + k: v for k, v in state.items()}
  flavour = detect.detect(state)
  name, got, _ = detect.infer_spec(flavour)
  assert (flavour.layout, flavour.kind, name) == ("official", kind, variant)
  assert got == spec
  if variant == "g/14" and kind == "pretrain":
    assert state["encoder.blocks.39.attn.qkv.weight"].shape == (3 * 1408, 1408)
    assert state["decoder.blocks.3.mlp.fc1.weight"].shape == (2234, 512)
    assert state["decoder.head.weight"].shape == (3 * 2 * 14 * 14, 512)
    assert state["mask_token"].shape == (1, 1, 512)


def test_reference_masks_follow_the_sampler_conventions(hf_files, work):
  """Boolean masks from masking.to_boolean_masks (dual masking, running cell) through
  reference_forward equal the model's own index-set call; the checkpoint also runs at
  another resolution (64 px) since position tables are regenerated."""
  import jax
  from vmae2_jax.masking.sampler import MaskSpec, sample_masks, to_boolean_masks
  from vmae2_jax.models.patching import MEAN, STD
  d = ours(work, hf_files, "tiny", "pretrain")
  model = convert.load(d, opts=OPTS, frames=4, image_size=64)
  spec = MaskSpec(grid=(2, 4, 4), encoder="tube", encoder_ratio=0.75,
                  decoder="running_cell", decoder_ratio=0.5)
  sample = sample_masks(jax.random.key(0), 2, spec)
  enc, dec = to_boolean_masks(sample, spec.num_tokens)
  clip = np.random.default_rng(1).integers(0, 256, (2, 4, 64, 64, 3), dtype=np.uint8)
  normalised = ((clip / 255.0 - MEAN) / STD).astype(np.float32).transpose(0, 4, 1, 2, 3)
  a = convert.reference_forward(model, normalised, np.asarray(enc), np.asarray(dec))
  b = np.asarray(model(clip, sample.visible_idx, sample.target_idx))
  assert a.shape == (2, spec.num_targets, 1536)
  assert max_diff(a, b) <= 1e-5


def test_apply_init_from_a_training_checkpoint(hf_files, work):
  """init_from may also name a training run's checkpoint dir (latest step, params only)."""
  import optax
  from vmae2_jax.checkpointing.manager import Checkpointer
  from vmae2_jax.training.state import TrainState
  src, _, _ = convert.import_checkpoint(hf_files["tiny_pretrain"])
  ck = Checkpointer(str(work / "train_ckpt"), save_every=1, async_save=False)
  ck.save(7, TrainState.create(src, optax.adamw(1e-3)), {}, {"step": 7, "variant": "Ti/16",
                                                            "stage": "pretrain"}, force=True)
  ck.close()
  target = {"encoder": {k: v for k, v in src["encoder"].items() if k != "norm"},
            "fc_norm": {"scale": np.ones(96, np.float32), "bias": np.zeros(96, np.float32)},
            "head": {"kernel": np.zeros((96, 5), np.float32), "bias": np.zeros(5, np.float32)}}
  target = {**target, "encoder": {**target["encoder"],
                                  "patch_embed": {"kernel": np.zeros((1536, 96), np.float32),
                                                  "bias": np.zeros(96, np.float32)}}}
  out = convert.apply_init_from(target, str(work / "train_ckpt"), "classifier")
  np.testing.assert_array_equal(out["encoder"]["patch_embed"]["kernel"],
                                src["encoder"]["patch_embed"]["kernel"])
  np.testing.assert_array_equal(out["head"]["kernel"], target["head"]["kernel"])


@pytest.mark.parametrize("prefix,kind,want", [
    ("backbone.", "classifier", "classifier"), ("module._orig_mod.", "classifier", "classifier"),
    ("encoder.", "encoder", "encoder")])
def test_wrapper_prefixes(prefix, kind, want):
  """'backbone.' / 'module.' / '_orig_mod.' wrappers, and an encoder taken out of a
  pre-training model ('encoder.' keys with encoder.norm)."""
  from vmae2_jax.conversion import detect, layouts
  from vmae2_jax.models import get_variant
  spec = layouts.Spec(kind, get_variant("S/16"), 400 if kind == "classifier" else None, True)
  state = {prefix + key: np.broadcast_to(np.zeros((), np.float32), shape)
           for r in layouts.rules_for("official", spec)
           for key, shape in zip(r.srcs, r.src_shapes)}
  flavour = detect.detect(state)
  assert (flavour.layout, flavour.kind) == ("official", want)
  name, got, _ = detect.infer_spec(flavour)
  assert name == "S/16" and got.encoder_norm == (kind == "encoder")


def test_packaged_label_maps_match_class_names():
  from vmae2_jax.conversion import labels
  k710 = labels.class_names("k710")
  for name in labels.LABEL_MAPS:
    rows = labels.label_map(name)
    small = labels.class_names("k" + name.split("to")[1])
    assert len(rows) == len(small) and len(set(rows.tolist())) == len(rows)
    assert all(k710[r] == small[j] for j, r in enumerate(rows)), name
  assert labels.auto_label_map(710, 600) == "710to600" and labels.auto_label_map(400, 10) is None
  with pytest.raises(ValueError, match="neither"):
    labels.label_map("710to999")
