"""Checkpoint conversion against Hugging Face transformers' VideoMAE (torch CPU, random init).

Every HF parameter is randomised first (biases, LayerNorms and the mask token
included: a fresh model's q/v biases are zero and would hide a converter that
drops them). LayerNorm epsilons of the HF models are set to the reference's
1e-6 (HF defaults differ: 1e-12 in blocks, 1e-5 in fc_norm / decoder norm).

Sizes: "tiny" has the Ti/16 shapes on 4 frames of 32 px (8 tokens); "S" is
ViT-S/16 at full width and depth (384 x 12, decoder 192 x 4) on one clip of
8 frames at 112 px (196 tokens) to keep the run short on CPU.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from vmae2_jax import convert  # noqa: E402
from vmae2_jax.checkpointing import model_io  # noqa: E402
from vmae2_jax.conversion import mapping  # noqa: E402
from vmae2_jax.conversion.report import ConversionError  # noqa: E402
from vmae2_jax.models.options import ModelOptions  # noqa: E402

TOL = 1e-4
OPTS = ModelOptions(attention="xla", scan_layers=True)
SIZES = {
    # name: (hf config kwargs, frames, image size, batch)
    "tiny": (dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=3,
                  intermediate_size=384, decoder_hidden_size=64, decoder_num_hidden_layers=2,
                  decoder_num_attention_heads=2, decoder_intermediate_size=256), 4, 32, 2),
    "S": (dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
               intermediate_size=1536, decoder_hidden_size=192, decoder_num_hidden_layers=4,
               decoder_num_attention_heads=3, decoder_intermediate_size=768), 8, 112, 1),
}
VARIANT = {"tiny": "Ti/16", "S": "S/16"}


# --------------------------------------------------------------- helpers
def hf_config(size, *, pretrain, num_labels=10):
  kw, frames, image, _ = SIZES[size]
  cfg = transformers.VideoMAEConfig(image_size=image, patch_size=16, num_frames=frames,
                                    layer_norm_eps=1e-6, use_mean_pooling=not pretrain, **kw)
  if not pretrain:
    cfg.num_labels = num_labels
  return cfg


def randomise(model, seed):
  """Every parameter random, at scales that keep activations O(1)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      if name == "mask_token":
        p.copy_(noise)
      elif p.ndim >= 2:
        p.copy_(noise / p[0].numel() ** 0.5)
      elif "norm" in name and name.endswith("weight"):
        p.copy_(1.0 + 0.2 * noise)
      else:
        p.copy_(0.2 * noise)
  return model


def reference_eps(model):
  """HF hard-codes eps 1e-5 in fc_norm and the decoder norm; the reference uses 1e-6."""
  for m in model.modules():
    if isinstance(m, torch.nn.LayerNorm):
      m.eps = 1e-6
  return model.eval()


def make_hf(size, *, pretrain, seed, num_labels=10):
  cls = transformers.VideoMAEForPreTraining if pretrain else \
      transformers.VideoMAEForVideoClassification
  torch.manual_seed(seed)
  return reference_eps(randomise(cls(hf_config(size, pretrain=pretrain, num_labels=num_labels)),
                                 seed))


def save_hf(model, directory):
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "model.safetensors")
  safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
  model.config.to_json_file(os.path.join(directory, "config.json"))
  return path


def tube_mask(batch, grid, ratio, seed):
  t, h, w = grid
  rng = np.random.default_rng(seed)
  masks = []
  for _ in range(batch):
    spatial = np.zeros(h * w, bool)
    spatial[rng.permutation(h * w)[:int(ratio * h * w)]] = True
    masks.append(np.tile(spatial, t))
  return np.stack(masks)


def grid_of(size):
  _, frames, image, _ = SIZES[size]
  return frames // 2, image // 16, image // 16


def video_of(size, seed):
  _, frames, image, batch = SIZES[size]
  g = torch.Generator().manual_seed(seed)
  return torch.randn(batch, frames, 3, image, image, generator=g)  # HF layout [B, T, 3, H, W]


def hf_to_official(sd, pretrain):
  """An independent torch-side rename of an HF state dict into the reference layout."""
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
    out[base + "attn.qkv.weight"] = torch.cat(
        [out.pop(base + f"attention.attention.{n}.weight") for n in ("query", "key", "value")])
  return out


def assert_trees_equal(a, b):
  fa, fb = dict(mapping.flatten(a)), dict(mapping.flatten(b))
  assert set(fa) == set(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=".".join(k))


