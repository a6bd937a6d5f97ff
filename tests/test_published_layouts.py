"""VideoMAE V2 weights as users get them: OpenGVLab's Hugging Face Hub repositories
(custom code, `model.`-wrapped reference module, config.json `model_config`),
mmaction2's converted files (`backbone.*`, `cls_head.fc_cls.*`) and hf:// through
the hub cache.

Files of each layout are written from the random weights behind the stored
transformers outputs (tests/torch_reference.py), renamed here independently
of the converter, so parity is with numbers torch computed.
"""

import hashlib
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from tests import torch_reference as ref
from tests.test_conversion import channels_first, hf_to_official, max_diff
from vmae2_jax import convert
from vmae2_jax.conversion import cli, detect, init_from, layouts, torch_pickle
from vmae2_jax.conversion.report import ConversionError
from vmae2_jax.models import get_variant
from vmae2_jax.models.options import ModelOptions

TOL = 1e-4
OPTS = ModelOptions(attention="xla", scan_layers=True)
CASE = "tiny_classifier"   # Ti/16 shapes, 4 frames of 32 px, 10 classes
HUB_REPO = "OpenGVLab/VideoMAEv2-Base"


# ------------------------------------------------------------------ files
def opengvlab_state() -> dict:
  """OpenGVLab/VideoMAEv2-*: the reference VisionTransformer (num_classes=0, mean pooling)
  as `model.` of their PreTrainedModel: fc_norm, no head, no final norm."""
  sd = hf_to_official(ref.weights_of(CASE), pretrain=False)
  return {"model." + k: v for k, v in sd.items() if not k.startswith("head.")}


def opengvlab_config(num_heads=3) -> dict:
  """The config.json those repositories carry (custom code; model_config = the
  reference's VisionTransformer arguments), at the tiny case's size."""
  return {"model_type": "VideoMAEv2_Base", "architectures": ["VideoMAEv2_Base"],
          "auto_map": {"AutoModel": "modeling_videomaev2.VideoMAEv2",
                       "AutoConfig": "modeling_config.VideoMAEv2Config"},
          "model_config": {"img_size": 32, "patch_size": 16, "in_chans": 3, "num_classes": 0,
                           "embed_dim": 96, "depth": 4, "num_heads": num_heads, "mlp_ratio": 4,
                           "qkv_bias": True, "qk_scale": None, "drop_rate": 0.0,
                           "attn_drop_rate": 0.0, "drop_path_rate": 0.0,
                           "norm_layer": "nn.LayerNorm", "layer_norm_eps": 1e-6,
                           "init_values": 0.0, "use_learnable_pos_emb": False,
                           "tubelet_size": 2, "use_mean_pooling": True, "with_cp": False,
                           "num_frames": 4, "cos_attn": False}}


def write_opengvlab_folder(directory, config=None) -> str:
  os.makedirs(directory, exist_ok=True)
  save_file(opengvlab_state(), os.path.join(directory, "model.safetensors"))
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config or opengvlab_config(), f)
  return str(directory)


def mmaction2_sinusoid(n, d):
  """mmaction2's get_sinusoid_encoding: float64 angles, float32 table [1, n, d]."""
  vec = np.arange(d, dtype=np.float64)
  vec = np.power(10000.0, -(vec - vec % 2) / d)[None]
  table = np.arange(n, dtype=np.float64)[:, None] * vec
  table[:, 0::2] = np.sin(table[:, 0::2])
  table[:, 1::2] = np.cos(table[:, 1::2])
  return table.astype(np.float32)[None]


