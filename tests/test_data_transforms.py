"""Clip sampling and augmentation semantics (official_semantics.md sections 4 and 5)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from vmae2_jax.data import randaugment, sampling, transforms


def _smooth_clip(t=4, h=60, w=80, seed=0):
  import cv2
  rng = np.random.default_rng(seed)
  return np.stack([cv2.GaussianBlur((rng.random((h, w, 3)) * 200 + 20).astype(np.uint8),
                                    (0, 0), 2) for _ in range(t)])


# ---------------------------------------------------------------- sampling


def test_pretrain_sampling_start_range_stride_and_clamp():
  rng = np.random.default_rng(0)
  starts = set()
  for _ in range(400):
    idx = sampling.pretrain_indices(100, rng, 16, 4)
    assert np.array_equal(np.diff(idx), np.full(15, 4))
    starts.add(int(idx[0]))
  assert min(starts) == 0 and max(starts) == 36  # uniform in [0, N - 64]
  short = sampling.pretrain_indices(30, rng, 16, 4)
  assert short[0] == 0 and short.max() == 29 and np.array_equal(short[8:], np.full(8, 29))


def test_dense_and_segment_sampling():
  rng = np.random.default_rng(1)
  for _ in range(50):
    idx = sampling.dense_train_indices(300, rng, 16, 4)
    assert len(idx) == 16 and 60 <= idx[-1] - idx[0] <= 64 and idx.max() < 300
    seg = sampling.segment_train_indices(50, rng, 16)
    assert np.array_equal(seg // 3, np.arange(16))  # one frame in each 3-frame segment
  assert np.array_equal(sampling.segment_train_indices(10, rng, 16), [0] * 6 + list(range(10)))
  # The reference's two test views: segment starts, then segment middles.
  assert np.array_equal(sampling.segment_eval_indices(48, 0, 2, 16), np.arange(16) * 3)
  assert np.array_equal(sampling.segment_eval_indices(48, 1, 2, 16), np.arange(16) * 3 + 1)
  views = [sampling.dense_eval_indices(300, v, 5, 16, 4) for v in range(5)]
  assert views[0][0] == 0 and views[-1][-1] == 296
  assert all(np.array_equal(np.diff(v), np.full(15, 4)) for v in views)
  padded = sampling.dense_eval_indices(20, 0, 5, 16, 4)
  assert np.array_equal(padded, [0, 4, 8, 12, 16] + [16] * 11)


# ---------------------------------------------------------------- crops


def test_multiscale_crop_sizes_and_13_fixed_offsets():
  sizes = transforms.multiscale_crop_sizes(320, 427, 224, 224)
  # short side 320 at scales 1, .875, .75, .66 -> 320, 280, 240, 211; |i - j| <= 1
  assert sorted(sizes) == sorted([(320, 320), (320, 280), (280, 320), (280, 280), (280, 240),
                                  (240, 280), (240, 240), (240, 211), (211, 240), (211, 211)])
  assert transforms.multiscale_crop_sizes(256, 300, 224, 224, scales=[.875])[0] == (224, 224)
  offs = transforms.fixed_offsets(320, 427, 240, 280)
  ws, hs = (427 - 280) // 4, (320 - 240) // 4
  assert len(offs) == 13 and len(set(offs)) == 13
  assert offs[:5] == [(0, 0), (0, 4 * ws), (4 * hs, 0), (4 * hs, 4 * ws), (2 * hs, 2 * ws)]
  assert set(offs) == {(a * hs, b * ws) for a, b in
                       [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2),
                        (1, 1), (1, 3), (3, 1), (3, 3)]}
  assert len(transforms.fixed_offsets(320, 427, 240, 280, more_fix_crop=False)) == 5
  rng = np.random.default_rng(0)
  seen = set()
  for _ in range(500):
    y, x, ch, cw = transforms.multiscale_crop_params(320, 427, 224, 224, rng)
    assert (ch, cw) in sizes and (y, x) in transforms.fixed_offsets(320, 427, ch, cw)
    seen.add((ch, cw))
  assert seen == set(sizes)


def test_random_resized_crop_bounds_and_reduced_decode_mapping():
  rng = np.random.default_rng(0)
  for _ in range(200):
    y, x, h, w = transforms.random_resized_crop_params(120, 160, rng)
    assert 0 <= y and y + h <= 120 and 0 <= x and x + w <= 160
    assert 0.08 * 0.9 <= h * w / (120 * 160) <= 1.0
  # A box cropped from a half-size decode covers the same region.
  clip = _smooth_clip(2, 64, 96)
  half = clip[:, ::2, ::2]
  box = (8, 16, 40, 48)
  full = transforms.crop_resize(clip, box, 16, 16)
  red = transforms.crop_resize(half, box, 16, 16, src_hw=(64, 96))
  assert np.abs(full.astype(int) - red).mean() < 6
  assert transforms.min_decode_size(320, 427, [(0, 0, 240, 240)], 112, 112) == (150, 200)


def test_crop_resize_and_flip_apply_to_every_frame_alike():
  frame = _smooth_clip(1)[0]
  clip = np.stack([frame] * 5)
  out = transforms.crop_resize(clip, (5, 7, 40, 50), 24, 24, flip=True)
  assert out.shape == (5, 24, 24, 3)
  assert all(np.array_equal(out[0], o) for o in out)
  assert np.array_equal(out[0], transforms.crop_resize(clip[:1], (5, 7, 40, 50), 24, 24)[0, :, ::-1])


def test_eval_spatial_crops_along_long_side():
  clip = np.arange(2 * 32 * 56 * 3, dtype=np.int64).reshape(2, 32, 56, 3).astype(np.uint8)
  crops = transforms.spatial_crops(clip, 32, 3)
  assert [c.shape for c in crops] == [(2, 32, 32, 3)] * 3
  assert np.array_equal(crops[0], clip[:, :, 0:32]) and np.array_equal(crops[1], clip[:, :, 12:44])
  assert np.array_equal(crops[2], clip[:, :, 24:56])
  tall = transforms.spatial_crops(clip.transpose(0, 2, 1, 3), 32, 3)
  assert np.array_equal(tall[2], clip.transpose(0, 2, 1, 3)[:, 24:56])
  # 57 - 32 = 25 over 2 steps: 12.5 -> starts 0, 12, 25 (truncated, as the reference).
  assert transforms.spatial_crop_starts(57, 32, 3) == [0, 12, 25]
  assert transforms.spatial_crop_starts(57, 32, 1) == [12]


def test_eval_resize_and_centre_crop_sizes():
  assert transforms.short_side_sizes(240, 427, 224) == (224, 398)  # int(398.53), not round
  assert transforms.short_side_sizes(427, 240, 224) == (398, 224)
  assert transforms.short_side_sizes(256, 256, 224) == (224, 224)
  assert transforms.short_side_sizes(224, 500, 224) == (224, 500)  # already the size
  clip = _smooth_clip(2, 60, 80)
  out = transforms.resize_short_side(clip, 32)
  assert out.shape == (2, 32, 42, 3)  # int(32 * 80 / 60) = 42
  assert transforms.center_crop_offsets(32, 42, 32) == (0, 5)
  assert transforms.center_crop_offsets(32, 35, 32) == (0, 2)  # round(1.5) = 2
  assert transforms.center_crop_offsets(32, 37, 32) == (0, 2)  # round(2.5) = 2 (half to even)
  assert transforms.center_crop(out, 32).shape == (2, 32, 32, 3)


def test_random_erasing_box_shared_over_frames():
  rng = np.random.default_rng(3)
  clip = np.full((6, 40, 40, 3), 7, np.uint8)
  boxes = [transforms.random_erasing_params(40, 40, rng, probability=1.0) for _ in range(50)]
  assert all(b is not None for b in boxes)
  for y, x, h, w in boxes:
    assert 0.02 * 1600 * 0.5 <= h * w <= 1600 / 3 * 1.5 and y + h <= 40 and x + w <= 40
  box = boxes[0]
  out = transforms.apply_erasing(clip, box, rng)
  changed = (out != 7).any(-1)
  y, x, h, w = box
  for t in range(6):  # the same box in every frame, noise inside, nothing outside
    mask = np.zeros((40, 40), bool)
    mask[y:y + h, x:x + w] = True
    assert changed[t][~mask].sum() == 0 and changed[t][mask].mean() > 0.9
  assert not np.array_equal(out[0], out[1])  # per-pixel noise differs between frames
  never = [transforms.random_erasing_params(40, 40, rng, probability=0.0) for _ in range(20)]
  assert never == [None] * 20


# ---------------------------------------------------------------- RandAugment


def test_randaugment_policy_parse_and_sampling():
  ra = randaugment.RandAugment.from_string("rand-m7-n4-mstd0.5-inc1")
  assert (ra.magnitude, ra.num_layers, ra.magnitude_std, ra.increasing) == (7, 4, 0.5, True)
  assert len(ra.ops) == 15
  rng = np.random.default_rng(0)
  counts = [len(ra.sample(rng)) for _ in range(2000)]
  assert abs(np.mean(counts) - 2.0) < 0.1  # 4 ops at p = 0.5
  with pytest.raises(ValueError):
    randaugment.RandAugment.from_string("augmix-m5")


def test_randaugment_same_params_for_every_frame():
  ra = randaugment.RandAugment.from_string("rand-m9-n4-mstd0.5-inc1")
  frame = _smooth_clip(1, 48, 64)[0]
  clip = np.stack([frame] * 6)
  rng = np.random.default_rng(5)
  for _ in range(30):
    ops = ra.sample(rng)
    out = randaugment.apply_ops(clip, ops)
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert all(np.array_equal(out[0], o) for o in out[1:]), ops
  for op in ra.ops:  # every op, both signs, identical across frames
    for sign in (-1.0, 1.0):
      out = randaugment.apply_op(clip, op, randaugment.level_to_arg(op, 7.0, sign))
      assert all(np.array_equal(out[0], o) for o in out[1:]), op


# rand_augment.py's _FILL: the reference's video path passes no img_mean, so this grey fills.
REFERENCE_FILL = (128, 128, 128)


@pytest.mark.parametrize("op,arg,pil", [
    ("AutoContrast", None, lambda im, a: ImageOps.autocontrast(im)),
    ("Equalize", None, lambda im, a: ImageOps.equalize(im)),
    ("PosterizeIncreasing", 2, lambda im, a: ImageOps.posterize(im, a)),
    ("SolarizeIncreasing", 77, lambda im, a: ImageOps.solarize(im, a)),
    ("ColorIncreasing", 1.63, lambda im, a: ImageEnhance.Color(im).enhance(a)),
    ("ContrastIncreasing", 0.37, lambda im, a: ImageEnhance.Contrast(im).enhance(a)),
    ("BrightnessIncreasing", 1.5, lambda im, a: ImageEnhance.Brightness(im).enhance(a)),
    ("SharpnessIncreasing", 1.63, lambda im, a: ImageEnhance.Sharpness(im).enhance(a)),
    ("Rotate", 21.0, lambda im, a: im.rotate(a, resample=Image.BICUBIC,
                                             fillcolor=REFERENCE_FILL)),
    ("ShearX", 0.21, lambda im, a: im.transform(im.size, Image.AFFINE, (1, a, 0, 0, 1, 0),
                                                 resample=Image.BICUBIC,
                                                 fillcolor=REFERENCE_FILL)),
    ("TranslateYRel", -0.3, lambda im, a: im.transform(im.size, Image.AFFINE,
                                                        (1, 0, 0, 0, 1, a * im.size[1]),
                                                        resample=Image.BICUBIC,
                                                        fillcolor=REFERENCE_FILL)),
])
def test_randaugment_ops_match_pil(op, arg, pil):
  clip = _smooth_clip(1, 48, 64, seed=2)
  ours = randaugment.apply_op(clip, op, arg)[0].astype(int)
  ref = np.asarray(pil(Image.fromarray(clip[0]), arg)).astype(int)
  assert np.abs(ours - ref).mean() < 1.0
  assert np.percentile(np.abs(ours - ref), 99) <= 6


def test_randaugment_fills_uncovered_pixels_with_reference_grey():
  clip = np.zeros((2, 32, 32, 3), np.uint8)
  out = randaugment.apply_op(clip, "TranslateYRel", 0.5)  # top or bottom half uncovered
  uncovered = out[:, :8] if out[0, 0, 0, 0] else out[:, -8:]
  assert (uncovered == np.array(REFERENCE_FILL, np.uint8)).all()
