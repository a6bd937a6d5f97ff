"""vmae2_jax: VideoMAE V2 (dual masking, ViT-S..g) in JAX/Flax NNX."""

__version__ = "0.1.0"

# Before JAX starts its CPU backend: enough XLA:CPU threads when XLA_FLAGS forces several
# host devices (collectives over them can otherwise starve its pool: cpu_threads.py).
from vmae2_jax import cpu_threads as _cpu_threads  # noqa: E402

_cpu_threads.widen()
