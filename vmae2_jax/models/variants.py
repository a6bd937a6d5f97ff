"""Model sizes by name, in one table (the reference's published variants)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ViTSize:
  """Encoder and matching pre-training decoder sizes."""

  width: int
  depth: int
  heads: int
  patch: int
  mlp_ratio: float
  decoder_width: int
  decoder_heads: int
  decoder_depth: int = 4

  @property
  def mlp_dim(self) -> int:
    return int(self.width * self.mlp_ratio)

  @property
  def decoder_mlp_dim(self) -> int:
    return int(self.decoder_width * self.mlp_ratio)


# Encoder params: S 21.88M, B 86.23M, L 303.86M, H 631.61M, g 1011.61M.
VARIANTS: dict[str, ViTSize] = {
    # Tiny sizes for tests and the CPU demo (not published).
    "mu/16": ViTSize(32, 2, 2, 16, 2.0, 32, 2, decoder_depth=1),
    "Ti/16": ViTSize(96, 4, 3, 16, 4.0, 64, 2, decoder_depth=2),
    "S/16": ViTSize(384, 12, 6, 16, 4.0, 192, 3),
    "B/16": ViTSize(768, 12, 12, 16, 4.0, 384, 6),
    "L/16": ViTSize(1024, 24, 16, 16, 4.0, 512, 8),
    "H/16": ViTSize(1280, 32, 16, 16, 4.0, 512, 8),
    "g/14": ViTSize(1408, 40, 16, 14, 48 / 11, 512, 8),
}


def get_variant(name: str) -> ViTSize:
  """Returns the size for `name` ("S/16", "g/14", ...) or fails naming the field."""
  if name not in VARIANTS:
    raise ValueError(
        f"config.model.variant={name!r} is unknown; choose one of {sorted(VARIANTS)}")
  return VARIANTS[name]
