"""Fine-tuning ViT-g/14 on Kinetics-600 (K600 88.8 at 16x5x3): from the K710 post-pre-trained
model (vit_g_hybrid_pt_1200e_k710_ft, or the workdir of configs/postpretrain_g_k710.py), its
710-way head re-indexed 710 -> 600; 3 x 32 GPUs, lr 1e-5, ld 0.9, dp 0.25, wd 0.1, warmup 1,
3 epochs, 5x3 views. Source: scripts/finetune/vit_g_k710_it_k600_ft.sh.

python -m vmae2_jax.main --config=configs/finetune_g_k600.py --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import giant_from_k710


def get_config(arg=None):
  return giant_from_k710("k600")
