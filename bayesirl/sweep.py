"""Sweeps: one posterior per cell of a grid over a problem spec's keys, on any executor.

``sweep(spec, grid={"inference.seed": [0, 1], "reward.prior.scale": [0.5, 1.0]})`` runs the
spec (:mod:`bayesirl.cli.spec`'s format; loaded, validated and built by
:func:`~bayesirl.cli.spec.parse_spec` and :func:`~bayesirl.cli.build.build`) once per
combination of values, each value set at its dotted key (``table.key``, or deeper into a
table-valued key such as ``reward.prior.scale``). Every cell is checked before any runs, so a
typo in the grid fails at once naming the cell.

Each cell is a pure, seeded, picklable task (:class:`CellTask`): its result depends only on its
spec (the spec's own ``inference.seed`` seeds it), never on the worker that runs it, so cells go
to any ``concurrent.futures.Executor`` (a process pool, a Dask client's ``get_executor()``) or
run here one after another. With ``out``, a cell writes into ``out/<cell name>/`` as it
finishes: ``posterior.nc`` (:meth:`~bayesirl.RewardPosterior.save`) and then ``cell.json``
(its overrides, a digest of its spec and of the contents of the files it names, its
metrics), the marker of a finished cell; every
attempt first appends a line to ``attempts.log``. A task whose cell is already finished returns
it without running, and a re-run of the sweep submits only unfinished cells, so an interrupted
sweep or a lost worker (whose task the executor runs again) loses nothing finished. The cell
writes its files from the worker when the worker shares the file system, and otherwise this
process writes them when the result arrives. A cell folder holding another spec's cell (or
one run on a file the spec names, such as ``demonstrations.file``, that has changed since) is
refused, never overwritten; the spec's folder plays no part, so a copied spec and its files
find their finished cells. A grid axis of an ``[inference]`` option that no cell's method uses
is refused (its cells would be the same run); options only some cells ignore warn
(:class:`SweepWarning`).

The sweep ends with one comparison table, a row per cell (``out/comparison.csv`` and
``comparison.png``): the overrides, seconds, the smallest bulk ESS and largest R-hat; where the
true reward is known (a simulated environment), the posterior mean EVD and EPIC distance to it
(:mod:`bayesirl.metrics`); LOO (``elpd_loo``, its ``se``, ``p_loo``, the Pareto k above 0.7
counted in ``loo_bad_k``) for every posterior with a pointwise log-likelihood, and, among the
cells that condition on the same data (same MDP and demonstrations), ``arviz.compare``'s rank,
``elpd_diff`` and stacking ``weight``: LOO compares models of the same data only.

:func:`local_cluster` starts the Dask cluster ``bayesirl sweep --workers N`` runs on (worker
processes on 127.0.0.1); ``Client(local_cluster(2)).get_executor()`` is an executor for
:func:`sweep`, :func:`bayesirl.diagnostics.sbc` and :func:`bayesirl.infer` alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import pickle
import re
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesirl._validation import check_process_executor
from bayesirl.cli.build import build, fast_mode, unused_options
from bayesirl.cli.spec import Spec, SpecError, load_spec, parse_spec, tomllib
from bayesirl.inference.executors import as_completed, one_thread
from bayesirl.inference.facade import infer
from bayesirl.inference.target import digest
from bayesirl.metrics import epic_distance, expected_value_difference
from bayesirl.posterior.diagnostics import InferenceWarning
from bayesirl.posterior.files import atomic_write
from bayesirl.posterior.reward_posterior import RewardPosterior

__all__ = ["Cell", "CellResult", "CellTask", "SweepResult", "SweepWarning", "cells_of",
           "local_cluster", "parse_grid", "run_cell", "sweep"]

_FINISHED = "cell.json"
_POSTERIOR = "posterior.nc"
_ATTEMPTS = "attempts.log"
_COLUMNS = ("method", "chains", "draws", "seconds", "min_ess", "max_rhat", "inference_warnings",
            "evd", "epic", "elpd_loo", "loo_se", "p_loo", "loo_bad_k", "loo_rank", "elpd_diff",
            "loo_weight", "data", "error")


class SweepWarning(UserWarning):
    """Something in a sweep's spec or grid has no effect (an option some cells' method
    ignores); ``bayesirl sweep`` prints it as a warning line."""


# ---------------------------------------------------------------------------- the grid
def _split_values(text: str) -> list[str]:
    """``text`` split at the commas outside brackets, braces and quotes."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _toml_value(text: str):
    """A TOML value (``0``, ``0.5``, ``true``, ``"a"``, ``[1, 2]``), or the text itself when
    it is not one (a bare word such as ``boltzmann``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_grid(items) -> dict[str, list]:
    """``["key=v1,v2", ...]`` (the command line's ``--grid``) -> ``{key: [v1, v2]}``; each value
    read as TOML (numbers, booleans, quoted strings, lists), a bare word as a string."""
    grid: dict[str, list] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. "
                             "inference.seed=0,1)")
        key, _, text = item.partition("=")
        key = key.strip()
        values = _split_values(text)
        if not key or any(v == "" for v in values):
            raise ValueError(f"--grid {item!r}: expected KEY=V1,V2,... with a key and no empty "
                             "value")
        if key in grid:
            raise ValueError(f"--grid names {key!r} twice; give its values once, "
                             "comma-separated")
        grid[key] = [_toml_value(v) for v in values]
    return grid


def _plain(where: str, value):
    """``value`` as a TOML value (numpy scalars become Python's); TypeError otherwise."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(f"{where}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _plain(f"{where}.{k}", v) for k, v in value.items()}
    raise TypeError(f"{where} is {value!r} ({type(value).__name__}), expected a value a TOML "
                    "spec can hold: a number, a boolean, a string, a list or a table")


def _check_grid(grid) -> dict[str, list]:
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"grid is {grid!r}, expected a non-empty dict {{'table.key': [values]}}, "
                         "e.g. {'inference.seed': [0, 1]}")
    out = {}
    for key, values in grid.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)+",
                                                        key):
            raise ValueError(f"grid key {key!r}: expected a dotted spec key such as "
                             "'inference.seed' or 'reward.prior.scale'")
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"grid[{key!r}] is {values!r}, expected a non-empty list of values")
        out[key] = [_plain(f"grid[{key!r}][{i}]", v) for i, v in enumerate(values)]
    return out


