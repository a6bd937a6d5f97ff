"""Kinetics class lists and the 710 -> 400/600/700 head label maps (package data).

label_710toX.json holds, for each class of Kinetics-X in its class-index order,
the row of the 710-way (K710, "LabeledHybrid") head holding that class, so
head_X = head_710[label_710toX] for weights and biases.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

from vmae2_jax import paths

DATASETS = ("k400", "k600", "k700", "k710")
LABEL_MAPS = ("710to400", "710to600", "710to700")


def _read(name: str) -> str:
  return resources.files("vmae2_jax.resources").joinpath("kinetics", name).read_text("utf-8")


@functools.lru_cache(maxsize=None)
def class_names(dataset: str) -> tuple[str, ...]:
  """Class names of "k400" | "k600" | "k700" | "k710" in class-index order."""
  if dataset not in DATASETS:
    raise ValueError(f"dataset={dataset!r} is not one of {DATASETS}")
  names = tuple(line.strip() for line in _read(f"label_map_{dataset}.txt").splitlines()
                if line.strip())
  expected = int(dataset[1:])
  if len(names) != expected:
    raise ValueError(f"label_map_{dataset}.txt has {len(names)} names, expected {expected}")
  return names


@functools.lru_cache(maxsize=None)
def identical_label_merge() -> dict[str, str]:
  """The reference's older Kinetics class names -> the K710 name of the same class."""
  return dict(json.loads(_read("k710_identical_label_merge.json")))


@functools.lru_cache(maxsize=None)
def _packaged_map(name: str) -> tuple[int, ...]:
  return tuple(int(i) for i in json.loads(_read(f"label_{name}.json")))


def label_map(spec: str) -> np.ndarray:
  """Row indices into a larger head: a packaged name ("710to400") or a JSON list file."""
  if spec in LABEL_MAPS:
    rows = np.asarray(_packaged_map(spec), np.int64)
  elif paths.exists(spec):
    rows = np.asarray(json.loads(paths.read_text(spec)), np.int64)
  else:
    raise ValueError(f"label map {spec!r} is neither one of {LABEL_MAPS} nor a JSON file")
  if rows.ndim != 1 or rows.size == 0:
    raise ValueError(f"label map {spec!r} must be a non-empty JSON list of row indices")
  if len(set(rows.tolist())) != rows.size:
    raise ValueError(f"label map {spec!r} repeats a row index")
  return rows


def auto_label_map(src_classes: int, dst_classes: int) -> str | None:
  """The packaged map for a K710 head going to a 400/600/700-way one, else None."""
  name = f"{src_classes}to{dst_classes}"
  return name if name in LABEL_MAPS else None
