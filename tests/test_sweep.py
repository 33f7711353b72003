"""Sweeps (bayesirl.sweep and `bayesirl sweep`): the grid, one posterior per cell, finished
cells skipped on a re-run, the comparison table. Cells run in the CLI's fast mode (at most 20
warmup + 20 draws per chain), so the numbers are meaningless and the code paths real."""

import concurrent.futures
import json
import os
import shutil
import signal
import sys
import threading
import time
import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import InlineExecutor, press_on_another_thread, sweep_spec, tiny_spec

from bayesirl.cli.app import main
from bayesirl.cli.spec import SpecError
from bayesirl.sweep import Cell, SweepWarning, cells_of, parse_grid, sweep

SPEC = sweep_spec()


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SPEC)
    return path


def attempts(out, name):
    return (out / name / "attempts.log").read_text().count("started")


# ---------------------------------------------------------------------------- the grid
def test_grid_values_are_read_as_toml_and_bare_words_as_strings():
    grid = parse_grid(["inference.seed=0,1", "likelihood.kind=soft, boltzmann",
                       "reward.prior.scale=0.5,1e1", "inference.parallel=true,false",
                       'demonstrations.expert="soft"', "reward.hidden=[8, 8],[16]"])
    assert grid == {"inference.seed": [0, 1], "likelihood.kind": ["soft", "boltzmann"],
                    "reward.prior.scale": [0.5, 10.0], "inference.parallel": [True, False],
                    "demonstrations.expert": ["soft"], "reward.hidden": [[8, 8], [16]]}


@pytest.mark.parametrize("items, match", [
    (["inference.seed"], "expected KEY=V1,V2"),
    (["inference.seed=0,,1"], "no empty value"),
    (["=0,1"], "with a key"),
    (["inference.seed=0", "inference.seed=1"], "names 'inference.seed' twice"),
])
def test_bad_grid_strings(items, match):
    with pytest.raises(ValueError, match=match):
        parse_grid(items)


def test_cells_are_every_combination_with_plain_unique_names():
    cells = cells_of({"inference.seed": [0, 1], "reward.prior.scale": [0.5, 2.0]})
    assert [c.overrides for c in cells] == [
        {"inference.seed": 0, "reward.prior.scale": 0.5},
        {"inference.seed": 0, "reward.prior.scale": 2.0},
        {"inference.seed": 1, "reward.prior.scale": 0.5},
        {"inference.seed": 1, "reward.prior.scale": 2.0}]
    assert cells[1].name == "inference.seed=0__reward.prior.scale=2.0"
    odd = cells_of({"demonstrations.file": ["a/b.npz", "a b.npz", "a?b.npz"],
                    "inference.seed": [np.int64(3)]})
    names = [c.name for c in odd]
    assert all("/" not in n and " " not in n for n in names) and len(set(names)) == 3
    assert odd[0].overrides["inference.seed"] == 3 and type(odd[0].overrides["inference.seed"]) \
        is int


@pytest.mark.parametrize("grid, exc, match", [
    ({}, ValueError, "expected a non-empty dict"),
    ({"seed": [0]}, ValueError, "grid key 'seed': expected a dotted spec key"),
    ({"inference.seed": []}, ValueError, r"grid\['inference.seed'\] is \[\]"),
    ({"inference.seed": 0}, ValueError, "expected a non-empty list"),
    ({"inference.seed": [object()]}, TypeError, "expected a value a TOML spec can hold"),
])
def test_bad_grids(grid, exc, match):
    with pytest.raises(exc, match=match):
        cells_of(grid)


