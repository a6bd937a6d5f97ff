"""Adapted: not a published recipe. The demo's fine-tuning stage, chained from
configs/postpretrain_demo.py as K400 is from K710 (the head carries over, same 4 classes):
the same model, data and views; 200 steps, warmup 20, lr 0.032 x 8/256 = 1e-3 (a quarter of the
post-pre-training lr), the recipe's mixup 0.8 / cutmix 1.0 and RandAugment, validation every
50 steps, 2x2 test views on demo:motion_val.

python -m vmae2_jax.main --config=configs/finetune_demo.py --workdir=/tmp/vmae2_demo_finetune --config.init_from=/tmp/vmae2_demo_postpretrain
"""

from configs._stages import demo_stage


def get_config(arg=None):
  return demo_stage("finetune", "/tmp/vmae2_demo_postpretrain", base_lr=0.032, total_steps=200)
