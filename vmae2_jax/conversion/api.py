"""Import, export and load: the functions behind `python -m vmae2_jax.convert`."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from vmae2_jax import paths
from vmae2_jax.checkpointing import model_io
from vmae2_jax.conversion import detect as detect_lib
from vmae2_jax.conversion import hub, labels, mapping, surgery, torch_io
from vmae2_jax.conversion.layouts import KINDS, Spec
from vmae2_jax.conversion.report import ConversionError, ConversionReport
from vmae2_jax.models.options import ModelOptions, normalization_from_meta
from vmae2_jax.models.variants import VARIANTS, ViTSize
from vmae2_jax.models.vit import Classifier, Encoder, PretrainModel
from vmae2_jax.progress import Progress

FORMAT_VERSION = 1
REPORT_FILE = "conversion_report.txt"
_DTYPES = {"float32": np.float32, "float16": np.float16, "keep": None}
PROGRESS_INTERVAL = None  # seconds between status lines; None: the progress module's default


# -------------------------------------------------------------------- meta
def spec_from_meta(meta: dict[str, Any]) -> Spec:
  """The Spec a model.json describes (a named variant, or the stored custom size)."""
  name = meta["variant"]
  size = VARIANTS.get(name) or ViTSize(**meta["size"])
  kind = meta["kind"]
  return Spec(kind, size, meta.get("num_classes"),
              meta.get("encoder_norm", kind == "pretrain"))


def meta_for(spec: Spec, variant: str, *, frames: int, image_size: int, source: str,
             layout: str) -> dict[str, Any]:
  return {"kind": spec.kind, "variant": variant, "num_classes": spec.num_classes,
          "frames": int(frames), "image_size": image_size, "source": source,
          "source_layout": layout, "size": dataclasses.asdict(spec.size),
          "encoder_norm": spec.encoder_norm, "format_version": FORMAT_VERSION}


# ------------------------------------------------------------------ import
def import_checkpoint(src: str, *, variant: str | None = None, kind: str = "auto",
                      num_classes: int | None = None, label_map: str | None = None,
                      frames: int | None = None, image_size: int | None = None,
                      dtype: str = "float32", zero_bias: str = "warn", seed: int = 0,
                      progress: bool = False
                      ) -> tuple[dict, dict[str, Any], ConversionReport]:
  """A PyTorch checkpoint -> (our nested params, model.json meta, report).

  kind "auto" keeps the source's kind; "classifier" on a pre-training file is
  the fine-tuning surgery (needs num_classes), "encoder" keeps the backbone.
  progress: a status line with an ETA on stderr while reading and mapping.
  """
  if kind != "auto" and kind not in KINDS:
    raise ValueError(f"kind={kind!r} is not auto or one of {KINDS}")
  if dtype not in _DTYPES:
    raise ValueError(f"dtype={dtype!r} is not one of {sorted(_DTYPES)}")
  path, hf_config = torch_io.resolve_source(src)
  state, read_notes = torch_io.read_state_dict(
      path, on_bytes=_phase(f"reading {paths.basename(path)}") if progress else None)
  if hub.is_hub(src):
    read_notes.insert(0, f"{src} read from the Hugging Face cache: {path}")
  mapping.refuse_unsupported_options(state, path)  # before detection guesses a layout
  flavour = detect_lib.detect(state)
  name, spec, size_notes = detect_lib.infer_spec(flavour, variant=variant, hf_config=hf_config)
  params, rep = mapping.import_state_dict(
      flavour.state, flavour.layout, spec, hf_prefix=flavour.hf_prefix, source=path,
      dtype=_DTYPES[dtype], zero_bias=zero_bias,
      on_bytes=_phase(f"mapping to {name}") if progress else None)
  rep.variant = name
  rep.notes[:0] = read_notes + flavour.notes + size_notes
  if kind == "auto" and num_classes and spec.kind != "classifier":
    raise ValueError(f"num_classes={num_classes} given for a {spec.kind} checkpoint; pass "
                     "kind='classifier' (--kind=classifier) for the fine-tuning surgery")
  target = spec.kind if kind == "auto" else kind
  params, new_spec, log = surgery.retarget(params, spec, target, num_classes=num_classes,
                                           label_map=label_map, seed=seed)
  rep.target_kind = new_spec.kind
  by_path = mapping.source_keys_by_path(flavour.layout, spec, flavour.hf_prefix)
  dropped_keys = set()
  for prefix, why in log.dropped:
    for path_, keys in by_path.items():
      if path_[:len(prefix)] == prefix:
        for key, shape in keys:
          rep.dropped.append((key, shape, why))
          dropped_keys.add(key)
  rep.mapped = [m for m in rep.mapped if m[0] not in dropped_keys]
  rep.created += [(".".join(p), s, how) for p, s, how in log.created]
  rep.notes += log.notes
  if frames is None:
    frames = int(hf_config.get("num_frames", 16)) if hf_config else 16
  if image_size is None:
    image_size = hf_config.get("image_size", 224) if hf_config else 224
    if isinstance(image_size, (list, tuple)):
      image_size = [int(x) for x in image_size]
  meta = meta_for(new_spec, name, frames=frames, image_size=image_size,
                  source=paths.resolve(path), layout=flavour.layout)
  if label_map in labels.LABEL_MAPS:  # a head re-indexed to a Kinetics set: its names, in order
    meta["class_names"] = list(labels.class_names("k" + label_map.split("to")[1]))
  for w in rep.warnings:
    logging.warning("%s", w)
  return params, meta, rep


def _phase(note: str):
  """An on_bytes(done, total) callback drawing one phase's progress line (in MB)."""
  line = Progress("convert", "MB", interval=PROGRESS_INTERVAL)

  def on_bytes(done: int, total: int) -> None:
    line.update(done / 2**20, total / 2**20, note=note, force=done >= total and line.shown)
    if done >= total:
      line.close()
  return on_bytes


