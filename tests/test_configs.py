"""The stage configs: every file loads, and the supervised ones carry the reference recipes.

SCRIPTS below is transcribed from OpenGVLab/VideoMAEv2 scripts/finetune/*.sh (the flags each
script sets, nothing else) and DEFAULTS from run_class_finetuning.py's argparse, independently
of configs/; when the reference mirror is on this machine the transcription itself is checked
against the scripts.
"""

import ast
import importlib
import os
import re
import subprocess

import pytest
from absl import flags as absl_flags
from ml_collections import config_flags

from configs.common import base_config
from vmae2_jax.training.config_checks import check_classify_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "configs")
MIRROR = "/work/.mirror/OpenGVLab+VideoMAEv2/repo"

CONFIGS = sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                 if f.endswith(".py") and not f.startswith("_") and f != "common.py")
ARGS = {"finetune_b_k400": [None, "distilled"], "finetune_b_k710": [None, "distilled"],
        "finetune_g_k400": [None, "direct"],
        "finetune_own": [None, "Ti/16", "S/16", "B/16", "L/16", "H/16", "g/14"]}
CASES = [(name, arg) for name in CONFIGS for arg in ARGS.get(name, [None])]

# run_class_finetuning.py argparse defaults (for the flags a script leaves out).
DEFAULTS = dict(batch_size=64, epochs=30, lr=1e-3, min_lr=1e-6, warmup_epochs=5, layer_decay=0.75,
                drop_path=0.1, head_drop_rate=0.0, weight_decay=0.05, clip_grad=None,
                num_sample=2, sampling_rate=4, num_frames=16, input_size=224,
                test_num_segment=10, test_num_crop=3, nb_classes=400, data_set="Kinetics-400",
                smoothing=0.1, mixup=0.8, cutmix=1.0, mixup_prob=1.0, mixup_switch_prob=0.5,
                aa="rand-m7-n4-mstd0.5-inc1", reprob=0.25, opt_eps=1e-8)
FLAGS = tuple(k for k in DEFAULTS if k not in ("smoothing", "mixup", "cutmix", "mixup_prob",
                                               "mixup_switch_prob", "aa", "reprob", "opt_eps"))

