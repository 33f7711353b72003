"""NUTS and HMC chains on a target: where they move, how each chain runs, and how chains run
together.

Each chain is a :class:`ChainJob`: a pure, seeded (``seed + chain``), picklable description whose
:class:`ChainResult` does not depend on where it runs; the same chains drawn one after another or
in worker processes give the same draws bit for bit (tests/test_nothing_lost.py).
:func:`run_mcmc` runs them and stacks their draws.

Where the chains move (:func:`sampling_target`): a reward model's target moves its reward
parameters, or, for a tabular reward on a discounted MDP, the values
(:class:`~bayesirl.inference.value_space.ValueSpaceTarget`); any other target its own
unconstrained parameters. A :class:`~bayesirl.inference.target.Refracting` target gets
:class:`~bayesirl.inference.refraction.RefractiveNUTS`; a
:class:`~bayesirl.inference.target.Rewhitening` one warms up in two stages (:func:`run_chain`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple

import pyro
import torch
from pyro.infer.mcmc import HMC, NUTS
from tqdm.auto import tqdm

from bayesirl.inference import executors
from bayesirl.inference.executors import usable_cores
from bayesirl.inference.map import fit_map
from bayesirl.inference.pyro_nuts import Recorder
from bayesirl.inference.refraction import RefractiveNUTS
from bayesirl.inference.target import Refracting, Rewhitening, Target
from bayesirl.inference.value_space import ValueSpaceTarget, ineligible
from bayesirl.planning import clear_warm_starts

__all__ = ["MIN_PILOT", "ChainJob", "ChainResult", "Draws", "McmcOptions", "run_chain",
           "run_mcmc", "sampling_target"]

#: Warmup iterations from which a re-whitening target warms up in two stages (run_chain).
MIN_PILOT = 100


@dataclass(frozen=True)
class McmcOptions:
    """NUTS/HMC settings, validated by ``infer()``. ``space`` is ``"auto"``, ``"reward"`` or
    ``"value"``; ``dense_mass`` None picks by target (see :func:`kernel_options`);
    ``parallel`` None: processes when there are several chains and cores and at least 1000
    iterations in all; ``executor`` (any ``concurrent.futures.Executor``) and ``max_workers``
    see :func:`~bayesirl.inference.executors.run_jobs`."""

    method: str
    num_samples: int
    warmup: int
    num_chains: int
    seed: int
    progress: bool
    target_accept: float
    max_tree_depth: int
    num_steps: int
    dense_mass: bool | None
    map_init: bool
    space: str
    parallel: bool | None
    executor: Any = None
    max_workers: int | None = None


@dataclass(frozen=True)
class ChainJob:
    """One chain: the target, ``"nuts"`` or ``"hmc"``, the chain's index among
    ``num_chains``, its draws after ``warmup`` adaptation steps, the run's ``seed`` (the chain
    is seeded with ``seed + chain``), the unconstrained start ``init`` (jittered per chain),
    the Pyro kernel's options and whether to show a progress bar."""

    target: Any
    method: str
    chain: int
    num_chains: int
    num_samples: int
    warmup: int
    seed: int
    init: dict
    kernel_options: dict
    progress: bool


@dataclass
class ChainResult:
    """A chain's constrained draws ``{site: (n, ...)}`` (empty when it made none), one dict of
    sample stats per draw, and whether it was interrupted."""

    draws: dict[str, torch.Tensor]
    stats: list[dict]
    interrupted: bool


class Draws(NamedTuple):
    """Chains stacked: ``params {site: (chains, draws, ...)}``, ``sample_stats {name:
    (chains, draws)}``, ``incomplete`` when a chain was interrupted (all chains are then cut
    to the shortest)."""

    params: dict[str, torch.Tensor]
    sample_stats: dict[str, torch.Tensor]
    incomplete: bool


