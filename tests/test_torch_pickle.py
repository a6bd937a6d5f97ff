"""PyTorch checkpoint files without PyTorch: files torch.save wrote (stored, see
tests/torch_reference.py) are read value for value, ours have torch's layout, and
reading never runs code from the file."""

import io
import json
import os
import pickle
import pickletools
import struct
import zipfile

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from tests import torch_reference as ref
from vmae2_jax.conversion import torch_io, torch_pickle

SAVED = os.path.join(ref.ROOT, "torch_save")


def _expected():
  want = dict(ref.saved_objects())
  w = want["weight"]
  want.update(weight_t=w.T, rows=w[1:3], param=w, bf16=w.astype(ml_dtypes.bfloat16))
  return want


@pytest.mark.parametrize("name", ["zip.pth", "legacy.pth"])
def test_reads_what_torch_save_wrote(name):
  obj = torch_pickle.load(os.path.join(SAVED, name))
  assert obj["epoch"] == 3
  assert "argparse.Namespace" in repr(obj["args"])  # an inert placeholder
  model = obj["model"]
  want = _expected()
  assert list(model) == list(want)
  for k, v in want.items():
    assert model[k].dtype == v.dtype and model[k].shape == v.shape, k
    np.testing.assert_array_equal(model[k], v, err_msg=k)
  assert model["weight_t"].flags.c_contiguous and model["weight"].flags.writeable
  # A view that shares its storage gets its own copy: writing one leaves the other alone.
  model["rows"][0, 0] = 99.0
  assert model["weight"][1, 0] == want["weight"][1, 0]


def test_state_dict_from_a_torch_file_is_unwrapped_and_widened():
  state, notes = torch_io.read_state_dict(os.path.join(SAVED, "zip.pth"))
  assert state["bf16"].dtype == np.float32
  np.testing.assert_array_equal(state["bf16"], _expected()["bf16"].astype(np.float32))
  assert any("'model' entry" in n for n in notes) and any("widened" in n for n in notes)


def _globals(pkl: bytes) -> set[str]:
  return {arg for op, arg, _ in pickletools.genops(pkl) if op.name == "GLOBAL"}


def _records(path):
  with zipfile.ZipFile(path) as zf:
    prefix = zf.namelist()[0].split("/")[0] + "/"
    return {i.filename[len(prefix):]: (zf.read(i), i) for i in zf.infolist()}, prefix


def test_written_files_have_torch_layout(tmp_path):
  theirs, _ = _records(os.path.join(SAVED, "zip.pth"))
  state = {k: v for k, v in _expected().items() if k not in ("weight_t", "rows", "param")}
  path = str(tmp_path / "ours.pth")
  torch_pickle.save({"model": state, "epoch": 3}, path)
  ours, prefix = _records(path)
  assert prefix == "archive/"
  # The same records (torch adds a random serialization id) with the same contents.
  meta = lambda records: {n for n in records if not n.startswith("data/")}  # noqa: E731
  assert meta(theirs) - meta(ours) == {".data/serialization_id"} and meta(ours) < meta(theirs)
  assert sorted(n for n in ours if n.startswith("data/")) == [f"data/{i}" for i in range(len(state))]
  for name in (".format_version", ".storage_alignment", "byteorder", "version"):
    assert ours[name][0] == theirs[name][0], name
  # Only globals torch itself writes (what its weights_only loader accepts).
  assert _globals(ours["data.pkl"][0]) <= _globals(theirs["data.pkl"][0])
  with zipfile.ZipFile(path) as zf:  # records start on 64-byte boundaries, as torch's
    for name, (_, info) in ours.items():
      zf.fp.seek(info.header_offset + 26)
      n, m = struct.unpack("<HH", zf.fp.read(4))
      assert (info.header_offset + 30 + n + m) % 64 == 0, name
  back = torch_pickle.load(path)
  assert back["epoch"] == 3 and list(back["model"]) == list(state)
  for k, v in state.items():
    assert back["model"][k].dtype == v.dtype and back["model"][k].shape == v.shape
    np.testing.assert_array_equal(back["model"][k], v)


def test_reading_never_runs_code_from_the_file(tmp_path):
  flag = tmp_path / "ran"

  class Payload:
    def __reduce__(self):
      return (exec, (f"open({str(flag)!r}, 'w').close()",))

  # A torch-style zip whose pickle would create a file if a loader ran it.
  buf = io.BytesIO()
  pickle.dump({"model": {}, "evil": Payload()}, buf, protocol=2)
  path = str(tmp_path / "evil.pth")
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", buf.getvalue())
  obj = torch_pickle.load(path)
  assert not flag.exists() and "exec (not loaded)" in repr(obj["evil"])
  legacy = str(tmp_path / "evil_legacy.pth")
  with open(legacy, "wb") as f:
    for x in (torch_pickle._LEGACY_MAGIC, 1001, {"little_endian": True}):
      pickle.dump(x, f, protocol=2)
    pickle.dump(Payload(), f, protocol=2)
    pickle.dump([], f, protocol=2)
  torch_pickle.load(legacy)
  assert not flag.exists()
  pickle.loads(buf.getvalue())  # the payload is real: a plain unpickler runs it
  assert flag.exists()


def test_damaged_files_name_the_file(tmp_path):
  good = os.path.join(SAVED, "zip.pth")
  with open(good, "rb") as f:
    data = f.read()
  cases = {"truncated.pth": data[:len(data) // 2], "noise.pth": os.urandom(300),
           "empty.pth": b""}
  for name, content in cases.items():
    path = str(tmp_path / name)
    with open(path, "wb") as f:
      f.write(content)
    with pytest.raises(ValueError) as e:
      torch_io.read_state_dict(path)
    msg = str(e.value)
    assert msg.startswith(path) and "\n" not in msg, msg
  # A storage record shorter than the pickle says.
  path = str(tmp_path / "short.pth")
  with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
    for info in src.infolist():
      body = src.read(info)
      dst.writestr(info.filename, body[:-4] if info.filename.endswith("data/0") else body)
  with pytest.raises(ValueError, match="short.pth"):
    torch_io.read_state_dict(path)


def test_bfloat16_safetensors_read_without_torch(tmp_path):
  """A bfloat16 safetensors file (written here byte by byte) is read and widened."""
  w = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
  path = str(tmp_path / "bf16.safetensors")
  header = {"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
            "b": {"dtype": "F32", "shape": [3], "data_offsets": [12, 24]},
            "__metadata__": {"format": "pt"}}
  h = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + w.astype(ml_dtypes.bfloat16).tobytes()
            + np.ones(3, np.float32).tobytes())
  state, notes = torch_io.read_state_dict(path)
  np.testing.assert_array_equal(state["w"], w.astype(ml_dtypes.bfloat16).astype(np.float32))
  np.testing.assert_array_equal(state["b"], np.ones(3, np.float32))
  assert any("widened" in n for n in notes)
  save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "f32.safetensors"))
  assert torch_io.read_state_dict(str(tmp_path / "f32.safetensors"))[1] == []
