"""AVA keyframes into frame shards: one record per keyframe with its clip and boxes.

  python -m data_prep.ava --frames=DIR --annotations=GT.csv --label_map=PBTXT \
      --out=SHARDS [--proposals=PKL] [--exclusions=CSV] [--short_side=256] \
      [--keyframes_per_shard=256] [--workers=N] [--skip_missing] [--dry_run]

``--frames`` holds one folder per movie, either AVA's frame folders
(``<video>/<video>_%06d.jpg`` at 30 fps, frame 1 at second 900) or the
reference's per-second clips (``<video>/<t>.mp4``). Every keyframe of the
annotation CSV (and of the proposals, for test sets) becomes one record: the
16 frames its clip samples (16 at stride 4 around the keyframe, clips.py)
as JPEGs with the short side at ``--short_side``, and a JSON header "ava"
with the ground-truth boxes and their action ids, the proposals and the
frame size. A record per keyframe keeps reads to exactly the frames a step
uses (about 16 x 25 KB) at little cost in space: neighbouring keyframes'
clips interleave without sharing a frame (offsets -31 + 4k and -1 + 4k from
the first keyframe) and keyframes two seconds apart share one. The manifest
lists every record's keyframe, frame size and box counts, which the
pipelines use to pick and group records without reading them.

Excluded timestamps are left out. Unknown action ids, malformed rows and
boxes outside [0, 1] stop the build with one line naming the file and row;
missing frames stop it too (``--skip_missing`` leaves those keyframes out and
counts them). ``--dry_run`` reports what it found and writes nothing. A rerun
into the same local folder keeps the shards an interrupted build finished
(their status files in _status/ match: same options, same keyframes).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import os
import re
import sys
from typing import Sequence

import numpy as np

from vmae2_jax import paths
from vmae2_jax.data import shards as shard_format
from vmae2_jax.data.ava import clips, formats

CLIP_RE = re.compile(r"^(\d+)\.(mp4|mkv|webm|avi)$")


class MissingFrames(ValueError):
  """Frames a keyframe's clip needs that are not on disk; names the first path."""


@dataclasses.dataclass
class Movie:
  """One movie folder: AVA frame files (numbers -> names) or per-second clips (second -> name)."""
  video_id: str
  folder: str
  layout: str                      # "frames" | "clips" | "missing"
  files: dict[int, str]

  @property
  def num_frames(self) -> int:
    return max(self.files) if self.layout == "frames" and self.files else 0


