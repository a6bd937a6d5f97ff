"""Checkpoint and shard I/O by storage: a local folder against a bucket.

  python -m vmae2_jax.bench storage --dirs=/tmp/ck,gs://BUCKET/ck [--config=configs/demo.py]
      [--repeats=3] [--shards=demo:train,gs://BUCKET/shards/train] [--json]

For each folder in --dirs: the config's whole train state (parameters and
both AdamW moments, as the trainer saves it) saved through the trainer's
Checkpointer (synchronous, so the time is the whole write, in s3:// the upload
too) and restored into its shardings by a fresh Checkpointer, as a resumed run
does (in s3:// the download too); the median of --repeats. For each shard set
in --shards: the time to open it (ShardSource; in s3:// the copy into this
host's cache, VMAE2_JAX_SHARD_CACHE), then every record read once in order
(the bytes one Grain worker fetches before decoding), in MB/s and records/s.

A bucket is reached as the trainer reaches it: gcsfs/s3fs and TensorStore
with credentials (or emulator variables) from the environment.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax

from vmae2_jax import paths


def parse_args(argv):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--dirs", required=True, help="comma-separated folders (local, gs://, s3://)")
  ap.add_argument("--config", default="configs/demo.py", help="whose train state to save")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--shards", default="", help="comma-separated shard sets to read through")
  ap.add_argument("--json", action="store_true", help="one JSON object a line")
  return ap.parse_args(argv)


def checkpoint_times(exp, directory: str, repeats: int) -> dict:
  """Median seconds to save and to restore the train state in `directory` (removed after)."""
  from vmae2_jax.checkpointing import Checkpointer
  state = exp.init_state()
  nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
  saves, restores = [], []
  for i in range(repeats):
    target = paths.join(directory, f"run{i}")
    ckpt = Checkpointer(target, save_every=1, keep=1, async_save=False)
    t0 = time.perf_counter()
    ckpt.save(1, state, {}, {})
    ckpt.wait()
    saves.append(time.perf_counter() - t0)
    ckpt.close()
    ckpt = Checkpointer(target, save_every=1, keep=1, async_save=False)  # as a resume opens it
    t0 = time.perf_counter()
    restored, _, _ = ckpt.restore(1, exp.abstract_state)
    jax.block_until_ready(restored)
    restores.append(time.perf_counter() - t0)
    ckpt.close()
    paths.rmtree(target)
  return {"dir": directory, "state_mb": nbytes / 2**20, "save_s": statistics.median(saves),
          "restore_s": statistics.median(restores)}


def shard_read(spec: str) -> dict:
  """Every record of a shard set read once, in order, as one Grain worker would."""
  from vmae2_jax.data.shards import ShardSource
  t0 = time.perf_counter()
  source = ShardSource(spec)
  opened = time.perf_counter() - t0
  t0 = time.perf_counter()
  total = sum(len(source[i][0]) for i in range(len(source)))
  seconds = time.perf_counter() - t0
  return {"shards": spec, "records": len(source), "mb": total / 2**20, "open_s": opened,
          "mb_per_s": total / 2**20 / seconds, "records_per_s": len(source) / seconds}


def main(argv=None) -> int:
  args = parse_args(argv)
  from vmae2_jax.bench.common import load_config
  from vmae2_jax.training.experiment import setup
  config = load_config(args.config)
  config.mesh.update({"data": 1, "fsdp": 1, "tensor": 1})
  exp = setup(config, jax.devices()[:1])
  rows = [checkpoint_times(exp, d, args.repeats) for d in args.dirs.split(",") if d]
  rows += [shard_read(s) for s in args.shards.split(",") if s]
  for row in rows:
    if args.json:
      print(json.dumps(row))
    elif "dir" in row:
      print(f"{row['dir']}: train state {row['state_mb']:.1f} MB  save {row['save_s']:.2f} s  "
            f"restore {row['restore_s']:.2f} s")
    else:
      print(f"{row['shards']}: {row['records']} records, {row['mb']:.1f} MB  "
            f"open {row['open_s']:.2f} s  {row['mb_per_s']:.1f} MB/s  "
            f"{row['records_per_s']:.1f} records/s")
  return 0
