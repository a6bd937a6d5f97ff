"""Mesh, logical-axis rules and the shardings of parameters, state and batches."""

from vmae2_jax.sharding.mesh import MESH_AXES, make_mesh, batch_sharding, replicated
from vmae2_jax.sharding.rules import (logical_axes_tree, logical_to_spec, tree_shardings,
                                      match_shardings_by_path)

__all__ = ["MESH_AXES", "make_mesh", "batch_sharding", "replicated", "logical_axes_tree",
           "logical_to_spec", "tree_shardings", "match_shardings_by_path"]
