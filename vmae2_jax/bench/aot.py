"""Ahead-of-time compile of a stage's train step for a TPU target, on a machine without one.

  python -m vmae2_jax.bench aot --config=configs/pretrain_g.py --topology=v5p-128 --clips=128
  python -m vmae2_jax.bench aot --config=configs/pretrain_g.py --topology=v6e-64 \\
      --search --headroom=0.1 --config.model.remat=dots
  python -m vmae2_jax.bench aot --config=configs/finetune_b_k400.py --topology=v5p-8 \\
      --unroll --clips=8 --config.model.num_classes=400
  python -m vmae2_jax.bench aot --config=configs/finetune_b_k400.py --topology=v5p-8 \\
      --test_forward --clips=16 --config.model.num_classes=400

libtpu (the `aot` extra: pip install -e ".[aot]") compiles the real program
-- the trainer's own step through experiment.setup, on compile-only TPU devices
of the booked topology (v4-8.., v5e-N, v5p-8 (4 chips).., v6e-N, 2xv5p-256 for
two slices, or a libtpu name such as v5p:4x4x12) -- and this prints per chip:
HBM of arguments / outputs / temporaries and the peak against the chip's HBM,
the compiled FLOPs against the analytic model FLOPs, the cost model's optimal
seconds and the MFU they imply (labelled compiler-estimated: the TPU cost
model's number, not a measurement), the collectives, custom calls and host
callbacks in the program, and one `AOT_JSON {...}` line (peak_bytes_per_chip,
compiler_estimated_mfu as a fraction, ...).

Sizes: --clips counts clips (views) per chip per update; --batch_size the
recipe's videos per update, all chips. The step needs no data (shard paths
are dropped). Scanned layers: the cost analysis counts a loop body once, so
FLOPs and the estimated MFU need --unroll (config.model.scan_layers=False;
slower to compile); memory is right either way. --search bisects the largest
clips per chip whose peak fits (1 - headroom) of HBM (each compile of ViT-g
takes minutes on a small CPU machine; progress is printed). --test_forward
compiles the multi-view test's forward of a supervised config instead
(--clips then counts views per chip per call). On larger slices libtpu may do FSDP's
gathers and gradient reduce-scatters as collective matmuls, loops the cost model also
counts once (the report says so); --nocollective_matmul compiles without them for
whole-step FLOPs and MFU. Every config field can be
overridden as in training (--config.model.remat=dots --config.mesh.data=2).
"""

from __future__ import annotations

import json
import math
import sys

DEFAULT_CONFIG = "configs/pretrain_g.py"


def _flags():
  from absl import flags
  from ml_collections import config_flags

  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "Python config file (default "
                                  f"{DEFAULT_CONFIG}).", flag_values=fv, lock_config=True)
  flags.DEFINE_string("topology", "v5p-8", "TPU as booked: v5p-128, v6e-64, 2xv5p-256, "
                      "v5p:4x4x12", flag_values=fv)
  flags.DEFINE_integer("clips", None, "clips (views) per chip per update", flag_values=fv)
  flags.DEFINE_integer("batch_size", None, "videos per update, all chips (instead of --clips)",
                       flag_values=fv)
  flags.DEFINE_bool("search", False, "largest clips per chip that fits", flag_values=fv)
  flags.DEFINE_integer("max_clips", 4096, "--search stops doubling here", flag_values=fv)
  flags.DEFINE_float("headroom", 0.1, "fraction of HBM kept free when judging a fit",
                     flag_values=fv)
  flags.DEFINE_bool("unroll", False, "layers unrolled (scan_layers=False): whole-step FLOPs and "
                    "compiler-estimated MFU", flag_values=fv)
  flags.DEFINE_bool("test_forward", False, "the multi-view test's forward, not the train step",
                    flag_values=fv)
  flags.DEFINE_bool("collective_matmul", True, "libtpu's collective matmuls (its choice); "
                    "false: plain all-gathers and reduce-scatters beside each matmul, the "
                    "program the cost model counts whole (it counts a collective matmul "
                    "loop's body once)", flag_values=fv)
  return fv


def _parse(argv: list[str]):
  """absl parsing with main's one-line errors for unknown flags and config fields."""
  from absl import flags
  from vmae2_jax import main as entry

  fv = _flags()
  if not any(a.startswith("--config=") for a in argv):
    argv = [f"--config={DEFAULT_CONFIG}"] + argv
  full = ["bench aot"] + argv
  try:
    fv(full)
  except flags.Error as e:
    raise SystemExit(f"error: {entry._one_line(e)}") from None
  except (KeyError, AttributeError, TypeError, OSError) as e:
    message = entry._unknown_field(full)
    raise SystemExit(f"error: {message or entry._config_load_error(full, e)}") from None
  try:
    fv.config.stage  # noqa: B018 - a config file that failed to load raises here
  except OSError as e:
    raise SystemExit(f"error: {entry._config_load_error(full, e)}") from None
  if fv.clips is not None and fv.batch_size is not None:
    raise SystemExit("error: give --clips (per chip) or --batch_size (all chips), not both")
  if not 0 <= fv.headroom < 1:
    raise SystemExit(f"error: --headroom={fv.headroom}: a fraction of HBM in [0, 1)")
  return fv


