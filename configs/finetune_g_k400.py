"""Fine-tuning ViT-g/14 on Kinetics-400, the progressive pipeline (K400 88.4 at 16x5x3): from the
K710 post-pre-trained model (vit_g_hybrid_pt_1200e_k710_ft, or the workdir of
configs/postpretrain_g_k710.py), its 710-way head re-indexed 710 -> 400; 3 x 32 GPUs, lr 1e-5,
ld 0.9, dp 0.25, wd 0.1, warmup 1, 3 epochs, 5x3 views. Source:
scripts/finetune/vit_g_k710_it_k400_ft.sh.

Arg "direct": scripts/finetune/vit_g_k400_ft.sh (K400 87.2), from the pre-trained
vit_g_hybrid_pt_1200e: 3 x 64 GPUs, lr 1e-3, ld 0.9, dp 0.2, wd 0.1, warmup 5, 30 epochs.

On v5p (95 GB per chip), e.g. v5p-64 at the reference's 6 clips per chip: add
--config.model.remat=none (45.8 GB per chip; compiler-estimated MFU 70.6% against full remat's
55.3%, 5.36 GB); on v4 and v6e (32 GB) --config.model.remat=proj_gelu (25.9 GB; 64.1% on v5p).
BENCHMARKS.md, issue 15. remat="full" stays the default (the reference's activation checkpointing).

python -m vmae2_jax.main --config=configs/finetune_g_k400.py[:direct] --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import G_PT, giant_from_k710
from configs.common import finetune_recipe


def get_config(arg=None):
  if arg == "direct":
    return finetune_recipe("g/14", "k400", per_gpu_batch=3, gpus=64, base_lr=1e-3,
                           layer_decay=0.9, epochs=30, drop_path=0.2, weight_decay=0.1,
                           init_from=G_PT, remat="full", scan_layers=True)
  if arg:
    raise ValueError(f"configs/finetune_g_k400.py:{arg}: the only arg is 'direct'")
  return giant_from_k710("k400")
