"""Grain pipelines over frame shards: pre-training, fine-tuning, validation and test.

Every iterator yields per-host batches of numpy arrays, uint8 video channels
last (normalisation happens on device):

  pretrain    {"video": [V*num_sample, T, H, W, 3]}
  finetune    {"video": [V*num_sample, T, H, W, 3], "label": int32 [V*num_sample]}
  validation  {"video": [V, T, H, W, 3], "label", "video_id", "view": int32 [V],
               "name": str [V]}
  test        the same keys with test_num_segment*test_num_crop rows per video

with V = config.batch_size // process_count videos per host (validation and
test: config.eval.batch_size, 0 = config.batch_size). The repeated views of a
video are adjacent and come from one decoded clip. "name" (the record's video
name, "" on padding rows) is a host-side string array: drop it before putting
a batch on device. Randomness for element i is Grain's per-index generator
from (seed, i), so training batches depend only on the seed and position, and
``get_state``/``set_state`` (a small JSON-able dict) resume exactly.

Every setting is a config field (config.data.*, defaults in configs/common.py);
the sampling and test views follow the reference's dataset modes exactly
(sampling.py, transforms.py).
"""

from __future__ import annotations

import collections
import functools
import logging
from typing import Any

import cv2
import grain
import numpy as np

from vmae2_jax.data import info, mixture, randaugment, sampling, shards, transforms

log = logging.getLogger(__name__)

# Corrupt records skipped in this process (config.data.skip_corrupt), by location.
SKIPPED: collections.Counter = collections.Counter()


class LabelError(ValueError):
  """A record's label outside the class count: a configuration or data-build error,
  raised even with config.data.skip_corrupt (one_hot would silently train on zeros)."""


# --------------------------------------------------------------------------
# Element transforms (module-level classes: picklable for Grain workers)
# --------------------------------------------------------------------------


def _as_record(element) -> Any:
  """(bytes, where) from a ShardSource, or a record-like object from another source."""
  if isinstance(element, shards.BrokenRecord):
    element.raise_error()
  if isinstance(element, tuple):
    data, where = element
    return shards.parse_record(data, where)
  return element


class _ClipTransform:
  """Shared corrupt-record handling: raise naming the record, or count and skip.

  A record without frames is corrupt; a short one is padded by the samplers
  (repeating its last frame, as the reference). Labels are checked against
  ``num_classes`` (0 = unknown: only the lower bound) before any decoding.
  """

  skip_corrupt: bool = False
  num_classes: int = 0
  classes_from: str = ""

  def __call__(self, element, rng: np.random.Generator):
    try:
      rec = _as_record(element)
      if rec.num_frames < 1:
        raise shards.CorruptRecordError(f"{getattr(rec, 'where', 'record')}: no frames")
      return self.transform(rec, rng)
    except shards.CorruptRecordError as e:
      if not self.skip_corrupt:
        raise
      SKIPPED[str(e).split(":")[0]] += 1
      log.warning("skipping corrupt record (%d skipped so far): %s", sum(SKIPPED.values()), e)
      return None

  def transform(self, rec, rng: np.random.Generator):
    raise NotImplementedError

  def check_label(self, rec, unknown_ok: bool) -> None:
    """LabelError naming the record unless its label is in [0, num_classes) (or -1 when
    ``unknown_ok``: evaluation reports unlabelled videos without scoring them)."""
    label = int(rec.label)
    if unknown_ok and label == -1:
      return
    if label < 0 or (self.num_classes and label >= self.num_classes):
      classes = (f"[0, {self.num_classes}) ({self.classes_from})" if self.num_classes
                 else f"[0, ...) ({self.classes_from})")
      raise LabelError(f"{getattr(rec, 'where', 'record')}: label {label} is outside the "
                       f"classes {classes}")


