"""Distillation: a student classifier learns a frozen teacher's class distribution.

Beyer et al. 2022 ("Knowledge distillation: a good teacher is patient and
consistent"), as the reference's distilled ViT-S/B students were made: the
teacher sees exactly the student's augmented, mixed clip ("function
matching": same crop, same mixup), inside the same jitted step; the loss is
KL(softmax(t/T) || softmax(s/T)) x T^2, optionally plus a weighted
cross-entropy on the (mixed, smoothed) labels.

The teacher's parameters are an extra, non-donated argument of the step
(Experiment.frozen_sharding): sharded by the same FSDP rules as the student,
stored in bf16 when the compute dtype is bf16, never in the optimizer state
or in a checkpoint. Each start reloads them from config.distill.teacher_from
and records that path and a hash of the weights in run.json. Validation and
the multi-view test are the student's, as for fine-tuning; the teacher's own
single-view validation runs once at a fresh start.
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from vmae2_jax import paths, sharding
from vmae2_jax.checkpointing import model_io
from vmae2_jax.conversion import mapping
from vmae2_jax.conversion.init_from import apply_init_from
from vmae2_jax.conversion.report import ConversionError
from vmae2_jax.data.kinetics import name_differences
from vmae2_jax.evaluation import classification
from vmae2_jax.models import Classifier, VARIANTS, ViTSize, get_variant
from vmae2_jax.models.options import ModelOptions, normalization_from_meta
from vmae2_jax.models.platform import forward_compiler_options
from vmae2_jax.sharding.constraints import activation_sharding
from vmae2_jax.training.config_checks import ConfigError
from vmae2_jax.training.losses import soft_target_cross_entropy
from vmae2_jax.training.tasks.classify import ClassifyTask

FIELD = "config.distill.teacher_from"


def distillation_kl(student_logits, teacher_logits, temperature: float = 1.0):
  """Batch mean of KL(softmax(t/T) || softmax(s/T)) x T^2, in float32.

  The T^2 factor keeps the gradient's scale independent of T (Hinton et al.
  2015). No gradient flows into the teacher's logits.
  """
  t = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature
  s = student_logits.astype(jnp.float32) / temperature
  log_pt = jax.nn.log_softmax(t, axis=-1)
  log_ps = jax.nn.log_softmax(s, axis=-1)
  kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)
  return jnp.mean(kl) * temperature ** 2


def params_hash(params: dict) -> str:
  """sha256 of a parameter tree: every leaf's name, dtype, shape and bytes, in name order."""
  h = hashlib.sha256()
  for path, leaf in sorted(mapping.flatten(params), key=lambda kv: kv[0]):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{'.'.join(path)}:{a.dtype.str}:{a.shape};".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _teacher_meta(path: str) -> dict | None:
  """The teacher source's meta without reading weights; None when there is no source there
  (compile-only and benchmarks run recipe configs whose paths are placeholders)."""
  if not path or not model_io.is_source(path):
    return None
  try:
    return model_io.read_source_meta(path)
  except (FileNotFoundError, ValueError):
    return None


