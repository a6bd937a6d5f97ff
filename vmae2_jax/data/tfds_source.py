"""Videos from a TensorFlow Datasets data set prepared in array_record format.

``tfds.data_source`` reads array_record data sets with random access and needs
no TensorFlow; ``tensorflow_datasets`` itself is optional and imported only
here. Frames are requested undecoded (SkipDecoding) when the data set stores
them encoded, so only the frames a clip samples are decoded, exactly as with
this project's shards. Records become ``TfdsRecord`` objects with the same
interface as ``shards.VideoRecord``, so every pipeline works on both.

config.data: source="tfds", tfds_name (e.g. "ucf101/ucf101_1"), tfds_data_dir
("" = TFDS's default), tfds_train_split / tfds_validation_split, tfds_video_key,
tfds_label_key (defaults in configs/common.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vmae2_jax.data import shards

INSTALL_HINT = ("config.data.source='tfds' needs tensorflow_datasets: pip install "
                "tensorflow-datasets (TensorFlow itself is not needed for data sets prepared "
                "with file_format='array_record')")


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
      self.height, self.width = self._decode(0).shape[:2]
    else:
      self.height, self.width = frames.shape[1:3]

  @property
  def num_frames(self) -> int:
    return len(self.frames)

  def _decode(self, i: int, min_height: int = 0, min_width: int = 0) -> np.ndarray:
    data = self.frames[i]
    data = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
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


class TfdsSource:
  """Grain random-access source over ``tfds.data_source(name, split)``."""

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
    try:
      import tensorflow_datasets as tfds
    except ImportError as e:
      raise ImportError(INSTALL_HINT) from e
    decoders = {self.video_key: tfds.decode.SkipDecoding()}
    try:
      self._source = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir,
                                      decoders=decoders)
    except TypeError:  # older releases without decoders=
      self._source = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir)
    return self._source

  @classmethod
  def from_config(cls, config, split: str) -> "TfdsSource":
    """The source config.data describes for ``split``: "train" or "validation"."""
    d = config.data
    return cls(d.tfds_name, split=d[f"tfds_{split}_split"], data_dir=d.tfds_data_dir or None,
               video_key=d.tfds_video_key, label_key=d.tfds_label_key)

  def __len__(self) -> int:
    return len(self._source if self._source is not None else self._open())

  @property
  def class_names(self) -> tuple[str, ...] | None:
    """The label feature's class names from the data set's info, when it has them."""
    source = self._source if self._source is not None else self._open()
    try:
      names = source.dataset_info.features[self.label_key].names
    except (AttributeError, KeyError, TypeError):
      return None
    return tuple(str(n) for n in names) if names else None

  def __getitem__(self, index: int) -> TfdsRecord | shards.BrokenRecord:
    source = self._source if self._source is not None else self._open()
    where = f"tfds {self.name}[{self.split}] record {int(index)}"
    try:
      ex = source[int(index)]
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
