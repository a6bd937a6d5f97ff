"""Pre-training ViT-g/14: 32 x 64 GPUs, lr 6e-4, warmup 30, 300 epochs, clip 0.02, activation
checkpointing.

python -m vmae2_jax.main --config=configs/pretrain_g.py --workdir=DIR [--config.batch_size=...]

On v5p (95 GB per chip), e.g. v5p-128: add --config.model.remat=proj_gelu (compiler-estimated MFU
55.0% against full remat's 46.7%, 66.6 GB per chip at the reference batch, from an unrolled 40-layer
compile; BENCHMARKS.md, issue 15). remat="full" stays the default: proj_gelu does not fit the 32 GB
chips (v4, v6e).
"""

from configs.common import pretrain_recipe


def get_config(arg=None):
  return pretrain_recipe("g/14", per_gpu_batch=32, gpus=64, base_lr=6e-4,
                         warmup_epochs=30, epochs=300, clip_grad=0.02, remat="full", scan_layers=True)
