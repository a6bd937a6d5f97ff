"""TPU targets by the names users book (v5p-128, v6e-64, 2xv5p-256), for compiling without one.

`target("v5p-128")` -> a Target (libtpu topology "v5p:4x4x4", 64 chips, the
chip's HBM and peak), and `tpu_devices(target)` -> compile-only TPU devices
from libtpu (`jax.experimental.topologies.get_topology_desc`): a mesh over
them compiles the real TPU program on a machine without a TPU.

Booked names: v4-N and v5p-N count TensorCores (2 per chip: v5p-8 is 4 chips,
v5p-128 is 64); v5e-N (alias v5litepod-N) and v6e-N count chips. "KxNAME" is
K slices joined over the data-centre network (DCN). A libtpu topology name
("v5p:4x4x12", "v6e:8x16") is taken as given, for the shapes the doubling rule
below does not produce.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import tempfile

GIB = 2**30
INSTALL_HINT = 'pip install -e ".[aot]"'


class TopologyError(ValueError):
  """A target that cannot be compiled for: the message is one line saying what to do."""


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation: HBM a program may use and dense bf16 peak per chip."""

  name: str               # as booked: "v5p"
  hbm_bytes: int          # TPUs: what the TPU compiler lets one program use (below)
  peak_bf16_flops: float  # per chip, per second
  torus_dims: int         # 3: v4/v5p (4 chips per host as 2x2x1); 2: v5e/v6e; 1: GPUs
  cores_per_chip: int     # TensorCores counted in the booked name (megacore chips: 2)
  platform: str = "tpu"


# HBM: the "available HBM" the TPU compiler (libtpu 0.0.42.1) states when a program does not
# fit, a little under the chips' nominal 32 / 16 / 96 / 32 GiB (the runtime keeps the rest);
# fits and headroom are judged against it (tests/test_tpu_aot.py asks the compiler). Peaks:
# Google Cloud's published dense bf16 figures.
CHIPS = {
    "v4": Chip("v4", int(30.75 * GIB), 275e12, 3, 2),
    "v5e": Chip("v5e", int(15.75 * GIB), 197e12, 2, 1),
    "v5p": Chip("v5p", int(95.74 * GIB), 459e12, 3, 2),
    "v6e": Chip("v6e", int(31.25 * GIB), 918e12, 2, 1),
}
ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v5": "v5p"}
# GPUs for XLA's deviceless GPU compiler (the jax CUDA plugin): dense bf16 peak (no sparsity)
# and memory per GPU.
GPUS = {
    "h100": Chip("h100", 80 * GIB, 989e12, 1, 1, "gpu"),
    "h200": Chip("h200", 141 * 10**9, 989e12, 1, 1, "gpu"),
}
GPUS_PER_HOST = 8
MAX_CHIPS = {"v4": 4096, "v5e": 256, "v5p": 8960, "v6e": 256}  # one slice (pod)


@dataclasses.dataclass(frozen=True)
class Target:
  """A compile target: `num_slices` slices of the libtpu topology `topology`."""

  name: str                      # what the user wrote
  chip: Chip
  shape: tuple[int, ...]         # chips per slice along the torus axes
  num_slices: int = 1

  @property
  def topology(self) -> str:
    if self.chip.platform == "gpu":  # XLA's GPU topology: slices x hosts x GPUs per host
      n = self.num_chips
      return f"1x1x{n}" if n <= GPUS_PER_HOST else f"1x{n // GPUS_PER_HOST}x{GPUS_PER_HOST}"
    return f"{self.chip.name}:{'x'.join(map(str, self.shape))}"

  @property
  def chips_per_slice(self) -> int:
    return math.prod(self.shape)

  @property
  def num_chips(self) -> int:
    return self.chips_per_slice * self.num_slices

  @property
  def chips_per_host_bounds(self) -> tuple[int, int, int]:
    """Chips on one host along each axis: 2x2x1 (4 chips a host), smaller for 1-chip slices."""
    shape = tuple(self.shape) + (1,) * (3 - len(self.shape))
    return tuple(min(2, s) if i < 2 else 1 for i, s in enumerate(shape))

  def describe(self) -> str:
    if self.chip.platform == "gpu":
      return (f"{self.name}: {self.num_chips} {self.chip.name.upper()} GPUs (XLA topology "
              f"{self.topology}; {self.chip.hbm_bytes / GIB:g} GiB, "
              f"{self.chip.peak_bf16_flops / 1e12:g} dense bf16 TFLOP/s each)")
    slices = f"{self.num_slices} slices of " if self.num_slices > 1 else ""
    return (f"{self.name}: {slices}{self.topology} = {self.num_chips} {self.chip.name} chips "
            f"({self.chip.hbm_bytes / GIB:.4g} GiB HBM usable, "
            f"{self.chip.peak_bf16_flops / 1e12:g} "
            "bf16 TFLOP/s each)")


