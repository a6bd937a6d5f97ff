"""Validation and test views against restatements of the reference's dataset code.

The ``ref_*`` functions copy the arithmetic of OpenGVLab/VideoMAEv2
dataset/datasets.py (VideoClsDataset, RawFrameClsDataset: load_video /
load_frame and __getitem__ in 'test' and 'validation' mode) and
dataset/functional.py + video_transforms.py (resize_clip, get_resize_sizes,
CenterCrop), statement by statement, on index arrays standing in for frames.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from configs.common import base_config
from vmae2_jax.data import pipelines, sampling, shards, transforms

# --------------------------------------------------------------------------
# Reference restatements
# --------------------------------------------------------------------------


def ref_dense_test(length, clip_len, frame_sample_rate, test_num_segment, chunk_nb):
  """VideoClsDataset test mode: load_video, then the temporal slice of __getitem__."""
  all_index = [x for x in range(0, length, frame_sample_rate)]
  while len(all_index) < clip_len:
    all_index.append(all_index[-1])
  buffer = np.array(all_index)  # frame k of the buffer is video frame all_index[k]
  temporal_step = max(1.0 * (buffer.shape[0] - clip_len) / (test_num_segment - 1), 0)
  temporal_start = int(chunk_nb * temporal_step)
  return buffer[temporal_start:temporal_start + clip_len]


def ref_segment_test_all(num_frames, num_segment, test_num_segment):
  """RawFrameClsDataset test mode: every view's indices, sorted, dealt out per view."""
  tick = num_frames / float(num_segment)
  all_index = []
  for t_seg in range(test_num_segment):
    tmp_index = [int(t_seg * tick / test_num_segment + tick * x) for x in range(num_segment)]
    all_index.extend(tmp_index)
  buffer = np.sort(np.array(all_index))
  return [buffer[temporal_start::test_num_segment] for temporal_start in range(test_num_segment)]


def ref_segment_test_own(num_frames, num_segment, test_num_segment, t_seg):
  """View t_seg's own index list, before the reference sorts all views together."""
  tick = num_frames / float(num_segment)
  return [int(t_seg * tick / test_num_segment + tick * x) for x in range(num_segment)]


