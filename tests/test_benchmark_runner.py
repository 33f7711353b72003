"""benchmarks/run_all.py (``make bench``) finds and imports every benchmark module."""

import importlib.util
import pathlib

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _runner():
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCHMARKS / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_module_imports_and_has_a_main():
    """nfxp's dataclasses failed under the runner's import (not in sys.modules), which stopped
    `make bench` at the first module after the inference benchmark."""
    runner = _runner()
    names = [name for name, _ in runner.modules()]
    expected = sorted(p.stem for p in BENCHMARKS.glob("*.py")
                      if p.stem != "run_all" and not p.stem.startswith("_"))
    assert names == expected


def test_only_imports_the_modules_named():
    runner = _runner()
    assert [name for name, _ in runner.modules(["planning", "nfxp"])] == ["nfxp", "planning"]
