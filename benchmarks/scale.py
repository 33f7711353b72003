"""Scale: many chains in one batched planner, and simulation-based calibration on a Dask cluster.

Side by side in one run, on this machine's cores (every row says what ran):

(a) the 8x8 gridworld of ``benchmarks/inference.py`` (slip 0.1, horizon 30, 8 block features,
    20 demonstrations, Normal(0, 1) prior, soft likelihood): min-ESS per wall second of
    ``infer()``'s default 2 NUTS chains, in 2 processes of one thread (``parallel=True``: the
    default picks processes from 1000 iterations in all), against 64 ChEES-HMC chains in
    lockstep in one process (``chain_method="vectorized"``, as many torch threads as cores).
    Wall time includes everything a user waits for (MAP start, warmup, process start-up).
    Target: >= 4x.
(b) the 32x32 gridworld (S = 1024, horizon 50, 16 block features of 8x8 cells, 50
    demonstrations): the same comparison, float64 as (a); and the vectorized chains once more
    on the float32 MDP (the planner's batch kernel is faster per row in float32).
    Target: >= 4x.
(c) SBC of the tiny NUTS tier of tests/test_sbc.py (3-state chain, horizon 3, one feature, 10
    demonstrations, 100 warmup + 100 draws, L = 9): the same simulations one after another here
    and on a Dask LocalCluster of 2 worker processes (one thread each, 127.0.0.1), its workers
    warmed up first (importing bayesirl), the start-up timed apart. Target: cluster time <=
    1.2 x (sequential / 2), and identical ranks.
(d) peak resident memory of the whole process tree (the sum over processes, polled every 50 ms
    with psutil), each run in a fresh interpreter: (a)'s task with 64 vectorized chains
    against 2 chain processes. Target: less.

Wall time is the target's measure; CPU seconds (this process and its finished children, or
the Dask workers') are printed and recorded beside it, since on a shared machine the wall clock
measures the share of the cores the other work leaves. ``--quick`` shrinks every size (printed,
and in the CSV); ``--only a,c`` runs some tables. Writes ``benchmarks/results/scale.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results" / "scale.csv"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gridworld(size: int, horizon: int, block, n_demos: int, dtype=torch.float64):
    import bayesirl as birl

    mdp = birl.envs.gridworld(size=size, slip=0.1, horizon=horizon, block=block, seed=0,
                              dtype=dtype)
    theta = torch.linspace(-1.0, 1.0, mdp.n_features, dtype=dtype)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.features @ theta),
                          n=n_demos, seed=0)
    return mdp, demos


def min_ess(theta: torch.Tensor) -> float:
    """Smallest bulk ESS over the coordinates of ``theta: (chains, draws, d)``."""
    import arviz as az

    x = theta.detach().double().cpu().numpy()
    return float(min(az.ess(x[..., i], method="bulk") for i in range(x.shape[-1])))


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (chain processes are
    joined before infer() returns)."""
    import resource

    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                 resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _infer(mdp, demos, threads: int, **kwargs):
    """``(posterior, wall seconds, CPU seconds)`` of ``infer()`` with ``threads`` torch threads
    here."""
    import bayesirl as birl
    from bayesirl.posterior.diagnostics import InferenceWarning

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InferenceWarning)
            t0, c0 = time.perf_counter(), _cpu_seconds()
            post = birl.infer(mdp, demos, birl.LinearReward(mdp.features), progress=False,
                              seed=0, **kwargs)
            return post, time.perf_counter() - t0, _cpu_seconds() - c0
    finally:
        torch.set_num_threads(old)


def compare_chains(task: str, problems: dict, baseline: dict, ensembles: list[dict],
                   record) -> None:
    """The baseline's 2 NUTS chains against each vectorized configuration on ``problems``
    (``{dtype name: (mdp, demos)}``)."""
    mdp, demos = problems["float64"]
    cores = _cores()
    post, seconds, cpu = _infer(mdp, demos, 1, num_chains=2, parallel=cores > 1, **baseline)
    ess = min_ess(post.params["theta"])
    base, base_cpu = ess / seconds, ess / cpu
    print(f"  NUTS, 2 chains in {'2 processes' if cores > 1 else 'this process'} "
          f"({baseline['warmup']} + {baseline['num_samples']}): min ESS {ess:.0f} in "
          f"{seconds:.1f} s ({cpu:.1f} CPU s) = {base:.2f} ESS/s, {base_cpu:.2f} ESS/CPU-s")
    record(task, "nuts 2 chains (infer default)", "float64", 2, baseline["warmup"],
           baseline["num_samples"], seconds, cpu, ess, base, 1.0, 1.0, "")
    for cfg in ensembles:
        mdp, demos = problems[cfg["dtype"]]
        post, seconds, cpu = _infer(mdp, demos, cores, num_chains=cfg["chains"],
                                    chain_method="vectorized", warmup=cfg["warmup"],
                                    num_samples=cfg["num_samples"])
        ess = min_ess(post.params["theta"])
        rate, rate_cpu = ess / seconds, ess / cpu
        s = post.settings
        steps = float(post.sample_stats["n_steps"].double().mean())
        print(f"  vectorized ChEES-HMC, {cfg['chains']} chains, {cfg['dtype']} "
              f"({cfg['warmup']} + {cfg['num_samples']}, {cores} thread(s)): min ESS "
              f"{ess:.0f} in {seconds:.1f} s ({cpu:.1f} CPU s) = {rate:.2f} ESS/s, "
              f"{rate / base:.1f}x; per CPU second {rate_cpu / base_cpu:.1f}x (step size "
              f"{s['step_size']:.3g}, {steps:.1f} leapfrog steps a draw, "
              f"{s['gradient_calls']} batched gradients)")
        record(task, "vectorized chees-hmc", cfg["dtype"], cfg["chains"], cfg["warmup"],
               cfg["num_samples"], seconds, cpu, ess, rate, rate / base, rate_cpu / base_cpu,
               f"target >= 4x (wall): {'PASS' if rate / base >= 4 else 'FAIL'}")


