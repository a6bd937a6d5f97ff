"""Weighted mixtures of shard sets, each with its own frame sampling stride.

The pre-training recipe (UnlabeledHybrid) mixes Kinetics, Something-Something
(stride 2), AVA, WebVid and others. Each source becomes an endless, per-epoch
reshuffled Grain MapDataset over this host's slice of its videos, already
mapped to clips at its own stride; Grain's ``MapDataset.mix`` then interleaves
them in proportion to the weights. Element i of the mixture is a pure function
of (seed, i), which is what makes the iterator resumable.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Sequence

import grain
import numpy as np

# Up to this many videos per host a cached NumPy permutation per epoch shuffles;
# Grain's index_shuffle costs milliseconds per element on small sets (cycle walking).
_PERMUTATION_MAX = 1 << 24


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """One shard set of a training mixture: where, how often, at which frame stride."""
  path: str
  weight: float
  sampling_rate: int


_ENTRY_KEYS = ("path", "weight", "sampling_rate")


def _entry(s: Any, i: int, default_rate: int) -> SourceSpec:
  """config.data.sources[i] -> SourceSpec; omitted: weight 1, sampling_rate data.sampling_rate."""
  field = f"config.data.sources[{i}]"
  if isinstance(s, str):
    return SourceSpec(s, 1.0, int(default_rate))
  entry = dict(s.items()) if hasattr(s, "items") else dict(vars(s))
  unknown = sorted(set(entry) - set(_ENTRY_KEYS))
  if unknown:
    raise ValueError(f"{field} has unknown keys {unknown}; allowed: {list(_ENTRY_KEYS)}")
  if not entry.get("path"):
    raise ValueError(f"{field} names no path: {entry}")
  rate = entry.get("sampling_rate") or default_rate
  return SourceSpec(str(entry["path"]), float(entry.get("weight", 1.0)), int(rate))


def parse_sources(sources: Sequence[Any], default_rate: int) -> list[SourceSpec]:
  """config.data.sources entries (dicts, ConfigDicts or paths) -> SourceSpecs."""
  specs = [_entry(s, i, default_rate) for i, s in enumerate(sources)]
  if not specs:
    raise ValueError("config.data.sources is empty: name at least one shard set")
  if any(s.weight <= 0 for s in specs):
    raise ValueError(f"config.data.sources: weights must be positive, got "
                     f"{[s.weight for s in specs]}")
  return specs


def train_specs(config) -> list[SourceSpec]:
  """The training set of ``config`` as SourceSpecs: data.train_path or data.sources.

  With data.source == "tfds" the set is tfds_name's train split (paths unused).
  """
  d = config.data
  if d.source == "tfds":
    return [SourceSpec(f"tfds:{d.tfds_name}", 1.0, int(d.sampling_rate))]
  if d.train_path and d.sources:
    raise ValueError("config.data.train_path and config.data.sources are both set: name the "
                     "training shards in one of them")
  if d.train_path:
    return [SourceSpec(str(d.train_path), 1.0, int(d.sampling_rate))]
  if not d.sources:
    raise ValueError("config.data.train_path and config.data.sources are both empty: name the "
                     "training shard set(s)")
  return parse_sources(d.sources, d.sampling_rate)


def host_slice(ds: grain.MapDataset, process_index: int, process_count: int,
               name: str) -> grain.MapDataset:
  """This process's videos: every process_count-th one, starting at process_index."""
  if len(ds) < process_count:
    raise ValueError(f"{name}: {len(ds)} videos cannot feed {process_count} processes")
  return ds[process_index::process_count]


class EpochShuffle:
  """Endless passes over one host's slice of a source, reshuffled every epoch.

  Item i is video perm_e[i mod n] of this host's slice, e = i // n, with perm_e
  drawn from (seed, e): a pure function of the index, so resumable.
  """

  def __init__(self, source, *, seed: int, process_index: int, process_count: int,
               shuffle: bool = True):
    self.source, self.seed, self.shuffle = source, seed, shuffle
    self.indices = np.arange(process_index, len(source), process_count, dtype=np.int64)
    if not len(self.indices):
      raise ValueError(f"{source!r}: {len(source)} videos cannot feed {process_count} processes")
    self._cache = (-1, None)

  def __len__(self) -> int:
    return sys.maxsize

  def _perm(self, epoch: int) -> np.ndarray:
    cache = self._cache  # one tuple read: safe under Grain's reader threads
    if cache[0] != epoch:
      perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))
      cache = (epoch, perm.astype(np.int32))
      self._cache = cache
    return cache[1]

  def __getitem__(self, i: int):
    epoch, pos = divmod(int(i), len(self.indices))
    j = int(self._perm(epoch)[pos]) if self.shuffle else pos
    return self.source[int(self.indices[j])]


def mixture(specs: Sequence[SourceSpec], make_source: Callable[[str], Any],
            make_transform: Callable[[SourceSpec], Any], *, seed: int, process_index: int,
            process_count: int, shuffle: bool = True) -> grain.MapDataset:
  """An endless MapDataset of transformed elements mixed by weight."""
  parts = []
  base = (int(seed) * 1000) % (1 << 31)  # non-negative seeds for NumPy and Grain
  for k, spec in enumerate(specs):
    source = make_source(spec.path)
    if -(-len(source) // process_count) <= _PERMUTATION_MAX:
      ds = grain.MapDataset.source(EpochShuffle(source, seed=base + k, shuffle=shuffle,
                                                process_index=process_index,
                                                process_count=process_count))
    else:
      ds = host_slice(grain.MapDataset.source(source), process_index, process_count, spec.path)
      if shuffle:
        ds = ds.shuffle(seed=base + k)
      ds = ds.repeat(None)
    ds = ds.random_map(make_transform(spec), seed=base + 500 + k)
    parts.append(ds)
  if len(parts) == 1:
    return parts[0]
  return grain.MapDataset.mix(parts, weights=[s.weight for s in specs])
