"""Test set-up: 8 fake CPU devices, set before jax is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (must follow the flag)

jax.config.update("jax_threefry_partitionable", True)

# Identical programs compiled by several tests (each train() jits afresh) are
# compiled once per session.
import tempfile  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("VMAE2_TEST_JAX_CACHE", tempfile.mkdtemp(prefix="jax_cache_")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_configure(config):
  # ml_collections' config_flags loads config files with importlib's load_module (deprecated
  # since Python 3.10); its warning is about that library, not about the code under test.
  config.addinivalue_line(
      "filterwarnings",
      r"ignore:the load_module\(\) method is deprecated:DeprecationWarning:importlib._bootstrap")


# The storage servers of the bucket tests, registered once for the whole session: a
# session fixture imported into each test module would start one server per module, and
# the clients (which cache their connection per endpoint) would keep the first.
from tests.cloud_servers import bucket, gcs_bucket, gcs_server, s3_server  # noqa: E402,F401
