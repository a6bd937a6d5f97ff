"""Grain pipelines over frame shards for pre-training, fine-tuning and evaluation.

Every iterator yields per-host batches of numpy arrays, uint8 video channels
last (normalisation happens on device):

  pretrain  {"video": [V*num_sample, T, H, W, 3]}
  finetune  {"video": [V*num_sample, T, H, W, 3], "label": int32 [V*num_sample]}
  eval      {"video": [V*views, T, H, W, 3], "label", "video_id", "view": int32 [V*views]}

with V = config.batch_size // process_count videos per host (eval:
config.eval_batch_size when set). The repeated views of a video are adjacent
and come from one decoded clip. Randomness for element i is Grain's per-index
generator from (seed, i), so batches depend only on the seed and position,
and ``get_state``/``set_state`` (a small JSON-able dict) resume exactly.

Config (config.data, all optional except the paths; defaults in brackets):
  frames [16], image_size [224], sampling_rate [4], num_sample [4 pretrain, 2 finetune],
  source ["shards" | "tfds"], sources [list of {path, weight, sampling_rate}],
  train_path / val_path [first source], sampling ["dense" | "segment"],
  flip [True], randaug ["rand-m7-n4-mstd0.5-inc1", "" = off], reprob [0.25],
  rrc_scale [(0.08, 1.0)], rrc_ratio [(3/4, 4/3)], randaug_after_crop [False],
  scales [(1, .875, .75, .66)], test_num_segment [5], test_num_crop [3],
  num_workers [0], read_threads [2], skip_corrupt [False], shuffle [True], tune_malloc [True],
  tfds_name / tfds_train_split / tfds_validation_split / tfds_data_dir / tfds_video_key /
  tfds_label_key.
"""

from __future__ import annotations

import collections
import logging
import math
from typing import Any

import cv2
import grain
import numpy as np

from vmae2_jax.data import mixture, randaugment, sampling, shards, transforms

log = logging.getLogger(__name__)

# Corrupt records skipped in this process (config.data.skip_corrupt), by location.
SKIPPED: collections.Counter = collections.Counter()

DEFAULT_RANDAUG = "rand-m7-n4-mstd0.5-inc1"


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
  """Shared corrupt-record handling: raise naming the record, or count and skip."""

  skip_corrupt: bool = False

  def __call__(self, element, rng: np.random.Generator):
    try:
      return self.transform(_as_record(element), rng)
    except shards.CorruptRecordError as e:
      if not self.skip_corrupt:
        raise
      SKIPPED[str(e).split(":")[0]] += 1
      log.warning("skipping corrupt record (%d skipped so far): %s", sum(SKIPPED.values()), e)
      return None

  def transform(self, rec, rng: np.random.Generator):
    raise NotImplementedError


class PretrainTransform(_ClipTransform):
  """Pre-training clip: one decode, num_sample multi-scale crops resized to size x size."""

  def __init__(self, *, frames: int, size: int, stride: int, num_sample: int,
               scales=transforms.PRETRAIN_SCALES, skip_corrupt: bool = False):
    self.frames, self.size, self.stride, self.num_sample = frames, size, stride, num_sample
    self.scales, self.skip_corrupt = tuple(scales), skip_corrupt

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
               flip: bool = True, randaug: str = DEFAULT_RANDAUG, reprob: float = 0.25,
               scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), randaug_after_crop: bool = False,
               skip_corrupt: bool = False):
    self.frames, self.size, self.stride, self.num_sample = frames, size, stride, num_sample
    self.mode, self.flip, self.reprob = mode, flip, reprob
    self.randaug = randaugment.RandAugment.from_string(randaug) if randaug else None
    self.scale, self.ratio = tuple(scale), tuple(ratio)
    self.randaug_after_crop, self.skip_corrupt = randaug_after_crop, skip_corrupt

  def transform(self, rec, rng):
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
      out.append(transforms.apply_erasing(view, erase, rng))
    label = np.full(self.num_sample, rec.label, np.int32)
    return {"video": np.stack(out), "label": label}


