"""Discounted soft fixed points near gamma = 1: plain iteration against Newton-Kantorovich.

For two problems,

- ``gridworld``: ``envs.gridworld(size=8, slip=0.1)`` (S = 64, A = 5), its true reward;
- ``bus``: a chain shaped like Rust's (1987) bus engines: S = 90 mileage bins, keep moves up
  0 / 1 / 2 bins with probabilities 0.39 / 0.60 / 0.01 (the top bin absorbs), replace restarts
  from bin 0; reward ``-0.001 * 2.29 * x`` to keep, ``-10.07`` to replace,

and gamma in {0.9, 0.99, 0.999, 0.9999}, it times one soft fixed point, forward and backward::

    reward = features @ theta                                  # float64, requires grad
    plan = soft_value_iteration(mdp, reward, solver=...)
    (<plan.log_policy, G> + plan.v.sum()).backward()           # G fixed random

with ``solver="iterate"`` (tol 1e-10; the adjoint iterates too) and ``solver="newton"``
started cold (``warm_start=False``) and warm (the reward changing by 0.1% between calls, as
between a MAP's or a chain's successive evaluations), the median of several repeats after a
warm-up, all in one run. Iteration at 0.9999 needs ~230 000 sweeps each way: the full run times
it once, ``--quick`` leaves it out.

Last, the cost of one likelihood-and-gradient evaluation of a bus-shaped MAP at 0.9999: 100
simulated buses x 45 months (about Rust's group 4, 4 292 bus-months) from the soft policy at
``theta = (2.29, 10.07)``, ``demo_log_likelihood(...).sum()`` and its gradient in ``theta``,
evaluated at ``theta`` moving by 1% per call.

Writes ``benchmarks/results/discounted.csv`` (``--quick``: ``discounted_quick.csv``). Run:
``python benchmarks/discounted.py [--quick] [--threads N]`` (default one thread).
"""

from __future__ import annotations

import argparse
import csv
import math
import pathlib
import statistics
import time
import warnings

import torch

import bayesirl as birl
from bayesirl.model.likelihood import demo_log_likelihood
from bayesirl.planning.bellman import ConvergenceWarning, clear_warm_starts

GAMMAS = (0.9, 0.99, 0.999, 0.9999)
THETA = (2.29, 10.07)
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "discounted.csv"


def bus_chain(discount: float, S: int = 90, p=(0.39, 0.60, 0.01)):
    """The bus-shaped MDP with ``(S, 2, 2)`` features ``(-0.001 x, 0)`` keep, ``(0, -1)``
    replace, so that ``features @ (theta11, RC)`` is Rust's utility."""
    x = torch.arange(S)
    inc = torch.arange(len(p))
    succ = torch.stack([(x[:, None] + inc).clamp(max=S - 1),
                        inc.clamp(max=S - 1).expand(S, -1)], 1)
    probs = torch.tensor(p, dtype=torch.float64).expand(S, 2, -1)
    phi = torch.zeros(S, 2, 2, dtype=torch.float64)
    phi[:, 0, 0] = -0.001 * x
    phi[:, 1, 1] = -1.0
    return birl.TabularMDP(successors=succ, transition_probs=probs,
                           initial=torch.full((S,), 1.0 / S, dtype=torch.float64),
                           discount=discount, features=phi, feature_names=("theta11", "RC"))


def problems(gamma: float):
    grid = birl.envs.gridworld(size=8, slip=0.1, discount=gamma, dtype=torch.float64)
    bus = bus_chain(gamma)
    return {"gridworld": (grid, lambda scale: grid.reward * scale),
            "bus": (bus, lambda scale: bus.features @ (scale * torch.tensor(THETA,
                                                                          dtype=torch.float64)))}


