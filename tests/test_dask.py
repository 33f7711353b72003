"""Sweeps, SBC and chains on a real Dask cluster: a LocalCluster of two worker processes (one
thread each) on 127.0.0.1, no dashboard, started and closed by a fixture; skipped when Dask
(the ``dask`` extra) is not installed.

A task is a pure, seeded function of its inputs, so the cluster must give the draws and ranks of
a run in this process; a worker killed in the middle of a sweep is survived (Dask runs its task
again elsewhere) and no finished cell runs again (each attempt of a cell appends a line with its
worker's pid to ``attempts.log``, which the test reads).
"""

import os
import signal
import threading
import time

import pytest
import torch

distributed = pytest.importorskip("distributed")

from helpers import sweep_spec  # noqa: E402

import bayesirl as birl  # noqa: E402
from bayesirl.sbc import sbc  # noqa: E402
from bayesirl.sweep import local_cluster, sweep  # noqa: E402
from bayesirl.testing import tiny_chain_mdp  # noqa: E402


@pytest.fixture(scope="module")
def client():
    # local_cluster: 2 worker processes of one thread on 127.0.0.1, dashboard_address=None,
    # the scheduler's health-check HTTP server on a free loopback port (not 8787, which a
    # cluster of another test run may hold)
    with local_cluster(2) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(sweep_spec(20))
    return path


def attempts(folder):
    """The pids of a cell's attempts, from its attempts.log."""
    log = folder / "attempts.log"
    if not log.exists():
        return []
    return [int(line.split("pid=")[1].split()[0]) for line in log.read_text().splitlines()]


def test_the_cluster_listens_on_the_loopback_interface_only(client):
    info = client.scheduler_info()
    assert client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert len(info["workers"]) == 2
    assert all(w.startswith("tcp://127.0.0.1:") for w in info["workers"])
    assert all(w["nthreads"] == 1 for w in info["workers"].values())
    assert client.cluster.scheduler.http_server.address == "127.0.0.1"  # health checks only


def test_a_sweep_on_the_cluster_gives_the_draws_of_a_sequential_sweep(client, spec, tmp_path):
    grid = {"inference.seed": [0, 1], "reward.prior.scale": [1.0]}
    here = sweep(spec, grid, progress=False, fast=True)
    there = sweep(spec, grid, executor=client.get_executor(), out=tmp_path / "out",
                  progress=False, fast=True)
    assert there.failed == {}
    for cell in here.cells:
        assert torch.equal(there.posteriors[cell.name].params["theta"],
                           here.posteriors[cell.name].params["theta"])
        assert (tmp_path / "out" / cell.name / "posterior.nc").is_file()
    pids = {attempts(tmp_path / "out" / c.name)[0] for c in here.cells}
    assert os.getpid() not in pids  # the cells ran on the workers


def test_sbc_on_the_cluster_gives_the_ranks_of_a_sequential_run(client):
    mdp = tiny_chain_mdp(horizon=3, n_features=1)
    model = birl.LinearReward(mdp.features)
    kw = dict(n_demos=5, method="nuts", n_draws=9,
              infer_kwargs={"warmup": 20, "num_samples": 20}, seed=2, progress=False)
    here = sbc(mdp, model, 6, **kw)
    there = sbc(mdp, model, 6, executor=client.get_executor(), **kw)
    assert (there.ranks == here.ranks).all() and (there.thin == here.thin).all()


@pytest.mark.parametrize("parallel", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["chains-one-after-another", "chains-in-local-processes"])
def test_infer_on_the_cluster_gives_the_draws_of_chains_run_here(client, parallel):
    mdp = tiny_chain_mdp(horizon=3, n_features=2)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=10, seed=0)
    kw = dict(num_samples=30, warmup=30, num_chains=2, seed=3, progress=False)
    model = birl.LinearReward(mdp.features)
    with pytest.warns(birl.diagnostics.InferenceWarning):
        here = birl.infer(mdp, demos, model, parallel=parallel, **kw)
    with pytest.warns(birl.diagnostics.InferenceWarning):
        there = birl.infer(mdp, demos, model, executor=client.get_executor(), **kw)
    assert torch.equal(there.params["theta"], here.params["theta"])


def test_a_worker_killed_mid_sweep_is_survived_and_nothing_finished_runs_again(
        client, tmp_path):
    """Four cells of a few seconds each on two workers; once one cell has finished, the worker
    running another is killed (SIGKILL). The sweep ends with every cell; the killed cell ran
    twice, every cell finished before the kill once, and a re-run runs nothing."""
    spec = tmp_path / "tiny.toml"
    spec.write_text(sweep_spec(60))
    out = tmp_path / "out"
    grid = {"inference.seed": [0, 1, 2, 3]}
    outcome = {}

    def run():
        try:
            outcome["result"] = sweep(spec, grid, executor=client.get_executor(), out=out,
                                      progress=False, fast=False)
        except BaseException as e:  # reported by the test below
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    killed = finished_before = kill_time = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
        folders = sorted(p for p in out.glob("inference.seed=*") if p.is_dir())
        done = {p.name for p in folders if (p / "cell.json").exists()}
        running = [p for p in folders if p.name not in done and attempts(p)]
        if done and running:
            victim = running[0]
            finished_before = done
            os.kill(attempts(victim)[-1], signal.SIGKILL)
            killed, kill_time = victim.name, time.time()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the sweep did not end"
    assert "error" not in outcome, outcome.get("error")
    assert killed is not None, "no cell was running while another had finished"
    result = outcome["result"]
    assert result.failed == {} and len(result.posteriors) == 4
    counts = {c.name: len(attempts(out / c.name)) for c in result.cells}
    for name in finished_before:
        assert counts[name] == 1, counts
    # the killed attempt could have finished in the instant before the signal
    assert counts[killed] == 2 or (out / killed / "cell.json").stat().st_mtime <= kill_time
    assert sum(counts.values()) == 4 + (counts[killed] - 1)
    # a re-run finds every cell finished and runs none
    again = sweep(spec, grid, executor=client.get_executor(), out=out, progress=False,
                  fast=False)
    assert sorted(again.skipped) == sorted(counts)
    assert {c.name: len(attempts(out / c.name)) for c in result.cells} == counts
    for name, post in again.posteriors.items():
        assert torch.equal(post.params["theta"], result.posteriors[name].params["theta"]
                           .to(post.params["theta"].dtype))


@pytest.mark.slow
def test_cli_sweep_on_a_local_cluster_of_two_workers(spec, tmp_path, capsys):
    from bayesirl.cli.app import main

    out = tmp_path / "out"
    code = main(["sweep", str(spec), "--grid", "inference.seed=0,1", "--workers", "2",
                 "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "2 of 2 cells" in capsys.readouterr().out
    pids = {attempts(out / f"inference.seed={s}")[0] for s in (0, 1)}
    assert os.getpid() not in pids
