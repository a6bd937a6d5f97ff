"""Models: ViT encoder, pre-training decoder, classifier; sizes by name."""

from vmae2_jax.models.options import ModelOptions
from vmae2_jax.models.variants import VARIANTS, ViTSize, get_variant
from vmae2_jax.models.vit import Classifier, Encoder, PretrainModel
from vmae2_jax.models.factory import (build_classifier, build_pretrain_model,
                                      count_params)

__all__ = [
    "ModelOptions", "VARIANTS", "ViTSize", "get_variant", "Classifier", "Encoder",
    "PretrainModel", "build_classifier", "build_pretrain_model", "count_params",
]
