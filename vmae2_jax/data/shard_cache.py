"""Shards in a bucket ArrayRecord cannot open (s3://): copied once into a per-host cache.

ArrayRecord 0.8 reads local files and gs:// only. An s3:// shard set is copied
whole into $VMAE2_JAX_SHARD_CACHE (default ~/.cache/vmae2_jax/shards), one
folder per shard-set URL, and read from there. Grain's sampler draws records
from every shard on every host, so each host copies the whole set: the disk
cost is the set's size per host. Each copy's SHA-256 is checked against the
manifest once, when it is fetched; at every start a copy is reused while its size
matches and the manifest's SHA-256 is the one it was checked against (a rebuilt
set is fetched again; damage inside a file is caught by the records' own CRCs
when read). Each file is downloaded to
a temporary name and renamed into place, so processes on one host that fill
the cache together, or a kill half-way, never leave a partial file under the
shard's name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

from vmae2_jax import paths


def cache_root() -> str:
  root = os.environ.get("VMAE2_JAX_SHARD_CACHE")
  if not root:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = os.path.join(base, "vmae2_jax", "shards")
  return root


def folder_for(url: str) -> str:
  """The cache folder of one shard-set URL (readable name + a hash of the whole URL)."""
  url = paths.resolve(url)
  tail = paths.basename(url) or "shards"
  return os.path.join(cache_root(), f"{tail}-{hashlib.sha1(url.encode()).hexdigest()[:12]}")


def _stamp(local: str) -> str:
  return os.path.join(os.path.dirname(local), f".{os.path.basename(local)}.sha256")


def _is_current(local: str, entry: dict) -> bool:
  """The cached file matches the manifest entry: size, and the SHA-256 checked at its copy."""
  if not os.path.isfile(local) or os.path.getsize(local) != int(entry.get("bytes", -1)):
    return False
  want = entry.get("sha256")
  if not want:
    return True
  try:
    with open(_stamp(local), encoding="utf-8") as f:
      return f.read().strip() == want
  except OSError:
    return False


def local_files(url: str, entries: list[dict], manifest_path: str) -> list[str]:
  """Local paths of the shards `entries` (manifest entries) of the set at `url`, copied into
  the cache where missing or stale. OSError naming the shard URL when a copy fails or does
  not match the manifest."""
  folder = folder_for(url)
  os.makedirs(folder, exist_ok=True)
  out = []
  for entry in entries:
    local = os.path.join(folder, entry["name"])
    if not _is_current(local, entry):
      src = paths.join(url, entry["name"])
      fd, part = tempfile.mkstemp(prefix=f".{entry['name']}.", suffix=".part", dir=folder)
      os.close(fd)
      try:
        paths.copy(src, part)
        got = paths.sha256(part)
        want = entry.get("sha256")
        if want and got != want:
          raise OSError(f"{src}: its SHA-256 differs from {manifest_path}'s (rewritten since "
                        "the build; rebuild this shard set)")
        os.replace(part, local)
        with open(_stamp(local), "w", encoding="utf-8") as f:  # after: never vouches a stale file
          f.write(got + "\n")
      finally:
        if os.path.exists(part):
          os.remove(part)
    out.append(local)
  return out
