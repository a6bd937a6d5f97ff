"""Grain pipelines of AVA detection clips: static-shape batches of boxes and labels.

Reads keyframe shards written by ``python -m data_prep.ava`` (one record per
keyframe: its 16 frames and an "ava" header with boxes, actions, proposals).
Every batch is a dict of numpy arrays with static shapes, uint8 video
(normalised on device), boxes (x1, y1, x2, y2) in PIXELS of the clip's frame:

  train  video     uint8   [B, T, S, S, 3]   S = config.detect.crop_size
         boxes     float32 [B, N, 4]         GT boxes after resize, crop, flip, jitter
         box_mask  bool    [B, N]            N = config.detect.max_boxes
         labels    float32 [B, N, C]         multi-hot; AVA action id k -> column k - 1
  test   the same keys (N = config.detect.eval_max_boxes, H x W = the batch's bucket) plus
         scores    float32 [B, N]   detector scores of the boxes (1 for ground truth)
         keyframe  int32   [B]      index into iterator.keyframes ((video_id, timestamp)); -1 pads
         frame_size int32  [B, 2]   the movie's original (h, w)
         valid_hw  int32   [B, 2]   (h, w) of the frame inside the padded H x W (top-left)

C = config.model.num_classes (0: the shards' label map, the largest id). Train
clips follow the reference (VideoMAE's AVA recipe): short side to
config.detect.short_side, a random square crop, a flip with p=0.5, boxes cut
to the crop (boxes that vanish are dropped; the reference keeps them empty),
at most max_boxes (a random subset beyond that) and the reference's box
jitter (boxes.JITTER). Colour jitter is not done here: the task calls
color.color_jitter inside the step. Keyframes without boxes are not trained on.

Test clips keep the whole frame at short side config.detect.short_side and
are padded to the smallest of config.detect.buckets (H, W) that holds them, so
a handful of programs cover every aspect ratio; each batch holds one bucket
(the 16:9 frames of AVA -> 256 x 455 -> bucket 256 x 464; 4:3 -> 341 -> 352;
1.85:1 -> 473 -> 480; 2.35-2.39:1 -> 601-611 -> 624; square and portrait
frames their own). Boxes are the proposals scoring at least
config.detect.person_score (the reference's 0.8; keyframes with none are
skipped, as the reference) or the ground truth (config.detect.test_boxes).
Test labels are the actions of the ground-truth boxes a proposal overlaps
with IoU >= 0.5 (for a validation loss; the metric uses scores only). Boxes
are not widened here: the model widens them for pooling (boxes.widen) and
reports the boxes it was given; boxes.to_normalised(boxes, valid_hw) gives
AVA's normalised coordinates back.

The train iterator is endless and resumable (get_state/set_state), element i
a pure function of (seed, i); the test iterator is one pass, every host the
same number of batches with the same bucket sequence.
"""

from __future__ import annotations

import logging
from typing import Any

import grain
import numpy as np

from vmae2_jax.data import info, mixture, pipelines, shards, transforms
from vmae2_jax.data.ava import boxes as box_ops
from vmae2_jax.data.ava import formats

log = logging.getLogger(__name__)


class DetectDataError(ValueError):
  """Shards or config that cannot make detection batches; the message names which."""


# --------------------------------------------------------------------------
# Shard sets
# --------------------------------------------------------------------------


