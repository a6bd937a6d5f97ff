"""The train-step benchmark entry point and its analytic FLOP counter."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vmae2_jax.bench import __main__ as bench_main
from vmae2_jax.bench.flops import count_dot_flops, pretrain_flops_per_clip
from vmae2_jax.masking import MaskSpec, sample_masks
from vmae2_jax.models import ModelOptions, PretrainModel, get_variant

TINY = ["--config=configs/pretrain_s.py", "--variant=mu/16", "--frames=4", "--image_size=32",
        "--steps=2", "--warmup=1", "--rounds=1", "--peak_tflops=1.0", "--json"]


def test_bench_prints_one_json_object_last(capsys):
  assert bench_main.main(TINY) == 0
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  for key in ("variant", "batch", "params_encoder", "params_decoder", "step_time_s",
              "clips_per_s", "model_tflops_per_clip", "achieved_tflops", "mfu",
              "step_time_s_encoder_only", "clips_per_s_encoder_only", "speedup_dual_masking"):
    assert key in out, key
  assert out["variant"] == "mu/16" and out["batch"] == 2
  assert out["clips_per_s"] == pytest.approx(2 / out["step_time_s"])
  assert out["achieved_tflops"] == pytest.approx(
      out["model_tflops_per_clip"] * out["clips_per_s"])
  assert out["mfu"] == pytest.approx(out["achieved_tflops"] / 1.0)
  assert np.isfinite(out["loss"])
  # 2 x (2x2) tokens, tube 0.9 of 4 spatial positions -> 1 visible per time slot.
  assert out["masking"]["visible"] == 2 and out["masking"]["targets"] == 4


@pytest.mark.parametrize("decoder", ["running_cell", "none"])
def test_analytic_flops_equal_the_models_matmul_flops(decoder):
  """2*P*M per dense layer + 4*M^2*D attention == every dot_general of the forward."""
  variant, frames, image, batch = "mu/16", 4, 64, 2
  size = get_variant(variant)
  grid = (frames // 2, image // size.patch, image // size.patch)
  spec = MaskSpec(grid=grid, encoder_ratio=0.5, decoder=decoder)
  # XLA ops only: the CPU kernels' matmuls are custom calls the jaxpr count cannot see.
  model = PretrainModel(size, frames=frames, image_size=image,
                        opts=ModelOptions(cpu_kernels=False), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  masks = sample_masks(jax.random.key(0), batch, spec)
  video = jnp.zeros((batch, frames, image, image, 3), jnp.uint8)

  def forward(params):
    return nnx.merge(graphdef, params)(video, masks.visible_idx, masks.target_idx)

  counted = count_dot_flops(jax.make_jaxpr(forward)(params))
  analytic = pretrain_flops_per_clip(variant, frames, image, spec)
  assert analytic["forward"] * batch == counted
  assert analytic["train"] == 3 * analytic["forward"]
  # Sanity against XLA's own estimate (which also counts elementwise work).
  xla = jax.jit(forward).lower(params).compile().cost_analysis()
  xla = xla[0] if isinstance(xla, (list, tuple)) else xla
  if xla and xla.get("flops", 0) > 0:
    assert 0.8 * counted <= xla["flops"] <= 3.0 * counted


def test_flops_of_published_sizes_match_the_design_notes():
  g = pretrain_flops_per_clip("g/14", 16, 224)
  assert (g["visible"], g["targets"]) == (208, 1024)
  assert g["encoder"] / 1e12 == pytest.approx(0.43, abs=0.01)
  assert g["decoder"] / 1e12 == pytest.approx(0.05, abs=0.01)
  assert g["train"] / 1e12 == pytest.approx(1.4, abs=0.05)
  s_dual = pretrain_flops_per_clip("S/16", 16, 224)
  s_none = pretrain_flops_per_clip("S/16", 16, 224, decoder="none")
  # At ViT-S the running-cell mask removes about a third of the FLOPs.
  assert 1 - s_dual["forward"] / s_none["forward"] == pytest.approx(1 / 3, abs=0.05)
