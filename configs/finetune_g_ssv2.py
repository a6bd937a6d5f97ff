"""Fine-tuning ViT-g/14 on Something-Something V2 (77.0 at 16x2x3): from the pre-trained
vit_g_hybrid_pt_1200e; 3 x 32 GPUs, lr 3e-4, ld 0.9, dp 0.25, wd 0.05, warmup 5, 20 epochs,
segment sampling (the script's --sampling_rate 4 is unused by the SSv2 loader), no flip, 2x3 views.
Source: scripts/finetune/vit_g_ssv2_ft.sh.

python -m vmae2_jax.main --config=configs/finetune_g_ssv2.py --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import G_PT
from configs.common import finetune_recipe


def get_config(arg=None):
  return finetune_recipe("g/14", "ssv2", per_gpu_batch=3, gpus=32, base_lr=3e-4, layer_decay=0.9,
                         epochs=20, drop_path=0.25, init_from=G_PT, remat="full", scan_layers=True)