class EvalTransform(_ClipTransform):
  """All temporal x spatial views of one video, tagged with its id and view number."""

  def __init__(self, *, frames: int, size: int, stride: int, mode: str, num_segment: int,
               num_crop: int, skip_corrupt: bool = False):
    self.frames, self.size, self.stride, self.mode = frames, size, stride, mode
    self.num_segment, self.num_crop, self.skip_corrupt = num_segment, num_crop, skip_corrupt

  @property
  def num_views(self) -> int:
    return self.num_segment * self.num_crop

  def padding(self) -> dict:
    v = self.num_views
    return {"video": np.zeros((v, self.frames, self.size, self.size, 3), np.uint8),
            "label": np.full(v, -1, np.int32), "video_id": np.full(v, -1, np.int32),
            "view": np.arange(v, dtype=np.int32)}

  def __call__(self, element, rng=None):
    video_id, item = element
    if item is None:
      return self.padding()
    out = super().__call__(item, rng)
    if out is None:  # skipped corrupt record: keep the slot, mark it as padding
      return self.padding()
    out["video_id"] = np.full(self.num_views, video_id, np.int32)
    return out

  def transform(self, rec, rng):
    per_view = [sampling.eval_indices(self.mode, rec.num_frames, t, self.num_segment,
                                      self.frames, self.stride)
                for t in range(self.num_segment)]
    unique = np.unique(np.concatenate(per_view))
    h, w = rec.height, rec.width
    k = self.size / min(h, w)
    decoded = rec.decode_frames(unique, int(math.ceil(h * min(k, 1))), int(math.ceil(w * min(k, 1))))
    decoded = transforms.resize_short_side(decoded, self.size)
    pos = {int(i): j for j, i in enumerate(unique)}
    views = []
    for idx in per_view:
      clip = decoded[[pos[int(i)] for i in idx]]
      views.extend(transforms.spatial_crops(clip, self.size, self.num_crop))
    v = self.num_views
    return {"video": np.stack(views), "label": np.full(v, rec.label, np.int32),
            "view": np.arange(v, dtype=np.int32)}


class EvalSource:
  """This host's videos, padded to the same whole number of batches on every host.

  Item i is (global video id, source item) or (-1, None) for padding, so all
  hosts step through the same number of batches and every video is seen once.
  """

  def __init__(self, source, process_index: int, process_count: int, batch_videos: int):
    self.source, self.p, self.n = source, process_index, process_count
    per_host = -(-len(source) // process_count)
    self.length = -(-per_host // batch_videos) * batch_videos

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, i: int):
    g = int(i) * self.n + self.p
    if g >= len(self.source):
      return (-1, None)
    return (g, self.source[g])


def flatten_views(batch: list[dict]) -> dict:
  """Batch of per-video dicts with a leading views axis -> one flat batch axis."""
  return {k: np.concatenate([b[k] for b in batch]) for k in batch[0]}


# --------------------------------------------------------------------------
# Sources and iterators
# --------------------------------------------------------------------------


def _data(config):
  return config.data


def _local_batch(config, process_count: int, key: str = "batch_size") -> int:
  total = config.get(key) or config.batch_size
  if total % process_count:
    raise ValueError(f"config.{key}={total} videos do not split over {process_count} processes")
  return total // process_count


def make_source(config, path: str | None = None, split: str = "train"):
  """A random-access source of videos for config.data.source."""
  d = _data(config)
  kind = d.get("source", "shards")
  if kind == "tfds":
    from vmae2_jax.data import tfds_source
    return tfds_source.TfdsSource(d.get("tfds_name"), split=d.get(f"tfds_{split}_split", split),
                                  data_dir=d.get("tfds_data_dir", None),
                                  video_key=d.get("tfds_video_key", "video"),
                                  label_key=d.get("tfds_label_key", "label"))
  if kind != "shards":
    raise ValueError(f"config.data.source={kind!r}: pipelines read 'shards' or 'tfds'")
  return shards.ShardSource(path)


def _finish(ds: grain.MapDataset, config, batch_videos: int, drop_remainder: bool = True):
  """MapDataset of per-video dicts -> iterator of flat per-host batches.

  Worker processes (config.data.num_workers) transform single videos and Grain
  interleaves them back in order, so batches are the same whatever the worker
  count (as long as no corrupt record is skipped); batching stays here.
  """
  d = _data(config)
  threads = int(d.get("read_threads", 2))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                            prefetch_buffer_size=max(2 * batch_videos, 4)))
  workers = int(d.get("num_workers", 0))
  if workers > 0:
    from absl import flags
    if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags (outside absl.app)
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                     per_worker_buffer_size=batch_videos),
                        worker_init_fn=_worker_init)
  it = it.batch(batch_videos, drop_remainder=drop_remainder, batch_fn=flatten_views)
  return iter(it)


