"""Strict import/export between a flat PyTorch state dict and our nested params."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from vmae2_jax.conversion.layouts import Rule, Spec, bias_rules, rules_for
from vmae2_jax.conversion.report import ConversionError, ConversionReport
from vmae2_jax.models.posemb import sinusoid_table

# Position tables some files carry. The reference's are fixed sinusoids and are
# regenerated for the token grid at run time, so a table equal to the sinusoid
# is dropped; a learned one cannot be represented by these models.
POS_EMBED_KEYS = ("pos_embed", "encoder.pos_embed", "decoder.pos_embed", "backbone.pos_embed",
                  "videomae.embeddings.position_embeddings", "embeddings.position_embeddings",
                  "position_embeddings")


# ----------------------------------------------------------- nested helpers
def flatten(tree: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from flatten(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def get_path(tree: dict, path: tuple[str, ...]):
  for k in path:
    tree = tree[k]
  return tree


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def has_path(tree: dict, path: tuple[str, ...]) -> bool:
  for k in path:
    if not isinstance(tree, dict) or k not in tree:
      return False
    tree = tree[k]
  return True


# -------------------------------------------------------------------- import
def _is_sinusoid(table: np.ndarray) -> bool:
  t = np.asarray(table, np.float32).reshape(-1, table.shape[-1])
  return np.allclose(t, sinusoid_table(t.shape[0], t.shape[1]), atol=1e-4)


def check_qv_biases(rules: list[Rule], state: dict[str, np.ndarray]) -> str | None:
  """A warning when every q/v bias present is exactly zero (a silently dropped bias)."""
  present = [state[r.srcs[0]] for r in bias_rules(rules) if r.srcs[0] in state]
  if present and all(not np.any(b) for b in present):
    return (f"all {len(present)} q_bias/v_bias tensors are exactly zero. Trained VideoMAE "
            "models have non-zero q/v biases; this file was probably written by a converter "
            "that dropped them (a known transformers loading problem), and its outputs will "
            "be wrong. Re-export it from the original checkpoint.")
  return None


def refuse_unsupported_options(state: dict[str, np.ndarray], source: str = "") -> None:
  """ConversionError for the reference's options these models lack (docs/checkpoints.md):
  layer scale (init_values > 0: blocks.N.gamma_1 / gamma_2) and cosine attention
  (cos_attn=True: a learned attn.scale per head). Every published checkpoint has neither."""
  found = {
      "layer scale (the reference's init_values > 0)":
          [k for k in state if k.endswith((".gamma_1", ".gamma_2", ".lambda_1", ".lambda_2"))],
      "cosine attention (the reference's cos_attn=True)":
          [k for k in state if k.endswith(".attn.scale")],
  }
  for what, keys in found.items():
    if keys:
      raise ConversionError(
          f"{source or 'checkpoint'}: uses {what}, {len(keys)} tensors such as {keys[0]}; "
          "these models do not implement it (no published VideoMAE V2 checkpoint uses it; "
          "see docs/checkpoints.md)")


def import_state_dict(state: dict[str, np.ndarray], layout: str, spec: Spec, *,
                      hf_prefix: str = "videomae.", source: str = "", dtype=np.float32,
                      zero_bias: str = "warn", on_bytes=None) -> tuple[dict, ConversionReport]:
  """Maps every tensor of `state` onto a `spec` model's params, or raises naming keys.

  Returns (nested params in our layout, report). dtype=None keeps source dtypes.
  `on_bytes(done, total)` reports progress in source bytes mapped.
  """
  refuse_unsupported_options(state, source)
  rules = rules_for(layout, spec, hf_prefix)
  rep = ConversionReport(source=source, layout=layout, kind=spec.kind, target_kind=spec.kind)
  used: set[str] = set()
  slices: dict[tuple[str, ...], dict[int | None, np.ndarray]] = {}
  missing_seen = set()
  done, total = 0, sum(a.nbytes for a in state.values())
  for r in rules:
    arrays, ok = [], True
    for key, shape in zip(r.srcs, r.src_shapes):
      if key not in state:
        if key not in missing_seen:
          rep.missing.append((key, shape))
          missing_seen.add(key)
        ok = False
        continue
      used.add(key)
      a = state[key]
      if tuple(a.shape) != shape:
        rep.misshaped.append((key, tuple(a.shape), shape))
        ok = False
      arrays.append(a)
    if not ok:
      continue
    out = np.asarray(r.to_ours(*arrays))
    if dtype is not None and np.issubdtype(out.dtype, np.floating):
      out = out.astype(dtype, copy=False)  # often a view of the source: stacking copies once
    slices.setdefault(r.path, {})[r.layer] = out
    done += sum(a.nbytes for a in arrays)
    if on_bytes:
      on_bytes(done, total)
    for key, shape in zip(r.srcs, r.src_shapes):
      rep.mapped.append((key, r.dst_name, shape))

  for key in sorted(set(state) - used):
    shape = tuple(state[key].shape)
    if key in POS_EMBED_KEYS and _is_sinusoid(state[key]):
      rep.dropped.append((key, shape, "fixed sinusoid position table; regenerated for the "
                                      "token grid at run time"))
    elif key in POS_EMBED_KEYS:
      rep.unexpected.append((key, shape))
      rep.notes.append(f"{key} is a learned position table; these models use fixed sinusoid "
                       "tables, so it cannot be imported (surgery.interpolate_pos_table resizes "
                       "one in (t, h, w) for other tools)")
    else:
      rep.unexpected.append((key, shape))

  warning = check_qv_biases(rules, state)
  if warning:
    if zero_bias == "error":
      rep.misshaped.append(("q_bias/v_bias (all zero)", (), ()))
      rep.notes.append(warning)
    else:
      rep.warnings.append(warning)
  rep.raise_if_bad()

  params: dict = {}
  for path in list(slices):
    by_layer = slices.pop(path)  # each layer's arrays freed once stacked
    if None in by_layer:
      set_path(params, path, np.ascontiguousarray(by_layer[None]))
    else:
      set_path(params, path, np.stack([by_layer.pop(i) for i in range(len(by_layer))]))
  return params, rep


def source_keys_by_path(layout: str, spec: Spec, hf_prefix: str = "videomae."
                        ) -> dict[tuple[str, ...], list[tuple[str, tuple[int, ...]]]]:
  """Our param path -> the source keys (with shapes) it is made of."""
  out: dict = {}
  for r in rules_for(layout, spec, hf_prefix):
    out.setdefault(r.path, []).extend(zip(r.srcs, r.src_shapes))
  return out


# -------------------------------------------------------------------- export
def export_state_dict(params: dict, layout: str, spec: Spec, *, hf_prefix: str = "videomae."
                      ) -> dict[str, np.ndarray]:
  """Our nested params -> a flat state dict in `layout` (every param used exactly once)."""
  rules = rules_for(layout, spec, hf_prefix)
  covered = {r.path for r in rules}
  ours = {path: np.asarray(v) for path, v in flatten(params)}
  extra = sorted(".".join(p) for p in set(ours) - covered)
  absent = sorted(".".join(p) for p in covered - set(ours))
  if extra or absent:
    raise ConversionError(
        f"params do not match a {spec.kind} model of this size: unexpected {extra}, missing "
        f"{absent}")
  layers: dict[tuple[str, ...], int] = {}
  for r in rules:
    if r.layer is not None:
      layers[r.path] = max(layers.get(r.path, 0), r.layer + 1)
  for path, n in layers.items():
    if ours[path].shape[0] != n:
      raise ConversionError(f"{'.'.join(path)} stacks {ours[path].shape[0]} layers; a "
                            f"{spec.kind} model of this size has {n}")
  out: dict[str, np.ndarray] = {}
  for r in rules:
    a = ours[r.path]
    if r.layer is not None:
      a = a[r.layer]
    for key, shape, v in zip(r.srcs, r.src_shapes, r.to_src(a)):
      if tuple(v.shape) != shape:
        raise ConversionError(f"{'.'.join(r.path)} has shape {list(ours[r.path].shape)}; it "
                              f"would give {key} shape {list(v.shape)}, expected {list(shape)}")
      out[key] = np.ascontiguousarray(v)
  return out
