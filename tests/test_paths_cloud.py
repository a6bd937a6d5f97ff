"""vmae2_jax.paths against real protocol servers: fake-gcs-server and moto's S3 server."""

import os

import pytest

from vmae2_jax import paths


def test_resolve_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.resolve("gs://b/x/") == "gs://b/x"
  assert paths.resolve("s3://b/x/../y") == "s3://b/y"
  assert paths.resolve("run") == os.path.join(str(tmp_path), "run")
  assert paths.join("gs://b/x", "a", "b.json") == "gs://b/x/a/b.json"
  assert paths.dirname("gs://b/x/y") == "gs://b/x" and paths.basename("gs://b/x/y/") == "y"


def test_files_folders_and_moves(bucket):
  run = paths.join(bucket, "run")
  assert not paths.exists(run) and paths.listdir(run) == []
  paths.makedirs(run)
  paths.write_text(paths.join(run, "a.json"), '{"a": 1}')
  paths.write_bytes(paths.join(run, "sub", "b.bin"), b"\x00" * 5)
  assert paths.read_text(paths.join(run, "a.json")) == '{"a": 1}'
  assert paths.isdir(run) and paths.isfile(paths.join(run, "a.json"))
  assert paths.listdir(run) == ["a.json", "sub"]
  assert dict(paths.walk_files(run)) == {"a.json": 8, "sub/b.bin": 5}
  assert paths.getsize(paths.join(run, "sub", "b.bin")) == 5
  assert paths.glob(run, "*.json") == [paths.join(run, "a.json")]
  with paths.open_file(paths.join(run, "t.txt"), "w") as f:
    f.write("héllo\n")
  with paths.open_file(paths.join(run, "t.txt")) as f:
    assert f.read() == "héllo\n"
  paths.move(paths.join(run, "sub"), paths.join(bucket, "aside", "sub"))
  assert not paths.exists(paths.join(run, "sub", "b.bin"))
  assert paths.read_bytes(paths.join(bucket, "aside", "sub", "b.bin")) == b"\x00" * 5
  paths.rmtree(run)
  assert paths.listdir(run) == []


def test_local_copy_and_staged_dir(bucket, tmp_path):
  src = tmp_path / "v.bin"
  src.write_bytes(b"abc")
  paths.copy(str(src), paths.join(bucket, "in", "v.bin"))
  with paths.local_copy(paths.join(bucket, "in", "v.bin")) as local:
    assert not paths.is_remote(local) and open(local, "rb").read() == b"abc"
  with paths.staged_dir(paths.join(bucket, "out")) as folder:
    with open(os.path.join(folder, "x.txt"), "w") as f:
      f.write("x")
    assert not paths.exists(paths.join(bucket, "out", "x.txt"))  # uploaded on success only
  assert paths.read_text(paths.join(bucket, "out", "x.txt")) == "x"
  with pytest.raises(RuntimeError), paths.staged_dir(paths.join(bucket, "bad")) as folder:
    open(os.path.join(folder, "y.txt"), "w").close()
    raise RuntimeError
  assert not paths.exists(paths.join(bucket, "bad"))


def test_segment_logs_from_several_writers_merge_in_order(bucket):
  path = paths.join(bucket, "run", "metrics.jsonl")
  first = paths.SegmentLog(path, roll=2)
  for i in range(3):
    first.write(f'{{"step": {i}}}\n')
  first.close()
  second = paths.SegmentLog(path, roll=2)  # a resumed segment: its own objects
  second.write('{"step": 3}\n')
  second.close()
  assert paths.read_lines(path) == [f'{{"step": {i}}}' for i in range(4)]
  assert len(paths.listdir(paths.parts_dir(path))) == 3  # 2 + 1 for the first, 1 for the second


def test_missing_bucket_is_one_line_naming_the_path(bucket):
  missing = bucket.replace("://b-", "://nobucket-") + "/run"
  with pytest.raises(paths.PathAccessError) as e:
    paths.check_writable(missing, "--workdir")
  text = str(e.value)
  assert "\n" not in text and text.startswith(f"--workdir={missing}: cannot create or write it")
  assert "does not exist" in text and paths.bucket(missing) in text
  paths.check_writable(paths.join(bucket, "run"), "--workdir")  # the real bucket passes
  assert paths.listdir(paths.join(bucket, "run")) == []  # and the probe is gone


def test_copy_between_gcs_and_s3(gcs_bucket, s3_server, tmp_path):
  s3 = s3_server.make_bucket()
  paths.write_bytes(paths.join(gcs_bucket, "a.bin"), b"12345")
  paths.copy(paths.join(gcs_bucket, "a.bin"), paths.join(s3, "x", "a.bin"))
  paths.copy(paths.join(s3, "x", "a.bin"), paths.join(gcs_bucket, "b.bin"))
  paths.copy(paths.join(gcs_bucket, "b.bin"), str(tmp_path / "c.bin"))
  assert (tmp_path / "c.bin").read_bytes() == b"12345"
