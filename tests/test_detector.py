"""The detection model: RoIAlign against torchvision, positions, padding, the head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests import torch_reference
from vmae2_jax.conversion.surgery import interpolate_pos_table
from vmae2_jax.models import detector as det
from vmae2_jax.models.options import ModelOptions
from vmae2_jax.models.posemb import sinusoid_table
from vmae2_jax.models.roi_align import roi_align
from vmae2_jax.models.variants import get_variant


def test_roi_align_equals_torchvision():
  """Edges, tiny boxes, boxes past the map, one call over two images (the batch index)."""
  ref = torch_reference.stored("roi_align.npz")
  # Boxes larger than the map need more samples than the in-frame default: 4 covers them.
  got = jax.jit(lambda f, b: roi_align(f, b, max_samples=4))(ref["features"], ref["boxes"])
  np.testing.assert_allclose(np.asarray(got), ref["output"], rtol=1e-5, atol=1e-5)
  # The in-frame default is exact for the boxes inside the frame.
  inside = np.asarray(roi_align(ref["features"], ref["boxes"]))
  for b, n in [(0, 0), (0, 1), (0, 2), (0, 3), (0, 5), (1, 0), (1, 1), (1, 7)]:
    np.testing.assert_allclose(inside[b, n], ref["output"][b, n], rtol=1e-5, atol=1e-5)


def test_roi_align_reads_only_the_valid_part_of_a_padded_map():
  ref = torch_reference.stored("roi_align.npz")
  f = ref["features"]
  padded = np.pad(f, ((0, 0), (0, 3), (0, 4), (0, 0)), constant_values=50.0)
  got = roi_align(padded, ref["boxes"], valid_hw=jnp.asarray([[9, 13], [9, 13]]),
                  max_samples=4)
  np.testing.assert_allclose(np.asarray(got), ref["output"], rtol=1e-5, atol=1e-5)


def _detector(frames=4, image_size=32, classes=5, seed=0):
  return det.Detector(get_variant("mu/16"), classes, frames=frames, image_size=image_size,
                      opts=ModelOptions(init="finetune"), rngs=nnx.Rngs(seed),
                      head_init_scale=1.0)


@nnx.jit
def _logits(model, video, boxes, valid_hw=None):
  return model(video, boxes, valid_hw=valid_hw)


def test_positions_are_the_table_resized_as_torch_bicubic():
  model = _detector()
  t, gh, gw = model.encoder.grid
  d = model.encoder.size.width
  table = sinusoid_table(t * gh * gw, d)
  # interpolate_pos_table's bicubic is checked against torch's in test_conversion
  want = interpolate_pos_table(table, (t, gh, gw), (t, 3, 5)).reshape(t, 3, 5, d)
  np.testing.assert_allclose(np.asarray(model.positions((3, 5))), want, atol=1e-6)
  # per-frame grids inside a padded one: each frame's own resize, zeros past it
  per_frame = np.asarray(model.positions((4, 6), jnp.asarray([[3, 5], [4, 6]])))
  np.testing.assert_allclose(per_frame[0, :, :3, :5], want, atol=1e-5)
  assert not per_frame[0, :, 3:].any() and not per_frame[0, :, :, 5:].any()
  np.testing.assert_allclose(per_frame[1], np.asarray(model.positions((4, 6))), atol=1e-5)


def test_square_frames_match_the_encoder():
  """At the pre-training size the map is the encoder's own output (no resize)."""
  model = _detector()
  video = np.random.default_rng(0).integers(0, 255, (2, 4, 32, 32, 3), np.uint8)
  fmap, _ = model.feature_map(jnp.asarray(video))
  tokens = model.encoder(jnp.asarray(video)).reshape(2, 2, 2, 2, -1).mean(axis=1)
  np.testing.assert_allclose(np.asarray(fmap), np.asarray(tokens), atol=1e-5)


def test_padding_does_not_change_a_box_score():
  """A 48x80 frame alone and padded to 64x112 beside another frame: same logits."""
  model = _detector()
  rng = np.random.default_rng(1)
  frame = rng.integers(0, 255, (1, 4, 48, 80, 3), np.uint8)
  other = rng.integers(0, 255, (1, 4, 64, 112, 3), np.uint8)
  boxes = np.array([[[2, 3, 40, 45], [30, 0, 79, 47], [0, 0, 79, 47]]], np.float32)
  alone = _logits(model, jnp.asarray(frame), jnp.asarray(boxes))
  padded = np.concatenate([np.pad(frame, ((0, 0), (0, 0), (0, 16), (0, 32), (0, 0)),
                                  constant_values=200), other])
  both = _logits(model, jnp.asarray(padded), jnp.asarray(np.concatenate([boxes, boxes])),
                 jnp.asarray([[48, 80], [64, 112]]))
  np.testing.assert_allclose(np.asarray(both[0]), np.asarray(alone[0]), rtol=1e-4, atol=1e-5)
  # without the mask the padding leaks (the check can fail)
  leaky = _logits(model, jnp.asarray(padded[:1]), jnp.asarray(boxes))
  assert np.abs(np.asarray(leaky[0]) - np.asarray(alone[0])).max() > 1e-2
  assert both.shape == (2, 3, 5) and both.dtype == jnp.float32


def test_box_jitter_and_extension_stay_in_the_frame():
  boxes = jnp.asarray([[[0, 0, 20, 30], [200, 100, 223, 223], [50, 50, 51, 51]]], jnp.float32)
  j = np.asarray(det.jitter_boxes(jax.random.key(0), boxes, (224, 224)))
  assert (j[..., :2] >= 0).all() and (j[..., 2:] <= 223).all()
  assert (j[..., 2] >= j[..., 0] + 1 - 1e-5).all() and (j[..., 3] >= j[..., 1] + 1 - 1e-5).all()
  assert not np.allclose(j, np.asarray(boxes))
  e = np.asarray(det.extend_boxes(boxes, jnp.asarray([[224, 224]])))
  # x widened by 0.1 of (w + 1) in all, y by 0.05 of (h + 1), then clipped
  np.testing.assert_allclose(e[0, 0], [0, 0, 20 + 0.05 * 21, 30 + 0.025 * 31], rtol=1e-6)
  np.testing.assert_allclose(e[0, 1, 2:], [223, 223])
