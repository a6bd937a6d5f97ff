"""Shared pieces of the supervised stage configs (not a config file itself).

Placeholder paths of the converted published checkpoints (`python -m vmae2_jax.convert
--src=FILE.pth --dst=DIR`; override with --config.init_from=DIR), the short
K710 -> Kinetics recipe of scripts/finetune/vit_g_k710_it_k{400,600}_ft.sh and the
tiny demo stages that follow configs/demo.py.
"""

from configs import demo
from configs.common import finetune_recipe

CKPT = "/ckpt"
G_PT = f"{CKPT}/vit_g_hybrid_pt_1200e"             # pre-trained (UnlabeledHybrid)
G_K710 = f"{CKPT}/vit_g_hybrid_pt_1200e_k710_ft"   # post-pre-trained on K710 (710 classes)
PRETRAINED = {"B/16": f"{CKPT}/vit_b_hybrid_pt_800e", "L/16": f"{CKPT}/vit_l_hybrid_pt_1200e",
              "H/16": f"{CKPT}/vit_h_hybrid_pt_1200e", "g/14": G_PT}
DISTILLED = {"S/16": f"{CKPT}/vit_s_k710_dl_from_giant",   # students of the K710 giant,
             "B/16": f"{CKPT}/vit_b_k710_dl_from_giant"}   # 710-way heads
LAYER_DECAY = {"S/16": 0.75, "B/16": 0.75, "L/16": 0.75, "H/16": 0.8, "g/14": 0.9}


def from_k710(variant: str, dataset: str, **kw):
  """lr 1e-5, 3 epochs, warmup 1 from a 710-way model; its head re-indexed 710 -> 400/600/700."""
  c = finetune_recipe(variant, dataset, base_lr=1e-5, epochs=3, warmup_epochs=1, **kw)
  if dataset != "k710":
    c.init_label_map = f"710to{dataset[1:]}"
  return c


def giant_from_k710(dataset: str):
  """scripts/finetune/vit_g_k710_it_k{400,600}_ft.sh: 3 x 32 GPUs, ld 0.9, dp 0.25, wd 0.1."""
  return from_k710("g/14", dataset, per_gpu_batch=3, gpus=32, layer_decay=0.9, drop_path=0.25,
                   weight_decay=0.1, init_from=G_K710, remat="full", scan_layers=True)


def distilled(variant: str, dataset: str):
  """Adapted: the giant's K710 -> Kinetics schedule at the B/S batch, layer decay and drop path
  (16 x 32 GPUs as vit_b_k710_ft.sh, ld 0.75, dp 0.1, wd 0.05), from the distilled student."""
  return from_k710(variant, dataset, per_gpu_batch=16, gpus=32, layer_decay=LAYER_DECAY[variant],
                   drop_path=0.1, init_from=DISTILLED[variant])


def demo_stage(stage: str, init_from: str, *, base_lr: float, total_steps: int):
  """A supervised stage on the embedded labelled demo set (demo:motion_train / motion_val:
  shapes drifting left, right, up or down, data_prep.generated) with the model and clip
  shape of configs/demo.py."""
  pre = demo.get_config()
  c = finetune_recipe(pre.model.variant, "k400", per_gpu_batch=pre.batch_size, gpus=1,
                      base_lr=base_lr, layer_decay=0.75, epochs=1, warmup_epochs=0,
                      stage=stage, init_from=init_from)
  c.model.num_classes = 4        # left, right, up, down
  c.data.update(dict(train_path="demo:motion_train", val_path="demo:motion_val",
                     frames=pre.data.frames, image_size=pre.data.image_size,
                     sampling_rate=3,      # 8 frames x 3 = the 24-frame clips
                     test_num_segment=2, test_num_crop=2,
                     flip=False))  # a horizontal flip turns "left" into "right"
  c.total_steps = total_steps
  c.warmup_steps = total_steps // 10
  c.eval.every_steps = 50
  c.log_every = 25
  c.checkpoint_every = 100
  return c


# The students' own post-pre-trained K710 classifiers (not published): the workdirs of
# configs/finetune_b_k710.py and of the same recipe at S/16 from configs/pretrain_s.py.
STUDENT_K710 = {"S/16": "runs/s_k710", "B/16": "runs/b_k710"}


def distill_k710(variant: str):
  """Adapted: the assumed recipe of the reference's distilled students (their code and
  hyper-parameters are unpublished). Cited per number in configs/distill_{s,b}_k710.py."""
  c = finetune_recipe(variant, "k710", per_gpu_batch=16, gpus=32, base_lr=7e-4,
                      layer_decay=LAYER_DECAY[variant], epochs=90, drop_path=0.1,
                      stage="distill", init_from=STUDENT_K710[variant])
  c.model.dtype = "bfloat16"  # the teacher's forward (most of the step) in bf16, as AMP
  c.distill.update(dict(teacher_from=G_K710, teacher_variant="g/14", teacher_image_size=224,
                        temperature=1.0, label_weight=0.0))
  return c
