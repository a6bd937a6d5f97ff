"""Conversion, predict and extract with their inputs and outputs in a bucket (real servers).

The same calls on local copies give the reference: whatever is read from or
written to gs:// or s3:// must match it exactly.
"""

import os

import jax
import numpy as np

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
  # Orbax writes gs:// itself; an s3:// destination would be refused, so convert locally.
  dst = paths.join(bucket, "converted") if bucket.startswith("gs://") else str(tmp_path / "c")
  assert convert_main(["--src", remote, "--dst", dst]) == 0
  assert f"wrote {dst}" in capsys.readouterr().out
  want, want_meta = model_io.load_model_params(str(tmp_path / "ref"))
  got, meta = model_io.load_model_params(dst)
  _same_tree(got, want)
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
  local_list.write_text("".join(videos[k] + "\n" for k in names))
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


def test_build_shards_into_a_bucket_and_read_them_from_it(gcs_bucket, tmp_path):
  from data_prep import build_shards
  from tests.test_data_build import _frame_folders
  from vmae2_jax.data import shards
  root = tmp_path / "root"
  root.mkdir()
  (tmp_path / "list.txt").write_text("\n".join(_frame_folders(str(root), n=3, frames=10)))
  args = [f"--list={tmp_path / 'list.txt'}", f"--root={root}", "--videos_per_shard=2",
          "--workers=1", "--short_side=32"]
  out = paths.join(gcs_bucket, "shards")
  assert build_shards.main(args + [f"--out={out}"]) == 0
  assert build_shards.main(args + [f"--out={tmp_path / 'local'}"]) == 0
  assert paths.exists(paths.join(out, "manifest.json"))
  src, ref = shards.ShardSource(out), shards.ShardSource(str(tmp_path / "local"))
  assert src.paths[0].startswith(out + "/")  # ArrayRecord reads the gs:// objects itself
  assert len(src) == len(ref) == 3
  for i in range(3):
    assert src[i][0] == ref[i][0]
  # an unwritable --out: one line, nothing built
  missing = gcs_bucket.replace("gs://b-", "gs://nobucket-") + "/shards"
  assert build_shards.main(args + [f"--out={missing}"]) == 2


def test_damaged_bucket_step_is_named_and_set_aside(gcs_bucket):
  """The size list, the damage check and set_aside (a copy then a delete there) in gs://."""
  from vmae2_jax.checkpointing import Checkpointer
  from vmae2_jax.checkpointing.manager import SET_ASIDE
  directory = paths.join(gcs_bucket, "run", "checkpoints")
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
  assert paths.listdir(paths.join(gcs_bucket, "run", SET_ASIDE)) == ["2_damaged"]
  assert paths.exists(paths.join(gcs_bucket, "run", SET_ASIDE, "2_damaged", victim))
  ckpt.close()


MOUNT = ("which opens local paths and gs:// only, not s3://; mount the bucket on every worker "
         "(mountpoint-s3, s3fs-fuse) and give the mounted path (docs/scaling.md)")


def test_s3_workdir_shards_and_model_sources_are_refused_naming_the_mount_route(
    s3_server, tmp_path, capsys):  # noqa: F811
  """Orbax and ArrayRecord cannot reach s3://: one line each naming the flag or config field,
  before anything is read or written."""
  import pytest

  from tests.helpers import tiny_finetune_config
  from vmae2_jax.checkpointing import Checkpointer
  from vmae2_jax.checkpointing.manager import CheckpointError
  from vmae2_jax.data import shards
  from vmae2_jax.training import config_checks, run_record
  bucket_url = s3_server.make_bucket()
  run = paths.join(bucket_url, "run")
  with pytest.raises(run_record.WorkdirError) as e:
    with run_record.starting(run):
      raise AssertionError("the body must not run")
  assert str(e.value) == f"--workdir={run}: its checkpoints are written by Orbax, {MOUNT}"
  with pytest.raises(CheckpointError, match=r"^s3://.*writes checkpoints, which opens local "
                     r"paths and gs:// only"):
    Checkpointer(paths.join(run, "checkpoints"), save_every=1)
  assert paths.listdir(bucket_url) == []
  # shard folders: the config field named at the config check, before any read
  c = tiny_finetune_config(**{"data.val_path": paths.join(bucket_url, "val")})
  c.data.source = "shards"
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check_common(c, 1)
  assert str(e.value) == (f"config.data.val_path={paths.join(bucket_url, 'val')}: ArrayRecord "
                          f"reads the shards, {MOUNT}")
  c.data.val_path, c.data.train_path = "", ""
  c.data.sources = ({"path": "/local/a"}, {"path": paths.join(bucket_url, "b")})
  with pytest.raises(config_checks.ConfigError, match=r"^config\.data\.sources\[1\]\.path=s3://"):
    config_checks.check_common(c, 1)
  local = shards.demo_path("val")
  paths.write_text(paths.join(bucket_url, "val", "manifest.json"), paths.read_text(local))
  with pytest.raises(shards.ShardFileError, match="ArrayRecord reads the shards, which opens"):
    shards.ShardSource(paths.join(bucket_url, "val"))
  # a model source (a converted folder) read by Orbax; the converter's --dst written by it
  paths.write_text(paths.join(bucket_url, "model", "model.json"), "{}")
  paths.write_text(paths.join(bucket_url, "model", "params", "x"), "")
  assert predict.main([f"--init_from={paths.join(bucket_url, 'model')}", "--video=x.mp4"]) == 1
  err = capsys.readouterr().err
  assert err == (f"error: --init_from={paths.join(bucket_url, 'model')}: Orbax reads the "
                 f"weights of a model source, {MOUNT}\n"), err
  assert convert_main(["--src", str(tmp_path / "none.pth"), "--dst",
                       paths.join(bucket_url, "converted")]) == 1
  err = capsys.readouterr().err
  assert err.startswith(f"error: --dst={paths.join(bucket_url, 'converted')}: Orbax writes"), err


def test_storage_bench_times_a_local_folder_and_a_bucket(gcs_bucket, tmp_path, capsys):
  import json

  from tests.test_fault_injection import _config_file
  from vmae2_jax.bench.__main__ import main as bench_main
  cfg = _config_file(str(tmp_path / "pt.py"), "tiny_pretrain_config", {})
  folders = [str(tmp_path / "ck"), paths.join(gcs_bucket, "ck")]
  assert bench_main(["storage", f"--dirs={','.join(folders)}", f"--config={cfg}",
                     "--repeats=1", "--shards=demo:val", "--json"]) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
  assert [r.get("dir") for r in rows[:2]] == folders and rows[2]["shards"] == "demo:val"
  assert all(r["save_s"] > 0 and r["restore_s"] > 0 and r["state_mb"] > 0 for r in rows[:2])
  assert rows[2]["records"] > 0 and rows[2]["mb_per_s"] > 0
  assert paths.listdir(folders[1]) == []  # the timed checkpoints are removed
