"""Which clips the reconstruction picture shows: the training set's first videos in file
order, centre view, the configured classes (the demo's real footage) first."""

import numpy as np

from configs import demo
from vmae2_jax.data.info import train_info
from vmae2_jax.evaluation.reconstruction import showcase_clips


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
