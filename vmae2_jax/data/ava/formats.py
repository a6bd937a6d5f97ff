"""AVA's own file formats: the box CSVs, excluded timestamps, label maps, proposals.

  box CSV        video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]   (ground truth)
                 video_id,timestamp,x1,y1,x2,y2,action_id,score         (detections)
                 coordinates normalised to [0, 1]; a ground-truth row with only
                 video_id,timestamp marks a keyframe with no action (AVA v2.2)
  exclusions     video_id,timestamp
  label map      item { name: "bend/bow (at the waist)" id: 1 } ... (pbtxt; also
                 ``label_id:``; the 60-class evaluation list has the same format)
  proposals      a pickle of {"video_id,timestamp": float array [N, 5]}
                 (x1, y1, x2, y2, score), normalised (the published AVA person boxes)

Every problem is one ValueError line naming the file and the row (or key):
malformed rows, boxes outside [0, 1] (AVA's files overshoot by float noise:
up to BOX_SLACK is clipped silently), unknown action ids. A keyframe is named
by its image key "video_id,%04d" as AVA's evaluator writes it.
"""

from __future__ import annotations

import csv
import io
import pickle
import re
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from vmae2_jax import paths

# AVA's CSVs and the published proposals overshoot [0, 1] by rounding noise (1.0001...).
BOX_SLACK = 0.01


class AvaFormatError(ValueError):
  """A malformed AVA file; the one-line message names the file and row."""


def image_key(video_id: str, timestamp) -> str:
  """The keyframe's key as AVA's evaluator writes it: "video_id,0902"."""
  return f"{video_id},{int(timestamp):04d}"


def split_key(key: str) -> tuple[str, int]:
  """"video_id,0902" -> ("video_id", 902)."""
  video_id, _, ts = key.rpartition(",")
  return video_id, int(ts)


class BoxRow(NamedTuple):
  """One CSV row: a box with one action (box None: a keyframe listed with no action).

  A named tuple: AVA's evaluation sets have millions of (box, action) rows."""
  video_id: str
  timestamp: int
  box: tuple[float, float, float, float] | None  # x1, y1, x2, y2, normalised
  action_id: int = 0
  score: float = 1.0       # detections; 1 for ground truth
  person_id: int = -1      # ground truth's 8th column, -1 when absent

  @property
  def key(self) -> str:
    return image_key(self.video_id, self.timestamp)