def table_chains(quick: bool, record, only: str = "ab") -> None:
    if "a" in only:
        _table_a(quick, record)
    if "b" in only:
        _table_b(quick, record)


def _table_a(quick: bool, record) -> None:
    print("(a) 8x8 gridworld, 8 features, horizon 30, 20 demonstrations")
    problems = {"float64": gridworld(8, 30, (4, 2), 20)}
    baseline = {"warmup": 150, "num_samples": 150} if quick else {"warmup": 1000,
                                                                  "num_samples": 1000}
    # the ensemble's adaptation pools its chains, so a shorter warmup per chain serves it
    ens = [{"chains": 32, "warmup": 100, "num_samples": 100, "dtype": "float64"}] if quick \
        else [{"chains": 64, "warmup": 150, "num_samples": 450, "dtype": "float64"}]
    compare_chains("8x8", problems, baseline, ens, record)


def _table_b(quick: bool, record) -> None:
    print("(b) 32x32 gridworld, 16 features, horizon 50, 50 demonstrations")
    problems = {"float64": gridworld(32, 50, 8, 50),
                "float32": gridworld(32, 50, 8, 50, torch.float32)}
    baseline = {"warmup": 80, "num_samples": 40} if quick else {"warmup": 300,
                                                                "num_samples": 300}
    ens = ([{"chains": 16, "warmup": 80, "num_samples": 40, "dtype": d}
            for d in ("float64", "float32")] if quick
           else [{"chains": 16, "warmup": 100, "num_samples": 100, "dtype": d}
                 for d in ("float64", "float32")])
    compare_chains("32x32", problems, baseline, ens, record)


# ---------------------------------------------------------------------------- (c) SBC
def _sbc_task():
    import bayesirl as birl
    from bayesirl.testing import tiny_chain_mdp

    mdp = tiny_chain_mdp(horizon=3, n_features=1)
    return mdp, birl.LinearReward(mdp.features)


def _worker_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _warm_worker() -> bool:
    """Import what a simulation needs (a worker's first task would otherwise pay for it)."""
    import bayesirl.sbc  # noqa: F401
    import bayesirl.testing  # noqa: F401

    return True


def table_sbc(quick: bool, record) -> None:
    from bayesirl.posterior.diagnostics import InferenceWarning
    from bayesirl.sbc import sbc
    from bayesirl.sweep import local_cluster

    try:
        import distributed
    except ImportError:
        print("(c) skipped: Dask is not installed (pip install bayesirl[dask])")
        return
    n = 40 if quick else 200
    mdp, model = _sbc_task()
    kw = dict(n_demos=10, method="nuts", n_draws=9, seed=0, progress=False,
              infer_kwargs={"warmup": 100, "num_samples": 100})
    print(f"(c) SBC, {n} simulations of the tiny NUTS tier (100 + 100, L = 9)")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InferenceWarning)
            t0, c0 = time.perf_counter(), time.process_time()
            here = sbc(mdp, model, n, **kw)
            sequential, sequential_cpu = time.perf_counter() - t0, time.process_time() - c0
            t0 = time.perf_counter()
            with local_cluster(2) as cluster, distributed.Client(cluster) as client:
                client.run(_warm_worker)
                sbc(mdp, model, 4, **{**kw, "seed": 99}, executor=client.get_executor())
                startup = time.perf_counter() - t0
                before = client.run(_worker_cpu)
                t0, c0 = time.perf_counter(), time.process_time()
                there = sbc(mdp, model, n, **kw, executor=client.get_executor())
                on_cluster, driver_cpu = time.perf_counter() - t0, time.process_time() - c0
                after = client.run(_worker_cpu)
    finally:
        torch.set_num_threads(old)
    workers_cpu = sum(after[w] - before[w] for w in after)
    same = bool(np.array_equal(here.ranks, there.ranks))
    ratio = on_cluster / (sequential / 2)
    cpu_ratio = (workers_cpu + driver_cpu) / sequential_cpu
    print(f"  sequential {sequential:.1f} s ({sequential_cpu:.1f} CPU s); 2-worker LocalCluster "
          f"{on_cluster:.1f} s (workers {workers_cpu:.1f} CPU s, this process with the "
          f"scheduler {driver_cpu:.1f} CPU s; start-up and warm-up {startup:.1f} s apart) = "
          f"{ratio:.2f} x the ideal sequential / 2 (target <= 1.2: "
          f"{'PASS' if ratio <= 1.2 else 'FAIL'}); CPU spent {cpu_ratio:.2f} x sequential's; "
          f"ranks identical: {same}")
    record("sbc", "sequential", "float64", 1, 100, 100, sequential, sequential_cpu, None, None,
           None, None, f"{n} simulations")
    record("sbc", "LocalCluster 2 workers", "float64", 2, 100, 100, on_cluster,
           workers_cpu + driver_cpu, None, None, ratio, cpu_ratio,
           f"ratio: wall / (sequential / 2), cpu_ratio: CPU / sequential CPU; ranks identical "
           f"{same}; start-up {startup:.1f} s")


