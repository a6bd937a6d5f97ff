"""Our schedule, optimizer groups, initialisers, softmax precision and position-table
resizing against independent NumPy restatements of the reference's own functions
(OpenGVLab/VideoMAEv2: utils.cosine_scheduler, run_*.py lr scaling,
optim_factory.get_parameter_groups / get_num_layer_for_vit, models/*._init_weights,
torch.nn.functional.interpolate as run_class_finetuning.py calls it; restated in
tests/torch_reference.py).

The restatements work on the reference's parameter names and PyTorch shapes
(our parameters exported with the conversion rules), so a rule that holds only
in our layout would not pass by construction.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.common import base_config
from tests import torch_reference
from tests.torch_reference import reference_resize
from vmae2_jax.conversion.layouts import Spec, rules_for
from vmae2_jax.conversion.mapping import export_state_dict
from vmae2_jax.conversion.surgery import interpolate_pos_table
from vmae2_jax.models import get_variant
from vmae2_jax.models.layers import softmax_attention
from vmae2_jax.models.options import ModelOptions
from vmae2_jax.models.vit import Classifier, PretrainModel
from vmae2_jax.training import optimizer
from vmae2_jax.training.schedules import make_schedule


# ------------------------------------------------------------------ schedule
def reference_cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0,
                               start_warmup_value=0, warmup_steps=-1):
  """utils.cosine_scheduler, as written there."""
  warmup_schedule = np.array([])
  warmup_iters = warmup_epochs * niter_per_ep
  if warmup_steps > 0:
    warmup_iters = warmup_steps
  if warmup_epochs > 0:
    warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
  iters = np.arange(epochs * niter_per_ep - warmup_iters)
  schedule = np.array([final_value + 0.5 * (base_value - final_value) *
                       (1 + math.cos(math.pi * i / (len(iters)))) for i in iters])
  schedule = np.concatenate((warmup_schedule, schedule))
  assert len(schedule) == epochs * niter_per_ep
  return schedule


@pytest.mark.parametrize("epochs, num_videos, batch, accum, views, warmup_epochs", [
    (3, 40, 8, 1, 1, 1),        # 5 steps an epoch, one warmup epoch
    (10, 1000, 24, 3, 2, 2),    # accumulation and repeated views do not count in the batch
    (4, 100, 16, 1, 4, 0),      # no warmup
    (2, 999, 100, 1, 1, 1),     # a partial last batch is dropped (len(dataset) // batch)
])
def test_schedule_and_lr_scaling_equal_the_reference(epochs, num_videos, batch, accum, views,
                                                     warmup_epochs):
  c = base_config()
  c.batch_size, c.epochs, c.optim.accum_steps, c.data.num_sample = batch, epochs, accum, views
  c.optim.base_lr, c.optim.min_lr, c.optim.warmup_epochs = 1.5e-3, 1e-6, warmup_epochs
  sched = make_schedule(c, num_videos)
  # run_mae_pretraining.py / run_class_finetuning.py: lr = lr * total_batch_size / 256,
  # total_batch_size = per-GPU batch x update_freq x GPUs (videos per update), the same
  # for min_lr; steps per epoch = len(dataset_train) // total_batch_size.
  lr, min_lr = 1.5e-3 * batch / 256, 1e-6 * batch / 256
  want = reference_cosine_scheduler(lr, min_lr, epochs, num_videos // batch,
                                    warmup_epochs=warmup_epochs)
  assert sched.total_steps == len(want)
  got = np.asarray([float(sched(s)) for s in range(len(want))])
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6 * lr)  # float32 steps


# ------------------------------------------------------ optimizer parameter groups
def reference_decays(name: str, shape: tuple[int, ...], skip_list) -> bool:
  """optim_factory.get_parameter_groups: which tensors get weight decay."""
  return not (len(shape) == 1 or name.endswith(".bias") or name.endswith(".scale")
              or name in skip_list)


def reference_num_layer(var_name: str, num_max_layer: int) -> int:
  """optim_factory.get_num_layer_for_vit."""
  if var_name in ("cls_token", "mask_token", "pos_embed"):
    return 0
  if var_name.startswith("patch_embed"):
    return 0
  if var_name.startswith("rel_pos_bias"):
    return num_max_layer - 1
  if var_name.startswith("blocks"):
    return int(var_name.split(".")[1]) + 1
  return num_max_layer - 1


def _model(kind: str, variant: str = "Ti/16", seed: int = 0):
  size = get_variant(variant)
  if kind == "pretrain":
    model = PretrainModel(size, frames=4, image_size=32, opts=ModelOptions(init="pretrain"),
                          rngs=nnx.Rngs(seed))
    spec = Spec("pretrain", size)
  else:
    model = Classifier(size, 400, frames=4, image_size=32, opts=ModelOptions(init="finetune"),
                       rngs=nnx.Rngs(seed))
    spec = Spec("classifier", size, 400, False)
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  return params, spec


def _leaf(tree, path):
  for k in path:
    tree = tree[k]
  return tree


@pytest.mark.parametrize("kind, skip_list", [
    ("pretrain", {"pos_embed", "cls_token", "mask_token"}),   # PretrainVisionTransformer
    ("classifier", {"pos_embed", "cls_token"}),               # VisionTransformer
])
def test_weight_decay_mask_equals_get_parameter_groups(kind, skip_list):
  params, spec = _model(kind, "mu/16")
  mask = optimizer.decay_mask(params)
  checked = 0
  for rule in rules_for("official", spec):
    ours = bool(_leaf(mask, rule.path))
    for name, shape in zip(rule.srcs, rule.src_shapes):
      assert ours == reference_decays(name, shape, skip_list), (name, shape, rule.path)
      checked += 1
  assert checked == len(export_state_dict(params, "official", spec))


@pytest.mark.parametrize("layer_decay", [0.75, 0.9])
def test_layer_decay_equals_get_num_layer_for_vit(layer_decay):
  params, spec = _model("classifier", "mu/16")
  depth = spec.size.depth
  scales = optimizer.layer_scales(params, depth, layer_decay)
  # run_class_finetuning.py: LayerDecayValueAssigner(layer_decay ** (num_layers + 1 - i)
  # for i in range(num_layers + 2)), num_layers = len(blocks).
  values = [layer_decay ** (depth + 1 - i) for i in range(depth + 2)]
  for rule in rules_for("official", spec):
    ours = np.asarray(_leaf(scales, rule.path))
    if rule.layer is not None:
      ours = ours[rule.layer]
    for name in rule.srcs:
      want = values[reference_num_layer(name, len(values))]
      np.testing.assert_allclose(ours, want, rtol=1e-6, err_msg=name)


# --------------------------------------------------------------- initialisers
def _trunc_std(c: float) -> float:
  """Standard deviation of N(0, 1) cut at +-c."""
  phi = math.exp(-c * c / 2) / math.sqrt(2 * math.pi)
  mass = math.erf(c / math.sqrt(2))
  return math.sqrt(1 - 2 * c * phi / mass)


def reference_init(kind: str, name: str, shape: tuple[int, ...], conv_fan_in: int):
  """(distribution, parameter) of each tensor as the reference initialises it.

  models/modeling_pretrain.py: encoder and decoder apply _init_weights (Linear:
  xavier_uniform_, bias 0; LayerNorm 1, 0); the top module does not, so
  encoder_to_decoder keeps PyTorch's Linear default; Conv3d patch embedding keeps
  PyTorch's default; mask_token trunc_normal_(std=.02, a=-std, b=std).
  models/modeling_finetune.py: Linear trunc_normal_(std=.02) (timm: cut at +-2
  absolute), bias 0, head weight and bias x init_scale (0.001).
  PyTorch default (kaiming_uniform_(a=sqrt(5))): U(+-1/sqrt(fan_in)), bias too.
  """
  fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else None
  if name.endswith("q_bias") or name.endswith("v_bias"):
    return "const", 0.0
  if "norm" in name:
    return "const", 1.0 if name.endswith("weight") else 0.0
  if "patch_embed.proj" in name:  # Conv3d: fan_in = in_channels x kernel volume
    return "uniform", 1.0 / math.sqrt(conv_fan_in)
  if name == "mask_token":
    return "trunc", (0.02, 0.02)
  if name == "encoder_to_decoder.weight":
    return "uniform", 1.0 / math.sqrt(fan_in)
  if name.endswith(".bias"):
    return "const", 0.0
  if kind == "pretrain":
    return "uniform", math.sqrt(6.0 / (shape[0] + shape[1]))
  scale = 0.001 if name.startswith("head") else 1.0
  return "trunc", (0.02 * scale, 2.0 * scale)


def _check(name: str, w: np.ndarray, dist: str, arg) -> None:
  w = np.asarray(w, np.float64).ravel()
  n = w.size
  if dist == "const":
    assert (w == arg).all(), name
    return
  if dist == "uniform":
    bound, std = arg, arg / math.sqrt(3)
    lo = 1 - 10.0 / n if n > 20 else 0.5  # P(max of n draws below) = e^-10
    rel = 2.5 / math.sqrt(n)             # ~5 standard errors of a uniform's sample std
  else:
    sigma, cut = arg
    bound, std = cut, sigma * _trunc_std(cut / sigma)
    lo = 0.9 if cut <= sigma else 0.0
    rel = 4.0 / math.sqrt(n)
  top = np.abs(w).max()
  assert top <= bound * (1 + 1e-6), (name, top, bound)
  assert top >= lo * bound, (name, top, bound)
  assert abs(w.std() / std - 1) < rel, (name, w.std(), std)
  assert abs(w.mean()) < 5 * std / math.sqrt(n), (name, w.mean())


@pytest.mark.parametrize("kind", ["pretrain", "classifier"])
def test_initialisers_equal_the_reference(kind):
  params, spec = _model(kind, "Ti/16", seed=1)
  state = export_state_dict(params, "official", spec)
  conv_fan_in = 3 * 2 * 16 * 16  # Conv3d(3, D, kernel (2, 16, 16)): weight [D, 3, 2, 16, 16]
  conv = [w for k, w in state.items() if k.endswith("patch_embed.proj.weight")][0]
  assert int(np.prod(conv.shape[1:])) == conv_fan_in
  for name, w in state.items():
    _check(name, w, *reference_init(kind, name, tuple(w.shape), conv_fan_in))


# ----------------------------------------------------------------- softmax
def test_low_precision_attention_keeps_an_fp32_softmax():
  """bf16 inputs: logits, max, exp and row sums in float32 (as torch autocast runs the
  reference's softmax). Against float64 on the same bf16 inputs the output is off by
  its own bf16 rounding; a bf16 softmax is ~10x further off on these peaked rows."""
  keys = jax.random.split(jax.random.key(1), 3)
  q, k, v = (jax.random.normal(kk, (2, 64, 2, 16)) for kk in keys)
  q, k, v = (x.astype(jnp.bfloat16) for x in (q * 3.0, k, v))  # logits ~ +-40
  out = softmax_attention(q, k, v)
  assert out.dtype == jnp.bfloat16
  q64, k64, v64 = (np.asarray(x.astype(jnp.float32), np.float64) for x in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", q64, k64)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  want = np.einsum("bhqk,bkhd->bqhd", p / p.sum(-1, keepdims=True), v64)
  np.testing.assert_allclose(np.asarray(out.astype(jnp.float32)), want, rtol=2 ** -8, atol=2e-3)


# ------------------------------------------------------ position-table resizing
def _nearest(table, src, dst):
  t, h, w = src
  x = np.asarray(table).reshape(t, h, w, -1)
  idx = [np.minimum(((np.arange(n2) + 0.5) * n / n2).astype(int), n - 1)
         for n, n2 in zip(src, dst)]
  return x[np.ix_(*idx)].reshape(-1, x.shape[-1])


@pytest.mark.parametrize("src, dst", [
    ((8, 14, 14), (8, 16, 16)),   # 224 -> 256 pixels, 16 frames
    ((8, 14, 14), (8, 8, 8)),     # downsampling (no antialiasing in torch)
    ((8, 7, 7), (4, 7, 7)),       # 16 -> 8 frames only
    ((3, 4, 5), (5, 6, 3)),       # every axis, non-square
])
def test_position_table_resize_equals_reference_interpolate(src, dst):
  rng = np.random.default_rng(0)
  table = rng.normal(size=(int(np.prod(src)), 12)).astype(np.float32)
  got = interpolate_pos_table(table, src, dst)
  want = reference_resize(table, src, dst)
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
  # The table is one where a cruder resize fails: nearest neighbour is far off.
  assert np.abs(_nearest(table, src, dst) - want).max() > 0.1
  got_lead = interpolate_pos_table(table[None], src, dst)  # [1, N, D] as the checkpoint has it
  np.testing.assert_array_equal(got_lead[0], got)


def test_reference_resize_restatement_equals_torch():
  """The restatement above against PyTorch's own output (stored, tests/torch_reference.py)."""
  r = torch_reference.RESIZE_TABLE
  got = reference_resize(torch_reference.resize_table_input(), r["src"], r["dst"])
  want = torch_reference.stored("interpolate.npz")["pos_table"]
  np.testing.assert_allclose(got, want, atol=1e-10)
  assert np.abs(_nearest(torch_reference.resize_table_input(), r["src"], r["dst"])
                - want).max() > 0.1