class PretrainTransform(_ClipTransform):
  """Pre-training clip: one decode, num_sample multi-scale crops resized to size x size."""

  def __init__(self, *, frames: int, size: int, stride: int, num_sample: int,
               scales: tuple[float, ...], skip_corrupt: bool):
    self.frames, self.size, self.stride, self.num_sample = frames, size, stride, num_sample
    self.scales, self.skip_corrupt = tuple(scales), skip_corrupt

  @classmethod
  def from_config(cls, config, stride: int) -> "PretrainTransform":
    """The transform config.data describes, at one source's frame stride."""
    d = config.data
    return cls(frames=d.frames, size=d.image_size, stride=stride, num_sample=d.num_sample,
               scales=d.scales, skip_corrupt=d.skip_corrupt)

  def transform(self, rec, rng):
    idx = sampling.pretrain_indices(rec.num_frames, rng, self.frames, self.stride)
    h, w = rec.height, rec.width
    boxes = [transforms.multiscale_crop_params(h, w, self.size, self.size, rng, self.scales)
             for _ in range(self.num_sample)]
    clip = rec.decode_frames(idx, *transforms.min_decode_size(h, w, boxes, self.size, self.size))
    views = np.empty((self.num_sample, len(idx), self.size, self.size, 3), np.uint8)
    for k, b in enumerate(boxes):
      transforms.crop_resize(clip, b, self.size, self.size, src_hw=(h, w), out=views[k])
    return {"video": views}


class FinetuneTransform(_ClipTransform):
  """Supervised clip: RandAugment, random resized crop, flip, random erasing per view."""

  def __init__(self, *, frames: int, size: int, stride: int, num_sample: int, mode: str,
               flip: bool, randaug: str, reprob: float, scale: tuple[float, float],
               ratio: tuple[float, float], randaug_after_crop: bool, skip_corrupt: bool,
               num_classes: int = 0, classes_from: str = "num_classes",
               pixel_stats: tuple = (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)):
    self.frames, self.size, self.stride, self.num_sample = frames, size, stride, num_sample
    self.pixel_stats = pixel_stats  # the model's (mean, std): erasing noise in its space
    self.mode, self.flip, self.reprob = mode, flip, reprob
    self.num_classes, self.classes_from = int(num_classes), classes_from
    self.randaug = randaugment.RandAugment.from_string(randaug) if randaug else None
    self.scale, self.ratio = tuple(scale), tuple(ratio)
    self.randaug_after_crop, self.skip_corrupt = randaug_after_crop, skip_corrupt

  @classmethod
  def from_config(cls, config, stride: int) -> "FinetuneTransform":
    """The transform config.data describes, at one source's frame stride."""
    d = config.data
    num_classes, classes_from = info.label_classes(config)
    return cls(frames=d.frames, size=d.image_size, stride=stride, num_sample=d.num_sample,
               mode=d.sampling, flip=d.flip, randaug=d.randaug, reprob=d.reprob,
               scale=d.rrc_scale, ratio=d.rrc_ratio, randaug_after_crop=d.randaug_after_crop,
               skip_corrupt=d.skip_corrupt, num_classes=num_classes,
               classes_from=classes_from,
               pixel_stats=(tuple(config.model.pixel_mean), tuple(config.model.pixel_std)))

  def transform(self, rec, rng):
    self.check_label(rec, unknown_ok=False)
    idx = sampling.train_indices(self.mode, rec.num_frames, rng, self.frames, self.stride)
    h, w, s = rec.height, rec.width, self.size
    views = []
    for _ in range(self.num_sample):
      box = transforms.random_resized_crop_params(h, w, rng, self.scale, self.ratio)
      flip = bool(self.flip and rng.random() < 0.5)
      ops = self.randaug.sample(rng) if self.randaug else []
      erase = transforms.random_erasing_params(s, s, rng, self.reprob) if self.reprob else None
      views.append((box, flip, ops, erase))
    if self.randaug_after_crop or not any(v[2] for v in views):
      # Nothing runs on the full frame: decode only as large as the crops need.
      clip = rec.decode_frames(idx, *transforms.min_decode_size(h, w, [v[0] for v in views], s, s))
    else:
      clip = rec.decode_frames(idx)
    out = []
    for box, flip, ops, erase in views:
      if self.randaug_after_crop:
        view = randaugment.apply_ops(
            transforms.crop_resize(clip, box, s, s, src_hw=(h, w), flip=flip), ops)
      else:  # the reference's order: augment the full frames, then crop
        view = transforms.crop_resize(randaugment.apply_ops(clip, ops), box, s, s,
                                      src_hw=(h, w), flip=flip)
      out.append(transforms.apply_erasing(view, erase, rng, *self.pixel_stats))
    label = np.full(self.num_sample, rec.label, np.int32)
    return {"video": np.stack(out), "label": label}