def test_a_cell_the_spec_rejects_fails_before_anything_runs(spec, tmp_path):
    with pytest.raises(SpecError, match="cell inference.seed=-1: .*inference.seed is -1"):
        sweep(spec, {"inference.seed": [0, -1]}, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(SpecError, match="grid key 'likelihood.kind.x': likelihood.kind is "
                                        "'soft' in the spec, not a table"):
        sweep({**_data(), "likelihood": {"kind": "soft"}}, {"likelihood.kind.x": [1]},
              progress=False)


def _data():
    from bayesirl.cli.spec import tomllib
    return tomllib.loads(SPEC)


# ---------------------------------------------------------------------------- running
def test_each_cell_writes_its_posterior_and_a_rerun_skips_finished_cells(spec, tmp_path):
    out = tmp_path / "out"
    grid = {"inference.seed": [0, 1], "reward.prior.scale": [0.5, 2.0]}
    first = sweep(spec, grid, out=out, progress=False, fast=True)
    names = [c.name for c in first.cells]
    assert len(names) == 4 and first.skipped == [] and first.failed == {}
    for name in names:
        record = json.loads((out / name / "cell.json").read_text())
        assert record["cell"] == name and (out / name / "posterior.nc").is_file()
        assert attempts(out, name) == 1
    assert (out / "comparison.csv").is_file() and (out / "comparison.png").is_file()
    # a cell lost before it finished (no cell.json) runs again; the others are not recomputed
    os.remove(out / names[2] / "cell.json")
    again = sweep(spec, grid, out=out, progress=False, fast=True)
    assert again.skipped == [n for n in names if n != names[2]]
    assert [attempts(out, n) for n in names] == [1, 1, 2, 1]
    for name in names:  # the same seeded draws, from the file or recomputed
        assert torch.equal(again.posteriors[name].params["theta"],
                           first.posteriors[name].params["theta"].to(torch.float64))
    pd.testing.assert_frame_equal(again.table.drop(columns="seconds"),
                                  first.table.drop(columns="seconds"))


def test_the_seed_of_a_cell_is_its_specs(spec, tmp_path):
    result = sweep(spec, {"inference.seed": [0, 0, 1]}, progress=False, fast=True)
    a, b, c = (result.posteriors[cell.name].params["theta"] for cell in result.cells)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert result.out is None and not any(tmp_path.glob("**/posterior.nc"))


def test_comparison_table_compares_loo_only_among_cells_of_the_same_data(spec, tmp_path):
    result = sweep(spec, {"demonstrations.seed": [0, 1], "reward.prior.scale": [0.5, 2.0]},
                   out=tmp_path / "out", progress=False, fast=True)
    table = result.table
    assert list(table.index) == [c.name for c in result.cells]
    for col in ("demonstrations.seed", "reward.prior.scale", "seconds", "min_ess", "max_rhat",
                "evd", "epic", "elpd_loo", "loo_se", "p_loo", "loo_bad_k", "loo_rank",
                "elpd_diff", "loo_weight", "data"):
        assert col in table, col
    assert table["data"].nunique() == 2
    for _, group in table.groupby("data"):  # ranks and weights within each data set
        assert sorted(group["loo_rank"]) == [0, 1]
        assert group["loo_weight"].sum() == pytest.approx(1.0)
        assert (group["elpd_diff"] >= 0).all() and (group["elpd_diff"] == 0).sum() == 1
    assert (table["evd"] >= -1e-9).all() and table["epic"].between(0, 1).all()
    # each row's metrics are its own cell's posterior's (the cells' values all differ)
    from bayesirl.metrics import epic_distance, expected_value_difference
    for name, post in result.posteriors.items():
        mdp = post.mdp
        evd = float(expected_value_difference(mdp, None, post).mean())
        epic = float(torch.nanmean(epic_distance(mdp, mdp.reward, post.reward())))
        assert table.loc[name, "evd"] == pytest.approx(evd, rel=1e-9, abs=1e-12)
        assert table.loc[name, "epic"] == pytest.approx(epic, rel=1e-9, abs=1e-12)
        with warnings.catch_warnings():  # a few draws: ArviZ warns about its k-hat
            warnings.simplefilter("ignore")
            loo = az.loo(post.to_arviz())
        elpd = float(loo.elpd if hasattr(loo, "elpd") else loo.elpd_loo)
        assert table.loc[name, "elpd_loo"] == pytest.approx(elpd, rel=1e-9)
    assert table["evd"].nunique() == len(table) and table["elpd_loo"].nunique() == len(table)
    saved = pd.read_csv(tmp_path / "out" / "comparison.csv", index_col="cell")
    assert np.allclose(saved["elpd_loo"], table["elpd_loo"])


def test_a_failing_cell_is_reported_and_the_others_finish(spec, tmp_path):
    out = tmp_path / "out"
    result = sweep(spec, {"demonstrations.length": [4, 9]}, out=out, progress=False, fast=True)
    bad = "demonstrations.length=9"
    assert list(result.failed) == [bad]
    assert "demonstrations.length is 9, expected at most" in result.failed[bad]
    assert result.table.loc[bad, "error"] == result.failed[bad]
    assert (out / "demonstrations.length=4" / "cell.json").is_file()
    assert not (out / bad / "cell.json").exists()


def test_cells_sent_to_an_executor_run_on_one_thread_as_one_thread_jobs(spec, monkeypatch):
    """One cell per worker, on one thread (as infer's chains): a cell whose batch would raise
    torch's thread count (the vectorized ensemble's batch_threads) keeps it, so workers on
    every core do not oversubscribe them. Cells run here keep this process's threads."""
    from bayesirl.inference.executors import one_thread_job

    sweep_module = sys.modules["bayesirl.sweep"]  # the name bayesirl.sweep is the function

    seen = []
    run_cell = sweep_module.run_cell

    def recording(task):
        seen.append((one_thread_job(), torch.get_num_threads()))
        return run_cell(task)

    monkeypatch.setattr(sweep_module, "run_cell", recording)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grid = {"inference.seed": [0, 1]}
        sweep(spec, grid, executor=InlineExecutor(), progress=False, fast=True)
        assert seen == [(True, 1), (True, 1)]
        assert torch.get_num_threads() == 2 and not one_thread_job()  # restored
        seen.clear()
        sweep(spec, grid, progress=False, fast=True)
        assert seen == [(False, 2), (False, 2)]
    finally:
        torch.set_num_threads(threads)


class StuckExecutor(concurrent.futures.Executor):
    """Cells sent here never finish (until ``finish`` gives each an error)."""

    def __init__(self):
        self.futures = []

    def submit(self, fn, /, *args, **kwargs):
        self.futures.append(concurrent.futures.Future())
        return self.futures[-1]

    def finish(self):
        for f in self.futures:
            if f.set_running_or_notify_cancel():
                f.set_exception(RuntimeError("finished late"))


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="signals a thread (POSIX)")
def test_a_ctrl_c_on_another_thread_stops_the_sweep_while_cells_run(spec):
    """A Dask client's threads may take a Ctrl-C that the kernel hands to the process; the
    sweep's wait for its cells looks for it ten times a second, rather than when the next
    cell finishes (here in 10 s, when every cell fails)."""
    executor = StuckExecutor()
    late = threading.Timer(10, executor.finish)
    start = time.monotonic()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        late.start()
        with (press_on_another_thread(lambda: time.monotonic() > start + 1),  # once waiting
              pytest.raises(KeyboardInterrupt)):
            sweep(spec, {"inference.seed": [0, 1]}, executor=executor, progress=False,
                  fast=True)
        elapsed = time.monotonic() - start
    finally:
        late.cancel()
        signal.signal(signal.SIGINT, previous)
    assert elapsed < 5, elapsed
    assert all(f.cancelled() for f in executor.futures)  # the cells not finished are dropped


