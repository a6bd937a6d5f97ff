"""Multi-view test results on the host: merge views per video, gather, score.

The reference (engine_for_finetuning.merge / compute_video) writes every view's
logits to text files, then per video averages the softmax probabilities of its
distinct (chunk, split) views, takes the argmax as the prediction and counts a
top-5 hit when the label is among argsort(-mean)[:5]. Here the device already
hands over probabilities; `ViewMerger` keeps one running sum per video (memory
O(videos x K)), `VideoResults.summarize` reduces the means to top-k, and only
that small `VideoSummary` crosses processes (`gather_results`) and feeds the
metrics and the report.

Top-k order: classes by descending mean probability, exact ties broken toward
the lower class index (a stable sort), so the first top-k class is always the
argmax. The reference's default (unstable) argsort leaves tied classes in an
unspecified order; only exact ties at the k-th place can differ.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

TOP_K = 5


@dataclasses.dataclass(frozen=True)
class VideoSummary:
  """Per-video test outcome reduced to top-k; sorted by video id.

  video_ids/labels int64 [V] (label -1 = unknown), names object [V] of str,
  topk_classes int64 [V, k] and topk_probs float32 [V, k] (descending; the
  first column is the prediction), num_views int64 [V].
  """
  video_ids: np.ndarray
  names: np.ndarray
  labels: np.ndarray
  topk_classes: np.ndarray
  topk_probs: np.ndarray
  num_views: np.ndarray

  @property
  def predictions(self) -> np.ndarray:
    """The argmax class of every video's mean probabilities, int64 [V]."""
    # [:, :1] rather than [:, 0]: an empty summary may have no columns at all.
    return self.topk_classes[:, :1].reshape(-1)

  def __len__(self) -> int:
    return len(self.video_ids)


@dataclasses.dataclass(frozen=True)
class VideoResults:
  """Per-video mean probabilities over views; sorted by video id.

  video_ids/labels int64 [V], names object [V] of str, mean_probs float32
  [V, K], num_views int64 [V].
  """
  video_ids: np.ndarray
  names: np.ndarray
  labels: np.ndarray
  mean_probs: np.ndarray
  num_views: np.ndarray

  def __len__(self) -> int:
    return len(self.video_ids)

  def summarize(self, k: int = TOP_K) -> VideoSummary:
    """The top-k classes (at most K) and their mean probabilities per video."""
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, self.mean_probs.shape[1])
    order = np.argsort(-self.mean_probs, axis=1, kind="stable")[:, :k]
    return VideoSummary(
        video_ids=self.video_ids, names=self.names, labels=self.labels,
        topk_classes=order.astype(np.int64),
        topk_probs=np.take_along_axis(self.mean_probs, order, axis=1).astype(np.float32),
        num_views=self.num_views)


def _as_str(name) -> str:
  return name.decode("utf-8") if isinstance(name, (bytes, np.bytes_)) else str(name)