def record_name(rec) -> str:
  """A video's name: the shard record header's "name", or a TFDS record's ``name``."""
  header = getattr(rec, "header", None)
  if header is not None:
    return str(header.get("name", ""))
  return str(getattr(rec, "name", ""))


class _ViewsTransform(_ClipTransform):
  """Deterministic views of one video, tagged with its id, view number and name.

  Elements are (global video id, source item), or (-1, None) for a padding
  slot (EvalSource); padding rows and skipped corrupt records come out as
  zero clips with video_id -1, label -1 and name "".
  """

  frames: int
  size: int

  @property
  def num_views(self) -> int:
    raise NotImplementedError

  def padding(self) -> dict:
    v = self.num_views
    return {"video": np.zeros((v, self.frames, self.size, self.size, 3), np.uint8),
            "label": np.full(v, -1, np.int32), "video_id": np.full(v, -1, np.int32),
            "view": np.arange(v, dtype=np.int32), "name": np.full(v, "")}

  def __call__(self, element, rng=None):
    video_id, item = element
    if item is None:
      return self.padding()
    out = super().__call__(item, rng)
    if out is None:  # skipped corrupt record: keep the slot, mark it as padding
      return self.padding()
    out["video_id"] = np.full(self.num_views, video_id, np.int32)
    return out

  def _tagged(self, rec, views: list[np.ndarray]) -> dict:
    v = self.num_views
    return {"video": np.stack(views), "label": np.full(v, rec.label, np.int32),
            "view": np.arange(v, dtype=np.int32), "name": np.full(v, record_name(rec))}

  def _decode_resized(self, rec, indices) -> np.ndarray:
    """Frames ``indices`` with the short side resized as the reference's Resize(size).

    Sizes come from the stored frame size, so a reduced-size DCT decode (only
    as large as the resize needs) ends up exactly as large as the reference's.
    """
    h, w = rec.height, rec.width
    decoded = rec.decode_frames(indices, *transforms.decode_size_for_resize(h, w, self.size))
    return transforms.resize_short_side(decoded, self.size, src_hw=(h, w))


class EvalTransform(_ViewsTransform):
  """All test views of one video (the reference's test mode), from one decode.

  View k is temporal view k // num_crop and spatial crop k % num_crop, the
  reference's (chunk_nb, split_nb) order.
  """

  def __init__(self, *, frames: int, size: int, stride: int, mode: str, num_segment: int,
               num_crop: int, skip_corrupt: bool, num_classes: int = 0,
               classes_from: str = "num_classes"):
    if num_segment < 1 or num_crop < 1:
      raise ValueError(f"config.data.test_num_segment={num_segment} and "
                       f"config.data.test_num_crop={num_crop} must both be >= 1")
    self.frames, self.size, self.stride, self.mode = frames, size, stride, mode
    self.num_segment, self.num_crop, self.skip_corrupt = num_segment, num_crop, skip_corrupt
    self.num_classes, self.classes_from = int(num_classes), classes_from

  @classmethod
  def from_config(cls, config) -> "EvalTransform":
    d = config.data
    num_classes, classes_from = info.label_classes(config)
    return cls(frames=d.frames, size=d.image_size, stride=d.sampling_rate, mode=d.sampling,
               num_segment=d.test_num_segment, num_crop=d.test_num_crop,
               skip_corrupt=d.skip_corrupt, num_classes=num_classes, classes_from=classes_from)

  @property
  def num_views(self) -> int:
    return self.num_segment * self.num_crop

  def transform(self, rec, rng):
    self.check_label(rec, unknown_ok=True)
    per_view = [sampling.eval_indices(self.mode, rec.num_frames, t, self.num_segment,
                                      self.frames, self.stride)
                for t in range(self.num_segment)]
    unique = np.unique(np.concatenate(per_view))
    decoded = self._decode_resized(rec, unique)  # each frame decoded and resized once
    pos = {int(i): j for j, i in enumerate(unique)}
    views = []
    for idx in per_view:
      clip = decoded[[pos[int(i)] for i in idx]]
      views.extend(transforms.spatial_crops(clip, self.size, self.num_crop))
    return self._tagged(rec, views)


