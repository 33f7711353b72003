"""Running independent jobs (MCMC chains) one after another or in worker processes.

A job is a picklable, seeded description whose result does not depend on where it runs.
:func:`run_jobs` runs them in this process, or in processes started with ``spawn`` (``fork`` is
unsafe with OpenMP threads), one torch and one BLAS thread each.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing

import threadpoolctl
import torch

__all__ = ["run_jobs", "stop_requested"]


def stop_requested() -> bool:
    """Whether the process running the jobs asked this worker to stop (after a Ctrl-C)."""
    return False


def _in_worker(fn, job):
    # one job per core: one torch thread and one BLAS thread (numpy's, which refracting NUTS
    # uses: two BLAS pools of two threads on two cores oversubscribe them)
    torch.set_num_threads(1)
    with threadpoolctl.threadpool_limits(1):
        return fn(job)


def run_jobs(fn, jobs: list, *, parallel: bool, executor=None,
             max_workers: int | None = None) -> list:
    """``[fn(job) for job in jobs]``; a result with ``interrupted`` set stops a sequential run
    (the jobs after it are not started)."""
    results = []
    if parallel:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(len(jobs), mp_context=ctx) as pool:
            futures = [pool.submit(_in_worker, fn, job) for job in jobs]
            try:
                results = [f.result() for f in futures]
            except KeyboardInterrupt:  # Ctrl-C reached the workers too: collect their draws
                results = [f.result() for f in futures]
            except concurrent.futures.process.BrokenProcessPool as e:
                raise RuntimeError(
                    "a chain's process died before returning its draws. Parallel chains run "
                    "in processes started with 'spawn', which re-import the script that "
                    "called infer(): in a script, call infer() under `if __name__ == "
                    "\"__main__\":`, or pass parallel=False to run the chains one after "
                    "another. (A process killed for lack of memory ends the same way.)") from e
    else:
        for job in jobs:
            results.append(fn(job))
            if results[-1].interrupted:
                break
    return results

