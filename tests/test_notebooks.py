"""The notebooks in notebooks/: kept reviewable, and run headless as CI would run them.

- Each .ipynb and its jupytext pair (.py, percent format) read to the same cells.
- The committed .ipynb files carry no outputs.
- Each notebook runs top to bottom in a fresh kernel of this interpreter (nbclient,
  kernel "python3" pointed at sys.executable, one CPU device as on Colab), with a cell of
  tiny settings injected after its "parameters" cell. A run fails on any cell error, on a
  cell tagged "plot" that shows no PNG, or on a missing metric line.

The published-checkpoint notebook runs twice, once per kind of stand-in checkpoint (a
classifier and a pre-trained model): the injected cell trains a tiny demo model for a few
steps and exports it to the reference's format (python -m vmae2_jax.convert --to=official),
and the notebook converts that file exactly as it would a downloaded one.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("quickstart", "published_checkpoint")
CELL_TIMEOUT_S = 600

QUICKSTART_CI = """\
# CI settings (injected by tests/test_notebooks.py): the tiny model, a few steps per stage.
VARIANT = "mu/16"
PRETRAIN_STEPS = 12
PLOT_EVERY = 6
POSTPRETRAIN_STEPS = 8
FINETUNE_STEPS = 8
"""

# A stand-in for a published checkpoint: a tiny demo run of the kind, exported to the
# reference's format by the command line a user would run.
PUBLISHED_CI = """\
# CI settings (injected by tests/test_notebooks.py): no published checkpoint here, so a
# stand-in: a tiny demo run exported to the reference's format, converted below exactly as a
# downloaded file would be.
import os, subprocess, sys
from configs import demo, finetune_demo
from vmae2_jax.training.trainer import train

_kind = {kind!r}
if _kind == "classifier":
  _c = finetune_demo.get_config()
  _c.init_from = ""
  _c.eval.every_steps = -1
  _c.eval.test_at_end = False
else:
  _c = demo.get_config()
  _c.reconstruction.enabled = False
_c.model.variant = "mu/16"
_c.total_steps, _c.warmup_steps, _c.log_every = 3, 1, 1
train(_c, os.path.abspath("standin_run"))
subprocess.run([sys.executable, "-m", "vmae2_jax.convert", "--to=official",
                "--src=standin_run", "--dst=standin_official.pth"], check=True)
