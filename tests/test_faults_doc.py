"""docs/faults.md's promise is backed: every fault row names the tests that run that fault,
and each named test exists, is collected by pytest and is not skipped on this machine (one
parametrised case per row; the collection runs once, in a subprocess, with
tests/collect_report.py reporting each test's skip marks and storage-server fixtures)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys

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


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> dict[str, str | None]:
  """{node id: skip reason or None} of every test in the files the document names."""
  files = sorted({path for _, tests in ROWS for path, _ in _references(tests)
                  if os.path.isfile(os.path.join(ROOT, path))})
  report = tmp_path_factory.mktemp("collect") / "report.json"
  env = dict(os.environ, VMAE2_COLLECT_REPORT=str(report))
  proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                         "-p", "no:cacheprovider", "-p", "tests.collect_report", *files],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
  with open(report, encoding="utf-8") as f:
    return json.load(f)


def test_the_document_has_the_rows():
  assert len(ROWS) > 40


@pytest.mark.parametrize("fault,tests", ROWS, ids=[f"row{i}" for i in range(len(ROWS))])
def test_each_documented_fault_names_tests_that_run_here(fault, tests, collected):
  refs = _references(tests)
  assert any(pattern for _, pattern in refs), f"{fault!r}: names no test ({tests!r})"
  for path, pattern in refs:
    file = os.path.join(ROOT, path)
    assert os.path.isfile(file), f"{fault!r}: {path} does not exist"
    if pattern is None:
      continue
    # test functions in the file, then the collected items of that name (parametrised ones
    # as name[params]); at least one of them must run here
    with open(file, encoding="utf-8") as f:
      names = re.findall(r"^def (test_\w+)\(", f.read(), flags=re.M)
    assert fnmatch.filter(names, pattern), f"{fault!r}: {path}::{pattern} does not exist"
    items = {node: why for node, why in collected.items()
             if node.startswith(path + "::")
             and fnmatch.fnmatch(node.split("::", 1)[1].split("[")[0], pattern)}
    assert items, f"{fault!r}: {path}::{pattern} is not collected by pytest"
    assert any(why is None for why in items.values()), (
        f"{fault!r}: {path}::{pattern} is skipped here: {sorted(set(items.values()))[:3]}")
