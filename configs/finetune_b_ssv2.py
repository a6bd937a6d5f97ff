"""Fine-tuning ViT-B/16 on Something-Something V2: 16 x 16 GPUs, lr 2e-3, ld 0.65, 25 epochs,
segment sampling, no flip, 2x3 views. Source: scripts/finetune/vit_b_ssv2_ft.sh, from the
pre-trained vit_b_hybrid_pt_800e; drop path (0.1) and warmup (5) are argparse defaults.

python -m vmae2_jax.main --config=configs/finetune_b_ssv2.py --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import PRETRAINED
from configs.common import finetune_recipe


def get_config(arg=None):
  return finetune_recipe("B/16", "ssv2", per_gpu_batch=16, gpus=16, base_lr=2e-3,
                         layer_decay=0.65, epochs=25, init_from=PRETRAINED["B/16"])
