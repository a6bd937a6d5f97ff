"""Writes tests/data/torch_reference: what torch and Hugging Face compute on fixed inputs.

Run from the repository root where torch and transformers are installed:

  pip install -e ".[cpu,test,bench]" && python -m tests.make_torch_reference

Re-run it when transformers changes VideoMAE, and commit the folder. It also
checks that torch loads the .pth files this project writes without torch.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import tempfile

import numpy as np
import torch
import transformers

from tests import torch_reference as ref
from vmae2_jax.conversion import torch_pickle


def hf_model(case: str):
  size, cls_name, seed, num_labels = ref.HF_CASES[case]
  kw, frames, image, _ = ref.SIZES[size]
  cfg = transformers.VideoMAEConfig(image_size=image, patch_size=16, num_frames=frames,
                                    layer_norm_eps=1e-6,
                                    use_mean_pooling=cls_name.endswith("Classification"), **kw)
  if num_labels:
    cfg.num_labels = num_labels
  torch.manual_seed(seed)
  model = getattr(transformers, cls_name)(cfg)
  schema = [(k, list(v.shape)) for k, v in model.state_dict().items()]
  state = ref.random_state([(k, tuple(s)) for k, s in schema], seed)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  for m in model.modules():  # HF hard-codes eps 1e-5 in fc_norm and the decoder norm
    if isinstance(m, torch.nn.LayerNorm):
      m.eps = 1e-6
  return model.eval(), schema


@torch.no_grad()
def hf_outputs(case: str, model) -> dict[str, np.ndarray]:
  x = {k: torch.from_numpy(v) for k, v in ref.hf_inputs(case).items()}
  if case.endswith("k710"):
    return {}
  if case.endswith("pretrain"):
    out = {"logits": model(x["video"], bool_masked_pos=x["mask"]).logits,
           "export_logits": model(x["export_video"], bool_masked_pos=x["export_mask"]).logits}
    if case.startswith("S"):  # the export checks use the tiny models only
      out = {"logits": out["logits"][:, ::ref.S_PRETRAIN_ROW_STRIDE]}
  elif case.endswith("encoder"):
    out = {"last_hidden_state": model(x["video"], bool_masked_pos=x["mask"]).last_hidden_state}
  else:
    out = {"logits": model(x["video"]).logits}
    if case.startswith("tiny"):
      out["export_logits"] = model(x["export_video"]).logits
  return {k: v.numpy() for k, v in out.items()}


def write_hf_cases() -> None:
  for case in ref.HF_CASES:
    model, schema = hf_model(case)
    d = ref.case_dir(case)
    os.makedirs(d, exist_ok=True)
    model.config.to_json_file(os.path.join(d, "config.json"))
    with open(os.path.join(d, "schema.json"), "w") as f:
      json.dump(schema, f)
    outputs = hf_outputs(case, model)
    if outputs:
      np.savez(os.path.join(d, "outputs.npz"), **outputs)
    print(f"{case}: {len(schema)} tensors, outputs {sorted(outputs)}")


def write_torch_save_files() -> None:
  objs = {k: torch.from_numpy(v) for k, v in ref.saved_objects().items()}
  w = objs["weight"]
  model = collections.OrderedDict(objs)
  model["weight_t"] = w.t()               # a transposed view (non-contiguous strides)
  model["rows"] = w[1:3]                  # a view at an offset into the same storage
  model["param"] = torch.nn.Parameter(w.clone())
  model["bf16"] = w.to(torch.bfloat16)
  obj = {"model": model, "epoch": 3, "args": argparse.Namespace(lr=1e-3, model="vit")}
  d = os.path.join(ref.ROOT, "torch_save")
  os.makedirs(d, exist_ok=True)
  torch.save(obj, os.path.join(d, "zip.pth"))
  torch.save(obj, os.path.join(d, "legacy.pth"), _use_new_zipfile_serialization=False)


def check_our_writer() -> None:
  """torch's safe loader accepts what torch_pickle.save writes, value for value."""
  state = dict(ref.saved_objects())
  state["bf16"] = state["weight"].astype(torch_pickle.STORAGE_DTYPES["BFloat16Storage"])
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "ours.pth")
    torch_pickle.save({"module": state, "epoch": 7}, path)
    back = torch.load(path, weights_only=True)
  assert list(back) == ["module", "epoch"] and back["epoch"] == 7
  for k, v in state.items():
    got = back["module"][k]
    assert tuple(got.shape) == v.shape, k
    np.testing.assert_array_equal(got.float().numpy() if k == "bf16" else got.numpy(),
                                  v.astype(np.float32) if k == "bf16" else v, err_msg=k)
  print("torch.load(weights_only=True) reads torch_pickle.save's file")


def write_interpolations() -> None:
  r = ref.RESIZE_TABLE
  src, dst, dim = r["src"], r["dst"], r["dim"]
  x = torch.tensor(ref.resize_table_input()).reshape(*src, dim).permute(0, 3, 1, 2)
  x = torch.nn.functional.interpolate(x, size=dst[1:], mode="bicubic", align_corners=False)
  x = x.permute(2, 3, 1, 0).reshape(-1, dim, src[0])
  x = torch.nn.functional.interpolate(x, size=dst[0], mode="linear")
  table = x.reshape(dst[1], dst[2], dim, dst[0]).permute(3, 0, 1, 2).reshape(-1, dim)
  frames = torch.nn.functional.interpolate(torch.from_numpy(ref.bilinear_input()),
                                           size=ref.BILINEAR_FRAMES["size"], mode="bilinear",
                                           align_corners=False)
  np.savez(os.path.join(ref.ROOT, "interpolate.npz"), pos_table=table.numpy(),
           bilinear_frames=frames.numpy())


def main() -> None:
  os.makedirs(ref.ROOT, exist_ok=True)
  write_hf_cases()
  write_torch_save_files()
  write_interpolations()
  check_our_writer()
  # Merged into the manifest: other generators' entries (make_roi_reference's
  # "roi_align.npz") stay.
  manifest_path = os.path.join(ref.ROOT, "MANIFEST.json")
  manifest = {}
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      manifest = json.load(f)
  manifest.update({"made_by": "python -m tests.make_torch_reference",
                   "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                   "transformers": transformers.__version__, "numpy": np.__version__})
  with open(manifest_path, "w") as f:
    json.dump(manifest, f, indent=1)
  print(f"wrote {ref.ROOT}")


if __name__ == "__main__":
  main()
