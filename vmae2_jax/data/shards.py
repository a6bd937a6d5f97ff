"""Frame shards: the record format, the manifest, and a Grain random-access source.

One ArrayRecord record holds one video: a small JSON header (name, source,
label, fps, frame size, per-frame byte offsets and CRC32s) followed by the
frames as concatenated JPEG files. A shard set is a directory (or a flat
folder with a named manifest) holding ``*.array_record`` shards and a JSON
manifest that lists the shards in order with their record counts, sizes and
checksums.

Readers only decode the frames a clip samples and verify those frames' CRCs,
so a corrupt record is caught at the frame level and reported with its shard
file and record number.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import json
import os
import struct
import threading
import zlib
from typing import Sequence

import numpy as np

from vmae2_jax import paths

MAGIC = b"VMF1"
MANIFEST = "manifest.json"
FORMAT = "vmae2-frames-v1"
# Records are whole videos (several MB): readahead only copies bytes that are not needed.
READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:1"
MAX_OPEN_SHARDS = 128  # per source and process: keeps file descriptors bounded

try:  # libjpeg-turbo with reduced-size DCT; OpenCV is the fallback.
  import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - exercised only without simplejpeg
  _simplejpeg = None


class CorruptRecordError(ValueError):
  """A record that cannot be parsed or decoded; the message names shard and record."""


class ShardFileError(ValueError):
  """A shard file that is missing, truncated or not an ArrayRecord file; names the file."""


@dataclasses.dataclass(frozen=True)
class BrokenRecord:
  """What a source returns for a record it cannot read, so the pipeline's transform
  (not the source) decides between raising and skipping (config.data.skip_corrupt)."""
  message: str

  def raise_error(self):
    raise CorruptRecordError(self.message)


# --------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  """RGB uint8 [H, W, 3] -> JPEG bytes."""
  image = np.ascontiguousarray(image)
  if _simplejpeg is not None:
    return _simplejpeg.encode_jpeg(image, quality=quality, colorspace="RGB",
                                   colorsubsampling="420")
  import cv2
  ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise ValueError("JPEG encoding failed")
  return buf.tobytes()


def decode_jpeg(data: bytes, min_height: int = 0, min_width: int = 0,
                out: np.ndarray | None = None) -> np.ndarray:
  """JPEG bytes -> RGB uint8 [h, w, 3].

  With min_height/min_width the decoder may use reduced-size DCT (scales in
  eighths) and return the smallest scaled image that is at least that large.
  ``out`` (a contiguous uint8 array of the right shape) receives the pixels
  when given. Decoding uses libjpeg-turbo's fast IDCT and chroma upsampling
  (about 13% faster; differences are a level or two per pixel).
  """
  if _simplejpeg is not None:
    kw = {"colorspace": "RGB", "fastdct": True, "fastupsample": True}
    if min_height or min_width:
      kw.update(min_height=int(min_height), min_width=int(min_width))
    if out is not None:
      kw["buffer"] = out
    return _simplejpeg.decode_jpeg(data, **kw)
  import cv2
  flag = cv2.IMREAD_COLOR
  if min_height or min_width:
    h, w = jpeg_size(data)
    for factor, f in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                      (2, cv2.IMREAD_REDUCED_COLOR_2)):
      if h // factor >= min_height and w // factor >= min_width:
        flag = f
        break
  img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
  if img is None:
    raise ValueError("JPEG decoding failed")
  img = img[..., ::-1]
  if out is not None:
    out[...] = img
    return out
  return img


def jpeg_size(data: bytes) -> tuple[int, int]:
  """(height, width) from a JPEG's SOF marker, without decoding."""
  i = 2
  n = len(data)
  while i + 9 < n:
    if data[i] != 0xFF:
      i += 1
      continue
    marker = data[i + 1]
    if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
      h, w = struct.unpack(">HH", data[i + 5:i + 9])
      return h, w
    length = struct.unpack(">H", data[i + 2:i + 4])[0]
    i += 2 + length
  raise ValueError("no JPEG frame header")


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


def encode_record(frames: Sequence[bytes], *, label: int = -1, fps: float = 0.0,
                  source: str = "", name: str = "", height: int = 0, width: int = 0,
                  extra: dict | None = None) -> bytes:
  """One video's JPEG frames and metadata -> record bytes (``extra``: more header keys,
  e.g. an AVA keyframe's boxes under "ava")."""
  offsets = np.cumsum([0] + [len(f) for f in frames]).tolist()
  header = {"name": name, "source": source, "label": int(label), "fps": float(fps),
            "num_frames": len(frames), "height": int(height), "width": int(width),
            "offsets": offsets, "crc32": [zlib.crc32(f) for f in frames], **(extra or {})}
  head = json.dumps(header, separators=(",", ":")).encode()
  return b"".join([MAGIC, struct.pack("<I", len(head)), head, *frames])


