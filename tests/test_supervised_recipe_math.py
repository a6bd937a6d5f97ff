"""The supervised recipe's arithmetic against independent restatements of the reference.

Each restatement below follows the reference code (OpenGVLab/VideoMAEv2:
optim_factory.get_num_layer_for_vit / LayerDecayValueAssigner /
get_parameter_groups, utils.cosine_scheduler, timm's Mixup in "batch" mode,
mixup_target, SoftTargetCrossEntropy and LabelSmoothingCrossEntropy) written
in NumPy on the reference's own parameter names, which the checkpoint
converter's key tables give for each of our parameters.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.common import base_config
from tests.test_reference_restatements import (reference_cosine_scheduler, reference_decays,
                                               reference_num_layer)
from vmae2_jax.conversion import mapping
from vmae2_jax.conversion.layouts import Spec
from vmae2_jax.models import Classifier, ModelOptions, PretrainModel, get_variant
from vmae2_jax.training import losses, mixup, optimizer
from vmae2_jax.training.schedules import make_schedule
from vmae2_jax.training.step import make_train_step, split_microbatches


# ----------------------------------------------------------- reference restatements
def ref_rand_bbox(img_h, img_w, lam, cy, cx):
  ratio = np.sqrt(1 - lam)
  cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
  yl = np.clip(cy - cut_h // 2, 0, img_h)
  yh = np.clip(cy + cut_h // 2, 0, img_h)
  xl = np.clip(cx - cut_w // 2, 0, img_w)
  xh = np.clip(cx + cut_w // 2, 0, img_w)
  return yl, yh, xl, xh


def ref_mixup(x_bcthw, target, num_classes, smoothing, lam, use_cutmix, cy, cx):
  """timm Mixup(mode='batch')(x, target) for a given draw; x is [B, C, T, H, W] as the
  reference passes it (viewed as [B, C*T, H, W])."""
  h, w = x_bcthw.shape[3:]
  box = ref_rand_bbox(h, w, lam, cy, cx) if use_cutmix else None
  if use_cutmix:
    yl, yh, xl, xh = box
    lam = 1.0 - (yh - yl) * (xh - xl) / float(h * w)  # correct_lam
  return ref_mixup_box(x_bcthw, target, num_classes, smoothing, lam, use_cutmix, box)


def ref_mixup_box(x_bcthw, target, num_classes, smoothing, lam, use_cutmix, box):
  """timm's batch mixing of x with x.flip(0) for a drawn lam and box (lam already
  corrected to the box's area when use_cutmix)."""
  b, c, t, h, w = x_bcthw.shape
  x = x_bcthw.reshape(b, c * t, h, w).copy()
  if use_cutmix:
    yl, yh, xl, xh = box
    x[:, :, yl:yh, xl:xh] = x[::-1][:, :, yl:yh, xl:xh]
  elif lam != 1.0:
    x = x * lam + x[::-1] * (1.0 - lam)
  off = smoothing / num_classes
  y1 = np.full((b, num_classes), off)
  y1[np.arange(b), target] = 1.0 - smoothing + off
  return x.reshape(b, c, t, h, w), y1 * lam + y1[::-1] * (1.0 - lam)


def ref_soft_target_ce(logits, target):
  logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                keepdims=True)) - logits.max(-1, keepdims=True)
  return np.mean(np.sum(-target * logp, axis=-1))


def ref_label_smoothing_ce(logits, labels, smoothing):
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  nll = -logp[np.arange(len(labels)), labels]
  smooth = -logp.mean(-1)
  return np.mean((1.0 - smoothing) * nll + smoothing * smooth)


