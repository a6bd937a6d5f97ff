"""Decode videos once into JPEG-frame ArrayRecord shards.

  python -m data_prep.build_shards (--list=FILE [--root=DIR] | --folder=DIR) --out=DIR \
      [--labels=FILE] [--short_side=320] [--workers=N] [--videos_per_shard=128] \
      [--format=auto] [--dry_run]

List formats (the reference's, space separated, one video a line):
  pretrain   ``path start_index total_frames [label]`` (total -1 = whole video)
  video      ``video_path label``
  frames     ``frame_folder total_frames label``
``--format=auto`` picks by column count (2 -> video, 4 -> pretrain); for 3
columns a line is ``pretrain`` when its total is -1 or its path is a video
file, else ``frames``. A line holding a tab is split on tabs (paths may hold
spaces). A file whose first line holds a comma is a CSV (``--format=csv``):
the same layouts, comma-separated. Any list may start with a header line
(first field ``path``, ``video``, ``file``, ..., no integer field).

The field's other formats (auto-detected, or forced with --format):
  kinetics    Kinetics' official CSV (header ``label,youtube_id,time_start,
              time_end,split[,is_cc]``; test: no label): the clip file is found
              under --root as <label>/<youtube_id>_<start:06d>_<end:06d>.mp4 or
              <youtube_id>.mp4, per class folder or flat, any video extension
  frame_list  PySlowFast frame lists (header ``original_vido_id video_id
              frame_id path labels``, a line per frame): a video per folder
  ucf101      UCF101's trainlist0N/testlist0N.txt (``Class/v_....avi [1-based
              index]``), class = folder (only with --format=ucf101)
  JSON        Something-Something V2's something-something-v2-*.json: class =
              template without brackets, video <id>.webm or frame folder <id>
mmaction2's lists are the reference layouts (``path label``; rawframes
``frame_dir total_frames label``, with an offset ``frame_dir offset total label``),
and PySlowFast's video CSVs are ``path label`` lines.

Labels are class indices or class names (not both in one list). Names get
indices in sorted order, or in the order of ``--labels=FILE`` (one name a
line, index = line order; also ``index name`` lines as UCF101's classInd.txt,
or a JSON object name -> index as Something-Something's labels.json).
``--folder=DIR`` reads DIR/<class>/<video file or frame folder> instead of a
list: classes are the sorted class folders (or the ``--labels`` order). Known
class names go into the manifest. ``--dry_run`` checks the input and the paths
without writing anything and reports what a build would do.

Shard k holds list lines [k*V, (k+1)*V) in list order, so a rerun maps every
line to the same shard. A shard is finished when its status file in _status/
matches the current build parameters and the shard file has the recorded
size; a rerun skips finished shards and rebuilds partial ones from scratch.
Every listed video ends up either written or in the failure report with a
reason (missing, corrupt, zero_frames, too_short), and the manifest checks
written + failed == listed.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from typing import Callable, Sequence

from data_prep.decode import VideoFailure, decode_video, read_frame_folder
from data_prep.lists import (FORMATS, Entry, ListError, Listing, dry_run, listing_text,
                             read_label_names, read_list, read_ssv2_json, resolve_candidates,
                             scan_folder)
from vmae2_jax import paths
from vmae2_jax.data import shards as shard_format
from vmae2_jax.progress import duration

STATUS_DIR = "_status"
BUILD_VERSION = 1


# --------------------------------------------------------------------------
# Loading one entry
# --------------------------------------------------------------------------


def load_entry(entry: Entry, root: str, short_side: int, min_frames: int) -> tuple[list, float]:
  """Frames of one list entry, or VideoFailure with the reason."""
  path = os.path.join(root, entry.path) if root else entry.path
  if not os.path.exists(path):
    raise VideoFailure("missing", path)
  if os.path.isdir(path):
    frames, fps = read_frame_folder(path, entry.start, entry.total, short_side)
  else:
    frames, fps = decode_video(path, entry.start, entry.total, short_side)
  if not frames:
    raise VideoFailure("zero_frames", f"no frames from index {entry.start}")
  if len(frames) < min_frames:
    raise VideoFailure("too_short", f"{len(frames)} frames < --min_frames={min_frames}")
  if 0 < entry.total and len(frames) < entry.total and entry.kind == "frames":
    raise VideoFailure("too_short", f"{len(frames)} frames, list says {entry.total}")
  return frames, fps


# --------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------


@dataclasses.dataclass
class BuildOptions:
  root: str
  out: str
  short_side: int = 320
  quality: int = 90
  min_frames: int = 4
  videos_per_shard: int = 128
  name: str = "shard"
  manifest_name: str = shard_format.MANIFEST
  source: str = ""  # tag stored in every record; default: the list file's name


def shard_name(opts: BuildOptions, k: int, n: int) -> str:
  return f"{opts.name}-{k:05d}-of-{n:05d}.array_record"


def shard_key(opts: BuildOptions, entries: Sequence[Entry]) -> str:
  """Changes whenever anything that determines the shard's bytes changes."""
  h = hashlib.sha256()
  h.update(json.dumps([BUILD_VERSION, shard_format.FORMAT, opts.short_side, opts.quality,
                       opts.min_frames, opts.root, opts.source]).encode())
  for e in entries:
    h.update(json.dumps(dataclasses.asdict(e)).encode())
  return h.hexdigest()