class KeyframeSet:
  """A keyframe shard set: its ShardSource and the manifest's per-keyframe table."""

  def __init__(self, path: str, field: str):
    if not path:
      raise DetectDataError(f"{field} is empty: name a shard set built by data_prep.ava")
    self.path = path
    self.source = shards.ShardSource(path)
    manifest = shards.load_manifest(path)
    table = manifest.get("ava")
    if manifest.get("build", {}).get("kind") != "ava_keyframes" or not table:
      raise DetectDataError(f"{path}: not AVA keyframe shards ({field}; build them with "
                            "python -m data_prep.ava)")
    self.build = manifest["build"]
    self.keys: list[str] = list(table["keyframes"])
    self.sizes = np.asarray(table["sizes"], np.int32).reshape(-1, 2)
    self.num_boxes = np.asarray(table["num_boxes"], np.int32)
    self.max_score = np.asarray(table["max_score"], np.float32)
    self.label_map = {int(k): v for k, v in table["label_map"].items()}
    if len(self.keys) != len(self.source):
      raise DetectDataError(f"{path}: manifest lists {len(self.keys)} keyframes for "
                            f"{len(self.source)} records (rebuild the shard set)")

  def check_clip(self, config) -> None:
    d = config.data
    if (self.build["frames"], self.build["stride"]) != (d.frames, d.sampling_rate):
      raise DetectDataError(
          f"{self.path}: holds clips of {self.build['frames']} frames at stride "
          f"{self.build['stride']}; config.data.frames={d.frames} and "
          f"config.data.sampling_rate={d.sampling_rate} (rebuild or change the config)")

  def num_classes(self, config) -> int:
    return int(config.model.num_classes) or max(self.label_map)


def _ava_header(rec) -> dict:
  header = rec.header.get("ava")
  if header is None:
    raise shards.CorruptRecordError(f"{rec.where}: no \"ava\" header (not a data_prep.ava "
                                    "record)")
  return header


def multi_hot(actions, num_classes: int, where: str) -> np.ndarray:
  """[[action ids] per box] -> float32 [n, num_classes]; id k sets column k - 1."""
  out = np.zeros((len(actions), num_classes), np.float32)
  for i, ids in enumerate(actions):
    for a in ids:
      if not 1 <= a <= num_classes:
        raise pipelines.LabelError(f"{where}: action id {a} is outside 1..{num_classes} "
                                   "(config.model.num_classes)")
      out[i, a - 1] = 1.0
  return out


def _decode(rec, short_side: int) -> np.ndarray:
  """All stored frames with the short side at ``short_side`` (as the reference's Resize)."""
  h, w = rec.height, rec.width
  clip = rec.decode_frames(range(rec.num_frames),
                           *transforms.decode_size_for_resize(h, w, short_side))
  return transforms.resize_short_side(clip, short_side, src_hw=(h, w))


def _pad_boxes(n: int, *arrays_and_fill) -> list[np.ndarray]:
  """Each (array [k, ...], fill) padded (or cut) to n rows."""
  out = []
  for arr, fill in arrays_and_fill:
    pad = np.full((n,) + arr.shape[1:], fill, arr.dtype)
    pad[:min(n, len(arr))] = arr[:n]
    out.append(pad)
  return out


# --------------------------------------------------------------------------
# Element transforms (picklable for Grain workers)
# --------------------------------------------------------------------------


