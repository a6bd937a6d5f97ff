"""Stage surgery on our nested params: pre-training -> classifier, head re-indexing.

Position tables need no surgery for other frame counts or resolutions: the
models' tables are fixed sinusoids built for the token grid at run time and are
not parameters. A learned table from another code base can be resized in
(t, h, w) with interpolate_pos_table.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vmae2_jax.conversion.labels import auto_label_map, label_map as load_label_map
from vmae2_jax.conversion.layouts import Spec
from vmae2_jax.conversion.report import ConversionError
from vmae2_jax.models.layers import trunc_normal
from vmae2_jax.models.posemb import bicubic_matrix

HEAD_INIT_SCALE = 0.001
# What each kind keeps, by top-level path; everything else is dropped.
_DECODER_PARTS = ("encoder_to_decoder", "mask_token", "decoder", "decoder_norm", "decoder_head")
_HEAD_PARTS = ("fc_norm", "head")


@dataclasses.dataclass
class SurgeryLog:
  dropped: list[tuple[tuple[str, ...], str]] = dataclasses.field(default_factory=list)
  created: list[tuple[tuple[str, ...], tuple[int, ...], str]] = dataclasses.field(
      default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)


def fresh_head(width: int, num_classes: int, *, seed: int = 0,
               init_scale: float = HEAD_INIT_SCALE) -> dict:
  """fc_norm (1, 0) and a head as the reference fine-tuning init: trunc_normal(0.02) * scale."""
  kernel = trunc_normal(jax.random.key(seed), (width, num_classes), jnp.float32) * init_scale
  return {"fc_norm": {"scale": np.ones((width,), np.float32),
                      "bias": np.zeros((width,), np.float32)},
          "head": {"kernel": np.asarray(kernel), "bias": np.zeros((num_classes,), np.float32)}}


def reindex_head(head: dict, rows) -> dict:
  """Keeps head rows `rows` (classes of the smaller set, in its order): kernel [D, K] -> [D, k]."""
  rows = np.asarray(rows)
  k = head["kernel"].shape[-1]
  if rows.max() >= k or rows.min() < 0:
    raise ConversionError(f"label map indexes row {int(rows.max())} of a {k}-way head")
  return {"kernel": np.asarray(head["kernel"])[:, rows], "bias": np.asarray(head["bias"])[rows]}


def retarget(params: dict, spec: Spec, target_kind: str, *, num_classes: int | None = None,
             label_map: str | None = None, seed: int = 0,
             head_init_scale: float = HEAD_INIT_SCALE) -> tuple[dict, Spec, SurgeryLog]:
  """Turns `spec.kind` params into `target_kind` params (see module doc). Returns a new dict."""
  log = SurgeryLog()
  src = spec.kind
  params = dict(params)
  width = spec.size.width

  def drop(name: str, why: str):
    if name in params:
      log.dropped.append(((name,), why))
      del params[name]

  def drop_encoder_norm(why: str):
    enc = dict(params["encoder"])
    if "norm" in enc:
      del enc["norm"]
      log.dropped.append((("encoder", "norm"), why))
    params["encoder"] = enc

  if src == target_kind == "classifier" and "head" not in params:  # a feature model
    if label_map:
      raise ConversionError("a label map re-indexes a classifier head; this feature model "
                            "has none (pass --num_classes for a fresh head)")
    if not num_classes:
      return params, dataclasses.replace(spec, num_classes=0), log
    head = fresh_head(width, num_classes, seed=seed, init_scale=head_init_scale)["head"]
    params["head"] = head
    log.created += [(("head", "kernel"), (width, num_classes),
                     f"trunc_normal(0.02) * {head_init_scale}, seed {seed}"),
                    (("head", "bias"), (num_classes,), "zeros")]
    log.notes.append(f"fresh {num_classes}-way head on the feature model's fc_norm")
    return params, dataclasses.replace(spec, num_classes=num_classes), log
  if src == target_kind == "classifier":
    k = params["head"]["kernel"].shape[-1]
    # Never re-indexed by the class count alone: 400 classes need not be Kinetics-400's.
    name = label_map
    if name:
      rows = load_label_map(name)
      params["head"] = reindex_head(params["head"], rows)
      log.notes.append(f"head re-indexed {k} -> {len(rows)} classes with label map {name}")
      k = len(rows)
    if num_classes and num_classes != k:
      hint = (f" (--label_map={auto_label_map(k, num_classes)} if the classes are Kinetics')"
              if auto_label_map(k, num_classes) else "")
      raise ConversionError(f"head.kernel has {k} classes, {num_classes} requested and no label "
                            f"map relates them: pass label_map / --label_map{hint}")
    return params, dataclasses.replace(spec, num_classes=k), log
  if label_map:
    raise ConversionError(f"a label map re-indexes a classifier head; this is a {src} checkpoint")
  if src == target_kind:
    return params, spec, log
  if target_kind == "pretrain":
    raise ConversionError(f"a {src} checkpoint has no decoder; it cannot become a pre-training "
                          "model (train one, or start from a pre-training checkpoint)")
  if target_kind == "classifier":
    if not num_classes:
      raise ConversionError(f"turning a {src} checkpoint into a classifier needs num_classes "
                            "(--num_classes) for the fresh head")
    for name in _DECODER_PARTS:
      drop(name, "pre-training decoder; not part of a classifier")
    drop_encoder_norm("the classifier mean-pools un-normalised tokens then applies a fresh "
                      "fc_norm (reference fine-tuning)")
    head = fresh_head(width, num_classes, seed=seed, init_scale=head_init_scale)
    params.update(head)
    log.created += [(("fc_norm", "scale"), (width,), "ones"),
                    (("fc_norm", "bias"), (width,), "zeros"),
                    (("head", "kernel"), (width, num_classes),
                     f"trunc_normal(0.02) * {head_init_scale}, seed {seed}"),
                    (("head", "bias"), (num_classes,), "zeros")]
    return params, Spec("classifier", spec.size, num_classes, False), log
  if target_kind == "encoder":
    for name in _DECODER_PARTS:
      drop(name, "pre-training decoder; encoder only requested")
    for name in _HEAD_PARTS:
      drop(name, "classifier head; encoder only requested")
    has_norm = "norm" in params["encoder"]
    return params, Spec("encoder", spec.size, None, has_norm), log
  raise ValueError(f"target kind {target_kind!r}")


def _resize_matrix(n_in: int, n_out: int, mode: str) -> np.ndarray:
  """[n_out, n_in] weights of torch.nn.functional.interpolate(align_corners=False) in 1-D:
  "bicubic" (Keys A=-0.75, taps clamped to the edge) or "linear" (source clamped at 0)."""
  if mode == "bicubic":
    return bicubic_matrix(n_in, n_out)
  m = np.zeros((n_out, n_in), np.float64)
  scale = n_in / n_out
  for j in range(n_out):
    x = scale * (j + 0.5) - 0.5
    x = max(x, 0.0)
    i0 = int(np.floor(x))
    i1 = min(i0 + 1, n_in - 1)
    frac = x - i0
    m[j, i0] += 1.0 - frac
    m[j, i1] += frac
  return m


def interpolate_pos_table(table, src_grid: tuple[int, int, int],
                          dst_grid: tuple[int, int, int]) -> np.ndarray:
  """Resizes a learned [N, D] (or [1, N, D]) table over its (t, h, w) token grid.

  As the reference's fine-tuning script: bicubic over (h, w) per temporal slice
  (torch interpolate, align_corners=False), then linear over t. A fixed
  sinusoid table should be regenerated, not interpolated.
  """
  table = np.asarray(table, np.float32)
  lead = table.shape[:-2]
  d = table.shape[-1]
  t, h, w = src_grid
  if table.shape[-2] != t * h * w:
    raise ValueError(f"table has {table.shape[-2]} rows, grid {src_grid} has {t * h * w}")
  x = table.reshape((-1, t, h, w, d)).astype(np.float64)
  t2, h2, w2 = dst_grid
  if (h, w) != (h2, w2):
    x = np.einsum("Hh,bthwd->btHwd", _resize_matrix(h, h2, "bicubic"), x)
    x = np.einsum("Ww,btHwd->btHWd", _resize_matrix(w, w2, "bicubic"), x)
  if t != t2:
    x = np.einsum("Tt,bthwd->bThwd", _resize_matrix(t, t2, "linear"), x)
  return x.astype(np.float32).reshape(lead + (t2 * h2 * w2, d))
