"""Models: reference parameter counts, faithful blocks, visible-only embedding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vmae2_jax.models import (Classifier, ModelOptions, PretrainModel, count_params,
                              get_variant, patching)
from vmae2_jax.models.posemb import sinusoid_table

REFERENCE_ENCODER_PARAMS = {  # millions, from the reference
    "S/16": 21.88, "B/16": 86.23, "L/16": 303.86, "H/16": 631.61, "g/14": 1011.61}


@pytest.mark.parametrize("variant", sorted(REFERENCE_ENCODER_PARAMS))
def test_encoder_param_counts_match_reference(variant):
  size = get_variant(variant)
  # Abstract shapes only: nothing is materialised, even for ViT-g.
  model = nnx.eval_shape(lambda: PretrainModel(size, frames=16, image_size=224,
                                               opts=ModelOptions(), rngs=nnx.Rngs(0)))
  enc = count_params(model.encoder)
  assert round(enc / 1e6, 2) == REFERENCE_ENCODER_PARAMS[variant]
  clf = nnx.eval_shape(lambda: Classifier(size, 400, frames=16, image_size=224,
                                          opts=ModelOptions(init="finetune"),
                                          rngs=nnx.Rngs(0)))
  # Classifier encoder: no final norm; fc_norm + head on top.
  assert count_params(clf.encoder) == enc - 2 * size.width
  assert count_params(clf) == enc + size.width * 400 + 400


def test_unknown_variant_names_the_field():
  with pytest.raises(ValueError, match="config.model.variant"):
    get_variant("Z/16")


def test_sinusoid_table_formula():
  table = sinusoid_table(10, 8)
  pos, j = 7, 5
  angle = pos / 10000 ** (2 * (j // 2) / 8)
  assert table[pos, j] == pytest.approx(np.cos(angle), abs=1e-7)
  assert table[pos, 4] == pytest.approx(np.sin(pos / 10000 ** (4 / 8)), abs=1e-7)


def _tiny(**kw):
  return PretrainModel(get_variant("mu/16"), frames=4, image_size=32,
                       opts=ModelOptions(**kw), rngs=nnx.Rngs(0))


def _video(b=2, t=4, s=32, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (b, t, s, s, 3)), jnp.uint8)


def test_attention_has_q_and_v_bias_but_no_key_bias():
  attn = _tiny().encoder.blocks.layers.attn
  assert attn.qkv.bias is None
  assert attn.q_bias.shape == attn.v_bias.shape == (2, 2, 16)


def _attention_impls():
  from vmae2_jax.models.layers import cpu_kernels_enabled
  fused = cpu_kernels_enabled(ModelOptions())
  return ["xla"] + (["fused_cpu"] if fused else [])


@pytest.mark.parametrize("attention", _attention_impls())
@pytest.mark.parametrize("num_queries", [None, 5])
def test_key_bias_would_not_change_attention(attention, num_queries):
  """A key bias adds q.b_k to every logit of a row, which the softmax over keys cancels
  (why the reference has none); query and value biases do change the output. Checked on
  the attention code itself: the same biases added to the k, q and v slots of qkv."""
  from vmae2_jax.models.layers import Attention
  attn = Attention(32, 2, opts=ModelOptions(attention=attention,
                                             cpu_kernels=attention == "fused_cpu"),
                   rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 9, 32))
  qkv = attn.qkv(x)  # [B, N, 3, H, hd]
  bias = 2.0 * jax.random.normal(jax.random.key(2), qkv.shape[-2:])
  base = np.asarray(attn._attend(qkv, num_queries))
  key_biased = np.asarray(attn._attend(qkv.at[:, :, 1].add(bias), num_queries))
  scale = np.abs(base).max()
  np.testing.assert_allclose(key_biased, base, atol=2e-6 * max(scale, 1.0), rtol=1e-5)
  for slot in (0, 2):  # query and value biases
    moved = np.asarray(attn._attend(qkv.at[:, :, slot].add(bias), num_queries))
    assert np.abs(moved - base).max() > 1e-2 * scale, slot


def test_visible_only_embedding_equals_embed_all_then_gather():
  model = _tiny()
  video = _video()
  idx = jnp.array([[0, 2, 5, 7], [1, 3, 4, 6]], jnp.int32)
  all_tokens = model.encoder.embed(video)
  picked = model.encoder.embed(video, idx)
  np.testing.assert_allclose(picked, patching.gather_tokens(all_tokens, idx), atol=1e-6)


def test_patch_embedding_is_the_reference_conv3d():
  """Linear on (t, h, w, c)-flattened cubes == Conv3d(kernel=stride=(2, p, p))."""
  model = _tiny()
  video = _video(b=1)
  x = patching.normalize_pixels(video)                       # [1, T, H, W, 3]
  w = model.encoder.patch_embed.kernel[...].reshape(2, 16, 16, 3, -1)
  conv = jax.lax.conv_general_dilated(x, w, (2, 16, 16), "VALID",
                                      dimension_numbers=("NTHWC", "THWIO", "NTHWC"))
  conv = conv.reshape(1, -1, conv.shape[-1]) + model.encoder.patch_embed.bias[...]
  pos = sinusoid_table(8, 32)
  np.testing.assert_allclose(model.encoder.embed(video), conv + pos, atol=1e-5)


def test_scan_and_unrolled_and_remat_agree():
  video = _video()
  vis = jnp.array([[0, 2, 5, 7], [1, 3, 4, 6]], jnp.int32)
  tgt = jnp.array([[1, 3, 4, 6], [0, 2, 5, 7]], jnp.int32)
  outs = []
  for kw in (dict(), dict(scan_layers=True), dict(remat="full", scan_layers=True),
             dict(remat="dots"), dict(remat="proj", scan_layers=True),
             dict(remat="proj_attn"), dict(remat="proj_gelu", scan_layers=True)):
    model = _tiny(**kw)
    graphdef, params = nnx.split(model)
    loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(video, vis, tgt) ** 2)
    outs.append(jax.jit(jax.value_and_grad(loss))(params))
  for val, grad in outs[1:]:
    np.testing.assert_allclose(val, outs[0][0], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 grad, outs[0][1])


@pytest.mark.parametrize("remat, saved", [
    ("proj", {"qkv", "attn_out", "fc1"}),
    ("proj_attn", {"qkv", "attn_out", "attn_proj", "fc1"}),
    ("proj_gelu", {"qkv", "attn_out", "attn_proj", "fc1", "mlp_act"})])
def test_remat_policies_save_the_named_block_outputs(remat, saved):
  """Each named policy keeps exactly its checkpoint names of a block for the backward."""
  import contextlib
  import io
  from jax.ad_checkpoint import print_saved_residuals
  from vmae2_jax.models.layers import Block
  from vmae2_jax.models.options import REMAT_POLICIES
  block = Block(32, 2, 64, opts=ModelOptions(attention="xla", cpu_kernels=False),
                rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(block)
  f = jax.checkpoint(lambda s, x: nnx.merge(graphdef, s)(x).sum(), policy=REMAT_POLICIES[remat])
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    print_saved_residuals(f, state, jnp.ones((2, 8, 32)))
  names = {line.split(" named '")[1].split("'")[0]
           for line in out.getvalue().splitlines() if " named '" in line}
  assert names == saved


def test_bfloat16_compute_keeps_float32_params():
  model = _tiny(dtype="bfloat16")
  assert model.encoder.patch_embed.kernel[...].dtype == jnp.float32
  out = model(_video(), jnp.zeros((2, 4), jnp.int32), jnp.ones((2, 4), jnp.int32))
  assert out.dtype == jnp.bfloat16


def test_drop_path_is_keyed_and_off_when_deterministic():
  model = PretrainModel(get_variant("mu/16"), frames=4, image_size=32, opts=ModelOptions(),
                        rngs=nnx.Rngs(0), drop_path_rate=0.5)
  video = _video()
  vis = jnp.array([[0, 2, 5, 7], [1, 3, 4, 6]], jnp.int32)
  tgt = vis
  det = model(video, vis, tgt)
  a = model(video, vis, tgt, key=jax.random.key(1), deterministic=False)
  b = model(video, vis, tgt, key=jax.random.key(1), deterministic=False)
  c = model(video, vis, tgt, key=jax.random.key(2), deterministic=False)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c) and not np.allclose(a, det)
  np.testing.assert_array_equal(det, model(video, vis, tgt, key=jax.random.key(1)))


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_decoder_drop_path_follows_the_encoder_rate(rate):
  """The reference builds its decoder with the same drop_path_rate as the encoder:
  linspace(0, rate, decoder_depth) per block (modeling_pretrain.py)."""
  size = get_variant("Ti/16")  # 2 decoder blocks: rates (0, rate)
  model = PretrainModel(size, frames=4, image_size=32, opts=ModelOptions(), rngs=nnx.Rngs(0),
                        drop_path_rate=rate)
  np.testing.assert_allclose(model.decoder.drop_rates, np.linspace(0, rate, size.decoder_depth))
  np.testing.assert_allclose(model.encoder.blocks.drop_rates, np.linspace(0, rate, size.depth))
  # The decoder alone, training mode: blocks are dropped per sample when rate > 0.
  h = jax.random.normal(jax.random.key(0), (8, 6, size.decoder_width))
  det = model.decoder(h, deterministic=True, num_outputs=6)
  runs = [model.decoder(h, key=jax.random.key(s), deterministic=False, num_outputs=6)
          for s in range(3)]
  same = [bool(np.allclose(r, det, atol=1e-6)) for r in runs]
  assert all(same) if rate == 0 else not all(same)


def test_classifier_head_init_scale_and_pooling():
  """Head init trunc_normal(0.02) x 0.001; features = LayerNorm(eps 1e-6) of the token mean
  with no per-token norm before it; logits = features @ W + b (NumPy, float64)."""
  clf = Classifier(get_variant("mu/16"), 400, frames=4, image_size=32,
                   opts=ModelOptions(init="finetune"), rngs=nnx.Rngs(0))
  kernel = np.asarray(clf.head.kernel[...], np.float64)  # 32 x 400 draws
  assert abs(kernel.std() / (0.02 * 0.001) - 1) < 0.04 and abs(kernel.mean()) < 1e-6
  assert not np.asarray(clf.head.bias[...]).any() and clf.encoder.norm is None
  rng = np.random.default_rng(0)
  # A non-trivial fc_norm affine, so that a wrong scale/bias use shows.
  gamma, beta = rng.normal(1.0, 0.5, 32), rng.normal(0.0, 0.5, 32)
  clf.fc_norm.scale[...] = jnp.asarray(gamma, jnp.float32)
  clf.fc_norm.bias[...] = jnp.asarray(beta, jnp.float32)
  w, b = rng.normal(0, 0.1, (32, 400)), rng.normal(0, 0.1, 400)
  clf.head.kernel[...] = jnp.asarray(w, jnp.float32)
  clf.head.bias[...] = jnp.asarray(b, jnp.float32)
  video = _video()
  tokens = np.asarray(clf.encoder(video), np.float64)  # [B, N, D], no final norm
  pooled = tokens.mean(axis=1)
  mu, var = pooled.mean(-1, keepdims=True), pooled.var(-1, keepdims=True)
  want = (pooled - mu) / np.sqrt(var + 1e-6) * gamma + beta
  np.testing.assert_allclose(clf.features(video), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(clf(video), want @ w + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("capability, dtype, expected", [
    ("9.0", "bfloat16", "cudnn"), ("8.0", "float16", "cudnn"),
    ("7.5", "bfloat16", "xla"),   # a T4: no flash attention in cuDNN
    ("9.0", "float32", "xla")])   # cuDNN flash attention rejects float32
def test_auto_attention_on_gpus(monkeypatch, capability, dtype, expected):
  from types import SimpleNamespace
  from vmae2_jax.models import layers
  monkeypatch.setattr(layers.jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(layers.jax, "devices",
                      lambda *a: [SimpleNamespace(compute_capability=capability)])
  assert layers.attention_implementation("auto", jnp.dtype(dtype)) == expected
