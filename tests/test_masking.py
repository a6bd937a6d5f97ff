"""Dual masking: static counts, tube structure, running-cell maps, index == boolean form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmae2_jax.masking import (MaskSpec, running_cell_maps, running_cell_keep_table,
                               sample_masks, to_boolean_masks)
from vmae2_jax.training.losses import pixel_targets, weighted_mse

GRID = (8, 14, 14)  # 16 frames, 224 px, patch 16


def reference_running_cell(grid, ratio):
  """The reference's Cell/RunningCellMaskingGenerator, re-stated with a moving pointer."""
  t_slots, h, w = grid
  n = int(4 * ratio)
  queue = np.hstack([np.ones(n), np.zeros(4 - n)])
  maps = []
  for start in range(4):
    ptr = start
    frames = []
    for _ in range(t_slots):
      ptr += 1                                         # run_cell() before get_cell()
      cell = queue[(np.arange(4) + ptr) % 4].reshape(2, 2)
      frames.append(np.tile(cell, [h // 2, w // 2]))
    maps.append(np.stack(frames).flatten())
  return np.stack(maps).astype(bool)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_running_cell_maps_equal_reference(ratio):
  maps = running_cell_maps(GRID, ratio)
  np.testing.assert_array_equal(maps, reference_running_cell(GRID, ratio))
  assert len({m.tobytes() for m in maps}) == 4
  table = running_cell_keep_table(GRID, ratio)
  assert table.shape == (4, int(np.prod(GRID)) * (4 - int(4 * ratio)) // 4)
  for row, m in zip(table, maps):
    np.testing.assert_array_equal(row, np.flatnonzero(~m))


@pytest.mark.parametrize("encoder", ["tube", "random"])
@pytest.mark.parametrize("decoder", ["running_cell", "none"])
def test_exact_counts_and_sorted_indices(encoder, decoder):
  spec = MaskSpec(GRID, encoder=encoder, encoder_ratio=0.9, decoder=decoder)
  s = jax.jit(sample_masks, static_argnums=(1, 2))(jax.random.key(0), 16, spec)
  n = int(np.prod(GRID))
  if encoder == "tube":
    assert spec.num_visible == 8 * (196 - 176) == 160
  else:
    assert spec.num_visible == n - int(0.9 * n)
  assert s.visible_idx.shape == (16, spec.num_visible)
  assert s.target_idx.shape == (16, spec.num_targets)
  for row in np.asarray(s.visible_idx):
    assert len(set(row)) == len(row) and np.all(np.diff(row) > 0)
  for row in np.asarray(s.target_idx):
    assert np.all(np.diff(row) > 0)
  enc, dec = to_boolean_masks(s, n)
  np.testing.assert_array_equal(np.asarray(enc).sum(1), n - spec.num_visible)
  if decoder == "none":
    # VideoMAE v1: the decoder reconstructs exactly the encoder-masked tokens.
    np.testing.assert_array_equal(~np.asarray(dec), np.asarray(enc))
    np.testing.assert_array_equal(s.weights, 1.0)


def test_vit_g_counts():
  spec = MaskSpec((8, 16, 16), encoder_ratio=0.9, decoder_ratio=0.5)
  assert spec.num_visible == 8 * 26 == 208 and spec.num_targets == 1024


def test_tube_mask_is_constant_over_time():
  spec = MaskSpec(GRID, encoder="tube")
  s = sample_masks(jax.random.key(3), 4, spec)
  enc, _ = to_boolean_masks(s, int(np.prod(GRID)))
  enc = np.asarray(enc).reshape(4, *GRID)
  assert np.all(enc == enc[:, :1])
  assert not np.all(enc[0] == enc[1])


def test_index_form_equals_boolean_form_of_reference():
  spec = MaskSpec(GRID, decoder="running_cell", decoder_ratio=0.5)
  s = sample_masks(jax.random.key(7), 8, spec)
  n = int(np.prod(GRID))
  enc, dec = map(np.asarray, to_boolean_masks(s, n))
  maps = running_cell_maps(GRID, 0.5)
  for b in range(8):
    # The decoder mask is one of the four running-cell maps...
    assert any(np.array_equal(dec[b], m) for m in maps)
    # ...and index sets are the reference's boolean selections, in order.
    np.testing.assert_array_equal(np.flatnonzero(~enc[b]), s.visible_idx[b])
    np.testing.assert_array_equal(np.flatnonzero(~dec[b]), s.target_idx[b])
    # Loss weights: encoder-masked among decoder-kept (bool_masked_pos[~decode_mask]).
    np.testing.assert_array_equal(enc[b][~dec[b]], np.asarray(s.weights[b]) > 0)


def test_patterns_are_drawn_uniformly():
  spec = MaskSpec(GRID)
  s = sample_masks(jax.random.key(0), 4000, spec)
  counts = np.unique(np.asarray(s.target_idx), axis=0, return_counts=True)[1]
  assert len(counts) == 4 and counts.min() > 850


def test_bad_specs_name_the_field():
  with pytest.raises(ValueError, match="config.masking.encoder_ratio"):
    MaskSpec((8, 14, 14), encoder_ratio=1.0)
  with pytest.raises(ValueError, match="even token grid"):
    MaskSpec((8, 7, 7))
  with pytest.raises(ValueError, match="decoder_ratio"):
    MaskSpec(GRID, decoder_ratio=0.1)


def test_loss_equals_reference_on_hand_built_example():
  """Reference: normalised-pixel target (unbiased std + 1e-6), weights = enc-masked ∩ dec-kept."""
  rng = np.random.default_rng(0)
  b, t, s, p = 2, 4, 32, 16
  video = rng.integers(0, 256, (b, t, s, s, 3)).astype(np.uint8)
  # Hand-built masks over the 8 tokens (2 x 2 x 2).
  enc = np.array([[1, 0, 1, 0, 1, 0, 1, 0], [0, 1, 1, 0, 0, 1, 1, 0]], bool)
  dec = np.array([[0, 1, 1, 0, 0, 1, 1, 0], [1, 0, 0, 1, 1, 0, 0, 1]], bool)
  tgt_idx = np.stack([np.flatnonzero(~d) for d in dec]).astype(np.int32)
  weights = np.stack([e[~d] for e, d in zip(enc, dec)]).astype(np.float32)
  pred = rng.normal(size=(b, tgt_idx.shape[1], 2 * p * p * 3)).astype(np.float32)

  # The reference's computation, in numpy, from the normalised float video.
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  normed = (video / 255.0 - mean) / std
  unnorm = normed * std + mean                      # [B, T, H, W, C]
  x = unnorm.reshape(b, t // 2, 2, s // p, p, s // p, p, 3).transpose(0, 1, 3, 5, 2, 4, 6, 7)
  x = x.reshape(b, -1, 2 * p * p, 3)                # 'b n (p0 p1 p2) c'
  x = (x - x.mean(-2, keepdims=True)) / (np.sqrt(x.var(-2, ddof=1, keepdims=True)) + 1e-6)
  labels = x.reshape(b, -1, 2 * p * p * 3)          # 'b n (p c)'
  labels = np.stack([labels[i][~dec[i]] for i in range(b)])
  per_token = ((pred - labels) ** 2).mean(-1)
  loss_mask = np.stack([enc[i][~dec[i]] for i in range(b)])
  ref = (per_token * loss_mask).sum() / loss_mask.sum()

  target = pixel_targets(jnp.asarray(video), jnp.asarray(tgt_idx), p)
  ours = weighted_mse(jnp.asarray(pred), target, jnp.asarray(weights))
  assert float(ours) == pytest.approx(ref, rel=1e-5)
