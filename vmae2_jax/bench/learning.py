"""Does pre-training help? Fine-tuning from a pre-training run vs from scratch, same budget.

  python -m vmae2_jax.bench learning --out=DIR [--seeds=0,1,2]

Generated motion clips (data_prep.generated: the class is the direction of
drift, no single frame shows it) go through the real data path; a mu/16 is
pre-trained on them (labels unused), then fine-tuned from that workdir and,
for comparison, from scratch with the same fine-tuning budget; both are
scored by the multi-view test on held-out clips (another generator seed).
Prints one JSON line per seed. tests/test_learning.py holds the pre-trained
result to >= 90% top-1; docs/demo_results.md has the numbers.

  python -m vmae2_jax.bench learning --distill --out=DIR [--seeds=0,1,2]

compares, with labels for only 32 of the clips, the pre-trained student
fine-tuned on them against the same student distilled from a larger teacher
trained on every label (compare_distillation).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from configs.common import base_config
from data_prep.generated import write_motion_dataset
from vmae2_jax.training import trainer

# Clip and data sizes of the setting (the test and docs/demo_results.md use these).
SETTING = dict(variant="mu/16", frames=8, image_size=32, sampling_rate=2, clip_frames=32,
               speed=(1.0, 2.0), num_train=256, num_val=64, batch_size=32,
               pretrain_steps=300, finetune_steps=200)


def _common(config, train_path: str, seed: int, steps: int):
  s = SETTING
  c = config
  c.seed = seed
  c.model.variant = s["variant"]
  c.data.source = "shards"
  c.data.train_path = train_path
  c.data.frames, c.data.image_size = s["frames"], s["image_size"]
  c.data.sampling_rate = s["sampling_rate"]  # 8 frames from a 16-frame window: 2-4 px a step
  c.data.num_sample = 2
  c.batch_size = s["batch_size"]
  c.epochs, c.optim.warmup_epochs = 1, 0
  c.total_steps, c.warmup_steps = steps, max(1, steps // 10)
  c.log_every, c.checkpoint_every = 50, steps
  c.async_checkpoint = False
  c.reconstruction.enabled = False
  return c


def pretrain_config(train_path: str, *, seed: int = 0, steps: int | None = None):
  """Masked video pre-training on the clips (labels unused), from configs.common.base_config."""
  c = _common(base_config(), train_path, seed, steps or SETTING["pretrain_steps"])
  c.stage = "pretrain"
  c.masking.encoder_ratio = 0.5   # a 4x2x2 token grid: 0.9 would leave one tube visible
  # Raw-pixel targets: per-patch normalisation would blow the flat dark background's
  # faint noise up to unit variance, an unpredictable target that hides the shapes.
  c.normalize_target = False
  c.optim.base_lr = 0.024         # x 32/256 = 3e-3
  c.optim.min_lr = 1e-5
  return c


def finetune_config(train_path: str, val_path: str, *, init_from: str = "", seed: int = 0,
                    steps: int | None = None):
  """Supervised fine-tuning (init_from: the pre-training workdir; "" = from scratch)."""
  c = _common(base_config(), train_path, seed, steps or SETTING["finetune_steps"])
  c.stage = "finetune"
  c.init_from = init_from
  c.data.val_path = val_path
  c.data.flip = False             # a horizontal flip turns "left" into "right"
  c.data.randaug = ""
  c.data.reprob = 0.0
  c.data.test_num_segment, c.data.test_num_crop = 2, 2
  c.optim.update(dict(base_lr=0.024, min_lr=1e-6, b2=0.999, layer_decay=0.75))  # 3e-3 peak
  c.eval.every_steps = -1         # no validation while training: the multi-view test at the end
  return c


def compare(out: str, seed: int = 0, *, modes=("pretrained", "scratch"), log=print) -> dict:
  """Builds the data, pre-trains, fine-tunes from it and from scratch (same budget);
  returns multi-view top-1s (%) and wall times (s)."""
  s = SETTING
  result = {"seed": seed}
  t = time.perf_counter()
  paths = write_motion_dataset(os.path.join(out, "data"), num_train=s["num_train"],
                               num_val=s["num_val"], frames=s["clip_frames"],
                               size=s["image_size"], seed=seed, speed=s["speed"])
  result["data_s"] = time.perf_counter() - t
  if "pretrained" in modes:
    t = time.perf_counter()
    pre = trainer.train(pretrain_config(paths["train"], seed=seed), os.path.join(out, "pretrain"))
    result["pretrain_s"] = time.perf_counter() - t
    result["pretrain_loss"] = [pre["history"][0]["loss"], pre["history"][-1]["loss"]]
    t = time.perf_counter()
    ft = trainer.train(finetune_config(paths["train"], paths["val"], seed=seed,
                                       init_from=os.path.join(out, "pretrain")),
                       os.path.join(out, "finetune"))
    result["finetune_s"] = time.perf_counter() - t
    result["pretrained_top1"] = ft["test_top1"]
    log(f"seed {seed}: pre-trained then fine-tuned: multi-view top-1 {ft['test_top1']:.1f}%")
  if "scratch" in modes:
    t = time.perf_counter()
    sc = trainer.train(finetune_config(paths["train"], paths["val"], seed=seed),
                       os.path.join(out, "scratch"))
    result["scratch_s"] = time.perf_counter() - t
    result["scratch_top1"] = sc["test_top1"]
    log(f"seed {seed}: from scratch: multi-view top-1 {sc['test_top1']:.1f}%")
  return result


# The teacher of the distillation comparison below: larger than the mu/16 student.
TEACHER_VARIANT = "Ti/16"


def _taught_by(config, teacher_from: str):
  """`config` as stage="distill" from `teacher_from` (KL at T=1, no label loss); "" leaves it."""
  if teacher_from:
    config.stage = "distill"
    config.distill.teacher_from = teacher_from
  return config


def train_teacher(paths: dict, out: str, seed: int = 0) -> dict:
  """TEACHER_VARIANT pre-trained then fine-tuned on every label as in compare(); its summary."""
  pre = pretrain_config(paths["train"], seed=seed)
  pre.model.variant = TEACHER_VARIANT
  trainer.train(pre, os.path.join(out, "teacher_pretrain"))
  ft = finetune_config(paths["train"], paths["val"], seed=seed,
                       init_from=os.path.join(out, "teacher_pretrain"))
  ft.model.variant = TEACHER_VARIANT
  return trainer.train(ft, os.path.join(out, "teacher"))


# The distillation comparison where the teacher knows more than the student's labels convey:
# only the first `labelled` training clips carry labels for the student. Both student arms
# start from the student's own pre-training on all the clips (labels unused), as the
# reference's students start from their own pre-trained checkpoints, and train the same
# steps with the same recipe; the teacher was fine-tuned on every label and annotates the
# clips the student has no labels for.
FEW_LABELS = dict(labelled=32, student_steps=200)


def labelled_subset(out: str, seed: int = 0) -> dict:
  """Shard sets of the first FEW_LABELS["labelled"] training clips of `seed`'s data (the
  generator draws clip i from (seed, i) alone) and the same held-out clips."""
  s = SETTING
  return write_motion_dataset(out, num_train=FEW_LABELS["labelled"], num_val=s["num_val"],
                              frames=s["clip_frames"], size=s["image_size"], seed=seed,
                              speed=s["speed"])


def few_labels_student_config(train_path: str, val_path: str, init_from: str,
                              teacher_from: str = "", *, seed: int = 0):
  """The mu/16 student from its pre-training workdir, FEW_LABELS' steps, the fine-tuning
  recipe above: on labels, or distilled from teacher_from (no label read)."""
  c = finetune_config(train_path, val_path, seed=seed, steps=FEW_LABELS["student_steps"],
                      init_from=init_from)
  return _taught_by(c, teacher_from)


def compare_distillation(out: str, seed: int = 0, *, log=print) -> dict:
  """For one seed (data, teacher, student pre-training, batches): the mu/16 student
  fine-tuned on the FEW_LABELS labelled clips with labels, vs distilled from the teacher
  on all the training clips without a label, vs distilled on the labelled clips only (the
  same inputs as the labels arm: what the soft targets alone add). Multi-view top-1s (%)
  on the held-out clips and wall times (s)."""
  s, f = SETTING, FEW_LABELS
  result = {"seed": seed, "teacher_variant": TEACHER_VARIANT, **f}
  t = time.perf_counter()
  paths = write_motion_dataset(os.path.join(out, "data"), num_train=s["num_train"],
                               num_val=s["num_val"], frames=s["clip_frames"],
                               size=s["image_size"], seed=seed, speed=s["speed"])
  labelled = labelled_subset(os.path.join(out, "labelled"), seed)
  result["data_s"] = time.perf_counter() - t
  t = time.perf_counter()
  result["teacher_top1"] = train_teacher(paths, out, seed)["test_top1"]
  result["teacher_s"] = time.perf_counter() - t
  t = time.perf_counter()
  pretrained = os.path.join(out, "pretrain")
  trainer.train(pretrain_config(paths["train"], seed=seed), pretrained)
  result["pretrain_s"] = time.perf_counter() - t
  teacher = os.path.join(out, "teacher")
  arms = (("labels", labelled["train"], ""), ("distilled", paths["train"], teacher),
          ("distilled_labelled_clips", labelled["train"], teacher))
  for name, train_path, teacher_from in arms:
    c = few_labels_student_config(train_path, paths["val"], pretrained, teacher_from,
                                  seed=seed)
    t = time.perf_counter()
    result[f"{name}_top1"] = trainer.train(c, os.path.join(out, name))["test_top1"]
    result[f"{name}_s"] = time.perf_counter() - t
  log(f"seed {seed}: teacher {result['teacher_variant']} {result['teacher_top1']:.1f}%; mu/16 "
      f"student, {f['student_steps']} steps from its pre-training, {f['labelled']} labelled "
      f"clips: labels {result['labels_top1']:.1f}%, distilled on all {s['num_train']} clips "
      f"{result['distilled_top1']:.1f}%, distilled on the labelled clips "
      f"{result['distilled_labelled_clips_top1']:.1f}%")
  return result


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  while argv and not argv[0].startswith("-"):  # tolerate "learning" in front
    argv.pop(0)
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.bench learning",
                              description="Pre-trained vs from-scratch fine-tuning on "
                              "generated motion clips (docs/demo_results.md).")
  p.add_argument("--out", required=True)
  p.add_argument("--seeds", default="0")
  p.add_argument("--distill", action="store_true",
                 help="instead: a Ti/16 teacher fine-tuned on every label, then the pre-trained "
                 "mu/16 student with 32 labelled clips vs distilled (docs/demo_results.md)")
  a = p.parse_args(argv)
  for seed in [int(x) for x in a.seeds.split(",")]:
    run = compare_distillation if a.distill else compare
    r = run(os.path.join(a.out, f"seed{seed}"), seed)
    print(json.dumps(r), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
