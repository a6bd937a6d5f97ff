"""Sharded training on 8 fake CPU devices matches one device; layouts and bytes.

Tolerance of the equivalence checks: float32 everywhere, and the sharded
programs differ from the single-device one only in reduction order (gradient
sums split over the batch shards, contractions split over fsdp/tensor shards,
then all-reduced). Each such sum of n float32 terms moves by a few ulps,
~1e-7 relative; through the loss, the backward pass and the global-norm
clip it stays well under 1e-5 relative. The Adam step is
lr * m / (sqrt(v) + eps), which for a first step is lr * g / (|g| + eps):
elementwise it can turn a 1e-7 change in a near-zero gradient into an O(lr)
change, so the test uses eps = 1e-3 (first-step update g / (|g| + 1e-3),
Lipschitz in g) and compares updated parameters to atol 1e-6 (lr is 1e-3
here, so that is 1e-3 of one step's movement) and rtol 1e-5. Observed
(2026-11-27, JAX 0.10.2 CPU): loss within 1.2e-7 (one float32 ulp at 1.03),
parameters within 6e-8 on all four meshes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from tests.helpers import tiny_pretrain_config
from vmae2_jax import sharding
from vmae2_jax.data.synthetic import SyntheticIterator
from vmae2_jax.sharding.constraints import activation_sharding, constrain
from vmae2_jax.training.experiment import setup

MESHES = [(8, 1, 1), (1, 8, 1), (2, 4, 1), (1, 4, 2)]


def _config(mesh_shape, **kw):
  d, f, t = mesh_shape
  c = tiny_pretrain_config(**{"model.scan_layers": True, "warmup_steps": 0,
                              "optim.base_lr": 1e-3 * 256 / 4, "optim.eps": 1e-3,
                              "optim.clip_grad": 1.0, **kw})
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = d, f, t
  return c


def _one_step(config, devices, initial=None):
  """(metrics, state after one step, mesh) on `devices`.

  `initial`: a host copy of the initial state to lay out on this mesh (saves
  compiling init per mesh; born-sharded init is tested below).
  """
  exp = setup(config, devices)
  mesh = exp.mesh
  if initial is None:
    state = exp.init_state()
  else:
    state = jax.device_put(initial, exp.state_sharding)
  step_fn = exp.jit_train_step()
  it = SyntheticIterator(batch_size=config.batch_size, frames=config.data.frames,
                         size=config.data.image_size, num_sample=config.data.num_sample)
  batch = exp.global_batch(next(it))
  state, metrics = step_fn(state, batch)
  return metrics, state, mesh


@pytest.fixture(scope="module")
def single_device():
  config = _config((1, 1, 1))
  initial = jax.device_get(setup(config, jax.devices()[:1]).init_state())
  metrics, state, _ = _one_step(config, jax.devices()[:1], initial)
  return jax.device_get(metrics), jax.device_get(state.params), initial


# Hand-written layouts: "F" = the fsdp axis, "T" = the tensor axis, "-" = whole,
# "t" = tensor, or fsdp when there is no tensor axis (bias fallbacks).
# Stacked block parameters lead with the (never split) layers dim.
EXPECTED = {
    "encoder/patch_embed/kernel": "-F", "encoder/patch_embed/bias": "F",
    "attn/qkv/kernel": "-F-T-", "attn/q_bias": "-TF", "attn/v_bias": "-TF",
    "attn/proj/kernel": "-TF", "attn/proj/bias": "-F",
    "mlp/fc1/kernel": "-FT", "mlp/fc1/bias": "-t",
    "mlp/fc2/kernel": "-TF", "mlp/fc2/bias": "-F",
    "norm1/scale": "-F", "norm1/bias": "-F", "norm2/scale": "-F", "norm2/bias": "-F",
    "encoder/norm/scale": "F", "encoder/norm/bias": "F",
    "encoder_to_decoder/kernel": "F-", "mask_token": "F",
    "decoder_norm/scale": "F", "decoder_norm/bias": "F",
    "decoder_head/kernel": "F-", "decoder_head/bias": "-",
}


def _expected_spec(path: str, mesh) -> P:
  code = next(v for k, v in EXPECTED.items() if path.endswith(k))
  name = {"F": "fsdp" if mesh.shape["fsdp"] > 1 else None,
          "T": "tensor" if mesh.shape["tensor"] > 1 else None, "-": None,
          "t": "tensor" if mesh.shape["tensor"] > 1 else
               "fsdp" if mesh.shape["fsdp"] > 1 else None}
  return P(*[name[ch] for ch in code])


def _normalise(spec: P) -> tuple:
  out = list(spec)
  while out and out[-1] is None:
    out.pop()
  return tuple(out)


def _path(keys) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in keys)


@pytest.mark.parametrize("mesh_shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_one_step_matches_one_device(mesh_shape, single_device):
  ref_metrics, ref_params, initial = single_device
  config = _config(mesh_shape)
  metrics, state, mesh = _one_step(config, jax.devices(), initial)
  assert dict(mesh.shape) == dict(zip(("data", "fsdp", "tensor"), mesh_shape))

  np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], ref_metrics["grad_norm"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               jax.device_get(state.params), ref_params)

  # Every parameter (and its Adam moments) laid out as the rules table says.
  flat = jax.tree_util.tree_flatten_with_path(state.params)[0]
  assert len(flat) == len(jax.tree.leaves(ref_params))
  for keys, x in flat:
    path = _path(keys)
    want = _expected_spec(path, mesh)
    assert _normalise(x.sharding.spec) == _normalise(want), (path, x.sharding.spec, want)
  adam = state.opt_state[-1][0]  # chain(clip, adamw) -> adamw -> ScaleByAdamState
  for moments in (adam.mu, adam.nu):
    for (keys, m), (_, p) in zip(jax.tree_util.tree_flatten_with_path(moments)[0], flat):
      assert m.sharding == p.sharding, _path(keys)


def test_fsdp_holds_an_eighth_of_params_and_optimizer_state_per_device(single_device):
  config = _config((1, 8, 1))
  exp = setup(config)
  state_sh = exp.state_sharding
  state = exp.init_state()  # born sharded ...
  # ... with the values a one-device init gives (partitionable threefry).
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), single_device[2])
  tree = (state.params, state.opt_state)
  whole = sum(x.nbytes for x in jax.tree.leaves(tree))
  per_device = [0] * 8
  for x in jax.tree.leaves(tree):
    for shard in x.addressable_shards:
      per_device[shard.device.id] += shard.data.nbytes
  # What stays whole: the decoder head bias (its "patch" dim of 1536 is never
  # split; in this 0.13M-parameter toy that is 1.2% of the bytes, in ViT-B
  # 0.002%) in params, mu and nu, and the scalar step counters.
  whole_leaves = [(_path(k), x) for k, x in jax.tree_util.tree_flatten_with_path(tree)[0]
                  if x.sharding.is_fully_replicated]
  assert all(p.endswith("decoder_head/bias") or x.ndim == 0 for p, x in whole_leaves), [
      (p, x.shape) for p, x in whole_leaves]
  unsplit = sum(x.nbytes for _, x in whole_leaves)
  for b in per_device:
    assert b == (whole - unsplit) // 8 + unsplit, (b, whole, unsplit)
  assert max(per_device) / whole < 0.14  # ~1/8 of the whole, toy-model overhead included
  # The start-up report (trainer log) computes the same from abstract shapes.
  layout = sharding.rules.layout_summary(jax.eval_shape(lambda: tree),
                                         (state_sh.params, state_sh.opt_state))
  assert (layout["whole"], layout["per_device"]) == (whole, per_device[0])
  scalars = sum(x.nbytes for _, x in whole_leaves if x.ndim == 0)
  assert sum(n for _, n in layout["unsplit"]) == unsplit - scalars


def test_mesh_sizes_fill_and_dcn():
  mesh = sharding.make_mesh({"data": 2, "fsdp": -1, "tensor": 1})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  # Across-slice sizes multiply the in-slice ones: 2 slices x (1, 4, 1).
  mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1, "dcn_data": 2})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  ids = np.vectorize(lambda d: d.id)(mesh.devices)
  assert sorted(ids[0].ravel()) == [0, 1, 2, 3]  # one slice per data row
  with pytest.raises(ValueError, match="at most one axis"):
    sharding.make_mesh({"data": -1, "fsdp": -1})
  with pytest.raises(ValueError, match="needs 6 devices"):
    sharding.make_mesh({"data": 3, "fsdp": 2, "tensor": 1})


def test_rules_table_comes_from_config():
  c = _config((1, 8, 1))
  assert sharding.rules.rules_from_config(c) == sharding.rules.DEFAULT_RULES
  c.sharding_rules = tuple(r for r in sharding.rules.DEFAULT_RULES if r[0] != "embed") + (
      ("embed", None),)
  blocks = setup(c).state_sharding.params["encoder"]["blocks"]["layers"]
  assert _normalise(blocks["norm1"]["scale"].spec) == ()  # "embed" is whole now
  assert _normalise(blocks["mlp"]["fc1"]["kernel"].spec) == (None, None, "fsdp")  # fallback


def test_constrain_is_a_no_op_without_a_mesh_and_pins_layout_with_one():
  x = jnp.ones((8, 4, 16))
  assert constrain(x, ("batch", "length", "act_embed")) is x
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})

  @jax.jit
  def f(x):
    with activation_sharding(mesh, sharding.rules.DEFAULT_RULES):
      return constrain(x * 2, ("batch", "length", "act_embed"))

  y = f(x)
  assert _normalise(y.sharding.spec) == (("data", "fsdp"),)


def test_compile_only_reports_per_device_memory_without_running():
  from vmae2_jax.training import compile_only
  c = _config((1, 8, 1))
  r = compile_only.compile_train_step(c)
  m = r["memory_bytes_per_device"]
  assert r["devices"] == 8 and r["clips_per_device"] == 1
  assert m["arguments"] > 0 and m["temporaries"] > 0
  assert m["aliased"] == r["state_bytes_per_device"]  # the donated state is updated in place
  assert m["peak_estimate"] == m["arguments"] + m["outputs"] - m["aliased"] + m["temporaries"]
  assert r["flops_per_device"] > 0 and r["model_flops_per_device"] > 0
  assert "per-device memory (GB)" in compile_only.format_report(r)


def test_bfloat16_adam_moments():
  from vmae2_jax.training import optimizer as optim
  params = {"w": {"kernel": jnp.linspace(-1, 1, 64).reshape(8, 8)}, "b": jnp.zeros(8)}
  grads = jax.tree.map(lambda p: jnp.cos(3 * p) + 0.1, params)
  out = {}
  for mu, nu in (("", ""), ("bfloat16", "bfloat16")):
    c = _config((1, 1, 1), **{"optim.mu_dtype": mu, "optim.nu_dtype": nu})
    tx = optim.make_optimizer(c, lambda step: 1e-2)
    state = tx.init(params)
    adam = state[-1][0]
    assert {x.dtype for x in jax.tree.leaves((adam.mu, adam.nu))} == {
        jnp.dtype(mu or "float32")}
    for _ in range(3):
      updates, state = tx.update(grads, state, params)
    out[nu] = updates
  # bf16 storage of the moments: ~3 significant digits of the float32 update.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-2, atol=1e-5),
               out["bfloat16"], out[""])
