"""A PNG grid (matplotlib) of original / masked input / reconstruction frames for a few clips."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from vmae2_jax.data import make_train_iterator
from vmae2_jax.data.info import train_info
from vmae2_jax.data.pipelines import make_validation_iterator
from vmae2_jax.evaluation.figures import new_figure, save_png
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


ROW_NAMES = ("original", "masked input", "reconstruction")
CELL_PX = 150  # one shown frame, in pixels


def draw_grid(video: np.ndarray, masked: np.ndarray, recon: np.ndarray,
              frame_ids: Sequence[int], title: str = "") -> Figure:
  """Per clip three labelled rows (original / masked input / reconstruction), one column
  per shown frame; uint8 [N, T, H, W, 3] arrays."""
  rows, cols = 3 * len(video), len(frame_ids)
  fig = new_figure(CELL_PX * cols + 110, CELL_PX * rows + (40 if title else 10))
  axes = fig.subplots(rows, cols, squeeze=False)
  for i, clips in enumerate(zip(video, masked, recon)):
    for r, (clip, row_name) in enumerate(zip(clips, ROW_NAMES)):
      for c, f in enumerate(frame_ids):
        ax = axes[3 * i + r, c]
        ax.imshow(clip[f], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if 3 * i + r == 0:
          ax.set_title(f"frame {f}", fontsize=9)
        if c == 0:
          ax.set_ylabel(f"clip {i + 1}\n{row_name}" if r == 0 else row_name, fontsize=9)
  if title:
    fig.suptitle(title, fontsize=11)
  return fig


def write_reconstruction_grid(config, graphdef, params, path: str, num_clips: int = 3,
                              frames_shown: int = 4, seed: int = 1234, video=None,
                              title: str = "") -> str:
  """The picture (`draw_grid`) for the run's showcase clips, written to `path`."""
  d = config.data
  size = get_variant(config.model.variant)
  # Decoder masking off for the picture: every encoder-hidden cube is predicted.
  spec = MaskSpec.from_config(config.masking, patching.grid_shape(d.frames, d.image_size,
                                                                  size.patch))
  spec = MaskSpec(spec.grid, spec.encoder, spec.encoder_ratio, decoder="none")
  if video is None:
    video, _ = showcase_clips(config, num_clips)
  masked, recon = map(np.asarray, reconstruct(graphdef, params, jnp.asarray(video), spec,
                                              size.patch, jax.random.key(seed)))
  frame_ids = np.linspace(0, d.frames - 1, frames_shown).round().astype(int)
  return save_png(draw_grid(np.asarray(video), masked, recon, frame_ids, title), path)
