"""Compile a kernel's C++ source into a shared library, once per machine.

The library is built on first use with the host's C++ compiler for the host
CPU (-march=native) and cached under ~/.cache/vmae2_jax/kernels (or
$VMAE2_JAX_KERNEL_CACHE), keyed by the source, the XLA FFI headers, the
compiler, the CPU's feature flags and any tuning -D flags
($VMAE2_JAX_KERNEL_DEFINES), so a shared home directory on a
cluster with mixed CPUs never loads a library built for another CPU. Builds
write to a temporary name and rename, so concurrent processes (pytest -n,
several hosts) never load a half-written file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path


class KernelBuildError(RuntimeError):
  """No compiler, or the compiler failed; the message says which and how."""


def find_compiler() -> str | None:
  """$CXX, else the first of g++, c++, clang++ on PATH."""
  if os.environ.get("CXX"):
    return shutil.which(os.environ["CXX"])
  for name in ("g++", "c++", "clang++"):
    if shutil.which(name):
      return shutil.which(name)
  return None


def cache_dir() -> Path:
  root = os.environ.get("VMAE2_JAX_KERNEL_CACHE")
  if not root:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = os.path.join(base, "vmae2_jax", "kernels")
  path = Path(root)
  try:
    path.mkdir(parents=True, exist_ok=True)
    return path
  except OSError:  # read-only home: fall back to a per-user temp dir
    path = Path(tempfile.gettempdir()) / f"vmae2_jax_kernels_{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cpu_features() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return line
  except OSError:
    pass
  return platform.processor()


# Host-tuned flags to try in order: x86 and most others, Arm's spelling, none.
_ARCH_FLAGS = (["-march=native"], ["-mcpu=native"], [])


def _defines() -> list[str]:
  """-D flags from $VMAE2_JAX_KERNEL_DEFINES (block sizes for tuning; see cpu_kernels.cc)."""
  flags = os.environ.get("VMAE2_JAX_KERNEL_DEFINES", "").split()
  bad = [f for f in flags if not f.startswith("-D")]
  if bad:
    raise KernelBuildError(f"VMAE2_JAX_KERNEL_DEFINES may hold only -DNAME=VALUE flags; got "
                           f"{' '.join(bad[:3])}")
  return flags


def build_library(source: Path, include_dir: str, name: str) -> Path:
  """Path of the compiled shared library for `source`, building it if needed."""
  compiler = find_compiler()
  if compiler is None:
    raise KernelBuildError(
        f"no C++ compiler found (set $CXX or install g++) to build {source.name}")
  version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
  headers = sorted(Path(include_dir).rglob("*.h"))
  digest = hashlib.sha256()
  defines = _defines()
  for part in [source.read_bytes(), version.encode(), _cpu_features().encode(),
               platform.machine().encode(), " ".join(defines).encode()] + [
                   h.read_bytes() for h in headers]:
    digest.update(part)
  out = cache_dir() / f"{name}-{digest.hexdigest()[:16]}.so"
  if out.exists():
    return out

  # The first model of a machine waits for this (~20 s on 2 cores): say why it is quiet.
  logging.info("building the CPU kernels %s once for this machine (cached in %s)", source.name,
               cache_dir())
  errors = []
  for arch in _ARCH_FLAGS:
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    cmd = [compiler, "-O3", "-std=c++17", "-shared", "-fPIC", *arch, *defines,
           "-isystem", include_dir, str(source), "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
      os.replace(tmp, out)
      return out
    tmp.unlink(missing_ok=True)
    errors.append(proc.stderr.strip().splitlines()[-1:] or ["?"])
  raise KernelBuildError(f"{compiler} could not build {source} ({errors[0][0]}); "
                         f"last command: {' '.join(cmd)}")
