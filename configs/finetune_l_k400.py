"""Fine-tuning ViT-L/16 on Kinetics-400: 6 x 32 GPUs, lr 2e-3, ld 0.75, dp 0.2, 35 epochs,
5x3 views. Source: scripts/finetune/vit_l_k400_ft.sh, from the pre-trained vit_l_hybrid_pt_1200e;
warmup (5), num_sample (2), data set and classes (Kinetics-400) are argparse defaults.

python -m vmae2_jax.main --config=configs/finetune_l_k400.py --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import PRETRAINED
from configs.common import finetune_recipe


def get_config(arg=None):
  return finetune_recipe("L/16", "k400", per_gpu_batch=6, gpus=32, base_lr=2e-3,
                         layer_decay=0.75, epochs=35, drop_path=0.2, init_from=PRETRAINED["L/16"])
