"""The stage notebooks (notebooks/*.ipynb) run top to bottom without an error.

Each notebook is executed from a copy (the committed file, with its outputs, is never
rewritten) by nbclient in a python3 kernel, on the tiny preset (its one live-training cell trains
2 epochs of a hidden-16 model) and against the committed ML-100K runs in
results/ml-100k-cpu-shuffled (shuffled batches; all four models, DiffuRec and DreamRec at seed 0).
A notebook that raises fails the build. Takes about half a minute per notebook on 2 CPU cores.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
RUNS = ROOT / "results" / "ml-100k-cpu-shuffled" / "runs" / "ml-100k"
NOTEBOOKS = ["01_data_and_stage1.ipynb", "02_warmup.ipynb", "03_full_finetuning.ipynb",
             "04_baselines_and_collapse.ipynb", "05_probes_and_tsne.ipynb"]


def test_every_notebook_is_listed():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == NOTEBOOKS


def test_committed_notebooks_match_the_generator_and_have_outputs():
    """The .ipynb files are what notebooks/_build.py writes, executed: same cell sources, every
    code cell run once in order without an error, a moderate size."""
    nbformat = pytest.importorskip("nbformat")
    import importlib.util

    spec = importlib.util.spec_from_file_location("_build", NOTEBOOK_DIR / "_build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert list(build.NOTEBOOKS) == NOTEBOOKS
    for name in NOTEBOOKS:
        committed = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
        fresh = build.build(name)
        assert [c.source for c in committed.cells] == [c.source for c in fresh.cells], \
            f"{name} differs from notebooks/_build.py: run python notebooks/_build.py --execute"
        code = [c for c in committed.cells if c.cell_type == "code"]
        assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
            f"{name} was not executed top to bottom"
        assert not [o for c in code for o in c.outputs if o.output_type == "error"]
        assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs)
        assert (NOTEBOOK_DIR / name).stat().st_size < 1_500_000


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import NoSuchKernel, get_kernel_spec

    try:
        get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no python3 Jupyter kernel installed")
    if not RUNS.is_dir():
        pytest.skip(f"committed runs not found at {RUNS}")

    # The kernel inherits this environment.
    monkeypatch.setenv("COLLAPSE_KIT_PRESET", "tiny")
    monkeypatch.setenv("COLLAPSE_KIT_RUNS", str(RUNS))
    monkeypatch.setenv("COLLAPSE_KIT_TSNE", "fast")
    monkeypatch.delenv("MPLBACKEND", raising=False)            # the inline backend: figures are drawn
    monkeypatch.setenv("TMPDIR", str(tmp_path))          # the live runs' temporary folders
    monkeypatch.setenv("OMP_NUM_THREADS", "1")            # 2 shared cores: no oversubscription
    monkeypatch.delenv("PYTHONSTARTUP", raising=False)

    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    for cell in nb.cells:                                  # run a clean copy
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{name}: a cell raised\n{err}")
    print(f"{name}: executed in {time.perf_counter() - t0:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    nbformat.write(nb, tmp_path / name)                    # the executed copy, for a look
    assert os.path.getsize(tmp_path / name) > 0
