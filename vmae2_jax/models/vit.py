"""The ViT encoder, the pre-training model (encoder + decoder) and the classifier."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vmae2_jax.models import patching
from vmae2_jax.models.layers import BlockStack, Dense, LayerNorm, param
from vmae2_jax.models.options import ModelOptions
from vmae2_jax.models.posemb import sinusoid_table
from vmae2_jax.models.variants import ViTSize


class Encoder(nnx.Module):
  """Tubelet embedding + fixed sinusoid positions + pre-norm blocks.

  Only the requested tokens are embedded: cubes are gathered from the clip
  first and then projected, which gives the reference's numbers (embed all,
  then drop) at a fraction of the work.
  """

  def __init__(self, size: ViTSize, *, frames: int, image_size: int | tuple[int, int],
               opts: ModelOptions, rngs: nnx.Rngs, drop_path_rate: float = 0.0,
               final_norm: bool = True):
    self.size = size
    self.grid = patching.grid_shape(frames, image_size, size.patch)
    self.num_tokens = self.grid[0] * self.grid[1] * self.grid[2]
    cube = patching.TUBELET * size.patch * size.patch * 3
    # The reference's Conv3d keeps PyTorch's default init.
    self.patch_embed = Dense(cube, size.width, axes=("patch", "embed"), opts=opts,
                             rngs=rngs, init="torch_default")
    self.blocks = BlockStack(size.depth, size.width, size.heads, size.mlp_dim, opts=opts,
                             rngs=rngs, drop_path_rate=drop_path_rate)
    self.norm = LayerNorm(size.width, opts=opts) if final_norm else None
    self.dtype = opts.dtype
    self.pixel_mean, self.pixel_std = opts.pixel_mean, opts.pixel_std

  def embed(self, video, token_idx=None):
    """video uint8/float [B, T, H, W, 3] (0..255) -> tokens [B, M, D] with positions."""
    cubes = patching.patchify(video, self.size.patch)
    pos = jnp.asarray(sinusoid_table(self.num_tokens, self.size.width))
    if token_idx is not None:
      cubes = patching.gather_tokens(cubes, token_idx)
      pos = pos[token_idx]
    x = self.patch_embed(patching.normalize_cubes(cubes, self.pixel_mean, self.pixel_std))
    return x + pos.astype(x.dtype)

  def __call__(self, video, token_idx=None, *, key=None, deterministic=True):
    x = self.embed(video, token_idx)
    x = self.blocks(x, key=key, deterministic=deterministic)
    if self.norm is not None:
      x = self.norm(x)
    return x


class PretrainModel(nnx.Module):
  """Encoder on visible tokens -> encoder_to_decoder -> decoder -> pixel head."""

  def __init__(self, size: ViTSize, *, frames: int, image_size, opts: ModelOptions,
               rngs: nnx.Rngs, drop_path_rate: float = 0.0):
    self.size = size
    self.encoder = Encoder(size, frames=frames, image_size=image_size, opts=opts,
                           rngs=rngs, drop_path_rate=drop_path_rate)
    dd = size.decoder_width
    self.encoder_to_decoder = Dense(size.width, dd, axes=("embed", None), opts=opts,
                                    rngs=rngs, use_bias=False, init="torch_default")
    mt = jax.random.truncated_normal(rngs.params(), -1.0, 1.0, (dd,), opts.param_dtype) * 0.02
    self.mask_token = param(mt, ("embed",))
    # The reference gives the decoder the same rate: linspace(0, rate, decoder_depth).
    self.decoder = BlockStack(size.decoder_depth, dd, size.decoder_heads,
                              size.decoder_mlp_dim, opts=opts, rngs=rngs,
                              drop_path_rate=drop_path_rate)
    self.decoder_norm = LayerNorm(dd, opts=opts)
    cube = patching.TUBELET * size.patch * size.patch * 3
    self.decoder_head = Dense(dd, cube, axes=("embed", "patch"), opts=opts, rngs=rngs)
    self.num_tokens = self.encoder.num_tokens
    self.dtype = opts.dtype

  def __call__(self, video, visible_idx, target_idx, *, key=None, deterministic=True):
    """Predicts the normalised pixels of `target_idx` tokens: [B, N_dec, 2*p*p*3]."""
    enc_key = dec_key = None
    if key is not None:
      enc_key, dec_key = jax.random.split(key)
    x = self.encoder(video, visible_idx, key=enc_key, deterministic=deterministic)
    x = self.encoder_to_decoder(x)
    pos = jnp.asarray(sinusoid_table(self.num_tokens, self.size.decoder_width)).astype(self.dtype)
    vis = x + pos[visible_idx]
    masked = self.mask_token[...].astype(self.dtype) + pos[target_idx]
    h = jnp.concatenate([vis, masked], axis=1)
    n_dec = target_idx.shape[1]
    h = self.decoder(h, key=dec_key, deterministic=deterministic, num_outputs=n_dec)
    return self.decoder_head(self.decoder_norm(h))


class Classifier(nnx.Module):
  """Encoder on all tokens -> mean -> fc_norm -> dropout -> head (init scale 0.001)."""

  def __init__(self, size: ViTSize, num_classes: int, *, frames: int, image_size,
               opts: ModelOptions, rngs: nnx.Rngs, drop_path_rate: float = 0.0,
               head_dropout: float = 0.0, head_init_scale: float = 0.001):
    self.encoder = Encoder(size, frames=frames, image_size=image_size, opts=opts,
                           rngs=rngs, drop_path_rate=drop_path_rate, final_norm=False)
    self.fc_norm = LayerNorm(size.width, opts=opts)
    # num_classes 0: a published feature model (features() only), no head
    self.head = nnx.data(None)
    if num_classes:
      self.head = Dense(size.width, num_classes, axes=("embed", "classes"), opts=opts,
                        rngs=rngs, init="finetune")
      self.head.kernel[...] = self.head.kernel[...] * head_init_scale
      self.head.bias[...] = self.head.bias[...] * head_init_scale
    self.head_dropout = head_dropout

  def features(self, video, *, key=None, deterministic=True):
    """The pooled feature fc_norm(mean of tokens), [B, D] (used for extraction)."""
    x = self.encoder(video, key=key, deterministic=deterministic)
    return self.fc_norm(jnp.mean(x.astype(jnp.float32), axis=1))

  def __call__(self, video, *, key=None, deterministic=True):
    fkey = hkey = None
    if key is not None:
      fkey, hkey = jax.random.split(key)
    if self.head is None:
      raise ValueError("this classifier has no head (a feature model, num_classes 0): call "
                       "features(), or fine-tune it to add one")
    x = self.features(video, key=fkey, deterministic=deterministic)
    if not deterministic and self.head_dropout > 0 and hkey is not None:
      keep = 1.0 - self.head_dropout
      x = jnp.where(jax.random.bernoulli(hkey, keep, x.shape), x / keep, 0).astype(x.dtype)
    return self.head(x).astype(jnp.float32)
