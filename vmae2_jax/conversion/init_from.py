"""`--config.init_from=DIR`: start a model from a converted checkpoint, with stage surgery.

Which parts are taken from DIR depends on (source kind -> target kind):
  pretrain   -> pretrain:    everything.
  pretrain   -> classifier:  encoder patch embedding and blocks; the encoder's
                             final norm, decoder and mask token are dropped and
                             the target's own (fresh) fc_norm and head are kept,
                             as the reference fine-tuning does.
  encoder    -> classifier:  as above.
  encoder    -> pretrain:    encoder (with its final norm, required); the
                             target's fresh decoder is kept.
  classifier -> classifier:  everything; a head of another size is re-indexed
                             with a label map (710 -> 400/600/700 automatically
                             with the packaged Kinetics maps, only when the
                             run's classes are that Kinetics set by name), or, when no map
                             relates the two class sets (or fresh_head=True),
                             left fresh while fc_norm is still taken, as the
                             reference drops only head.weight/head.bias then.
Position tables are fixed sinusoids rebuilt for the target's frames and
resolution, so other clip shapes need nothing here.

DIR is any model source of vmae2_jax.checkpointing.model_io: a converted
checkpoint, a run's workdir (its latest step), WORKDIR/best or one step;
only the parameters are read, never the optimizer state.

A head that is taken (as is or re-indexed) must name the run's classes in the
run's order: when both the source (model.json class_names; a packaged Kinetics
map's names) and the run name their classes, a mismatch is refused in one line.
"""

from __future__ import annotations


import numpy as np
from absl import logging

from vmae2_jax import paths
from vmae2_jax.checkpointing import model_io
from vmae2_jax.conversion import hub, labels, mapping, surgery, torch_io
from vmae2_jax.conversion.report import ConversionError
from vmae2_jax.data import kinetics

SHOWN_PROBLEMS = 3  # mismatched tensors named in the one-line error; the rest counted


def _take(target: dict, source: dict, prefixes: list[tuple[str, ...]],
          skip: list[tuple[str, ...]]) -> tuple[dict, list[str]]:
  """Copies source leaves under `prefixes` (minus `skip`) into a copy of target; checks shapes."""
  out = _copy_tree(target)
  problems, taken = [], []
  tgt_leaves = dict(mapping.flatten(target))
  src_leaves = dict(mapping.flatten(source))

  def selected(p):
    return (any(p[:len(x)] == x for x in prefixes) and not any(p[:len(x)] == x for x in skip))

  for path, leaf in tgt_leaves.items():
    if not selected(path):
      continue
    name = ".".join(path)
    if path not in src_leaves:
      problems.append(f"missing in checkpoint: {name} (model has {list(np.shape(leaf))})")
      continue
    src = src_leaves[path]
    if tuple(np.shape(src)) != tuple(np.shape(leaf)):
      problems.append(f"mis-shaped: {name} checkpoint {list(np.shape(src))}, model "
                      f"{list(np.shape(leaf))}")
      continue
    mapping.set_path(out, path, np.asarray(src).astype(leaf.dtype))
    taken.append(name)
  for path in src_leaves:
    if selected(path) and path not in tgt_leaves:
      problems.append(f"unexpected in checkpoint: {'.'.join(path)} "
                      f"{list(np.shape(src_leaves[path]))}")
  if problems:
    counts = ", ".join(f"{sum(p.startswith(k) for p in problems)} {k}" for k in
                       ("mis-shaped", "missing", "unexpected") if any(
                           p.startswith(k) for p in problems))
    # The telling ones first (the patch embedding shows the width), then a count.
    problems.sort(key=lambda p: ("patch_embed" not in p, "encoder." not in p))
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    raise ConversionError(f"init_from does not fit the model ({counts}): {shown}"
                          + (f"; and {more} more" if more > 0 else ""))
  return out, taken


def _kind_of(params: dict) -> str:
  if "decoder" in params:
    return "pretrain"
  if "head" in params and "fc_norm" not in params:  # the detector has no fc_norm
    return "detector"
  if "head" in params or "fc_norm" in params:  # fc_norm alone: a published feature model
    return "classifier"
  return "encoder"


