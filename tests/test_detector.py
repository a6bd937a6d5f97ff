"""The detection model: RoIAlign against torchvision, positions, padding, the head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tests import torch_reference
from vmae2_jax.conversion.surgery import interpolate_pos_table
from vmae2_jax.models import detector as det
from vmae2_jax.models.options import ModelOptions
from vmae2_jax.models.posemb import sinusoid_table
from vmae2_jax.models.roi_align import roi_align
from vmae2_jax.models.variants import get_variant


def test_roi_align_equals_torchvision():
  """Edges, tiny boxes, boxes past the map, 1-4 samples a side, one call over two images
  (the batch index); the default sample cap is exact for them all."""
  ref = torch_reference.stored("roi_align.npz")
  got = jax.jit(roi_align)(ref["features"], ref["boxes"])
  np.testing.assert_allclose(np.asarray(got), ref["output"], rtol=1e-5, atol=1e-5)
  # a cap below a box's sample count changes it: the cap matters and is exact at the default
  small = np.asarray(roi_align(ref["features"], ref["boxes"], max_samples=2))
  assert np.abs(small[0, 0] - ref["output"][0, 0]).max() > 1e-3


def test_roi_align_zeroes_samples_beyond_the_map_as_the_kernel():
  """torchvision's kernel reads 0 for samples past [-1, size] (its stored reference here is
  the pure-PyTorch transcription, which lacks this, so the case is checked by hand)."""
  f = np.ones((1, 4, 4, 2), np.float32)
  boxes = np.array([[[0, 0, 63, 63],          # inside: the mean of ones
                     [100, 0, 120, 63],       # x samples from 6.3 to 7.4 cells: beyond 4 + 1
                     [40, 0, 100, 63]]], np.float32)  # x from 2.5 to 6.25: part beyond
  out = np.asarray(roi_align(f, boxes, max_samples=2))
  np.testing.assert_allclose(out[0, 0], 1.0, rtol=1e-6)
  np.testing.assert_array_equal(out[0, 1], 0.0)
  # bins whose samples pass x = 4 read 0, the others 1
  cols = out[0, 2, 0, :, 0]
  pos = 2.5 + 3.75 / 7 * (np.arange(7) + 0.5)
  np.testing.assert_allclose(cols, np.where(pos <= 4, 1.0, 0.0), atol=1e-6)


def test_roi_align_reads_only_the_valid_part_of_a_padded_map():
  ref = torch_reference.stored("roi_align.npz")
  f = ref["features"]
  padded = np.pad(f, ((0, 0), (0, 3), (0, 4), (0, 0)), constant_values=50.0)
  got = roi_align(padded, ref["boxes"], valid_hw=jnp.asarray([[9, 23], [9, 23]]))
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

