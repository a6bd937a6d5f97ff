"""Defaults of config.detect, the AVA action detection fields (they live in
configs/common.py's base_config with every other default; configs/detect_*.py edit them).
"""

from configs._stages import CKPT, G_K710
from configs.common import base_config


def detect_defaults():
  """A fresh copy of the config.detect defaults."""
  return base_config().detect


# Converted published checkpoints the detection recipes start from (placeholders; override
# with --config.init_from=DIR): VideoMAE V2's K710 classifiers where published (the distilled
# ViT-B, the ViT-g), else VideoMAE's K400 fine-tuned ViT-L/H ("pretrain+finetune" rows of
# VideoMAE-Action-Detection's MODEL_ZOO.md).
DETECT_INIT = {"B/16": f"{CKPT}/vit_b_k710_dl_from_giant", "L/16": f"{CKPT}/videomae_vit_l_k400_ft",
               "H/16": f"{CKPT}/videomae_vit_h_k400_ft", "g/14": G_K710}
AVA = "/data/ava"


def detect_recipe(variant: str, *, per_gpu_batch: int, gpus: int, base_lr: float,
                  layer_decay: float, epochs: int, drop_path: float = 0.2,
                  warmup_epochs: int = 5, remat: str = "none", scan_layers: bool = False):
  """VideoMAE-Action-Detection's run_class_finetuning.py on AVA v2.2 with its defaults:
  AdamW (0.9, 0.999), wd 0.05, lr and min_lr 1e-6 scaled by batch/256, warmup 5 epochs
  then cosine, head init scale 0.001, no head dropout; 16 frames at stride 4, 224 crops of
  short side 256, 80 actions; validation every 10 epochs (its --val_freq 10) on the 60
  evaluation classes, with the published person proposals at score >= 0.8."""
  c = base_config()
  c.stage = "detect"
  c.model.variant = variant
  c.model.num_classes = 80
  c.model.drop_path_rate = drop_path
  c.model.head_dropout = 0.0
  c.model.remat = remat
  c.model.scan_layers = scan_layers
  c.data.train_path = "/data/shards/ava22_train"
  c.data.val_path = "/data/shards/ava22_val"
  c.data.frames, c.data.sampling_rate, c.data.image_size = 16, 4, 224
  c.data.num_sample = 1
  c.batch_size = per_gpu_batch * gpus
  c.epochs = epochs
  c.optim.update(dict(base_lr=base_lr, min_lr=1e-6, warmup_epochs=warmup_epochs,
                      weight_decay=0.05, b1=0.9, b2=0.999, eps=1e-8, clip_grad=0.0,
                      layer_decay=layer_decay))
  c.detect.update(dict(
      proposals=f"{AVA}/annotations/ava_dense_proposals_val.FAIR.recall_93.9.pkl",
      groundtruth=f"{AVA}/annotations/ava_val_v2.2.csv",
      label_map=f"{AVA}/annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt",
      exclusions=f"{AVA}/annotations/ava_val_excluded_timestamps_v2.2.csv"))
  # --val_freq 10: AVA v2.2 trains on ~210.6k annotated keyframes, 1645 steps an epoch at 128
  c.eval.every_steps = 10 * 1645 if c.batch_size == 128 else 0
  c.eval.batch_size = gpus  # one test clip per GPU at a time, as the reference's test loader
  c.init_from = DETECT_INIT[variant]
  c.log_every = 50
  c.checkpoint_every = 1000
  return c
