"""Recognising Kinetics class lists, so data and heads use the reference's class order.

The reference numbers Kinetics classes by its own lists (resources/kinetics/
label_map_k*.txt): K400 in the official names' sorted order but with 13
classes renamed to their later Kinetics names ("balloon blowing" is
"inflating balloons" at index 12), K600 / K700 / K710 in orders that are not
alphabetical. Every published head and the 710 -> 400/600/700 maps assume
those orders, so a data set whose classes are a Kinetics set must be numbered
the same way, whatever its CSV or folders spell.

Names are compared after `canonical` (case, '_' for spaces, apostrophes) and
through each set's known renames: the official K400 CSV names below, and for
K600/K700/K710 the reference's k710_identical_label_merge.json pairs whose
older name is not itself a class of that set.
"""

from __future__ import annotations

import functools
from typing import Sequence

from vmae2_jax.conversion import labels

SETS = ("k400", "k600", "k700", "k710")

# Official K400 CSV name -> the name at the same index of the reference's K400 list
# (found by comparing the official CSV's sorted class names with label_map_k400.txt).
K400_RENAMES = {
    "balloon blowing": "inflating balloons",
    "changing wheel": "changing wheel (not on bike)",
    "cooking sausages": "cooking sausages (not on barbeque)",
    "drinking": "sipping cup",
    "dying hair": "dyeing hair",
    "garbage collecting": "person collecting garbage",
    "hugging": "hugging baby",
    "making bed": "making the bed",
    "opening bottle": "opening wine bottle",
    "picking fruit": "picking apples",
    "skiing (not slalom or crosscountry)": "skiing mono",
    "sniffing": "smelling feet",
    "tying tie": "tying necktie",
}


def canonical(name: str) -> str:
  """A class name as compared: lower case, '_' as space, no apostrophes, single spaces."""
  return " ".join(str(name).lower().replace("_", " ").replace("'", "").split())


@functools.lru_cache(maxsize=None)
def lookup(dataset: str) -> dict[str, int]:
  """canonical name (the reference's and its known older names) -> class index."""
  names = labels.class_names(dataset)
  index = {canonical(n): i for i, n in enumerate(names)}
  if dataset == "k400":
    renames = K400_RENAMES
  else:
    renames = labels.identical_label_merge()
  for old, new in renames.items():
    if canonical(new) in index and canonical(old) not in index:
      index[canonical(old)] = index[canonical(new)]
  return index


def identify(names: Sequence[str]) -> str | None:
  """"k400" | "k600" | "k700" | "k710" when ``names`` are exactly that set's classes
  (any order, known renames allowed), else None."""
  for dataset in SETS:
    if len(names) != len(labels.class_names(dataset)):
      continue
    table = lookup(dataset)
    found = {table.get(canonical(n)) for n in names}
    if None not in found and len(found) == len(names):
      return dataset
  return None


def reference_indices(names: Sequence[str], dataset: str) -> list[int]:
  """Each name's class index in the reference's ``dataset`` order."""
  table = lookup(dataset)
  return [table[canonical(n)] for n in names]


def same_class(a: str, b: str, dataset: str | None) -> bool:
  """Whether two spellings name one class (through ``dataset``'s renames when given)."""
  if canonical(a) == canonical(b):
    return True
  if dataset is None:
    return False
  table = lookup(dataset)
  return table.get(canonical(a), -1) == table.get(canonical(b), -2)


def name_differences(ours: Sequence[str], theirs: Sequence[str], *, first: int = 3) -> str:
  """'' when the two lists name the same classes in the same order, else a short account:
  the counts, or the first differing indices and how many differ."""
  if len(ours) != len(theirs):
    return f"{len(ours)} classes vs {len(theirs)}"
  dataset = identify(ours) or identify(theirs)
  diff = [i for i, (a, b) in enumerate(zip(ours, theirs)) if not same_class(a, b, dataset)]
  if not diff:
    return ""
  shown = "; ".join(f"index {i}: {ours[i]!r} vs {theirs[i]!r}" for i in diff[:first])
  more = f" (+{len(diff) - first} more)" if len(diff) > first else ""
  return f"{len(diff)} of {len(ours)} class names differ: {shown}{more}"
