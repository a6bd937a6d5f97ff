"""Dual masking as static-shape index sets: encoder tube/random, decoder running cell."""

from vmae2_jax.masking.running_cell import running_cell_maps, running_cell_keep_table
from vmae2_jax.masking.sampler import MaskSpec, MaskSample, sample_masks, to_boolean_masks

__all__ = ["MaskSpec", "MaskSample", "sample_masks", "to_boolean_masks",
           "running_cell_maps", "running_cell_keep_table"]
