"""Fine-tuning ViT-H/16 on Something-Something V2: 4 x 32 GPUs, lr 5e-4, ld 0.8, dp 0.2,
20 epochs, segment sampling, no flip, 2x3 views. Source: scripts/finetune/vit_h_ssv2_ft.sh, from
the pre-trained vit_h_hybrid_pt_1200e; warmup (5) and head dropout (0) are argparse defaults.

python -m vmae2_jax.main --config=configs/finetune_h_ssv2.py --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import PRETRAINED
from configs.common import finetune_recipe


def get_config(arg=None):
  return finetune_recipe("H/16", "ssv2", per_gpu_batch=4, gpus=32, base_lr=5e-4, layer_decay=0.8,
                         epochs=20, drop_path=0.2, init_from=PRETRAINED["H/16"])
