"""Run every benchmark module in this folder (each ``benchmarks/*.py`` with a ``main(quick)``).

``python benchmarks/run_all.py [--quick] [--threads N]``: each module prints its own table;
``--quick`` runs the small sizes only (seconds), ``--threads`` goes to modules that take it.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def modules():
    """Benchmark modules: every ``*.py`` here except this runner and private files."""
    for path in sorted(HERE.glob("*.py")):
        if path.name == pathlib.Path(__file__).name or path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"benchmarks.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if callable(getattr(module, "main", None)):
            yield path.stem, module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run all bayesirl benchmarks.")
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads, for modules whose main takes `threads`")
    args = parser.parse_args(argv)
    for name, module in modules():
        print(f"=== {name} {'(quick)' if args.quick else ''}".rstrip(), flush=True)
        kwargs = {}
        if args.threads is not None and "threads" in inspect.signature(module.main).parameters:
            kwargs["threads"] = args.threads
        t0 = time.perf_counter()
        module.main(args.quick, **kwargs)
        print(f"=== {name}: {time.perf_counter() - t0:.1f} s\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
