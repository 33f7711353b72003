"""The tutorial notebooks run top to bottom (in fast mode) and are committed without outputs.

Each notebook reads ``BAYESIRL_FAST``; with ``BAYESIRL_FAST=1`` it shrinks the problem sizes so
that it runs in well under a minute. The kernel is the ``python3`` kernel of this interpreter
(ipykernel's own, whose ``python`` argv jupyter_client replaces by ``sys.executable``), started
in a temporary directory so that files the notebooks write land there.
"""

import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell


def _ids(path):
    return path.name


def test_the_tutorials_are_there():
    names = {p.name for p in NOTEBOOKS}
    for name in ("01_quickstart.ipynb", "02_diagnostics_and_model_comparison.ipynb",
                 "03_uncertainty.ipynb", "04_baselines_vs_posterior.ipynb"):
        assert name in names, f"notebooks/{name} is missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name}: code cell {i} has outputs; strip them"
        assert cell.execution_count is None, (
            f"{path.name}: code cell {i} has execution_count {cell.execution_count}; strip it")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_reads_fast_mode_first(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code").source
    assert 'os.environ.get("BAYESIRL_FAST") == "1"' in first, (
        f"{path.name}: the first code cell must read BAYESIRL_FAST")
    assert "torch.set_num_threads(1)" in first, (
        f"{path.name}: the first code cell must set torch.set_num_threads(1)")


def _python3_kernel_runs_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec("python3").argv
    # jupyter_client substitutes sys.executable for a bare "python"/"python3" argv[0]
    return argv[0] in {"python", f"python{sys.version_info[0]}",
                       f"python{sys.version_info[0]}.{sys.version_info[1]}", sys.executable}, argv


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_in_fast_mode(path, tmp_path, monkeypatch):
    ok, argv = _python3_kernel_runs_this_interpreter()
    assert ok, (f"the 'python3' Jupyter kernel runs {argv}, not this interpreter "
                f"({sys.executable}); a user-level kernelspec shadows the environment's")
    monkeypatch.setenv("BAYESIRL_FAST", "1")  # the kernel inherits this process's environment
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws figures
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed in fast mode:\n{e}")
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, f"{path.name}: cells raised {[e['ename'] for e in errors]}"