# ---------------------------------------------------------------------------- (d) memory
def _memory_child(kind: str, quick: bool) -> None:
    mdp, demos = gridworld(8, 30, (4, 2), 20)
    n = 30 if quick else 100
    if kind == "vectorized":
        _infer(mdp, demos, _cores(), num_chains=64, chain_method="vectorized", warmup=n,
               num_samples=n)
    else:
        _infer(mdp, demos, 1, num_chains=2, parallel=True, warmup=n, num_samples=n)


def _tree_peak_rss(cmd: list[str]) -> tuple[float, float]:
    """``(peak of the summed RSS of the process and its descendants in bytes, seconds)``."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    peak, t0 = 0.0, time.perf_counter()
    done = threading.Event()

    def poll():
        nonlocal peak
        while not done.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            peak = max(peak, total)
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    code = proc.wait()
    done.set()
    thread.join()
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {code}")
    return peak, time.perf_counter() - t0


def table_memory(quick: bool, record) -> None:
    try:
        import psutil  # noqa: F401
    except ImportError:
        print("(d) skipped: psutil is not installed")
        return
    print("(d) peak resident memory of the process tree, (a)'s task")
    peaks = {}
    for kind in ("processes", "vectorized"):
        cmd = [sys.executable, __file__, "--memory-child", kind] + (["--quick"] if quick else [])
        peaks[kind], seconds = _tree_peak_rss(cmd)
        label = "2 NUTS chains in 2 processes" if kind == "processes" else \
            "64 vectorized chains in 1 process"
        print(f"  {label}: {peaks[kind] / 2**20:.0f} MiB ({seconds:.0f} s)")
        record("memory", label, "float64", 2 if kind == "processes" else 64, None, None,
               seconds, None, None, None, None, None, f"peak RSS {peaks[kind] / 2**20:.0f} MiB")
    ratio = peaks["vectorized"] / peaks["processes"]
    print(f"  vectorized / processes: {ratio:.2f} (target < 1: "
          f"{'PASS' if ratio < 1 else 'FAIL'})")


# ---------------------------------------------------------------------------- main
def main(quick: bool = False, only: str = "abcd") -> None:
    """Run (a)-(d) (those in ``only``), print them and write ``benchmarks/results/scale.csv``."""
    torch.set_default_dtype(torch.float64)
    rows = []

    def record(task, config, dtype, chains, warmup, num_samples, seconds, cpu_seconds, ess,
               ess_per_s, ratio, cpu_ratio, note):
        rows.append(dict(task=task, config=config, dtype=dtype, chains=chains, warmup=warmup,
                         num_samples=num_samples, seconds=seconds, cpu_seconds=cpu_seconds,
                         min_ess=ess, ess_per_s=ess_per_s, ratio=ratio, cpu_ratio=cpu_ratio,
                         note=note, quick=quick, cores=_cores(),
                         load=round(os.getloadavg()[0], 2)))

    print(f"scale benchmark ({'quick' if quick else 'full'}), {_cores()} core(s)")
    if "a" in only or "b" in only:
        table_chains(quick, record, only)
    if "c" in only:
        table_sbc(quick, record)
    if "d" in only:
        table_memory(quick, record)
    RESULTS.parent.mkdir(exist_ok=True)
    ran = {r["task"] for r in rows}
    kept = []
    if RESULTS.exists():  # a partial run (--only) keeps the other tables' rows
        with open(RESULTS, newline="") as f:
            kept = [r for r in csv.DictReader(f) if r.get("task") not in ran
                    and set(r) == set(rows[0])]
    with open(RESULTS, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept + rows)
    print(f"\nwrote {RESULTS.relative_to(HERE.parent)} ({len(rows)} rows, {len(kept)} kept)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes)")
    parser.add_argument("--only", default="abcd", help="the tables to run, e.g. 'ac'")
    parser.add_argument("--memory-child", choices=("vectorized", "processes"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        torch.set_default_dtype(torch.float64)
        _memory_child(args.memory_child, args.quick)
    else:
        main(args.quick, args.only)
