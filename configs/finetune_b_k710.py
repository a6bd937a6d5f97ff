"""Fine-tuning ViT-B/16 on K710 (710 classes): 16 x 32 GPUs, lr 7e-4, ld 0.75, dp 0.1, warmup 5,
90 epochs, 5x3 views. Source: scripts/finetune/vit_b_k710_ft.sh, from the pre-trained
vit_b_hybrid_pt_800e.

Arg "distilled" -- adapted: not a published recipe. The distilled student
vit_b_k710_dl_from_giant continued on K710 with the giant's short K710 -> Kinetics schedule
(lr 1e-5, 3 epochs, warmup 1) at the B settings (16 x 32 GPUs, ld 0.75, dp 0.1, wd 0.05). The
reference evaluates this student directly, without training: add --config.eval_only=True to
reproduce K710 81.5 (16x5x3).

python -m vmae2_jax.main --config=configs/finetune_b_k710.py[:distilled] --workdir=DIR --config.init_from=CKPT
"""

from configs._stages import PRETRAINED, distilled
from configs.common import finetune_recipe


def get_config(arg=None):
  if arg == "distilled":
    return distilled("B/16", "k710")
  if arg:
    raise ValueError(f"configs/finetune_b_k710.py:{arg}: the only arg is 'distilled'")
  return finetune_recipe("B/16", "k710", per_gpu_batch=16, gpus=32, base_lr=7e-4,
                         layer_decay=0.75, epochs=90, drop_path=0.1, head_dropout=0.0,
                         init_from=PRETRAINED["B/16"])