# scripts/finetune/<name>: GPUS default, --model, the --finetune file and the tracked flags set.
SCRIPTS = {
    "vit_b_k400_ft.sh": dict(
        GPUS=32, model="vit_base_patch16_224", init="vit_b_hybrid_pt_800e", batch_size=16,
        input_size=224, num_frames=16, sampling_rate=4, lr=7e-4, weight_decay=0.05,
        layer_decay=0.75, test_num_segment=5, test_num_crop=3, epochs=90),
    "vit_b_k710_ft.sh": dict(
        GPUS=32, model="vit_base_patch16_224", init="vit_b_hybrid_pt_800e",
        data_set="Kinetics-710", nb_classes=710, batch_size=16, input_size=224, num_frames=16,
        sampling_rate=4, num_sample=2, lr=7e-4, drop_path=0.1, head_drop_rate=0.0,
        layer_decay=0.75, warmup_epochs=5, epochs=90, test_num_segment=5, test_num_crop=3),
    "vit_b_ssv2_ft.sh": dict(
        GPUS=16, model="vit_base_patch16_224", init="vit_b_hybrid_pt_800e", data_set="SSV2",
        nb_classes=174, batch_size=16, num_sample=2, input_size=224, num_frames=16, lr=2e-3,
        layer_decay=0.65, weight_decay=0.05, epochs=25, test_num_segment=2, test_num_crop=3),
    "vit_l_k400_ft.sh": dict(
        GPUS=32, model="vit_large_patch16_224", init="vit_l_hybrid_pt_1200e", batch_size=6,
        input_size=224, num_frames=16, sampling_rate=4, lr=2e-3, drop_path=0.2,
        layer_decay=0.75, weight_decay=0.05, epochs=35, test_num_segment=5, test_num_crop=3),
    "vit_l_ssv2_ft.sh": dict(
        GPUS=32, model="vit_large_patch16_224", init="vit_l_hybrid_pt_1200e", data_set="SSV2",
        nb_classes=174, batch_size=6, num_sample=2, input_size=224, num_frames=16, lr=5e-4,
        weight_decay=0.05, drop_path=0.2, epochs=20, test_num_segment=2, test_num_crop=3),
    "vit_h_k400_ft.sh": dict(
        GPUS=32, model="vit_huge_patch16_224", init="vit_h_hybrid_pt_1200e",
        data_set="Kinetics-400", nb_classes=400, batch_size=4, input_size=224, num_frames=16,
        sampling_rate=4, num_sample=2, lr=1e-3, drop_path=0.2, head_drop_rate=0.5,
        layer_decay=0.8, weight_decay=0.05, warmup_epochs=5, epochs=40, test_num_segment=5,
        test_num_crop=3),
    "vit_h_k600_ft.sh": dict(
        GPUS=1, model="vit_huge_patch16_224", init="vit_h_hybrid_pt_1200e",
        data_set="Kinetics-600", nb_classes=600, batch_size=4, input_size=224, num_frames=16,
        sampling_rate=4, num_sample=2, lr=1e-3, drop_path=0.2, head_drop_rate=0.5,
        layer_decay=0.8, weight_decay=0.05, warmup_epochs=5, epochs=40, test_num_segment=5,
        test_num_crop=3),
    "vit_h_k710_ft.sh": dict(
        GPUS=32, model="vit_huge_patch16_224", init="vit_h_hybrid_pt_1200e",
        data_set="Kinetics-710", nb_classes=710, batch_size=4, input_size=224, num_frames=16,
        sampling_rate=4, num_sample=2, lr=1e-3, min_lr=1e-6, drop_path=0.2, head_drop_rate=0.5,
        layer_decay=0.8, weight_decay=0.05, warmup_epochs=5, epochs=40, test_num_segment=5,
        test_num_crop=3),
    "vit_h_ssv2_ft.sh": dict(
        GPUS=32, model="vit_huge_patch16_224", init="vit_h_hybrid_pt_1200e", data_set="SSV2",
        nb_classes=174, batch_size=4, num_sample=2, input_size=224, num_frames=16, lr=5e-4,
        weight_decay=0.05, drop_path=0.2, layer_decay=0.8, epochs=20, test_num_segment=2,
        test_num_crop=3),
    "vit_g_k400_ft.sh": dict(
        GPUS=64, model="vit_giant_patch14_224", init="vit_g_hybrid_pt_1200e",
        data_set="Kinetics-400", nb_classes=400, batch_size=3, input_size=224, num_frames=16,
        sampling_rate=4, num_sample=2, lr=1e-3, drop_path=0.2, layer_decay=0.9,
        weight_decay=0.1, warmup_epochs=5, epochs=30, test_num_segment=5, test_num_crop=3),
    "vit_g_k710_ft.sh": dict(
        GPUS=32, model="vit_giant_patch14_224", init="vit_g_hybrid_pt_1200e",
        data_set="Kinetics-710", nb_classes=710, batch_size=3, input_size=224, num_frames=16,
        sampling_rate=4, num_sample=2, lr=1e-3, drop_path=0.3, clip_grad=5.0, layer_decay=0.9,
        weight_decay=0.1, warmup_epochs=5, epochs=35, test_num_segment=5, test_num_crop=3),
    "vit_g_k710_it_k400_ft.sh": dict(
        GPUS=32, model="vit_giant_patch14_224", init="vit_g_hybrid_pt_1200e_k710_ft",
        data_set="Kinetics-400", nb_classes=400, batch_size=3, input_size=224, num_frames=16,
        sampling_rate=4, num_sample=2, lr=1e-5, drop_path=0.25, layer_decay=0.9,
        weight_decay=0.1, warmup_epochs=1, epochs=3, test_num_segment=5, test_num_crop=3),
    "vit_g_k710_it_k600_ft.sh": dict(
        GPUS=32, model="vit_giant_patch14_224", init="vit_g_hybrid_pt_1200e_k710_ft",
        data_set="Kinetics-600", nb_classes=600, batch_size=3, input_size=224, num_frames=16,
        sampling_rate=4, num_sample=2, lr=1e-5, drop_path=0.25, layer_decay=0.9,
        weight_decay=0.1, warmup_epochs=1, epochs=3, test_num_segment=5, test_num_crop=3),
    "vit_g_ssv2_ft.sh": dict(
        GPUS=32, model="vit_giant_patch14_224", init="vit_g_hybrid_pt_1200e", data_set="SSV2",
        nb_classes=174, batch_size=3, input_size=224, num_frames=16, sampling_rate=4,
        num_sample=2, lr=3e-4, drop_path=0.25, layer_decay=0.9, weight_decay=0.05,
        warmup_epochs=5, epochs=20, test_num_segment=2, test_num_crop=3),
    "vit_g_k710_it_ucf101_ft.sh": dict(
        GPUS=8, model="vit_giant_patch14_224", init="vit_g_hybrid_pt_1200e_k710_ft",
        data_set="UCF101", nb_classes=101, batch_size=3, num_sample=2, input_size=224,
        num_frames=16, sampling_rate=4, lr=1e-3, layer_decay=0.9, weight_decay=0.05, epochs=50,
        drop_path=0.35, head_drop_rate=0.5, test_num_segment=5, test_num_crop=3),
    "vit_g_k710_it_hmdb51_ft.sh": dict(
        GPUS=8, model="vit_giant_patch14_224", init="vit_g_hybrid_pt_1200e_k710_ft",
        data_set="HMDB51", nb_classes=51, batch_size=3, num_sample=2, input_size=224,
        num_frames=16, sampling_rate=2, lr=5e-4, layer_decay=0.9, weight_decay=0.05, epochs=15,
        drop_path=0.35, head_drop_rate=0.5, test_num_segment=5, test_num_crop=3),
}
# Which script each config reproduces; GPUS overrides where a script's default is not the run.
SOURCES = {
    ("postpretrain_g_k710", None): "vit_g_k710_ft.sh",
    ("finetune_b_k400", None): "vit_b_k400_ft.sh",
    ("finetune_b_k710", None): "vit_b_k710_ft.sh",
    ("finetune_b_ssv2", None): "vit_b_ssv2_ft.sh",
    ("finetune_l_k400", None): "vit_l_k400_ft.sh",
    ("finetune_l_ssv2", None): "vit_l_ssv2_ft.sh",
    ("finetune_h_k400", None): "vit_h_k400_ft.sh",
    ("finetune_h_k600", None): "vit_h_k600_ft.sh",
    ("finetune_h_k710", None): "vit_h_k710_ft.sh",
    ("finetune_h_ssv2", None): "vit_h_ssv2_ft.sh",
    ("finetune_g_k400", None): "vit_g_k710_it_k400_ft.sh",
    ("finetune_g_k400", "direct"): "vit_g_k400_ft.sh",
    ("finetune_g_k600", None): "vit_g_k710_it_k600_ft.sh",
    ("finetune_g_ssv2", None): "vit_g_ssv2_ft.sh",
    ("finetune_g_ucf101", None): "vit_g_k710_it_ucf101_ft.sh",
    ("finetune_g_hmdb51", None): "vit_g_k710_it_hmdb51_ft.sh",
}
GPUS_OVERRIDE = {"vit_h_k600_ft.sh": 32}  # GPUS:-1 in the script; the other H scripts use 32

