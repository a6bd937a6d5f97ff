"""Size and classes of the training set, from manifests only (no record is read)."""

from __future__ import annotations

import dataclasses

from vmae2_jax import paths
from vmae2_jax.data import mixture, shards


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about its training set before reading it."""
  num_videos: int
  num_classes: int
  class_names: tuple[str, ...] | None


def train_info(config) -> DatasetInfo:
  """The training set of ``config``: data.train_path, data.sources, TFDS or synthetic.

  Shards: videos summed over every source's manifest, classes from the first
  source's manifest. TFDS: the train split's length and its label feature's
  names. Synthetic: no classes. config.data.class_names (a file, one name a
  line) overrides the names and must list num_classes of them.
  """
  d = config.data
  if d.source == "synthetic":
    info = DatasetInfo(num_videos=int(d.num_videos), num_classes=0, class_names=None)
  elif d.source == "tfds":
    info = _tfds_info(config)
  elif d.source == "shards":
    info = _shards_info(mixture.train_specs(config))
  else:
    raise ValueError(f"config.data.source={d.source!r}: expected 'shards', 'tfds' or "
                     "'synthetic'")
  if d.class_names:
    names = read_class_names(d.class_names)
    if len(names) != info.num_classes:
      raise ValueError(f"config.data.class_names={d.class_names!r} lists {len(names)} names; "
                       f"the training set has {info.num_classes} classes")
    info = dataclasses.replace(info, class_names=names)
  return info


def label_classes(config) -> tuple[int, str]:
  """(K, what set it): the class count every label must fall below; K = 0 when unknown.

  config.model.num_classes, or when that is 0 the training set's manifest count
  (as the classifier's head is sized). Synthetic data or no training set: 0.
  """
  n = int(config.model.num_classes)
  if n > 0:
    return n, f"config.model.num_classes={n}"
  d = config.data
  if d.source == "synthetic" or not (d.train_path or d.sources or d.source == "tfds"):
    return 0, "config.model.num_classes=0 and no training set"
  try:
    n = train_info(config).num_classes
  except FileNotFoundError:
    return 0, "config.model.num_classes=0 and no training manifest"
  return n, f"config.model.num_classes=0, so the training set's {n} classes"


def read_class_names(path: str) -> tuple[str, ...]:
  """config.data.class_names: one name a line, index = line order (trailing blank lines ok).

  The format of data_prep.build_shards --labels, so the same file serves both.
  """
  field = f"config.data.class_names={path!r}"
  try:
    with paths.open_file(path, encoding="utf-8-sig") as f:
      lines = [line.strip() for line in f.read().splitlines()]
  except OSError as e:
    raise ValueError(f"{field}: cannot read it ({e})") from e
  while lines and not lines[-1]:
    lines.pop()
  for n, name in enumerate(lines, 1):
    if not name:
      raise ValueError(f"{field}: line {n} is empty (a class's index is its line number - 1)")
  return tuple(lines)


def _shards_info(specs: list[mixture.SourceSpec]) -> DatasetInfo:
  manifests = [shards.load_manifest(s.path) for s in specs]
  num_videos = sum(s["num_records"] for m in manifests for s in m["shards"])
  classes = manifests[0].get("classes", {})
  names = classes.get("names")
  num_classes = int(classes.get("num_classes", 0))
  if names is not None and len(names) != num_classes:
    raise ValueError(f"{shards.resolve_manifest(specs[0].path)}: {len(names)} class names "
                     f"for {num_classes} classes")
  return DatasetInfo(num_videos=num_videos, num_classes=num_classes,
                     class_names=tuple(names) if names else None)


def _tfds_info(config) -> DatasetInfo:
  from vmae2_jax.data import tfds_source
  source = tfds_source.TfdsSource.from_config(config, "train")
  names = source.class_names
  return DatasetInfo(num_videos=len(source), num_classes=len(names) if names else 0,
                     class_names=names)
