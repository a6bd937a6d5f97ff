"""Adapted: not a published recipe. AVA v2.2 action detection with ViT-g/14 from VideoMAE V2's
K710 model (vit_g_hybrid_pt_1200e_k710_ft, head dropped), the transfer behind the paper's
42.6 mAP, whose detection script is unpublished. Everything as ViT-H's
scripts/ava/videomae_vit_huge_k400_pretrain+finetune/run.sh of MCG-NJU/VideoMAE-Action-Detection
(2 x 64 GPUs, lr 5e-4, 20 epochs, dp 0.2) except layer decay 0.9, the giant's in VideoMAE V2's
own fine-tuning scripts; remat "full" and scanned layers as the other giant configs. RoIAlign
reads the 1/14 map. No AVA mAP is claimed for this code until it runs on AVA.

python -m vmae2_jax.main --config=configs/detect_g_ava22.py --workdir=DIR --config.init_from=CKPT
"""

from configs._detect import detect_recipe


def get_config(arg=None):
  if arg:
    raise ValueError(f"configs/detect_g_ava22.py:{arg}: this config takes no arg")
  return detect_recipe("g/14", per_gpu_batch=2, gpus=64, base_lr=5e-4, layer_decay=0.9,
                       epochs=20, remat="full", scan_layers=True)
