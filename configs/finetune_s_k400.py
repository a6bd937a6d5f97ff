"""Adapted: not a published recipe. ViT-S/16 on Kinetics-400 (710-way head re-indexed 710 -> 400),
from the distilled student vit_s_k710_dl_from_giant, with the giant's short K710 -> Kinetics
schedule (vit_g_k710_it_k600_ft.sh: lr 1e-5, 3 epochs, warmup 1) at the B/S settings
(16 x 32 GPUs as vit_b_k710_ft.sh, ld 0.75, dp 0.1, wd 0.05), 5x3 views.

The reference evaluates this student directly, without training: add --config.eval_only=True
to reproduce K400 83.7 (16x5x3). The model zoo's 84.0 comes after an unpublished fine-tune
of "several epochs", tested at 16x7x3 (add --config.data.test_num_segment=7).

python -m vmae2_jax.main --config=configs/finetune_s_k400.py --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import distilled


def get_config(arg=None):
  return distilled("S/16", "k400")