# ------------------------------------------------------------------- helpers
def _classifier_params(variant="S/16", classes=7):
  size = get_variant(variant)
  model = nnx.eval_shape(lambda: Classifier(size, classes, frames=16, image_size=224,
                                            opts=ModelOptions(init="finetune"),
                                            rngs=nnx.Rngs(0)))
  return size, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _official_names(params, spec):
  """Our param path -> [(reference key, shape)], from the converter's key tables."""
  return mapping.source_keys_by_path("official", spec)


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("variant, decay", [("S/16", 0.75), ("mu/16", 0.9), ("g/14", 0.9)])
def test_layer_decay_scales_match_the_reference_assigner(variant, decay):
  size, params = _classifier_params(variant)
  depth = size.depth
  values = [decay ** (depth + 1 - i) for i in range(depth + 2)]  # LayerDecayValueAssigner
  scales = dict(mapping.flatten(optimizer.layer_scales(params, depth, decay)))
  keys = _official_names(params, Spec("classifier", size, 7, False))
  checked = 0
  for path, entries in keys.items():
    ours = np.asarray(scales[path])
    for key, _ in entries:
      want = values[reference_num_layer(key, depth + 2)]
      if key.startswith("blocks."):
        got = ours.reshape(-1)[int(key.split(".")[1])]  # stacked: row i is block i
      else:
        got = ours
      np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=key)
      checked += 1
  assert checked == sum(len(v) for v in keys.values()) > depth


