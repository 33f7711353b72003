"""Run every benchmark module in this folder (each ``benchmarks/*.py`` with a ``main(quick)``).

``python benchmarks/run_all.py [--quick] [--threads N] [--only NAME ...]``: each module prints its
own table; ``--quick`` runs the small sizes only (seconds), ``--threads`` goes to modules that
take it. A full run (not ``--quick``) also writes ``benchmarks/RESULTS.md``: the date, the
commit, the machine and every module's printed tables, so that the numbers quoted anywhere come
from one dated file (git keeps its history).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import inspect
import io
import os
import pathlib
import platform
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def modules(only=None):
    """Benchmark modules: every ``*.py`` here except this runner and private files (those
    named in ``only``, when given), imported one at a time as they are reached. Each is
    registered in ``sys.modules`` before it runs: dataclasses (nfxp's) look their module up
    there by name."""
    for path in sorted(HERE.glob("*.py")):
        if path.name == pathlib.Path(__file__).name or path.name.startswith("_"):
            continue
        if only is not None and path.stem not in only:
            continue
        spec = importlib.util.spec_from_file_location(f"benchmarks.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        if callable(getattr(module, "main", None)):
            yield path.stem, module


class _Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy (a module's printed tables)."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text):
        self.stream.write(text)
        self.copy.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()


def machine() -> str:
    """One line naming this machine: CPU model, cores, memory, Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(pathlib.Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 2**20:.0f} GiB"
    import torch

    return (f"{cpu}, {os.cpu_count()} cores{memory}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(sections: list[tuple[str, str, float]], path: pathlib.Path) -> None:
    """``benchmarks/RESULTS.md``: one section per module with its printed output."""
    lines = ["# Benchmark results", "",
             f"Written by `make bench` (`python benchmarks/run_all.py`) on "
             f"{datetime.date.today().isoformat()}, commit {commit()}.",
             f"Machine: {machine()}.", "",
             "Each table's ratios were measured side by side in one run; "
             "`benchmarks/README.md` says what each module measures.", ""]
    for name, text, seconds in sections:
        lines += [f"## {name} ({seconds:.0f} s)", "", "```", text.rstrip(), "```", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run all bayesirl benchmarks.")
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads, for modules whose main takes `threads`")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="run these modules only (file names without .py)")
    args = parser.parse_args(argv)
    sections = []
    for name, module in modules(args.only):
        print(f"=== {name} {'(quick)' if args.quick else ''}".rstrip(), flush=True)
        kwargs = {}
        if args.threads is not None and "threads" in inspect.signature(module.main).parameters:
            kwargs["threads"] = args.threads
        tee = _Tee(sys.stdout)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(tee):
            module.main(args.quick, **kwargs)
        seconds = time.perf_counter() - t0
        sections.append((name, tee.copy.getvalue(), seconds))
        print(f"=== {name}: {seconds:.1f} s\n", flush=True)
    if not args.quick and args.only is None:
        write_results(sections, HERE / "RESULTS.md")
        print(f"wrote {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
