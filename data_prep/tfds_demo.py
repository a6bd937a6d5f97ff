"""A small TensorFlow Datasets data set made by tfds itself from the demo videos.

  python -m data_prep.tfds_demo --data_dir=DIR [--config=video|frames] \
      [--videos_per_split=6] [--frames=16]

Builds ``vmae2_demo_videos/<config>`` with ``tfds.core.GeneratorBasedBuilder``
in the array_record file format (what ``tfds.data_source`` reads), from the
embedded demo shards (vmae2_jax/resources/demo: real and generated footage in
5 classes, frames already JPEG-encoded, which tfds stores as they are). Splits
``train`` and ``test``, as UCF101 has. Configs:

  video   features {"video": tfds.features.Video(encoding_format="jpeg"),
          "label": ClassLabel} -- exactly what TFDS's ucf101 declares. With
          tensorflow-datasets 4.9.x, *constructing* a ``tfds.features.Video``
          calls ``tf.dtypes.as_dtype``, so preparing this config needs
          TensorFlow. tests/data/tfds/ holds a copy prepared once with
          TensorFlow by this script (see tests/data/tfds/README.md).
  frames  features {"video": Sequence(Image(encoding_format="jpeg")), "label":
          ClassLabel}: stored the same way (one JPEG per frame under the key
          "video"); preparing it needs no TensorFlow.

Both read back through ``tfds.data_source`` without TensorFlow with this
project's reader (vmae2_jax/data/tfds_source.py).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

NAME = "vmae2_demo_videos"
CONFIGS = ("video", "frames")


def builder_class():
  """The GeneratorBasedBuilder (tensorflow_datasets is imported only here)."""
  import tensorflow_datasets as tfds

  class Vmae2DemoVideos(tfds.core.GeneratorBasedBuilder):
    """Demo clips of this project (5 motion classes), JPEG frames + class label."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "From the embedded demo shards."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="video", description="tfds.features.Video, as ucf101"),
        tfds.core.BuilderConfig(name="frames",
                                description="Sequence(Image(jpeg)): no TensorFlow to prepare"),
    ]

    def __init__(self, *, videos_per_split: int = 6, frames: int = 16, **kwargs):
      self._videos_per_split, self._frames = int(videos_per_split), int(frames)
      super().__init__(**kwargs)

    def _info(self):
      from vmae2_jax.data import shards
      names = shards.load_manifest(shards.demo_path("train"))["classes"]["names"]
      if self.builder_config.name == "video":
        video = tfds.features.Video(shape=(None, None, None, 3), encoding_format="jpeg")
      else:
        video = tfds.features.Sequence(
            tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"))
      return self.dataset_info_from_configs(
          description=__doc__.split("\n\n")[0],
          features=tfds.features.FeaturesDict({
              "video": video, "label": tfds.features.ClassLabel(names=names)}),
          supervised_keys=("video", "label"))

    def _split_generators(self, dl_manager):
      del dl_manager  # nothing to download
      return {"train": self._generate_examples("train"),
              "test": self._generate_examples("val")}

    def _generate_examples(self, demo_split):
      for key, frames, label in demo_examples(demo_split, self._videos_per_split,
                                              self._frames):
        yield key, {"video": frames, "label": label}

  return Vmae2DemoVideos


def demo_examples(demo_split: str, videos: int, frames: int):
  """(key, JPEG bytes of the first ``frames`` frames, label) of the first videos of
  each class in turn from the embedded demo split ("train" or "val")."""
  from vmae2_jax.data import shards
  src = shards.ShardSource(shards.demo_path(demo_split))
  records = [shards.parse_record(*src[i]) for i in range(len(src))]
  by_class: dict[int, list] = {}
  for r in records:
    by_class.setdefault(r.label, []).append(r)
  order = [r for k in range(max(len(v) for v in by_class.values()))
           for c in sorted(by_class) for r in by_class[c][k:k + 1]]
  for r in order[:videos]:
    n = min(frames, r.num_frames)
    yield (f"{demo_split}-{r.header['name']}", [r.frame_bytes(i) for i in range(n)],
           int(r.label))


def prepare(data_dir: str, config: str = "video", videos_per_split: int = 6,
            frames: int = 16):
  """Prepares vmae2_demo_videos/<config> under data_dir (array_record); the builder."""
  builder = builder_class()(config=config, data_dir=data_dir, file_format="array_record",
                            videos_per_split=videos_per_split, frames=frames)
  builder.download_and_prepare()
  return builder


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data_dir", required=True)
  p.add_argument("--config", default="video", choices=CONFIGS)
  p.add_argument("--videos_per_split", type=int, default=6)
  p.add_argument("--frames", type=int, default=16, help="frames kept per video")
  a = p.parse_args(argv)
  b = prepare(a.data_dir, a.config, a.videos_per_split, a.frames)
  print(f"prepared {b.info.full_name} in {b.data_dir}: "
        + ", ".join(f"{k} {v.num_examples}" for k, v in b.info.splits.items()))
  return 0


if __name__ == "__main__":
  # tfds locates a builder's files through its module: run it from the package module.
  from data_prep import tfds_demo
  sys.exit(tfds_demo.main())
