"""What a conversion did with every tensor, and the error it raises when it cannot."""

from __future__ import annotations

import dataclasses
from typing import Any


class ConversionError(ValueError):
  """A checkpoint cannot be converted as asked; the message names keys and shapes."""


@dataclasses.dataclass
class ConversionReport:
  """Accounting of one import or export: every source tensor is in exactly one list."""

  source: str = ""
  layout: str = ""               # "official" | "hf"
  kind: str = ""                 # "pretrain" | "classifier" | "encoder" (of the source)
  target_kind: str = ""
  variant: str = ""
  mapped: list[tuple[str, str, tuple[int, ...]]] = dataclasses.field(default_factory=list)
  dropped: list[tuple[str, tuple[int, ...], str]] = dataclasses.field(default_factory=list)
  created: list[tuple[str, tuple[int, ...], str]] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)
  warnings: list[str] = dataclasses.field(default_factory=list)
  missing: list[tuple[str, tuple[int, ...]]] = dataclasses.field(default_factory=list)
  unexpected: list[tuple[str, tuple[int, ...]]] = dataclasses.field(default_factory=list)
  misshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = dataclasses.field(
      default_factory=list)

  @property
  def ok(self) -> bool:
    return not (self.missing or self.unexpected or self.misshaped)

  def problems(self) -> str:
    lines = []
    for key, shape in self.missing:
      lines.append(f"  missing     {key}  expected shape {list(shape)}")
    for key, shape in self.unexpected:
      lines.append(f"  unexpected  {key}  shape {list(shape)}")
    for key, got, want in self.misshaped:
      lines.append(f"  mis-shaped  {key}  shape {list(got)}, expected {list(want)}")
    return "\n".join(lines)

  def raise_if_bad(self) -> None:
    if not self.ok:
      raise ConversionError(
          f"{self.source}: refusing to convert ({self.layout} {self.kind} layout, variant "
          f"{self.variant or '?'}): {len(self.missing)} missing, {len(self.unexpected)} "
          f"unexpected, {len(self.misshaped)} mis-shaped tensors\n{self.problems()}")

  def summary(self) -> str:
    n_mapped = sum(_numel(s) for _, _, s in self.mapped)
    lines = [
        f"source: {self.source}",
        f"layout: {self.layout}  kind: {self.kind} -> {self.target_kind}  variant: {self.variant}",
        f"mapped: {len(self.mapped)} tensors ({n_mapped:,} values)",
        f"dropped deliberately: {len(self.dropped)} tensors",
        f"created fresh: {len(self.created)} tensors",
    ]
    lines += [f"WARNING: {w}" for w in self.warnings]
    lines += [f"note: {n}" for n in self.notes]
    return "\n".join(lines)

  def full_text(self) -> str:
    lines = [self.summary(), "", "# mapped (source key -> our path, source shape)"]
    lines += [f"{k} -> {p} {list(s)}" for k, p, s in self.mapped]
    lines += ["", "# dropped deliberately (source key, shape, why)"]
    lines += [f"{k} {list(s)}: {why}" for k, s, why in self.dropped]
    lines += ["", "# created fresh (our path, shape, how)"]
    lines += [f"{k} {list(s)}: {how}" for k, s, how in self.created]
    if not self.ok:
      lines += ["", "# problems", self.problems()]
    return "\n".join(lines) + "\n"

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _numel(shape) -> int:
  n = 1
  for s in shape:
    n *= int(s)
  return n