class HeaderFields:
  """The video record interface's fields, read from a `header` dict (shards, video files)."""

  header: dict

  @property
  def num_frames(self) -> int:
    return self.header["num_frames"]

  @property
  def label(self) -> int:
    return self.header["label"]

  @property
  def height(self) -> int:
    return self.header["height"]

  @property
  def width(self) -> int:
    return self.header["width"]


@dataclasses.dataclass
class VideoRecord(HeaderFields):
  """A parsed record; frames are decoded on demand by index."""
  data: bytes
  header: dict
  payload_start: int
  where: str = ""

  def frame_bytes(self, i: int) -> bytes:
    off = self.header["offsets"]
    if not 0 <= i < self.num_frames:
      raise CorruptRecordError(f"{self.where}: frame {i} out of range [0, {self.num_frames})")
    b = self.data[self.payload_start + off[i]:self.payload_start + off[i + 1]]
    if len(b) != off[i + 1] - off[i] or zlib.crc32(b) != self.header["crc32"][i]:
      raise CorruptRecordError(f"{self.where}: frame {i} fails its CRC check")
    return b

  def decode_frames(self, indices: Sequence[int], min_height: int = 0,
                    min_width: int = 0) -> np.ndarray:
    """uint8 [len(indices), h, w, 3]; each distinct frame is decoded once."""
    indices = [int(i) for i in indices]
    out = None
    size = None  # the first decoded frame's stored (height, width)
    first: dict[int, int] = {}
    for k, i in enumerate(indices):
      if i in first:
        out[k] = out[first[i]]
        continue
      try:
        data = self.frame_bytes(i)
        if out is None:
          img = decode_jpeg(data, min_height, min_width)
          out = np.empty((len(indices),) + img.shape, np.uint8)
          out[k] = img
          size = jpeg_size(data)
        else:
          # Stored sizes first: a reduced-size decode into out[k] would fail obscurely.
          if jpeg_size(data) != size:
            raise CorruptRecordError(f"{self.where}: frame {i} is {jpeg_size(data)}, frame "
                                     f"{indices[0]} is {size} (height, width)")
          img = decode_jpeg(data, min_height, min_width, out=out[k])
          if img.shape != out.shape[1:]:
            raise CorruptRecordError(f"{self.where}: frame {i} is {img.shape[:2]}, "
                                     f"frame {indices[0]} is {out.shape[1:3]}")
      except CorruptRecordError:
        raise
      except Exception as e:  # noqa: BLE001 - any decoder failure is corruption
        raise CorruptRecordError(f"{self.where}: frame {i} does not decode ({e})") from e
      first[i] = k
    return out


def parse_record(data: bytes, where: str = "") -> VideoRecord:
  """Record bytes -> VideoRecord; CorruptRecordError naming ``where`` if malformed."""
  try:
    if data[:4] != MAGIC:
      raise ValueError(f"bad magic {bytes(data[:4])!r}")
    (n,) = struct.unpack("<I", data[4:8])
    header = json.loads(bytes(data[8:8 + n]))
    if header["num_frames"] < 1:
      raise ValueError(f"no frames (num_frames {header['num_frames']})")
    if len(header["offsets"]) != header["num_frames"] + 1:
      raise ValueError("inconsistent frame table")
    if 8 + n + header["offsets"][-1] != len(data):
      raise ValueError(f"payload is {len(data) - 8 - n} bytes, header says "
                       f"{header['offsets'][-1]}")
  except CorruptRecordError:
    raise
  except Exception as e:  # noqa: BLE001
    raise CorruptRecordError(f"{where}: unreadable record ({e})") from e
  return VideoRecord(data=data, header=header, payload_start=8 + n, where=where)


# --------------------------------------------------------------------------
# Manifest and source
# --------------------------------------------------------------------------


def demo_path(split: str = "train") -> str:
  """Manifest path of the embedded demo set (split 'train' or 'val')."""
  here = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "demo")
  return os.path.join(here, f"{split}.manifest.json")


def resolve_manifest(path: str) -> str:
  """A shard-set path -> its manifest file.

  Accepts a directory holding manifest.json, a manifest file, or
  'demo' / 'demo:train' / 'demo:val' for the embedded demo set.
  """
  if path == "demo" or path.startswith("demo:"):
    return demo_path(path.split(":", 1)[1] if ":" in path else "train")
  if paths.isdir(path):
    return paths.join(path, MANIFEST)
  return path


def load_manifest(path: str) -> dict:
  """The manifest of a shard set, with ``dir`` set to where its shards live."""
  mpath = resolve_manifest(path)
  if not paths.exists(mpath):
    raise FileNotFoundError(f"no shard manifest at {mpath} (build one with "
                            f"python -m data_prep.build_shards)")
  manifest = json.loads(paths.read_text(mpath))
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{mpath}: format {manifest.get('format')!r}, expected {FORMAT!r}")
  # ArrayRecord reads gs:// shards itself (its own GCS client); s3:// ones go through a cache.
  manifest["dir"] = paths.dirname(paths.resolve(mpath))
  return manifest


