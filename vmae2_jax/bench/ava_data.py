"""AVA detection input pipeline: keyframe shard size and keyframes/s, train and test.

  python -m vmae2_jax.bench ava_data [--height=360 --width=640] [--movies=2] [--scenes=4]
      [--batches=8] [--batch=8] [--json]

Builds a synthetic AVA-format set (data_prep.ava_synthetic) with frames the size
of AVA's (16:9, 360p by default), writes it into keyframe shards with
data_prep.ava (short side 256, as the recipe), then measures in one process,
with 0 Grain workers, one read thread and single-threaded OpenCV:

  train  make_detect_train_iterator: decode 16 frames, 224 crop, flip, box jitter
  test   make_detect_eval_iterator: decode 16 frames at 256 x 455, pad to 256 x 464

"per core" rates divide by the process's CPU seconds. Scale out with
config.data.num_workers (batches do not change with it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time


def _rate(it, batches: int) -> dict:
  next(it)  # warm-up: thread start, first reads
  n = 0
  t0, c0 = time.perf_counter(), time.process_time()
  for _ in range(batches):
    b = next(it)
    n += int((b["keyframe"] >= 0).sum()) if "keyframe" in b else len(b["video"])
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  return {"keyframes": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
          "keyframes_per_s": round(n / wall, 1), "keyframes_per_s_per_core": round(n / cpu, 1)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.bench ava_data",
                              description=__doc__.split("\n")[0])
  p.add_argument("--height", type=int, default=360)
  p.add_argument("--width", type=int, default=640)
  p.add_argument("--movies", type=int, default=2, help="training movies (1 held out)")
  p.add_argument("--scenes", type=int, default=4, help="5-second scenes per movie")
  p.add_argument("--batches", type=int, default=8)
  p.add_argument("--batch", type=int, default=8, help="keyframes per batch")
  p.add_argument("--workdir", default="")
  p.add_argument("--json", action="store_true")
  a = p.parse_args(argv)

  from configs import common
  from configs._detect import detect_defaults
  from data_prep import ava as ava_prep
  from data_prep import ava_synthetic
  from vmae2_jax.data import shards
  from vmae2_jax.data.ava import pipeline

  work = a.workdir or tempfile.mkdtemp(prefix="vmae2_ava_bench_")
  t0 = time.perf_counter()
  files = ava_synthetic.write_synthetic_ava(os.path.join(work, "set"), train_movies=a.movies,
                                            val_movies=1, scenes=a.scenes, height=a.height,
                                            width=a.width)
  generated_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for split in ("train", "val"):
    args = [f"--frames={files['frames']}", f"--annotations={files[split + '_csv']}",
            f"--label_map={files['label_map']}", f"--out={os.path.join(work, split)}"]
    if split == "val":
      args.append(f"--proposals={files['val_proposals']}")
    with contextlib.redirect_stdout(io.StringIO()):
      if ava_prep.main(args) != 0:
        return 1
  built_s = time.perf_counter() - t0
  manifest = shards.load_manifest(os.path.join(work, "train"))
  records = manifest["num_written"]
  size = sum(s["bytes"] for s in manifest["shards"])

  c = common.base_config()
  c.detect = detect_defaults()
  c.data.train_path, c.data.val_path = os.path.join(work, "train"), os.path.join(work, "val")
  c.data.read_threads, c.data.num_workers = 1, 0
  c.batch_size = a.batch
  pipeline.pipelines._init_cv2(False)
  train = _rate(pipeline.make_detect_train_iterator(c, process_index=0, process_count=1,
                                                    seed=0), a.batches)

  def endless():  # passes over the held-out movie, as many as --batches needs
    while True:
      yield from pipeline.make_detect_eval_iterator(c, process_index=0, process_count=1)

  test = _rate(endless(), a.batches)
  result = {"frames": f"{a.height}x{a.width}", "train_keyframes": records,
            "bytes_per_keyframe": int(size / max(records, 1)), "generate_s": round(generated_s, 1),
            "build_s": round(built_s, 1), "train": train, "test": test}
  if a.json:
    print(json.dumps(result))
  else:
    print(f"AVA keyframe shards: {records} keyframes of {a.height}x{a.width} frames stored at "
          f"short side 256, {result['bytes_per_keyframe'] / 1024:.0f} KiB each "
          f"(build {built_s:.1f} s)")
    for name, r in (("train", train), ("test", test)):
      print(f"  {name:5s} {r['keyframes_per_s']:7.1f} keyframes/s, "
            f"{r['keyframes_per_s_per_core']:7.1f} per core ({r['keyframes']} keyframes)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
