"""Adapted: not a published recipe. ViT-B/16 on Kinetics-700 (710-way head re-indexed 710 -> 700),
from the distilled student vit_b_k710_dl_from_giant, with the giant's short K710 -> Kinetics
schedule (vit_g_k710_it_k600_ft.sh: lr 1e-5, 3 epochs, warmup 1) at the B/S settings
(16 x 32 GPUs as vit_b_k710_ft.sh, ld 0.75, dp 0.1, wd 0.05), 5x3 views.

The reference evaluates this student directly, without training: add --config.eval_only=True
(no K700 number is published).

python -m vmae2_jax.main --config=configs/finetune_b_k700.py --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import distilled


def get_config(arg=None):
  return distilled("B/16", "k700")