def convert_file(src: str, dst: str, **kwargs) -> ConversionReport:
  """import_checkpoint, then writes DIR (params, model.json, conversion_report.txt)."""
  params, meta, rep = import_checkpoint(src, **kwargs)
  if kwargs.get("progress"):
    size = sum(np.asarray(a).nbytes for a in jax.tree.leaves(params))
    print(f"convert: writing {dst} ({size / 2**20:.0f} MB)", file=sys.stderr, flush=True)
  model_io.save_model_params(dst, params, meta)
  paths.write_text(paths.join(dst, REPORT_FILE), rep.full_text())
  return rep


# ------------------------------------------------------------------ export
def hf_config_for(meta: dict[str, Any]) -> dict[str, Any]:
  """A transformers VideoMAEConfig dict for a model described by `meta`."""
  spec = spec_from_meta(meta)
  s = spec.size
  arch = {"pretrain": "VideoMAEForPreTraining", "classifier": "VideoMAEForVideoClassification",
          "encoder": "VideoMAEModel"}[spec.kind]
  cfg = {
      "model_type": "videomae", "architectures": [arch],
      "image_size": meta.get("image_size", 224), "patch_size": s.patch, "num_channels": 3,
      "num_frames": meta.get("frames", 16), "tubelet_size": 2,
      "hidden_size": s.width, "num_hidden_layers": s.depth, "num_attention_heads": s.heads,
      "intermediate_size": s.mlp_dim, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
      "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02,
      "layer_norm_eps": detect_lib.REFERENCE_LN_EPS, "qv_bias": True,
      "use_mean_pooling": spec.kind == "classifier" or not spec.encoder_norm,
      "decoder_num_attention_heads": s.decoder_heads, "decoder_hidden_size": s.decoder_width,
      "decoder_num_hidden_layers": s.decoder_depth,
      "decoder_intermediate_size": s.decoder_mlp_dim, "norm_pix_loss": True,
  }
  if spec.kind == "classifier":
    cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(spec.num_classes)}
    cfg["label2id"] = {v: int(k) for k, v in cfg["id2label"].items()}
  return cfg


def export_params(params: dict, meta: dict[str, Any], to: str = "official", *,
                  hf_bias_layout: str = "current") -> tuple[dict[str, np.ndarray], str | None]:
  """(flat state dict, pickle container key) in the reference or HF layout."""
  spec = spec_from_meta(meta)
  if to == "official":
    state = mapping.export_state_dict(params, "official", spec)
    return state, ("module" if spec.kind == "classifier" else "model")
  if to == "hf":
    if spec.kind == "classifier" and not spec.num_classes:
      raise ConversionError("a feature model (fc_norm, no head) has no transformers VideoMAE "
                            "class; export it with --to=official")
    prefix = "" if spec.kind == "encoder" else "videomae."
    state = mapping.export_state_dict(params, "hf", spec, hf_prefix=prefix)
    if hf_bias_layout == "legacy":
      state = {k.replace("attention.attention.query.bias", "attention.attention.q_bias")
                .replace("attention.attention.value.bias", "attention.attention.v_bias"): v
               for k, v in state.items()}
    elif hf_bias_layout != "current":
      raise ValueError(f"hf_bias_layout={hf_bias_layout!r} is not current|legacy")
    return state, None
  raise ValueError(f"--to={to!r} is not official|hf")


