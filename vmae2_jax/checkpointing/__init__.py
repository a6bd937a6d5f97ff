"""The one module that talks to Orbax: train-state checkpoints and model-only exports."""

from vmae2_jax.checkpointing.manager import Checkpointer
from vmae2_jax.checkpointing.model_io import load_model_params, read_model_meta, save_model_params

__all__ = ["Checkpointer", "save_model_params", "load_model_params", "read_model_meta"]
