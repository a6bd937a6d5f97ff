"""AVA v2.2 action detection with ViT-H/16: 2 x 64 GPUs, lr 5e-4, ld 0.8, 20 epochs, dp 0.2,
activation checkpointing. Source: MCG-NJU/VideoMAE-Action-Detection
scripts/ava/videomae_vit_huge_k400_pretrain+finetune/run.sh (K400 fine-tuned ViT-H: 39.5 mAP
there; --use_checkpoint -> remat "full"); run_class_finetuning.py's defaults for warmup (5),
min lr, head init and the lr scaling. No AVA mAP is claimed for this code until it runs on AVA.

python -m vmae2_jax.main --config=configs/detect_h_ava22.py --workdir=DIR --config.init_from=CKPT
"""

from configs._detect import detect_recipe


def get_config(arg=None):
  if arg:
    raise ValueError(f"configs/detect_h_ava22.py:{arg}: this config takes no arg")
  return detect_recipe("H/16", per_gpu_batch=2, gpus=64, base_lr=5e-4, layer_decay=0.8,
                       epochs=20, remat="full")