def scan_movie(root: str, video_id: str) -> Movie:
  """What the folder of ``video_id`` under ``root`` holds (one listing, no decoding)."""
  folder = paths.join(root, video_id)
  if not paths.isdir(folder):
    return Movie(video_id, folder, "missing", {})
  frame_re = re.compile(rf"^{re.escape(video_id)}_(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)
  frames, seconds = {}, {}
  for name in paths.listdir(folder):
    m = frame_re.match(name)
    if m:
      frames[int(m.group(1))] = name
      continue
    m = CLIP_RE.match(name)
    if m:
      seconds[int(m.group(1))] = name
  if frames:
    return Movie(video_id, folder, "frames", frames)
  if seconds:
    return Movie(video_id, folder, "clips", seconds)
  return Movie(video_id, folder, "missing", {})


def needed_files(movie: Movie, timestamp: int, frames: int, stride: int) -> list[str]:
  """The files a keyframe's clip reads; MissingFrames naming the first absent one."""
  if movie.layout == "missing":
    raise MissingFrames(f"{movie.folder}: no frames (<video>_%06d.jpg) or per-second clips "
                        f"(<t>.mp4) for keyframe {formats.image_key(movie.video_id, timestamp)}")
  if movie.layout == "frames":
    key = clips.keyframe_index(timestamp)
    numbers = clips.clip_frame_indices(key, movie.num_frames, frames=frames, stride=stride) + 1
    if key < 0 or key >= movie.num_frames:
      raise MissingFrames(f"{paths.join(movie.folder, f'{movie.video_id}_{key + 1:06d}.jpg')}: "
                          f"keyframe {formats.image_key(movie.video_id, timestamp)} is outside "
                          f"the movie's {movie.num_frames} frames")
    absent = [int(n) for n in numbers if int(n) not in movie.files]
    if absent:
      raise MissingFrames(f"{paths.join(movie.folder, f'{movie.video_id}_{absent[0]:06d}.jpg')}: "
                          f"missing (keyframe {formats.image_key(movie.video_id, timestamp)}"
                          f"{f', and {len(absent) - 1} more frames' if len(absent) > 1 else ''})")
    return [movie.files[int(n)] for n in numbers]
  # Per-second clips: the seconds the reference reads around the keyframe.
  span = frames * stride
  need = range(timestamp - (span // 2 + clips.FPS - 1) // clips.FPS,
               timestamp + (span - span // 2 + clips.FPS - 1) // clips.FPS)
  absent = [t for t in need if t not in movie.files]
  if absent:
    raise MissingFrames(f"{paths.join(movie.folder, f'{absent[0]}.mp4')}: missing (keyframe "
                        f"{formats.image_key(movie.video_id, timestamp)} reads seconds "
                        f"{need[0]}..{need[-1]})")
  return [movie.files[t] for t in need]


# --------------------------------------------------------------------------
# Annotations
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Keyframe:
  key: str
  boxes: list = dataclasses.field(default_factory=list)       # [x1, y1, x2, y2] normalised
  actions: list = dataclasses.field(default_factory=list)     # [[action ids]] per box
  person_ids: list = dataclasses.field(default_factory=list)
  proposals: list = dataclasses.field(default_factory=list)   # [x1, y1, x2, y2, score]


def collect_keyframes(rows: Sequence[formats.BoxRow], proposals: dict[str, np.ndarray],
                      excluded: set[str]) -> tuple[list[Keyframe], int]:
  """Keyframes in annotation order (then proposal-only keys, sorted), rows of one box merged
  into one box with several actions; returns them and the number excluded."""
  by_key: dict[str, Keyframe] = {}
  slot: dict[tuple, int] = {}
  skipped = set()
  for r in rows:
    if r.key in excluded:
      skipped.add(r.key)
      continue
    kf = by_key.setdefault(r.key, Keyframe(r.key))
    if r.box is None:
      continue
    ident = (r.key, r.box, r.person_id)
    if ident not in slot:
      slot[ident] = len(kf.boxes)
      kf.boxes.append(list(r.box))
      kf.actions.append([])
      kf.person_ids.append(r.person_id)
    acts = kf.actions[slot[ident]]
    if r.action_id not in acts:
      acts.append(r.action_id)
  for key in sorted(proposals):
    if key in excluded:
      skipped.add(key)
      continue
    by_key.setdefault(key, Keyframe(key)).proposals = proposals[key].tolist()
  return list(by_key.values()), len(skipped)


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
  frames_root: str
  out: str
  short_side: int = 256
  quality: int = 90
  frames: int = 16
  stride: int = 4


def _frame_jpeg(data: bytes, short_side: int, quality: int) -> tuple[bytes, tuple[int, int]]:
  """A stored frame: the file's own JPEG when already small enough, else resized."""
  from data_prep import decode
  if data[:2] == b"\xff\xd8":
    h, w = shard_format.jpeg_size(data)
    if decode.target_size(h, w, short_side) == (h, w):
      return data, (h, w)
    image = shard_format.decode_jpeg(data)
  else:
    import cv2
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
  h, w = image.shape[:2]
  return shard_format.encode_jpeg(decode._resize(image, short_side), quality), (h, w)


def clip_frames(movie: Movie, timestamp: int, opts: Options) -> tuple[list[bytes], tuple, list]:
  """JPEG bytes of the keyframe's clip, the movie's frame size and each frame's offset from
  the keyframe (after clamping at the movie's ends)."""
  files = needed_files(movie, timestamp, opts.frames, opts.stride)
  if movie.layout == "frames":
    out, size = [], None
    for name in files:
      jpeg, size = _frame_jpeg(paths.read_bytes(paths.join(movie.folder, name)),
                               opts.short_side, opts.quality)
      out.append(jpeg)
    key = clips.keyframe_index(timestamp)
    offsets = [int(re.search(r"_(\d+)\.", n).group(1)) - 1 - key for n in files]
    return out, size, offsets
  # Per-second clips, as the reference: the seconds before the keyframe on the left, from
  # the keyframe's second on the right, trimmed to equal halves, then every stride-th frame.
  from data_prep import decode
  seconds = [int(CLIP_RE.match(n).group(1)) for n in files]
  left, right = [], []
  for t, name in zip(seconds, files):
    with paths.local_copy(paths.join(movie.folder, name), os.path.splitext(name)[1]) as local:
      decoded, _ = decode.decode_video(local, 0, -1, 0)
    if not decoded:
      raise MissingFrames(f"{paths.join(movie.folder, name)}: no frames decode")
    (left if t < timestamp else right).extend(decoded)
  half = min(len(left), len(right))
  window = left[len(left) - half:] + right[:half]
  start = (len(window) - opts.frames * opts.stride) // 2 + (opts.stride - 1) // 2
  idx = np.clip(start + opts.stride * np.arange(opts.frames), 0, len(window) - 1)
  h, w = window[0].shape[:2]
  jpegs = [shard_format.encode_jpeg(decode._resize(window[i], opts.short_side), opts.quality)
           for i in idx]
  return jpegs, (h, w), [int(i) - half for i in idx]


def encode_keyframe(kf: Keyframe, movie: Movie, opts: Options) -> tuple[bytes, dict]:
  """One keyframe's record and its manifest entry."""
  video_id, ts = formats.split_key(kf.key)
  jpegs, (h0, w0), offsets = clip_frames(movie, ts, opts)
  h, w = shard_format.jpeg_size(jpegs[0])
  header = {"video_id": video_id, "timestamp": ts, "frame_size": [h0, w0],
            "frame_offsets": offsets, "boxes": kf.boxes, "actions": kf.actions,
            "person_ids": kf.person_ids, "proposals": kf.proposals}
  record = shard_format.encode_record(jpegs, fps=clips.FPS, source="ava", name=kf.key,
                                      height=h, width=w, extra={"ava": header})
  entry = {"key": kf.key, "size": [h, w], "num_boxes": len(kf.boxes),
           "max_score": max((p[4] for p in kf.proposals), default=0.0)}
  return record, entry


def _shard_key(opts: Options, items) -> str:
  """What a shard's content depends on: the build options and its keyframes' annotations."""
  blob = json.dumps([dataclasses.astuple(opts)[2:],
                     [dataclasses.astuple(kf) for kf, _ in items]], default=str)
  return hashlib.sha256(blob.encode()).hexdigest()


def write_shard(args) -> tuple[str, list[dict], int]:
  """Writes one shard file (tmp then rename) and its status; returns its name, entries and
  size. A shard whose status matches (same options, same keyframes, same file size) from an
  earlier, interrupted build is kept as it is."""
  from array_record.python import array_record_module
  opts, name, items = args
  path = os.path.join(opts.out, name)
  status = os.path.join(opts.out, "_status", name + ".json")
  key = _shard_key(opts, items)
  if os.path.exists(status) and os.path.exists(path):
    with open(status) as f:
      done = json.load(f)
    if done["key"] == key and done["bytes"] == os.path.getsize(path):
      return name, done["entries"], done["bytes"]
  tmp = os.path.join(opts.out, f".{name}.tmp")
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1,uncompressed")
  entries = []
  try:
    for kf, movie in items:
      record, entry = encode_keyframe(kf, movie, opts)
      writer.write(record)
      entries.append(entry)
  finally:
    writer.close()
  os.replace(tmp, path)
  size = os.path.getsize(path)
  os.makedirs(os.path.dirname(status), exist_ok=True)
  with open(status + ".tmp", "w") as f:
    json.dump({"key": key, "bytes": size, "entries": entries}, f)
  os.replace(status + ".tmp", status)
  return name, entries, size


def build(keyframes: list[Keyframe], movies: dict[str, Movie], opts: Options, *,
          label_map: dict[int, str], per_shard: int = 256, workers: int = 1,
          skipped: dict | None = None) -> dict:
  """Writes the shards and the manifest into opts.out (a local folder); returns the manifest."""
  items = [(kf, movies[formats.split_key(kf.key)[0]]) for kf in keyframes]
  n = max(1, -(-len(items) // per_shard))
  plan = [(opts, f"ava-{k:05d}-of-{n:05d}.array_record", items[k * per_shard:(k + 1) * per_shard])
          for k in range(n)]
  if workers > 1:
    with cf.ProcessPoolExecutor(workers) as pool:
      results = list(pool.map(write_shard, plan))
  else:
    results = [write_shard(p) for p in plan]
  entries = [e for _, es, _ in results for e in es]
  ids = sorted(label_map)
  manifest = {
      "format": shard_format.FORMAT,
      "build": {"kind": "ava_keyframes", "short_side": opts.short_side, "quality": opts.quality,
                "frames": opts.frames, "stride": opts.stride, "fps": clips.FPS},
      "num_listed": len(entries), "num_written": len(entries), "num_failed": 0,
      "classes": {"num_classes": max(ids), "names": [label_map.get(i, "") for i in
                                                     range(1, max(ids) + 1)]},
      "ava": {"label_map": {str(k): v for k, v in label_map.items()},
              "keyframes": [e["key"] for e in entries], "sizes": [e["size"] for e in entries],
              "num_boxes": [e["num_boxes"] for e in entries],
              "max_score": [e["max_score"] for e in entries], "skipped": skipped or {}},
      "shards": [{"name": name, "num_records": len(es), "bytes": size}
                 for name, es, size in results],
  }
  with open(os.path.join(opts.out, shard_format.MANIFEST), "w") as f:
    json.dump(manifest, f, separators=(",", ":"))
  return manifest


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _fold(items: Sequence[str], n: int = 3) -> str:
  return "; ".join(items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")


def survey(keyframes: list[Keyframe], root: str, frames: int, stride: int):
  """Movies scanned, and {key: reason} for the keyframes whose frames are missing."""
  movies = {}
  missing: dict[str, str] = {}
  for kf in keyframes:
    video_id, ts = formats.split_key(kf.key)
    if video_id not in movies:
      movies[video_id] = scan_movie(root, video_id)
    try:
      needed_files(movies[video_id], ts, frames, stride)
    except MissingFrames as e:
      missing[kf.key] = str(e)
  return movies, missing


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m data_prep.ava", description=__doc__.split("\n")[0])
  p.add_argument("--frames", required=True, help="folder of movie frame folders or clips")
  p.add_argument("--annotations", required=True, help="AVA ground-truth CSV")
  p.add_argument("--label_map", required=True, help="label-map pbtxt (all ids the CSV uses)")
  p.add_argument("--proposals", default="", help="person boxes pickle (test sets)")
  p.add_argument("--exclusions", default="", help="excluded timestamps CSV")
  p.add_argument("--out", default="", help="output folder (local or bucket)")
  p.add_argument("--short_side", type=int, default=256)
  p.add_argument("--quality", type=int, default=90)
  p.add_argument("--keyframes_per_shard", type=int, default=256)
  p.add_argument("--workers", type=int, default=1)
  p.add_argument("--skip_missing", action="store_true",
                 help="leave out keyframes with missing frames (counted in the manifest)")
  p.add_argument("--dry_run", action="store_true", help="report what was found, write nothing")
  a = p.parse_args(argv)
  if not a.out and not a.dry_run:
    p.error("--out is required (except with --dry_run)")
  try:
    label_map = formats.read_label_map(a.label_map)
    rows = formats.read_box_csv(a.annotations, class_ids=label_map)
    proposals = formats.read_proposals(a.proposals) if a.proposals else {}
    excluded = formats.read_exclusions(a.exclusions) if a.exclusions else set()
  except formats.AvaFormatError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  keyframes, num_excluded = collect_keyframes(rows, proposals, excluded)
  if not keyframes:
    print(f"error: {a.annotations}: no keyframes (empty, or every one excluded)", file=sys.stderr)
    return 2
  movies, missing = survey(keyframes, a.frames, 16, 4)
  layouts = collections.Counter(m.layout for m in movies.values())
  kinds = {"frames": "as frame folders", "clips": "as per-second clips", "missing": "missing"}
  actions = collections.Counter(x for kf in keyframes for acts in kf.actions for x in acts)
  found = ", ".join(f"{v} {kinds[k]}" for k, v in sorted(layouts.items()))
  summary = (f"{len(movies)} movies ({found}), "
             f"{len(keyframes)} keyframes ({num_excluded} excluded), "
             f"{sum(len(kf.boxes) for kf in keyframes)} boxes, "
             f"{sum(actions.values())} box actions over {len(actions)} of {len(label_map)} "
             "classes, "
             f"{sum(len(kf.proposals) for kf in keyframes)} proposals, "
             f"{len(missing)} keyframes with missing frames")
  if a.dry_run:
    print(f"[ava dry run] {summary}")
    for reason in list(missing.values())[:10]:
      print(f"  missing: {reason}")
    if len(missing) > 10:
      print(f"  ... and {len(missing) - 10} more keyframes with missing frames")
    return 0
  if missing and not a.skip_missing:
    print(f"error: {len(missing)} keyframes have missing frames: "
          f"{_fold(list(missing.values()), 1)} (see --dry_run, or --skip_missing)", file=sys.stderr)
    return 2
  keyframes = [kf for kf in keyframes if kf.key not in missing]
  try:
    paths.check_writable(a.out, "--out")
  except paths.PathAccessError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  # ArrayRecord writes local files: a bucket gets them after the build, the manifest last.
  with paths.staged_dir(a.out, last=(shard_format.MANIFEST,)) as local:
    opts = Options(frames_root=a.frames, out=local, short_side=a.short_side, quality=a.quality)
    manifest = build(keyframes, movies, opts, label_map=label_map,
                     per_shard=a.keyframes_per_shard, workers=a.workers,
                     skipped={"excluded": num_excluded, "missing_frames": len(missing)})
  print(f"[ava] {summary}; wrote {manifest['num_written']} keyframes in "
        f"{len(manifest['shards'])} shards to {a.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
