"""docs/faults.md's promise is backed: every fault row names the tests that run that fault,
and each named test exists (one parametrised case per row; no JAX, no processes)."""

from __future__ import annotations

import fnmatch
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "faults.md")


def _rows() -> list[tuple[str, str]]:
  """(fault, test column) of every table row, with "same" replaced by the row above's."""
  rows, previous = [], ""
  with open(DOC, encoding="utf-8") as f:
    for line in f:
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if not line.startswith("|") or len(cells) < 3 or cells[0] == "fault" or set(
          cells[0]) <= set("-: "):
        continue
      tests = cells[-1]
      if tests == "same" or tests.startswith("same;"):
        tests = previous + tests[len("same"):]
      rows.append((cells[0], tests))
      previous = tests
  return rows


def _references(text: str) -> list[tuple[str, str | None]]:
  """(test file, test name pattern or None) named in a test column; a bare `test_x` after a
  `tests/f.py::...` reference belongs to that file."""
  refs, current = [], None
  for token in re.findall(r"`([^`]+)`", text):
    path, _, name = token.partition("::")
    if path.startswith("tests/") and path.endswith(".py"):
      current = path
      refs.append((path, name or None))
    elif current and re.fullmatch(r"test_[\w*]+", token):
      refs.append((current, token))
  return refs


ROWS = _rows()


def test_the_document_has_the_rows():
  assert len(ROWS) > 40


@pytest.mark.parametrize("fault,tests", ROWS, ids=[f"row{i}" for i in range(len(ROWS))])
def test_each_documented_fault_names_existing_tests(fault, tests):
  refs = _references(tests)
  if not refs:
    assert tests.startswith("not tested"), f"{fault!r}: no test named ({tests!r})"
    return
  for path, pattern in refs:
    file = os.path.join(ROOT, path)
    assert os.path.isfile(file), f"{fault!r}: {path} does not exist"
    if pattern is None:
      continue
    with open(file, encoding="utf-8") as f:
      names = re.findall(r"^def (test_\w+)\(", f.read(), flags=re.M)
    assert fnmatch.filter(names, pattern), f"{fault!r}: {path}::{pattern} does not exist"