def sampling_target(target, method: str, space: str, map_init: bool):
    """``(sampled, space, init)``: the target the chains move on, the space's name and their
    unconstrained start (before each chain's jitter).

    A reward-space :class:`~bayesirl.inference.target.Target` moves in value space when
    ``space`` is ``"value"``, or ``"auto"`` and :func:`~bayesirl.inference.value_space.ineligible`
    finds no reason against it (a ValueError gives the reason for ``"value"``); otherwise the
    target moves in its own parameters (``"reward"``), from its MAP when ``map_init``."""
    if isinstance(target, Target):
        why_not = ineligible(target, method)
        if space == "value" and why_not is not None:
            raise ValueError(f"space='value' does not apply: {why_not}")
        space = "reward" if space == "reward" or why_not is not None else "value"
    elif space == "value":
        raise ValueError("space='value' does not apply: value space needs a bayesirl reward "
                         f"model (a TabularReward), got a {type(target).__name__} target")
    else:
        space = "reward"
    if space == "value":
        sampled = ValueSpaceTarget.at_map(target, map_init)
        return sampled, space, sampled.init_unconstrained()
    init = target.init_unconstrained()
    if map_init:
        init, _ = fit_map(target, init)
    return target, space, init


def kernel_options(sampled, init: dict, options: McmcOptions) -> dict:
    """The Pyro kernel's keyword arguments. A dense mass matrix by default where the target is
    not whitened already and has at most 50 parameters (correlated rewards, e.g. one-hot
    features, need it; on whitened coordinates a dense matrix adapted from a few hundred
    warmup draws only adds noise and cost)."""
    dense = options.dense_mass
    if dense is None:
        dense = (not isinstance(sampled, Rewhitening)
                 and sum(v.numel() for v in init.values()) <= 50)
    kw = ({"target_accept_prob": options.target_accept, "max_tree_depth": options.max_tree_depth}
          if options.method == "nuts" else {"num_steps": options.num_steps,
                                            "target_accept_prob": options.target_accept})
    kw["full_mass"] = bool(dense)
    return kw


def _kernel(target, method: str, kernel_options: dict, params: dict, warmup: int):
    """A NUTS/HMC kernel on ``target`` set up for ``warmup`` adaptation steps from ``params``:
    :class:`~bayesirl.inference.refraction.RefractiveNUTS` on a target with regions."""
    regions = target.regions if isinstance(target, Refracting) else None
    if regions is not None:
        kernel = RefractiveNUTS(target.potential, regions, **kernel_options)
    else:
        kernel = (NUTS if method == "nuts" else HMC)(potential_fn=target.potential,
                                                     **kernel_options)
    kernel.initial_params = params
    kernel.setup(warmup)
    return kernel


def run_chain(job: ChainJob) -> ChainResult:
    """Run one NUTS/HMC chain seeded with ``job.seed + job.chain``.

    A :class:`~bayesirl.inference.target.Rewhitening` target warms up in two stages when
    ``warmup >=`` :data:`MIN_PILOT`: a pilot of the first two thirds of the warmup, whose second
    half of draws re-whitens the target (its mean and Ledoit-Wolf covariance), then the last
    third adapts the step size again but not the mass matrix: the coordinates are whitened by
    the pilot's covariance. Far from the MAP the whitening at the MAP misjudges the posterior,
    and a chain's own draws see it as it is.

    Ctrl-C (or a stop requested by the process running the chains,
    :func:`~bayesirl.inference.executors.stop_requested`) ends the chain with the draws made
    so far, ``interrupted`` set; the pilot's draws are warmup and never returned.
    """
    target, method = job.target, job.method
    if isinstance(target, Refracting) and target.regions is not None:
        # the regions' caches (the jump's inverses, updated along the path; where the last
        # drift ended) start empty in each chain as in a chain's own process: sequential
        # chains draw what parallel ones do
        target = copy.deepcopy(target)
    # the planner's warm starts (discounted Newton solves) start empty too: a solve's last bits
    # depend on where it started, so a chain must not inherit another chain's solutions
    clear_warm_starts()
    pyro.set_rng_seed(job.seed + job.chain)
    params = {k: v + 0.1 * torch.randn_like(v) for k, v in job.init.items()}
    warmup, kernel_options = job.warmup, job.kernel_options
    pilot = 2 * warmup // 3 if isinstance(target, Rewhitening) and warmup >= MIN_PILOT else 0
    draws, stats, interrupted = [], [], False
    bar = tqdm(total=warmup + job.num_samples,
               desc=f"{method} chain {job.chain + 1}/{job.num_chains}",
               disable=not job.progress, leave=False, position=job.chain)
    try:
        if pilot:
            target, params = _pilot(target, method, kernel_options, params, pilot, bar)
            kernel_options = dict(kernel_options, adapt_mass_matrix=False)
        rest = warmup - pilot
        _iterate(_kernel(target, method, kernel_options, params, rest), params,
                 rest + job.num_samples, rest, bar, draws, stats)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    constrained = (target.constrain({k: torch.stack([d[k] for d in draws]) for k in draws[0]})
                   if draws else {})
    return ChainResult(constrained, stats, interrupted)


