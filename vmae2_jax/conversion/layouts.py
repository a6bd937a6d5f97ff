"""Tensor-by-tensor correspondence between PyTorch key layouts and our parameters.

Three PyTorch layouts are known:
  "official":  the VideoMAE V2 reference code (fused qkv, q_bias/v_bias); also
               OpenGVLab's Hugging Face Hub repositories (OpenGVLab/VideoMAEv2-*),
               whose custom code wraps the same module as `model.`.
  "hf":        Hugging Face transformers' VideoMAE (query/key/value Linears,
               query.bias/value.bias; older files name them q_bias/v_bias).
  "mmaction2": mmaction2's VisionTransformer (mmaction/models/backbones/vit_mae.py)
               under `backbone.`, with its head as `cls_head.fc_cls.`: the reference
               blocks with mmcv names (patch_embed.projection, mlp.layers.0.0 / .1).
and three model kinds: "pretrain" (encoder + decoder), "classifier" (encoder
with fc_norm and head, no final norm; num_classes 0 is the published feature
model: fc_norm without a head) and "encoder" (backbone only, optional final norm).

Each Rule says which source tensor(s) make one of our parameters (or one layer
slice of a stacked parameter) and how to reshape in both directions. Import
and export walk the same list, so they are inverse by construction.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from vmae2_jax.models.patching import TUBELET
from vmae2_jax.models.variants import ViTSize

KINDS = ("pretrain", "classifier", "encoder")
LAYOUTS = ("official", "hf", "mmaction2")


@dataclasses.dataclass(frozen=True)
class Spec:
  """Which parameters a model has: its size, kind, classes and final-norm flag."""

  kind: str
  size: ViTSize
  num_classes: int | None = None
  encoder_norm: bool = True   # the encoder's final LayerNorm (always for pretrain, never classifier)

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind={self.kind!r} is not one of {KINDS}")
    if self.kind == "classifier" and (self.num_classes is None or self.num_classes < 0):
      raise ValueError("a classifier spec needs num_classes (0: fc_norm without a head)")


@dataclasses.dataclass(frozen=True)
class Rule:
  """Source key(s) <-> one of our parameters (a layer slice when `layer` is set)."""

  srcs: tuple[str, ...]
  path: tuple[str, ...]
  layer: int | None
  src_shapes: tuple[tuple[int, ...], ...]
  to_ours: Callable[..., np.ndarray]
  to_src: Callable[[np.ndarray], tuple[np.ndarray, ...]]

  @property
  def dst_name(self) -> str:
    name = ".".join(self.path)
    return name if self.layer is None else f"{name}[{self.layer}]"


# ----------------------------------------------------------------- transforms
def _same(shape):
  return (lambda a: a), (lambda a: (a,)), (tuple(shape),)


def _linear(out_f, in_f):
  """torch Linear weight [out, in] <-> our kernel [in, out]."""
  return (lambda w: w.T), (lambda k: (k.T,)), ((out_f, in_f),)


def _reshape(src_shape, our_shape):
  return ((lambda a: a.reshape(our_shape)), (lambda a: (a.reshape(src_shape),)),
          (tuple(src_shape),))


def _patch_embed(width, patch):
  """Conv3d weight [D, 3, 2, p, p] <-> kernel [(2, p, p, 3) flattened, D]."""
  def to_ours(w):
    return w.transpose(2, 3, 4, 1, 0).reshape(-1, width)

  def to_src(k):
    return (k.reshape(TUBELET, patch, patch, 3, width).transpose(4, 3, 0, 1, 2),)
  return to_ours, to_src, ((width, 3, TUBELET, patch, patch),)


def _fused_qkv(dim, heads):
  """Reference qkv.weight [3*H*hd, D] (rows ordered (3, H, hd)) <-> kernel [D, 3, H, hd]."""
  hd = dim // heads

  def to_ours(w):
    return w.reshape(3, heads, hd, dim).transpose(3, 0, 1, 2)

  def to_src(k):
    return (k.transpose(1, 2, 3, 0).reshape(3 * heads * hd, dim),)
  return to_ours, to_src, ((3 * heads * hd, dim),)


def _split_qkv(dim, heads):
  """HF query/key/value weights [H*hd, D] each <-> kernel [D, 3, H, hd]."""
  hd = dim // heads

  def to_ours(q, k, v):
    return np.stack([q, k, v]).reshape(3, heads, hd, dim).transpose(3, 0, 1, 2)

  def to_src(kernel):
    w = kernel.transpose(1, 2, 3, 0).reshape(3, heads * hd, dim)
    return (w[0], w[1], w[2])
  return to_ours, to_src, ((heads * hd, dim),) * 3


# --------------------------------------------------------------- block rules
# mmcv's FFN names the reference's mlp.fc1 / mlp.fc2 layers.0.0 / layers.1.
_MMACTION2_BLOCK_NAMES = (("mlp.fc1.", "mlp.layers.0.0."), ("mlp.fc2.", "mlp.layers.1."))


def _block_key(layout: str, official: str) -> str:
  if layout == "mmaction2":
    for old, new in _MMACTION2_BLOCK_NAMES:
      if official.startswith(old):
        return new + official[len(old):]
  return official


# our suffix -> (official suffix, hf suffix(es), transform factory)
def _block_rules(layout: str, prefix: str, base: tuple[str, ...], i: int, dim: int, heads: int,
                 mlp: int) -> list[Rule]:
  hd = dim // heads
  table = [
      (("norm1", "scale"), "norm1.weight", ("layernorm_before.weight",), _same((dim,))),
      (("norm1", "bias"), "norm1.bias", ("layernorm_before.bias",), _same((dim,))),
      (("attn", "qkv", "kernel"), "attn.qkv.weight",
       ("attention.attention.query.weight", "attention.attention.key.weight",
        "attention.attention.value.weight"),
       _split_qkv(dim, heads) if layout == "hf" else _fused_qkv(dim, heads)),
      (("attn", "q_bias"), "attn.q_bias", ("attention.attention.query.bias",),
       _reshape((heads * hd,), (heads, hd))),
      (("attn", "v_bias"), "attn.v_bias", ("attention.attention.value.bias",),
       _reshape((heads * hd,), (heads, hd))),
      (("attn", "proj", "kernel"), "attn.proj.weight", ("attention.output.dense.weight",),
       _linear(dim, heads * hd)),
      (("attn", "proj", "bias"), "attn.proj.bias", ("attention.output.dense.bias",),
       _same((dim,))),
      (("norm2", "scale"), "norm2.weight", ("layernorm_after.weight",), _same((dim,))),
      (("norm2", "bias"), "norm2.bias", ("layernorm_after.bias",), _same((dim,))),
      (("mlp", "fc1", "kernel"), "mlp.fc1.weight", ("intermediate.dense.weight",),
       _linear(mlp, dim)),
      (("mlp", "fc1", "bias"), "mlp.fc1.bias", ("intermediate.dense.bias",), _same((mlp,))),
      (("mlp", "fc2", "kernel"), "mlp.fc2.weight", ("output.dense.weight",), _linear(dim, mlp)),
      (("mlp", "fc2", "bias"), "mlp.fc2.bias", ("output.dense.bias",), _same((dim,))),
  ]
  rules = []
  for ours, off, hf, (to_ours, to_src, shapes) in table:
    names = hf if layout == "hf" else (_block_key(layout, off),)
    rules.append(Rule(tuple(prefix + n for n in names), base + ours, i, shapes, to_ours, to_src))
  return rules


def _top(srcs, path, transform) -> Rule:
  to_ours, to_src, shapes = transform
  srcs = (srcs,) if isinstance(srcs, str) else tuple(srcs)
  return Rule(srcs, tuple(path), None, shapes, to_ours, to_src)


def _ln(prefix: str, path: tuple[str, ...], dim: int) -> list[Rule]:
  return [_top(prefix + "weight", path + ("scale",), _same((dim,))),
          _top(prefix + "bias", path + ("bias",), _same((dim,)))]


def _dense(prefix: str, path: tuple[str, ...], in_f: int, out_f: int) -> list[Rule]:
  return [_top(prefix + "weight", path + ("kernel",), _linear(out_f, in_f)),
          _top(prefix + "bias", path + ("bias",), _same((out_f,)))]


# ------------------------------------------------------------- whole models
@dataclasses.dataclass(frozen=True)
class KeyNames:
  """Where each part of a model lives in one layout (prefixes end in '.')."""

  patch: str
  block: str          # format string with {i}
  encoder_norm: str
  decoder_block: str = "decoder.blocks.{i}."
  decoder_norm: str = "decoder.norm."
  decoder_head: str = "decoder.head."
  encoder_to_decoder: str = "encoder_to_decoder.weight"
  mask_token: str = "mask_token"
  fc_norm: str = "fc_norm."
  head: str = "head."


def key_names(layout: str, kind: str, hf_prefix: str = "videomae.") -> KeyNames:
  """hf_prefix: the backbone's key prefix ("videomae." or "" for hf, "backbone." or "" for
  mmaction2); the official layout has none."""
  if layout == "official":
    if kind == "pretrain":
      return KeyNames("encoder.patch_embed.proj.", "encoder.blocks.{i}.", "encoder.norm.")
    return KeyNames("patch_embed.proj.", "blocks.{i}.", "norm.")
  if layout == "hf":
    p = hf_prefix
    return KeyNames(p + "embeddings.patch_embeddings.projection.", p + "encoder.layer.{i}.",
                    p + "layernorm.", decoder_block="decoder.decoder_layers.{i}.",
                    head="classifier.")
  if layout == "mmaction2":  # classifiers and backbones only: mmaction2 has no decoder
    p = hf_prefix
    return KeyNames(p + "patch_embed.projection.", p + "blocks.{i}.", p + "norm.",
                    fc_norm=p + "fc_norm.", head="cls_head.fc_cls.")
  raise ValueError(f"layout={layout!r} is not one of {LAYOUTS}")


def rules_for(layout: str, spec: Spec, hf_prefix: str = "videomae.") -> list[Rule]:
  """Every tensor of a `spec` model in `layout`, in a stable order."""
  s = spec.size
  names = key_names(layout, spec.kind, hf_prefix)
  d, p = s.width, s.patch
  cube = TUBELET * p * p * 3
  rules = [_top(names.patch + "weight", ("encoder", "patch_embed", "kernel"), _patch_embed(d, p)),
           _top(names.patch + "bias", ("encoder", "patch_embed", "bias"), _same((d,)))]
  for i in range(s.depth):
    rules += _block_rules(layout, names.block.format(i=i), ("encoder", "blocks", "layers"), i,
                          d, s.heads, s.mlp_dim)
  if spec.kind == "pretrain" or (spec.kind == "encoder" and spec.encoder_norm):
    rules += _ln(names.encoder_norm, ("encoder", "norm"), d)
  if spec.kind == "pretrain":
    dd = s.decoder_width
    rules.append(_top(names.encoder_to_decoder, ("encoder_to_decoder", "kernel"), _linear(dd, d)))
    rules.append(_top(names.mask_token, ("mask_token",), _reshape((1, 1, dd), (dd,))))
    for i in range(s.decoder_depth):
      rules += _block_rules(layout, names.decoder_block.format(i=i), ("decoder", "layers"), i,
                            dd, s.decoder_heads, s.decoder_mlp_dim)
    rules += _ln(names.decoder_norm, ("decoder_norm",), dd)
    rules += _dense(names.decoder_head, ("decoder_head",), dd, cube)
  if spec.kind == "classifier":
    rules += _ln(names.fc_norm, ("fc_norm",), d)
    if spec.num_classes:
      rules += _dense(names.head, ("head",), d, spec.num_classes)
  return rules


def bias_rules(rules: list[Rule]) -> list[Rule]:
  """The q_bias / v_bias rules (checked explicitly: converters that drop them exist)."""
  return [r for r in rules if r.path[-1] in ("q_bias", "v_bias")]
