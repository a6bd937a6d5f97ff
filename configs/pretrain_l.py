"""Pre-training ViT-L/16: 32 x 48 GPUs, lr 1e-3, warmup 30, 300 epochs.

python -m vmae2_jax.main --config=configs/pretrain_l.py --workdir=DIR [--config.batch_size=...]
"""

from configs.common import pretrain_recipe


def get_config(arg=None):
  return pretrain_recipe("L/16", per_gpu_batch=32, gpus=48, base_lr=1e-3,
                         warmup_epochs=30, epochs=300)
