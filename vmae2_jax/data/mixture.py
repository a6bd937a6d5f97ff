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
from typing import Any, Callable, Sequence

import grain


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  path: str
  weight: float = 1.0
  sampling_rate: int = 4


def parse_sources(sources: Sequence[Any], default_rate: int) -> list[SourceSpec]:
  """config.data.sources entries (dicts, ConfigDicts or paths) -> SourceSpecs."""
  specs = []
  for s in sources:
    if isinstance(s, str):
      specs.append(SourceSpec(s, 1.0, default_rate))
      continue
    get = s.get if hasattr(s, "get") else (lambda k, d=None: getattr(s, k, d))
    specs.append(SourceSpec(str(get("path")), float(get("weight", 1.0)),
                            int(get("sampling_rate", default_rate) or default_rate)))
  if not specs:
    raise ValueError("config.data.sources is empty: name at least one shard set")
  if any(s.weight <= 0 for s in specs):
    raise ValueError(f"mixture weights must be positive: {[s.weight for s in specs]}")
  return specs


def host_slice(ds: grain.MapDataset, process_index: int, process_count: int,
               name: str) -> grain.MapDataset:
  """This process's videos: every process_count-th one, starting at process_index."""
  if len(ds) < process_count:
    raise ValueError(f"{name}: {len(ds)} videos cannot feed {process_count} processes")
  return ds[process_index::process_count]


def mixture(specs: Sequence[SourceSpec], make_source: Callable[[str], Any],
            make_transform: Callable[[SourceSpec], Any], *, seed: int, process_index: int,
            process_count: int, shuffle: bool = True) -> grain.MapDataset:
  """An endless MapDataset of transformed elements mixed by weight."""
  parts = []
  for k, spec in enumerate(specs):
    ds = host_slice(grain.MapDataset.source(make_source(spec.path)), process_index,
                    process_count, spec.path)
    if shuffle:
      ds = ds.shuffle(seed=seed * 1000 + k)
    ds = ds.repeat(None)
    ds = ds.random_map(make_transform(spec), seed=seed * 1000 + 500 + k)
    parts.append(ds)
  if len(parts) == 1:
    return parts[0]
  return grain.MapDataset.mix(parts, weights=[s.weight for s in specs])