def max_diff(a, b):
  return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def ours(work, hf_models, size, kind):
  """Our checkpoint dir converted from the HF fixture (converted once, on first use)."""
  d = str(work / f"ours_{size}_{kind}")
  if not os.path.exists(os.path.join(d, "model.json")):
    convert.convert_file(hf_models[size, kind][1], d)
  return d


# --------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory):
  return tmp_path_factory.mktemp("conversion")


class _HFModels(dict):
  """(size, kind) -> (hf model, safetensors path), each built on first use."""

  def __init__(self, work):
    super().__init__()
    self.work = work

  def __missing__(self, key):
    size, kind = key
    m = make_hf(size, pretrain=kind == "pretrain", seed={"pretrain": 1, "classifier": 2}[kind])
    self[key] = (m, save_hf(m, str(self.work / f"hf_{size}_{kind}")))
    return self[key]


@pytest.fixture(scope="module")
def hf_models(work):
  return _HFModels(work)


# ------------------------------------------------------------------ parity
@pytest.mark.parametrize("size", ["tiny", "S"])
def test_pretrain_parity_with_hf(size, hf_models, work):
  hf, path = hf_models[size, "pretrain"]
  dst = str(work / f"ours_{size}_pretrain")
  rep = convert.convert_file(path, dst)
  assert rep.variant == VARIANT[size] and rep.kind == "pretrain" and not rep.warnings
  model = convert.load(dst, opts=OPTS)
  video = video_of(size, 3)
  mask = tube_mask(video.shape[0], grid_of(size), 0.75, 4)
  with torch.no_grad():
    ref = hf(video, bool_masked_pos=torch.from_numpy(mask)).logits.numpy()
  ours = convert.reference_forward(model, video.permute(0, 2, 1, 3, 4), mask)
  assert ours.shape == ref.shape
  diff = max_diff(ours, ref)
  print(f"\n{size} pretrain max |diff| = {diff:.2e} (max |out| {np.abs(ref).max():.1f})")
  assert diff <= TOL


@pytest.mark.parametrize("size", ["tiny", "S"])
def test_classifier_parity_with_hf(size, hf_models, work):
  hf, path = hf_models[size, "classifier"]
  dst = str(work / f"ours_{size}_classifier")
  rep = convert.convert_file(path, dst)
  assert rep.kind == "classifier" and rep.variant == VARIANT[size]
  model = convert.load(dst, opts=OPTS)
  video = video_of(size, 5)
  with torch.no_grad():
    ref = hf(video).logits.numpy()
  ours = convert.reference_forward(model, video.permute(0, 2, 1, 3, 4))
  diff = max_diff(ours, ref)
  print(f"\n{size} classifier max |diff| = {diff:.2e} (max |logit| {np.abs(ref).max():.1f})")
  assert ours.shape == ref.shape and diff <= TOL


def test_reference_forward_matches_model_call(hf_models, work):
  """The normalised-pixel path equals the model's own uint8 path."""
  from vmae2_jax.models.patching import MEAN, STD
  model = convert.load(ours(work, hf_models, "tiny", "classifier"), opts=OPTS)
  rng = np.random.default_rng(0)
  clip = rng.integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
  normalised = ((clip / 255.0 - MEAN) / STD).astype(np.float32).transpose(0, 4, 1, 2, 3)
  a = convert.reference_forward(model, normalised)
  b = np.asarray(model(clip))
  assert max_diff(a, b) <= 1e-5


# ----------------------------------------------------------------- export
@pytest.mark.parametrize("kind", ["pretrain", "classifier"])
def test_hf_export_loads_strict_and_matches(kind, hf_models, work):
  hf, _ = hf_models["tiny", kind]
  src = ours(work, hf_models, "tiny", kind)
  out_dir = work / f"export_hf_{kind}"
  dst = str(out_dir / "model.safetensors")
  convert.export_checkpoint(src, dst, to="hf")
  sd = safetensors_torch.load_file(dst)
  with open(out_dir / "config.json") as f:
    cfg = transformers.VideoMAEConfig(**{k: v for k, v in json.load(f).items()
                                         if k not in ("model_type", "architectures")})
  cls = type(hf)
  fresh = reference_eps(cls(cfg))
  fresh.load_state_dict(sd, strict=True)
  for k, v in hf.state_dict().items():
    torch.testing.assert_close(sd[k], v, rtol=0, atol=0)
  video = video_of("tiny", 6)
  with torch.no_grad():
    if kind == "pretrain":
      mask = torch.from_numpy(tube_mask(2, grid_of("tiny"), 0.5, 7))
      a, b = fresh(video, bool_masked_pos=mask).logits, hf(video, bool_masked_pos=mask).logits
    else:
      a, b = fresh(video).logits, hf(video).logits
  torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_round_trip_bit_exact_hf_and_official(hf_models, work):
  src = str(work / "rt_src")
  convert.convert_file(hf_models["tiny", "pretrain"][1], src)
  first, meta = model_io.load_model_params(src)
  for to, name in (("hf", "rt.safetensors"), ("official", "rt.pth")):
    dst = str(work / name)
    convert.export_checkpoint(src, dst, to=to)
    params, _, rep = convert.import_checkpoint(dst, frames=meta["frames"],
                                               image_size=meta["image_size"])
    assert rep.layout == to and rep.variant == "Ti/16"
    assert_trees_equal(params, first)