def _doubled_shape(chips: int, dims: int) -> tuple[int, ...] | None:
  """The slice shape of a power-of-two chip count: from 2x2(x1), double the last of the
  smallest axes (v5p-16 2x2x2, v5p-32 2x2x4, v5p-64 2x4x4, v5p-128 4x4x4, v6e-8 2x4, ...)."""
  if chips == 1:
    return (1,) * dims
  if chips < 4 or chips & (chips - 1):
    return None
  shape = [2, 2] + [1] * (dims - 2)
  while math.prod(shape) < chips:
    low = min(shape)
    i = max(j for j, s in enumerate(shape) if s == low)
    shape[i] *= 2
  return tuple(shape)


def _chip(gen: str, name: str, field: str) -> Chip:
  gen = ALIASES.get(gen.lower(), gen.lower())
  if gen not in CHIPS:
    raise TopologyError(f"{field}={name}: unknown TPU generation {gen!r}; use one of "
                        f"{', '.join(CHIPS)} (e.g. v5p-128, v6e-64, 2xv5p-256, v5p:4x4x12)")
  return CHIPS[gen]


def target(name: str, field: str = "--topology") -> Target:
  """Parses a booked accelerator name or a libtpu topology name (see the module doc)."""
  text = name.strip()
  g = re.fullmatch(r"(\d+)x(h100|h200)", text.lower())
  if g:
    n = int(g.group(1))
    if n < 1 or (n > GPUS_PER_HOST and n % GPUS_PER_HOST):
      raise TopologyError(f"{field}={name}: up to {GPUS_PER_HOST} GPUs on one host, or whole "
                          f"hosts of {GPUS_PER_HOST} (16xh100, 32xh100, ...)")
    return Target(text, GPUS[g.group(2)], (n,))
  m = re.fullmatch(r"(?:(\d+)x)?(.+)", text)
  slices, rest = int(m.group(1) or 1), m.group(2)
  if slices < 1:
    raise TopologyError(f"{field}={name}: the slice count must be at least 1")
  if ":" in rest:  # libtpu's own name, e.g. v5p:4x4x12
    gen, _, dims = rest.partition(":")
    chip = _chip(gen, name, field)
    if not re.fullmatch(r"\d+(x\d+)*", dims):
      raise TopologyError(f"{field}={name}: write the shape as AxBxC, e.g. {chip.name}:4x4x4")
    shape = tuple(int(d) for d in dims.split("x"))
    if len(shape) != chip.torus_dims or min(shape) < 1:
      raise TopologyError(f"{field}={name}: {chip.name} slices have {chip.torus_dims} axes, "
                          f"e.g. {chip.name}:{'x'.join(['2'] * chip.torus_dims)}")
    return Target(text, chip, shape, slices)
  m = re.fullmatch(r"([a-z0-9]+?)-(\d+)", rest.lower())
  if not m:
    raise TopologyError(f"{field}={name}: not a TPU or GPU name; write e.g. v5p-128 (v4, v5e, "
                        "v5p, v6e), 2xv5p-256 for two slices, a topology such as v5p:4x4x12, "
                        "or 8xh100")
  chip = _chip(m.group(1), name, field)
  count = int(m.group(2))
  if count % chip.cores_per_chip:
    raise TopologyError(f"{field}={name}: {chip.name}-N counts TensorCores, 2 per chip; "
                        f"N must be even (e.g. {chip.name}-8 = 4 chips)")
  chips = count // chip.cores_per_chip
  shape = _doubled_shape(chips, chip.torus_dims)
  if shape is None or chips > MAX_CHIPS[chip.name]:
    unit = "TensorCores" if chip.cores_per_chip > 1 else "chips"
    raise TopologyError(
        f"{field}={name}: no standard {chip.name} slice of {count} {unit} (up to "
        f"{MAX_CHIPS[chip.name] * chip.cores_per_chip}, powers of two from "
        f"{4 * chip.cores_per_chip}); give the slice shape instead, e.g. "
        f"{chip.name}:{'x'.join(['4'] * chip.torus_dims)}")
  return Target(text, chip, shape, slices)


@contextlib.contextmanager
def _quiet_stderr():
  """libtpu prints start-up warnings (TPU_ACCELERATOR_TYPE, TPU_WORKER_HOSTNAMES, ...) from
  C++ straight to file descriptor 2; harmless for compiling. They are kept aside and shown
  only when the call fails."""
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as sink:
    os.dup2(sink.fileno(), 2)
    try:
      yield sink
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def tpu_devices(t: Target, field: str = "--topology") -> list:
  """Compile-only TPU devices of `t` from libtpu (no TPU needed); one-line TopologyError when
  libtpu is missing or refuses the topology."""
  import importlib.util
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no GCE metadata server to ask
  # libtpu takes /tmp/libtpu_lockfile to own the host's TPU chips; compiling opens no
  # chip, so several compiles (test workers, sweeps) may load it side by side.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  if importlib.util.find_spec("libtpu") is None:
    raise TopologyError(f"{field}={t.name}: compiling for TPU needs libtpu, which is not "
                        f"installed: {INSTALL_HINT}")
  from jax.experimental import topologies
  with _quiet_stderr() as sink:
    try:
      desc = topologies.get_topology_desc(
          platform="tpu", topology_name=t.topology,
          chips_per_host_bounds=t.chips_per_host_bounds, num_slices=t.num_slices,
          # v4/v5p: one JAX device per chip (its two TensorCores as one), as on the pod.
          chip_config_name="megacore" if t.chip.cores_per_chip == 2 else "default")
    except Exception as e:  # noqa: BLE001 - libtpu's refusal, reported in one line
      sink.seek(0)
      said = " ".join(str(e).split())[:300]
      raise TopologyError(f"{field}={t.name}: libtpu cannot build {t.topology} "
                          f"(x{t.num_slices} slices): {said}") from None
  return list(desc.devices)


