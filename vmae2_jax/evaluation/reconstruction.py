"""A PNG grid of original / masked input / reconstruction frames for a few clips."""

from __future__ import annotations

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from vmae2_jax import paths
from vmae2_jax.data import make_train_iterator
from vmae2_jax.data.info import train_info
from vmae2_jax.data.pipelines import make_validation_iterator
from vmae2_jax.masking import MaskSpec, sample_masks
from vmae2_jax.models import get_variant, patching
from vmae2_jax.training import losses


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def reconstruct(graphdef, params, video, spec: MaskSpec, patch: int, key):
  """Returns (masked input, reconstruction) uint8 clips like `video` [B, T, H, W, 3].

  Predictions are per-cube normalised pixels; each is mapped back with the
  mean and std of the true cube (as the reference's visualisation does).
  Cubes the decoder did not predict show the original (visible) or grey.
  """
  b, t, h, w, _ = video.shape
  masks = sample_masks(key, b, spec)
  model = nnx.merge(graphdef, params)
  pred = model(jnp.asarray(video), masks.visible_idx, masks.target_idx)
  cubes = patching.patchify(jnp.asarray(video, jnp.float32) / 255.0, patch)
  n, c = cubes.shape[1:]
  mean, std = losses.cube_statistics(losses.channel_major(cubes))  # the loss's own numbers
  take = lambda x: patching.gather_tokens(x, masks.target_idx)
  recon_t = losses.channel_last(losses.channel_major(pred) * take(std) + take(mean))
  rows = jnp.arange(b)[:, None]
  visible = jnp.zeros((b, n), bool).at[rows, masks.visible_idx].set(True)
  masked_in = jnp.where(visible[..., None], cubes, 0.5)
  recon = masked_in.at[rows, masks.target_idx].set(
      jnp.where(visible[rows, masks.target_idx][..., None], cubes[rows, masks.target_idx],
                recon_t))
  to_clip = lambda x: jnp.clip(
      patching.unpatchify(x, t, (h, w), patch) * 255.0 + 0.5, 0, 255).astype(jnp.uint8)
  return to_clip(masked_in), to_clip(recon)


def showcase_clips(config, num_clips: int) -> tuple[np.ndarray, np.ndarray]:
  """(clips [n, T, H, W, 3] uint8, labels [n]): the training set's first videos in file
  order, centre view (the validation transform), those of
  config.reconstruction.first_classes first.

  Sources that are not one shard set (mixtures, TFDS, synthetic): the first clips of
  the training stream instead (labels -1).
  """
  d = config.data
  paths = [d.train_path] if d.train_path else [s["path"] for s in d.get("sources", ()) or ()]
  if d.source != "shards" or len(paths) != 1:
    batch = next(make_train_iterator(config, process_index=0, process_count=1,
                                     seed=config.seed))["video"]
    video = batch[::d.num_sample][:num_clips]
    return video, np.full(len(video), -1)
  first = tuple(config.reconstruction.get("first_classes", ()) or ())
  names = list(train_info(config).class_names or ()) if first else []
  wanted = {names.index(n) for n in first if n in names}
  c = config.copy_and_resolve_references()
  c.data.val_path = paths[0]
  c.eval.batch_size = max(num_clips, 1)
  preferred, others = [], []
  for batch in make_validation_iterator(c, process_index=0, process_count=1):
    for clip, label, vid in zip(batch["video"], batch["label"], batch["video_id"]):
      if vid >= 0:
        (preferred if int(label) in wanted else others).append((clip, int(label)))
    if len(preferred) >= num_clips or (not wanted and len(others) >= num_clips):
      break
  chosen = (preferred + others)[:num_clips]
  return np.stack([c for c, _ in chosen]), np.asarray([l for _, l in chosen])


def write_reconstruction_grid(config, graphdef, params, path: str, num_clips: int = 3,
                              frames_shown: int = 4, seed: int = 1234, video=None) -> str:
  """Rows: per clip, original / masked input / reconstruction; columns: frames."""
  d = config.data
  size = get_variant(config.model.variant)
  # Decoder masking off for the picture: every encoder-hidden cube is predicted.
  spec = MaskSpec.from_config(config.masking, patching.grid_shape(d.frames, d.image_size,
                                                                  size.patch))
  spec = MaskSpec(spec.grid, spec.encoder, spec.encoder_ratio, decoder="none")
  if video is None:
    video, _ = showcase_clips(config, num_clips)
  num_clips = len(video)
  masked, recon = map(np.asarray, reconstruct(graphdef, params, jnp.asarray(video), spec,
                                              size.patch, jax.random.key(seed)))
  frame_ids = np.linspace(0, d.frames - 1, frames_shown).round().astype(int)
  rows = []
  for i in range(num_clips):
    for clip in (video[i], masked[i], recon[i]):
      rows.append(np.concatenate([clip[f] for f in frame_ids], axis=1))
  grid = np.concatenate(rows, axis=0)
  zoom = max(1, 192 // max(video.shape[2:4]))  # small demo frames: enlarge, keep pixels sharp
  grid = grid.repeat(zoom, axis=0).repeat(zoom, axis=1)
  png = io.BytesIO()
  Image.fromarray(grid).save(png, format="PNG")
  paths.write_bytes(path, png.getvalue())  # a local file or a bucket object
  return path