class DetectTrainTransform:
  """One keyframe -> a training clip with its jittered GT boxes (module docstring)."""

  def __init__(self, *, short_side: int, crop_size: int, flip: bool, max_boxes: int,
               num_classes: int, jitter, skip_corrupt: bool = False):
    self.short_side, self.crop_size, self.flip = short_side, crop_size, flip
    self.max_boxes, self.num_classes = max_boxes, num_classes
    self.jitter = tuple(jitter) if jitter else ()
    self.skip_corrupt = skip_corrupt

  @classmethod
  def from_config(cls, config, num_classes: int) -> "DetectTrainTransform":
    c = config.detect
    if c.crop_size > c.short_side:
      raise DetectDataError(f"config.detect.crop_size={c.crop_size} is larger than "
                            f"config.detect.short_side={c.short_side}")
    return cls(short_side=c.short_side, crop_size=c.crop_size, flip=c.flip,
               max_boxes=c.max_boxes, num_classes=num_classes, jitter=c.box_jitter,
               skip_corrupt=config.data.skip_corrupt)

  def __call__(self, element, rng: np.random.Generator):
    try:
      rec = pipelines._as_record(element)
      return self.transform(rec, rng)
    except shards.CorruptRecordError as e:
      if not self.skip_corrupt:
        raise
      log.warning("skipping corrupt record: %s", e)
      return None

  def transform(self, rec, rng: np.random.Generator) -> dict:
    ava = _ava_header(rec)
    labels = multi_hot(ava["actions"], self.num_classes, rec.where)
    clip = _decode(rec, self.short_side)
    _, h, w, _ = clip.shape
    b = box_ops.clip_to_frame(box_ops.to_pixels(ava["boxes"], h, w), h, w)
    # The reference's RandomClip: a uniform top-left corner, int-truncated.
    s = self.crop_size
    x0, y0 = int(rng.random() * (w - s)), int(rng.random() * (h - s))
    clip = clip[:, y0:y0 + s, x0:x0 + s]
    b = box_ops.crop(b, x0, y0, s, s)
    if self.flip and rng.random() < 0.5:
      clip = clip[:, :, ::-1]
      b = box_ops.flip(b, s)
    keep = box_ops.nonempty(b)
    b, labels = b[keep], labels[keep]
    if len(b) > self.max_boxes:  # the reference samples a random subset beyond its cap
      pick = np.sort(rng.permutation(len(b))[:self.max_boxes])
      b, labels = b[pick], labels[pick]
    if self.jitter and len(b):
      b = box_ops.jitter(b, s, s, rng, self.jitter)
    n = self.max_boxes
    b, labels, mask = _pad_boxes(n, (b.astype(np.float32), 0.0), (labels, 0.0),
                                 (np.ones(len(b), bool), False))
    return {"video": np.ascontiguousarray(clip)[None], "boxes": b[None], "box_mask": mask[None],
            "labels": labels[None]}


class DetectEvalTransform:
  """(keyframe id, bucket, record or None) -> a test clip padded to the bucket."""

  def __init__(self, *, short_side: int, max_boxes: int, num_classes: int, frames: int,
               test_boxes: str, person_score: float,
               proposals: dict[str, np.ndarray] | None = None):
    if test_boxes not in ("proposals", "groundtruth"):
      raise DetectDataError(f"config.detect.test_boxes={test_boxes!r}: 'proposals' or "
                            "'groundtruth'")
    self.short_side, self.max_boxes, self.num_classes = short_side, max_boxes, num_classes
    self.frames, self.test_boxes, self.person_score = frames, test_boxes, person_score
    self.proposals = proposals

  def padding(self, bucket) -> dict:
    hb, wb = bucket
    n, c = self.max_boxes, self.num_classes
    return {"video": np.zeros((1, self.frames, hb, wb, 3), np.uint8),
            "boxes": np.zeros((1, n, 4), np.float32), "box_mask": np.zeros((1, n), bool),
            "labels": np.zeros((1, n, c), np.float32), "scores": np.zeros((1, n), np.float32),
            "keyframe": np.full((1,), -1, np.int32), "frame_size": np.zeros((1, 2), np.int32),
            "valid_hw": np.zeros((1, 2), np.int32)}

  def test_boxes_of(self, rec, ava: dict) -> tuple[np.ndarray, np.ndarray]:
    """Normalised boxes [n, 4] and their scores [n] this keyframe is scored on."""
    if self.test_boxes == "groundtruth":
      gt = np.asarray(ava["boxes"], np.float32).reshape(-1, 4)
      return gt, np.ones(len(gt), np.float32)
    if self.proposals is not None:
      props = self.proposals.get(rec.header["name"], np.zeros((0, 5), np.float32))
    else:
      props = np.asarray(ava["proposals"], np.float32).reshape(-1, 5)
    props = props[props[:, 4] >= self.person_score]
    order = np.argsort(-props[:, 4], kind="stable")
    return props[order, :4], props[order, 4]

  def __call__(self, element, rng=None) -> dict:
    keyframe, bucket, item = element
    if item is None:
      return self.padding(bucket)
    rec = pipelines._as_record(item)
    ava = _ava_header(rec)
    clip = _decode(rec, self.short_side)
    t, h, w, _ = clip.shape
    hb, wb = bucket
    if h > hb or w > wb:
      raise DetectDataError(f"{rec.where}: frame {h}x{w} does not fit bucket {hb}x{wb}")
    out = self.padding(bucket)
    out["video"][0, :t, :h, :w] = clip
    norm, scores = self.test_boxes_of(rec, ava)
    b = box_ops.clip_to_frame(box_ops.to_pixels(norm, h, w), h, w)
    keep = box_ops.nonempty(b)
    b, scores = b[keep], scores[keep]
    if len(b) > self.max_boxes:
      log.warning("%s: %d test boxes, keeping the %d best scored (config.detect.eval_max_boxes)",
                  rec.where, len(b), self.max_boxes)
    gt = box_ops.to_pixels(ava["boxes"], h, w)
    gt_labels = multi_hot(ava["actions"], self.num_classes, rec.where)
    labels = np.zeros((len(b), self.num_classes), np.float32)
    if len(b) and len(gt):
      overlap = box_ops.iou_matrix(b, gt) >= 0.5
      labels = np.minimum(overlap.astype(np.float32) @ gt_labels, 1.0)
    n = self.max_boxes
    out["boxes"][0], out["scores"][0], out["labels"][0], out["box_mask"][0] = _pad_boxes(
        n, (b.astype(np.float32), 0.0), (scores.astype(np.float32), 0.0), (labels, 0.0),
        (np.ones(len(b), bool), False))
    out["keyframe"][0] = keyframe
    out["frame_size"][0] = ava["frame_size"]
    out["valid_hw"][0] = (h, w)
    return out