def _status_path(opts: BuildOptions, name: str) -> str:
  return os.path.join(opts.out, STATUS_DIR, name + ".json")


def shard_finished(opts: BuildOptions, name: str, key: str) -> dict | None:
  """The shard's status if it is complete and current, else None."""
  try:
    with open(_status_path(opts, name)) as f:
      status = json.load(f)
  except (OSError, ValueError):
    return None
  path = os.path.join(opts.out, name)
  if status.get("key") != key or not os.path.exists(path):
    return None
  if os.path.getsize(path) != status.get("bytes"):
    return None
  return status


_progress = None  # per-process shared counter (set by the pool initializer)


def _init_worker(counter) -> None:
  global _progress
  _progress = counter
  import cv2
  cv2.setNumThreads(1)


def _tick() -> None:
  if _progress is not None:
    with _progress.get_lock():
      _progress.value += 1


def build_shard(args: tuple[BuildOptions, str, list[Entry]]) -> dict:
  """Writes one shard (tmp file then rename) and its status; returns the status."""
  from array_record.python import array_record_module
  opts, name, entries = args
  key = shard_key(opts, entries)
  path = os.path.join(opts.out, name)
  tmp = os.path.join(opts.out, f".{name}.tmp")
  status_file = _status_path(opts, name)
  if os.path.exists(status_file):
    os.remove(status_file)
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1,uncompressed")
  failures, labels, written, frames_total = [], [], 0, 0
  for e in entries:
    try:
      frames, fps = load_entry(e, opts.root, opts.short_side, opts.min_frames)
      jpegs = [shard_format.encode_jpeg(f, opts.quality) for f in frames]
      h, w = frames[0].shape[:2]
      writer.write(shard_format.encode_record(jpegs, label=e.label, fps=fps,
                                              source=opts.source, name=e.path,
                                              height=h, width=w))
      written += 1
      frames_total += len(frames)
      labels.append(e.label)
    except VideoFailure as f:
      failures.append({"line": e.line, "path": e.path, "reason": f.reason, "detail": f.detail})
    except Exception as f:  # noqa: BLE001 - report, never drop silently
      failures.append({"line": e.line, "path": e.path, "reason": "corrupt",
                       "detail": f"{type(f).__name__}: {f}"})
    _tick()
  writer.close()
  os.replace(tmp, path)
  status = {"name": name, "key": key, "num_listed": len(entries), "num_records": written,
            "num_frames": frames_total, "bytes": os.path.getsize(path),
            "sha256": paths.sha256(path), "labels": labels, "failures": failures,
            "first_line": entries[0].line if entries else 0,
            "last_line": entries[-1].line if entries else 0}
  os.makedirs(os.path.dirname(status_file), exist_ok=True)
  with open(status_file + ".tmp", "w") as f:
    json.dump(status, f)
  os.replace(status_file + ".tmp", status_file)
  return status


