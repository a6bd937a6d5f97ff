"""Numerics and memory options shared by every model (from config.model)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

# The reference's input statistics (ImageNet), as in configs/common.py.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Outputs of a block's weight matmuls, named in layers.py (jax.ad_checkpoint.checkpoint_name):
# with these saved, a block's backward recomputes norms, GELU, the attention and the
# attention's output projection (its output feeds the second norm).
PROJECTIONS = ("qkv", "attn_out", "fc1")

_cp = jax.checkpoint_policies

# Remat policies by name; "none" disables rematerialisation. "proj" keeps the
# projections in device memory (MaxText's "minimal"); the *_offload policies
# keep them in host memory (pinned_host) and bring them back for the backward.
REMAT_POLICIES = {
    "none": None,
    "full": _cp.nothing_saveable,
    "dots": _cp.dots_saveable,
    "dots_no_batch": _cp.dots_with_no_batch_dims_saveable,
    "proj": _cp.save_only_these_names(*PROJECTIONS),
    # Also the attention branch's output (no matmul recomputed) and the GELU output: on
    # v5p-128 "proj_gelu" is the compiler's fastest (BENCHMARKS.md, issue 15).
    "proj_attn": _cp.save_only_these_names(*PROJECTIONS, "attn_proj"),
    "proj_gelu": _cp.save_only_these_names(*PROJECTIONS, "attn_proj", "mlp_act"),
    "proj_offload": _cp.save_and_offload_only_these_names(
        names_which_can_be_saved=(), names_which_can_be_offloaded=PROJECTIONS,
        offload_src="device", offload_dst="pinned_host"),
    "dots_offload": _cp.offload_dot_with_no_batch_dims("device", "pinned_host"),
    "everything": _cp.everything_saveable,
}


def to_dtype(name: str | Any, field: str = "dtype") -> Any:
  if not isinstance(name, str):
    return name
  if name not in _DTYPES:
    raise ValueError(f"config.model.{field}={name!r} is not one of {sorted(_DTYPES)}")
  return _DTYPES[name]


@dataclasses.dataclass(frozen=True)
class ModelOptions:
  """How a model computes: dtypes, attention kernel, remat, layer scan.

  Attributes:
    dtype: compute dtype of matmuls (norms, softmax and losses stay float32).
    param_dtype: storage dtype of parameters.
    attention: "auto" (cuDNN flash on GPU for bf16/fp16, the fused CPU kernel
      for float32 on CPU, the Pallas TPU flash kernel in programs compiled for
      TPU, XLA otherwise), "xla", "cudnn", "fused_cpu" or "flash_tpu".
    cpu_kernels: on the CPU backend, float32 models use vmae2_jax.kernels
      (fused attention under "auto", the dense-layer matmul) when the kernel
      library builds on this machine; False keeps every op on XLA.
    remat: a key of REMAT_POLICIES.
    scan_layers: compile one block and loop over it (flat compile time for
      deep models); False unrolls. Parameters are stacked either way, so
      checkpoints do not depend on this switch.
    init: "pretrain" (xavier_uniform Linear, as the reference pre-training
      model) or "finetune" (truncated normal 0.02, as its classifier).
    pixel_mean, pixel_std: the input normalisation (x/255 - mean) / std per RGB
      channel; a model is evaluated with the statistics it was trained with
      (model.json, `normalization_from_meta`).
  """

  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "auto"
  cpu_kernels: bool = True
  remat: str = "none"
  scan_layers: bool = False
  init: str = "pretrain"
  pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
  pixel_std: tuple[float, float, float] = IMAGENET_STD

  def __post_init__(self):
    object.__setattr__(self, "dtype", to_dtype(self.dtype, "dtype"))
    object.__setattr__(self, "param_dtype", to_dtype(self.param_dtype, "param_dtype"))
    if self.remat not in REMAT_POLICIES:
      raise ValueError(
          f"config.model.remat={self.remat!r} is not one of {sorted(REMAT_POLICIES)}")
    if self.attention not in ("auto", "xla", "cudnn", "fused_cpu", "flash_tpu"):
      raise ValueError(f"config.model.attention={self.attention!r} is not "
                       "auto|xla|cudnn|fused_cpu|flash_tpu")
    if self.init not in ("pretrain", "finetune"):
      raise ValueError(f"model init={self.init!r} is not pretrain|finetune")
    for field, low in (("pixel_mean", None), ("pixel_std", 0.0)):
      value = getattr(self, field)
      try:
        value = tuple(float(v) for v in value)
      except (TypeError, ValueError):
        value = ()
      if len(value) != 3 or (low is not None and min(value) <= low):
        raise ValueError(f"config.model.{field}={getattr(self, field)!r} must be 3 numbers "
                         f"(R, G, B){' > 0' if low is not None else ''}")
      object.__setattr__(self, field, value)

  @classmethod
  def from_config(cls, model_cfg, init: str = "pretrain") -> "ModelOptions":
    return cls(dtype=model_cfg.dtype, param_dtype=model_cfg.param_dtype,
               attention=model_cfg.attention, cpu_kernels=model_cfg.cpu_kernels,
               remat=model_cfg.remat, scan_layers=model_cfg.scan_layers, init=init,
               pixel_mean=model_cfg.get("pixel_mean", IMAGENET_MEAN),
               pixel_std=model_cfg.get("pixel_std", IMAGENET_STD))


def normalization_from_meta(meta: dict[str, Any]) -> dict[str, tuple[float, ...]]:
  """ModelOptions fields of the normalisation a model was trained with (its model.json;
  ImageNet's for sources that predate the field, and converted published models)."""
  return {"pixel_mean": tuple(meta.get("pixel_mean") or IMAGENET_MEAN),
          "pixel_std": tuple(meta.get("pixel_std") or IMAGENET_STD)}