def _iterate(kernel, params: dict, n: int, keep: int, bar, draws: list, stats: list) -> dict:
    """``n`` iterations of a set-up kernel from ``params``, appending the draws (detached
    copies) and sample stats of those from index ``keep`` on; returns the last point. A stop
    request is a KeyboardInterrupt; the lists keep what was appended before it."""
    recorder = Recorder(kernel)
    try:
        for i in range(n):
            if executors.stop_requested():
                raise KeyboardInterrupt
            params, st = recorder.step(params)
            if i >= keep:
                draws.append({k: v.detach().clone() for k, v in params.items()})
                stats.append(st)
            bar.update()
            if i % 20 == 0:
                bar.set_postfix(step_size=f"{st['step_size']:.2g}")
    finally:
        kernel.cleanup()
    return params


def _pilot(target, method: str, kernel_options: dict, params: dict, pilot: int, bar):
    """The pilot stage of a re-whitening target: ``pilot`` warmup iterations, the second half
    of whose draws re-whiten it. Returns the re-whitened target and the last point in its
    coordinates; the pilot's draws are warmup, never returned."""
    pilot_draws = []
    params = _iterate(_kernel(target, method, kernel_options, params, pilot), params, pilot,
                      pilot // 2, bar, pilot_draws, [])
    rewhitened = target.rewhitened(torch.stack([d["w"] for d in pilot_draws]))
    return rewhitened, {"w": rewhitened.whiten(target.params_of(params["w"]))}


def stack(ran: executors.Ran, num_chains: int) -> Draws:
    """The chains' draws stacked, every chain cut to the shortest's length when one was
    interrupted, with a one-line note saying what was kept. Raises KeyboardInterrupt when no
    chain made a draw."""
    results = [r for r in ran.results if r is not None and r.draws]
    incomplete = (ran.interrupted or ran.abandoned > 0
                  or any(r is None or r.interrupted for r in ran.results))
    if not results:
        raise KeyboardInterrupt("inference interrupted before any draw was made")
    n = min(len(r.stats) for r in results)
    params = {k: torch.stack([r.draws[k][:n] for r in results]) for k in results[0].draws}
    sample_stats = {k: torch.tensor([[s[k] for s in r.stats[:n]] for r in results])
                    for k in results[0].stats[0]}
    if incomplete:
        dropped = (f"; {ran.abandoned} chain(s) still running were dropped"
                   if ran.abandoned else "")
        executors.note(f"interrupted: kept {n} draws from each of {len(results)} of "
                       f"{num_chains} chains{dropped}; the posterior is marked incomplete")
    return Draws(params, sample_stats, incomplete)


def run_mcmc(sampled, init: dict, options: McmcOptions, kernel_kw: dict) -> Draws:
    """``options.num_chains`` chains on ``sampled`` from ``init``, chain ``c`` seeded with
    ``options.seed + c``, in worker processes or one after another (see
    :func:`~bayesirl.inference.executors.run_jobs`)."""
    o = options
    parallel = o.parallel
    if parallel is None:
        parallel = (o.num_chains > 1 and usable_cores() > 1
                    and o.num_chains * (o.num_samples + o.warmup) >= 1000)
    jobs = [ChainJob(sampled, o.method, c, o.num_chains, o.num_samples, o.warmup, o.seed, init,
                     kernel_kw, o.progress) for c in range(o.num_chains)]
    ran = executors.run_jobs(run_chain, jobs, parallel=parallel, ends_run=_interrupted,
                             executor=o.executor, max_workers=o.max_workers)
    return stack(ran, o.num_chains)


def _interrupted(result: ChainResult) -> bool:
    return result.interrupted