CHECKPOINT = os.path.abspath("standin_official.pth")
VIDEO = "sample"
FRAMES, IMAGE_SIZE = 8, 64
CLASS_NAMES = ["left", "right", "up", "down"] if _kind == "classifier" else None
"""

# Lines each run must print (regular expressions over all text outputs).
QUICKSTART_METRICS = (
    r"pre-training done: step 12, loss \d\.\d{4} -> \d\.\d{4}",
    r"multi-view test on 32 videos x 4 views: top-1 \d+\.\d%, top-5 \d+\.\d%",
    r"\*\*Per class\*\*",
    r"right_drift\.mp4 \(4 views\): 1\. \w+ \d\.\d{3} \| 2\.",
    r"bikes\.mp4 \(4 views\): 1\. \w+ \d\.\d{3}",
    r"32 videos written, 0 already there, 0 failed",
    r"\d+ windows x 32 features",
)
PUBLISHED_METRICS = {
    "classifier": (r"classifier mu/16, 4 classes; runs on 8 frames of 64x64",
                   r"bikes\.mp4 \(15 views\):\n  1\. (left|right|up|down) +\d\.\d{3}",
                   r"share of the saliency per 2-frame step: (\d\.\d\d ?){4}"),
    "pretrain": (r"pretrain mu/16; runs on 8 frames of 64x64",
                 r"has no classification head",
                 r"90% of the tubes hidden; mean absolute error on hidden pixels: \d+\.\d"),
}


def _cells(nb) -> list[tuple[str, str, list[str]]]:
  return [(c.cell_type, c.source.strip(), list(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("name", NAMES)
def test_pair_in_sync_and_outputs_stripped(name):
  ipynb = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
  text = jupytext.read(NOTEBOOKS / f"{name}.py")
  assert _cells(ipynb) == _cells(text), (
      f"notebooks/{name}.ipynb and .py differ; run: jupytext --sync notebooks/{name}.ipynb")
  raw = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
  for i, cell in enumerate(raw.cells):
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, (
          f"notebooks/{name}.ipynb cell {i} has outputs; strip them "
          f"(jupyter nbconvert --clear-output --inplace, or jupytext --sync from the .py)")
  assert raw.metadata.get("kernelspec", {}).get("name") == "python3"
  params = [c for c in raw.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1, f"{name}: one cell tagged 'parameters' expected"
  assert re.search(r'^REPO_URL = "https://github.com/vmae2-jax/vmae2_jax"$',
                   "\n".join(c.source for c in raw.cells), re.M)


def _kernel_home(tmp_path: Path) -> dict:
  """An environment whose "python3" kernel is this interpreter, with one CPU device."""
  spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "Python 3 (vmae2_jax tests)", "language": "python"}))
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags)
  env["JAX_PLATFORMS"] = "cpu"
  env["JUPYTER_PATH"] = str(tmp_path / "jupyter")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
  env.pop("MPLBACKEND", None)
  return env


def _run(name: str, injected: str, tmp_path: Path, monkeypatch):
  nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
  at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  nb.cells.insert(at + 1, nbformat.v4.new_code_cell(injected,
                                                    metadata={"tags": ["injected-parameters"]}))
  env = _kernel_home(tmp_path)
  monkeypatch.setenv("JUPYTER_PATH", env["JUPYTER_PATH"])  # the spec lookup, in this process
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                   resources={"metadata": {"path": str(run_dir)}})
  t0 = time.monotonic()
  try:
    client.execute(env=env)
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"notebooks/{name}.ipynb: a cell failed:\n{str(e)[-4000:]}")
  seconds = time.monotonic() - t0
  print(f"\nnotebooks/{name}.ipynb ran in {seconds:.0f}s")
  (tmp_path / f"{name}.executed.ipynb").write_text(nbformat.writes(nb))
  return nb, seconds


def _texts(nb) -> str:
  out = []
  for cell in nb.cells:
    for o in cell.get("outputs", []):
      if o.output_type == "stream":
        out.append(o.text)
      elif o.output_type in ("execute_result", "display_data"):
        data = o.get("data", {})
        out.append(data.get("text/markdown", "") or data.get("text/plain", ""))
  return "\n".join(out)


def _check(nb, name: str, expected: tuple[str, ...]) -> None:
  for i, cell in enumerate(nb.cells):
    if "plot" in cell.metadata.get("tags", []):
      pngs = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
      assert pngs, f"notebooks/{name}.ipynb cell {i} (tagged 'plot') shows no image:\n" \
                   f"{cell.source[:300]}"
  text = _texts(nb)
  missing = [p for p in expected if not re.search(p, text)]
  assert not missing, f"notebooks/{name}.ipynb: no output line matches {missing}:\n{text[-3000:]}"


def test_quickstart_runs(tmp_path, monkeypatch):
  nb, _ = _run("quickstart", QUICKSTART_CI, tmp_path, monkeypatch)
  _check(nb, "quickstart", QUICKSTART_METRICS)


@pytest.mark.parametrize("kind", ("classifier", "pretrain"))
def test_published_checkpoint_runs(kind, tmp_path, monkeypatch):
  nb, _ = _run("published_checkpoint", PUBLISHED_CI.format(kind=kind), tmp_path, monkeypatch)
  _check(nb, "published_checkpoint", PUBLISHED_METRICS[kind])
  # The clip, then (classifier) the top-5 bars and the saliency, or (pre-trained) the
  # reconstruction.
  pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
  assert pngs == {"classifier": 3, "pretrain": 2}[kind], f"{pngs} pictures"
