"""List files, CSVs and folders per class -> the videos to build, with labels and class names.

The formats data_prep.build_shards reads (its docstring lists them) and the
dry run that reports what a build would do; this module reads and checks
inputs only and writes nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Callable, Sequence

from vmae2_jax.data import kinetics

VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp"}


@dataclasses.dataclass
class Entry:
  """One list line."""
  line: int  # 1-based line number in the list file
  path: str  # as written in the list
  start: int = 0
  total: int = -1  # -1 = all frames from start
  label: int = -1
  kind: str = "video"  # "video" (a file to decode) or "frames" (a folder of images)


# --------------------------------------------------------------------------
# Inputs: list files, CSV files, a folder per class
# --------------------------------------------------------------------------

# A list's first line is a header when its first field is one of these and no field is
# an integer (so a data line such as ``video 3`` still counts as data).
HEADER_PATH_NAMES = {"path", "video", "video_path", "videos", "file", "filename", "file_name",
                    "filepath", "folder", "frame_folder", "clip", "name", "video_name", "video_id"}
LAYOUTS = {"video": "path label", "frames": "frame_folder total_frames label",
           "pretrain": "path start total [label]"}
# --format values: auto, csv, a layout, or one of the field's formats read whole.
FORMATS = ("auto", "csv", *LAYOUTS, "kinetics", "frame_list", "ucf101")


class ListError(ValueError):
  """Bad input; the message is one line naming the file, the line and the field."""


@dataclasses.dataclass
class Listing:
  """What an input holds: its entries and, when the input names them, the classes."""
  entries: list[Entry]
  names: list[str] | None = None  # index = class id; None when only indices are known
  format: str = ""  # what was detected, for --dry_run
  notes: list[str] = dataclasses.field(default_factory=list)  # things skipped on purpose
  # Entry.line -> paths to try, in order, when the input names a video but not its file
  # (Kinetics CSVs, Something-Something JSON); resolve_candidates picks the one present.
  candidates: dict[int, list[str]] = dataclasses.field(default_factory=dict)


def _is_video_path(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in VIDEO_EXTS


def _plural(n: int, word: str) -> str:
  return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _is_int(s: str) -> bool:
  try:
    int(s)
    return True
  except ValueError:
    return False


def _is_number(s: str) -> bool:
  try:
    float(s)
    return True
  except ValueError:
    return False


def read_label_names(path: str) -> list[str]:
  """Class names from a file, index = line order (trailing blank lines ok): one name a
  line; or ``index name`` lines numbered 0.. or 1.. in order (UCF101's classInd.txt);
  or a JSON object {name: index} (Something-Something's labels.json)."""
  try:
    with open(path, encoding="utf-8-sig") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise ListError(f"--labels={path}: cannot read it ({e})") from e
  if text.lstrip().startswith("{"):
    return _json_label_names(path, text)
  lines = [l.strip() for l in text.splitlines()]
  while lines and not lines[-1]:
    lines.pop()
  numbered = [l.split(None, 1) for l in lines]
  if lines and all(len(p) == 2 and _is_int(p[0]) for p in numbered):
    first = int(numbered[0][0])
    if first in (0, 1) and [int(p[0]) for p in numbered] == list(range(first, first + len(lines))):
      lines = [p[1].strip() for p in numbered]  # "1 ApplyEyeMakeup": index = number - first
  seen: dict[str, int] = {}
  for n, name in enumerate(lines, 1):
    if not name:
      raise ListError(f"{path} line {n}: empty class name (index = line number - 1, so "
                      f"blank lines are not allowed)")
    if name in seen:
      raise ListError(f"{path} line {n}: class {name!r} already on line {seen[name]}")
    seen[name] = n
  if not lines:
    raise ListError(f"{path}: no class names")
  return lines


def _json_label_names(path: str, text: str) -> list[str]:
  try:
    index = {str(k): int(v) for k, v in json.loads(text).items()}
  except (ValueError, TypeError, AttributeError) as e:
    raise ListError(f"--labels={path}: not a JSON object of class name -> index ({e})") from None
  names = sorted(index, key=index.get)
  if sorted(index.values()) != list(range(len(names))):
    raise ListError(f"--labels={path}: indices are not 0..{len(names) - 1}, each once")
  return names


def _split(line: str, csv_mode: bool) -> list[str]:
  """Columns of one line: CSV fields, tab-separated fields (paths may hold spaces),
  or whitespace-separated columns."""
  if csv_mode:
    return [c.strip() for c in next(csv.reader([line], skipinitialspace=True, strict=True))]
  if "\t" in line:
    return [c.strip() for c in line.split("\t")]
  return line.split()


def _layout(cols: list[str], fmt: str) -> str:
  """The reference layout of a line: the forced one, or by column count."""
  if fmt in LAYOUTS:
    return fmt
  if len(cols) == 2:
    return "video"
  if len(cols) == 4:
    return "pretrain"
  if len(cols) == 3:
    return "pretrain" if cols[2] == "-1" or _is_video_path(cols[0]) else "frames"
  return ""


def _int_field(cols: list[str], i: int, field: str, minimum: int) -> int:
  try:
    v = int(cols[i])
  except ValueError:
    raise ValueError(f"{field} {cols[i]!r} is not an integer") from None
  if v < minimum:
    raise ValueError(f"{field} {v} is negative" if minimum == 0 else
                     f"{field} {v} is below {minimum}")
  return v


def _parse_line(cols: list[str], layout: str, n: int) -> tuple[Entry, str | None]:
  """One line's entry; its label is an index, or -1 with the class name returned."""
  expected = {"video": (2,), "frames": (3,), "pretrain": (3, 4)}[layout]
  if len(cols) not in expected:
    raise ValueError(f"{_plural(len(cols), 'column')}, the {layout!r} layout "
                     f"({LAYOUTS[layout]}) has {' or '.join(map(str, expected))}")
  if not cols[0]:
    raise ValueError("empty path")
  label_col = {"video": 1, "frames": 2, "pretrain": 3}[layout]
  label, name = -1, None
  if label_col < len(cols):
    if not cols[label_col]:
      raise ValueError("empty label")
    if _is_int(cols[label_col]):
      label = _int_field(cols, label_col, "label", 0)
    elif _is_number(cols[label_col]):  # "3.0" would otherwise become a class *name*
      raise ValueError(f"label {cols[label_col]!r} is a number but not an integer")
    else:
      name = cols[label_col]
  if layout == "video":
    return Entry(n, cols[0], 0, -1, label, "video"), name
  if layout == "frames":
    return Entry(n, cols[0], 0, _int_field(cols, 1, "total_frames", 0), label, "frames"), name
  start = _int_field(cols, 1, "start_index", 0)
  total = _int_field(cols, 2, "total_frames", -1)
  kind = "video" if _is_video_path(cols[0]) or total < 0 else "auto"
  return Entry(n, cols[0], start, total, label, kind), name


def _is_header(cols: list[str]) -> bool:
  return cols[0].lower() in HEADER_PATH_NAMES and not any(_is_int(c) for c in cols)


def _is_csv(lines: Sequence[str]) -> bool:
  """Auto-detection: comma-separated when the first data line holds a comma."""
  for raw in lines:
    line = raw.strip()
    if line and not line.startswith("#"):
      return "," in line
  return False


def read_list(lines: Sequence[str], fmt: str = "auto", *, source: str = "list",
              label_names: Sequence[str] | None = None, labels_file: str = "") -> Listing:
  """List or CSV lines -> Listing; ListError naming ``source`` and the line if malformed.

  ``fmt``: "auto", "csv", or a reference layout ("video", "frames", "pretrain").
  Labels are class indices or class names (not both); names get indices in the
  order of ``label_names`` when given, else the reference's order for a Kinetics
  class set (kinetics.identify), else sorted order.
  """
  if fmt not in FORMATS:
    raise ValueError(f"unknown list format {fmt!r}")
  kw = dict(source=source, label_names=label_names, labels_file=labels_file)
  if fmt == "ucf101":
    return read_ucf101_list(lines, **kw)
  csv_mode = fmt in ("csv", "kinetics") or (fmt == "auto" and _is_csv(lines))
  special = fmt if fmt in ("kinetics", "frame_list") else _special_header(lines, csv_mode)
  if special == "kinetics":
    return read_kinetics_csv(lines, **kw)
  if special == "frame_list":
    return read_frame_list(lines, **kw)
  entries, named, used = [], [], {}
  header = first = None
  for n, raw in enumerate(lines, 1):
    line = raw.strip()
    if not line or line.startswith("#"):
      continue
    try:
      cols = _split(line, csv_mode)
    except csv.Error as e:
      raise ListError(f"{source} line {n}: not a valid CSV line ({e}): {line!r}") from None
    if first is None and _is_header(cols):
      header = first = n
      continue
    first = first or n
    layout = _layout(cols, "auto" if fmt == "csv" else fmt)
    try:
      if not layout:
        raise ValueError(f"{_plural(len(cols), 'column')}, expected 2, 3 or 4")
      entry, name = _parse_line(cols, layout, n)
    except ValueError as e:
      hint = " (comma-separated? use --format=csv)" if not csv_mode and "," in line else ""
      raise ListError(f"{source} line {n}: {e}{hint}: {line!r}") from None
    used[layout] = used.get(layout, 0) + 1
    entries.append(entry)
    if name is not None:
      named.append((entry, name))
  names = _assign_names(entries, named, source, label_names, labels_file)
  sep = "csv" if csv_mode else "space/tab-separated list"
  kinds = ", ".join(f"{k} ({LAYOUTS[k]}): {v} lines" for k, v in sorted(used.items()))
  labels = ("class names" if named else
            "class indices" if any(e.label >= 0 for e in entries) else "none")
  desc = (f"{sep}{f', header on line {header}' if header else ''}; "
          f"{kinds or 'no entries'}; labels: {labels}")
  notes = []
  indices = [e.label for e in entries if e.label >= 0]
  if indices and not named and min(indices) >= 1:
    notes.append(f"{source}: no line has label 0 (labels {min(indices)}..{max(indices)}); "
                 f"if the indices start at 1 (UCF101's trainlist0N.txt), use --format=ucf101")
  return Listing(entries, names, desc, notes)


# ---- the field's other formats -----------------------------------------------------

KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end")
FRAME_LIST_COLUMNS = ("frame_id", "path")


def _special_header(lines: Sequence[str], csv_mode: bool) -> str:
  """"kinetics" or "frame_list" when the first line is such a header, else ""."""
  for raw in lines:
    line = raw.strip()
    if not line or line.startswith("#"):
      continue
    try:
      cols = {c.lower() for c in _split(line, csv_mode)}
    except csv.Error:
      return ""
    if csv_mode and set(KINETICS_COLUMNS) <= cols:
      return "kinetics"
    if set(FRAME_LIST_COLUMNS) <= cols and cols & {"original_vido_id", "original_video_id",
                                                   "video_id"}:
      return "frame_list"
    return ""
  return ""


def _data_lines(lines: Sequence[str]):
  """(line number, stripped line) of the non-blank, non-comment lines."""
  for n, raw in enumerate(lines, 1):
    line = raw.strip()
    if line and not line.startswith("#"):
      yield n, line


def _finish(entries, named, source, label_names, labels_file, desc, notes=(),
            candidates=None) -> Listing:
  names = _assign_names(entries, named, source, label_names, labels_file)
  labels = ("class names" if named else "none" if all(e.label < 0 for e in entries)
            else "class indices")
  return Listing(entries, names, f"{desc}; labels: {labels}", list(notes), candidates or {})


def _kinetics_dirs(label: str) -> list[str]:
  """Where downloaders put a clip: a folder per class (as named, or with '_' for spaces)."""
  dirs = [label, label.replace(" ", "_")] if label else []
  return list(dict.fromkeys(dirs)) + [""]


def read_kinetics_csv(lines: Sequence[str], *, source: str = "list",
                      label_names: Sequence[str] | None = None,
                      labels_file: str = "") -> Listing:
  """Kinetics' official CSV: ``label,youtube_id,time_start,time_end,split[,is_cc]``
  (the test split has no label column). A row's clip is
  ``<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (the official downloader's name),
  else ``<youtube_id>.mp4``, in a folder per class or flat under --root; the
  first present one is used (resolve_candidates), any video extension."""
  rows = _data_lines(lines)
  n0, head = next(rows, (0, ""))
  cols = [c.lower() for c in _split(head, True)]
  col = {c: i for i, c in enumerate(cols)}
  if not set(KINETICS_COLUMNS) <= set(col):
    raise ListError(f"{source} line {n0}: a Kinetics CSV starts with a header naming "
                    f"{', '.join(KINETICS_COLUMNS)} (and label, split): {head!r}")
  entries, named, splits, candidates = [], [], {}, {}
  for n, line in rows:
    try:
      f = _split(line, True)
    except csv.Error as e:
      raise ListError(f"{source} line {n}: not a valid CSV line ({e}): {line!r}") from None
    if len(f) != len(cols):
      raise ListError(f"{source} line {n}: {_plural(len(f), 'field')}, the header on line "
                      f"{n0} has {len(cols)}: {line!r}")
    yid = f[col["youtube_id"]]
    try:
      start, end = (int(float(f[col[k]])) for k in ("time_start", "time_end"))
    except ValueError:
      raise ListError(f"{source} line {n}: time_start / time_end are not numbers: "
                      f"{line!r}") from None
    if not yid:
      raise ListError(f"{source} line {n}: empty youtube_id: {line!r}")
    label = f[col["label"]] if "label" in col else ""
    stems = [f"{yid}_{start:06d}_{end:06d}", yid]
    paths = [os.path.join(d, stem + ".mp4") for stem in stems for d in _kinetics_dirs(label)]
    e = Entry(n, paths[0], 0, -1, -1, "video")
    entries.append(e)
    candidates[n] = paths
    if label:
      named.append((e, label))
    if "split" in col:
      splits[f[col["split"]]] = splits.get(f[col["split"]], 0) + 1
  split_desc = ", ".join(f"{k} {v}" for k, v in sorted(splits.items()))
  desc = (f"Kinetics csv ({','.join(cols)}), header on line {n0}; {len(entries)} clips"
          + (f" (split: {split_desc})" if split_desc else ""))
  notes = [f"{source}: rows of more than one split ({split_desc}); build each split "
           f"from its own CSV"] if len(splits) > 1 else []
  return _finish(entries, named, source, label_names, labels_file, desc, notes, candidates)


def read_frame_list(lines: Sequence[str], *, source: str = "list",
                    label_names: Sequence[str] | None = None,
                    labels_file: str = "") -> Listing:
  """PySlowFast's frame lists (Charades, Something-Something, AVA):
  ``original_vido_id video_id frame_id path labels``, a header, then one line per
  frame, space separated. A video is the folder of its frames' paths, its
  length their count; its label the ``labels`` field when it is one class index
  on every frame, none when empty ("" -- Something-Something's lists; give the
  labels through its JSON instead). Multi-label videos (Charades) are refused."""
  rows = _data_lines(lines)
  n0, head = next(rows, (0, ""))
  cols = [c.lower() for c in _split(head, False)]
  col = {c: i for i, c in enumerate(cols)}
  vid_col = col.get("original_vido_id", col.get("original_video_id", col.get("video_id")))
  if vid_col is None or "path" not in col:
    raise ListError(f"{source} line {n0}: a PySlowFast frame list starts with the header "
                    f"'original_vido_id video_id frame_id path labels': {head!r}")
  videos: dict[str, list] = {}  # id -> [first line, folder, frames, labels]
  for n, line in rows:
    f = _split(line, False)
    if len(f) < len(cols) - ("labels" in col):  # an empty labels field may be missing
      raise ListError(f"{source} line {n}: {_plural(len(f), 'column')}, the header on line "
                      f"{n0} has {len(cols)}: {line!r}")
    vid, path = f[vid_col], f[col["path"]]
    labels = f[col["labels"]].strip('"') if "labels" in col and col["labels"] < len(f) else ""
    folder = os.path.dirname(path)
    v = videos.setdefault(vid, [n, folder, 0, set()])
    if folder != v[1]:
      raise ListError(f"{source} line {n}: video {vid}'s frames are in {v[1]!r} and "
                      f"{folder!r}; a video must be one folder")
    v[2] += 1
    v[3].add(labels)
  entries = []
  for vid, (n, folder, count, labels) in videos.items():
    labels.discard("")
    if len(labels) > 1 or any(not _is_int(l) for l in labels):
      raise ListError(f"{source} line {n}: video {vid} has labels {sorted(labels)}: "
                      f"multi-label lists (Charades) are not supported, one class a video")
    label = int(next(iter(labels))) if labels else -1
    entries.append(Entry(n, folder or vid, 0, count, label, "frames"))
  desc = (f"PySlowFast frame list ({' '.join(cols)}), header on line {n0}; "
          f"{len(entries)} videos of {sum(v[2] for v in videos.values())} frames")
  return _finish(entries, [], source, label_names, labels_file, desc)


def read_ucf101_list(lines: Sequence[str], *, source: str = "list",
                     label_names: Sequence[str] | None = None,
                     labels_file: str = "") -> Listing:
  """UCF101's split files: ``Class/v_Class_gXX_cYY.avi [index]`` (trainlist0N.txt with
  a 1-based class index, testlist0N.txt without). The class is the path's folder;
  with --labels=classInd.txt a given index must be that class's (1-based)."""
  entries, named = [], []
  for n, line in _data_lines(lines):
    f = line.split()
    if len(f) > 2 or "/" not in f[0].replace("\\", "/"):
      raise ListError(f"{source} line {n}: expected 'Class/video.avi [index]' "
                      f"(--format=ucf101): {line!r}")
    name = f[0].replace("\\", "/").split("/")[0]
    e = Entry(n, f[0], 0, -1, -1, "video")
    if len(f) == 2:
      if not _is_int(f[1]) or int(f[1]) < 1:
        raise ListError(f"{source} line {n}: index {f[1]!r} is not a 1-based class index: "
                        f"{line!r}")
      if label_names and (int(f[1]) > len(label_names) or label_names[int(f[1]) - 1] != name):
        got = label_names[int(f[1]) - 1] if int(f[1]) <= len(label_names) else "none"
        raise ListError(f"{source} line {n}: index {f[1]} is {got!r} in "
                        f"--labels={labels_file or '...'}, the folder says {name!r}")
    entries.append(e)
    named.append((e, name))
  return _finish(entries, named, source, label_names, labels_file,
                 f"UCF101 split list; {len(entries)} videos, class = folder")


def read_ssv2_json(items, *, source: str = "list",
                   label_names: Sequence[str] | None = None,
                   labels_file: str = "") -> Listing:
  """Something-Something V2's JSON: [{"id", "label", "template", "placeholders"}, ...]
  (the test set: [{"id"}]). The class is the template without brackets (the keys
  of something-something-v2-labels.json, which --labels takes); the video is
  ``<id>.webm``, or a frame folder ``<id>`` (first present one)."""
  if not isinstance(items, list) or not all(isinstance(x, dict) and "id" in x for x in items):
    raise ListError(f"{source}: a JSON list file must be Something-Something's: a list of "
                    f"objects with an \"id\"")
  entries, named, candidates = [], [], {}
  for n, x in enumerate(items, 1):
    vid = str(x["id"])
    e = Entry(n, f"{vid}.webm", 0, -1, -1, "auto")
    candidates[n] = [f"{vid}.webm", vid, f"{vid}.mp4"]
    entries.append(e)
    if x.get("template"):
      named.append((e, str(x["template"]).replace("[", "").replace("]", "")))
  notes = [] if label_names or not named else [
      f"{source}: class indices in sorted name order; pass "
      f"--labels=something-something-v2-labels.json for the official ones"]
  return _finish(entries, named, source, label_names, labels_file,
                 f"Something-Something JSON; {len(entries)} videos, class = template",
                 notes, candidates)


def resolve_candidates(listing: Listing, root: str) -> Listing:
  """Points each entry with candidate paths at the first that exists under ``root``
  (any video extension for a candidate video file); unresolved entries keep their
  first candidate, so they fail as ``missing``. Adds a note on what was found."""
  if not listing.candidates:
    return listing
  dirs: dict[str, dict[str, str]] = {}  # dir -> {name without extension: name}

  def names_in(d: str) -> dict[str, str]:
    if d not in dirs:
      full = os.path.join(root, d) if root else (d or ".")
      try:
        items = sorted(os.listdir(full))
      except OSError:
        items = []
      found: dict[str, str] = {}
      for item in items:
        stem, ext = os.path.splitext(item)
        if ext.lower() in VIDEO_EXTS:
          found.setdefault(stem, item)
        elif os.path.isdir(os.path.join(full, item)):
          found.setdefault(item, item)
      dirs[d] = found
    return dirs[d]

  resolved = 0
  for e in listing.entries:
    for cand in listing.candidates.get(e.line, ()):
      d, name = os.path.split(cand)
      stem = os.path.splitext(name)[0] if _is_video_path(name) else name
      hit = names_in(d).get(stem)
      if hit is not None:
        e.path = os.path.join(d, hit)
        resolved += 1
        break
  line, first = next(iter(listing.candidates.items()))
  listing.notes.append(f"{resolved} of {len(listing.candidates)} videos found under "
                       f"{os.path.abspath(root) if root else 'the current directory'}, trying "
                       f"in order (line {line}): {', '.join(first)} (any video extension)")
  return listing


def _assign_names(entries: list[Entry], named: list[tuple[Entry, str]], source: str,
                  label_names: Sequence[str] | None, labels_file: str) -> list[str] | None:
  """Gives named entries their class index; the class names, or None if unknown."""
  indexed = [e for e in entries if e.label >= 0]
  if named and indexed:
    a, b = sorted((named[0][0], indexed[0]), key=lambda e: e.line)
    raise ListError(f"{source} line {b.line}: labels mix class names and class indices "
                    f"(line {a.line} is the other kind); use one or the other")
  if label_names:
    _check_kinetics_order(label_names, source, labels_file)
    names = list(label_names)
    index = {name: i for i, name in enumerate(names)}
    dataset = kinetics.identify(names)
    if dataset:  # a Kinetics list: the data may spell its classes as the official CSV does
      found = {name for _, name in named if name not in index}
      known = [n for n in found if kinetics.canonical(n) in kinetics.lookup(dataset)]
      index.update(zip(known, kinetics.reference_indices(known, dataset)))
  else:
    names, index = _ordered_names(sorted({name for _, name in named}))
  for e, name in named:
    if name not in index:
      raise ListError(f"{source} line {e.line}: class {name!r} is not in "
                      f"--labels={labels_file or '...'} ({_plural(len(index), 'name')})")
    e.label = index[name]
  for e in indexed:
    if names and e.label >= len(names):
      raise ListError(f"{source} line {e.line}: label {e.label}, but "
                      f"--labels={labels_file or '...'} has {_plural(len(names), 'name')}")
  return names


def _ordered_names(found: Sequence[str]) -> tuple[list[str] | None, dict[str, int]]:
  """(class names by index, each found name's index): the reference's Kinetics order and
  names when ``found`` are a Kinetics set (published heads assume it), else sorted order."""
  dataset = kinetics.identify(found)
  if dataset is None:
    names = sorted(found) or None
    return names, {name: i for i, name in enumerate(names or ())}
  order = kinetics.reference_indices(found, dataset)
  return list(kinetics.labels.class_names(dataset)), dict(zip(found, order))


def _check_kinetics_order(label_names: Sequence[str], source: str, labels_file: str) -> None:
  """--labels naming a Kinetics set must keep the reference's order (its heads assume it)."""
  dataset = kinetics.identify(label_names)
  if dataset is None:
    return
  diff = kinetics.name_differences(label_names, kinetics.labels.class_names(dataset))
  if diff:
    raise ListError(f"--labels={labels_file or '...'} for {source}: the classes of "
                    f"{dataset.upper()} in an order other than the reference's "
                    f"(label_map_{dataset}.txt), which its published heads use: {diff}")


def parse_list(lines: Sequence[str], fmt: str = "auto", *, source: str = "list",
               label_names: Sequence[str] | None = None) -> list[Entry]:
  """List-file lines -> entries (blank lines and '#' comments skipped); see read_list."""
  return read_list(lines, fmt, source=source, label_names=label_names).entries


def scan_folder(folder: str, *, label_names: Sequence[str] | None = None,
                labels_file: str = "") -> Listing:
  """A folder per class -> Listing: FOLDER/<class>/ holds video files and/or frame
  folders; classes are the sorted class folders (a Kinetics set in the reference's
  order) or ``label_names``; each class's
  videos in sorted name order, so the build is reproducible. Entry.line is the
  1-based position in that order. Hidden names are ignored."""
  if not os.path.isdir(folder):
    raise ListError(f"--folder={folder}: not a directory")
  visible = sorted(n for n in os.listdir(folder) if not n.startswith("."))
  dirs = [n for n in visible if os.path.isdir(os.path.join(folder, n))]
  loose = [n for n in visible if n not in dirs]
  notes = [f"{folder}: {_plural(len(loose), 'file')} outside the class folders ignored "
           f"(e.g. {loose[0]})"] if loose else []
  if label_names:
    _check_kinetics_order(label_names, folder, labels_file)
    names = list(label_names)
    folders = names
  else:  # class folders in class-index order; names as the reference spells Kinetics ones
    names, index = _ordered_names(dirs)
    folders = sorted(dirs, key=index.get)
  unknown = [d for d in dirs if d not in folders]
  if unknown:
    raise ListError(f"{os.path.join(folder, unknown[0])}: class folder not in "
                    f"--labels={labels_file or '...'} ({_plural(len(unknown), 'such folder')})")
  if not names:
    raise ListError(f"--folder={folder}: no class folders")
  entries, skipped = [], []
  for label, name in enumerate(folders):
    cdir = os.path.join(folder, name)
    items = sorted(n for n in os.listdir(cdir) if not n.startswith(".")) \
        if os.path.isdir(cdir) else []
    for item in items:
      rel = os.path.join(name, item)
      if os.path.isdir(os.path.join(folder, rel)):
        entries.append(Entry(len(entries) + 1, rel, 0, -1, label, "frames"))
      elif _is_video_path(item):
        entries.append(Entry(len(entries) + 1, rel, 0, -1, label, "video"))
      else:
        skipped.append(rel)
  if skipped:
    notes.append(f"{folder}: {_plural(len(skipped), 'file')} neither a video nor a frame "
                 f"folder, ignored (e.g. {skipped[0]})")
  frames = sum(e.kind == "frames" for e in entries)
  desc = (f"folder per class: {len(entries) - frames} video files, {frames} frame folders; "
          f"labels: class names")
  return Listing(entries, names, desc, notes)


def listing_text(listing: Listing) -> str:
  """The listing as a reference list (path start total label), for its checksum."""
  return "".join(f"{e.path} {e.start} {e.total} {e.label}\n" for e in listing.entries)


def dry_run(listing: Listing, root: str, videos_per_shard: int,
            out: Callable[[str], None] = print) -> int:
  """Prints what a build would do (nothing written or decoded); 1 if paths are missing."""
  out(f"format: {listing.format}")
  for note in listing.notes:
    out(f"note: {note}")
  counts: dict[int, int] = {}
  for e in listing.entries:
    counts[e.label] = counts.get(e.label, 0) + 1
  names = listing.names or []
  classes = sorted(set(counts) | set(range(len(names))))
  num_classes = max([len(names)] + [c + 1 for c in counts])  # as the manifest counts them
  out(f"videos: {len(listing.entries)} in {num_classes} classes")
  for c in classes:
    label = "unlabelled" if c < 0 else f"class {c}" + (f" {names[c]}" if c < len(names) else "")
    out(f"  {label}: {counts.get(c, 0)}")
  missing = [e for e in listing.entries
             if not os.path.exists(os.path.join(root, e.path) if root else e.path)]
  out(f"missing: {len(missing)} of {len(listing.entries)} paths under "
      f"{os.path.abspath(root) if root else 'the current directory'}")
  for e in missing[:10]:
    out(f"  line {e.line}: {e.path}")
  if len(missing) > 10:
    out(f"  ... and {len(missing) - 10} more")
  v = max(1, videos_per_shard)
  out(f"shards: would write {max(1, -(-len(listing.entries) // v))} "
      f"({v} videos per shard)")
  return 1 if missing else 0