def _sized(config, fv, chips: int, clips: int | None):
  """A copy of the config without data, `clips` per chip (or --batch_size videos)."""
  from vmae2_jax.bench.common import without_data

  c = without_data(config)
  if fv.unroll:
    c.model.scan_layers = False
  if fv.test_forward:
    return c
  views = int(c.data.num_sample)
  if clips is not None:
    total = clips * chips
    if total % views:
      raise SystemExit(f"error: {clips} clips per chip x {chips} chips is not a multiple of "
                       f"config.data.num_sample={views} views per video")
    c.batch_size = total // views
  elif fv.batch_size is not None:
    c.batch_size = fv.batch_size
  return c


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "aot":
    argv = argv[1:]
  if any(a in ("-h", "--help") for a in argv):
    print(__doc__)
    return 0
  fv = _parse(argv)
  from vmae2_jax.sharding import topologies
  libtpu_flags = () if fv.collective_matmul else topologies.NO_COLLECTIVE_MATMUL
  topologies.prepare_environment(fv.topology, libtpu_flags)  # before JAX starts
  from vmae2_jax.training import compile_only
  from vmae2_jax.training.config_checks import ConfigError

  try:
    target = topologies.target(fv.topology)
  except topologies.TopologyError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  chips = target.num_chips
  print(target.describe(), flush=True)

  def measure(clips: int | None) -> dict:
    c = _sized(fv.config, fv, chips, clips)
    rows = clips * chips if (fv.test_forward and clips) else None
    report = compile_only.compile_for(c, fv.topology, test_forward=fv.test_forward, rows=rows,
                                      headroom=fv.headroom, field="--topology")
    report["libtpu_flags"] = list(libtpu_flags)
    print(compile_only.format_report(report), flush=True)
    print("AOT_JSON " + json.dumps(report), flush=True)
    return report

  try:
    if not fv.search:
      try:
        measure(fv.clips)
      except Exception as e:  # noqa: BLE001 - a program too big for the chip is an answer
        if not _too_big(e):
          raise
        print(f"DOES NOT FIT: the compiler ran out of {target.chip.name} memory: "
              f"{' '.join(str(e).split())[:400]}", flush=True)
        return 1
      return 0
    return _search(fv, chips, measure)
  except (ConfigError, SystemExit) as e:
    text = str(e) if isinstance(e, ConfigError) else str(e.code)
    print(text if text.startswith("error:") else f"error: {text}", file=sys.stderr)
    return 2


def _too_big(e: BaseException) -> bool:
  """The TPU compiler's refusal of a program larger than the chip's HBM."""
  text = str(e)
  return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text or "out of memory" in text


def _search(fv, chips: int, measure) -> int:
  """Bisection on clips per chip: doubles until a compile does not fit, then halves the gap.
  A compile the TPU compiler refuses for memory counts as not fitting."""
  views = int(fv.config.data.num_sample) if not fv.test_forward else 1
  unit = views // math.gcd(views, chips)  # clips per chip must give whole videos

  def fits(clips: int) -> bool:
    print(f"[search] compiling {clips} clips per chip ...", flush=True)
    try:
      r = measure(clips)
    except Exception as e:  # noqa: BLE001 - only a memory refusal is an answer here
      if not _too_big(e):
        raise
      print(f"[search] {clips} clips per chip: the compiler ran out of HBM", flush=True)
      return False
    print(f"[search] {clips} clips per chip: peak {r['peak_bytes_per_chip'] / 1e9:.4g} GB, "
          f"{'fits' if r['fits'] else 'does not fit'}", flush=True)
    return bool(r["fits"])

  lo, hi = 0, max(unit, (fv.clips or 8) // unit * unit)
  while fits(hi):
    lo, hi = hi, hi * 2
    if hi > fv.max_clips:
      print(f"LARGEST_FIT at least {lo} clips per chip (--max_clips={fv.max_clips} reached)",
            flush=True)
      print("AOT_SEARCH_JSON " + json.dumps({"largest_clips_per_chip": lo, "capped": True,
                                             "topology": fv.topology,
                                             "headroom": fv.headroom}), flush=True)
      return 0
  while hi - lo > unit:
    mid = (lo + hi) // 2 // unit * unit
    if mid <= lo:
      break
    if fits(mid):
      lo = mid
    else:
      hi = mid
  result = {"largest_clips_per_chip": lo, "topology": fv.topology, "headroom": fv.headroom}
  if lo:
    print(f"LARGEST_FIT {lo} clips per chip on {fv.topology} with {100 * fv.headroom:g}% HBM "
          "headroom", flush=True)
  else:
    print(f"nothing fits: {unit} clips per chip already exceed {fv.topology}'s HBM with "
          f"{100 * fv.headroom:g}% headroom", flush=True)
  print("AOT_SEARCH_JSON " + json.dumps(result), flush=True)
  return 0