# --------------------------------------------------------------------------
# Buckets and the test order
# --------------------------------------------------------------------------


def pick_bucket(hw, buckets, where: str) -> tuple[int, int]:
  """The smallest-area bucket (H, W) holding a frame of size hw (ties: listed first)."""
  fits = [tuple(int(v) for v in b) for b in buckets if b[0] >= hw[0] and b[1] >= hw[1]]
  if not fits:
    raise DetectDataError(f"{where}: a {hw[0]}x{hw[1]} test frame fits none of "
                          f"config.detect.buckets {[tuple(b) for b in buckets]}; add one")
  return min(fits, key=lambda b: b[0] * b[1])


def eval_plan(kset: KeyframeSet, config, process_index: int, process_count: int,
              batch: int) -> list[tuple[int, tuple[int, int]]]:
  """This host's (keyframe id or -1, bucket) in batch order: bucket by bucket, each bucket's
  keyframes dealt round-robin to the hosts and padded to whole batches on every host."""
  c = config.detect
  if c.test_boxes == "groundtruth":
    chosen = np.flatnonzero(kset.num_boxes > 0)
  elif c.proposals:
    chosen = None  # decided from the replacement proposals
  else:
    chosen = np.flatnonzero(kset.max_score >= c.person_score)
  if chosen is None:
    props = _replacement_proposals(config)
    chosen = np.array([i for i, k in enumerate(kset.keys)
                       if k in props and (props[k][:, 4] >= c.person_score).any()], np.int64)
  by_bucket: dict[tuple[int, int], list[int]] = {}
  for i in chosen:
    h, w = transforms.short_side_sizes(int(kset.sizes[i][0]), int(kset.sizes[i][1]),
                                       c.short_side)
    by_bucket.setdefault(pick_bucket((h, w), c.buckets, f"{kset.path} keyframe "
                                     f"{kset.keys[i]}"), []).append(int(i))
  plan = []
  for bucket in sorted(by_bucket):
    ids = by_bucket[bucket]
    per_host = -(-len(ids) // process_count)
    per_host = -(-per_host // batch) * batch
    for j in range(per_host):
      g = j * process_count + process_index
      plan.append((ids[g] if g < len(ids) else -1, bucket))
  return plan


def _replacement_proposals(config) -> dict[str, np.ndarray]:
  return formats.read_proposals(config.detect.proposals)


class _PlanSource:
  """Grain source over an eval plan: item j -> (keyframe id, bucket, record or None)."""

  def __init__(self, source, plan):
    self.source, self.plan = source, plan

  def __len__(self) -> int:
    return len(self.plan)

  def __getitem__(self, j: int):
    k, bucket = self.plan[int(j)]
    return (k, bucket, None if k < 0 else self.source[k])


class _TrainKeyframes:
  """The keyframes with boxes (the reference trains only on annotated clips)."""

  def __init__(self, source, ids: np.ndarray):
    self.source, self.ids = source, ids

  def __len__(self) -> int:
    return len(self.ids)

  def __getitem__(self, i: int):
    return self.source[int(self.ids[int(i)])]

  def __repr__(self) -> str:
    return f"{self.source!r} ({len(self.ids)} keyframes with boxes)"


# --------------------------------------------------------------------------
# Iterators
# --------------------------------------------------------------------------


def detect_train_info(config) -> info.DatasetInfo:
  """The training keyframes (those with boxes) and classes, from the manifest alone: what
  the trainer sizes epochs and the head by (num_classes: config.model.num_classes or the
  label map's largest id; names by id - 1, "" for ids the label map lacks)."""
  kset = KeyframeSet(config.data.train_path, "config.data.train_path")
  n = kset.num_classes(config)
  names = tuple(kset.label_map.get(i, "") for i in range(1, n + 1))
  return info.DatasetInfo(num_videos=int((kset.num_boxes > 0).sum()), num_classes=n,
                          class_names=names)


def make_detect_train_iterator(config, *, process_index: int, process_count: int, seed: int):
  """Endless training batches (module docstring) from config.data.train_path; resumable."""
  pipelines._init_cv2(config.data.tune_malloc)
  kset = KeyframeSet(config.data.train_path, "config.data.train_path")
  kset.check_clip(config)
  ids = np.flatnonzero(kset.num_boxes > 0)
  if not len(ids):
    raise DetectDataError(f"{kset.path}: no keyframe has a ground-truth box to train on")
  source = _TrainKeyframes(kset.source, ids)
  transform = DetectTrainTransform.from_config(config, kset.num_classes(config))
  base = (int(seed) * 1000) % (1 << 31)
  ds = grain.MapDataset.source(mixture.EpochShuffle(
      source, seed=base, process_index=process_index, process_count=process_count,
      shuffle=config.data.shuffle))
  ds = ds.random_map(transform, seed=base + 500)
  return pipelines._finish(ds, config, pipelines._train_batch(config, process_count))


class DetectEvalIterator:
  """One pass of test batches; ``keyframes[k]`` is batch["keyframe"] == k's (video_id,
  timestamp) and ``num_batches`` the batches every host yields."""

  def __init__(self, iterator, keyframes: list[tuple[str, int]], num_batches: int,
               label_map: dict[int, str]):
    self._it = iterator
    self.keyframes, self.num_batches, self.label_map = keyframes, num_batches, label_map

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return next(self._it)

  def get_state(self) -> dict[str, Any]:
    return self._it.get_state()

  def set_state(self, state) -> None:
    self._it.set_state(state)


def make_detect_eval_iterator(config, *, process_index: int, process_count: int
                              ) -> DetectEvalIterator:
  """One pass over config.data.val_path's test clips (module docstring)."""
  pipelines._init_cv2(config.data.tune_malloc)
  kset = KeyframeSet(config.data.val_path, "config.data.val_path")
  kset.check_clip(config)
  batch = pipelines._eval_batch(config, process_count)
  plan = eval_plan(kset, config, process_index, process_count, batch)
  c = config.detect
  transform = DetectEvalTransform(
      short_side=c.short_side, max_boxes=c.eval_max_boxes, num_classes=kset.num_classes(config),
      frames=config.data.frames, test_boxes=c.test_boxes, person_score=c.person_score,
      proposals=_replacement_proposals(config) if c.proposals else None)
  ds = grain.MapDataset.source(_PlanSource(kset.source, plan)).map(transform)
  it = pipelines._finish(ds, config, batch, drop_remainder=False)
  keyframes = [formats.split_key(k) for k in kset.keys]
  return DetectEvalIterator(it, keyframes, len(plan) // batch, kset.label_map)
