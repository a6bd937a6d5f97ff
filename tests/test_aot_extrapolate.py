"""Reading the TPU cost model: benchmarks/tpu_aot_sweep.py --extrapolate (whole-model estimates
from compiles at two depths) and no MFU from programs whose matmul loops it counts once."""

import importlib.util
import os
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "tpu_aot_sweep.py"


def _sweep():
  spec = importlib.util.spec_from_file_location("tpu_aot_sweep", _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _row(depth, seconds=(0.10, 0.02), flops=(30e12, 5e12), model=(20e12, 4e12)):
  line = lambda ab: ab[0] + ab[1] * depth  # noqa: E731
  return {"variant": f"g/14@d{depth}", "topology": "v5p:4x4x4", "optimal_seconds": line(seconds),
          "flops_per_device": line(flops), "model_flops_per_device": line(model)}


def test_reads_the_line_through_two_depths_at_the_full_depth():
  r = _sweep().extrapolate([_row(2), _row(4)], 40)
  assert r["optimal_seconds"] == pytest.approx(0.10 + 0.02 * 40)
  assert r["model_flops_per_device"] == pytest.approx(20e12 + 4e12 * 40)
  assert r["flops_per_device_per_layer"] == pytest.approx(5e12)
  assert r["compiler_estimated_mfu"] == pytest.approx((20e12 + 160e12) / 0.9 / 459e12)
  assert r["per_layer_mfu"] == pytest.approx(4e12 / 0.02 / 459e12)
  assert r["from_depths"] == [2, 4]


def test_one_depth_is_refused():
  with pytest.raises(SystemExit, match="two different --depth"):
    _sweep().extrapolate([_row(2), _row(2)], 40)


def test_rows_whose_cost_counts_a_loop_body_once_are_refused():
  looped = dict(_row(4), tag="pp_d4", scan_layers=False, hlo={"matmul_loops": 20})
  with pytest.raises(SystemExit, match="pp_d4 ran matmul loops.*no_collective_matmul"):
    _sweep().extrapolate([_row(2), looped], 40)


def test_an_unrolled_program_with_collective_matmul_loops_gets_no_mfu():
  from vmae2_jax.sharding import topologies
  from vmae2_jax.training import compile_only
  report = {"stage": "finetune", "variant": "g/14@d2", "mesh": {"fsdp": 32}, "devices": 32,
            "platform": "tpu", "clips_per_device": 6, "dtype": "bfloat16", "remat": "full",
            "scan_layers": False, "num_params": 1, "state_bytes_per_device": 1,
            "lower_seconds": 1.0, "compile_seconds": 1.0, "flops_per_device": 2.6e12,
            "model_flops_per_device": 4.7e12, "optimal_seconds": 0.0176,
            "hlo": {"matmul_loops": 20, "collective_matmul_loops": 20,
                    "trip_counts": [16] * 20, "collectives": {},
                    "custom_call_targets": {}, "host_transfers": 0}}
  compile_only.add_chip_estimates(report, topologies.CHIPS["v5p"])
  assert report["compiler_estimated_mfu"] is None
  text = compile_only.format_report(report)
  assert "collective matmuls" in text and "--nocollective_matmul" in text
  assert " ".join(topologies.NO_COLLECTIVE_MATMUL) in text
  assert "--unroll" not in text  # the layers are unrolled already
  # Scanned layer loops that hold collective matmuls (4-chip v5e/v6e ViT-g): both fixes named.
  scanned = dict(report, scan_layers=True,
                 hlo=dict(report["hlo"], matmul_loops=2, collective_matmul_loops=2,
                          trip_counts=[40, 40]))
  assert "--unroll" in compile_only.format_report(scanned)
  report["hlo"]["matmul_loops"], report["flops_per_device"] = 0, 5.2e12
  compile_only.add_chip_estimates(report, topologies.CHIPS["v5p"])
  assert report["compiler_estimated_mfu"] == pytest.approx(4.7e12 / 0.0176 / 459e12)
