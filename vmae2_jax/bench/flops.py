"""Analytic model FLOPs of a pre-training or classification clip (no remat recompute).

Convention (design notes): a dense layer with P weights applied to M tokens
costs 2*P*M; attention costs 4*M^2*D per layer (QK^T and AV); a training step
is 3x the forward (backward = 2x forward). Biases, norms, softmax and GELU are
not counted, so MFU compares like with like across implementations.
"""

from __future__ import annotations

from vmae2_jax.masking import MaskSpec
from vmae2_jax.models import patching
from vmae2_jax.models.variants import ViTSize, get_variant


def _block_forward(width: int, mlp_dim: int, tokens: int, outputs: int | None = None) -> int:
  """One pre-norm block on `tokens` tokens: qkv, proj, fc1, fc2 and attention.

  With `outputs`, only that many tokens get queries, projection and MLP (keys
  and values still cover all tokens), as the pre-training decoder's last block.
  """
  q = tokens if outputs is None else outputs
  return (2 * 3 * width * width * tokens + 2 * (width * width + 2 * width * mlp_dim) * q
          + 4 * q * tokens * width)


def pretrain_flops_per_clip(variant: str | ViTSize, frames: int, image_size: int,
                            spec: MaskSpec | None = None, *, encoder: str = "tube",
                            encoder_ratio: float = 0.9, decoder: str = "running_cell",
                            decoder_ratio: float = 0.5) -> dict:
  """Forward and training FLOPs of one pre-training clip, by part.

  Args:
    variant: a name from the variants table ("S/16") or a ViTSize.
    frames, image_size: the clip (T, and H = W).
    spec: the mask spec; when None it is built from the keyword mask fields.

  Returns a dict with `encoder`, `decoder` (each forward FLOPs, embedding and
  head included on their side), `forward`, `train` (= 3 x forward), and the
  token counts `visible` (M) and `targets` (N_dec).
  """
  size = get_variant(variant) if isinstance(variant, str) else variant
  grid = patching.grid_shape(frames, image_size, size.patch)
  if spec is None:
    spec = MaskSpec(grid=grid, encoder=encoder, encoder_ratio=encoder_ratio,
                    decoder=decoder, decoder_ratio=decoder_ratio)
  m, n_dec = spec.num_visible, spec.num_targets
  cube = patching.TUBELET * size.patch * size.patch * 3
  d, dd = size.width, size.decoder_width

  enc = 2 * cube * d * m + size.depth * _block_forward(d, size.mlp_dim, m)
  # The decoder's last block computes only the target tokens (the head reads
  # nothing else), so it is counted that way: the work done, not the reference's.
  dec = (2 * d * dd * m  # encoder_to_decoder
         + (size.decoder_depth - 1) * _block_forward(dd, size.decoder_mlp_dim, m + n_dec)
         + _block_forward(dd, size.decoder_mlp_dim, m + n_dec, n_dec)
         + 2 * dd * cube * n_dec)  # head on the target tokens
  fwd = enc + dec
  return {"encoder": enc, "decoder": dec, "forward": fwd, "train": 3 * fwd,
          "visible": m, "targets": n_dec}


def classifier_flops_per_clip(variant: str | ViTSize, frames: int, image_size: int,
                              num_classes: int) -> dict:
  """Forward and training FLOPs of one clip through the classifier (all N tokens).

  Returns `forward` (patch embedding, blocks, head), `train` (= 3 x forward)
  and `tokens` (N).
  """
  size = get_variant(variant) if isinstance(variant, str) else variant
  t, h, w = patching.grid_shape(frames, image_size, size.patch)
  n = t * h * w
  cube = patching.TUBELET * size.patch * size.patch * 3
  fwd = (2 * cube * size.width * n + size.depth * _block_forward(size.width, size.mlp_dim, n)
         + 2 * size.width * num_classes)
  return {"forward": fwd, "train": 3 * fwd, "tokens": n}


def train_flops_per_clip(exp) -> float:
  """Training FLOPs per clip of an Experiment's stage (what MFU divides by)."""
  c = exp.config
  if exp.task.kind == "pretrain":
    return pretrain_flops_per_clip(c.model.variant, c.data.frames, c.data.image_size,
                                   exp.task.spec)["train"]
  if exp.task.kind == "detector":  # the encoder on the training crop; the RoI head is tiny
    return classifier_flops_per_clip(c.model.variant, c.data.frames, c.detect.crop_size,
                                     exp.task.num_classes)["train"]
  train = classifier_flops_per_clip(c.model.variant, c.data.frames, c.data.image_size,
                                    exp.task.num_classes)["train"]
  teacher = getattr(exp.task, "teacher_size", None)
  if teacher is not None:  # distillation: the frozen teacher's forward on the same clip
    train += classifier_flops_per_clip(teacher, c.data.frames, exp.task.teacher_image_size,
                                       exp.task.num_classes)["forward"]
  return train


def count_dot_flops(jaxpr) -> int:
  """2*K per output element of every dot_general in a (closed) jaxpr, recursively
  (a cond counts its most expensive branch; Pallas kernel bodies are not counted).

  An independent count used by the tests to check the analytic one.
  """
  import math

  from jax.extend import core as jcore

  total = 0
  inner = getattr(jaxpr, "jaxpr", jaxpr)
  for eqn in inner.eqns:
    if eqn.primitive.name == "dot_general":
      (lc, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval
      k = math.prod(lhs.shape[i] for i in lc)
      out = eqn.outvars[0].aval
      total += 2 * k * math.prod(out.shape)
    if eqn.primitive.name == "cond":  # one branch runs (e.g. lax.platform_dependent's)
      total += max(count_dot_flops(b) for b in eqn.params["branches"])
      continue
    if eqn.primitive.name == "pallas_call":  # a kernel body is per block, not the op's count
      continue
    for p in eqn.params.values():
      subs = p if isinstance(p, (list, tuple)) else [p]
      for s in subs:
        if isinstance(s, (jcore.ClosedJaxpr, jcore.Jaxpr)):
          mult = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
          total += mult * count_dot_flops(s)
  return total