def mmaction2_state(head=True) -> dict:
  """mmaction2's Recognizer3D: vit_mae.py VisionTransformer (mmcv PatchEmbed `projection`,
  FFN `layers.0.0` / `layers.1`, pos_embed buffer) as `backbone.`, TimeSformerHead fc_cls."""
  out = {}
  for k, v in hf_to_official(ref.weights_of(CASE), pretrain=False).items():
    if k.startswith("head."):
      if head:
        out["cls_head.fc_cls." + k[len("head."):]] = v
      continue
    k = k.replace("patch_embed.proj.", "patch_embed.projection.")
    k = re.sub(r"\.mlp\.fc1\.", ".mlp.layers.0.0.", k)
    k = re.sub(r"\.mlp\.fc2\.", ".mlp.layers.1.", k)
    out["backbone." + k] = v
  out["backbone.pos_embed"] = mmaction2_sinusoid(2 * 2 * 2, 96)
  return out


def write_hub_cache(cache, repo=HUB_REPO, commit="0123456789abcdef0123456789abcdef01234567"):
  """A cache as huggingface_hub lays it out: blobs named by hash, snapshot files linking
  to them, refs/main naming the snapshot's commit."""
  base = cache / ("models--" + repo.replace("/", "--"))
  src = write_opengvlab_folder(cache.parent / "staging")
  for name in ("model.safetensors", "config.json"):
    data = open(os.path.join(src, name), "rb").read()
    blob = base / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = base / "snapshots" / commit / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
  (base / "refs").mkdir(parents=True, exist_ok=True)
  (base / "refs" / "main").write_text(commit)
  return base / "snapshots" / commit


@pytest.fixture(scope="module")
def work(tmp_path_factory):
  return tmp_path_factory.mktemp("published")


def _logits_from_features(features):
  """The stored classifier's head applied by hand to pooled features."""
  w = ref.weights_of(CASE)
  return features @ w["classifier.weight"].T + w["classifier.bias"]


# ------------------------------------------------------------------ parity
def test_opengvlab_hub_layout_parity_and_report(work):
  """Detected as a B/16-style feature model (fc_norm, no head): its pooled features, given
  the stored head, give transformers' logits; the report names the wrapper and every key."""
  folder = write_opengvlab_folder(work / "opengvlab")
  dst = str(work / "opengvlab_ours")
  rep = convert.convert_file(folder, dst)
  assert (rep.layout, rep.kind, rep.target_kind, rep.variant) == (
      "official", "classifier", "classifier", "Ti/16")
  assert any("'model.'" in n and "OpenGVLab" in n for n in rep.notes)
  assert any("no classification head" in n for n in rep.notes)
  # every tensor is accounted for (named after the noted prefix strip, as for 'module.')
  assert {"model." + k for k, _, _ in rep.mapped} == set(opengvlab_state())
  meta = json.load(open(os.path.join(dst, "model.json")))
  assert (meta["num_classes"], meta["frames"], meta["image_size"]) == (0, 4, 32)

  model = convert.load(dst, opts=OPTS)
  feats = convert.reference_forward(model, channels_first(ref.hf_inputs(CASE)["video"]))
  assert feats.shape == (2, 96)
  want = ref.outputs_of(CASE)["logits"]
  diff = max_diff(_logits_from_features(feats), want)
  print(f"\nOpenGVLab layout: max |logit diff| {diff:.2e}")
  assert diff <= TOL
  with pytest.raises(ValueError, match="no head"):
    model(np.zeros((1, 4, 32, 32, 3), np.float32))
  # predict needs a head; extraction reads the features
  from vmae2_jax.evaluation import inference
  with pytest.raises(inference.UserError, match="feature model without a classification head"):
    inference.load_classifier(dst)
  got, _ = inference.load_classifier(dst, need_head=False)
  assert got.head is None