def export_checkpoint(src_dir: str, dst: str, to: str = "official", *,
                      hf_bias_layout: str = "current", hf_config: bool = True,
                      progress: bool = False) -> dict[str, Any]:
  """A converted DIR or a training run of any stage (WORKDIR, WORKDIR/best, a step)
  -> a PyTorch file (.pth/.bin in torch.save's zip layout, or .safetensors).

  For to="hf" a config.json is written beside the file, so the folder loads with
  VideoMAE*.from_pretrained. Returns the meta of the exported model.
  progress: a status line with an ETA on stderr while a .pth is written.
  """
  params, meta = model_io.load_source(src_dir)
  state, container = export_params(params, meta, to, hf_bias_layout=hf_bias_layout)
  on_bytes = None
  if dst.endswith(torch_io.SAFETENSORS_SUFFIXES):
    container = None  # safetensors holds a bare state dict, written in one call
    if progress:
      size = sum(np.asarray(a).nbytes for a in state.values())
      print(f"convert: writing {dst} ({size / 2**20:.0f} MB)", file=sys.stderr, flush=True)
  elif progress:
    on_bytes = _phase(f"writing {paths.basename(dst)}")
  torch_io.write_state_dict(dst, state, container, on_bytes=on_bytes)
  if to == "hf" and hf_config:
    cfg_path = paths.join(paths.dirname(paths.resolve(dst)), "config.json")
    with paths.open_file(cfg_path, "w") as f:
      json.dump(hf_config_for(meta), f, indent=2, sort_keys=True)
  return meta


# -------------------------------------------------------------------- load
def build_model(params: dict, meta: dict[str, Any], opts: ModelOptions | None = None
                ) -> nnx.Module:
  """A PretrainModel / Classifier / Encoder holding `params` (nothing random is kept)."""
  spec = spec_from_meta(meta)
  # the input normalisation the model was trained with is part of the model
  opts = dataclasses.replace(opts or ModelOptions(), **normalization_from_meta(meta))
  frames, image_size = meta.get("frames", 16), meta.get("image_size", 224)
  if isinstance(image_size, list):
    image_size = tuple(image_size)

  def make():
    rngs = nnx.Rngs(0)
    if spec.kind == "pretrain":
      return PretrainModel(spec.size, frames=frames, image_size=image_size, opts=opts, rngs=rngs)
    if spec.kind == "classifier":
      return Classifier(spec.size, spec.num_classes, frames=frames, image_size=image_size,
                        opts=dataclasses.replace(opts, init="finetune"), rngs=rngs)
    return Encoder(spec.size, frames=frames, image_size=image_size, opts=opts, rngs=rngs,
                   final_norm=spec.encoder_norm)

  if spec.kind == "encoder":  # stored as {"encoder": ...} like the other kinds
    params = params["encoder"]
  abstract = nnx.eval_shape(make)
  graphdef, state = nnx.split(abstract)
  want = {p: v.shape for p, v in mapping.flatten(nnx.to_pure_dict(state))}
  have = {p: np.shape(v) for p, v in mapping.flatten(params)}
  if want != have:
    diff = sorted(".".join(p) + f" {have.get(p)} vs model {want.get(p)}"
                  for p in set(want) | set(have) if want.get(p) != have.get(p))
    raise ConversionError("params do not fit the model described by model.json:\n  "
                          + "\n  ".join(diff))
  pd = opts.param_dtype
  nnx.replace_by_pure_dict(state, _map_tree(params, lambda a: jnp.asarray(a, pd)))
  return nnx.merge(graphdef, state)


def _map_tree(tree: dict, fn) -> dict:
  return {k: _map_tree(v, fn) if isinstance(v, dict) else fn(v) for k, v in tree.items()}


def load(path: str, *, opts: ModelOptions | None = None, frames: int | None = None,
         image_size: int | None = None, verbose: bool = False, **import_kwargs) -> nnx.Module:
  """A ready model from a converted DIR, a training run, or a PyTorch file / HF folder.

  frames / image_size set the clip shape the model is built for (parameters do
  not depend on it; position tables are regenerated); default: the checkpoint's.
  import_kwargs go to import_checkpoint (variant, kind, num_classes, ...).
  """
  if model_io.is_source(path):
    if import_kwargs:
      raise ValueError(f"{path} is already converted; options {sorted(import_kwargs)} apply "
                       "to PyTorch files only")
    params, meta = model_io.load_source(path)
  else:
    params, meta, rep = import_checkpoint(path, **import_kwargs)
    if verbose:
      print(rep.summary(), file=sys.stderr)
  if frames is not None:
    meta["frames"] = int(frames)
  if image_size is not None:
    meta["image_size"] = image_size
  return build_model(params, meta, opts)