def _label(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Cell:
    """One cell of a grid: its folder ``name`` and its ``overrides`` ``{dotted key: value}``."""

    name: str
    overrides: dict


def cells_of(grid: dict) -> list[Cell]:
    """The cells of ``grid`` (every combination, the last key varying fastest), each named
    ``key=value`` joined by ``__`` with characters other than letters, digits and ``._=+-``
    replaced by ``-`` (a plain folder name; a ``-<i>`` suffix keeps names unique)."""
    grid = _check_grid(grid)
    keys = list(grid)
    cells, seen = [], set()
    for i, values in enumerate(itertools.product(*(grid[k] for k in keys))):
        raw = "__".join(f"{k}={_label(v)}" for k, v in zip(keys, values, strict=True))
        name = re.sub(r"[^A-Za-z0-9._=+-]", "-", raw)[:200]
        if name in seen:
            name = f"{name}-{i}"
        seen.add(name)
        cells.append(Cell(name, dict(zip(keys, values, strict=True))))
    return cells


def _with_overrides(data: dict, overrides: dict) -> dict:
    """A deep copy of the spec's TOML ``data`` with each dotted key set."""
    data = json.loads(json.dumps(data))  # TOML values only: a plain deep copy
    for key, value in overrides.items():
        parts = key.split(".")
        table = data
        for depth, part in enumerate(parts[:-1]):
            node = table.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(parts[:depth + 1])
                raise SpecError(f"grid key {key!r}: {where} is {node!r} in the spec, not a "
                                "table, so it has no key "
                                f"{parts[depth + 1]!r}; write it as a table (e.g. prior = "
                                '{ family = "normal", scale = 1.0 })')
            table = node
        table[parts[-1]] = value
    return data


# ---------------------------------------------------------------------------- one cell
@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell: the spec's TOML ``data`` with the cell's overrides,
    the folder its relative file paths resolve against (``base``), the spec's ``spec_name``,
    the cell, the sweep's output folder ``out`` (None: no files), ``fast`` (the CLI's fast
    mode, resolved by the caller so that workers need no environment variable) and ``digest``
    of the data, the contents of the files it names and ``fast`` (recorded in
    ``cell.json``)."""

    data: dict
    base: str
    spec_name: str
    cell: Cell
    out: str | None
    fast: bool
    digest: str


@dataclass
class CellResult:
    """A cell's posterior (None when the task found the cell finished: load it from
    ``out``), its metrics (see the module doc; ``data`` names the data the posterior
    conditions on), whether the task ``skipped`` it as finished, and the ``error``
    (``"Type: message"``) of a cell that failed."""

    name: str
    posterior: RewardPosterior | None
    metrics: dict
    skipped: bool = False
    error: str | None = None


def _finished(folder: Path, digest_: str) -> dict | None:
    """The metrics of a finished cell in ``folder`` (None if unfinished); ValueError when it
    holds another spec's cell."""
    marker = folder / _FINISHED
    if not marker.is_file() or not (folder / _POSTERIOR).is_file():
        return None
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{marker} is not readable as a finished cell's record ({e}); remove "
                         "it to run the cell again") from None
    if record.get("digest") != digest_:
        raise ValueError(f"{folder} holds a cell of another spec or grid, or of changed "
                         "data (a file the spec names changed since; digest "
                         f"{record.get('digest')}, this cell {digest_}); choose another out "
                         "folder or remove that one")
    return record["metrics"]


