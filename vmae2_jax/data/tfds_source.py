"""Videos from a TensorFlow Datasets data set prepared in array_record format.

``builder.as_data_source`` (what ``tfds.data_source`` calls) reads array_record
data sets with random access and without TensorFlow; ``tensorflow_datasets`` is
optional and imported only here. config.data: source="tfds", tfds_name (e.g.
"ucf101/ucf101_1"), tfds_data_dir ("" = TFDS's default, ~/tensorflow_datasets),
tfds_train_split / tfds_validation_split (UCF101: "train" / "test"),
tfds_video_key, tfds_label_key (defaults in configs/common.py).

What TFDS stores and how it is read here:
- A video feature (``tfds.features.Video``, as ucf101 declares it, or
  ``Sequence(Image)``) is stored as one encoded image per frame (JPEG or PNG)
  under its key. It is read undecoded (``KeepEncoded``), so only the frames a
  clip samples are decoded, by libjpeg-turbo / OpenCV, never by TensorFlow.
  A uint8 tensor feature [T, H, W, 3] is taken as decoded frames.
- The label is a ``ClassLabel`` (an integer; its names become the class
  names). A data set without the label feature reads with label -1 (fine for
  pre-training; supervised stages reject it).
- TFDS 4.9's ``Video`` feature calls ``tf.dtypes.as_dtype`` in its
  constructor, which restoring the data set's features runs, so reading a
  Video data set would import TensorFlow. When TensorFlow cannot be imported,
  ``_video_feature_without_tensorflow`` lets that constructor use NumPy dtypes
  (nothing else in reading needs TensorFlow).
- Every process opens the whole split; the pipelines read this host's slice
  (every process_count-th example), as with shards.

Records become ``TfdsRecord`` objects with the interface of
``shards.VideoRecord``, so every pipeline works on both.
"""

from __future__ import annotations

import functools
import struct
from typing import Any, Sequence

import numpy as np

from vmae2_jax.data import shards

INSTALL_HINT = ("config.data.source='tfds' needs tensorflow_datasets: pip install "
                "tensorflow-datasets importlib_resources (TensorFlow itself is not needed to "
                "read data sets prepared with file_format='array_record')")


def image_size(data: bytes) -> tuple[int, int]:
  """(height, width) of an encoded JPEG or PNG frame from its header, without decoding."""
  if data[:2] == b"\xff\xd8":
    return shards.jpeg_size(data)
  if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
    w, h = struct.unpack(">II", data[16:24])
    return h, w
  raise ValueError("neither JPEG nor PNG")


class TfdsRecord:
  """One TFDS example as a video record: encoded or decoded frames plus a label."""

  def __init__(self, frames: Any, label: int, where: str, name: str = ""):
    self.frames, self.label, self.where = frames, int(label), where
    self.name = name or where  # what evaluation reports per video
    self._encoded = not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8
                         and frames.ndim == 4)
    if len(frames) == 0:
      raise shards.CorruptRecordError(f"{where}: no frames")
    if self._encoded:
      try:
        self.height, self.width = image_size(self._bytes(0))
      except ValueError:  # another still-image codec: decode to learn the size
        self.height, self.width = self._decode(0).shape[:2]
    else:
      self.height, self.width = frames.shape[1:3]

  @property
  def num_frames(self) -> int:
    return len(self.frames)

  def _bytes(self, i: int) -> bytes:
    data = self.frames[i]
    return data.tobytes() if isinstance(data, np.ndarray) else bytes(data)

  def _decode(self, i: int, min_height: int = 0, min_width: int = 0) -> np.ndarray:
    data = self._bytes(i)
    try:
      if data[:2] == b"\xff\xd8":
        return shards.decode_jpeg(data, min_height, min_width)
      import cv2  # PNG and other still-image codecs
      img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
      if img is None:
        raise ValueError("undecodable image")
      return img[..., ::-1]
    except Exception as e:  # noqa: BLE001
      raise shards.CorruptRecordError(f"{self.where}: frame {i} does not decode ({e})") from e

  def decode_frames(self, indices: Sequence[int], min_height: int = 0,
                    min_width: int = 0) -> np.ndarray:
    if not self._encoded:
      return np.ascontiguousarray(self.frames[np.asarray(indices)])
    cache: dict[int, np.ndarray] = {}
    out = []
    for i in indices:
      i = int(i)
      if i not in cache:
        cache[i] = self._decode(i, min_height, min_width)
      out.append(cache[i])
    if len({a.shape for a in out}) != 1:
      raise shards.CorruptRecordError(f"{self.where}: frames differ in size")
    return np.stack(out)


# --------------------------------------------------------------------------
# TFDS glue (tensorflow_datasets imported lazily)
# --------------------------------------------------------------------------


def _import_tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError(INSTALL_HINT) from e
  return tfds


def _keep_encoded_decoder(tfds):
  """A tfds Decoder that returns an image feature's stored bytes (NumPy and tf paths)."""

  class KeepEncoded(tfds.decode.Decoder):
    """Frames stay encoded: the pipelines decode only the frames a clip samples."""

    def decode_example(self, serialized_example):
      return serialized_example

    def decode_example_np(self, serialized_example):
      return serialized_example

    def decode_batch_example_np(self, serialized_example):
      return serialized_example

  return KeepEncoded()


@functools.lru_cache(maxsize=None)
def _tensorflow_imports() -> bool:
  try:
    import tensorflow  # noqa: F401  # pylint: disable=unused-import
  except ImportError:
    return False
  return True