# Adapted configs: (the script they follow, what differs from it).


def _student(v, ds):
  """A distilled student with the giant's K710 -> Kinetics schedule at the B/S settings."""
  return ("vit_g_k710_it_k600_ft.sh", dict(
      model={"s": "vit_small_patch16_224", "b": "vit_base_patch16_224"}[v],
      init=f"vit_{v}_k710_dl_from_giant", batch_size=16, GPUS=32, layer_decay=0.75,
      drop_path=0.1, weight_decay=0.05, nb_classes=int(ds[1:]), data_set=f"Kinetics-{ds[1:]}"))


ADAPTED = {
    ("finetune_g_k700", None): ("vit_g_k710_it_k600_ft.sh",
                                dict(data_set="Kinetics-700", nb_classes=700)),
    ("finetune_s_k400", None): _student("s", "k400"),
    ("finetune_s_k600", None): _student("s", "k600"),
    ("finetune_s_k700", None): _student("s", "k700"),
    ("finetune_s_k710", None): _student("s", "k710"),
    ("finetune_b_k400", "distilled"): _student("b", "k400"),
    ("finetune_b_k600", None): _student("b", "k600"),
    ("finetune_b_k700", None): _student("b", "k700"),
    ("finetune_b_k710", "distilled"): _student("b", "k710"),
}

MODELS = {"vit_small_patch16_224": "S/16", "vit_base_patch16_224": "B/16",
          "vit_large_patch16_224": "L/16", "vit_huge_patch16_224": "H/16",
          "vit_giant_patch14_224": "g/14"}
CLASSES = {"k400": 400, "k600": 600, "k700": 700, "k710": 710, "ssv2": 174, "ucf101": 101,
           "hmdb51": 51, "demo": 5, "own": 0, "ava22": 80}