def _init_cv2(config=None) -> None:
  # One OpenCV thread per Grain thread/worker: parallelism comes from Grain.
  cv2.setNumThreads(1)
  if config is None or config.data.get("tune_malloc", True):
    from vmae2_jax.host_memory import raise_mmap_threshold
    raise_mmap_threshold()


def _worker_init(worker_index: int, worker_count: int) -> None:
  del worker_index, worker_count
  _init_cv2()


def _train_paths(config, key: str) -> list:
  d = _data(config)
  if d.get("source", "shards") == "tfds" and not d.get(key) and not d.get("sources"):
    return [{"path": "tfds", "weight": 1.0, "sampling_rate": d.get("sampling_rate", 4)}]
  if d.get(key):
    return [{"path": d.get(key), "weight": 1.0, "sampling_rate": d.get("sampling_rate", 4)}]
  return list(d.get("sources") or [])


def make_pretrain_iterator(config, *, process_index: int, process_count: int, seed: int):
  """Endless pre-training batches from the weighted mixture config.data.sources."""
  _init_cv2(config)
  d = _data(config)
  specs = mixture.parse_sources(_train_paths(config, "train_path"), d.get("sampling_rate", 4))
  local = _local_batch(config, process_count)

  def transform(spec):
    return PretrainTransform(frames=d.get("frames", 16), size=d.get("image_size", 224),
                             stride=spec.sampling_rate, num_sample=d.get("num_sample", 4),
                             scales=d.get("scales", transforms.PRETRAIN_SCALES),
                             skip_corrupt=d.get("skip_corrupt", False))
  ds = mixture.mixture(specs, lambda p: make_source(config, p), transform, seed=seed,
                       process_index=process_index, process_count=process_count,
                       shuffle=d.get("shuffle", True))
  return _finish(ds, config, local)


def make_finetune_iterator(config, *, process_index: int, process_count: int, seed: int):
  """Endless supervised batches (video + label) from config.data.train_path or sources."""
  _init_cv2(config)
  d = _data(config)
  specs = mixture.parse_sources(_train_paths(config, "train_path"), d.get("sampling_rate", 4))
  local = _local_batch(config, process_count)

  def transform(spec):
    return FinetuneTransform(
        frames=d.get("frames", 16), size=d.get("image_size", 224), stride=spec.sampling_rate,
        num_sample=d.get("num_sample", 2), mode=d.get("sampling", "dense"),
        flip=d.get("flip", True), randaug=d.get("randaug", DEFAULT_RANDAUG),
        reprob=d.get("reprob", 0.25), scale=d.get("rrc_scale", (0.08, 1.0)),
        ratio=d.get("rrc_ratio", (3 / 4, 4 / 3)),
        randaug_after_crop=d.get("randaug_after_crop", False),
        skip_corrupt=d.get("skip_corrupt", False))
  ds = mixture.mixture(specs, lambda p: make_source(config, p), transform, seed=seed,
                       process_index=process_index, process_count=process_count,
                       shuffle=d.get("shuffle", True))
  return _finish(ds, config, local)


def make_eval_iterator(config, *, process_index: int, process_count: int, seed: int = 0):
  """One pass over config.data.val_path: every video's test_num_segment x test_num_crop views.

  The last batches carry padding rows (video_id -1, label -1) so every host
  yields the same number of equally shaped batches.
  """
  _init_cv2(config)
  d = _data(config)
  path = d.get("val_path") or (_train_paths(config, "train_path") or [{}])[0].get("path")
  local = _local_batch(config, process_count, "eval_batch_size")
  source = make_source(config, path, split="validation")
  mode = d.get("sampling", "dense")
  t = EvalTransform(frames=d.get("frames", 16), size=d.get("image_size", 224),
                    stride=d.get("sampling_rate", 4), mode=mode,
                    num_segment=d.get("test_num_segment", 2 if mode == "segment" else 5),
                    num_crop=d.get("test_num_crop", 3), skip_corrupt=d.get("skip_corrupt", False))
  ds = grain.MapDataset.source(EvalSource(source, process_index, process_count, local))
  ds = ds.map(t)
  del seed  # evaluation is deterministic
  return _finish(ds, config, local, drop_remainder=False)


def num_eval_batches(config, *, process_count: int) -> int:
  """Batches each host's eval iterator yields."""
  d = _data(config)
  path = d.get("val_path") or (_train_paths(config, "train_path") or [{}])[0].get("path")
  local = _local_batch(config, process_count, "eval_batch_size")
  n = len(make_source(config, path, split="validation"))
  return -(-(-(-n // process_count)) // local)