def test_a_folder_holding_another_specs_cell_is_refused(spec, tmp_path):
    out = tmp_path / "out"
    sweep(spec, {"inference.seed": [0]}, out=out, progress=False, fast=True)
    spec.write_text(SPEC.replace("n = 8", "n = 6"))
    with pytest.raises(ValueError, match="holds a cell of another spec or grid"):
        sweep(spec, {"inference.seed": [0]}, out=out, progress=False, fast=True)


@pytest.fixture
def file_spec(tmp_path):
    """A MAP spec whose demonstrations are a CSV file beside it, in its own folder."""
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "demos.csv").write_text("episode,step,state,action\n0,0,0,4\n0,1,0,4\n"
                                      "1,0,4,1\n")
    path = folder / "tiny.toml"
    path.write_text(tiny_spec(inference={"method": "map"}).replace(
        "[demonstrations]\nn = 4", '[demonstrations]\nfile = "demos.csv"'))
    return path


def test_a_changed_data_file_is_never_taken_for_the_finished_cells(file_spec, tmp_path):
    out, grid = tmp_path / "out", {"inference.seed": [0]}
    sweep(file_spec, grid, out=out, progress=False, fast=True)
    with open(file_spec.parent / "demos.csv", "a") as f:
        f.write("2,0,8,4\n")  # one more demonstration: the finished cell is stale
    with pytest.raises(ValueError, match="holds a cell of another spec or grid, or of changed "
                                         "data"):
        sweep(file_spec, grid, out=out, progress=False, fast=True)


