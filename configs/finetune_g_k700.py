"""Adapted: not a published recipe (the reference has no K700 script or number). ViT-g/14 on
Kinetics-700 with the recipe of scripts/finetune/vit_g_k710_it_k600_ft.sh: from the K710
post-pre-trained model, its 710-way head re-indexed with the packaged 710 -> 700 map; 3 x 32 GPUs,
lr 1e-5, ld 0.9, dp 0.25, wd 0.1, warmup 1, 3 epochs, 5x3 views.

python -m vmae2_jax.main --config=configs/finetune_g_k700.py --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import giant_from_k710


def get_config(arg=None):
  return giant_from_k710("k700")
