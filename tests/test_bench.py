"""The benchmark entry points (step of every stage, what the Hugging Face side by sides
need, compile-only memory) and the analytic FLOP counter."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vmae2_jax.bench import __main__ as bench_main
from vmae2_jax.bench.flops import (classifier_flops_per_clip, count_dot_flops,
                                   pretrain_flops_per_clip)
from vmae2_jax.masking import MaskSpec, sample_masks
from vmae2_jax.models import ModelOptions, PretrainModel, get_variant

TINY = ["--config=configs/pretrain_s.py", "--variant=mu/16", "--frames=4", "--image_size=32",
        "--steps=2", "--warmup=1", "--rounds=1", "--peak_tflops=1.0", "--json"]

# A supervised recipe at test size: the reference's fine-tuning defaults (mixup 0.8 / cutmix 1.0,
# label smoothing, drop path 0.1, layer decay) on a 2-block 32-wide ViT and 4x32x32 clips.
TINY_FINETUNE_CONFIG = """
from configs.common import finetune_recipe


def get_config(arg=None):
  c = finetune_recipe("mu/16", "k400", per_gpu_batch=2, gpus=1, base_lr=1e-3, layer_decay=0.75,
                      epochs=1)
  c.data.frames, c.data.image_size = 4, 32
  c.model.num_classes = 5
  return c
"""


@pytest.fixture
def tiny_finetune_config(tmp_path):
  path = tmp_path / "finetune_tiny.py"
  path.write_text(TINY_FINETUNE_CONFIG)
  return str(path)


def _last_json(capsys) -> dict:
  return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_prints_one_json_object_last(capsys):
  assert bench_main.main(TINY) == 0
  out = _last_json(capsys)
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
  assert out["task"] == "pretrain" and out["stage"] == "pretrain"


def test_step_subcommand_times_the_fine_tuning_step(capsys, tiny_finetune_config):
  """A supervised config: the real fine-tuning step (mixup on), batch = clips per step."""
  argv = ["step", f"--config={tiny_finetune_config}", "--steps=2", "--warmup=1", "--rounds=1",
          "--peak_tflops=1.0", "--json"]
  assert bench_main.main(argv) == 0
  out = _last_json(capsys)
  assert out["task"] == "classifier" and out["stage"] == "finetune"
  assert out["batch"] == 2 and out["num_classes"] == 5
  assert out["clips_per_s"] == pytest.approx(2 / out["step_time_s"])
  flops = classifier_flops_per_clip("mu/16", 4, 32, 5)["train"]
  assert out["model_tflops_per_clip"] == pytest.approx(flops / 1e12)
  assert out["achieved_tflops"] == pytest.approx(
      out["model_tflops_per_clip"] * out["clips_per_s"])
  assert out["mfu"] == pytest.approx(out["achieved_tflops"])
  assert out["mixup"]["mixup_alpha"] == 0.8 and out["mixup"]["cutmix_alpha"] == 1.0
  assert np.isfinite(out["loss"]) and "speedup_dual_masking" not in out


@pytest.mark.parametrize("name", ["hf", "hf_finetune"])
def test_hf_side_by_side_says_what_it_needs(name, monkeypatch, capsys):
  """The side-by-side benchmarks need torch and transformers (the `bench` extra, which the
  test install leaves out); without them: one line naming the extra, nothing started."""
  monkeypatch.setitem(sys.modules, "transformers", None)
  assert bench_main.main([name, "--json"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "transformers" in err and ".[bench]" in err


def test_memory_subcommand_compiles_any_stage(capsys, tiny_finetune_config):
  """Compile-only on the 8 test devices: 2 views per video, accumulation, analytic FLOPs."""
  argv = ["memory", f"--config={tiny_finetune_config}", "--devices=8", "--batch_size=8",
          "--accum_steps=2", "--dtype=float32", "--remat=full"]
  assert bench_main.main(argv) == 0
  line = next(l for l in capsys.readouterr().out.splitlines()
              if l.startswith("COMPILE_ONLY_JSON "))
  r = json.loads(line.split(" ", 1)[1])
  assert r["stage"] == "finetune" and r["devices"] == 8 and r["accum_steps"] == 2
  assert r["clips_global"] == 16 and r["clips_per_device"] == 2
  flops = classifier_flops_per_clip("mu/16", 4, 32, 5)["train"]
  assert r["model_flops_per_device"] == pytest.approx(flops * 2)
  assert r["memory_bytes_per_device"]["peak_estimate"] > 0


def test_unknown_subcommand_is_refused(capsys):
  assert bench_main.main(["nonsense"]) == 2


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