@pytest.mark.parametrize("kind", ["classifier", "pretrain"])
def test_weight_decay_groups_match_the_reference(kind):
  size = get_variant("mu/16")
  if kind == "classifier":
    _, params = _classifier_params("mu/16")
    skip = {"pos_embed", "cls_token"}
    spec = Spec("classifier", size, 7, False)
  else:
    model = nnx.eval_shape(lambda: PretrainModel(size, frames=4, image_size=32,
                                                 opts=ModelOptions(), rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    skip = {"pos_embed", "cls_token", "mask_token"}
    spec = Spec("pretrain", size, None, True)
  mask = dict(mapping.flatten(optimizer.decay_mask(params)))
  n_decay = 0
  for path, entries in _official_names(params, spec).items():
    for key, shape in entries:
      assert bool(mask[path]) == reference_decays(key, shape, skip), (key, shape)
      n_decay += reference_decays(key, shape, skip)
  assert n_decay > 0


@pytest.mark.parametrize("epochs, videos, batch, warmup_epochs, warmup_steps", [
    (35, 1000, 96, 5, 0), (3, 5000, 96, 1, 0), (30, 700, 64, 5, 17), (10, 256, 8, 0, 0)])
def test_schedule_matches_the_reference_cosine_scheduler(epochs, videos, batch, warmup_epochs,
                                                         warmup_steps):
  c = base_config()
  c.batch_size, c.epochs = batch, epochs
  c.optim.base_lr, c.optim.min_lr, c.optim.warmup_epochs = 1e-3, 1e-6, warmup_epochs
  c.warmup_steps = warmup_steps
  s = make_schedule(c, num_videos=videos)
  per_epoch = videos // batch  # len(dataset_train) // total_batch_size
  lr, min_lr = 1e-3 * batch / 256, 1e-6 * batch / 256  # args.lr * total_batch_size / 256
  if warmup_steps and not warmup_epochs:
    pytest.skip("the reference builds no warmup table without warmup_epochs")
  want = reference_cosine_scheduler(lr, min_lr, epochs, per_epoch, warmup_epochs,
                              warmup_steps=warmup_steps or -1)
  assert s.total_steps == len(want) and s.steps_per_epoch == per_epoch
  got = np.asarray(jax.vmap(s)(jnp.arange(s.total_steps)))
  # float32: 1 + cos(x) near x = pi loses ~1e-7 of the peak in absolute terms.
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7 * lr)


def test_lr_scaling_counts_videos_per_update_not_views_or_devices():
  c = base_config()
  c.batch_size, c.total_steps, c.data.num_sample, c.optim.accum_steps = 96, 10, 2, 4
  c.optim.base_lr, c.optim.min_lr = 1e-3, 1e-6
  s = make_schedule(c)
  assert s.peak_lr == pytest.approx(1e-3 * 96 / 256) and s.min_lr == pytest.approx(1e-6 * 96 / 256)


@pytest.mark.parametrize("use_cutmix, lam", [(False, 0.7), (True, 0.6), (False, 1.0),
                                             (True, 0.97)])
def test_mixup_and_cutmix_match_timm_batch_mode(use_cutmix, lam):
  rng = np.random.default_rng(0)
  b, t, h, w, k = 6, 4, 16, 12, 5
  video = rng.integers(0, 256, (b, t, h, w, 3)).astype(np.uint8)
  labels = rng.integers(0, k, b)
  cy, cx = 9, 3
  box, lam_box = mixup.cutmix_box(jnp.float32(lam), cy, cx, h, w)
  params = mixup.MixParams(jnp.float32(lam_box if use_cutmix else lam), jnp.asarray(use_cutmix),
                           box if use_cutmix else jnp.zeros(4, jnp.int32))
  targets = losses.smoothed_one_hot(jnp.asarray(labels), k, 0.1)
  got_v, got_t = mixup.apply_block(jnp.asarray(video), targets, params)
  # The reference mixes normalised [B, C, T, H, W] floats; normalisation is
  # affine with weights summing to 1, so mixing pixels then normalising is the same.
  x = video.astype(np.float64).transpose(0, 4, 1, 2, 3)
  want_v, want_t = ref_mixup(x, labels, k, 0.1, lam, use_cutmix, cy, cx)
  np.testing.assert_allclose(np.asarray(got_v), want_v.transpose(0, 2, 3, 4, 1), atol=1e-4)
  np.testing.assert_allclose(np.asarray(got_t), want_t, atol=1e-6)


def test_mixup_draws_and_mixes_per_gpu_as_the_reference():
  # The reference runs timm's Mixup on each GPU's own rows with that GPU's own
  # draw. Restated here: split the global batch into per-device blocks, give
  # block i the draw sample(fold_in(key, i)) and mix it alone with ref_mixup.
  # Shard i's draw thus never depends on how many devices share the batch.
  rng = np.random.default_rng(4)
  shards, rows, t, h, w, k = 4, 3, 2, 16, 16, 7
  video = rng.integers(0, 256, (shards * rows, t, h, w, 3)).astype(np.uint8)
  labels = rng.integers(0, k, shards * rows)
  key = jax.random.key(11)
  spec = mixup.MixupSpec(0.8, 1.0)
  draws = jax.jit(mixup.sample_per_shard, static_argnums=(1, 2, 3, 4))(key, spec, h, w, shards)
  targets = losses.smoothed_one_hot(jnp.asarray(labels), k, 0.1)
  got_v, got_t = jax.jit(mixup.apply)(jnp.asarray(video), targets, draws)
  modes = set()  # both mixup and cutmix among the shards for this key
  for i in range(shards):
    one = mixup.sample(jax.random.fold_in(key, i), spec, h, w)  # this GPU's own draw
    use_cutmix, lam = bool(one.use_cutmix), float(one.lam)
    modes.add(use_cutmix)
    box = tuple(int(v) for v in one.box)  # rand_bbox's box: checked in the tests above
    sl = slice(i * rows, (i + 1) * rows)
    x = video[sl].astype(np.float64).transpose(0, 4, 1, 2, 3)
    want_v, want_t = ref_mixup_box(x, labels[sl], k, 0.1, lam, use_cutmix, box)
    np.testing.assert_allclose(np.asarray(got_v[sl]), want_v.transpose(0, 2, 3, 4, 1),
                               atol=1e-3, err_msg=f"shard {i}")
    np.testing.assert_allclose(np.asarray(got_t[sl]), want_t, atol=1e-6, err_msg=f"shard {i}")
  lams = np.asarray(draws.lam)
  assert len(set(lams.round(6))) == shards and modes == {False, True}, (lams, modes)


def test_mixup_draws():
  key = jax.random.key(3)
  off = mixup.sample(key, mixup.MixupSpec(0.8, 1.0, prob=0.0), 16, 16)
  assert float(off.lam) == 1.0 and not bool(off.use_cutmix)
  for i in range(20):
    p = mixup.sample(jax.random.fold_in(key, i), mixup.MixupSpec(0.0, 1.0), 16, 16)
    yl, yh, xl, xh = np.asarray(p.box)
    assert bool(p.use_cutmix) and 0 <= yl <= yh <= 16 and 0 <= xl <= xh <= 16
    assert float(p.lam) == pytest.approx(1 - (yh - yl) * (xh - xl) / 256.0)
    m = mixup.sample(jax.random.fold_in(key, i), mixup.MixupSpec(0.8, 0.0), 16, 16)
    assert not bool(m.use_cutmix) and 0.0 <= float(m.lam) <= 1.0
  switches = [bool(mixup.sample(jax.random.fold_in(key, i), mixup.MixupSpec(0.8, 1.0), 8,
                                8).use_cutmix) for i in range(200)]
  assert 60 < sum(switches) < 140  # switch_prob 0.5


def test_soft_target_cross_entropy_matches_timm():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(6, 9)).astype(np.float32) * 3
  labels = rng.integers(0, 9, 6)
  for s in (0.0, 0.1, 0.3):
    t = losses.smoothed_one_hot(jnp.asarray(labels), 9, s)
    got = float(losses.soft_target_cross_entropy(jnp.asarray(logits), t))
    assert got == pytest.approx(ref_label_smoothing_ce(logits.astype(np.float64), labels, s),
                                rel=1e-5)
    assert got == pytest.approx(ref_soft_target_ce(logits.astype(np.float64), np.asarray(t)),
                                rel=1e-5)


