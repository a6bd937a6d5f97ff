"""Recognising a state dict's flavour (layout, kind, prefixes) and its model size."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from vmae2_jax.conversion.layouts import Spec, key_names
from vmae2_jax.conversion.report import ConversionError
from vmae2_jax.models.variants import VARIANTS, ViTSize, get_variant

# Wrappers added by DDP / torch.compile; stripped wherever they lead a key.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
# HF checkpoints written before transformers moved the biases into query/value Linears.
_HF_LEGACY_BIAS = {".attention.attention.q_bias": ".attention.attention.query.bias",
                   ".attention.attention.v_bias": ".attention.attention.value.bias"}
REFERENCE_LN_EPS = 1e-6


# Prefixes that wrap a whole state dict: mmaction2 backbone-only files, and OpenGVLab's
# Hugging Face repositories (their custom VideoMAEv2 class holds the reference model as
# `self.model`).
_WHOLE_PREFIXES = {"backbone.": "", "model.": " (OpenGVLab's Hugging Face VideoMAEv2 wrapper)"}
_HEAD_KEYS = {"official": "head.weight", "hf": "classifier.weight",
              "mmaction2": "cls_head.fc_cls.weight"}


@dataclasses.dataclass
class Flavour:
  layout: str                 # "official" | "hf" | "mmaction2"
  kind: str                   # "pretrain" | "classifier" | "encoder"
  hf_prefix: str              # backbone key prefix: hf "videomae." / "", mmaction2 "backbone." / ""
  state: dict[str, np.ndarray]
  notes: list[str]


def _strip(state: dict, prefix: str) -> dict:
  return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _is_hf(state: dict) -> bool:
  return any("patch_embeddings.projection" in k or ".attention.attention." in k
             or k.startswith("videomae.") for k in state)


def _is_mmaction2(state: dict) -> bool:
  """mmaction2's vit_mae.py: mmcv's PatchEmbed / FFN names, or its recognizer head."""
  return any("patch_embed.projection." in k or ".mlp.layers.0.0." in k
             or k.startswith("cls_head.") for k in state)


def _has_decoder(state: dict) -> bool:
  return any(k.startswith("decoder.") or k in ("mask_token", "encoder_to_decoder.weight")
             for k in state)


def detect(state: dict[str, np.ndarray]) -> Flavour:
  """Strips wrapper prefixes and tells the layout and kind of a flat state dict."""
  notes = []
  changed = True
  while changed:
    changed = False
    for pfx in _WRAPPER_PREFIXES:
      if any(k.startswith(pfx) for k in state):
        state = _strip(state, pfx)
        notes.append(f"stripped key prefix {pfx!r}")
        changed = True
    for pfx, why in _WHOLE_PREFIXES.items():
      if state and all(k.startswith(pfx) for k in state):
        state = _strip(state, pfx)
        notes.append(f"stripped key prefix {pfx!r}{why}")
        changed = True

  if _is_hf(state):
    renamed = {}
    for k, v in state.items():
      for old, new in _HF_LEGACY_BIAS.items():
        if k.endswith(old):
          k = k[:-len(old)] + new
          break
      renamed[k] = v
    if any(k.endswith(old) for k in state for old in _HF_LEGACY_BIAS):
      notes.append("HF legacy q_bias/v_bias names read as query.bias/value.bias")
    state = renamed
    prefix = "videomae." if any(k.startswith("videomae.") for k in state) else ""
    return Flavour("hf", _kind(state, _HEAD_KEYS["hf"], "fc_norm.weight"), prefix,
                   state, notes)

  if _is_mmaction2(state):
    prefix = "backbone." if any(k.startswith("backbone.") for k in state) else ""
    return Flavour("mmaction2", _kind(state, _HEAD_KEYS["mmaction2"], prefix + "fc_norm.weight"),
                   prefix, state, notes)

  if not _has_decoder(state) and state and all(k.startswith("encoder.") for k in state):
    state = _strip(state, "encoder.")
    notes.append("stripped key prefix 'encoder.' (an encoder taken out of a pre-training model)")
  return Flavour("official", _kind(state, _HEAD_KEYS["official"], "fc_norm.weight"), "", state,
                 notes)


def _kind(state: dict, head_key: str, fc_norm_key: str) -> str:
  """pretrain (has a decoder), classifier (has a head or fc_norm: without a head it is a
  published feature model) or a bare encoder."""
  if _has_decoder(state):
    return "pretrain"
  if head_key in state or fc_norm_key in state:
    return "classifier"
  return "encoder"


def _block_indices(state: dict, block_fmt: str) -> list[int]:
  pat = re.compile("^" + re.escape(block_fmt).replace(re.escape("{i}"), r"(\d+)") + r"\.?")
  found = set()
  for k in state:
    m = pat.match(k)
    if m:
      found.add(int(m.group(1)))
  return sorted(found)


def _first(state: dict, key: str, what: str, flavour: Flavour) -> np.ndarray:
  if key not in state:
    sample = ", ".join(sorted(state)[:12])
    raise ConversionError(
        f"cannot infer the model size: no {what} tensor {key!r} in this {flavour.layout} "
        f"{flavour.kind} state dict (first keys: {sample})")
  return state[key]


def infer_spec(flavour: Flavour, *, variant: str | None = None,
               hf_config: dict[str, Any] | None = None) -> tuple[str, Spec, list[str]]:
  """(variant name, Spec, notes) from tensor shapes (and the HF config when present).

  An explicit `variant` wins; mismatching tensors then fail the shape check
  with their names. Without one, the named size whose widths, depths, patch and
  MLP sizes match is chosen; failing that a "custom" size is built (heads from
  the HF config, else width/64 as in every published model).
  """
  st, kind = flavour.state, flavour.kind
  names = key_names(flavour.layout, kind, flavour.hf_prefix)
  notes: list[str] = []
  w = _first(st, names.patch + "weight", "patch embedding", flavour)
  if w.ndim != 5 or w.shape[1] != 3 or w.shape[2] != 2 or w.shape[3] != w.shape[4]:
    raise ConversionError(f"{names.patch}weight has shape {list(w.shape)}; expected "
                          "[D, 3, 2, p, p] (tubelet 2, RGB, square patches)")
  width, patch = int(w.shape[0]), int(w.shape[3])
  depth = len(_block_indices(st, names.block))
  fc1 = {"official": "mlp.fc1.weight", "hf": "intermediate.dense.weight",
         "mmaction2": "mlp.layers.0.0.weight"}[flavour.layout]
  mlp = int(_first(st, names.block.format(i=0) + fc1, "first block MLP", flavour).shape[0])
  dec = None
  if kind == "pretrain":
    mt = _first(st, names.mask_token, "mask token", flavour)
    dwidth = int(mt.shape[-1])
    ddepth = len(_block_indices(st, names.decoder_block))
    dmlp = int(_first(st, names.decoder_block.format(i=0) + fc1, "first decoder block MLP",
                      flavour).shape[0])
    dec = (dwidth, ddepth, dmlp)
  if kind == "pretrain" and (names.encoder_norm + "weight") not in st:
    raise ConversionError(
        f"{flavour.layout} pre-training checkpoint without the encoder's final LayerNorm "
        f"({names.encoder_norm}weight); the reference pre-training encoder always has one "
        "(an HF VideoMAEForPreTraining saved with use_mean_pooling=True drops it)")
  num_classes = None
  if kind == "classifier":
    if (names.fc_norm + "weight") not in st and (names.encoder_norm + "weight") in st:
      raise ConversionError(
          f"{flavour.layout} classifier with a final norm and no fc_norm: it classifies the first "
          "token (use_mean_pooling=False); the reference and this port mean-pool the tokens")
    if (names.head + "weight") in st or (names.head + "bias") in st:
      num_classes = int(_first(st, names.head + "weight", "head", flavour).shape[0])
    else:
      num_classes = 0
      notes.append("no classification head: a feature model (fc_norm of the mean token); "
                   "fine-tuning it (init_from, or --kind=classifier --num_classes=K) adds a "
                   "fresh head")
  encoder_norm = kind == "pretrain" or (kind == "encoder" and
                                         (names.encoder_norm + "weight") in st)

  hf_heads = hf_dheads = None
  if hf_config:
    hf_heads = hf_config.get("num_attention_heads")
    hf_dheads = hf_config.get("decoder_num_attention_heads")
    if hf_config.get("hidden_act", "gelu") != "gelu":
      raise ConversionError(f"HF config hidden_act={hf_config['hidden_act']!r}; the reference "
                            "uses exact GELU ('gelu')")
    eps = hf_config.get("layer_norm_eps", 1e-12)
    if eps != REFERENCE_LN_EPS:
      notes.append(f"HF config layer_norm_eps={eps}; this port uses the reference's 1e-6 in every "
                   "LayerNorm (HF also uses 1e-5 in fc_norm and the decoder norm), so outputs "
                   "differ from transformers' by LayerNorm-epsilon rounding only")

  def matches(v: ViTSize) -> bool:
    ok = (v.width, v.depth, v.patch, v.mlp_dim) == (width, depth, patch, mlp)
    if dec is not None:
      ok = ok and (v.decoder_width, v.decoder_depth, v.decoder_mlp_dim) == dec
      if hf_dheads:
        ok = ok and v.decoder_heads == hf_dheads
    if hf_heads:
      ok = ok and v.heads == hf_heads
    return ok

  if variant:
    size = get_variant(variant)
    name = variant
    if hf_heads and size.heads != hf_heads:
      raise ConversionError(f"--variant={variant} has {size.heads} heads but the HF config says "
                            f"num_attention_heads={hf_heads}")
  else:
    found = [n for n, v in VARIANTS.items() if matches(v)]
    if found:
      name, size = found[0], VARIANTS[found[0]]
    else:
      heads = hf_heads or (width // 64 if width % 64 == 0 else 0)
      if not heads:
        raise ConversionError(
            f"no named variant has width {width}, depth {depth}, patch {patch}, MLP {mlp}"
            + (f", decoder {dec}" if dec else "") + "; pass --variant")
      dwidth, ddepth, dmlp = dec or (max(64, width // 2), 1, None)
      dheads = hf_dheads or max(1, dwidth // 64)
      ratio = mlp / width
      if int(width * ratio) != mlp or (dmlp is not None and int(dwidth * ratio) != dmlp):
        raise ConversionError(
            f"custom size: encoder MLP {mlp} and decoder MLP {dmlp} do not share one ratio "
            f"(widths {width}, {dwidth}); no model here can hold it")
      size = ViTSize(width, depth, heads, patch, ratio, dwidth, dheads, ddepth)
      name = "custom"
      notes.append(f"no named variant matches; using a custom size {size}"
                   + ("" if hf_heads else " (heads assumed width/64)"))
  return name, Spec(kind, size, num_classes, encoder_norm), notes