def check_shard_file(path: str, entry: dict, manifest_path: str) -> None:
  """ShardFileError unless ``path`` exists with the size its manifest entry records.

  A stat per shard: catches missing, truncated and rewritten files before any
  read (ArrayRecord opens those as empty files without complaint).
  """
  try:
    size = paths.getsize(path)
  except OSError as e:
    raise ShardFileError(f"{path}: shard listed in {manifest_path} cannot be read "
                         f"({paths.reason(e, path)})") from None
  want = entry.get("bytes")
  if want is not None and size != int(want):
    raise ShardFileError(f"{path}: {size} bytes, {manifest_path} records {want} (truncated or "
                         f"overwritten since the build; rebuild this shard set)")


class ShardSource:
  """Grain random-access source over a shard set: item i -> (record bytes, where).

  ``where`` names the shard file and the record number inside it, so decode
  errors further down the pipeline can say exactly which record is bad. An
  unreadable record comes back as a BrokenRecord carrying that message.
  Construction checks every shard file against the manifest (present, same
  size): ShardFileError naming the file otherwise.
  """

  def __init__(self, path: str):
    manifest = load_manifest(path)
    mpath = resolve_manifest(path)
    listed = [s for s in manifest["shards"] if s["num_records"] > 0]
    self.path = path
    self.shards = [s["name"] for s in listed]
    self.sizes = [s["num_records"] for s in listed]
    self.starts = np.cumsum([0] + self.sizes).tolist()
    self.paths = [paths.join(manifest["dir"], s) for s in self.shards]
    try:  # config_checks refuses such a data path earlier, naming its field
      paths.check_native(manifest["dir"], "", "ArrayRecord reads the shards")
    except paths.UnreachableURLError as e:
      raise ShardFileError(str(e)) from None
    for entry, shard_path in zip(listed, self.paths):
      check_shard_file(shard_path, entry, mpath)
    # ArrayRecord opens local paths and gs:// itself; s3:// shards are read from a local copy.
    self.files = list(self.paths)
    if paths.is_staged(manifest["dir"]):
      from vmae2_jax.data import shard_cache
      try:
        self.files = shard_cache.local_files(manifest["dir"], listed, mpath)
      except Exception as e:  # noqa: BLE001  every storage client has its own error types
        raise ShardFileError(str(e) if str(e).startswith(manifest["dir"]) else
                             f"{manifest['dir']}: cannot copy the shards into "
                             f"{shard_cache.folder_for(manifest['dir'])} "
                             f"({paths.reason(e, manifest['dir'])})") from None
    self.num_classes = manifest.get("classes", {}).get("num_classes", 0)
    names = manifest.get("classes", {}).get("names")
    # Index = class id; None when the build was given only class indices.
    self.class_names = tuple(str(n) for n in names) if names else None
    self._lock = threading.Lock()
    self._readers: collections.OrderedDict = collections.OrderedDict()

  def _reader(self, k: int):
    """The reader of shard k, opened on first use; at most MAX_OPEN_SHARDS stay open.

    ArrayRecord readers serve concurrent reads, so Grain's threads share them.
    """
    with self._lock:
      reader = self._readers.get(k)
      if reader is not None:
        self._readers.move_to_end(k)
        return reader
      from array_record.python import array_record_module
      reader = array_record_module.ArrayRecordReader(self.files[k], READER_OPTIONS)
      n = reader.num_records()
      if n != self.sizes[k]:  # a non-ArrayRecord or damaged file opens as 0 records
        raise ShardFileError(f"{self.paths[k]}: holds {n} records, the manifest lists "
                             f"{self.sizes[k]} (not an ArrayRecord file, or damaged)")
      self._readers[k] = reader
      if len(self._readers) > MAX_OPEN_SHARDS:
        self._readers.popitem(last=False)  # closed when the last user drops it
      return reader

  def __len__(self) -> int:
    return self.starts[-1]

  def locate(self, index: int) -> tuple[int, int]:
    """Global index -> (shard number, record number in that shard)."""
    if not 0 <= index < self.starts[-1]:
      raise IndexError(f"index {index} out of range for {self.starts[-1]} videos")
    k = bisect.bisect_right(self.starts, index) - 1
    return k, index - self.starts[k]

  def where(self, index: int) -> str:
    k, r = self.locate(index)
    return f"shard {self.shards[k]} record {r}"

  def __getitem__(self, index: int) -> tuple[bytes, str] | BrokenRecord:
    k, r = self.locate(int(index))
    where = f"shard {self.shards[k]} record {r}"
    try:
      data = self._reader(k).read([r])[0]
    except Exception as e:  # noqa: BLE001 - array_record raises on damaged chunks
      reason = " ".join(str(e).split())  # one line
      return BrokenRecord(f"{where}: cannot read ({type(e).__name__}: {reason})")
    return data, where

  def __getstate__(self):
    state = dict(self.__dict__)
    del state["_lock"], state["_readers"]  # readers reopen lazily in each worker process
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()
    self._readers = collections.OrderedDict()

  def __repr__(self) -> str:
    return f"ShardSource({self.path!r}, {len(self)} videos in {len(self.shards)} shards)"
