"""Adapted: not a published recipe. Fine-tuning on your own videos (shards built with
python -m data_prep.build_shards, see docs/data.md): the B K400 recipe (vit_b_k400_ft.sh: lr 7e-4
per 256 videos, ld 0.75, dp 0.1, warmup, mixup/cutmix, RandAugment, 2 views, 5x3 test views)
scaled for a small data set:
- batch 64 (8 x 8 devices, or fewer devices with --config.optim.accum_steps): 512 would leave a
  few thousand videos with a handful of updates per epoch; lr scales to 7e-4 x 64/256 = 1.75e-4;
- 30 epochs, warmup 3 (K400 takes 90 for 240k videos; the reference's small sets: UCF101 50,
  HMDB51 15 epochs);
- head dropout 0.5, as the reference's UCF101/HMDB51 recipes;
- from the K710-supervised model where one is published (S/B: the distilled students, g: the K710
  post-pre-trained model; L/H: the pre-trained ones), as the reference starts UCF101/HMDB51
  from K710; always a fresh head (init_fresh_head: never a Kinetics label map);
- classes from the training shards' manifest (num_classes 0); validation every epoch.
The arg picks the variant (default B/16; layer decay 0.75 S/B/L, 0.8 H, 0.9 g).

Ti/16 is the laptop recipe: the model, clip shape (8 frames x 64 x 64) and pre-training of
configs/demo.py (README command 1, workdir /tmp/vmae2_demo), sampling every 2nd frame (a
clip spans 16 frames: 0.64 s at 25 fps), batch 8, 2x2 test views, 40 epochs (warmup 2) and
lr 0.032 x 8/256 = 1e-3 peak: the recipe's 7e-4 x 8/256 = 2.2e-5 is too small to move a fresh
head in the few dozen updates a small set gives (a model that predicts one class).

python -m vmae2_jax.main --config=configs/finetune_own.py[:S/16] --workdir=DIR --config.data.train_path=/shards/mine_train --config.data.val_path=/shards/mine_val --config.init_from=CKPT
"""

from configs import demo
from configs._stages import DISTILLED, G_K710, LAYER_DECAY, PRETRAINED
from configs.common import finetune_recipe

DEMO_PRETRAIN = "/tmp/vmae2_demo"  # README command 1's workdir
START = {**PRETRAINED, **DISTILLED, "g/14": G_K710, "Ti/16": DEMO_PRETRAIN}


def get_config(arg=None):
  variant = arg or "B/16"
  if variant not in START:
    raise ValueError(f"configs/finetune_own.py:{variant}: choose one of {sorted(START)}")
  if variant == "Ti/16":
    return _laptop()
  giant = variant == "g/14"
  c = finetune_recipe(variant, "k400", per_gpu_batch=8, gpus=8, base_lr=7e-4,
                      layer_decay=LAYER_DECAY[variant], epochs=30, warmup_epochs=3,
                      head_dropout=0.5, init_from=START[variant],
                      remat="full" if giant else "none", scan_layers=giant)
  return _own_data(c)


def _laptop():
  """Ti/16 at the demo's clip shape, sized for a few hundred clips on a CPU."""
  pre = demo.get_config()
  c = finetune_recipe(pre.model.variant, "k400", per_gpu_batch=pre.batch_size, gpus=1,
                      base_lr=0.032, layer_decay=0.75, epochs=40, warmup_epochs=2,
                      head_dropout=0.5, init_from=DEMO_PRETRAIN)
  c.data.update(dict(frames=pre.data.frames, image_size=pre.data.image_size, sampling_rate=2,
                     test_num_segment=2, test_num_crop=2))
  c.log_every = 10
  c.checkpoint_every = 200
  return _own_data(c)


def _own_data(c):
  c.model.num_classes = 0
  c.data.train_path = "/shards/mine_train"
  c.data.val_path = "/shards/mine_val"
  c.init_fresh_head = True
  return c