VARIANTS = {"s": "S/16", "b": "B/16", "l": "L/16", "h": "H/16", "g": "g/14", "demo": "Ti/16"}


def load(name, arg=None):
  return importlib.import_module(f"configs.{name}").get_config(arg)


def flat(cfg, prefix=""):
  out = {}
  for k, v in cfg.items():
    if hasattr(v, "items"):
      out.update(flat(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def expected_recipe(name, arg):
  """The reference run a (config, arg) reproduces: argparse defaults, the script, adaptations."""
  if (name, arg) in SOURCES:
    script = SOURCES[(name, arg)]
    changes = {"GPUS": GPUS_OVERRIDE[script]} if script in GPUS_OVERRIDE else {}
  else:
    script, changes = ADAPTED[(name, arg)]
  return {**DEFAULTS, **SCRIPTS[script], **changes}


def test_the_expected_tables_cover_every_supervised_config():
  supervised = {(n, a) for n, a in CASES if n.startswith(("postpretrain_", "finetune_"))
                and "demo" not in n and n != "finetune_own"}
  assert supervised == set(SOURCES) | set(ADAPTED)


@pytest.mark.parametrize("name,arg", CASES)
def test_config_loads_with_base_fields_only(name, arg):
  c = load(name, arg)
  assert set(flat(c)) == set(flat(base_config())), "a config added or lost a field"
  for key, value in flat(c).items():
    default = flat(base_config())[key]
    if default is not None and value is not None:
      assert isinstance(value, type(default)) or (
          isinstance(default, float) and isinstance(value, int)), key


@pytest.mark.parametrize("name,arg", CASES)
def test_stage_variant_and_classes_follow_the_file_name(name, arg):
  c = load(name, arg)
  stage, size, *rest = name.split("_") if name != "demo" else ("pretrain", "demo")
  assert c.stage == stage
  if size == "own":
    assert c.model.variant == (arg or "B/16")
  else:
    assert c.model.variant == VARIANTS[size]
  if rest:
    dataset = "own" if size == "own" else ("demo" if size == "demo" else rest[0])
    assert c.model.num_classes == CLASSES[dataset]


@pytest.mark.parametrize("name,arg", [c for c in CASES if c in SOURCES or c in ADAPTED])
def test_supervised_recipe_matches_the_reference(name, arg):
  c, r = load(name, arg), expected_recipe(name, arg)
  assert c.model.variant == MODELS[r["model"]]
  assert c.model.num_classes == r["nb_classes"]
  assert c.batch_size == r["batch_size"] * r["GPUS"]
  assert c.optim.accum_steps == 1
  o = c.optim
  assert (o.base_lr, o.min_lr, o.warmup_epochs, o.layer_decay, o.weight_decay) == (
      r["lr"], r["min_lr"], r["warmup_epochs"], r["layer_decay"], r["weight_decay"])
  assert (o.b1, o.b2, o.eps) == (0.9, 0.999, r["opt_eps"])
  assert o.clip_grad == (r["clip_grad"] or 0.0)
  assert c.epochs == r["epochs"] and c.total_steps == 0 and c.warmup_steps == 0
  assert c.model.drop_path_rate == r["drop_path"]
  assert c.model.head_dropout == r["head_drop_rate"]
  d = c.data
  assert (d.frames, d.image_size, d.num_sample) == (r["num_frames"], r["input_size"],
                                                     r["num_sample"])
  assert (d.test_num_segment, d.test_num_crop) == (r["test_num_segment"], r["test_num_crop"])
  ssv2 = r["data_set"] == "SSV2"
  assert d.sampling == ("segment" if ssv2 else "dense")
  assert d.flip == (not ssv2)
  if not ssv2:  # SSv2 clips are segment-sampled: the script's sampling_rate is unused
    assert d.sampling_rate == r["sampling_rate"]
  assert (d.randaug, d.reprob) == (r["aa"], r["reprob"])
  m = c.mixup
  assert (m.mixup_alpha, m.cutmix_alpha, m.prob, m.switch_prob, m.label_smoothing) == (
      r["mixup"], r["cutmix"], r["mixup_prob"], r["mixup_switch_prob"], r["smoothing"])
  assert os.path.basename(c.init_from) == r["init"]
  from_k710 = r["init"].endswith(("_k710_ft", "_k710_dl_from_giant"))
  kinetics = r["data_set"] in ("Kinetics-400", "Kinetics-600", "Kinetics-700")
  assert c.init_label_map == (f"710to{r['nb_classes']}" if from_k710 and kinetics else "")
  assert not c.init_fresh_head
  giant = c.model.variant == "g/14"
  assert (c.model.remat, c.model.scan_layers) == (("full", True) if giant else ("none", False))
  # the config can run on the script's GPU count
  check_classify_config(c, r["GPUS"], c.model.num_classes)


# MCG-NJU/VideoMAE-Action-Detection scripts/ava/videomae_vit_*_k400_pretrain+finetune/run.sh:
# --batch_size per GPU x GPUs (nproc_per_node 8 x nnodes), --lr, --layer_decay, --epochs,
# --drop_path, --use_checkpoint; ViT-g (adapted, no script) takes H's with layer decay 0.9.
DETECT_SCRIPTS = {
    "detect_b_ava22": dict(batch=4 * 32, lr=5e-4, ld=0.75, epochs=30, dp=0.2, ckpt=False),
    "detect_l_ava22": dict(batch=4 * 32, lr=5e-4, ld=0.8, epochs=20, dp=0.2, ckpt=True),
    "detect_h_ava22": dict(batch=2 * 64, lr=5e-4, ld=0.8, epochs=20, dp=0.2, ckpt=True),
    "detect_g_ava22": dict(batch=2 * 64, lr=5e-4, ld=0.9, epochs=20, dp=0.2, ckpt=True),
}


@pytest.mark.parametrize("name", sorted(DETECT_SCRIPTS))
def test_detection_recipe_matches_the_reference_script(name):
  from vmae2_jax.training.tasks.detect import check_detect_config
  c, r = load(name, None), DETECT_SCRIPTS[name]
  assert (c.stage, c.model.num_classes, c.batch_size, c.epochs) == (
      "detect", 80, r["batch"], r["epochs"])
  o = c.optim  # run_class_finetuning.py defaults for what the scripts leave out
  assert (o.base_lr, o.layer_decay, o.weight_decay, o.warmup_epochs, o.min_lr) == (
      r["lr"], r["ld"], 0.05, 5, 1e-6)
  assert (o.b1, o.b2, o.eps, o.clip_grad) == (0.9, 0.999, 1e-8, 0.0)
  assert (c.model.drop_path_rate, c.model.head_dropout, c.model.head_init_scale) == (
      r["dp"], 0.0, 0.001)
  assert (c.model.remat == "full") == r["ckpt"]
  d = c.data
  assert (d.frames, d.sampling_rate, d.image_size, d.num_sample) == (16, 4, 224, 1)
  assert (c.detect.short_side, c.detect.crop_size, c.detect.person_score) == (256, 224, 0.8)
  assert c.detect.label_map.endswith("for_activitynet_2019.pbtxt")  # the 60 evaluated classes
  check_detect_config(c, 128)


@pytest.mark.parametrize("name,arg", CASES)
def test_docstring_names_source_and_command(name, arg):
  with open(os.path.join(CONFIG_DIR, f"{name}.py")) as f:
    doc = ast.get_docstring(ast.parse(f.read()))
  assert doc, name
  assert f"python -m vmae2_jax.main --config=configs/{name}.py" in doc
  if (name, arg) in SOURCES:
    assert f"scripts/finetune/{SOURCES[(name, arg)]}" in doc
  elif (name, arg) in ADAPTED or name in ("finetune_own", "postpretrain_demo", "finetune_demo"):
    assert "not a published recipe" in doc
  if arg:
    assert f"{name}.py[:" in doc and (arg in doc or name == "finetune_own")


def test_defaults_are_written_only_in_common():
  for name in os.listdir(CONFIG_DIR):
    if not name.endswith(".py") or name == "common.py":
      continue
    with open(os.path.join(CONFIG_DIR, name)) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
        assert not any(m.startswith("ml_collections") for m in mods), name
      if isinstance(node, ast.Name):
        assert node.id != "ConfigDict", name


@pytest.mark.parametrize("name,arg", [("finetune_b_k400", "bogus"), ("finetune_g_k400", "k710"),
                                      ("finetune_b_k710", "direct"), ("finetune_own", "X/8")])
def test_unknown_args_are_refused(name, arg):
  with pytest.raises(ValueError, match="configs/"):
    load(name, arg)


@pytest.mark.parametrize("spec,check", [
    ("finetune_b_k400.py:distilled", lambda c: c.optim.base_lr == 1e-5),
    ("finetune_g_k400.py:direct", lambda c: c.batch_size == 192),
    ("finetune_own.py:S/16", lambda c: c.model.variant == "S/16"),
    ("finetune_s_k400.py", lambda c: c.model.variant == "S/16")])
def test_command_line_loading_with_args_and_overrides(spec, check):
  """As main.py loads them: ml_collections config_flags, `file:arg`, then --config.* overrides."""
  argv = ["prog", f"--config={os.path.join(CONFIG_DIR, spec)}", "--config.init_from=/x",
          "--config.eval_only=True"]
  fv = absl_flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  c = fv.config
  assert check(c) and c.init_from == "/x" and c.eval_only


def test_own_data_config():
  for arg in ARGS["finetune_own"]:
    c = load("finetune_own", arg)
    assert c.model.num_classes == 0 and c.init_fresh_head and c.init_from
    assert c.data.train_path and c.data.val_path
    assert c.eval.every_steps == 0  # once per epoch
    assert c.optim.layer_decay == {"Ti/16": 0.75, "S/16": 0.75, "B/16": 0.75, "L/16": 0.75,
                                   "H/16": 0.8, "g/14": 0.9}[arg or "B/16"]
    assert c.batch_size < 512 and c.epochs < 90
    check_classify_config(c, 8, 10)


def _docstring_workdir(name):
  with open(os.path.join(CONFIG_DIR, f"{name}.py")) as f:
    doc = ast.get_docstring(ast.parse(f.read()))
  return re.search(r"--workdir=(\S+)", doc).group(1)


def test_demo_stages_chain_and_match_the_pretraining_demo():
  pre = load("demo")
  post, fine = load("postpretrain_demo"), load("finetune_demo")
  assert post.init_from == _docstring_workdir("demo")
  assert fine.init_from == _docstring_workdir("postpretrain_demo")
  for c in (post, fine):
    assert (c.model.variant, c.data.frames, c.data.image_size) == (
        pre.model.variant, pre.data.frames, pre.data.image_size)
    assert (c.data.train_path, c.data.val_path, c.model.num_classes) == (
        "demo:motion_train", "demo:motion_val", 4)
    assert c.batch_size == 8 and c.data.num_sample == 2
    assert (c.data.test_num_segment, c.data.test_num_crop) == (2, 2)
    assert c.data.randaug and c.data.reprob > 0
    assert not c.data.flip  # left/right are classes: a flip would swap them
    assert 100 <= c.total_steps <= 1000 and 0 < c.warmup_steps < c.total_steps
    assert 25 <= c.eval.every_steps <= 100
    check_classify_config(c, 1, 4)
  assert fine.mixup.mixup_alpha > 0 and fine.mixup.cutmix_alpha > 0  # the recipe's mixup
  assert fine.optim.base_lr < post.optim.base_lr


def _script_flags(text):
  """GPUS default, --model, the --finetune file and the tracked flags of a reference script."""
  out = {"GPUS": int(re.search(r"GPUS=\$\{GPUS:-(\d+)\}", text).group(1)),
         "init": re.search(r"MODEL_PATH='[^']*/([^/']+)\.pth'", text).group(1)}
  args = text.split("run_class_finetuning.py", 1)[1]
  for flag, value in re.findall(r"--(\w+) +([^\s\\-][^\s\\]*)", args):
    if flag == "model":
      out["model"] = value
    elif flag in FLAGS:
      out[flag] = type(DEFAULTS[flag])(value) if DEFAULTS[flag] is not None else float(value)
  return out


@pytest.mark.skipif(not os.path.isdir(MIRROR), reason="reference mirror not on this machine")
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_transcription_matches_the_reference_script(script):
  text = subprocess.run(["git", "-C", MIRROR, "show", f"HEAD:scripts/finetune/{script}"],
                        capture_output=True, text=True, check=True).stdout
  assert _script_flags(text) == SCRIPTS[script]


def test_vit_s_config_runs_in_the_cpu_benchmark(capsys):
  """The S config builds its train step on synthetic data (nothing read at import)."""
  import json

  from vmae2_jax.bench import __main__ as bench_main
  argv = [f"--config={os.path.join(CONFIG_DIR, 'finetune_s_k400.py')}", "--variant=mu/16",
          "--frames=4", "--image_size=32", "--steps=1", "--warmup=1", "--rounds=1",
          "--no_encoder_only", "--json"]
  assert bench_main.main(argv) == 0
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert out["variant"] == "mu/16" and out["batch"] == 2