def test_a_copied_spec_and_its_files_find_their_finished_cells(file_spec, tmp_path):
    out, grid = tmp_path / "out", {"inference.seed": [0]}
    sweep(file_spec, grid, out=out, progress=False, fast=True)
    copy = tmp_path / "b"
    shutil.copytree(file_spec.parent, copy)
    again = sweep(copy / "tiny.toml", grid, out=out, progress=False, fast=True)
    assert again.skipped == ["inference.seed=0"] and again.failed == {}


def test_a_grid_axis_the_method_ignores_is_refused_before_any_work(tmp_path):
    spec = tmp_path / "map.toml"
    spec.write_text(tiny_spec(inference={"method": "map"}))
    with pytest.raises(SpecError, match="grid key 'inference.num_chains' changes nothing: method "
                                        "'map' does not use it"):
        sweep(spec, {"inference.num_chains": [1, 4]}, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.warns(SweepWarning, match="inference.num_chains is ignored by method 'map' in 2 "
                                          "of 4 cell"):
        sweep(spec, {"inference.method": ["map", "nuts"], "inference.num_chains": [1, 2]},
              progress=False, fast=True)


def test_a_grid_of_seeds_infer_cannot_take_is_refused_before_any_work(spec, tmp_path):
    with pytest.raises(SpecError, match=r"cell inference.seed=4294967296: inference.seed is "
                                        r"4294967296, expected an integer in \[0, 4294967295\]"):
        sweep(spec, {"inference.seed": [0, 2 ** 32]}, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_sweep_arguments(spec, tmp_path):
    with pytest.raises(TypeError, match="spec must be a path"):
        sweep(3, {"inference.seed": [0]}, progress=False)
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        sweep(spec, {"inference.seed": [0]}, executor="dask", progress=False)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with pytest.raises(ValueError, match="executor is a ThreadPoolExecutor"):
            sweep(spec, {"inference.seed": [0]}, executor=pool, progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot be written"):
        sweep(spec, {"inference.seed": [0]}, out=blocker / "out", progress=False)


# ---------------------------------------------------------------------------- the CLI
def test_cli_sweep_writes_the_cells_and_the_comparison(spec, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["sweep", str(spec), "--grid", "inference.seed=0,1", "--grid",
                 "reward.prior.scale=1.0", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "2 of 2 cells" in printed and "0 finished before" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "comparison.csv", "comparison.png", "inference.seed=0__reward.prior.scale=1.0",
        "inference.seed=1__reward.prior.scale=1.0"]
    assert main(["sweep", str(spec), "--grid", "inference.seed=0,1", "--grid",
                 "reward.prior.scale=1.0", "--out", str(out), "--quiet"]) == 0
    assert "2 finished before" in capsys.readouterr().out


@pytest.mark.parametrize("args, match", [
    (["--grid", "inference.seed"], "expected KEY=V1,V2"),
    (["--grid", "inference.seed=-1"], "inference.seed is -1"),
    (["--grid", "inference.seed=0", "--workers", "0"], "0 is not an integer >= 1"),
    (["--grid", "inference.seed=0", "--workers", "2", "--scheduler", "tcp://x:1"],
     "not allowed with argument"),
])
def test_cli_sweep_bad_arguments_exit_2(spec, tmp_path, capsys, args, match):
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), *args]) == 2
    assert match in capsys.readouterr().err


def test_cli_sweep_names_a_grid_axis_that_changes_nothing(tmp_path, capsys):
    spec = tmp_path / "map.toml"
    spec.write_text(tiny_spec(inference={"method": "map"}))
    assert main(["sweep", str(spec), "--grid", "inference.num_chains=1,4", "--out",
                 str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayesirl: error: grid key 'inference.num_chains' changes nothing")
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()
    spec.write_text(tiny_spec(inference={"method": "map", "steps": 30}))
    assert main(["sweep", str(spec), "--grid", "inference.seed=0", "--out",
                 str(tmp_path / "o"), "--quiet"]) == 0
    assert capsys.readouterr().err == ("bayesirl: warning: inference.steps is ignored by method "
                                       "'map' in 1 of 1 cell(s)\n")


def test_cli_sweep_without_dask_says_how_to_install_it(spec, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    assert main(["sweep", str(spec), "--grid", "inference.seed=0", "--workers", "2",
                 "--out", str(tmp_path / "o")]) == 2
    assert "pip install bayesirl[dask]" in capsys.readouterr().err


def test_cell_objects_are_plain_data():
    cell = Cell("a=1", {"a.b": 1})
    assert cell == Cell("a=1", {"a.b": 1})