class ValidationTransform(_ViewsTransform):
  """One view per video (the reference's validation mode): centred clip, centre crop."""

  def __init__(self, *, frames: int, size: int, stride: int, mode: str, skip_corrupt: bool,
               num_classes: int = 0, classes_from: str = "num_classes"):
    self.frames, self.size, self.stride, self.mode = frames, size, stride, mode
    self.skip_corrupt = skip_corrupt
    self.num_classes, self.classes_from = int(num_classes), classes_from

  @classmethod
  def from_config(cls, config) -> "ValidationTransform":
    d = config.data
    num_classes, classes_from = info.label_classes(config)
    return cls(frames=d.frames, size=d.image_size, stride=d.sampling_rate, mode=d.sampling,
               skip_corrupt=d.skip_corrupt, num_classes=num_classes, classes_from=classes_from)

  @property
  def num_views(self) -> int:
    return 1

  def transform(self, rec, rng):
    self.check_label(rec, unknown_ok=True)
    idx = sampling.val_indices(self.mode, rec.num_frames, self.frames, self.stride)
    clip = self._decode_resized(rec, idx)
    return self._tagged(rec, [transforms.center_crop(clip, self.size)])


class EvalSource:
  """This host's videos, padded to the same whole number of batches on every host.

  Item i is (global video id, source item) or (-1, None) for padding, so all
  hosts step through the same number of batches and every video is seen once.
  """

  def __init__(self, source, process_index: int, process_count: int, batch_videos: int):
    self.source, self.p, self.n = source, process_index, process_count
    self.length = _padded_videos(len(source), process_count, batch_videos)

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, i: int):
    g = int(i) * self.n + self.p
    if g >= len(self.source):
      return (-1, None)
    return (g, self.source[g])


def _padded_videos(num_videos: int, process_count: int, batch_videos: int) -> int:
  """Videos (real and padding) per host: this host's share rounded up to whole batches."""
  per_host = -(-num_videos // process_count)
  return -(-per_host // batch_videos) * batch_videos


def flatten_views(batch: list[dict]) -> dict:
  """Batch of per-video dicts with a leading views axis -> one flat batch axis."""
  return {k: np.concatenate([b[k] for b in batch]) for k in batch[0]}


# --------------------------------------------------------------------------
# Sources and iterators
# --------------------------------------------------------------------------


def _local_batch(total: int, process_count: int, field: str) -> int:
  if total <= 0 or total % process_count:
    raise ValueError(f"{field}={total} videos do not split over {process_count} processes")
  return total // process_count


def _train_batch(config, process_count: int) -> int:
  return _local_batch(config.batch_size, process_count, "config.batch_size")


def _eval_batch(config, process_count: int) -> int:
  """Videos per host in validation/test batches: config.eval.batch_size (0 = batch_size)."""
  if config.eval.batch_size:
    return _local_batch(config.eval.batch_size, process_count, "config.eval.batch_size")
  return _local_batch(config.batch_size, process_count,
                      "config.eval.batch_size=0, so config.batch_size")


def make_source(config, path: str | None = None, split: str = "train"):
  """A random-access source of videos for config.data.source ("shards" or "tfds").

  ``split`` ("train" or "validation") picks tfds_{split}_split for TFDS;
  shards read ``path``.
  """
  d = config.data
  if d.source == "tfds":
    from vmae2_jax.data import tfds_source
    return tfds_source.TfdsSource.from_config(config, split)
  if d.source != "shards":
    raise ValueError(f"config.data.source={d.source!r}: pipelines read 'shards' or 'tfds'")
  return shards.ShardSource(path)


def _val_source(config):
  """The evaluation set: config.data.val_path (TFDS: tfds_validation_split)."""
  d = config.data
  if d.source == "tfds":
    return make_source(config, None, split="validation")
  if not d.val_path:
    raise ValueError("config.data.val_path is empty: name the shard set to evaluate on")
  return make_source(config, d.val_path, split="validation")


def _finish(ds: grain.MapDataset, config, batch_videos: int, drop_remainder: bool = True):
  """MapDataset of per-video dicts -> iterator of flat per-host batches.

  Worker processes (config.data.num_workers) transform single videos and Grain
  interleaves them back in order, so batches are the same whatever the worker
  count (as long as no corrupt record is skipped); batching stays here.
  """
  d = config.data
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=int(d.read_threads),
                                            prefetch_buffer_size=max(2 * batch_videos, 4)))
  if d.num_workers > 0:
    from absl import flags
    if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags (outside absl.app)
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(d.num_workers),
                                                     per_worker_buffer_size=batch_videos),
                        worker_init_fn=functools.partial(_worker_init,
                                                         tune_malloc=bool(d.tune_malloc)))
  it = it.batch(batch_videos, drop_remainder=drop_remainder, batch_fn=flatten_views)
  return iter(it)


