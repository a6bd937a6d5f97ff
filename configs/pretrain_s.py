"""Pre-training ViT-S/16. Not a published pre-training run (the published S is distilled from g);
this is the B recipe at S size.

python -m vmae2_jax.main --config=configs/pretrain_s.py --workdir=DIR [--config.batch_size=...]
"""

from configs.common import pretrain_recipe


def get_config(arg=None):
  return pretrain_recipe("S/16", per_gpu_batch=32, gpus=32, base_lr=1e-3,
                         warmup_epochs=20, epochs=200)
