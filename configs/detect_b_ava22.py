"""AVA v2.2 action detection with ViT-B/16: 4 x 32 GPUs, lr 5e-4, ld 0.75, 30 epochs, dp 0.2.
Source: MCG-NJU/VideoMAE-Action-Detection scripts/ava/videomae_vit_base_k400_pretrain+finetune/
run.sh (K400 fine-tuned ViT-B: 31.8 mAP there); run_class_finetuning.py's defaults for warmup (5),
min lr, head init and the lr scaling. Started here from VideoMAE V2's distilled K710 ViT-B
(vit_b_k710_dl_from_giant, head dropped). No AVA mAP is claimed for this code until it runs
on AVA.

python -m vmae2_jax.main --config=configs/detect_b_ava22.py --workdir=DIR --config.init_from=CKPT
"""

from configs._detect import detect_recipe


def get_config(arg=None):
  if arg:
    raise ValueError(f"configs/detect_b_ava22.py:{arg}: this config takes no arg")
  return detect_recipe("B/16", per_gpu_batch=4, gpus=32, base_lr=5e-4, layer_decay=0.75,
                       epochs=30)
