"""Every test view's class scores, kept and written beside predictions.csv.

The reference writes each view's logits to a text file per GPU so users can
re-merge scores and ensemble models. Here the test writes ``views.npz`` (one
process) or ``views-<i>-of-<n>.npz`` (one part per process, each holding its
own videos) in the report folder, with:

  video_ids int64 [V], names str [V], labels int64 [V] (-1 = unknown)
  scores    float32 [V, N, K]: log-softmax of each view's logits (softmax of
            these is the view's probabilities, so merging is unchanged);
            view k is temporal view k // num_crop, crop k % num_crop; NaN for
            a view that never arrived
  class_names str [K] (empty when the run has none), num_segment, num_crop

`read_views` reads a report folder back (all parts, checked), for
`vmae2_jax.evaluation.merge`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from etils import epath

FILE = "views.npz"


def part_name(process_index: int, process_count: int) -> str:
  return FILE if process_count == 1 else (
      f"views-{process_index:05d}-of-{process_count:05d}.npz")


class ViewStore:
  """Collects per-view score rows; a repeated (video, view) keeps the first, as the merger."""

  def __init__(self, num_views: int):
    self.num_views = int(num_views)
    self._rows: dict[int, dict[int, np.ndarray]] = {}
    self._meta: dict[int, tuple[str, int]] = {}

  def add(self, video_id, view, label, scores, names: Sequence) -> None:
    for i, vid in enumerate(np.asarray(video_id).reshape(-1)):
      vid = int(vid)
      if vid < 0:
        continue
      views = self._rows.setdefault(vid, {})
      views.setdefault(int(view[i]), np.asarray(scores[i], np.float32))
      name = names[i].decode("utf-8") if isinstance(names[i], bytes) else str(names[i])
      known = self._meta.get(vid, (name, -1))
      self._meta[vid] = (known[0], int(label[i]) if int(label[i]) >= 0 else known[1])

  def arrays(self) -> dict[str, np.ndarray]:
    ids = sorted(self._rows)
    k = next((len(r) for v in self._rows.values() for r in v.values()), 0)
    scores = np.full((len(ids), self.num_views, k), np.nan, np.float32)
    for i, vid in enumerate(ids):
      for view, row in self._rows[vid].items():
        if 0 <= view < self.num_views:
          scores[i, view] = row
    return {"video_ids": np.asarray(ids, np.int64),
            "names": np.asarray([self._meta[v][0] for v in ids], dtype=str),
            "labels": np.asarray([self._meta[v][1] for v in ids], np.int64),
            "scores": scores}


def write_views(directory, store: ViewStore, *, class_names: Sequence[str] | None,
                num_segment: int, num_crop: int, process_index: int = 0,
                process_count: int = 1) -> epath.Path:
  """Writes this process's part under a temporary name, then moves it into place.

  Process 0 also removes views files of another process count (an earlier test
  of this step on another layout), so the folder always holds one complete set.
  """
  directory = epath.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / part_name(process_index, process_count)
  if process_index == 0:
    current = {part_name(i, process_count) for i in range(process_count)}
    for old in [*directory.glob("views-*-of-*.npz"), directory / FILE]:
      if old.name not in current and old.exists():
        old.unlink()
  tmp = directory / f".{path.name}.tmp"
  with tmp.open("wb") as f:
    np.savez(f, **store.arrays(), class_names=np.asarray(list(class_names or ()), dtype=str),
             num_segment=np.int64(num_segment), num_crop=np.int64(num_crop))
  tmp.replace(path)
  return path


@dataclasses.dataclass(frozen=True)
class RunViews:
  """One test report folder's per-view scores, videos sorted by id."""
  directory: str
  video_ids: np.ndarray
  names: np.ndarray
  labels: np.ndarray
  scores: np.ndarray  # float32 [V, N, K]
  class_names: tuple[str, ...]
  num_segment: int
  num_crop: int

  def mean_probs(self) -> np.ndarray:
    """float64 [V, K]: each video's softmax probabilities averaged over its views."""
    seen = ~np.isnan(self.scores[..., 0])  # [V, N]: views that arrived
    s = np.where(seen[..., None], self.scores, 0.0).astype(np.float64)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return (p * seen[..., None]).sum(axis=1) / np.maximum(seen.sum(axis=1), 1)[:, None]


class ViewsError(ValueError):
  """A report folder without readable per-view scores; one line naming it."""


def read_views(directory) -> RunViews:
  """A test report folder's views.npz, or all its views-*-of-N.npz parts."""
  d = epath.Path(directory)
  parts = [d / FILE] if (d / FILE).exists() else sorted(d.glob("views-*-of-*.npz"))
  if not parts:
    raise ViewsError(f"{d}: no {FILE} (nor views-*-of-*.npz parts); the multi-view test "
                     "writes it in its report folder")
  if parts[0].name != FILE:
    counts = {p.name.rsplit("-of-", 1)[-1].removesuffix(".npz") for p in parts}
    if len(counts) != 1 or int(counts.pop()) != len(parts):
      raise ViewsError(f"{d}: {len(parts)} views-*-of-*.npz parts, not one complete set "
                       f"(e.g. {parts[0].name})")
  loaded = []
  for p in parts:
    try:
      with p.open("rb") as f, np.load(f, allow_pickle=False) as z:
        loaded.append({k: z[k] for k in z.files})
    except (OSError, ValueError, KeyError) as e:
      raise ViewsError(f"{p}: not a readable views file ({type(e).__name__}: {e})") from None
  need = {"video_ids", "names", "labels", "scores", "class_names", "num_segment", "num_crop"}
  for p, z in zip(parts, loaded):
    if not need <= set(z):
      raise ViewsError(f"{p}: missing {', '.join(sorted(need - set(z)))}")
  cat = lambda k: np.concatenate([z[k] for z in loaded])
  names = cat("names").astype(str)
  ids = cat("video_ids")
  order = np.argsort(ids, kind="stable")
  first = loaded[0]
  return RunViews(str(d), ids[order], names[order], cat("labels")[order],
                  cat("scores")[order], tuple(str(n) for n in first["class_names"]),
                  int(first["num_segment"]), int(first["num_crop"]))