def test_opengvlab_feature_model_fine_tuning_keeps_fc_norm(work):
  """init_from a feature model: encoder and fc_norm taken (the reference loads fc_norm by
  name), the target's head kept fresh; --num_classes adds a fresh head the same way."""
  folder = write_opengvlab_folder(work / "opengvlab_ft")
  params, _, _ = convert.import_checkpoint(folder)
  target = {"encoder": jax.tree.map(np.zeros_like, params["encoder"]),
            "fc_norm": {"scale": np.ones(96, np.float32), "bias": np.zeros(96, np.float32)},
            "head": {"kernel": np.full((96, 7), 0.5, np.float32),
                     "bias": np.zeros(7, np.float32)}}
  out = init_from.apply_init_from(target, folder, "classifier")
  np.testing.assert_array_equal(out["fc_norm"]["scale"],
                                ref.weights_of(CASE)["fc_norm.weight"])
  np.testing.assert_array_equal(out["head"]["kernel"], target["head"]["kernel"])
  np.testing.assert_array_equal(out["encoder"]["patch_embed"]["kernel"],
                                params["encoder"]["patch_embed"]["kernel"])
  with pytest.raises(ConversionError, match="feature model"):
    init_from.apply_init_from(target, folder, "classifier", label_map="710to400")

  params, meta, rep = convert.import_checkpoint(folder, kind="classifier", num_classes=7)
  assert meta["num_classes"] == 7 and params["head"]["kernel"].shape == (96, 7)
  assert [p for p, _, _ in rep.created] == ["head.kernel", "head.bias"]
  np.testing.assert_array_equal(params["fc_norm"]["bias"], ref.weights_of(CASE)["fc_norm.bias"])


def test_mmaction2_layout_parity_and_report(work):
  """A {'meta', 'state_dict'} .pth of mmaction2's recognizer: logits match transformers',
  the sinusoid pos_embed buffer is dropped with a reason, and export restores the
  reference's names."""
  path = str(work / "mmaction2_k10.pth")
  state = mmaction2_state()
  torch_pickle.save({"meta": {"epoch": 35, "mmaction_version": "1.2.0"}, "state_dict": state},
                    path)
  dst = str(work / "mmaction2_ours")
  rep = convert.convert_file(path, dst)
  assert (rep.layout, rep.kind, rep.variant) == ("mmaction2", "classifier", "Ti/16")
  assert [k for k, _, _ in rep.dropped] == ["backbone.pos_embed"]
  assert {k for k, _, _ in rep.mapped} == set(state) - {"backbone.pos_embed"}
  assert any("'state_dict'" in n for n in rep.notes)
  model = convert.load(dst, opts=OPTS, frames=4, image_size=32)  # no config beside the file
  got = convert.reference_forward(model, channels_first(ref.hf_inputs(CASE)["video"]))
  diff = max_diff(got, ref.outputs_of(CASE)["logits"])
  print(f"\nmmaction2 layout: max |logit diff| {diff:.2e}")
  assert diff <= TOL
  out = str(work / "mmaction2_official.pth")
  convert.export_checkpoint(dst, out, to="official")
  official = hf_to_official(ref.weights_of(CASE), pretrain=False)
  back = torch_pickle.load(out)["module"]
  assert set(back) == set(official)
  for k, v in official.items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_mmaction2_refusals(work):
  """Missing keys are named in mmaction2's own names; a head on the first token
  (use_mean_pooling=False: backbone.norm, no fc_norm) is refused."""
  state = mmaction2_state()
  del state["backbone.blocks.2.mlp.layers.1.weight"]
  path = str(work / "mm_missing.safetensors")
  save_file(state, path)
  with pytest.raises(ConversionError, match=r"missing +backbone\.blocks\.2\.mlp\.layers\.1\.weight"):
    convert.import_checkpoint(path)
  state = mmaction2_state()
  state["backbone.norm.weight"] = state.pop("backbone.fc_norm.weight")
  state["backbone.norm.bias"] = state.pop("backbone.fc_norm.bias")
  path = str(work / "mm_cls_token.safetensors")
  save_file(state, path)
  with pytest.raises(ConversionError, match="first token"):
    convert.import_checkpoint(path)


@pytest.mark.parametrize("layout,prefix,variant,num_classes", [
    ("official", "model.", "B/16", 0), ("official", "model.", "L/16", 0),
    ("official", "model.", "H/16", 0), ("official", "model.", "g/14", 0),
    ("mmaction2", "backbone.", "S/16", 400), ("mmaction2", "backbone.", "B/16", 400)])
