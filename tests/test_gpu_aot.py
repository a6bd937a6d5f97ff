"""XLA's deviceless GPU compiler on the tiny pre-training step, for 8 x H100 (no GPU).

Runs where the jax CUDA plugin is installed (pip install -e ".[cuda]"); skipped
elsewhere, as in the CPU CI. See docs/scaling.md, "GPU targets (deviceless)".
"""

import os

import pytest

pytest.importorskip("jax_cuda12_plugin", reason="the jax CUDA plugin is not installed "
                    "(pip install -e '.[cuda]'; no GPU needed to compile)")

from tests.helpers import tiny_pretrain_config  # noqa: E402

from vmae2_jax.kernels import cpu as cpu_kernels  # noqa: E402
from vmae2_jax.training import compile_only, hlo_summary  # noqa: E402


def test_pretrain_step_compiles_for_8_h100s_without_cpu_code():
  if "--xla_gpu_enable_triton_gemm=false" not in os.environ.get("XLA_FLAGS", ""):
    pytest.skip("XLA's GPU flags are read once per process: run with "
                "XLA_FLAGS=--xla_gpu_enable_triton_gemm=false (the aot tool sets it)")
  config = tiny_pretrain_config(**{"model.dtype": "bfloat16", "batch_size": 16})
  r = compile_only.compile_for(config, "8xh100", headroom=0.1, field="--topology")
  assert r["platform"] == "gpu" and "H100" in r["device_kind"] and r["devices"] == 8
  assert r["fits"] is True and r["attention"] == "xla"
  targets = r["hlo"]["custom_call_targets"]
  assert any("cublas" in t for t in targets), targets  # the matmuls
  assert not set(targets) & set(cpu_kernels._TARGETS)
  assert not hlo_summary.host_callbacks(r["hlo"])
  assert r["compiler_estimated_mfu"] is None  # no cost analysis from a compile-only GPU program
  assert "no cost analysis" in compile_only.format_report(r)