def read_init_source(path: str) -> tuple[dict, dict]:
  """(params as numpy, meta with the kind the weights show) of any model source, or of a
  PyTorch file, HF folder or hf://ORG/NAME, converted in memory (conversion.api)."""
  if _foreign(path):
    from vmae2_jax.conversion import api  # noqa: PLC0415  (api imports the models)
    params, meta, rep = api.import_checkpoint(path)
    logging.info("init_from %s: converted in memory\n%s", path, rep.summary())
    return params, dict(meta, kind=_kind_of(params))
  params, meta = model_io.load_source(path)  # else its errors say what a source holds
  return params, dict(meta, kind=_kind_of(params))


def _foreign(path: str) -> bool:
  """hf://ORG/NAME, a PyTorch / safetensors file, or an HF folder (its weight files)."""
  if hub.is_hub(path):
    return True
  if paths.isfile(path):  # a file is never a model source (those are folders)
    return True
  if model_io.is_source(path):
    return False
  return paths.isdir(path) and any(paths.exists(paths.join(path, name))
                                   for name in torch_io.HF_WEIGHT_FILES)


def _copy_tree(tree: dict) -> dict:
  return {k: _copy_tree(v) if isinstance(v, dict) else v for k, v in tree.items()}


def _kinetics_map(k_src: int, src_names, run_names) -> str | None:
  """The packaged 710 -> X map when the run's classes are Kinetics-X by name and the
  source is a 710-way head (named K710, or unnamed as converted .pth heads are)."""
  if k_src != 710 or not run_names or (src_names and kinetics.identify(src_names) != "k710"):
    return None
  dataset = kinetics.identify(run_names)
  name = f"710to{dataset[1:]}" if dataset else None
  return name if name in labels.LABEL_MAPS else None


def _head_names(src_names, k_src: int, map_name: str | None, rows) -> list[str] | None:
  """The class names of the head as taken: the source's, re-indexed when mapped."""
  if map_name in labels.LABEL_MAPS and not src_names:
    return list(labels.class_names("k" + map_name.split("to")[1]))
  if not src_names or len(src_names) != k_src:
    return None
  return [src_names[int(r)] for r in rows] if rows is not None else list(src_names)


def _detector_from(params: dict, src: dict, kind: str, directory: str, label_map,
                   fresh_head: bool) -> tuple[dict, list[str]]:
  """The detector's weights from any model: the encoder always; its final norm from a
  model that has one (pre-training, an encoder with norm, a detector), else fresh as in
  the reference (a classifier's fc_norm is not loaded, it is another norm); the 80-way
  head only from a detector (a classifier's head is dropped)."""
  if label_map:
    raise ConversionError(f"label_map given but a detector's head is never re-indexed from "
                          f"{directory}")
  if kind == "detector" and not fresh_head:
    return _take(params, src, [()], [])
  if kind not in ("pretrain", "encoder", "classifier", "detector"):
    raise ConversionError(f"{directory}: unknown checkpoint kind {kind!r}")
  skip = [] if "norm" in src.get("encoder", {}) else [("encoder", "norm")]
  out, taken = _take(params, src, [("encoder",)], skip)
  logging.info("init_from %s: %s encoder -> detector; %sthe head starts fresh", directory, kind,
               "the final norm and " if skip else "")
  return out, taken


