"""Fine-tuning ViT-L/16 on Something-Something V2: 6 x 32 GPUs, lr 5e-4, dp 0.2, 20 epochs,
segment sampling, no flip, 2x3 views. Source: scripts/finetune/vit_l_ssv2_ft.sh, from the
pre-trained vit_l_hybrid_pt_1200e; the script sets no --layer_decay, so it is the argparse
default 0.75 (B SSv2 uses 0.65, H SSv2 0.8); warmup (5) is a default too.

python -m vmae2_jax.main --config=configs/finetune_l_ssv2.py --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import PRETRAINED
from configs.common import finetune_recipe


def get_config(arg=None):
  return finetune_recipe("L/16", "ssv2", per_gpu_batch=6, gpus=32, base_lr=5e-4,
                         layer_decay=0.75, epochs=20, drop_path=0.2, init_from=PRETRAINED["L/16"])