def _write_cell(folder: Path, task: CellTask, post: RewardPosterior, metrics: dict) -> None:
    """The posterior, then the record that marks the cell finished (both atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    post.save(folder / _POSTERIOR)
    record = {"cell": task.cell.name, "overrides": task.cell.overrides, "digest": task.digest,
              "metrics": metrics}
    text = json.dumps(record, indent=1, sort_keys=True)
    atomic_write(folder / _FINISHED, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _metrics(post: RewardPosterior, mdp, demos, seconds: float, warned: int) -> dict:
    """What the comparison table shows of a cell, computed where the MDP is at hand."""
    m: dict[str, Any] = {"seconds": seconds, "method": post.method,
                         "chains": post.num_chains, "draws": post.num_draws,
                         "inference_warnings": warned,
                         "data": digest((mdp.fingerprint(), demos.states, demos.actions,
                                         demos.mask))}
    if post.num_draws * post.num_chains > 1 and post.params:
        import arviz as az

        idata = post.to_arviz()
        names = list(post.params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few draws: ArviZ warns; the numbers say it
            ess = az.ess(idata, var_names=names, method="bulk")
            m["min_ess"] = float(min(float(np.nanmin(ess[k].values)) for k in names))
            if post.num_chains > 1:
                rhat = az.rhat(idata, var_names=names)
                m["max_rhat"] = float(max(float(np.nanmax(rhat[k].values)) for k in names))
    if getattr(mdp, "reward", None) is not None:
        with torch.no_grad():
            m["evd"] = float(expected_value_difference(mdp, None, post).mean())
            # nan where a draw's canonical reward is constant (see epic_distance)
            m["epic"] = float(torch.nanmean(epic_distance(mdp, mdp.reward, post.reward())))
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in m.items()}


def run_cell(task: CellTask) -> CellResult:
    """Run one cell (build the spec, infer, compute its metrics, write its files): a pure
    function of ``task``. A cell already finished in ``task.out`` is returned without running.
    Leaves torch's default dtype and global RNG as it found them."""
    folder = Path(task.out) / task.cell.name if task.out is not None else None
    if folder is not None:
        done = _finished(folder, task.digest)
        if done is not None:
            return CellResult(task.cell.name, None, done, skipped=True)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / _ATTEMPTS, "a", encoding="utf-8") as f:
            f.write(f"started pid={os.getpid()} host={socket.gethostname()} "
                    f"time={time.time():.3f}\n")
    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # as `bayesirl run`: priors built in float64
    try:
        with torch.random.fork_rng(devices=[]):
            spec = parse_spec(task.data, task.base, task.spec_name)
            mdp, demos, model, kwargs = build(spec, fast=task.fast)
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", InferenceWarning)
                post = infer(mdp, demos, model, progress=False, **kwargs)
            for w in caught:
                if not issubclass(w.category, InferenceWarning):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            warned = sum(issubclass(w.category, InferenceWarning) for w in caught)
            metrics = _metrics(post, mdp, demos, time.perf_counter() - start, warned)
    finally:
        torch.set_default_dtype(old_dtype)
    if folder is not None:
        _write_cell(folder, task, post, metrics)
    return CellResult(task.cell.name, post, metrics)


