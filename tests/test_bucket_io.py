"""Conversion, predict and extract with their inputs and outputs in a bucket (real servers).

The same calls on local copies give the reference: whatever is read from or
written to gs:// or s3:// must match it exactly.
"""

import os

import jax
import numpy as np
import pytest

from tests.test_conversion import _hf_state, hf_to_official
from tests.test_predict_extract import source, videos  # noqa: F401  (module fixtures)
from vmae2_jax import extract, paths, predict
from vmae2_jax.checkpointing import model_io
from vmae2_jax.conversion import torch_io, torch_pickle
from vmae2_jax.conversion.cli import main as convert_main


def _same_tree(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_convert_a_pth_in_a_bucket_and_export_into_it(bucket, tmp_path, capsys):
  local = str(tmp_path / "official.pth")
  torch_pickle.save({"model": hf_to_official(_hf_state(), True)}, local)
  remote = paths.join(bucket, "weights", "official.pth")
  paths.copy(local, remote)
  assert convert_main(["--src", local, "--dst", str(tmp_path / "ref")]) == 0
  dst = paths.join(bucket, "converted")  # gs:// written by Orbax, s3:// staged then uploaded
  assert convert_main(["--src", remote, "--dst", dst]) == 0
  assert f"wrote {dst}" in capsys.readouterr().out
  want, want_meta = model_io.load_model_params(str(tmp_path / "ref"))
  got, meta = model_io.load_model_params(dst)
  _same_tree(got, want)
  assert paths.isfile(paths.join(dst, "model.json")) and paths.glob(dst, "params/*")
  assert meta["source"] == remote and want_meta["source"] == local
  out = paths.join(bucket, "export", "back.pth")  # export: written locally, uploaded whole
  assert convert_main(["--to", "official", "--src", dst, "--dst", out]) == 0
  back, _ = torch_io.read_state_dict(out)
  ref, _ = torch_io.read_state_dict(local)
  assert sorted(back) == sorted(ref)
  for k in ref:
    np.testing.assert_array_equal(back[k], ref[k])
  # A damaged object: the one-line error names the URL, not the local staging copy.
  paths.write_bytes(paths.join(bucket, "weights", "bad.pth"), b"PK\x03\x04 not a zip")
  assert convert_main(["--src", paths.join(bucket, "weights", "bad.pth"), "--dst",
                       str(tmp_path / "bad")]) == 1
  err = capsys.readouterr().err
  assert err.startswith(f"error: {paths.join(bucket, 'weights', 'bad.pth')}"), err
  assert "vmae2_stage_" not in err


def test_predict_and_extract_read_videos_and_write_features_in_a_bucket(
    source, videos, gcs_bucket, tmp_path, capsys):  # noqa: F811
  names = ["syn", "short"]
  folder = paths.join(gcs_bucket, "videos")
  for k in names + ["broken"]:
    paths.copy(videos[k], paths.join(folder, os.path.basename(videos[k])))
  listed = paths.join(gcs_bucket, "list.txt")
  paths.write_text(listed, "".join(paths.join(folder, os.path.basename(videos[k])) + "\n"
                                   for k in names))
  remote_videos = [paths.join(folder, os.path.basename(videos[k])) for k in names]
  # predict: --video and --list in the bucket, the same probabilities as the local files
  assert predict.main([f"--init_from={source[0]}", f"--list={listed}", "--json"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2 and all(remote_videos[i] in lines[i] for i in range(2))
  pred = predict.Predictor(source[0])
  for got, want in zip(pred.predict(remote_videos), pred.predict([videos[k] for k in names])):
    np.testing.assert_array_equal(got.probs, want.probs)
  # predict --video=FOLDER/ walks a bucket folder as a local one: subfolders, name order,
  # only video files
  tree = paths.join(gcs_bucket, "tree")
  paths.copy(videos["short"], paths.join(tree, "b", "short.mp4"))
  paths.copy(videos["syn"], paths.join(tree, "a", "syn.mp4"))
  paths.write_text(paths.join(tree, "a", "notes.txt"), "not a video\n")
  assert predict.main([f"--init_from={source[0]}", f"--video={tree}/", "--top=1"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert [ln.split(": 1. ")[0] for ln in lines] == [paths.join(tree, "a", "syn.mp4"),
                                                    paths.join(tree, "b", "short.mp4")], lines
  # extract: a bucket folder of videos in (one broken), features and failures.tsv out
  out = paths.join(gcs_bucket, "features")
  args = ["--window=4", "--stride=3", "--size=32", "--batch=4", "--no_progress"]
  assert extract.main([f"--init_from={source[0]}", f"--videos={folder}", f"--out={out}",
                       *args]) == 1
  local_list = tmp_path / "videos.txt"
  # The folder's name order, so each window sits at the same place in the same batch:
  # XLA:CPU's dots need not give a row the same bits at another row of the batch.
  in_folder_order = sorted(names, key=lambda k: os.path.basename(videos[k]))
  local_list.write_text("".join(videos[k] + "\n" for k in in_folder_order))
  assert extract.main([f"--init_from={source[0]}", f"--videos={local_list}",
                       f"--out={tmp_path / 'feats'}", *args]) == 0
  assert paths.listdir(out) == ["extract.json", "failures.tsv", "short.npy", "syn.npy"]
  assert "broken.mp4" in paths.read_text(paths.join(out, "failures.tsv"))
  for k in names:
    with paths.open_file(paths.join(out, f"{k}.npy"), "rb") as f:
      got = np.load(f)
    np.testing.assert_array_equal(got, np.load(tmp_path / "feats" / f"{k}.npy"))
  capsys.readouterr()
  # an --out bucket that does not exist: one line, before any video is read
  missing = gcs_bucket.replace("gs://b-", "gs://nobucket-") + "/features"
  assert extract.main([f"--init_from={source[0]}", f"--videos={folder}", f"--out={missing}",
                       *args]) != 0
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and f"--out={missing}" in err and "does not exist" in err


def test_build_shards_into_a_bucket_and_read_them_from_it(bucket, tmp_path, monkeypatch):
  from data_prep import build_shards
  from tests.test_data_build import _frame_folders
  from vmae2_jax.data import shards
  root = tmp_path / "root"
  root.mkdir()
  (tmp_path / "list.txt").write_text("\n".join(_frame_folders(str(root), n=3, frames=10)))
  args = [f"--list={tmp_path / 'list.txt'}", f"--root={root}", "--videos_per_shard=2",
          "--workers=1", "--short_side=32"]
  out = paths.join(bucket, "shards")
  cache = tmp_path / "cache"
  monkeypatch.setenv("VMAE2_JAX_SHARD_CACHE", str(cache))
  assert build_shards.main(args + [f"--out={out}"]) == 0
  assert build_shards.main(args + [f"--out={tmp_path / 'local'}"]) == 0
  assert paths.exists(paths.join(out, "manifest.json"))
  src, ref = shards.ShardSource(out), shards.ShardSource(str(tmp_path / "local"))
  assert src.paths[0].startswith(out + "/")
  assert len(src) == len(ref) == 3
  for i in range(3):
    assert src[i][0] == ref[i][0]
  if bucket.startswith("gs://"):  # ArrayRecord reads the gs:// objects itself
    assert src.files == src.paths and not cache.exists()
  else:  # s3://: read from this host's cache, filled once
    assert all(f.startswith(str(cache)) for f in src.files)
    mtimes = [os.stat(f).st_mtime_ns for f in src.files]
    again = shards.ShardSource(out)
    assert [os.stat(f).st_mtime_ns for f in again.files] == mtimes  # reused, not fetched again
    with open(again.files[0], "r+b") as f:  # a cached copy cut short: fetched again
      f.truncate(100)
    assert shards.ShardSource(out)[0][0] == ref[0][0]
    # an object rewritten since the build (same size, other bytes): one line naming it
    name = paths.basename(src.paths[1])
    data = bytearray(paths.read_bytes(src.paths[1]))
    data[-1] ^= 0xFF
    paths.write_bytes(src.paths[1], bytes(data))
    os.remove(again.files[1])
    with pytest.raises(shards.ShardFileError) as e:
      shards.ShardSource(out)
    assert str(e.value) == (f"{src.paths[1]}: its SHA-256 differs from {out}/manifest.json's "
                            "(rewritten since the build; rebuild this shard set)")
    assert sorted(os.listdir(os.path.dirname(again.files[0]))) == sorted(
        n for f in again.files for n in (os.path.basename(f), f".{os.path.basename(f)}.sha256")
        if n != name)  # no partial file left
  # an unwritable --out: one line, nothing built
  missing = bucket.replace("://b-", "://nobucket-") + "/shards"
  assert build_shards.main(args + [f"--out={missing}"]) == 2


def test_damaged_bucket_step_is_named_and_set_aside(bucket):
  """The size list, the damage check and set_aside (a copy then a delete there) in a bucket
  (s3://: the step restored from the staging folder's download)."""
  from vmae2_jax.checkpointing import Checkpointer
  from vmae2_jax.checkpointing.manager import SET_ASIDE
  directory = paths.join(bucket, "run", "checkpoints")
  state = {"w": np.arange(64, dtype=np.float32)}
  ckpt = Checkpointer(directory, save_every=1, keep=3, async_save=False)
  for step in (1, 2):
    ckpt.save(step, jax.tree.map(lambda x, s=step: x * s, state), {"i": step})
  ckpt.wait()
  listed = paths.join(directory, "2", "vmae2_file_sizes.json")
  assert paths.exists(listed)
  sizes = __import__("json").loads(paths.read_text(listed))["files"]
  victim = max(sizes, key=lambda rel: sizes[rel] if rel.startswith("state/") else -1)
  data = paths.read_bytes(paths.join(directory, "2", victim))
  paths.write_bytes(paths.join(directory, "2", victim), data[:len(data) // 2])
  assert ckpt.damage(2) == (f"{paths.join(directory, '2', victim)} has {len(data) // 2} bytes; "
                            f"{len(data)} were written")
  step, got, data_state, _ = ckpt.restore_latest(state, fallback=True)
  assert step == 1 and data_state == {"i": 1}
  np.testing.assert_array_equal(got["w"], state["w"])
  assert ckpt.all_steps() == [1]
  assert paths.listdir(paths.join(bucket, "run", SET_ASIDE)) == ["2_damaged"]
  assert paths.exists(paths.join(bucket, "run", SET_ASIDE, "2_damaged", victim))
  ckpt.close()


def test_s3_steps_are_uploaded_marker_last_and_a_half_upload_is_never_loaded(s3_server):
  """s3:// checkpoints: Orbax writes a local staging folder, each committed step is uploaded
  with STEP/commit_success.txt last; retention, the listing and restore see only committed
  steps; a step whose upload was cut short (no marker) is never restored and is removed when
  the folder is next opened."""
  from vmae2_jax.checkpointing import Checkpointer, staging
  from vmae2_jax.checkpointing.manager import FILE_SIZES
  directory = paths.join(s3_server.make_bucket(), "run", "checkpoints")
  state = {"w": np.arange(64, dtype=np.float32), "b": np.ones((3, 5), np.float32)}
  ckpt = Checkpointer(directory, save_every=1, keep=2, keep_period=2, async_save=True)
  for step in (1, 2, 3, 4, 5):
    ckpt.save(step, jax.tree.map(lambda x, s=step: x * s, state), {"i": step})
  ckpt.close()
  assert ckpt.all_steps() == [2, 4, 5]  # the newest 2, and 2 (a multiple of keep_period)
  assert staging.committed_steps(directory) == [2, 4, 5]
  assert not os.path.exists(ckpt._mirror.local)  # the staging folder goes with the manager
  for step in (2, 4, 5):
    files = dict(paths.walk_files(paths.join(directory, str(step))))
    assert staging.COMMIT_MARKER in files and FILE_SIZES in files, files
  # A kill half-way through uploading step 6: some of step 5's files under 6/, no marker.
  src = paths.join(directory, "5")
  for rel, _ in list(paths.walk_files(src))[:3]:
    if rel != staging.COMMIT_MARKER:
      paths.copy(paths.join(src, rel), paths.join(directory, "6", rel))
  assert paths.isdir(paths.join(directory, "6"))
  ckpt = Checkpointer(directory, save_every=1, keep=2)
  assert not paths.exists(paths.join(directory, "6"))  # removed on opening
  step, got, data_state, _ = ckpt.restore_latest(state)
  assert (step, data_state) == (5, {"i": 5})
  _same_tree(got, jax.tree.map(lambda x: x * 5, state))
  ckpt.close()
  # The newest committed step loses its marker (a delete cut short): the one before is used.
  paths.remove(paths.join(directory, "5", staging.COMMIT_MARKER))
  ckpt = Checkpointer(directory, save_every=1, keep=2)
  step, got, _, _ = ckpt.restore_latest(state)
  assert step == 4
  _same_tree(got, jax.tree.map(lambda x: x * 4, state))
  assert model_io.resolve(paths.dirname(directory))[1] == paths.join(directory, "4")
  ckpt.close()


def test_unreachable_schemes_are_refused_in_one_line(s3_server, tmp_path, capsys):
  """A scheme no library here reaches (hf://) as a workdir, shard folder, model source or
  converter output: one line naming the flag or field."""
  import pytest

  from tests.helpers import tiny_finetune_config
  from vmae2_jax.training import config_checks, run_record
  tail = ("which reaches local paths, gs:// and s3:// only, not hf://; copy it to one of "
          "those, or mount it on every worker and give the mounted path (docs/scaling.md)")
  with pytest.raises(run_record.WorkdirError) as e:
    with run_record.starting("hf://org/run"):
      raise AssertionError("the body must not run")
  assert str(e.value) == f"--workdir=hf://org/run: its checkpoints are written by Orbax, {tail}"
  c = tiny_finetune_config(**{"data.val_path": "hf://org/val"})
  c.data.source = "shards"
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check_common(c, 1)
  assert str(e.value) == f"config.data.val_path=hf://org/val: the shards are read, {tail}"
  c.data.val_path, c.data.train_path = "", ""
  bucket_url = s3_server.make_bucket()
  c.data.sources = ({"path": "/local/a"}, {"path": paths.join(bucket_url, "b")})
  config_checks.check_common(c, 1)  # s3:// shard folders are fine
  assert convert_main(["--src", str(tmp_path / "none.pth"), "--dst", "hf://org/m"]) == 1
  assert capsys.readouterr().err == (f"error: --dst=hf://org/m: Orbax writes the converted "
                                     f"checkpoint, {tail}\n")
  assert predict.main(["--init_from=hf://org/m", "--video=x.mp4"]) == 1  # no network reached
  assert capsys.readouterr().err == (f"error: --init_from=hf://org/m: Orbax reads the weights "
                                     f"of a model source, {tail}\n")
  assert paths.listdir(bucket_url) == []


def test_storage_bench_times_a_local_folder_and_a_bucket(gcs_bucket, s3_server, tmp_path, capsys):
  import json

  from tests.test_fault_injection import _config_file
  from vmae2_jax.bench.__main__ import main as bench_main
  cfg = _config_file(str(tmp_path / "pt.py"), "tiny_pretrain_config", {})
  folders = [str(tmp_path / "ck"), paths.join(gcs_bucket, "ck"),
             paths.join(s3_server.make_bucket(), "ck")]
  assert bench_main(["storage", f"--dirs={','.join(folders)}", f"--config={cfg}",
                     "--repeats=1", "--shards=demo:val", "--json"]) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
  assert [r.get("dir") for r in rows[:3]] == folders and rows[3]["shards"] == "demo:val"
  assert all(r["save_s"] > 0 and r["restore_s"] > 0 and r["state_mb"] > 0 for r in rows[:3])
  assert rows[3]["records"] > 0 and rows[3]["mb_per_s"] > 0 and rows[3]["open_s"] > 0
  assert paths.listdir(folders[1]) == [] == paths.listdir(folders[2])  # timed steps removed