class ViewMerger:
  """Accumulates per-view probabilities into per-video sums, batch by batch.

  Every view of a video must reach the same merger (the test split gives each
  process whole videos). A repeated (video_id, view) pair is skipped, as the
  reference skips a repeated chunk/split position.
  """

  def __init__(self):
    self._index: dict[int, int] = {}  # video id -> row in the arrays below
    self._seen: set[tuple[int, int]] = set()
    self._ids: list[int] = []
    self._names: list[str] = []
    self._labels: list[int] = []
    self._counts: list[int] = []
    self._sums: np.ndarray | None = None  # float64 [capacity, K]; grown by doubling

  def add(self, video_id, view, label, probs, names: Sequence) -> int:
    """Adds one batch of view rows; returns how many rows were counted.

    video_id/view/label: int [B]; probs: float [B, K]; names: [B] str or bytes.
    Rows with video_id < 0 are padding and ignored.
    """
    video_id = np.asarray(video_id).reshape(-1)
    view = np.asarray(view).reshape(-1)
    label = np.asarray(label).reshape(-1)
    probs = np.asarray(probs)
    b = len(video_id)
    if probs.ndim != 2 or probs.shape[0] != b or len(view) != b or len(label) != b or (
        len(names) != b):
      raise ValueError(f"batch fields disagree: {b} ids, {len(view)} views, {len(label)} "
                       f"labels, probs {probs.shape}, {len(names)} names")
    self._ensure_classes(probs.shape[1])
    rows, keep = [], []
    for i in range(b):
      vid, pos = int(video_id[i]), int(view[i])
      if vid < 0 or (vid, pos) in self._seen:
        continue
      self._seen.add((vid, pos))
      rows.append(self._row(vid, _as_str(names[i]), int(label[i])))
      keep.append(i)
    if keep:
      # np.add.at: one video may appear in several rows of the batch.
      np.add.at(self._sums, np.asarray(rows), probs[np.asarray(keep)].astype(np.float64))
      for r in rows:
        self._counts[r] += 1
    return len(keep)

  def _ensure_classes(self, k: int) -> None:
    if self._sums is None:
      self._sums = np.zeros((64, k), np.float64)
    elif self._sums.shape[1] != k:
      raise ValueError(f"probs have {k} classes, earlier batches had {self._sums.shape[1]}")

  def _row(self, vid: int, name: str, label: int) -> int:
    """The row of video `vid`, created on first sight; reconciles its label."""
    row = self._index.get(vid)
    if row is None:
      row = self._index[vid] = len(self._ids)
      self._ids.append(vid)
      self._names.append(name)
      self._labels.append(label)
      self._counts.append(0)
      if row == len(self._sums):
        self._sums = np.concatenate([self._sums, np.zeros_like(self._sums)])
    elif label >= 0 and self._labels[row] != label:
      # A known label fills an unknown one; two different known labels are a data bug.
      if self._labels[row] >= 0:
        raise ValueError(f"video {vid} has labels {self._labels[row]} and {label}")
      self._labels[row] = label
    return row

  def __len__(self) -> int:
    return len(self._ids)

  def results(self) -> VideoResults:
    """Mean probabilities per video so far, sorted by video id."""
    n = len(self._ids)
    k = 0 if self._sums is None else self._sums.shape[1]
    ids = np.asarray(self._ids, np.int64)
    order = np.argsort(ids, kind="stable")
    counts = np.asarray(self._counts, np.int64)
    sums = np.zeros((0, k)) if self._sums is None else self._sums[:n]
    return VideoResults(
        video_ids=ids[order],
        names=np.array(self._names, dtype=object)[order],
        labels=np.asarray(self._labels, np.int64)[order],
        mean_probs=(sums[order] / counts[order, None]).astype(np.float32),
        num_views=counts[order])


# -- across processes ---------------------------------------------------------


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  out = np.zeros((rows,) + x.shape[1:], x.dtype)
  out[:len(x)] = x
  return out


def _as_int32(x: np.ndarray, what: str) -> np.ndarray:
  # process_allgather goes through jax arrays: int64 would be narrowed silently
  # unless x64 is on, so narrow here, checked.
  if x.size and (x.min() < np.iinfo(np.int32).min or x.max() > np.iinfo(np.int32).max):
    raise ValueError(f"{what} do not fit int32 for the gather")
  return x.astype(np.int32)


