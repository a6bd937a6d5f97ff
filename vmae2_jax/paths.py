"""One place that decides how a user's path is opened: local folders, gs:// and s3:// alike.

Every path a user gives (--workdir, init_from, shard folders, videos, outputs)
goes through here. Local paths are made absolute; URLs are kept as they are
(os.path.abspath("gs://b/x") would give "<cwd>/gs:/b/x"). Files are reached
through etils.epath, the path layer Orbax uses: gcsfs for gs:// and s3fs for
s3://, with credentials from the environment as those clients expect
(application default credentials; AWS_* variables or ~/.aws), and their
documented emulator variables (STORAGE_EMULATOR_HOST, AWS_ENDPOINT_URL).

Object stores differ from a disk in three ways this module hides:
  * no directories: makedirs is a no-op there, a "folder" exists once an object
    under it does;
  * no rename: a move is a copy then a delete (not atomic; callers that need
    atomicity write a whole object at once, which a PUT is);
  * no append: `SegmentLog` writes one object per writer and segment, and
    `read_lines` merges them back in order.
Readers that need a real file (PyAV, ArrayRecord writers, torch pickles mapped
in memory) use `local_copy`; writers that need a real folder use `staged_dir`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import posixpath
import shutil
import tempfile
from typing import Iterator

from etils import epath

SCHEMES = ("gs://", "s3://")


class PathAccessError(OSError):
  """A path that cannot be read or written; the message is one line naming it."""


def is_remote(path) -> bool:
  """True for a URL (gs://, s3://, ...), False for a local path."""
  return "://" in os.fspath(path)


def resolve(path) -> str:
  """An absolute local path, or the URL unchanged (without a trailing slash)."""
  path = os.fspath(path)
  if is_remote(path):
    scheme, rest = path.split("://", 1)
    return f"{scheme}://{posixpath.normpath(rest) if rest.strip('/') else rest}"
  return os.path.abspath(os.path.expanduser(path))


def join(base, *parts: str) -> str:
  """base/part/...: a string, '/'-joined for URLs, os.path.join for local paths."""
  base = os.fspath(base)
  return posixpath.join(base, *parts) if is_remote(base) else os.path.join(base, *parts)


def dirname(path) -> str:
  path = os.fspath(path)
  return posixpath.dirname(path.rstrip("/")) if is_remote(path) else os.path.dirname(path)


def basename(path) -> str:
  path = os.fspath(path)
  return posixpath.basename(path.rstrip("/")) if is_remote(path) else os.path.basename(path)


def to_epath(path) -> epath.Path:
  """The epath.Path of a user's path (local ones made absolute)."""
  return epath.Path(resolve(path))


# ------------------------------------------------------------------ queries
def exists(path) -> bool:
  return to_epath(path).exists()


def isdir(path) -> bool:
  return to_epath(path).is_dir()


def isfile(path) -> bool:
  p = to_epath(path)
  return p.exists() and not p.is_dir()


def getsize(path) -> int:
  if not is_remote(path):
    return os.path.getsize(path)
  return int(to_epath(path).stat().length)


def listdir(path) -> list[str]:
  """Names in a folder (sorted); [] when it does not exist."""
  p = to_epath(path)
  if is_remote(path):
    _forget_listings(path)  # another process may have written since the last listing
  if not p.is_dir():
    return []
  return sorted(c.name for c in p.iterdir())


def glob(folder, pattern: str) -> list[str]:
  """Full paths in `folder` matching `pattern`, sorted."""
  if is_remote(folder):
    _forget_listings(folder)
  return sorted(os.fspath(p) for p in to_epath(folder).glob(pattern))


def walk_files(folder) -> Iterator[tuple[str, int]]:
  """(path relative to folder, size) of every file under folder."""
  folder = resolve(folder)
  if not is_remote(folder):
    for root, _, files in os.walk(folder):
      for name in files:
        full = os.path.join(root, name)
        yield os.path.relpath(full, folder), os.path.getsize(full)
    return
  _forget_listings(folder)
  fs = _fs(folder)
  for full, info in sorted(fs.find(folder, detail=True).items()):
    if info.get("type") != "directory":
      yield posixpath.relpath(_url(folder, full), folder), int(info.get("size") or 0)


# ------------------------------------------------------------------ reading and writing
def sha256(path) -> str:
  """Hex sha256 of a file's bytes, local or in a bucket, read 4 MB at a time."""
  import hashlib
  digest = hashlib.sha256()
  with open_file(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def open_file(path, mode: str = "r", **kwargs):
  """A file object (text modes read and write UTF-8)."""
  if "b" not in mode:
    kwargs.setdefault("encoding", "utf-8")
  if not is_remote(path):
    return open(resolve(path), mode, **kwargs)  # noqa: SIM115
  if "b" not in mode:  # epath's fsspec backend opens binary; wrap for text
    import io
    encoding = kwargs.pop("encoding")
    return io.TextIOWrapper(to_epath(path).open(mode.replace("t", "") + "b"), encoding=encoding,
                            **kwargs)
  return to_epath(path).open(mode)


def read_text(path, encoding: str = "utf-8") -> str:
  return to_epath(path).read_text(encoding=encoding)


def read_bytes(path) -> bytes:
  return to_epath(path).read_bytes()


def write_text(path, text: str) -> None:
  """Writes the whole file at once: a local file via a temporary + rename, an object by one
  upload (an object appears whole or not at all), so a reader never sees half of it."""
  write_bytes(path, text.encode("utf-8"))


def write_bytes(path, data: bytes) -> None:
  if is_remote(path):
    to_epath(path).write_bytes(data)
    return
  path = resolve(path)
  tmp = path + ".tmp"  # one name: a killed writer's leftover is replaced by the next write
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def makedirs(path) -> None:
  """Creates a local folder and its parents; nothing to do in an object store."""
  if not is_remote(path):
    os.makedirs(resolve(path), exist_ok=True)


def remove(path) -> None:
  """Deletes a file (no error when it is already gone)."""
  with contextlib.suppress(FileNotFoundError):
    to_epath(path).unlink()


def rmtree(path) -> None:
  """Deletes a folder and everything under it (no error when it is gone)."""
  if not is_remote(path):
    shutil.rmtree(resolve(path), ignore_errors=True)
    return
  with contextlib.suppress(FileNotFoundError):
    _fs(path).rm(resolve(path), recursive=True)
  _forget_listings(path)


def copy(src, dst) -> None:
  """Copies one file, across local and remote paths alike."""
  src, dst = resolve(src), resolve(dst)
  if not is_remote(src) and not is_remote(dst):
    shutil.copyfile(src, dst)
  elif is_remote(src) and is_remote(dst):
    if src.split("://")[0] == dst.split("://")[0]:
      _fs(src).copy(src, dst)  # server-side
    else:  # gs:// <-> s3://: through a local file
      with local_copy(src) as local:
        _fs(dst).put_file(local, dst)
  elif is_remote(dst):
    _fs(dst).put_file(src, dst)
  else:
    _fs(src).get_file(src, dst)


def copy_tree(src, dst) -> None:
  """Copies every file under folder src to folder dst."""
  for rel, _ in walk_files(src):
    target = join(dst, *rel.split("/"))
    makedirs(dirname(target))
    copy(join(src, *rel.split("/")), target)


def move(src, dst) -> None:
  """Moves a file or folder. Local: a rename; an object store has none, so a copy of every
  object then the delete of the source (a reader may see both meanwhile)."""
  src, dst = resolve(src), resolve(dst)
  if not is_remote(src) and not is_remote(dst):
    shutil.move(src, dst)
    return
  if isdir(src):
    copy_tree(src, dst)
    rmtree(src)
  else:
    copy(src, dst)
    remove(src)


# ------------------------------------------------------------------ real files for libraries
@contextlib.contextmanager
def local_copy(path, suffix: str = "") -> Iterator[str]:
  """A local file path holding `path`'s bytes (the path itself when it is local)."""
  if not is_remote(path):
    yield resolve(path)
    return
  with tempfile.TemporaryDirectory(prefix="vmae2_stage_") as tmp:
    local = os.path.join(tmp, basename(path) + suffix)
    _fs(path).get_file(resolve(path), local)
    yield local


@contextlib.contextmanager
def staged_dir(dest, last: tuple[str, ...] = ()) -> Iterator[str]:
  """A local folder to write into; on success its files are uploaded to `dest` (the folder
  itself when it is local), the files named in `last` after all others (e.g. a manifest,
  so no reader finds it before what it lists). On failure nothing is uploaded."""
  if not is_remote(dest):
    makedirs(dest)
    yield resolve(dest)
    return
  with tempfile.TemporaryDirectory(prefix="vmae2_stage_") as tmp:
    yield tmp
    for rel, _ in sorted(walk_files(tmp), key=lambda f: f[0] in last):
      target = join(dest, *rel.split("/"))
      makedirs(dirname(target))
      copy(join(tmp, *rel.split("/")), target)


# ------------------------------------------------------------------ append without append
class SegmentLog:
  """Lines appended to `path` by one writer for one segment of a run.

  Local: appended to the file itself, line-buffered (a kill loses at most the
  line being written). Object store: there is no append, and two writers that
  read, extend and rewrite one object race; so each writer keeps its own
  objects, PATH.parts/STAMP-PID-NNNN, rewritten whole at each flush and rolled
  over every `roll` lines to bound the upload. `read_lines` merges the file and
  the parts in the order they were written.
  """

  def __init__(self, path, roll: int = 500):
    self.path = resolve(path)
    self._roll = roll
    self._text = ""
    self._part = 0
    self._file = None
    if is_remote(self.path):
      stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
      self._prefix = join(parts_dir(self.path), f"{stamp}-{os.getpid()}")
    else:
      self._file = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
      if self._file.tell() > 0:
        with open(self.path, "rb") as r:
          r.seek(-1, os.SEEK_END)
          if r.read(1) != b"\n":  # a kill cut the last line short: start a fresh one
            self._file.write("\n")

  def write(self, text: str) -> None:
    """Appends text (lines end with "\n"); in a bucket, visible once this returns."""
    if self._file is not None:
      self._file.write(text)
      return
    self._text += text
    write_text(f"{self._prefix}-{self._part:04d}", self._text)
    if self._text.count("\n") >= self._roll:
      self._text, self._part = "", self._part + 1

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def parts_dir(path) -> str:
  return resolve(path) + ".parts"


def read_lines(path) -> list[str]:
  """Every line of `path` and of its SegmentLog parts, in the order they were written."""
  lines: list[str] = []
  if exists(path):
    lines += read_text(path).splitlines()
  for part in listdir(parts_dir(path)):
    lines += read_text(join(parts_dir(path), part)).splitlines()
  return lines


# ------------------------------------------------------------------ access checks
def check_writable(folder, what: str) -> None:
  """Writes and deletes a probe object in `folder`; raises PathAccessError with one line
  naming `what` and the folder (missing bucket, no permission, no credentials, ...)."""
  folder = resolve(folder)
  probe = join(folder, f".write_test.{os.getpid()}")
  try:
    makedirs(folder)
    write_bytes(probe, b"")
    remove(probe)
  except Exception as e:  # noqa: BLE001  every client has its own exception types
    raise PathAccessError(f"{what}={folder}: cannot create or write it "
                          f"({reason(e, folder)})") from None


class UnreachableURLError(PathAccessError):
  """A URL of a scheme no library under us can reach (neither gs:// nor s3://)."""


# How a URL reaches the libraries that open paths themselves. Orbax (through TensorStore) and
# ArrayRecord open local paths and gs:// natively. s3:// they cannot: Orbax 0.12 passes each
# path through os.path.normpath ("s3://b/x" becomes "s3:/b/x") and gives TensorStore a driver
# for gs:// only, ArrayRecord 0.8 has a GCS client only. So s3:// is STAGED: checkpoints are
# written into a local folder and uploaded step by step with a commit marker last
# (checkpointing/staging.py), shards are copied once into a per-host cache (data/shard_cache.py).
# Everything else in this module reaches s3:// through s3fs.
NATIVE_SCHEMES = ("gs://",)
STAGED_SCHEMES = ("s3://",)


def is_staged(path) -> bool:
  """True for a URL that Orbax and ArrayRecord reach only through a local copy (s3://)."""
  return os.fspath(path).startswith(STAGED_SCHEMES)


def check_native(path, what: str, needs: str) -> None:
  """Raises UnreachableURLError, one line, for a URL of a scheme outside SCHEMES (hf://,
  http://, ...): `what`=path (the flag or config field; "" for the path alone) and `needs`
  (which library reads or writes it there). Call it before anything is written."""
  path = resolve(path)
  if is_remote(path) and not path.startswith(SCHEMES):
    scheme = path.split("://", 1)[0]
    raise UnreachableURLError(
        f"{what + '=' if what else ''}{path}: {needs}, which reaches local paths, gs:// and "
        f"s3:// only, not {scheme}://; copy it to one of those, or mount it on every worker "
        "and give the mounted path (docs/scaling.md)")


def reason(error: BaseException, path=None) -> str:
  """A short, user-facing reason for a storage client's exception on `path`."""
  if path is not None and not is_remote(path) and isinstance(error, OSError):
    return error.strerror or str(error)  # the OS says it best ("Not a directory")
  if path is not None and is_remote(path) and isinstance(error, FileNotFoundError):
    root = bucket(path)
    with contextlib.suppress(Exception):
      if not _fs(root).exists(root):
        return f"the bucket {root} does not exist"
  text = " ".join(str(error).split()) or type(error).__name__
  lowered = text.lower()
  name = type(error).__name__
  if "credentials" in lowered or "defaultcredentialserror" in name.lower():
    return f"no credentials: {_short(text)}"
  if "bucket does not exist" in lowered or "nosuchbucket" in lowered or (
      "not found" in lowered and "bucket" in lowered):
    return f"the bucket does not exist: {_short(text)}"
  if isinstance(error, PermissionError) or "403" in text or "access denied" in lowered:
    return f"permission denied: {_short(text)}"
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  return f"{name}: {_short(text)}"


def bucket(path) -> str:
  """gs://name of gs://name/x/y."""
  scheme, rest = resolve(path).split("://", 1)
  return f"{scheme}://{rest.split('/')[0]}"


def _short(text: str, limit: int = 200) -> str:
  return text if len(text) <= limit else text[:limit] + " ..."


# ------------------------------------------------------------------ fsspec internals
def _fs(path):
  """The fsspec file system epath uses for this URL (gcsfs, s3fs)."""
  from etils.epath import backend
  return backend.fsspec_backend.fs(resolve(path))


class _NoTraceback(logging.Filter):
  """gcsfs logs each request it gives up on with the whole traceback; the error then reaches
  the caller, which reports it in one line naming the path. Keep gcsfs's line, drop the rest."""

  def filter(self, record: logging.LogRecord) -> bool:
    record.exc_info, record.exc_text = None, None
    return True


logging.getLogger("gcsfs").addFilter(_NoTraceback())


def _url(folder: str, found: str) -> str:
  """fsspec lists 'bucket/key': put the folder's scheme back."""
  return found if is_remote(found) else f"{folder.split('://')[0]}://{found}"


def _forget_listings(path) -> None:
  with contextlib.suppress(Exception):
    _fs(path).invalidate_cache()