@pytest.mark.parametrize("kind", ["pretrain", "classifier"])
def test_official_layout_import_and_strict_export(kind, hf_models, work):
  """Reference-layout files (fused qkv, q_bias/v_bias, container, '_orig_mod.') import to the
  same numbers as the HF file, and export back to exactly the same keys and values."""
  hf, hf_path = hf_models["tiny", kind]
  official = hf_to_official(hf.state_dict(), kind == "pretrain")
  container = "model" if kind == "pretrain" else "module"
  path = str(work / f"official_{kind}.pth")
  torch.save({container: {"_orig_mod." + k: v for k, v in official.items()}, "epoch": 3}, path)
  from_off, meta, rep = convert.import_checkpoint(path)
  assert rep.layout == "official" and rep.kind == kind and rep.variant == "Ti/16"
  from_hf, _, _ = convert.import_checkpoint(hf_path)
  assert_trees_equal(from_off, from_hf)

  d = str(work / f"official_{kind}_dir")
  model_io.save_model_params(d, from_off, meta)
  out = str(work / f"official_{kind}_export.pth")
  convert.export_checkpoint(d, out, to="official")
  back = torch.load(out, weights_only=True)
  assert list(back) == [container]
  assert set(back[container]) == set(official)  # what strict=True checks
  for k, v in official.items():
    torch.testing.assert_close(back[container][k], v, rtol=0, atol=0)


# ---------------------------------------------------------------- refusals
def _hf_state(hf_models, kind="pretrain"):
  return {k: v.clone() for k, v in hf_models["tiny", kind][0].state_dict().items()}


def _write(work, name, state):
  """A bare state dict file (in a folder without config.json)."""
  os.makedirs(work / "bare", exist_ok=True)
  path = str(work / "bare" / name)
  safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, path)
  return path


def test_refuses_missing_key(hf_models, work):
  sd = _hf_state(hf_models)
  del sd["videomae.encoder.layer.2.attention.attention.value.bias"]
  with pytest.raises(ConversionError, match=r"missing +videomae\.encoder\.layer\.2\.attention\."
                                            r"attention\.value\.bias +expected shape \[96\]"):
    convert.import_checkpoint(_write(work, "missing.safetensors", sd))


def test_refuses_pretrain_without_encoder_norm(hf_models, work):
  sd = {k: v for k, v in _hf_state(hf_models).items() if not k.startswith("videomae.layernorm")}
  with pytest.raises(ConversionError, match=r"without the encoder's final LayerNorm"):
    convert.import_checkpoint(_write(work, "no_norm.safetensors", sd))


def test_refuses_misshaped_key(hf_models, work):
  sd = _hf_state(hf_models)
  sd["decoder.head.weight"] = sd["decoder.head.weight"][:-3]
  with pytest.raises(ConversionError,
                     match=r"mis-shaped +decoder\.head\.weight +shape \[1533, 64\], expected "
                           r"\[1536, 64\]"):
    convert.import_checkpoint(_write(work, "misshaped.safetensors", sd))


def test_refuses_unexpected_key_and_learned_pos_embed(hf_models, work):
  sd = _hf_state(hf_models)
  sd["videomae.encoder.layer.0.attention.attention.key.bias"] = torch.ones(96)
  with pytest.raises(ConversionError, match=r"unexpected +videomae\.encoder\.layer\.0\."
                                            r"attention\.attention\.key\.bias +shape \[96\]"):
    convert.import_checkpoint(_write(work, "unexpected.safetensors", sd))
  official = hf_to_official(_hf_state(hf_models, "classifier"), False)
  from vmae2_jax.models.posemb import sinusoid_table
  official["pos_embed"] = torch.from_numpy(sinusoid_table(8, 96)[None].copy())
  _, _, rep = convert.import_checkpoint(_write(work, "sin_pos.safetensors", official))
  assert [d[0] for d in rep.dropped] == ["pos_embed"]
  official["pos_embed"] = official["pos_embed"] + 0.5
  with pytest.raises(ConversionError, match=r"unexpected +pos_embed +shape \[1, 8, 96\]"):
    convert.import_checkpoint(_write(work, "learned_pos.safetensors", official))