# libtpu's collective matmuls ("windowed einsums"): on larger slices XLA's SPMD partitioner
# does an FSDP weight's all-gather, or its gradient's reduce-scatter, piecewise around the
# ring inside a loop beside the matmul (collective-permutes). The TPU cost model counts such a
# loop's body once (ViT-B fine-tuning on v5p-64: 146 loops, a fifth of the step's FLOPs seen),
# so a program holding them has no whole-step estimate. These flags compile the plain
# all-gather / reduce-scatter and matmul instead.
NO_COLLECTIVE_MATMUL = ("--xla_tpu_enable_windowed_einsum_for_all_gather=false",
                        "--xla_tpu_enable_windowed_einsum_for_reduce_scatter=false")


def prepare_environment(name: str, libtpu_flags: tuple[str, ...] = ()) -> None:
  """Before JAX starts: the host's JAX stays on the CPU, and the settings a compile for
  `name` needs (libtpu: no metadata server; GPU: cuBLAS instead of Triton for matmuls, whose
  tile sizes cannot be chosen without a GPU to autotune on). Unknown names: nothing.
  `libtpu_flags` (e.g. NO_COLLECTIVE_MATMUL) join LIBTPU_INIT_ARGS unless it names them."""
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  given = os.environ.get("LIBTPU_INIT_ARGS", "")
  extra = [f for f in libtpu_flags if f.split("=")[0] not in given]
  if extra:
    os.environ["LIBTPU_INIT_ARGS"] = " ".join([given] + extra).strip()
  if re.fullmatch(r"\d+x(h100|h200)", name.strip().lower()):
    flag = "--xla_gpu_enable_triton_gemm=false"
    if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


def _gpu_target_config(chip: Chip) -> str:
  """XLA's GpuTargetConfigProto (text format) for `chip`, from NVIDIA's published figures:
  what the GPU compiler needs to pick tilings and fusions without a GPU to query. (XLA ships
  fuller specs with measured unit rates: xla/backends/gpu/target_config/specs/.)"""
  bandwidth = {"h100": 3.35e12, "h200": 4.8e12}[chip.name]
  label = {"h100": "NVIDIA H100 80GB HBM3", "h200": "NVIDIA H200"}[chip.name]
  info = {  # Hopper SM: 228 KiB shared memory (227 KiB per block opt-in), 64K registers
      "threads_per_block_limit": 1024, "threads_per_warp": 32,
      "shared_memory_per_block": 48 * 1024, "shared_memory_per_block_optin": 227 * 1024,
      "shared_memory_per_core": 228 * 1024, "threads_per_core_limit": 2048,
      "core_count": 132, "fpus_per_core": 128, "block_dim_limit_x": 2**31 - 1,
      "block_dim_limit_y": 65535, "block_dim_limit_z": 65535,
      "memory_bandwidth": int(bandwidth), "l2_cache_size": 50 * 2**20, "clock_rate_ghz": 1.98,
      "device_memory_size": int(chip.hbm_bytes), "registers_per_core_limit": 65536,
      "registers_per_block_limit": 65536,
  }
  body = "\n".join(f"  {k}: {v}" for k, v in info.items())
  return (f"gpu_device_info {{\n{body}\n  cuda_compute_capability {{ major: 9 minor: 0 }}\n}}\n"
          f'platform_name: "CUDA"\ndnn_version_info {{ major: 9 }}\n'
          f'device_description_str: "{label}"\n')


def gpu_devices(t: Target, field: str = "--topology") -> list:
  """Compile-only CUDA devices of `t` from the jax CUDA plugin (no GPU needed); one-line
  TopologyError when the plugin is missing or refuses the target."""
  import importlib.util
  if not any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin")):
    raise TopologyError(f"{field}={t.name}: compiling for GPU needs the jax CUDA plugin, which "
                        "is not installed: pip install -e \".[cuda]\" (no GPU needed)")
  from jax.experimental import topologies
  with _quiet_stderr():
    try:
      desc = topologies.get_topology_desc(platform="cuda", topology=t.topology,
                                          target_config=_gpu_target_config(t.chip))
    except Exception as e:  # noqa: BLE001 - the plugin's refusal, reported in one line
      said = " ".join(str(e).split())[:300]
      raise TopologyError(f"{field}={t.name}: the CUDA plugin cannot build {t.topology}: "
                          f"{said}") from None
  return list(desc.devices)


def devices(t: Target, field: str = "--topology") -> list:
  """Compile-only devices of a TPU or GPU target."""
  return gpu_devices(t, field) if t.chip.platform == "gpu" else tpu_devices(t, field)