# ---------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    """What :func:`sweep` returns: the cells, the posteriors of the finished ones (loaded
    from ``out`` for cells finished before), the comparison table (a pandas DataFrame, one row
    per cell), the output folder, the cells that were already finished (``skipped``) and the
    ``failed`` ones ``{name: "Type: message"}``."""

    cells: list[Cell]
    posteriors: dict[str, RewardPosterior]
    table: Any
    out: Path | None
    skipped: list[str]
    failed: dict[str, str]


def _spec_data(spec) -> tuple[dict, Path, str]:
    """``(data, base, name)`` of a spec given as a path, a :class:`~bayesirl.cli.spec.Spec`
    read from TOML, or a dict of TOML data (relative paths resolve against the working
    folder)."""
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    if isinstance(spec, Spec):
        if not spec.text:
            raise ValueError("spec has no TOML text (spec.text is empty); pass the spec's path, "
                             "a Spec from load_spec, or a dict of TOML data")
        base = spec.source.resolve().parent if spec.source is not None else Path.cwd()
        return tomllib.loads(spec.text), base, spec.name
    if isinstance(spec, dict):
        return dict(spec), Path.cwd(), str(spec.get("name", "spec"))
    raise TypeError(f"spec must be a path, a bayesirl.cli.spec.Spec or a dict of TOML data, got "
                    f"{type(spec).__name__}")


def _file_hashes(spec: Spec, cache: dict) -> dict[str, str]:
    """``{spec key: sha256 of the file's content}`` for every file ``spec`` names
    (``environment.file``, ``demonstrations.file``); ``cache`` maps paths read before."""
    out = {}
    for key, path in (("environment.file", spec.environment.file),
                      ("demonstrations.file", spec.demonstrations.file)):
        if path is None:
            continue
        path = Path(path).resolve()
        if path not in cache:
            h = hashlib.sha256()
            try:
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            except OSError as e:
                raise SpecError(f"{key} is {str(path)!r}, which cannot be read "
                                f"({e.strerror or e})") from None
            cache[path] = h.hexdigest()
        out[key] = cache[path]
    return out


def _check_unused(cells: list[Cell], specs: dict[str, Spec]) -> None:
    """A grid axis of an ``[inference]`` option that no cell's method uses changes nothing
    (its cells are the same run): SpecError naming it. Options some cells ignore (an axis
    beside a method axis, or set in the spec) warn (:class:`SweepWarning`)."""
    if not cells:
        return
    axes = [k.split(".", 1)[1] for k in cells[0].overrides
            if k.startswith("inference.") and k.count(".") == 1]
    ignored: dict[str, list[str]] = {}
    for cell in cells:
        spec = specs[cell.name]
        for key in dict.fromkeys(unused_options(spec) + unused_options(spec, axes)):
            ignored.setdefault(key, []).append(spec.inference.method)
    for key, methods in ignored.items():
        names = ", ".join(repr(m) for m in dict.fromkeys(methods))
        if key in cells[0].overrides and len(methods) == len(cells):
            raise SpecError(f"grid key {key!r} changes nothing: method {names} does not use "
                            "it, so its cells are the same run; remove it from the grid")
        warnings.warn(f"{key} is ignored by method {names} in {len(methods)} of {len(cells)} "
                      "cell(s)" + (" (cells that differ only in it are the same run)"
                                   if key in cells[0].overrides else ""),
                      SweepWarning, stacklevel=3)


def _prepare_out(out) -> Path | None:
    """The output folder, created and checked writable before any work (nothing is lost to
    a folder found unwritable at the end)."""
    if out is None:
        return None
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"out is {str(out)!r}, but it cannot be written: {e}") from None
    return out.resolve()


def sweep(spec, grid: dict, *, executor=None, out=None, progress: bool = True,
          fast: bool | None = None) -> SweepResult:
    """One posterior per cell of ``grid`` over the spec's dotted keys (see the module doc).

    Args:
        spec: a TOML spec's path, a :class:`~bayesirl.cli.spec.Spec` (from
            :func:`~bayesirl.cli.spec.load_spec`) or a dict of TOML data.
        grid: ``{"table.key": [values]}``, e.g. ``{"inference.seed": [0, 1],
            "likelihood.kind": ["soft", "boltzmann"]}``; every combination is a cell.
        executor: a ``concurrent.futures.Executor`` that runs cells in processes (a
            ``ProcessPoolExecutor``, a Dask client's ``get_executor()``), one cell per worker
            on one torch and one BLAS thread (:func:`~bayesirl.inference.executors.one_thread`,
            as :func:`~bayesirl.infer`'s chains: a cell that would raise the count for a large
            batch keeps it, so workers on every core do not oversubscribe them); None runs them
            here one after another, on this process's threads.
        out: the folder of the cells' files and the comparison (None: nothing written, nothing
            skipped).
        progress: a tqdm bar over the cells.
        fast: shrink the sample counts as ``BAYESIRL_FAST=1`` does (default: that variable
            here; the workers' environment plays no part).

    Returns:
        :class:`SweepResult`. A cell that fails is reported in ``failed`` and its row, the
        others run on; Ctrl-C cancels the cells not started and re-raises, the finished ones
        being on disk already.
    """
    from tqdm.auto import tqdm

    check_process_executor(
        executor, "cells",
        global_state="set torch's default dtype and seed its global random number generator")
    data, base, spec_name = _spec_data(spec)
    cells = cells_of(grid)
    fast = fast_mode() if fast is None else bool(fast)
    tasks, parsed, hashes = [], {}, {}
    for cell in cells:
        cell_data = _with_overrides(data, cell.overrides)
        try:
            parsed[cell.name] = parse_spec(cell_data, base, spec_name)
            files = _file_hashes(parsed[cell.name], hashes)
        except SpecError as e:
            raise SpecError(f"cell {cell.name}: {e}") from None
        # the files' contents, not the spec's folder: a copied spec finds its cells, and a
        # changed demonstrations.file does not pass for the finished cells of the old one
        tasks.append(CellTask(cell_data, str(base), spec_name, cell, None, fast,
                              digest((cell_data, files, fast))))
    _check_unused(cells, parsed)
    out = _prepare_out(out)
    if out is not None:
        tasks = [dataclasses.replace(t, out=str(out)) for t in tasks]
    results: dict[str, CellResult] = {}
    todo = []
    for task in tasks:  # finished before: not submitted at all
        done = _finished(out / task.cell.name, task.digest) if out is not None else None
        if done is not None:
            results[task.cell.name] = CellResult(task.cell.name, None, done, skipped=True)
        else:
            todo.append(task)
    bar = tqdm(total=len(tasks), initial=len(results), desc="sweep", disable=not progress,
               leave=False)
    try:
        for result in _run_tasks(todo, executor):
            results[result.name] = result
            if out is not None and result.posterior is not None and not (
                    out / result.name / _FINISHED).is_file():  # a worker without our disk
                task = next(t for t in todo if t.cell.name == result.name)
                _write_cell(out / result.name, task, result.posterior, result.metrics)
            bar.update()
    finally:
        bar.close()
    posteriors = {}
    for cell in cells:
        r = results[cell.name]
        if r.error is None:
            posteriors[cell.name] = (r.posterior if r.posterior is not None
                                     else RewardPosterior.load(out / cell.name / _POSTERIOR))
    table = comparison_table(cells, results, posteriors)
    if out is not None:
        atomic_write(out / "comparison.csv", lambda tmp: table.to_csv(tmp))
        plot_comparison(table, out / "comparison.png")
    return SweepResult(cells, posteriors, table, out,
                       [c.name for c in cells if results[c.name].skipped],
                       {c.name: results[c.name].error for c in cells
                        if results[c.name].error is not None})


def _failed(task: CellTask, e: BaseException) -> CellResult:
    return CellResult(task.cell.name, None, {}, error=f"{type(e).__name__}: {e}".replace(
        "\n", " "))


def _run_cell_on_one_thread(task: CellTask) -> CellResult:
    """:func:`run_cell` in an executor's worker: one cell per worker process, each on one
    thread (:func:`~bayesirl.inference.executors.one_thread`), counts restored after."""
    with one_thread():
        return run_cell(task)


def _run_tasks(tasks: list[CellTask], executor):
    """Yield each task's :class:`CellResult` as it finishes: here in order, or from
    ``executor`` in order of completion."""
    if executor is None:
        for task in tasks:
            try:
                yield run_cell(task)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # a cell's failure is reported; the others run on
                yield _failed(task, e)
        return
    if tasks:
        try:
            pickle.dumps(tasks[0])
        except Exception as e:  # pickling raises many types
            raise TypeError(f"a cell cannot be sent to a worker ({type(e).__name__}: {e})") \
                from None
    futures = {executor.submit(_run_cell_on_one_thread, task): task for task in tasks}
    try:
        for future in as_completed(futures):  # sees a Ctrl-C that landed on another thread
            try:
                yield future.result()
            except Exception as e:  # the cell failed (or its worker was lost for good)
                yield _failed(futures[future], e)
    except BaseException:
        for future in futures:
            future.cancel()
        raise


# ---------------------------------------------------------------------------- a local cluster
def local_cluster(n_workers: int):
    """A Dask ``LocalCluster`` of ``n_workers`` worker processes with one thread each, every
    socket on 127.0.0.1 (the scheduler, the workers, and the scheduler's HTTP server of health
    checks on a free port rather than 8787, which another cluster may hold), no dashboard,
    and no statistical profiler in the workers (it samples the running task's stack every 10 ms
    for the dashboard, which costs a long pure-Python task CPU and this cluster has no
    dashboard to show it). ImportError naming the extra when Dask is missing. Use it as a
    context manager; a script that starts one must do so under ``if __name__ ==
    "__main__":`` (its worker processes re-import the script)."""
    try:
        import dask
        from distributed import LocalCluster
    except ImportError:
        raise ImportError("a local Dask cluster needs Dask, which is not installed: pip install "
                          "bayesirl[dask]") from None
    with dask.config.set({"distributed.worker.profile.enabled": False}):  # the nannies copy it
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                            host="127.0.0.1", dashboard_address=None,
                            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


# ---------------------------------------------------------------------------- comparison
def comparison_table(cells: list[Cell], results: dict[str, CellResult],
                     posteriors: dict[str, RewardPosterior]):
    """The comparison (see the module doc): a DataFrame indexed by cell name."""
    import arviz as az
    import pandas as pd

    rows = {}
    for cell in cells:
        r = results[cell.name]
        row = {k: _label(v) if isinstance(v, (list, dict)) else v
               for k, v in cell.overrides.items()}
        row.update(r.metrics)
        row["error"] = r.error
        rows[cell.name] = row
    loo = {}
    for name, post in posteriors.items():
        if post.log_lik is None or post.num_chains * post.num_draws < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pareto k warnings: counted in loo_bad_k
            idata = post.to_arviz()
            result = az.loo(idata, pointwise=True)
        loo[name] = idata
        k = np.asarray(result.pareto_k)
        rows[name].update(elpd_loo=float(result.elpd_loo), loo_se=float(result.se),
                          p_loo=float(result.p_loo), loo_bad_k=int((k > 0.7).sum()))
    groups: dict[str, list[str]] = {}
    for name in loo:
        groups.setdefault(rows[name].get("data"), []).append(name)
    for members in groups.values():
        if len(members) < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compared = az.compare({n: loo[n] for n in members}, ic="loo")
        for n in members:
            rows[n].update(loo_rank=int(compared.loc[n, "rank"]),
                           elpd_diff=float(compared.loc[n, "elpd_diff"]),
                           loo_weight=float(compared.loc[n, "weight"]))
    table = pd.DataFrame.from_dict(rows, orient="index")
    first = [k for k in cells[0].overrides] if cells else []
    order = first + [c for c in _COLUMNS if c in table] + [
        c for c in table if c not in first and c not in _COLUMNS]
    table = table[order]
    table.index.name = "cell"
    return table


def plot_comparison(table, path) -> None:
    """``path``: per cell, ``elpd_loo`` with its standard error (where LOO exists) and the
    posterior mean EVD and EPIC distance (where the true reward is known)."""
    from matplotlib.figure import Figure  # no pyplot: no backend, no global figure state

    panels = [c for c in ("elpd_loo", "evd", "epic") if c in table and table[c].notna().any()]
    n = max(1, len(panels))
    fig = Figure(figsize=(4 * n, 1.0 + 0.3 * len(table)))
    axes = fig.subplots(1, n, squeeze=False)
    y = np.arange(len(table))
    for ax, col in zip(axes[0], panels or [None], strict=True):
        if col is None:
            ax.text(0.5, 0.5, "no LOO, no true reward", ha="center", va="center")
            ax.set_axis_off()
            continue
        err = table["loo_se"] if col == "elpd_loo" and "loo_se" in table else None
        ax.errorbar(table[col], y, xerr=err, fmt="o", color="C0")
        ax.set_yticks(y, table.index if ax is axes[0][0] else [""] * len(y), fontsize=7)
        ax.set_xlabel({"elpd_loo": "elpd (LOO)", "evd": "EVD (posterior mean)",
                       "epic": "EPIC distance (posterior mean)"}[col])
        ax.invert_yaxis()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
