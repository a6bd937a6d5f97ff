"""Adapted: not a published recipe. The demo's post-pre-training stage: the Ti/16 of
configs/demo.py (8 frames, 64x64) trained as a 5-way classifier (left/right/up/down/natural) on
the embedded demo shards, minutes on CPU: batch 8, 300 steps, warmup 30, lr 0.032 x 8/256 = 1e-3,
ld 0.75, 2 views, mixup/cutmix and RandAugment on, validation every 50 steps, 2x2 test views.
init_from: the pre-training demo's workdir (launch/demo.sh passes it).

python -m vmae2_jax.main --config=configs/postpretrain_demo.py --workdir=/tmp/vmae2_demo_postpretrain --config.init_from=/tmp/vmae2_demo
"""

from configs._stages import demo_stage


def get_config(arg=None):
  return demo_stage("postpretrain", "/tmp/vmae2_demo", base_lr=0.032, total_steps=300)
