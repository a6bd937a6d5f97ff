"""The one module that talks to Orbax: train-state checkpoints and model weights by path."""

from vmae2_jax.checkpointing.manager import Checkpointer
from vmae2_jax.checkpointing.model_io import (load_model_params, load_source, read_model_meta,
                                              read_source_meta, save_model_params, write_meta)

__all__ = ["Checkpointer", "save_model_params", "load_model_params", "read_model_meta",
           "read_source_meta", "load_source", "write_meta"]
