"""Pre-training ViT-H/16: 32 x 64 GPUs, lr 1e-3, warmup 30, 300 epochs, activation checkpointing.

python -m vmae2_jax.main --config=configs/pretrain_h.py --workdir=DIR [--config.batch_size=...]
"""

from configs.common import pretrain_recipe


def get_config(arg=None):
  return pretrain_recipe("H/16", per_gpu_batch=32, gpus=64, base_lr=1e-3,
                         warmup_epochs=30, epochs=300, remat="full", scan_layers=True)