def test_wrong_variant_refused(hf_models, work):
  with pytest.raises(ConversionError, match="heads but the HF config says"):
    convert.import_checkpoint(hf_models["tiny", "classifier"][1], variant="mu/16")
  bare = _write(work, "no_config.safetensors", _hf_state(hf_models, "classifier"))
  with pytest.raises(ConversionError, match=r"mis-shaped +videomae\.embeddings\."):
    convert.import_checkpoint(bare, variant="mu/16")


def test_zero_qv_biases_warn_and_legacy_names(hf_models, work):
  sd = _hf_state(hf_models, "classifier")
  for k in sd:
    if k.endswith(("query.bias", "value.bias")):
      sd[k].zero_()
  path = _write(work, "zero_bias.safetensors", sd)
  _, _, rep = convert.import_checkpoint(path)
  assert any("q_bias/v_bias" in w and "zero" in w for w in rep.warnings)
  with pytest.raises(ConversionError, match="all zero"):
    convert.import_checkpoint(path, zero_bias="error")
  # Files from older transformers name the biases q_bias / v_bias.
  sd = _hf_state(hf_models, "classifier")
  legacy = {k.replace("query.bias", "q_bias").replace("value.bias", "v_bias"): v
            for k, v in sd.items()}
  a, _, rep = convert.import_checkpoint(_write(work, "legacy.safetensors", legacy))
  b, _, _ = convert.import_checkpoint(hf_models["tiny", "classifier"][1])
  assert_trees_equal(a, b)
  assert any("legacy" in n for n in rep.notes)


# ---------------------------------------------------------------- surgery
def test_pretrain_to_classifier_surgery(hf_models, work):
  params, meta, rep = convert.import_checkpoint(hf_models["tiny", "pretrain"][1],
                                                kind="classifier", num_classes=7)
  assert meta["kind"] == "classifier" and meta["num_classes"] == 7
  dropped = {k for k, _, _ in rep.dropped}
  assert {"mask_token", "encoder_to_decoder.weight", "videomae.layernorm.weight",
          "decoder.head.weight", "decoder.decoder_layers.1.output.dense.bias"} <= dropped
  assert not dropped & {k for k, _, _ in rep.mapped}
  assert "norm" not in params["encoder"] and "decoder" not in params
  assert np.all(params["fc_norm"]["scale"] == 1) and np.all(params["head"]["bias"] == 0)
  assert 1.5e-5 < params["head"]["kernel"].std() < 2.5e-5  # trunc_normal(0.02) * 0.001
  full, _, _ = convert.import_checkpoint(hf_models["tiny", "pretrain"][1])
  assert_trees_equal(params["encoder"], {k: v for k, v in full["encoder"].items() if k != "norm"})


def test_label_map_surgery_710_to_400(work):
  from vmae2_jax.conversion import labels
  hf = make_hf("tiny", pretrain=False, seed=9, num_labels=710)
  path = save_hf(hf, str(work / "hf_k710"))
  params710, _, _ = convert.import_checkpoint(path)
  params, meta, rep = convert.import_checkpoint(path, label_map="710to400")
  rows = labels.label_map("710to400")
  assert meta["num_classes"] == 400
  np.testing.assert_array_equal(params["head"]["kernel"], params710["head"]["kernel"][:, rows])
  np.testing.assert_array_equal(params["head"]["bias"], params710["head"]["bias"][rows])
  # Class j of K400 is row rows[j] of the 710-way head, by name.
  k400, k710 = labels.class_names("k400"), labels.class_names("k710")
  assert all(k710[r] == k400[j] for j, r in enumerate(rows))
  # The trainer path: a 710-way DIR into a 400-way classifier re-indexes automatically.
  d = str(work / "k710_dir")
  convert.convert_file(path, d)
  target = {"encoder": params["encoder"], "fc_norm": params["fc_norm"],
            "head": {"kernel": np.zeros((96, 400), np.float32),
                     "bias": np.zeros((400,), np.float32)}}
  out = convert.apply_init_from(target, d, "classifier")
  np.testing.assert_array_equal(out["head"]["kernel"], params["head"]["kernel"])