def _number(text: str, field: str, where: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise AvaFormatError(f"{where}: {field} {text!r} is not a number") from None


def _integer(text: str, field: str, where: str) -> int:
  value = _number(text, field, where)
  if value != int(value):
    raise AvaFormatError(f"{where}: {field} {text!r} is not a whole number")
  return int(value)


def check_box(box: Sequence[float], where: str) -> tuple[float, float, float, float]:
  """(x1, y1, x2, y2) clipped into [0, 1]; AvaFormatError if outside by more than BOX_SLACK
  or inverted (x2 < x1 or y2 < y1)."""
  x1, y1, x2, y2 = (float(v) for v in box)
  if not all(np.isfinite(v) for v in (x1, y1, x2, y2)):
    raise AvaFormatError(f"{where}: box ({x1}, {y1}, {x2}, {y2}) is not finite")
  if min(x1, y1, x2, y2) < -BOX_SLACK or max(x1, y1, x2, y2) > 1 + BOX_SLACK:
    raise AvaFormatError(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is outside [0, 1] "
                         "(coordinates must be normalised by the frame size)")
  if x2 < x1 or y2 < y1:
    raise AvaFormatError(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has x2 < x1 or "
                         "y2 < y1 (expected x1,y1,x2,y2)")
  clip = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
  return clip(x1), clip(y1), clip(x2), clip(y2)


def _listing(ids: Iterable[int]) -> str:
  ids = sorted(ids)
  if len(ids) > 2 and ids == list(range(ids[0], ids[-1] + 1)):
    return f"ids {ids[0]}..{ids[-1]}"
  return "ids " + ", ".join(map(str, ids[:6])) + (f" and {len(ids) - 6} more" if len(ids) > 6
                                                  else "")


def parse_box_rows(lines: Iterable[str], *, where: str, detections: bool = False,
                   class_ids: Iterable[int] | None = None) -> list[BoxRow]:
  """CSV lines -> BoxRows (see the module docstring for the columns).

  ``detections``: the 8th column is a score and is required. ``class_ids``: the
  known action ids (a label map); any other id is an error.
  """
  known = set(int(i) for i in class_ids) if class_ids is not None else None
  rows = []
  for n, cols in enumerate(csv.reader(lines), start=1):
    at = f"{where} row {n}"
    cols = [c.strip() for c in cols]
    if not cols or (len(cols) == 1 and not cols[0]):
      continue
    if len(cols) == 2 and not detections:
      rows.append(BoxRow(cols[0], _integer(cols[1], "timestamp", at), None))
      continue
    want = (8,) if detections else (7, 8)
    if len(cols) not in want:
      layout = ("video_id,timestamp,x1,y1,x2,y2,action_id,score" if detections else
                "video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]")
      raise AvaFormatError(f"{at}: {len(cols)} columns, expected {' or '.join(map(str, want))} "
                           f"({layout})")
    if not cols[0]:
      raise AvaFormatError(f"{at}: empty video_id")
    ts = _integer(cols[1], "timestamp", at)
    box = check_box([_number(c, f, at) for c, f in zip(cols[2:6], ("x1", "y1", "x2", "y2"))], at)
    action = _integer(cols[6], "action_id", at)
    if known is not None and action not in known:
      raise AvaFormatError(f"{at}: action id {action} is not in the label map "
                           f"({_listing(known)})")
    if detections:
      rows.append(BoxRow(cols[0], ts, box, action, score=_number(cols[7], "score", at)))
    else:
      person = _integer(cols[7], "person_id", at) if len(cols) == 8 else -1
      rows.append(BoxRow(cols[0], ts, box, action, person_id=person))
  return rows


def read_box_csv(path, *, detections: bool = False,
                 class_ids: Iterable[int] | None = None) -> list[BoxRow]:
  """An AVA box CSV (ground truth, or ``detections`` with scores) -> BoxRows in file order."""
  text = _read_text(path, "box CSV")
  return parse_box_rows(io.StringIO(text), where=str(path), detections=detections,
                        class_ids=class_ids)


def write_box_csv(path, rows: Iterable[BoxRow], *, detections: bool = True) -> None:
  """BoxRows -> an AVA CSV (detections: with scores, as AVA's evaluator reads them)."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  for r in rows:
    if r.box is None:
      writer.writerow([r.video_id, f"{r.timestamp:04d}"])
      continue
    cols = [r.video_id, f"{r.timestamp:04d}", *(f"{v:.5f}" for v in r.box), r.action_id]
    if detections:
      cols.append(f"{r.score:.6g}")
    elif r.person_id >= 0:
      cols.append(r.person_id)
    writer.writerow(cols)
  paths.write_text(path, out.getvalue())


def read_exclusions(path) -> set[str]:
  """Excluded timestamps (video_id,timestamp rows) -> a set of image keys."""
  where = str(path)
  keys = set()
  for n, cols in enumerate(csv.reader(io.StringIO(_read_text(path, "exclusions CSV"))), 1):
    cols = [c.strip() for c in cols]
    if not cols or (len(cols) == 1 and not cols[0]):
      continue
    if len(cols) != 2:
      raise AvaFormatError(f"{where} row {n}: {len(cols)} columns, expected 2 "
                           "(video_id,timestamp)")
    keys.add(image_key(cols[0], _integer(cols[1], "timestamp", f"{where} row {n}")))
  return keys


_ITEM = re.compile(r"item\s*\{(.*?)\}", re.DOTALL)
_NAME = re.compile(r"\bname\s*:\s*\"((?:[^\"\\]|\\.)*)\"")
_ID = re.compile(r"\b(?:label_)?id\s*:\s*(-?\d+)")


def parse_label_map(text: str, where: str) -> dict[int, str]:
  """pbtxt text -> {action id: name}, in file order."""
  out: dict[int, str] = {}
  for k, m in enumerate(_ITEM.finditer(text), start=1):
    line = text.count("\n", 0, m.start()) + 1
    body = m.group(1)
    ids, names = _ID.findall(body), _NAME.findall(body)
    if len(ids) != 1:
      raise AvaFormatError(f"{where} line {line}: item {k} has {len(ids)} ids, expected one "
                           "(id: N or label_id: N)")
    action = int(ids[0])
    if action < 1:
      raise AvaFormatError(f"{where} line {line}: item {k} has id {action}; AVA ids start at 1")
    if action in out:
      raise AvaFormatError(f"{where} line {line}: id {action} is listed twice")
    out[action] = names[0] if names else str(action)
  if not out:
    raise AvaFormatError(f"{where}: no `item {{ name: \"...\" id: N }}` entries (not a label "
                         "map pbtxt?)")
  return out


def read_label_map(path) -> dict[int, str]:
  """A label-map pbtxt (AVA's 80-class list or the 60-class evaluation list) -> {id: name}."""
  return parse_label_map(_read_text(path, "label map"), str(path))


def normalise_proposals(raw, where: str) -> dict[str, np.ndarray]:
  """{"video,timestamp": [N, 4 or 5]} -> {image key: float32 [N, 5]} (score 1 when absent)."""
  if not isinstance(raw, Mapping):
    raise AvaFormatError(f"{where}: holds a {type(raw).__name__}, expected a dict keyed "
                         "\"video_id,timestamp\"")
  out = {}
  for key, value in raw.items():
    at = f"{where} key {key!r}"
    if not isinstance(key, str) or "," not in key:
      raise AvaFormatError(f"{at}: keys must be \"video_id,timestamp\" strings")
    video_id, _, ts = key.rpartition(",")
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
      arr = arr.reshape(0, 5)
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
      raise AvaFormatError(f"{at}: array of shape {arr.shape}, expected [N, 5] "
                           "(x1, y1, x2, y2, score)")
    if arr.shape[1] == 4:
      arr = np.concatenate([arr, np.ones((len(arr), 1))], axis=1)
    for i, row in enumerate(arr):
      arr[i, :4] = check_box(row[:4], f"{at} box {i}")
    out[image_key(video_id, _integer(ts, "timestamp", at))] = arr.astype(np.float32)
  return out


def read_proposals(path) -> dict[str, np.ndarray]:
  """A proposals pickle (e.g. AVA's published person detections) -> {image key: [N, 5]}.

  Pickles run code when loaded: read only files you trust.
  """
  where = str(path)
  try:
    raw = pickle.loads(paths.read_bytes(path))
  except FileNotFoundError:
    raise AvaFormatError(f"{where}: proposals file not found") from None
  except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
    raise AvaFormatError(f"{where}: not a readable pickle ({type(e).__name__}: {e})") from None
  return normalise_proposals(raw, where)


def write_proposals(path, proposals: Mapping[str, np.ndarray]) -> None:
  """{image key: [N, 5]} -> a proposals pickle as AVA's published files are laid out."""
  paths.write_bytes(path, pickle.dumps({k: np.asarray(v, np.float32)
                                        for k, v in proposals.items()}))


def _read_text(path, what: str) -> str:
  try:
    return paths.read_text(path)
  except FileNotFoundError:
    raise AvaFormatError(f"{path}: {what} not found") from None
  except UnicodeDecodeError:
    raise AvaFormatError(f"{path}: {what} is not UTF-8 text") from None
