"""Post-pre-training ViT-g/14 on K710 (LabeledHybrid, 710 classes): 3 x 32 GPUs, lr 1e-3, ld 0.9,
dp 0.3, wd 0.1, clip 5.0, warmup 5, 35 epochs, 5x3 test views, activation checkpointing.
Source: scripts/finetune/vit_g_k710_ft.sh, from the pre-trained vit_g_hybrid_pt_1200e (a converted
checkpoint or the workdir of configs/pretrain_g.py).

On v5p (95 GB per chip), e.g. v5p-64 at the reference's 6 clips per chip: add
--config.model.remat=none (45.8 GB per chip; compiler-estimated MFU 70.6% against full remat's
55.3%, 5.36 GB); on v4 and v6e (32 GB) --config.model.remat=proj_gelu (25.9 GB; 64.1% on v5p).
BENCHMARKS.md, issue 15. remat="full" stays the default (the reference's activation checkpointing).

python -m vmae2_jax.main --config=configs/postpretrain_g_k710.py --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import G_PT
from configs.common import finetune_recipe


def get_config(arg=None):
  return finetune_recipe("g/14", "k710", per_gpu_batch=3, gpus=32, base_lr=1e-3, layer_decay=0.9,
                         epochs=35, drop_path=0.3, weight_decay=0.1, clip_grad=5.0,
                         stage="postpretrain", init_from=G_PT, remat="full", scan_layers=True)