def time_fixed_point(mdp, reward_of, solver: str, warm: bool, repeats: int):
    """Median and least seconds of forward + backward, and the last plan's ``num_iters``,
    ``residual``."""
    S, A = mdp.n_states, mdp.n_actions
    G = torch.randn(S, A, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    clear_warm_starts()
    times, plan = [], None
    for k in range(repeats + 1):  # the first is a warm-up (and, warm, fills the cache)
        scale = torch.tensor(1.0 + 1e-3 * k, dtype=torch.float64, requires_grad=True)
        t0 = time.perf_counter()
        plan = birl.soft_value_iteration(mdp, reward_of(scale), solver=solver,
                                         warm_start=warm, max_iters=400_000)
        ((plan.log_policy * G).sum() + plan.v.sum()).backward()
        if k:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), plan.num_iters, plan.residual


def time_map_evaluation(repeats: int):
    """Median and least seconds of one bus likelihood + gradient at 0.9999 (warm starts on),
    and the number of demonstrated decisions."""
    mdp = bus_chain(0.9999)
    theta0 = torch.tensor(THETA, dtype=torch.float64)
    plan = birl.soft_value_iteration(mdp, mdp.features @ theta0)
    demos = birl.rollouts(mdp, plan, n=100, seed=0, length=45)
    times = []
    for k in range(repeats + 1):
        theta = (theta0 * (1 + 0.01 * (k % 5))).requires_grad_()
        t0 = time.perf_counter()
        ll = demo_log_likelihood(mdp, demos, mdp.features @ theta).sum()
        ll.backward()
        if k:
            times.append(time.perf_counter() - t0)
        assert torch.isfinite(theta.grad).all()
    return statistics.median(times), min(times), demos.n * 45


def main(quick: bool = False, threads: int = 1) -> list[dict]:
    torch.set_num_threads(threads)
    rows = []
    header = (f"{'problem':<10} {'gamma':>7} {'solver':<12} {'ms (median)':>12} {'ms (min)':>9} "
              f"{'repeats':>8} {'iters':>8} {'residual':>9}")
    print("Discounted soft fixed point, forward + backward, float64, "
          f"{threads} thread(s)")
    print(header)
    for gamma in GAMMAS:
        for name, (mdp, reward_of) in problems(gamma).items():
            sweeps = math.log(1e-10) / math.log(gamma)
            for solver, warm in (("iterate", False), ("newton", False), ("newton", True)):
                label = solver + (" warm" if warm else " cold" if solver == "newton" else "")
                if solver == "iterate" and sweeps > 30_000:
                    if quick:
                        print(f"{name:<10} {gamma:>7} {label:<12} {'skipped (--quick)':>12}")
                        continue
                    repeats = 1
                elif solver == "iterate":
                    repeats = 3 if sweeps > 1_000 else 5
                else:
                    repeats = 9
                with warnings.catch_warnings():
                    warnings.simplefilter("error", ConvergenceWarning)
                    seconds, least, iters, residual = time_fixed_point(mdp, reward_of, solver,
                                                                       warm, repeats)
                row = dict(problem=name, S=mdp.n_states, A=mdp.n_actions, gamma=gamma,
                           solver=label, ms=round(seconds * 1e3, 3),
                           ms_min=round(least * 1e3, 3), repeats=repeats, num_iters=iters,
                           residual=f"{residual:.2e}", threads=threads)
                rows.append(row)
                print(f"{name:<10} {gamma:>7} {label:<12} {seconds * 1e3:>12.2f} "
                      f"{least * 1e3:>9.2f} {repeats:>8} {iters:>8} {residual:>9.1e}")
    repeats = 9 if quick else 20
    seconds, least, decisions = time_map_evaluation(repeats)
    print(f"\nBus MAP at 0.9999: one log-likelihood + gradient over {decisions} decisions "
          f"(100 buses x 45 months), warm starts: {seconds * 1e3:.2f} ms (median), "
          f"{least * 1e3:.2f} ms (min)")
    rows.append(dict(problem="bus MAP evaluation", S=90, A=2, gamma=0.9999, solver="auto warm",
                     ms=round(seconds * 1e3, 3), ms_min=round(least * 1e3, 3), repeats=repeats,
                     num_iters="", residual="", threads=threads))
    path = RESULTS.with_stem(RESULTS.stem + "_quick") if quick else RESULTS  # never mixed
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    main(args.quick, args.threads)