def test_published_sizes_of_new_layouts(layout, prefix, variant, num_classes):
  """OpenGVLab/VideoMAEv2-Base/-Large/-Huge/-giant and mmaction2's distilled K400 students:
  shapes alone name the variant (g/14's MLP ratio 48/11 included)."""
  spec = layouts.Spec("classifier", get_variant(variant), num_classes, False)
  state = {}
  for r in layouts.rules_for(layout, spec, "backbone." if layout == "mmaction2" else ""):
    for key, shape in zip(r.srcs, r.src_shapes):
      state[(prefix if layout == "official" else "") + key] = np.broadcast_to(
          np.zeros((), np.float32), shape)
  flavour = detect.detect(state)
  assert (flavour.layout, flavour.kind) == (layout, "classifier")
  name, got, _ = detect.infer_spec(flavour)
  assert name == variant and got.num_classes == num_classes


def test_opengvlab_config_options_refused(work):
  cfg = opengvlab_config()
  cfg["model_config"]["cos_attn"] = True
  folder = write_opengvlab_folder(work / "opengvlab_cos", cfg)
  with pytest.raises(ValueError, match=r"config.json: model_config.cos_attn=True"):
    convert.import_checkpoint(folder)
  cfg = opengvlab_config(num_heads=6)  # the config's heads are used, not width/64
  folder = write_opengvlab_folder(work / "opengvlab_h6", cfg)
  _, meta, rep = convert.import_checkpoint(folder)
  assert rep.variant == "custom" and meta["size"]["heads"] == 6


# ------------------------------------------------------------- hf:// cache
@pytest.fixture
def hub_cache(work, monkeypatch):
  constants = pytest.importorskip("huggingface_hub.constants")
  cache = work / "hub"
  if not cache.exists():
    write_hub_cache(cache)
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  return cache


def test_hf_uri_from_the_cache_convert_and_init_from(hub_cache, work):
  dst = str(work / "from_hub")
  rep = convert.convert_file(f"hf://{HUB_REPO}", dst)
  assert rep.kind == "classifier" and rep.variant == "Ti/16"
  assert any(n.startswith(f"hf://{HUB_REPO} read from the Hugging Face cache") for n in rep.notes)
  assert "snapshots/0123456789abcdef" in rep.source
  params, meta = init_from.read_init_source(f"hf://{HUB_REPO}@main")
  assert meta["kind"] == "classifier" and "head" not in params


def test_hf_uri_missing_says_what_to_download(hub_cache, work, capsys):
  rc = cli.main([f"--src=hf://{HUB_REPO}-Large", f"--dst={work / 'never'}"])
  err = capsys.readouterr().err.strip()
  assert rc == 1 and "\n" not in err, err
  assert f"hf download {HUB_REPO}-Large" in err and "not in the Hugging Face cache" in err
  assert not os.path.exists(work / "never")
  with pytest.raises(FileNotFoundError, match="revision v2"):
    init_from.read_init_source(f"hf://{HUB_REPO}@v2")
  rc = cli.main(["--src=hf://not-a-repo", f"--dst={work / 'never'}"])
  assert rc == 1 and "expected hf://ORG/NAME" in capsys.readouterr().err


def test_hf_uri_init_from_in_a_fresh_process(hub_cache, work):
  """As a user runs it: HF_HUB_CACHE from the environment, offline, via the CLI."""
  env = dict(os.environ, HF_HUB_CACHE=str(hub_cache), HF_HUB_OFFLINE="1")
  out = subprocess.run([sys.executable, "-m", "vmae2_jax.convert", f"--src=hf://{HUB_REPO}",
                        f"--dst={work / 'cli_hub'}"], capture_output=True, text=True, env=env,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "variant: Ti/16" in out.stdout and os.path.exists(work / "cli_hub" / "model.json")
