"""Which clips the reconstruction picture shows: the training set's first videos in file
order, centre view, the configured classes (the demo's real footage) first."""

import numpy as np

from configs import demo
from vmae2_jax.data.info import train_info
from vmae2_jax.evaluation.reconstruction import draw_grid, showcase_clips


def test_demo_picture_shows_real_footage_first():
  config = demo.get_config()
  names = train_info(config).class_names
  natural = names.index("natural")
  clips, labels = showcase_clips(config, 3)
  assert clips.shape == (3, config.data.frames, config.data.image_size, config.data.image_size,
                         3) and clips.dtype == np.uint8
  assert (labels == natural).all()
  config.reconstruction.first_classes = ()
  plain, plain_labels = showcase_clips(config, 3)
  assert not (plain_labels == natural).all()  # file order starts with generated clips
  again, _ = showcase_clips(config, 3)
  np.testing.assert_array_equal(plain, again)  # no shuffling: the same picture every run


def test_grid_labels_rows_and_frames_and_shows_the_clips_pixels():
  rng = np.random.default_rng(0)
  video, masked, recon = (rng.integers(0, 256, (2, 8, 16, 16, 3), dtype=np.uint8)
                          for _ in range(3))
  fig = draw_grid(video, masked, recon, [0, 3, 7], "demo_pretrain, step 300")
  assert fig.get_suptitle() == "demo_pretrain, step 300"
  axes = np.asarray(fig.axes).reshape(6, 3)
  assert [ax.get_ylabel() for ax in axes[:, 0]] == [
      "clip 1\noriginal", "masked input", "reconstruction",
      "clip 2\noriginal", "masked input", "reconstruction"]
  assert [ax.get_title() for ax in axes[0]] == ["frame 0", "frame 3", "frame 7"]
  for i, clips in enumerate((video, masked, recon)):
    np.testing.assert_array_equal(axes[3 + i, 2].images[0].get_array(), clips[1, 7])
