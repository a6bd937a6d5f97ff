"""PyTorch checkpoint files (.pth/.pt/.bin) read and written without PyTorch.

`torch.save` writes a zip archive (since torch 1.6): `data.pkl`, a pickle
whose tensors are calls to `torch._utils._rebuild_tensor_v2` on persistent
storage references, and one raw record per storage under `data/`. Older
torch wrote the same pickle followed by the storages in one stream (the
"legacy" format). Both are read here into numpy arrays.

Reading never runs code from the file: the unpickler resolves the handful of
torch globals that describe tensors and turns every other global (argparse
namespaces, numpy scalars, optimizer classes...) into an inert placeholder,
so the state dict is found without trusting the pickle. Writing emits the
zip layout torch itself writes (protocol 2, 64-byte aligned records), which
`torch.load(..., weights_only=True)` accepts.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

# torch storage class name -> numpy dtype (bfloat16 through ml_dtypes, a jax dependency).
STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128, "UntypedStorage": np.uint8,
}
STORAGE_NAMES = {np.dtype(v): k for k, v in STORAGE_DTYPES.items() if k != "UntypedStorage"}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_ALIGN = 64  # torch aligns every storage record to 64 bytes (mmap loading relies on it)


class UnreadableCheckpoint(ValueError):
  """The file is not a torch checkpoint this module can read."""


# ------------------------------------------------------------------ reading
class _Storage:
  """A persistent storage reference; its bytes are attached once they are read."""

  def __init__(self, key: str, dtype):
    self.key, self.dtype, self.array, self.handed_out = key, np.dtype(dtype), None, False


class _Tensor:
  """A tensor as the pickle describes it (a strided view of a storage)."""

  def __init__(self, storage: _Storage, offset: int, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def materialise(self) -> np.ndarray:
    flat = self.storage.array
    if not self.size:
      return flat[self.offset:self.offset + 1].reshape(()).copy()
    if 0 in self.size:
      return np.zeros(self.size, flat.dtype)
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if last >= flat.size:
      raise UnreadableCheckpoint(f"a tensor of shape {list(self.size)} reads past its storage "
                                 f"{self.storage.key!r} ({flat.size} elements)")
    whole = self.offset == 0 and int(np.prod(self.size)) == flat.size
    if whole and self.stride == _contiguous_strides(self.size) and not self.storage.handed_out:
      self.storage.handed_out = True  # the common case: no copy (a second user gets one)
      return flat.reshape(self.size)
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], self.size, [s * flat.itemsize for s in self.stride], writeable=False)
    return np.array(view, order="C")  # its own writable, C-ordered copy


def _contiguous_strides(size) -> tuple[int, ...]:
  strides, step = [], 1
  for n in reversed(size):
    strides.append(step)
    step *= n
  return tuple(reversed(strides))


class _Opaque:
  """Stands in for any non-tensor global in the pickle; never runs the real one."""

  def __new__(cls, *args, **kwargs):
    return object.__new__(cls)

  def __init__(self, *args, **kwargs):
    pass

  def __setstate__(self, state):
    pass

  def __repr__(self):
    return f"<{self.qualified_name} (not loaded)>"


def _rebuild_tensor(storage, offset, size, stride, *unused):
  return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


def _rebuild_from_type(func, new_type, args, state):
  return func(*args)  # tensor subclasses: the plain tensor is what a state dict needs


class _StorageType:
  def __init__(self, name):
    self.name = name


_TENSOR_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): tuple,
}


class _Unpickler(pickle.Unpickler):
  """Resolves tensor-describing globals; everything else becomes an _Opaque."""

  def __init__(self, stream, storages: dict[str, _Storage]):
    super().__init__(stream)
    self.storages = storages

  def find_class(self, module, name):
    if (module, name) in _TENSOR_GLOBALS:
      return _TENSOR_GLOBALS[module, name]
    if module == "torch" and name in STORAGE_DTYPES:
      return _StorageType(name)
    return type(name, (_Opaque,), {"qualified_name": f"{module}.{name}"})

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise UnreadableCheckpoint(f"unknown persistent reference {pid!r:.80}")
    storage_type, key = pid[1], str(pid[2])
    if not isinstance(storage_type, _StorageType):
      raise UnreadableCheckpoint(f"storage {key!r} has an unknown type {storage_type!r}")
    if key not in self.storages:
      self.storages[key] = _Storage(key, STORAGE_DTYPES[storage_type.name])
    storage = self.storages[key]
    view = pid[5] if len(pid) > 5 else None  # legacy format: (view key, offset, size)
    if view is not None:
      raise UnreadableCheckpoint("storage views of the legacy format are not supported; "
                                 "re-save the file with a current torch")
    return storage


def _materialise(obj):
  if isinstance(obj, _Tensor):
    return obj.materialise()
  if isinstance(obj, dict):
    return type(obj)((k, _materialise(v)) for k, v in obj.items()) \
        if isinstance(obj, collections.OrderedDict) else {k: _materialise(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v) for v in obj)
  return obj


_CHUNK = 64 << 20  # bytes read between progress reports


def _load_zip(path: str, on_bytes=None) -> Any:
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
    if not pkl:
      raise UnreadableCheckpoint(f"{path}: a zip file without data.pkl (not a torch.save file)")
    prefix = pkl[0][:-len("data.pkl")]
    order = "little"
    if prefix + "byteorder" in names:
      order = zf.read(prefix + "byteorder").decode().strip()
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(io.BytesIO(zf.read(pkl[0])), storages).load()
    infos = {}
    for key in storages:
      record = prefix + "data/" + key
      if record not in names:
        raise UnreadableCheckpoint(f"{path}: storage record {record!r} is missing")
      infos[key] = zf.getinfo(record)
    total, done = sum(i.file_size for i in infos.values()), 0
    for key, s in storages.items():
      info = infos[key]
      if info.file_size % s.dtype.itemsize:
        raise UnreadableCheckpoint(f"{path}: storage record {info.filename!r} is truncated")
      # Read straight into a writable array: one copy of each storage, never two.
      s.array = np.empty(info.file_size // s.dtype.itemsize,
                         s.dtype.newbyteorder("<" if order == "little" else ">"))
      raw = s.array.view(np.uint8)
      with zf.open(info) as r:
        for lo in range(0, raw.size, _CHUNK):
          if r.readinto(raw[lo:lo + _CHUNK]) != min(_CHUNK, raw.size - lo):
            raise UnreadableCheckpoint(f"{path}: storage record {info.filename!r} is short")
          done += min(_CHUNK, raw.size - lo)
          if on_bytes:
            on_bytes(done, total)
  return obj


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    try:
      magic = pickle.load(f)
    except Exception as e:  # noqa: BLE001  (any unpickling failure means "not this format")
      raise UnreadableCheckpoint(f"{path}: neither a zip archive nor a legacy torch.save "
                                 "file") from e
    if magic != _LEGACY_MAGIC:
      raise UnreadableCheckpoint(f"{path}: neither a zip archive nor a legacy torch.save "
                                 "file")
    pickle.load(f)  # protocol version
    sys_info = pickle.load(f)
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(f, storages).load()
    keys = pickle.load(f)
    for key in keys:
      s = storages[str(key)]
      (numel,) = struct.unpack("<q" if little else ">q", f.read(8))
      s.array = np.empty(numel, s.dtype.newbyteorder("<" if little else ">"))
      if f.readinto(s.array.view(np.uint8)) != s.array.nbytes:
        raise UnreadableCheckpoint(f"{path}: truncated (storage {key!r})")
  return obj


def load(path: str, on_bytes=None) -> Any:
  """The object `torch.save` wrote, with tensors as numpy arrays (bfloat16 via ml_dtypes).

  Non-tensor objects other than dicts, lists, tuples and plain values come
  back as inert placeholders. Raises UnreadableCheckpoint for other files.
  `on_bytes(done, total)` is called as tensor bytes are read (zip files).
  """
  with open(path, "rb") as f:
    is_zip = f.read(4) == b"PK\x03\x04"
  try:
    if is_zip and not zipfile.is_zipfile(path):
      raise UnreadableCheckpoint(f"{path}: a damaged zip archive (cut short while written?)")
    return _materialise(_load_zip(path, on_bytes) if is_zip else _load_legacy(path))
  except UnreadableCheckpoint:
    raise
  except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, OSError, struct.error,
          ValueError, KeyError, IndexError, TypeError, AttributeError, OverflowError,
          MemoryError) as e:
    detail = " ".join(str(e).split())[:200]
    raise UnreadableCheckpoint(f"{path}: unreadable torch checkpoint "
                               f"({type(e).__name__}: {detail})") from e


# ------------------------------------------------------------------ writing
class _Out:
  """Pickle protocol 2 opcodes for dicts of strings, ints and arrays, as torch.save emits."""

  def __init__(self):
    self.b = bytearray(b"\x80\x02")

  def global_(self, module, name):
    self.b += b"c" + f"{module}\n{name}\n".encode()

  def str_(self, s):
    e = s.encode("utf-8")
    self.b += b"X" + struct.pack("<I", len(e)) + e

  def int_(self, n):
    if 0 <= n < 256:
      self.b += b"K" + bytes([n])
    elif 0 <= n < 65536:
      self.b += b"M" + struct.pack("<H", n)
    elif -2**31 <= n < 2**31:
      self.b += b"J" + struct.pack("<i", n)
    else:
      raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
      self.b += b"\x8a" + bytes([len(raw)]) + raw

  def tuple_(self, items):
    self.b += b"("
    for x in items:
      self.int_(x)
    self.b += b"t"


def save(obj: dict, path: str, archive: str = "archive", on_bytes=None) -> None:
  """Writes a (nested) dict of str -> array | int | str | dict as torch.save would.

  Arrays become tensors (float32, bfloat16, int64, ...); dicts of arrays are
  written as OrderedDicts, as `state_dict()` returns them. `on_bytes(done,
  total)` is called after each tensor's bytes are written.
  """
  out, records = _Out(), []

  def emit(x):
    if isinstance(x, dict):
      is_state_dict = x and all(isinstance(v, np.ndarray) for v in x.values())
      if is_state_dict:
        out.global_("collections", "OrderedDict")
        out.b += b")R"
      else:
        out.b += b"}"
      if x:
        out.b += b"("
        for k, v in x.items():
          out.str_(str(k))
          emit(v)
        out.b += b"u"
    elif isinstance(x, np.ndarray):
      a = x if x.flags.c_contiguous else np.array(x, order="C")  # keeps 0-d arrays 0-d
      name = STORAGE_NAMES.get(a.dtype)
      if name is None:
        raise ValueError(f"{path}: no torch storage type for dtype {a.dtype}")
      key = str(len(records))
      records.append(a.astype(a.dtype.newbyteorder("<"), copy=False))
      out.global_("torch._utils", "_rebuild_tensor_v2")
      out.b += b"(("
      out.str_("storage")
      out.global_("torch", name)
      out.str_(key)
      out.str_("cpu")
      out.int_(a.size)
      out.b += b"tQ"
      out.int_(0)
      out.tuple_(a.shape)
      out.tuple_([s // a.itemsize for s in a.strides] if a.ndim else ())
      out.b += b"\x89"  # requires_grad=False
      out.global_("collections", "OrderedDict")
      out.b += b")Rt"  # backward hooks: an empty OrderedDict, then close the args
      out.b += b"R"
    elif isinstance(x, bool):
      out.b += b"\x88" if x else b"\x89"
    elif isinstance(x, (int, np.integer)):
      out.int_(int(x))
    elif isinstance(x, str):
      out.str_(x)
    else:
      raise ValueError(f"{path}: cannot write a {type(x).__name__} into a torch checkpoint")

  emit(obj)
  out.b += b"."
  entries = [("data.pkl", bytes(out.b)), (".format_version", b"1"),
             (".storage_alignment", str(_ALIGN).encode()), ("byteorder", b"little")]
  entries += [(f"data/{i}", a) for i, a in enumerate(records)]
  entries += [("version", b"3\n")]
  total, done = sum(a.nbytes for a in records), 0
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
    for name, data in entries:
      info = zipfile.ZipInfo(f"{archive}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
      # Pad the local header's extra field so the record's bytes start on a 64-byte boundary.
      if isinstance(data, np.ndarray):
        data = data.reshape(-1).view(np.uint8)
      big = len(data) >= 2**31  # zipfile then adds a 20-byte zip64 field after ours
      start = zf.fp.tell() + 30 + len(info.filename) + 4 + (20 if big else 0)
      pad = -start % _ALIGN
      info.extra = struct.pack("<HH", 0x5346, pad) + b"\0" * pad  # a private id, as torch's
      with zf.open(info, "w", force_zip64=big) as w:
        w.write(data)
      if on_bytes and name.startswith("data/"):
        done += len(data)
        on_bytes(done, total)
