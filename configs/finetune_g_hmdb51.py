"""Fine-tuning ViT-g/14 on HMDB51 (88.1 at 16x5x3, split 1 by default): from the K710
post-pre-trained model (its 710-way head replaced by a fresh 51-way one, fc_norm kept);
3 x 8 GPUs, lr 5e-4, ld 0.9, dp 0.35, head dropout 0.5, wd 0.05, 15 epochs, sampling rate 2,
5x3 views. Source: scripts/finetune/vit_g_k710_it_hmdb51_ft.sh; warmup (5) is the argparse default.

python -m vmae2_jax.main --config=configs/finetune_g_hmdb51.py --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import G_K710
from configs.common import finetune_recipe


def get_config(arg=None):
  return finetune_recipe("g/14", "hmdb51", per_gpu_batch=3, gpus=8, base_lr=5e-4, layer_decay=0.9,
                         epochs=15, drop_path=0.35, head_dropout=0.5, init_from=G_K710,
                         remat="full", scan_layers=True)