def _encode_names(names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """UTF-8 bytes of every name, zero-padded to the longest: (uint8 [V, L], int32 [V])."""
  raw = [_as_str(n).encode("utf-8") for n in names]
  lengths = np.asarray([len(r) for r in raw], np.int32)
  out = np.zeros((len(raw), int(lengths.max(initial=0))), np.uint8)
  for i, r in enumerate(raw):
    out[i, :len(r)] = np.frombuffer(r, np.uint8)
  return out, lengths


def _pad_topk(x: np.ndarray, rows: int, k: int, dtype) -> np.ndarray:
  out = np.zeros((rows, k), dtype)
  out[:x.shape[0], :x.shape[1]] = x
  return out


def _pack(summary: VideoSummary, rows: int, name_len: int, k: int) -> dict[str, np.ndarray]:
  """This process's summary as fixed-size arrays of `rows` videos (zero padding).

  `k` pads the top-k width too: a process that saw no batch has zero columns.
  """
  name_bytes, name_lengths = _encode_names(summary.names)
  padded_names = np.zeros((rows, name_len), np.uint8)
  padded_names[:len(summary), :name_bytes.shape[1]] = name_bytes
  return {
      "video_ids": _pad_rows(_as_int32(summary.video_ids, "video ids"), rows),
      "labels": _pad_rows(_as_int32(summary.labels, "labels"), rows),
      "topk_classes": _pad_topk(summary.topk_classes, rows, k, np.int32),
      "topk_probs": _pad_topk(summary.topk_probs, rows, k, np.float32),
      "num_views": _pad_rows(_as_int32(summary.num_views, "view counts"), rows),
      "name_lengths": _pad_rows(name_lengths, rows),
      "names": padded_names,
  }


def _unpack(gathered: dict[str, np.ndarray], counts: Sequence[int]) -> VideoSummary:
  """Every process's valid rows of the stacked [P, rows, ...] arrays, merged by video id.

  A video id seen on several processes (a sampler that pads by repeating
  videos) is kept once, the first occurrence, as the reference's merge keeps
  one entry per video.
  """
  take = lambda key: np.concatenate(
      [np.asarray(gathered[key][p])[:c] for p, c in enumerate(counts)])
  ids = take("video_ids").astype(np.int64)
  k = max((s.shape[1] for s, c in zip(gathered["topk_classes"], counts) if c), default=0)
  names = np.array([bytes(b[:n]).decode("utf-8") for b, n in
                    zip(take("names"), take("name_lengths"))], dtype=object)
  _, first = np.unique(ids, return_index=True)  # sorted ids, index of first occurrence
  return VideoSummary(
      video_ids=ids[first], names=names[first],
      labels=take("labels").astype(np.int64)[first],
      topk_classes=take("topk_classes").astype(np.int64)[first][:, :k],
      topk_probs=take("topk_probs").astype(np.float32)[first][:, :k],
      num_views=take("num_views").astype(np.int64)[first])


def gather_results(summary: VideoSummary) -> VideoSummary:
  """Every process's summary combined, on every process (a collective: all must call).

  With one process the input is returned as is. Two process_allgather calls:
  the sizes, then the arrays padded to the largest process's.
  """
  import jax
  if jax.process_count() == 1:
    return summary
  from jax.experimental import multihost_utils
  allgather = multihost_utils.process_allgather
  name_len = max((len(_as_str(n).encode("utf-8")) for n in summary.names), default=0)
  sizes = np.asarray(allgather(np.asarray(
      [len(summary), name_len, summary.topk_classes.shape[1]], np.int32)))
  counts = [int(c) for c in sizes[:, 0]]
  widths = {int(w) for c, w in zip(counts, sizes[:, 2]) if c}
  if len(widths) > 1:  # every process knows this, so all raise together
    raise ValueError(f"processes summarised different top-k widths: {sorted(widths)}")
  # At least one row, byte and column: no zero-size arrays in the collective.
  gathered = allgather(_pack(summary, max(max(counts), 1), max(int(sizes[:, 1].max()), 1),
                             max(int(sizes[:, 2].max()), 1)))
  return _unpack(jax.tree.map(np.asarray, gathered), counts)


# -- metrics --------------------------------------------------------------------


def _hits(summary: VideoSummary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(labelled mask, top-1 hit, top-5 hit) per video."""
  labelled = summary.labels >= 0
  top1 = summary.predictions == summary.labels
  top5 = (summary.topk_classes[:, :TOP_K] == summary.labels[:, None]).any(axis=1)
  return labelled, top1 & labelled, top5 & labelled


def accuracy(summary: VideoSummary) -> dict:
  """top1/top5 fractions over labelled videos (NaN if none), counts, mean views."""
  labelled, top1, top5 = _hits(summary)
  n = int(labelled.sum())
  return {
      "top1": float(top1.sum() / n) if n else float("nan"),
      "top5": float(top5.sum() / n) if n else float("nan"),
      "num_videos": len(summary),
      "num_labelled": n,
      "views_per_video": float(summary.num_views.mean()) if len(summary) else 0.0,
  }


def _check_labels(summary: VideoSummary, num_classes: int) -> None:
  if len(summary) and summary.labels.max() >= num_classes:
    raise ValueError(f"label {summary.labels.max()} out of range for {num_classes} classes")


def per_class(summary: VideoSummary, num_classes: int) -> dict[str, np.ndarray]:
  """Per true class: `count` int64 [K], `top1` and `top5` accuracy float64 [K] (NaN if empty)."""
  _check_labels(summary, num_classes)
  labelled, top1, top5 = _hits(summary)
  labels = summary.labels[labelled]
  count = np.bincount(labels, minlength=num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    return {
        "count": count,
        "top1": np.bincount(labels, top1[labelled], num_classes) / count,
        "top5": np.bincount(labels, top5[labelled], num_classes) / count,
    }


def confusion(summary: VideoSummary, num_classes: int) -> np.ndarray:
  """int64 [K, K] counts of labelled videos: rows = true label, columns = prediction."""
  _check_labels(summary, num_classes)
  labelled = summary.labels >= 0
  out = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(out, (summary.labels[labelled], summary.predictions[labelled]), 1)
  return out