def _init_cv2(tune_malloc: bool) -> None:
  # One OpenCV thread per Grain thread/worker: parallelism comes from Grain.
  cv2.setNumThreads(1)
  if tune_malloc:
    from vmae2_jax.host_memory import raise_mmap_threshold
    raise_mmap_threshold()


def _worker_init(worker_index: int, worker_count: int, *, tune_malloc: bool) -> None:
  del worker_index, worker_count
  _init_cv2(tune_malloc)


def _train_iterator(config, transform_cls, *, process_index: int, process_count: int,
                    seed: int):
  """Endless batches from the weighted mixture of mixture.train_specs(config)."""
  _init_cv2(config.data.tune_malloc)
  specs = mixture.train_specs(config)
  ds = mixture.mixture(specs, lambda p: make_source(config, p),
                       lambda spec: transform_cls.from_config(config, spec.sampling_rate),
                       seed=seed, process_index=process_index, process_count=process_count,
                       shuffle=config.data.shuffle)
  return _finish(ds, config, _train_batch(config, process_count))


def make_pretrain_iterator(config, *, process_index: int, process_count: int, seed: int):
  """Endless pre-training batches from config.data.train_path or the mixture data.sources."""
  return _train_iterator(config, PretrainTransform, process_index=process_index,
                         process_count=process_count, seed=seed)


def make_finetune_iterator(config, *, process_index: int, process_count: int, seed: int):
  """Endless supervised batches (video + label) from config.data.train_path or sources."""
  return _train_iterator(config, FinetuneTransform, process_index=process_index,
                         process_count=process_count, seed=seed)


def _views_iterator(config, transform: _ViewsTransform, process_index: int,
                    process_count: int):
  _init_cv2(config.data.tune_malloc)
  local = _eval_batch(config, process_count)
  source = EvalSource(_val_source(config), process_index, process_count, local)
  ds = grain.MapDataset.source(source).map(transform)
  return _finish(ds, config, local, drop_remainder=False)


def make_eval_iterator(config, *, process_index: int, process_count: int):
  """One pass over config.data.val_path: every video's test_num_segment x test_num_crop views.

  The reference's test mode, each video decoded once for all its views. The
  last batches carry padding rows (video_id -1, label -1, name "") so every
  host yields the same number of equally shaped batches (num_eval_batches).
  """
  return _views_iterator(config, EvalTransform.from_config(config), process_index,
                         process_count)


def make_validation_iterator(config, *, process_index: int, process_count: int):
  """One pass over config.data.val_path, one view per video (the reference's validation mode).

  Same keys and padding as make_eval_iterator, with view 0 only; for
  evaluation during training.
  """
  return _views_iterator(config, ValidationTransform.from_config(config), process_index,
                         process_count)


def _num_view_batches(config, process_count: int) -> int:
  local = _eval_batch(config, process_count)
  return _padded_videos(len(_val_source(config)), process_count, local) // local


def num_eval_batches(config, *, process_count: int) -> int:
  """Batches each host's make_eval_iterator yields."""
  return _num_view_batches(config, process_count)


def num_validation_batches(config, *, process_count: int) -> int:
  """Batches each host's make_validation_iterator yields."""
  return _num_view_batches(config, process_count)
