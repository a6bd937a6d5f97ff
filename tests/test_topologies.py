"""TPU and GPU targets by the names users book (no libtpu needed to parse them)."""

import os

import pytest

from vmae2_jax.sharding import topologies


@pytest.mark.parametrize("name, topology, chips, slices, bounds", [
    ("v5p-8", "v5p:2x2x1", 4, 1, (2, 2, 1)),      # v5p-N counts TensorCores: 2 per chip
    ("v5p-128", "v5p:4x4x4", 64, 1, (2, 2, 1)),
    ("v5p-256", "v5p:4x4x8", 128, 1, (2, 2, 1)),
    ("v4-32", "v4:2x2x4", 16, 1, (2, 2, 1)),
    ("v5e-1", "v5e:1x1", 1, 1, (1, 1, 1)),
    ("v5litepod-16", "v5e:4x4", 16, 1, (2, 2, 1)),  # v5e-N counts chips
    ("v6e-8", "v6e:2x4", 8, 1, (2, 2, 1)),
    ("v6e-256", "v6e:16x16", 256, 1, (2, 2, 1)),
    ("2xv5p-256", "v5p:4x4x8", 256, 2, (2, 2, 1)),  # two slices over DCN
    ("v5p:4x4x12", "v5p:4x4x12", 192, 1, (2, 2, 1)),
    ("8xh100", "1x1x8", 8, 1, (1, 1, 1)),
    ("16xh200", "1x2x8", 16, 1, (1, 1, 1)),
])
def test_booked_names(name, topology, chips, slices, bounds):
  t = topologies.target(name)
  assert (t.topology, t.num_chips, t.num_slices) == (topology, chips, slices)
  if t.chip.platform == "tpu":
    assert t.chips_per_host_bounds == bounds


def test_chip_figures():
  assert topologies.target("v5p-8").chip.peak_bf16_flops == 459e12
  # what the TPU compiler lets a program use, not the nominal 32 / 16 GiB
  assert topologies.target("v6e-4").chip.hbm_bytes == int(31.25 * 2**30)
  assert topologies.target("v5e-4").chip.hbm_bytes == int(15.75 * 2**30)
  assert topologies.target("v4-8").chip.peak_bf16_flops == 275e12


@pytest.mark.parametrize("name, says", [
    ("v7-8", "unknown TPU generation 'v7'"),
    ("v5p-7", "N must be even"),
    ("v5p-24", "give the slice shape instead, e.g. v5p:4x4x4"),
    ("v5e-512", "up to 256"),
    ("v6e:2x2x1", "v6e slices have 2 axes"),
    ("tpu", "not a TPU or GPU name"),
    ("12xh100", "whole hosts of 8"),
])
def test_names_that_cannot_be_compiled_for_say_what_to_write(name, says):
  with pytest.raises(topologies.TopologyError, match="^--topology=") as e:
    topologies.target(name)
  assert says in str(e.value) and "\n" not in str(e.value)


def test_missing_compiler_says_what_to_install(monkeypatch):
  import importlib.util
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name in ("libtpu", "jax_cuda12_plugin",
                                                        "jax_cuda13_plugin") else real(name, *a))
  with pytest.raises(topologies.TopologyError, match=r'pip install -e "\.\[aot\]"'):
    topologies.tpu_devices(topologies.target("v5p-8"))
  with pytest.raises(topologies.TopologyError, match=r'pip install -e "\.\[cuda\]"'):
    topologies.gpu_devices(topologies.target("8xh100"))


def test_libtpu_flags_join_what_the_user_set(monkeypatch):
  """bench aot --nocollective_matmul: the flags reach libtpu through LIBTPU_INIT_ARGS, after
  the user's own, and a flag the user already set keeps the user's value."""
  own = "--xla_tpu_enable_windowed_einsum_for_reduce_scatter=true --xla_foo=1"
  monkeypatch.setenv("LIBTPU_INIT_ARGS", own)
  monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "1")  # prepare_environment's defaults, restored
  monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
  topologies.prepare_environment("v5p-64", topologies.NO_COLLECTIVE_MATMUL)
  assert os.environ["LIBTPU_INIT_ARGS"] == (
      own + " --xla_tpu_enable_windowed_einsum_for_all_gather=false")
  monkeypatch.delenv("LIBTPU_INIT_ARGS")
  topologies.prepare_environment("v5p-64")
  assert "LIBTPU_INIT_ARGS" not in os.environ
