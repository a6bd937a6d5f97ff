"""Fine-tuning ViT-H/16 on Kinetics-600: 4 x 32 GPUs, lr 1e-3, ld 0.8, dp 0.2, head dropout 0.5,
warmup 5, 40 epochs, 5x3 views. Source: scripts/finetune/vit_h_k600_ft.sh, from the pre-trained
vit_h_hybrid_pt_1200e.
The script's GPUS default is 1 (GPUS_PER_NODE 1, no --async: apparently a debugging leftover);
this config uses the 32 GPUs of the other H scripts, so the batch is 4 x 32 = 128.

python -m vmae2_jax.main --config=configs/finetune_h_k600.py --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import PRETRAINED
from configs.common import finetune_recipe


def get_config(arg=None):
  return finetune_recipe("H/16", "k600", per_gpu_batch=4, gpus=32, base_lr=1e-3, layer_decay=0.8,
                         epochs=40, drop_path=0.2, head_dropout=0.5, init_from=PRETRAINED["H/16"])