def ref_dense_val(length, clip_len, frame_sample_rate):
  """VideoClsDataset.load_video in validation mode (num_segment 1)."""
  converted_len = int(clip_len * frame_sample_rate)
  seg_len = length // 1
  if seg_len <= converted_len:
    index = np.linspace(0, seg_len, num=seg_len // frame_sample_rate)
    index = np.concatenate((index, np.ones(clip_len - seg_len // frame_sample_rate) * seg_len))
    index = np.clip(index, 0, seg_len - 1).astype(np.int64)
  else:
    end_idx = (converted_len + seg_len) // 2
    str_idx = end_idx - converted_len
    index = np.linspace(str_idx, end_idx, num=clip_len)
    index = np.clip(index, str_idx, end_idx - 1).astype(np.int64)
  return index


def ref_dense_train(length, clip_len, frame_sample_rate, rng):
  """VideoClsDataset.load_video in train mode, np.random.randint -> rng.integers."""
  converted_len = int(clip_len * frame_sample_rate)
  seg_len = length // 1
  if seg_len <= converted_len:
    index = np.linspace(0, seg_len, num=seg_len // frame_sample_rate)
    index = np.concatenate((index, np.ones(clip_len - seg_len // frame_sample_rate) * seg_len))
    index = np.clip(index, 0, seg_len - 1).astype(np.int64)
  else:
    end_idx = rng.integers(converted_len, seg_len)
    str_idx = end_idx - converted_len
    index = np.linspace(str_idx, end_idx, num=clip_len)
    index = np.clip(index, str_idx, end_idx - 1).astype(np.int64)
  return index


def ref_segment_frames(num_frames, num_segment, mode, rng=None):
  """RawFrameClsDataset.load_frame in train/validation mode (start_idx left out)."""
  average_duration = num_frames // num_segment
  if average_duration > 0:
    if mode == "validation":
      all_index = list(np.multiply(list(range(num_segment)), average_duration) +
                       np.ones(num_segment, dtype=int) * (average_duration // 2))
    else:
      all_index = list(np.multiply(list(range(num_segment)), average_duration) +
                       rng.integers(average_duration, size=num_segment))
  elif num_frames > num_segment:
    if mode == "validation":
      all_index = list(range(num_segment))
    else:
      all_index = list(np.sort(rng.integers(num_frames, size=num_segment)))
  else:
    all_index = [0] * (num_segment - num_frames) + list(range(num_frames))
  return all_index


def ref_resize_sizes(im_h, im_w, size):
  """resize_clip's early return, then get_resize_sizes; (h, w) of the result."""
  if (im_w <= im_h and im_w == size) or (im_h <= im_w and im_h == size):
    return im_h, im_w
  if im_w < im_h:
    ow = size
    oh = int(size * im_h / im_w)
  else:
    oh = size
    ow = int(size * im_w / im_h)
  return oh, ow


def ref_test_crop(buffer, short_side_size, test_num_crop, split_nb):
  """VideoClsDataset.__getitem__ test mode: the spatial slice (buffer is T H W C)."""
  spatial_step = 1.0 * (max(buffer.shape[1], buffer.shape[2]) - short_side_size) / (
      test_num_crop - 1)
  spatial_start = int(split_nb * spatial_step)
  if buffer.shape[1] >= buffer.shape[2]:
    return buffer[:, spatial_start:spatial_start + short_side_size, :, :]
  return buffer[:, :, spatial_start:spatial_start + short_side_size, :]


def ref_center_crop(clip, size):
  """video_transforms.CenterCrop((size, size)) on a T H W C array."""
  h, w = size, size
  im_h, im_w = clip.shape[1:3]
  x1 = int(round((im_w - w) / 2.))
  y1 = int(round((im_h - h) / 2.))
  return clip[:, y1:y1 + h, x1:x1 + w]


# --------------------------------------------------------------------------
# Temporal views
# --------------------------------------------------------------------------

LENGTHS = [1, 3, 7, 15, 16, 20, 31, 48, 63, 64, 65, 100, 127, 250, 300, 301, 305, 997]
VIEWS = [2, 3, 5, 8, 10]


@pytest.mark.parametrize("frames,stride", [(16, 4), (8, 2), (16, 2)])
def test_dense_test_views_match_reference(frames, stride):
  for n in LENGTHS:
    for views in VIEWS:
      for v in range(views):
        ours = sampling.dense_eval_indices(n, v, views, frames, stride)
        ref = ref_dense_test(n, frames, stride, views, v)
        assert np.array_equal(ours, ref), (n, v, views)
        assert len(ours) == frames and ours.max() < n


def test_dense_test_float_order_matters():
  # 305 frames at stride 4: 77 strided frames, slack 61; view 7 of 8 starts at
  # int(7 * (61 / 7)) = 60 in the reference, not int(7 * 61 / 7) = 61.
  assert sampling.dense_eval_indices(305, 7, 8, 16, 4)[0] == 4 * 60
  assert ref_dense_test(305, 16, 4, 8, 7)[0] == 4 * 60


def test_dense_single_view_is_centred():
  # One view (the reference divides by zero): the centre window of the strided list.
  for n in LENGTHS:
    strided = list(range(0, n, 4))
    strided += [strided[-1]] * (16 - len(strided))
    start = (len(strided) - 16) // 2
    assert np.array_equal(sampling.dense_eval_indices(n, 0, 1, 16, 4),
                          strided[start:start + 16]), n
  assert np.array_equal(sampling.dense_eval_indices(300, 0, 1, 16, 4),
                        4 * (np.arange(16) + (75 - 16) // 2))


def test_segment_sorted_interleave_equals_each_views_own_list():
  for n in LENGTHS + [174, 1000, 12345]:
    for frames in (8, 16):
      for views in [1] + VIEWS:
        dealt = ref_segment_test_all(n, frames, views)
        for t in range(views):
          assert np.array_equal(dealt[t], ref_segment_test_own(n, frames, views, t)), (n, t)


@pytest.mark.parametrize("frames", [8, 16])
def test_segment_test_views_match_reference(frames):
  for n in LENGTHS + [174, 1000]:
    for views in VIEWS:
      dealt = ref_segment_test_all(n, frames, views)
      for t in range(views):
        ours = sampling.segment_eval_indices(n, t, views, frames)
        assert np.array_equal(ours, dealt[t]), (n, t, views)
        assert ours.max() < n and len(ours) == frames


def test_segment_single_view_takes_segment_middles():
  for n in LENGTHS + [174]:
    tick = n / 16.0
    ours = sampling.segment_eval_indices(n, 0, 1, 16)
    assert np.array_equal(ours, [int(tick / 2 + tick * x) for x in range(16)])
    # The same as view 1 of the reference's two views.
    assert np.array_equal(ours, ref_segment_test_all(n, 16, 2)[1])
  assert np.array_equal(sampling.segment_eval_indices(48, 0, 1, 16), np.arange(16) * 3 + 1)


def test_segment_three_views_differ_from_evenly_spread_offsets():
  # The replaced formula (offset (0.5 + v / n) % 1 of a segment) puts view 0 at the
  # middles; the reference starts view 0 at the segment starts.
  ours = sampling.segment_eval_indices(48, 0, 3, 16)
  assert np.array_equal(ours, np.arange(16) * 3)
  assert np.array_equal(sampling.segment_eval_indices(48, 2, 3, 16), np.arange(16) * 3 + 2)


# --------------------------------------------------------------------------
# Validation and training indices
# --------------------------------------------------------------------------


def test_validation_indices_match_reference():
  for n in LENGTHS + [1000]:
    for frames, stride in [(16, 4), (8, 2), (16, 2)]:
      assert np.array_equal(sampling.dense_val_indices(n, frames, stride),
                            ref_dense_val(n, frames, stride)), (n, frames, stride)
      assert np.array_equal(sampling.val_indices("dense", n, frames, stride),
                            ref_dense_val(n, frames, stride))
    for frames in (8, 16):
      ref = ref_segment_frames(n, frames, "validation")
      assert np.array_equal(sampling.segment_val_indices(n, frames), ref), (n, frames)
      assert np.array_equal(sampling.val_indices("segment", n, frames, 4), ref)


def test_segment_train_indices_match_reference_with_the_same_draws():
  for n in LENGTHS + [174, 1000]:
    for frames in (8, 16):
      for seed in range(3):
        ours = sampling.segment_train_indices(n, np.random.default_rng(seed), frames)
        ref = ref_segment_frames(n, frames, "train", np.random.default_rng(seed))
        assert np.array_equal(ours, ref), (n, frames, seed)
        assert ours.max() < n


def test_dense_train_indices_match_reference_with_the_same_draws():
  for n in LENGTHS + [1000]:
    for seed in range(3):
      ours = sampling.dense_train_indices(n, np.random.default_rng(seed), 16, 4)
      ref = ref_dense_train(n, 16, 4, np.random.default_rng(seed))
      assert np.array_equal(ours, ref), (n, seed)


def test_unknown_sampling_mode_names_the_field():
  with pytest.raises(ValueError, match="config.data.sampling='sparse'"):
    sampling.eval_indices("sparse", 100, 0, 2, 16, 4)


# --------------------------------------------------------------------------
# Resize and crops
# --------------------------------------------------------------------------

SIZES = [(240, 320), (320, 240), (256, 256), (240, 427), (427, 240), (224, 300), (300, 224),
         (224, 224), (224, 180), (101, 77), (77, 101), (33, 32), (32, 33), (360, 640),
         (480, 854), (128, 171), (64, 64), (63, 64)]


@pytest.mark.parametrize("size", [224, 64, 32])
def test_resize_sizes_match_reference(size):
  for h, w in SIZES:
    assert transforms.short_side_sizes(h, w, size) == ref_resize_sizes(h, w, size), (h, w)


def test_resize_sizes_truncate_where_round_would_not():
  # 224 * 427 / 240 = 398.53: the reference truncates to 398.
  assert transforms.short_side_sizes(240, 427, 224) == (224, 398)
  assert transforms.short_side_sizes(427, 240, 224) == (398, 224)
  diff = [(h, w) for h, w in SIZES
          if int(224 * max(h, w) / min(h, w)) != round(224 * max(h, w) / min(h, w))]
  assert diff  # the case list covers rounding differences
  assert transforms.short_side_sizes(224, 300, 224) == (224, 300)  # short side already 224


def test_resize_short_side_uses_stored_size_and_cv2_bilinear():
  rng = np.random.default_rng(0)
  clip = rng.integers(0, 256, (2, 101, 77, 3), dtype=np.uint8)
  out = transforms.resize_short_side(clip, 32)
  oh, ow = ref_resize_sizes(101, 77, 32)
  assert out.shape == (2, oh, ow, 3)
  for t in range(2):
    assert np.array_equal(out[t], cv2.resize(clip[t], (ow, oh), interpolation=cv2.INTER_LINEAR))
  # Frames decoded at half size: the output size still follows the stored 202x154 frame.
  half = transforms.resize_short_side(clip, 64, src_hw=(202, 154))
  assert half.shape[1:3] == ref_resize_sizes(202, 154, 64)
  same = transforms.resize_short_side(clip, 77)
  assert same is clip  # short side already the size: untouched
  assert transforms.decode_size_for_resize(320, 427, 224) == (224, 298)
  assert transforms.decode_size_for_resize(100, 150, 224) == (100, 150)  # never upscales


@pytest.mark.parametrize("hw", [(32, 57), (57, 32), (32, 32), (32, 33), (33, 32), (32, 100)])
def test_test_crops_match_reference(hw):
  h, w = hw
  clip = np.arange(2 * h * w * 3).reshape(2, h, w, 3)
  for num_crops in (2, 3, 4):
    crops = transforms.spatial_crops(clip, 32, num_crops)
    assert len(crops) == num_crops
    for i, c in enumerate(crops):
      assert np.array_equal(c, ref_test_crop(clip, 32, num_crops, i)), (hw, num_crops, i)
      assert c.shape == (2, 32, 32, 3)
  (one,) = transforms.spatial_crops(clip, 32, 1)
  start = (max(h, w) - 32) // 2
  assert np.array_equal(one, clip[:, start:start + 32] if h >= w else clip[:, :, start:start + 32])
  with pytest.raises(ValueError, match="short side"):
    transforms.spatial_crops(clip, 31, 3)


@pytest.mark.parametrize("hw", [(32, 57), (57, 32), (32, 33), (32, 35), (32, 37), (33, 32),
                                (35, 32), (32, 32)])
def test_center_crop_matches_reference(hw):
  # (w - size) / 2 = 0.5, 1.5, 2.5: Python's round() (half to even) decides, as in the reference.
  clip = np.arange(np.prod(hw) * 3).reshape(1, *hw, 3)
  assert np.array_equal(transforms.center_crop(clip, 32), ref_center_crop(clip, 32))


# --------------------------------------------------------------------------
# End to end on the embedded demo set
# --------------------------------------------------------------------------


def _demo_config(**data):
  c = base_config()
  c.stage = "finetune"
  c.batch_size = 4
  c.eval.batch_size = 0  # = batch_size
  c.data.update(dict(train_path="demo", val_path="demo:val", frames=8, image_size=64,
                     sampling_rate=2, num_workers=0, read_threads=1))
  c.data.update(data)
  return c


def _count_decodes(monkeypatch):
  calls = []
  original = shards.VideoRecord.decode_frames

  def counting(self, indices, *args, **kwargs):
    calls.append(self.header["name"])
    return original(self, indices, *args, **kwargs)

  monkeypatch.setattr(shards.VideoRecord, "decode_frames", counting)
  return calls


@pytest.mark.parametrize("sampling_mode,segments,crops", [("dense", 3, 2), ("segment", 2, 3)])
def test_eval_batches_decode_each_record_once_and_carry_names(monkeypatch, sampling_mode,
                                                              segments, crops):
  c = _demo_config(sampling=sampling_mode, test_num_segment=segments, test_num_crop=crops)
  calls = _count_decodes(monkeypatch)
  batches = list(pipelines.make_eval_iterator(c, process_index=0, process_count=1))
  assert len(batches) == pipelines.num_eval_batches(c, process_count=1) == 2
  views = segments * crops
  src = shards.ShardSource("demo:val")
  records = [shards.parse_record(*src[i]) for i in range(len(src))]
  names = [r.header["name"] for r in records]
  assert sorted(calls) == sorted(names)  # one decode per video for all its views
  rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  assert set(rows) == {"video", "label", "video_id", "view", "name"}
  assert rows["video"].shape == (len(src) * views, 8, 64, 64, 3)
  assert np.array_equal(rows["video_id"], np.repeat(np.arange(len(src)), views))
  assert np.array_equal(rows["view"], np.tile(np.arange(views), len(src)))
  assert list(rows["name"]) == [n for n in names for _ in range(views)]
  assert np.array_equal(rows["label"], np.repeat([r.label for r in records], views))
  # Video 0, view k = (temporal k // crops, crop k % crops), against a full-size decode,
  # the reference's resize and crop (frames decode at reduced DCT size here: near, not equal;
  # temporal views differ from each other by ~4 levels a pixel).
  rec = records[0]
  size = ref_resize_sizes(rec.height, rec.width, 64)
  for k in range(views):
    t, s = divmod(k, crops)
    if sampling_mode == "dense":
      idx = ref_dense_test(rec.num_frames, 8, 2, segments, t)
    else:
      idx = ref_segment_test_all(rec.num_frames, 8, segments)[t]
    full = rec.decode_frames(idx)
    resized = np.stack([cv2.resize(f, size[::-1], interpolation=cv2.INTER_LINEAR) for f in full])
    ref = ref_test_crop(resized, 64, crops, s)
    assert np.abs(rows["video"][k].astype(int) - ref).mean() < 1.5


def test_validation_batches_one_centre_view_per_video(monkeypatch):
  c = _demo_config(sampling="dense")
  c.eval.batch_size = 6  # 3 videos a host; 8 videos over 2 hosts: 4 each, padded to 6
  calls = _count_decodes(monkeypatch)
  got = []
  for p in range(2):
    batches = list(pipelines.make_validation_iterator(c, process_index=p, process_count=2))
    assert len(batches) == pipelines.num_validation_batches(c, process_count=2) == 2
    for b in batches:
      assert b["video"].shape == (3, 8, 64, 64, 3)
      got.append(b)
  rows = {k: np.concatenate([b[k] for b in got]) for k in got[0]}
  real = rows["video_id"] >= 0
  assert sorted(rows["video_id"][real]) == list(range(8)) and len(calls) == 8
  assert (rows["view"] == 0).all() and (rows["name"][~real] == "").all()
  assert (rows["label"][~real] == -1).all() and not rows["video"][~real].any()
  src = shards.ShardSource("demo:val")
  rec = shards.parse_record(*src[3])
  row = int(np.flatnonzero(rows["video_id"] == 3)[0])
  assert rows["name"][row] == rec.header["name"] and rows["label"][row] == rec.label
  full = rec.decode_frames(ref_dense_val(rec.num_frames, 8, 2))
  size = ref_resize_sizes(rec.height, rec.width, 64)
  ref = ref_center_crop(np.stack([cv2.resize(f, size[::-1], interpolation=cv2.INTER_LINEAR)
                                  for f in full]), 64)
  assert np.abs(rows["video"][row].astype(int) - ref).mean() < 1.5


def test_eval_needs_val_path():
  c = _demo_config(val_path="")
  for make in (pipelines.make_eval_iterator, pipelines.make_validation_iterator):
    with pytest.raises(ValueError, match="config.data.val_path is empty"):
      make(c, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="config.data.val_path is empty"):
    pipelines.num_eval_batches(c, process_count=1)