def test_apply_init_from_pretrain_to_classifier(hf_models, work):
  import jax
  from flax import nnx
  from vmae2_jax.models import Classifier, get_variant

  def target(variant):  # abstract params, as a trainer holds before initialising
    model = nnx.eval_shape(lambda: Classifier(get_variant(variant), 5, frames=4, image_size=32,
                                              opts=OPTS, rngs=nnx.Rngs(0)))
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))

  d = ours(work, hf_models, "tiny", "pretrain")
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
    convert.apply_init_from(fresh, ours(work, hf_models, "tiny", "classifier"), "pretrain")


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
def test_cli_import_and_export(hf_models, work):
  from vmae2_jax.conversion.cli import main
  dst = str(work / "cli_dir")
  assert main(["--src", hf_models["tiny", "classifier"][1], "--dst", dst]) == 0
  assert os.path.exists(os.path.join(dst, "model.json"))
  assert os.path.exists(os.path.join(dst, "conversion_report.txt"))
  out = str(work / "cli_out" / "k.pth")
  assert main(["--to", "official", "--src", dst, "--dst", out]) == 0
  assert "module" in torch.load(out, weights_only=True)
  assert main(["--src", str(work / "nope.pth"), "--dst", dst]) == 1


def test_cli_without_torch_says_so(monkeypatch, work, capsys):
  from vmae2_jax.conversion import cli, torch_io

  def no_torch(path):
    raise ImportError(torch_io.TORCH_MISSING.format(path=path))
  monkeypatch.setattr(torch_io, "_import_torch", no_torch)
  path = str(work / "x.pth")
  torch.save({"model": {}}, path)
  assert cli.main(["--src", path, "--dst", str(work / "x_dir")]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "vmae2_jax[convert]" in err


def test_python_dash_m_entry_point_without_torch(hf_models, work):
  """The module's __main__ path, as `python -m vmae2_jax.convert` runs it, in a process
  where torch cannot be imported: safetensors files need no torch."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root)
  dst = str(work / "dash_m")
  code = ("import runpy, sys; sys.modules['torch'] = None; "
          f"sys.argv = ['convert', '--src', {hf_models['tiny', 'pretrain'][1]!r}, '--dst', "
          f"{dst!r}]; runpy.run_module('vmae2_jax.convert', run_name='__main__', alter_sys=True)")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                     cwd=root, timeout=120)
  assert r.returncode == 0, r.stderr
  assert "variant: Ti/16" in r.stdout and os.path.exists(os.path.join(dst, "model.json"))


# ------------------------------------------------- encoder-only and big sizes
def test_hf_bare_encoder_import_export(work):
  """A bare VideoMAEModel (keys without 'videomae.', final layernorm) as an encoder."""
  torch.manual_seed(11)
  cfg = hf_config("tiny", pretrain=True)
  hf = reference_eps(randomise(transformers.VideoMAEModel(cfg), 11))
  path = save_hf(hf, str(work / "hf_bare"))
  dst = str(work / "bare_dir")
  rep = convert.convert_file(path, dst)
  assert rep.kind == "encoder" and rep.variant == "Ti/16"
  model = convert.load(dst, opts=OPTS)
  video = video_of("tiny", 12)
  mask = tube_mask(2, grid_of("tiny"), 0.5, 13)
  with torch.no_grad():
    ref = hf(video, bool_masked_pos=torch.from_numpy(mask)).last_hidden_state.numpy()
  ours = convert.reference_forward(model, video.permute(0, 2, 1, 3, 4), mask)
  assert max_diff(ours, ref) <= TOL
  out = str(work / "bare_export" / "model.safetensors")
  convert.export_checkpoint(dst, out, to="hf")
  transformers.VideoMAEModel(cfg).load_state_dict(safetensors_torch.load_file(out), strict=True)


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


def test_reference_masks_follow_the_sampler_conventions(hf_models, work):
  """Boolean masks from masking.to_boolean_masks (dual masking, running cell) through
  reference_forward equal the model's own index-set call; the checkpoint also runs at
  another resolution (64 px) since position tables are regenerated."""
  import jax
  from vmae2_jax.masking.sampler import MaskSpec, sample_masks, to_boolean_masks
  from vmae2_jax.models.patching import MEAN, STD
  d = ours(work, hf_models, "tiny", "pretrain")
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


def test_apply_init_from_a_training_checkpoint(hf_models, work):
  """init_from may also name a training run's checkpoint dir (latest step, params only)."""
  import optax
  from vmae2_jax.checkpointing.manager import Checkpointer
  from vmae2_jax.training.state import TrainState
  src, _, _ = convert.import_checkpoint(hf_models["tiny", "pretrain"][1])
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
