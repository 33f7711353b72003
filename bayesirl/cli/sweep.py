"""``bayesirl sweep SPEC.toml --grid key=v1,v2 [--grid ...] [--workers N | --scheduler ADDRESS]
[--out DIR]``: one posterior per cell of the grid (:func:`bayesirl.sweep.sweep`).

Cells run one after another here, or on a Dask cluster: ``--workers N`` starts a
``LocalCluster`` of N worker processes (one thread each) listening on 127.0.0.1 only, with no
dashboard; ``--scheduler ADDRESS`` connects to a running scheduler (e.g.
``tcp://10.0.0.5:8786``), whose workers must see ``--out`` (a shared file system) or send
their posteriors back to be written here. Dask is the ``dask`` extra: ``pip install
bayesirl[dask]``.

Writes ``<out>/<cell>/posterior.nc`` per cell as it finishes, then ``comparison.csv`` and
``comparison.png``; a re-run with the same spec and grid skips the finished cells. Exit codes:
0 every cell finished, 1 some cell failed (the others are kept), 2 a bad spec, grid or argument,
130 interrupted (finished cells kept).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

__all__ = ["add_parser", "run"]

_MAX_ROWS = 40


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``sweep`` on the ``bayesirl`` parser's subcommands ``sub``."""
    p = sub.add_parser(
        "sweep", help="run a spec once per cell of a grid of its keys and compare the posteriors",
        description="Run the spec once per combination of --grid values (each a dotted spec "
                    "key such as inference.seed or reward.prior.scale), one posterior per cell "
                    "in <out>/<cell>/posterior.nc, then a comparison table (LOO where the cells "
                    "share data, EVD and EPIC where the true reward is known) in "
                    "comparison.csv and comparison.png. Finished cells are skipped on a re-run.")
    p.add_argument("spec", metavar="SPEC.toml", type=Path, help="the problem specification")
    p.add_argument("--grid", metavar="KEY=V1,V2", action="append", required=True,
                   help="a spec key and its values, comma-separated (TOML values; a bare word "
                        "is a string); repeat for more keys")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", metavar="N", type=_positive, default=None,
                       help="run the cells on a local Dask cluster of N worker processes "
                            "(127.0.0.1 only)")
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="run the cells on the Dask cluster of this scheduler")
    p.add_argument("--out", metavar="DIR", type=Path, default=None,
                   help="folder for the cells and the comparison (default "
                        "./bayesirl-output/<spec name>-sweep)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not an integer >= 1")
    return value


def _error(message: str, code: int) -> int:
    print(f"bayesirl: {message}".replace("\n", " "), file=sys.stderr)
    return code


@contextlib.contextmanager
def _warning_lines():
    """Print each :class:`~bayesirl.sweep.SweepWarning` as one ``bayesirl: warning:`` line
    on stderr (not Python's file:line form); other warnings as before."""
    from bayesirl.sweep import SweepWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", SweepWarning)
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if issubclass(category, SweepWarning):
                print(f"bayesirl: warning: {message}".replace("\n", " "), file=sys.stderr)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


@contextlib.contextmanager
def _executor(workers: int | None, scheduler: str | None):
    """None, or a Dask client's executor (a LocalCluster's with ``workers``), closed on
    leaving. ImportError when Dask is missing."""
    if workers is None and scheduler is None:
        yield None
        return
    from bayesirl.sweep import local_cluster

    try:
        from distributed import Client
    except ImportError:
        raise ImportError("--workers and --scheduler run the cells on Dask, which is not "
                          "installed: pip install bayesirl[dask]") from None
    with contextlib.ExitStack() as stack:
        if workers is not None:
            cluster = stack.enter_context(local_cluster(workers))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(scheduler))
        yield client.get_executor()


def run(args) -> int:
    """Run ``bayesirl sweep`` with parsed ``args``; returns the exit code."""
    from bayesirl.cli.spec import SpecError, load_spec
    from bayesirl.sweep import parse_grid, sweep

    try:
        grid = parse_grid(args.grid)
        spec = load_spec(args.spec)
    except (SpecError, ValueError) as e:
        return _error(f"error: {e}", 2)
    out = args.out if args.out is not None else Path("bayesirl-output") / f"{spec.name}-sweep"
    try:
        with _executor(args.workers, args.scheduler) as executor, _warning_lines():
            result = sweep(spec, grid, executor=executor, out=out, progress=not args.quiet)
    except ImportError as e:
        return _error(str(e), 2)
    except KeyboardInterrupt:
        return _error(f"interrupted; the finished cells are in {out}, and a re-run skips them",
                      130)
    except (SpecError, ValueError, TypeError) as e:
        return _error(f"error: {e}", 2)
    except OSError as e:  # a scheduler that cannot be reached, a full disk
        return _error(f"error: {type(e).__name__}: {e}", 1)
    if not args.quiet:
        import pandas as pd

        with pd.option_context("display.width", 160, "display.max_columns", 30,
                               "display.precision", 3):
            print(result.table.head(_MAX_ROWS).to_string())
    for name, error in result.failed.items():
        print(f"bayesirl: cell {name} failed: {error}", file=sys.stderr)
    done = len(result.cells) - len(result.failed)
    print(f"{done} of {len(result.cells)} cells in {result.out} ({len(result.skipped)} finished "
          "before); comparison.csv, comparison.png")
    return 1 if result.failed else 0
