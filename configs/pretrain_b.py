"""Pre-training ViT-B/16: 32 x 32 GPUs, lr 1e-3, warmup 20, 200 epochs (800 effective with 4 views).

python -m vmae2_jax.main --config=configs/pretrain_b.py --workdir=DIR [--config.batch_size=...]
"""

from configs.common import pretrain_recipe


def get_config(arg=None):
  return pretrain_recipe("B/16", per_gpu_batch=32, gpus=32, base_lr=1e-3,
                         warmup_epochs=20, epochs=200)
