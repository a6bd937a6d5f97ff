"""vmae2_jax: VideoMAE V2 (dual masking, ViT-S..g) in JAX/Flax NNX."""

__version__ = "0.1.0"