def test_microbatches_keep_views_together_and_split_evenly():
  rows = jnp.arange(12)  # 6 videos x 2 views: video v = rows 2v, 2v+1
  mb = split_microbatches({"x": rows}, accum_steps=3, views=2)["x"]
  assert mb.shape == (3, 4)
  np.testing.assert_array_equal(np.asarray(mb), [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10, 11]])


def test_accumulated_gradients_equal_the_full_batch():
  """Micro-batches of equal size: the mean of their mean losses is the batch mean."""
  from vmae2_jax.training.tasks.classify import ClassifyTask
  c = base_config()
  c.stage = "finetune"
  c.model.variant, c.data.frames, c.data.image_size = "mu/16", 4, 32
  c.data.source, c.data.train_path, c.data.num_sample = "shards", "demo:train", 2
  c.batch_size, c.total_steps = 4, 10
  c.mixup.mixup_alpha = c.mixup.cutmix_alpha = 0.0
  task = ClassifyTask(c, batch_shards=1, num_classes=5, class_names=None)
  model = task.build_model(nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(params)
  rng = np.random.default_rng(0)
  batch = {"video": jnp.asarray(rng.integers(0, 256, (8, 4, 32, 32, 3)), jnp.uint8),
           "label": jnp.asarray(rng.integers(0, 5, 8), jnp.int32)}
  tx = optimizer.make_optimizer(c, lambda s: 0.0)
  from vmae2_jax.training.state import TrainState
  outs = []
  for accum in (1, 2):
    step = make_train_step(task, graphdef, tx, lambda s: 0.0, jax.random.key(0),
                           accum_steps=accum, views=2)
    _, metrics = jax.jit(step)(TrainState.create(params, tx), batch)
    outs.append(jax.device_get(metrics))
  assert outs[0]["loss"] == pytest.approx(outs[1]["loss"], rel=1e-6)
  assert outs[0]["grad_norm"] == pytest.approx(outs[1]["grad_norm"], rel=1e-5)