class DistillTask(ClassifyTask):
  """The student classifier trained on a frozen teacher's logits (see module doc)."""

  def __init__(self, config, batch_shards: int, num_classes: int,
               class_names: tuple[str, ...] | None):
    super().__init__(config, batch_shards, num_classes, class_names)
    d = config.distill
    if not d.teacher_from:
      raise ConfigError(f"{FIELD} is empty: stage='distill' needs the teacher (a run workdir, "
                        "WORKDIR/best or a converted classifier checkpoint)")
    if not d.temperature > 0:
      raise ConfigError(f"config.distill.temperature={d.temperature} must be > 0")
    if d.label_weight < 0:
      raise ConfigError(f"config.distill.label_weight={d.label_weight} must be >= 0")
    self.temperature = float(d.temperature)
    self.label_weight = float(d.label_weight)
    meta = _teacher_meta(d.teacher_from)
    self.teacher_size, self.teacher_variant = self._teacher_size(meta)
    self.teacher_norm = normalization_from_meta(meta or {})  # the teacher's own inputs
    self.teacher_image_size = int(d.teacher_image_size or (meta or {}).get("image_size")
                                  or config.data.image_size)
    if meta is not None:
      self.check_teacher(meta)
    if self.teacher_image_size % self.teacher_size.patch:
      raise ConfigError(f"config.distill.teacher_image_size={self.teacher_image_size} is not "
                        f"divisible by the teacher's patch size {self.teacher_size.patch}")
    model = nnx.eval_shape(lambda: self.build_teacher(nnx.Rngs(0)))
    self.teacher_graphdef, _ = nnx.split(model)
    self.teacher_abstract = nnx.state(model, nnx.Param).to_pure_dict()
    self._teacher_model = model  # abstract; setup reads its logical axes

  # ------------------------------------------------------------- the teacher
  def _teacher_size(self, meta) -> tuple[ViTSize, str]:
    d = self.config.distill
    held = (meta or {}).get("variant")
    if d.teacher_variant and held and held != d.teacher_variant:
      raise ConfigError(f"{FIELD}={d.teacher_from} holds a ViT-{held}, but "
                        f"config.distill.teacher_variant={d.teacher_variant!r}")
    name = d.teacher_variant or held
    if not name:
      raise ConfigError(f"config.distill.teacher_variant is empty and {FIELD}="
                        f"{d.teacher_from} is not a model source that names one")
    if name in VARIANTS or not (meta and meta.get("size")):
      try:
        return get_variant(name), name
      except ValueError as e:
        raise ConfigError(f"config.distill.teacher_variant: {e}") from None
    return ViTSize(**meta["size"]), name

  def check_teacher(self, meta: dict) -> None:
    """One line for a teacher that cannot teach this student: kind, classes, label order,
    clip shape (before anything is compiled)."""
    d, src = self.config.distill, self.config.distill.teacher_from
    if meta.get("kind") not in (None, "classifier"):
      raise ConfigError(f"{FIELD}={src} holds a {meta.get('kind')} model; the teacher must be "
                        "a classifier (a fine-tuned run or converted *_ft checkpoint)")
    classes = meta.get("num_classes")
    if classes and int(classes) != self.num_classes:
      raise ConfigError(f"{FIELD}={src} has {classes} classes, the student "
                        f"{self.num_classes} (config.model.num_classes / the training shards)")
    names = meta.get("class_names")
    diff = name_differences(list(names), list(self.class_names)) if (
        names and self.class_names) else ""
    if diff:  # Kinetics' known renames name the same class (data/kinetics.py)
      raise ConfigError(f"{FIELD}={src}: the teacher's label order differs from the student's "
                        f"({diff})")
    frames = meta.get("frames")
    if frames and int(frames) != self.config.data.frames:
      raise ConfigError(f"{FIELD}={src} was trained on {frames}-frame clips, the student's are "
                        f"config.data.frames={self.config.data.frames}")
    held = meta.get("image_size")
    if held and d.teacher_image_size and int(held) != d.teacher_image_size:
      raise ConfigError(f"{FIELD}={src} was trained at {held}x{held}, but "
                        f"config.distill.teacher_image_size={d.teacher_image_size}")

  def build_teacher(self, rngs: nnx.Rngs) -> Classifier:
    """The teacher's model: no dropout, no remat (no backward), params in the compute dtype
    when that is bf16 (the frozen copy needs no float32 master)."""
    m = self.config.model
    opts = ModelOptions(dtype=m.dtype, param_dtype="bfloat16" if m.dtype == "bfloat16"
                        else m.param_dtype, attention=m.attention, cpu_kernels=m.cpu_kernels,
                        remat="none", scan_layers=m.scan_layers, init="finetune",
                        **self.teacher_norm)
    return Classifier(self.teacher_size, self.num_classes, frames=self.config.data.frames,
                      image_size=self.teacher_image_size, opts=opts, rngs=rngs)

  @property
  def teacher_axes(self):
    return sharding.logical_axes_tree(self._teacher_model)

  def teacher_logits(self, teacher_params, video):
    """The teacher's float32 logits on the student's clips, resized to its resolution."""
    size = self.teacher_image_size
    if video.shape[2] != size:  # the same crop at the teacher's size
      video = jax.image.resize(video.astype(jnp.float32),
                               video.shape[:2] + (size, size, video.shape[-1]), "bilinear")
    teacher = nnx.merge(self.teacher_graphdef, jax.lax.stop_gradient(teacher_params))
    return jax.lax.stop_gradient(teacher(video, deterministic=True).astype(jnp.float32))

  def load_frozen(self, exp) -> tuple[tuple, dict]:
    """((teacher params on device,), its record for run.json) from config.distill.teacher_from.

    Every failure is one line naming the field."""
    src = self.config.distill.teacher_from
    try:
      meta = model_io.read_source_meta(src)
    except (FileNotFoundError, ValueError) as e:
      raise ConversionError(f"{FIELD}={src}: {' '.join(str(e).split())}") from None
    self.check_teacher(meta)
    try:
      params = apply_init_from(self.teacher_abstract, src, "classifier")
    except (ConversionError, FileNotFoundError) as e:
      raise ConversionError(f"{FIELD}={src} (a ViT-{self.teacher_variant} teacher): "
                            f"{' '.join(str(e).split())}") from None
    except (OSError, ValueError, KeyError) as e:  # Orbax / TensorStore reading
      raise ConversionError(f"{FIELD}={src}: cannot read its weights ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:300]})") from None
    digest = params_hash(params)
    params = jax.device_put(params, exp.frozen_sharding[0])
    info = {"from": paths.resolve(src), "sha256": digest, "variant": self.teacher_variant,
            "image_size": self.teacher_image_size, "step": meta.get("step")}
    logging.info("teacher ViT-%s from %s (sha256 %s...)", self.teacher_variant, src, digest[:12])
    return (params,), {"teacher": info}

  def evaluate_frozen(self, exp, teacher_params) -> dict | None:
    """The teacher's own single-view validation (teacher_val_top1, ...), for reference."""
    if not (self.has_eval_set and self.config.distill.teacher_eval):
      return None

    def predict(p, video):
      with activation_sharding(exp.mesh, exp.rules):
        return jax.nn.log_softmax(self.teacher_logits(p, video), axis=-1)
    fn = jax.jit(predict, in_shardings=(exp.frozen_sharding[0], exp.batch_sharding(5)),
                 out_shardings=exp.batch_sharding(2),
                 compiler_options=forward_compiler_options(exp.mesh.devices.flat[0].platform))
    results = classification.validate(_WithPredict(exp, fn), teacher_params)
    logging.info("teacher ViT-%s single-view validation: top-1 %.2f%%, top-5 %.2f%% on %d "
                 "videos", self.teacher_variant, results["val_top1"], results["val_top5"],
                 results["val_videos"])
    return {f"teacher_{k}": v for k, v in results.items()}

  # ------------------------------------------------------------- the step
  def loss(self, params, graphdef, batch, key, teacher_params):
    video, targets, drop_key = self.mixed_input(batch, key)
    student = nnx.merge(graphdef, params)(video, key=drop_key, deterministic=False)
    teacher = self.teacher_logits(teacher_params, video)
    kl = distillation_kl(student, teacher, self.temperature)
    agree = jnp.mean((jnp.argmax(student, -1) == jnp.argmax(teacher, -1)).astype(jnp.float32))
    aux = {"kl": kl, "teacher_agreement": agree}
    loss = kl
    if self.label_weight:
      ce = soft_target_cross_entropy(student, targets)
      loss = kl + self.label_weight * ce
      aux["ce"] = ce
    if not self.mixup.enabled:
      labels = batch["label"]
      aux["train_top1"] = jnp.mean((jnp.argmax(student, -1) == labels).astype(jnp.float32))
    return loss, aux

  def describe(self) -> str:
    labels = (f" + {self.label_weight:g} x label cross-entropy" if self.label_weight
              else ", no label loss")
    return (f"distillation from a frozen ViT-{self.teacher_variant} at "
            f"{self.teacher_image_size}px ({self.config.distill.teacher_from}): KL at "
            f"T={self.temperature:g}{labels}; student: {super().describe()}")


class _WithPredict:
  """An Experiment whose predict_fn is another model's (the evaluators read only that)."""

  def __init__(self, exp, predict_fn):
    self._exp = exp
    self.predict_fn = predict_fn

  def __getattr__(self, name):
    return getattr(self._exp, name)
