"""A forward pass in the reference's conventions, for people checking ports.

The reference takes ImageNet-normalised float video [B, 3, T, H, W] and boolean
masks (1 = masked); our models take 0..255 channel-last pixels and index sets.
This path feeds the normalised pixels straight into the patch embedding (no
round trip through 0..255), and turns masks into ascending index sets, which is
the order the reference's boolean indexing produces.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from vmae2_jax.models import patching
from vmae2_jax.models.posemb import sinusoid_table
from vmae2_jax.models.vit import Classifier, Encoder, PretrainModel


def _to_numpy(x) -> np.ndarray:
  if hasattr(x, "detach"):  # a torch tensor; no torch import needed
    x = x.detach().cpu().numpy()
  return np.asarray(x)


def mask_to_indices(mask: np.ndarray, keep: bool) -> np.ndarray:
  """[B, N] boolean -> [B, M] ascending indices where mask == keep (same M in every row)."""
  mask = np.asarray(mask, bool)
  counts = (mask == keep).sum(axis=1)
  if len(set(counts.tolist())) != 1:
    raise ValueError(f"every row of a mask must select the same number of tokens; got {counts}")
  idx = np.stack([np.nonzero(row == keep)[0] for row in mask])
  return idx.astype(np.int32).reshape(mask.shape[0], int(counts[0]))


def _embed_normalised(encoder: Encoder, video, token_idx):
  """Encoder.embed for already-normalised pixels [B, T, H, W, 3]."""
  cubes = patching.patchify(video, encoder.size.patch)
  pos = jnp.asarray(sinusoid_table(encoder.num_tokens, encoder.size.width))
  if token_idx is not None:
    cubes = patching.gather_tokens(cubes, token_idx)
    pos = pos[token_idx]
  x = encoder.patch_embed(cubes)
  return x + pos.astype(x.dtype)


def _encode(encoder: Encoder, video, token_idx):
  x = encoder.blocks(_embed_normalised(encoder, video, token_idx))
  return encoder.norm(x) if encoder.norm is not None else x


@nnx.jit
def _pretrain_forward(model: PretrainModel, video, visible_idx, target_idx):
  x = model.encoder_to_decoder(_encode(model.encoder, video, visible_idx))
  pos = jnp.asarray(sinusoid_table(model.num_tokens, model.size.decoder_width)).astype(x.dtype)
  vis = x + pos[visible_idx]
  masked = model.mask_token[...].astype(x.dtype) + pos[target_idx]
  h = model.decoder(jnp.concatenate([vis, masked], axis=1))
  return model.decoder_head(model.decoder_norm(h[:, -target_idx.shape[1]:]))


@nnx.jit
def _classifier_forward(model: Classifier, video):
  x = _encode(model.encoder, video, None)
  pooled = model.fc_norm(jnp.mean(x.astype(jnp.float32), axis=1))
  if model.head is None:  # a feature model: what OpenGVLab's VideoMAEv2 returns
    return pooled.astype(jnp.float32)
  return model.head(pooled).astype(jnp.float32)


@nnx.jit
def _encoder_forward(model: Encoder, video, visible_idx):
  return _encode(model, video, visible_idx)


def reference_forward(model: nnx.Module, video, encoder_mask=None, decoder_mask=None
                      ) -> np.ndarray:
  """Runs `model` as the reference would, returning numpy in the reference's order.

  Args:
    model: a PretrainModel, Classifier or Encoder (e.g. from convert.load).
    video: [B, 3, T, H, W] float ImageNet-normalised (numpy, jax or torch).
    encoder_mask: [B, N] bool, 1 = hidden from the encoder (required for a
      PretrainModel, optional for an Encoder, not accepted by a Classifier).
    decoder_mask: [B, N] bool in the reference's sense, 1 = NOT reconstructed;
      None reconstructs exactly the encoder-masked tokens (VideoMAE v1).

  Returns:
    PretrainModel: predictions [B, N_dec, 3*2*p*p] for the decoder-kept tokens
      in ascending token order, each in (t, h, w, c) order (normalised pixels).
    Classifier: logits [B, classes] (eval mode: no dropout, no drop path); for a
      feature model (no head) the pooled features fc_norm(mean of tokens) [B, D].
    Encoder: tokens [B, N_visible, D] after the final norm if it has one.
  """
  video = _to_numpy(video).astype(np.float32)
  if video.ndim != 5 or video.shape[1] != 3:
    raise ValueError(f"video must be [B, 3, T, H, W]; got {video.shape}")
  clip = jnp.asarray(video.transpose(0, 2, 3, 4, 1))
  encoder = model if isinstance(model, Encoder) else getattr(model, "encoder", None)
  if encoder is not None:
    grid = patching.grid_shape(video.shape[2], video.shape[3:5], encoder.size.patch)
    if tuple(grid) != tuple(encoder.grid):
      raise ValueError(f"video {video.shape} makes a token grid {grid}; the model was built for "
                       f"{tuple(encoder.grid)} (rebuild it with other frames/image_size)")
  if isinstance(model, PretrainModel):
    if encoder_mask is None:
      raise ValueError("a pre-training model needs encoder_mask [B, N] (1 = masked)")
    enc = _to_numpy(encoder_mask).astype(bool)
    _check_tokens(enc, model.num_tokens, "encoder_mask")
    visible = mask_to_indices(enc, keep=False)
    if decoder_mask is None:
      target = mask_to_indices(enc, keep=True)
    else:
      dec = _to_numpy(decoder_mask).astype(bool)
      _check_tokens(dec, model.num_tokens, "decoder_mask")
      target = mask_to_indices(dec, keep=False)
    return np.asarray(_pretrain_forward(model, clip, jnp.asarray(visible), jnp.asarray(target)))
  if decoder_mask is not None:
    raise ValueError(f"decoder_mask applies to a pre-training model, not {type(model).__name__}")
  if isinstance(model, Classifier):
    if encoder_mask is not None:
      raise ValueError("the reference classifier takes no mask")
    return np.asarray(_classifier_forward(model, clip))
  if isinstance(model, Encoder):
    n = model.num_tokens
    if encoder_mask is None:
      visible = np.broadcast_to(np.arange(n, dtype=np.int32), (video.shape[0], n))
    else:
      enc = _to_numpy(encoder_mask).astype(bool)
      _check_tokens(enc, n, "encoder_mask")
      visible = mask_to_indices(enc, keep=False)
    return np.asarray(_encoder_forward(model, clip, jnp.asarray(visible)))
  raise TypeError(f"reference_forward does not know {type(model).__name__}")


def _check_tokens(mask: np.ndarray, n: int, name: str) -> None:
  if mask.ndim != 2 or mask.shape[1] != n:
    raise ValueError(f"{name} must be [B, {n}] for this model's token grid; got {mask.shape}")