class _Dtypes:
  """``tf.dtypes`` for tfds's Video constructor: TensorFlow's when it imports, else NumPy."""

  def __init__(self, lazy_tf):
    self._lazy_tf = lazy_tf

  def as_dtype(self, dtype):
    if _tensorflow_imports():
      return self._lazy_tf.dtypes.as_dtype(dtype)
    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))


class _TfOrNumpy:
  """``tf`` in tensorflow_datasets.core.features.video_feature: only ``tf.dtypes`` may
  fall back to NumPy (all the constructor uses); anything else (writing, ffmpeg)
  still goes to TensorFlow."""

  def __init__(self, lazy_tf):
    self._lazy_tf = lazy_tf
    self.dtypes = _Dtypes(lazy_tf)

  def __getattr__(self, name):
    return getattr(self._lazy_tf, name)


def _video_feature_without_tensorflow() -> None:
  """Lets tfds restore a ``tfds.features.Video`` feature without TensorFlow (see top).

  TensorFlow is still used, and imported only then, when it is installed."""
  try:
    from tensorflow_datasets.core.features import video_feature
  except ImportError:
    return
  if not isinstance(getattr(video_feature, "tf", None), _TfOrNumpy):
    video_feature.tf = _TfOrNumpy(video_feature.tf)


def _is_encoded_images(tfds, feature) -> bool:
  """A Video or a Sequence of Image: frames stored as encoded images."""
  f = tfds.features
  if isinstance(feature, f.Video):
    return True
  return isinstance(feature, f.Sequence) and isinstance(feature.feature, f.Image)


class TfdsSource:
  """Grain random-access source over one split of a TFDS data set (array_record)."""

  def __init__(self, name: str | None, split: str = "train", data_dir: str | None = None,
               video_key: str = "video", label_key: str = "label", source: Any = None):
    self.name, self.split, self.data_dir = name, split, data_dir
    self.video_key, self.label_key = video_key, label_key
    self._source = source
    if source is None:
      if not name:
        raise ValueError("config.data.tfds_name is required with config.data.source='tfds'")
      self._open()

  def _open(self):
    tfds = _import_tfds()
    _video_feature_without_tensorflow()
    where = f"config.data.tfds_name={self.name!r}"
    if self.data_dir:
      where += f" in {self.data_dir}"
    builder = tfds.builder(self.name, data_dir=self.data_dir)
    info = builder.info
    features = info.features
    if self.video_key not in features:
      raise ValueError(f"{where}: no feature {self.video_key!r} (features: "
                       f"{', '.join(sorted(features))}); set config.data.tfds_video_key")
    splits = sorted(info.splits)
    if not splits:
      raise ValueError(f"{where}: not prepared under {builder.data_dir} (prepare it with "
                       f"file_format='array_record'; see docs/data.md, TensorFlow Datasets)")
    missing = [p.split("[")[0].strip() for p in self.split.split("+")
               if p.split("[")[0].strip() not in info.splits]
    if missing:
      raise ValueError(f"{where}: no split {missing[0]!r} (splits: {', '.join(splits)}); set "
                       f"config.data.tfds_train_split / tfds_validation_split")
    fmt = getattr(info.file_format, "value", info.file_format)
    if fmt and str(fmt) != "array_record":
      raise ValueError(
          f"{where}: prepared as {fmt}, random access needs array_record: convert it once "
          f"with `tfds convert_format --dataset_version_dir={builder.data_dir} "
          f"--out_file_format=array_record` (reading {fmt} needs TensorFlow, the tfds "
          f"command line apache-beam), or prepare it again with file_format='array_record'")
    decoders = ({self.video_key: _keep_encoded_decoder(tfds)}
                if _is_encoded_images(tfds, features[self.video_key]) else None)
    self._source = builder.as_data_source(split=self.split, decoders=decoders)
    return self._source

  @classmethod
  def from_config(cls, config, split: str) -> "TfdsSource":
    """The source config.data describes for ``split``: "train" or "validation"."""
    d = config.data
    return cls(d.tfds_name, split=d[f"tfds_{split}_split"], data_dir=d.tfds_data_dir or None,
               video_key=d.tfds_video_key, label_key=d.tfds_label_key)

  def _src(self):
    return self._source if self._source is not None else self._open()

  def __len__(self) -> int:
    return len(self._src())

  @property
  def class_names(self) -> tuple[str, ...] | None:
    """The label feature's class names from the data set's info, when it has them."""
    try:
      names = self._src().dataset_info.features[self.label_key].names
    except (AttributeError, KeyError, TypeError):
      return None
    return tuple(str(n) for n in names) if names else None

  def __getitem__(self, index: int) -> TfdsRecord | shards.BrokenRecord:
    where = f"tfds {self.name}[{self.split}] record {int(index)}"
    try:
      ex = self._src()[int(index)]
      frames = ex[self.video_key]
      label = ex.get(self.label_key, -1) if hasattr(ex, "get") else -1
      return TfdsRecord(frames, int(np.asarray(label)), where)
    except shards.CorruptRecordError as e:
      return shards.BrokenRecord(str(e))
    except Exception as e:  # noqa: BLE001
      return shards.BrokenRecord(f"{where}: cannot read ({type(e).__name__}: {e})")

  def __getstate__(self):
    state = dict(self.__dict__)
    if self.name:  # reopen in the worker; an injected source travels as is
      state["_source"] = None
    return state

  def __repr__(self) -> str:
    return f"TfdsSource({self.name!r}, split={self.split!r})"