def apply_init_from(params: dict, directory: str, target_kind: str, *,
                    label_map: str | None = None, fresh_head: bool = False,
                    class_names=None) -> dict:
  """Returns a copy of `params` (a pure dict) with DIR's weights applied by stage surgery.

  Args:
    params: the target model's nnx.to_pure_dict(nnx.state(model, nnx.Param)); its
      leaves may be arrays or ShapeDtypeStructs (those taken from DIR become
      numpy arrays in the leaf's dtype; the rest are returned as given).
    directory: any model source (a converted checkpoint, a run's workdir, its
      best or one step).
    target_kind: "pretrain", "classifier" or "detector".
    label_map: a packaged map name ("710to400") or JSON path re-indexing the head.
    fresh_head: keep the target's fresh head even when DIR's classifier head fits.
    class_names: the run's class names by index, when known: they pick the Kinetics
      label map and are checked against the names of the head taken.

  Raises:
    ConversionError naming every missing, unexpected or mis-shaped key.
  """
  src, meta = read_init_source(directory)
  kind = meta["kind"]
  enc_all = [("encoder",)]
  no_norm = [("encoder", "norm")]
  if target_kind == "pretrain":
    if kind == "pretrain":
      out, taken = _take(params, src, [()], [])
    elif kind == "encoder":
      if "norm" not in src["encoder"]:
        raise ConversionError(f"{directory}: encoder checkpoint without encoder.norm cannot start "
                              "a pre-training model (its encoder needs the final LayerNorm)")
      out, taken = _take(params, src, enc_all, [])
      logging.info("init_from %s: encoder only; the decoder starts fresh", directory)
    else:
      raise ConversionError(f"{directory}: a {kind} checkpoint cannot start a pre-training model "
                            "(no decoder, no encoder.norm)")
  elif target_kind == "classifier":
    if label_map and (kind != "classifier" or fresh_head):
      raise ConversionError(f"label_map given but {directory} has no classifier head to "
                            "re-index" if kind != "classifier" else
                            "label_map and fresh_head exclude each other")
    if kind in ("pretrain", "encoder"):
      out, taken = _take(params, src, enc_all, no_norm)
      logging.info("init_from %s: %s encoder -> classifier; fc_norm and head start fresh",
                   directory, kind)
    elif kind == "classifier":
      k_src = src["head"]["kernel"].shape[-1] if "head" in src else 0  # 0: a feature model
      k_dst = np.shape(params["head"]["kernel"])[-1]
      src_names = meta.get("class_names")
      if label_map and not k_src:
        raise ConversionError(f"label_map given but {directory} is a feature model without a "
                              "classification head to re-index")
      name = label_map or (_kinetics_map(k_src, src_names, class_names)
                           if k_src not in (0, k_dst) else None)
      if fresh_head or (k_src != k_dst and not name):
        why = ("fresh_head requested" if fresh_head else
               "a feature model without a head" if not k_src else
               f"no label map relates {k_src} to {k_dst} classes" +
               (" (the run's classes are not a Kinetics set by name; pass "
                f"init_label_map=710to{k_dst} to re-index anyway)"
                if labels.auto_label_map(k_src, k_dst) else ""))
        out, taken = _take(params, src, [()], [("head",)])
        logging.info("init_from %s: %s; the head (%d classes) starts fresh, fc_norm and encoder "
                     "are taken", directory, why, k_dst)
      else:
        rows = labels.label_map(name) if name else None
        if name:
          src = dict(src)
          src["head"] = surgery.reindex_head(src["head"], rows)
          logging.info("init_from %s: head re-indexed %d -> %d with %s", directory, k_src,
                       src["head"]["kernel"].shape[-1], name)
        head_names = _head_names(src_names, k_src, name, rows)
        if class_names and head_names and len(head_names) == len(class_names):
          diff = kinetics.name_differences(list(class_names), head_names)
          if diff:
            raise ConversionError(
                f"{directory}: its head's classes are not this run's (run vs head): {diff}; "
                "rebuild the data in the model's class order, or start a fresh head "
                "(init_fresh_head=True)")
        out, taken = _take(params, src, [()], [])
    else:
      raise ConversionError(f"{directory}: unknown checkpoint kind {kind!r}")
  elif target_kind == "detector":
    out, taken = _detector_from(params, src, kind, directory, label_map, fresh_head)
  else:
    raise ValueError(f"target_kind={target_kind!r} is not pretrain|classifier|detector")
  logging.info("init_from %s (%s, %s): %d tensors taken", directory, kind,
               meta.get("variant"), len(taken))
  return out