def build(entries: list[Entry], opts: BuildOptions, *, workers: int = 1,
          list_sha256: str = "", label_names: Sequence[str] | None = None,
          log: Callable[[str], None] | None = None, progress: bool = True) -> dict:
  """Builds (or finishes) the shard set; returns the manifest it writes."""
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  os.makedirs(opts.out, exist_ok=True)
  v = max(1, opts.videos_per_shard)
  n = max(1, -(-len(entries) // v))
  plan = [(shard_name(opts, k, n), entries[k * v:(k + 1) * v]) for k in range(n)]
  statuses, todo = {}, []
  for name, chunk in plan:
    status = shard_finished(opts, name, shard_key(opts, chunk))
    if status is not None:
      statuses[name] = status
    else:
      todo.append((opts, name, chunk))
  planned = {name for name, _ in plan}
  stale = sorted(f for f in os.listdir(opts.out)
                 if f.startswith(opts.name + "-") and f.endswith(".array_record") and f not in planned)
  if stale:
    log(f"note: {len(stale)} shard files from another build are not in this manifest "
        f"(e.g. {stale[0]}); remove them if they are not needed")
  skipped_videos = sum(s["num_listed"] for s in statuses.values())
  if statuses:
    log(f"resuming: {len(statuses)} of {n} shards already finished ({skipped_videos} videos)")
  todo_videos = sum(len(t[2]) for t in todo)
  ctx = mp.get_context("spawn")  # no fork: decoders and JAX may hold threads
  counter = ctx.Value("l", 0)
  t0 = time.time()

  show = progress

  def progress(final: bool = False) -> None:
    if not show:
      return
    done = counter.value
    rate = done / max(time.time() - t0, 1e-6)
    eta = (todo_videos - done) / rate if rate > 0 else float("inf")
    failed = sum(len(s["failures"]) for s in statuses.values())
    msg = (f"\r[build_shards] {skipped_videos + done}/{len(entries)} videos "
           f"({100 * (skipped_videos + done) / max(len(entries), 1):5.1f}%)  {rate:6.1f} videos/s  "
           f"ETA {duration(eta)}  shards {len(statuses)}/{n}  failed {failed}")
    print(msg, end="\n" if final else "", file=sys.stderr, flush=True)

  if todo:
    if workers > 1 and len(todo) > 1:
      # A worker that dies (a decoder crash) breaks the pool: fail loudly rather than
      # hang; finished shards are kept and a rerun resumes from them.
      with cf.ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx,
                                  initializer=_init_worker, initargs=(counter,)) as pool:
        futures = {pool.submit(build_shard, t): t[1] for t in todo}
        pending = set(futures)
        while pending:
          done, pending = cf.wait(pending, timeout=1.0, return_when=cf.FIRST_COMPLETED)
          for f in done:
            try:
              status = f.result()
            except cf.BrokenExecutor as e:
              raise RuntimeError(f"a worker died while building {futures[f]} (decoder crash or "
                                 f"out of memory?); finished shards are kept, rerun to resume "
                                 f"or use --workers=1 to find the video") from e
            statuses[status["name"]] = status
          progress()
    else:
      _init_worker(counter)
      for task in todo:
        status = build_shard(task)
        statuses[status["name"]] = status
        progress()
    progress(final=True)
  manifest = write_manifest(opts, [statuses[name] for name, _ in plan], len(entries),
                            list_sha256=list_sha256, label_names=label_names)
  log(f"[build_shards] {manifest['num_written']} written, {manifest['num_failed']} failed, "
      f"{manifest['num_listed']} listed -> {os.path.join(opts.out, opts.manifest_name)}")
  return manifest


def write_manifest(opts: BuildOptions, statuses: list[dict], num_listed: int, *,
                   list_sha256: str = "", label_names: Sequence[str] | None = None) -> dict:
  """Manifest + failure report from the shard statuses (no timestamps: reruns are identical)."""
  failures = sorted((f for s in statuses for f in s["failures"]), key=lambda f: f["line"])
  labels = [l for s in statuses for l in s["labels"]]
  counts: dict[str, int] = {}
  for l in labels:
    counts[str(l)] = counts.get(str(l), 0) + 1
  written = sum(s["num_records"] for s in statuses)
  if written + len(failures) != num_listed:
    raise RuntimeError(f"count mismatch: {written} written + {len(failures)} failed != "
                       f"{num_listed} listed")
  reasons: dict[str, int] = {}
  for f in failures:
    reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
  valid = [l for l in labels if l >= 0]
  manifest = {
      "format": shard_format.FORMAT,
      "build": {"short_side": opts.short_side, "quality": opts.quality,
                "min_frames": opts.min_frames, "videos_per_shard": opts.videos_per_shard,
                "source": opts.source, "list_sha256": list_sha256},
      "num_listed": num_listed, "num_written": written, "num_failed": len(failures),
      "num_frames": sum(s["num_frames"] for s in statuses),
      "failure_reasons": reasons,
      "classes": {"num_classes": max((max(valid) + 1) if valid else 0, len(label_names or ())),
                  "counts": counts,
                  **({"names": list(label_names)} if label_names else {})},
      "shards": [{"name": s["name"], "num_records": s["num_records"], "bytes": s["bytes"],
                  "sha256": s["sha256"], "first_line": s["first_line"],
                  "last_line": s["last_line"]} for s in statuses],
      "failures": failures,
  }
  stem = os.path.splitext(opts.manifest_name)[0]
  _write_json(os.path.join(opts.out, opts.manifest_name), manifest)
  report = os.path.join(opts.out, stem.replace("manifest", "failures") + ".tsv"
                        if "manifest" in stem else stem + ".failures.tsv")
  with open(report + ".tmp", "w") as f:
    f.write("line\tpath\treason\tdetail\n")
    for x in failures:
      f.write(f"{x['line']}\t{x['path']}\t{x['reason']}\t{x['detail']}\n")
  os.replace(report + ".tmp", report)
  return manifest


def _write_json(path: str, obj) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(path + ".tmp", path)


def verify(out: str, manifest_name: str = shard_format.MANIFEST) -> list[str]:
  """Shards whose size or sha256 differ from the manifest."""
  with open(os.path.join(out, manifest_name)) as f:
    manifest = json.load(f)
  bad = []
  for s in manifest["shards"]:
    p = os.path.join(out, s["name"])
    if not os.path.exists(p) or os.path.getsize(p) != s["bytes"] or paths.sha256(p) != s["sha256"]:
      bad.append(s["name"])
  return bad


def _read_input(a: argparse.Namespace) -> tuple[Listing, str, bytes, str]:
  """(listing, root, bytes to checksum, default source tag) from --list or --folder."""
  names = read_label_names(a.labels) if a.labels else None
  if a.folder:
    listing = scan_folder(a.folder, label_names=names, labels_file=a.labels)
    return (listing, a.folder, listing_text(listing).encode(),
            os.path.basename(os.path.normpath(a.folder)))
  try:
    with open(a.list, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise ListError(f"--list={a.list}: cannot read it ({e})") from e
  try:
    text = raw.decode("utf-8-sig")  # a BOM is common in spreadsheet exports
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b"\n") + 1
    raise ListError(f"{a.list} line {line}: not UTF-8 text (byte {raw[e.start]:#04x} at offset "
                    f"{e.start}); save the list as UTF-8") from None
  if text.lstrip()[:1] in ("[", "{") and a.format == "auto":
    try:
      items = json.loads(text)
    except ValueError as e:
      raise ListError(f"{a.list}: starts like JSON but is not ({e})") from None
    listing = read_ssv2_json(items, source=a.list, label_names=names, labels_file=a.labels)
  else:
    listing = read_list(text.splitlines(), a.format, source=a.list, label_names=names,
                        labels_file=a.labels)
  return resolve_candidates(listing, a.root), a.root, raw, os.path.basename(a.list)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--list", default="", help="list or CSV file, one video a line")
  p.add_argument("--folder", default="",
                 help="instead of --list: a folder per class, DIR/<class>/<video or frame folder>")
  p.add_argument("--root", default="", help="directory the list's paths are relative to")
  p.add_argument("--out", default="", help="output directory for shards + manifest "
                 "(gs:// or s3:// too: built in --staging, then uploaded)")
  p.add_argument("--staging", default="",
                 help="with a bucket --out: the local folder the shards are built in first "
                 "(default: a temporary one; give one to resume an interrupted build)")
  p.add_argument("--short_side", type=int, default=320, help="resize short side (0 = keep)")
  p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)),
                 help="parallel processes, one shard each at a time")
  p.add_argument("--videos_per_shard", type=int, default=128)
  p.add_argument("--quality", type=int, default=90, help="JPEG quality")
  p.add_argument("--min_frames", type=int, default=4, help="fewer decoded frames = too_short")
  p.add_argument("--format", default="auto", choices=list(FORMATS),
                 help="list format (auto detects all but ucf101; see the top of this file)")
  p.add_argument("--name", default="shard", help="shard file name prefix")
  p.add_argument("--source", default="",
                 help="source tag stored in records (default: list or folder name)")
  p.add_argument("--labels", default="",
                 help="class-name file, one name a line, index = line order")
  p.add_argument("--dry_run", action="store_true",
                 help="only parse and check paths; exit 1 if any are missing")
  p.add_argument("--verify", action="store_true", help="only check shard checksums")
  a = p.parse_args(argv)
  if a.verify:
    if not a.out:
      p.error("--verify needs --out")
    bad = verify(a.out)
    print("ok" if not bad else "bad shards: " + " ".join(bad))
    return 1 if bad else 0
  if bool(a.list) == bool(a.folder):
    p.error("give one of --list=FILE or --folder=DIR")
  if a.folder and (a.root or a.format != "auto"):
    p.error("--root and --format do not apply to --folder (its paths are relative to it)")
  if not a.out and not a.dry_run:
    p.error("--out is required (except with --dry_run or --verify)")
  try:
    listing, root, raw, source = _read_input(a)
  except ListError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for note in listing.notes if not a.dry_run else ():
    print(f"note: {note}", file=sys.stderr)
  if a.dry_run:
    return dry_run(listing, root, a.videos_per_shard)
  # ArrayRecord writes local files: a bucket --out is built in a local folder, then
  # uploaded, the manifest last (so a reader never finds a manifest before its shards).
  try:
    paths.check_writable(a.out, "--out")
  except paths.PathAccessError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  remote = paths.is_remote(a.out)
  staging = (a.staging or tempfile.mkdtemp(prefix="vmae2_shards_")) if remote else a.out
  opts = BuildOptions(root=root, out=staging, short_side=a.short_side, quality=a.quality,
                      min_frames=a.min_frames, videos_per_shard=a.videos_per_shard,
                      name=a.name, source=a.source or source)
  manifest = build(listing.entries, opts, workers=a.workers,
                   list_sha256=hashlib.sha256(raw).hexdigest(), label_names=listing.names)
  if remote:
    _upload(staging, a.out, opts.manifest_name)
    if not a.staging:
      shutil.rmtree(staging, ignore_errors=True)
  if manifest["num_failed"]:
    print(f"{manifest['num_failed']} failed: see {os.path.join(a.out, 'failures.tsv')} "
          f"({manifest['failure_reasons']})", file=sys.stderr)
  empty = empty_classes(manifest)
  if empty:
    print(f"warning: {len(empty)} of {manifest['classes']['num_classes']} classes have no "
          f"video in {a.out}: {', '.join(empty[:5])}"
          + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
          + " (their videos failed, or none were listed)", file=sys.stderr)
  return 0


def _upload(staging: str, out: str, manifest_name: str) -> None:
  """The built shard set to a bucket: every file but the manifest, then the manifest."""
  files = [rel for rel, _ in paths.walk_files(staging)]
  for rel in sorted(files, key=lambda r: r == manifest_name):
    paths.copy(os.path.join(staging, rel), paths.join(out, rel))
  print(f"[build_shards] uploaded {len(files)} files to {out}", file=sys.stderr)


def empty_classes(manifest: dict) -> list[str]:
  """Names (or indices) of the classes with no written video."""
  classes = manifest["classes"]
  names = classes.get("names") or [str(i) for i in range(classes["num_classes"])]
  return [names[i] for i in range(classes["num_classes"]) if not classes["counts"].get(str(i))]


if __name__ == "__main__":
  sys.exit(main())
