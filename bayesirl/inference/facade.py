"""``infer()``: posterior inference over reward parameters with NUTS, HMC, SVI, MAP or the
Laplace approximation at the MAP.

The facade validates the arguments (:class:`Options`), builds the target
(:func:`~bayesirl.inference.target.build_target`) and hands it to one algorithm:
:mod:`~bayesirl.inference.mcmc` (NUTS/HMC on the target's potential, a density equal to that of
:func:`~bayesirl.irl_model` without re-tracing it per gradient; for a tabular reward on a
discounted MDP in value space, refracting at the greedy policy's jumps under Boltzmann),
:mod:`~bayesirl.inference.svi` (the Pyro model with an autoguide, so minibatches work) or
:mod:`~bayesirl.inference.map` (Newton steps where the target has an exact Hessian, else L-BFGS,
on the same density; standard errors and the Laplace approximation from its Hessian). The
target turns the draws into the posterior.

Options that the chosen method does not use warn (:class:`UnusedOptionWarning`) when set to
anything but their default. On small problems the work done in this process (MAP, SVI, chains
run one after another) uses one torch and one BLAS thread, restored afterwards: a small solve
gains nothing from threads, and threads spinning against another busy process made it many
times slower.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyro
import threadpoolctl
import torch

from bayesirl._validation import (
    SEED_MAX,
    check_int,
    check_number,
    check_process_executor,
    check_seed,
    integer_scalar,
)
from bayesirl.core.mdp import TabularMDP
from bayesirl.inference import ensemble, mcmc, svi
from bayesirl.inference import map as map_
from bayesirl.inference.target import HasGuide, HasPyroModel, Target, build_target
from bayesirl.model.likelihood import check_likelihood, check_rationality
from bayesirl.posterior.diagnostics import InferenceWarning
from bayesirl.posterior.reward_posterior import RewardPosterior

__all__ = ["GUIDES", "METHODS", "SEED_MAX", "SPACES", "USED_BY", "UnusedOptionWarning", "infer"]

METHODS = ("nuts", "hmc", "svi", "map", "laplace")
SPACES = ("auto", "reward", "value")
GUIDES = svi.GUIDES
_MCMC = ("nuts", "hmc")
_SMALL = 2 ** 20  # state-action-successor-steps per Bellman sweep up to which one thread runs

#: The methods each option is used by; any other method warns when it is not the default
#: (callers that pass every option, e.g. a spec file's, keep those their method uses).
USED_BY = {
    "num_samples": (*_MCMC, "svi", "laplace"), "warmup": _MCMC, "num_chains": _MCMC,
    "parallel": _MCMC, "max_workers": _MCMC, "executor": _MCMC, "target_accept": _MCMC,
    "max_tree_depth": ("nuts",), "num_steps": ("hmc",), "dense_mass": _MCMC, "space": _MCMC,
    "strict": (*_MCMC, "svi"), "map_init": (*_MCMC, "svi"), "guide": ("svi",),
    "steps": ("svi",), "lr": ("svi",), "lr_decay": ("svi",), "subsample_size": ("svi",),
    "checkpoint": ("svi",), "checkpoint_every": ("svi",),
}


class UnusedOptionWarning(InferenceWarning):
    """An option of ``infer()`` was set that the chosen method does not use."""


@dataclass(frozen=True)
class Options:
    """``infer()``'s options, validated (see :func:`infer` for each); ``warmup`` resolved."""

    method: str
    likelihood: str
    rationality: Any
    num_samples: int
    warmup: int
    num_chains: int
    seed: int
    progress: bool
    strict: bool
    target_accept: float
    max_tree_depth: int
    num_steps: int
    guide: str
    steps: int
    lr: float
    lr_decay: float
    subsample_size: int | None
    checkpoint: str | None
    checkpoint_every: int
    map_init: bool
    dense_mass: bool | None
    parallel: bool | None
    space: str
    max_workers: int | None
    executor: Any
    chain_method: str | None = None  # bayesirl/inference/ensemble.py


class Fit(NamedTuple):
    """What an algorithm hands back: ``params {site: (chains, draws, ...)}`` constrained,
    ``sample_stats {name: (chains, draws)}``, the posterior's ``extra`` entries, whether it
    was interrupted, and the settings it adds to the posterior's."""

    params: dict
    sample_stats: dict
    extra: dict
    incomplete: bool
    settings: dict


def _check_flag(name, value, none: bool = False):
    """A bool (or None where ``none``): ``parallel="no"`` is a TypeError, not True."""
    if (value is None and none) or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    raise TypeError(f"{name} is {value!r}, expected True, False" + (" or None" if none else ""))


def _check_workers(parallel, max_workers, executor) -> int | None:
    """Where chains run: ``max_workers`` None or >= 1 (returned as an int); ``executor`` a
    process-based ``concurrent.futures.Executor``, which ``parallel=False`` contradicts."""
    if max_workers is not None:
        max_workers = check_int("max_workers", max_workers, 1)
    check_process_executor(executor, "chains")
    if executor is not None and parallel is False:
        raise ValueError("parallel is False but an executor was given; leave parallel unset "
                         "to run the chains on the executor")
    return max_workers


def _check_options(method, space, num_samples, warmup, num_chains, steps, seed,
                   max_tree_depth, num_steps, target_accept, lr, lr_decay) -> dict:
    """The checks of infer()'s options that need nothing else (one error each). Returns the
    numbers as Python ints and floats by name (NumPy scalars are numbers too)."""
    if space not in SPACES:
        raise ValueError(f"space is {space!r}, expected one of {SPACES}")
    if method not in METHODS:
        raise ValueError(f"method is {method!r}, expected one of {METHODS}")
    out = {name: check_int(name, value, low)
           for name, value, low in (("num_samples", num_samples, 1), ("warmup", warmup, 0),
                                    ("num_chains", num_chains, 1), ("steps", steps, 1),
                                    ("max_tree_depth", max_tree_depth, 1),
                                    ("num_steps", num_steps, 1))}
    out["seed"] = check_seed("seed", seed, SEED_MAX)
    out["target_accept"] = check_number("target_accept", target_accept, 0.0, 1.0,
                                        low_open=True, high_open=True)
    out["lr"] = check_number("lr", lr, 0.0, low_open=True)
    try:
        out["lr_decay"] = check_number("lr_decay", lr_decay, 0.0, 1.0, low_open=True)
    except ValueError as e:
        raise ValueError(f"{e} (the SVI step at the last step relative to lr; 1 keeps it "
                         "constant)") from None
    return out


def _subsample_units(target) -> int | float:
    """How many units SVI's minibatches draw from: a reward model's (or hierarchical, or
    Q-value model's) demonstrations, a preference target's pairs (its ``plate("pair")``);
    inf where the target does not say."""
    if isinstance(target, Target):
        return target.demos.n
    preferences = getattr(target, "preferences", None)
    if isinstance(getattr(preferences, "n_pairs", None), int):
        return preferences.n_pairs
    data = getattr(target, "data", None)
    if isinstance(getattr(data, "n", None), int):
        return data.n
    return math.inf


def _check_svi_options(target, method, guide, subsample_size, checkpoint_every):
    """SVI's checks that need the target: a known guide and minibatches no larger than the
    demonstrations (checked whatever the method: a typo fails early); for SVI, a Pyro model
    and a valid checkpoint interval."""
    if not isinstance(target, HasGuide) and guide not in svi.GUIDES:
        raise ValueError(f"guide is {guide!r}, expected one of {tuple(svi.GUIDES)}")
    n = _subsample_units(target)
    if subsample_size is not None and not (isinstance(subsample_size, int)
                                           and not isinstance(subsample_size, bool)
                                           and 1 <= subsample_size <= n):
        raise ValueError(f"subsample_size is {subsample_size!r}, expected an integer in "
                         f"[1, {n}]")
    if method != "svi":
        return
    if not isinstance(target, HasPyroModel):
        raise ValueError(f"method='svi' needs a target with a Pyro model (pyro_model()); the "
                         f"{type(target).__name__} target has none")
    if not (isinstance(checkpoint_every, int) and checkpoint_every >= 1):
        raise ValueError(f"checkpoint_every is {checkpoint_every!r}, expected an integer >= 1")


def infer(mdp, demos, reward_model, method: str = "nuts", *, likelihood: str = "soft",
          rationality=1.0, num_samples: int = 1000, warmup: int | None = None,
          num_chains: int = 2, seed: int = 0, progress: bool = True, strict: bool = False,
          target_accept: float = 0.8, max_tree_depth: int = 10, num_steps: int = 10,
          guide: str = "mvn", steps: int = 2000, lr: float = 0.01, lr_decay: float = 1.0,
          subsample_size: int | None = None, checkpoint=None, checkpoint_every: int = 100,
          map_init: bool = True, dense_mass: bool | None = None,
          parallel: bool | None = None, space: str = "auto", max_workers: int | None = None,
          executor: concurrent.futures.Executor | None = None,
          chain_method: str | None = None) -> RewardPosterior:
    """Infer the posterior over the reward parameters of ``reward_model``.

    Args:
        mdp, demos: the problem; demos are validated against the MDP.
        reward_model: a :class:`~bayesirl.model.rewards.RewardModel` carrying the prior, or any
            model with ``build_target(mdp, data, *, likelihood, rationality)``
            (:class:`~bayesirl.inference.target.TargetBuilder`; ``mdp`` may then be None).
        method: ``"nuts"``, ``"hmc"``, ``"svi"``, ``"map"`` or ``"laplace"``. ``"map"``
            returns the maximum a posteriori point with ``post.extra["standard_errors"]``
            (site -> the site's shape, in its own units), ``["covariance"]`` (``(d, d)`` in the
            flattened unconstrained coordinates) and ``["coordinates"]`` (their names): the
            inverse Hessian of the negative log posterior at the MAP, carried to each
            parameter by the delta method (:mod:`bayesirl.inference.map`). With an improper
            flat prior the MAP is the maximum-likelihood estimate and these are its standard
            errors from the observed information. ``"laplace"``: ``num_samples`` draws of
            that Gaussian approximation (seeded), pushed through the constraints, with the
            same extras. Either warns
            (:class:`~bayesirl.posterior.diagnostics.InferenceWarning`) when the search for
            the MAP ran out of iterations before it converged.
        likelihood: ``"soft"`` (maximum causal entropy) or ``"boltzmann"``.
        rationality: beta > 0, or a prior on it (e.g. ``dist.LogNormal(0., 1.)``).
        num_samples: draws per chain (MCMC) or from the fitted guide (SVI).
        warmup: MCMC adaptation steps (default ``num_samples``).
        num_chains: MCMC chains, chain c seeded with ``seed + c`` (the same draws whether
            chains run one after another or in parallel).
        parallel: run chains in parallel processes (default: when there are several chains,
            several cores and at least 1000 iterations in all). Ctrl-C keeps the draws each
            chain made so far, whether it reaches every process (a terminal) or only this one
            (Jupyter's interrupt), and says so in one line; see
            :mod:`bayesirl.inference.executors`.
        max_workers: at most this many chain processes (default: the usable cores), the
            other chains queued.
        executor: run the chains on this ``concurrent.futures.Executor`` instead (e.g. a Dask
            client's ``get_executor()``, with one thread per worker process: chains seed
            torch's global random number generator, so a ``ThreadPoolExecutor`` is refused).
        seed: all randomness comes from here.
        progress: tqdm progress bars.
        strict: turn convergence warnings (MCMC: R-hat, ESS, divergences, E-BFMI; SVI: an
            ELBO still moving, a guide far from the MAP) into errors.
        target_accept, max_tree_depth: NUTS settings; ``num_steps``: HMC leapfrog steps.
        guide: SVI autoguide, ``"normal"``, ``"mvn"`` or ``"lowrank"``.
        steps, lr, lr_decay, subsample_size: SVI optimisation: Adam (Pyro's ClippedAdam,
            gradients clipped to norm 10), its step decayed geometrically from ``lr`` to
            ``lr * lr_decay`` over the steps. The default 1 keeps it constant; a long run
            that has converged ends closer to the optimum with e.g. ``lr_decay=0.05`` (a
            constant step's final iterate jitters around it), but a decayed step also
            slows a short run, whose guide scales may then stay too narrow; minibatches of
            demonstrations.
        checkpoint, checkpoint_every: SVI writes its state to the file ``checkpoint`` every
            ``checkpoint_every`` steps; a run given an existing checkpoint resumes from it and
            ends where an uninterrupted run would.
        dense_mass: NUTS/HMC adapt a dense mass matrix (default: in reward space when there
            are <= 50 parameters, as correlated rewards, e.g. one-hot features, need it; not in
            value space, whose coordinates are whitened already).
        map_init: start chains (and SVI) near the MAP fit, jittered per chain.
        space: where NUTS/HMC move. ``"reward"``: the reward parameters (unconstrained).
            ``"value"``: the values of a :class:`~bayesirl.model.rewards.TabularReward` on a
            discounted MDP with a fixed rationality, mapped to rewards by the Bellman
            equation, with no planning per gradient (ValueWalk's idea; see
            :mod:`bayesirl.inference.value_space`; with the Boltzmann likelihood, NUTS only, which
            refracts at the greedy policy's jumps); a ValueError says why a problem does not
            qualify. There a warmup of at least 100 iterations re-whitens each chain on its
            draws of the second third of the warmup, and the last third adapts the step size
            again.
            ``"auto"`` (default): value space where it applies, else reward space. The
            posterior is the same; ``post.settings["space"]`` records the choice.
        chain_method: how MCMC chains run (:mod:`bayesirl.inference.ensemble`).
            ``"vectorized"``: all chains in lockstep in this process, ChEES-HMC on the target's
            potential evaluated for every chain at once (one batched planner call per
            leapfrog step), in reward space, no processes; its step size targets a
            harmonic-mean acceptance of 0.651 across chains (``target_accept``,
            ``max_tree_depth`` and ``num_steps`` are NUTS's and HMC's). ``"independent"``:
            NUTS/HMC chains as ``parallel``, ``executor`` and ``max_workers`` say. None
            (default): vectorized from 8 chains on a target whose potential batches over
            chains (a reward model's) moving in reward space, when no ``parallel=True``,
            ``executor`` or ``max_workers`` asks for independent chains; else independent.
            ``post.settings["chain_method"]`` records a vectorized run.

    Returns:
        A :class:`~bayesirl.RewardPosterior`; ``post.samples["theta"]`` has shape
        ``(num_chains * num_samples, ...)``.
    """
    arguments = dict(locals())  # every parameter, by name
    options = _options(**arguments)
    with _threads_for(mdp):  # the checks of a small problem too (a rank, a validation)
        target = build_target(mdp, demos, reward_model, options.likelihood,
                              options.rationality)
        _check_svi_options(target, method, guide, options.subsample_size,
                           options.checkpoint_every)
        vectorized = _vectorized(target, options)
        _warn_unused(method, arguments, vectorized)
        start = time.perf_counter()
        pyro.set_rng_seed(options.seed)
        fit = _run(target, options, vectorized)
        settings = {"likelihood": options.likelihood, "seed": options.seed,
                    "num_samples": options.num_samples,
                    "rationality": repr(options.rationality), **fit.settings,
                    "seconds": time.perf_counter() - start}
        return _posterior(target, options, fit, settings)


def _options(mdp, demos, reward_model, **kwargs) -> Options:
    """infer()'s arguments checked one by one (ValueError or TypeError naming each)."""
    kw = dict(kwargs)
    kw["warmup"] = kw["num_samples"] if kw["warmup"] is None else kw["warmup"]
    kw.update(_check_options(kw["method"], kw["space"], kw["num_samples"], kw["warmup"],
                             kw["num_chains"], kw["steps"], kw["seed"], kw["max_tree_depth"],
                             kw["num_steps"], kw["target_accept"], kw["lr"], kw["lr_decay"]))
    for name in ("progress", "strict", "map_init"):
        kw[name] = _check_flag(name, kw[name])
    for name in ("parallel", "dense_mass"):
        kw[name] = _check_flag(name, kw[name], none=True)
    kw["max_workers"] = _check_workers(kw["parallel"], kw["max_workers"], kw["executor"])
    for name in ("subsample_size", "checkpoint_every"):  # checked with the target
        if (value := integer_scalar(kw[name])) is not None:
            kw[name] = value
    kw["likelihood"] = check_likelihood(kw["likelihood"])
    kw["rationality"] = check_rationality(kw["rationality"])
    if kw["checkpoint"] is not None:  # SVI's: checked now, not at its first save
        kw["checkpoint"] = (svi.check_checkpoint(kw["checkpoint"]) if kw["method"] == "svi"
                            else os.fspath(kw["checkpoint"]))
    return Options(**kw)


_DEFAULTS = {name: p.default for name, p in inspect.signature(infer).parameters.items()
             if name in USED_BY}


#: NUTS's and HMC's options that the vectorized ChEES-HMC ensemble does not use
_VECTORIZED_IGNORES = ("target_accept", "max_tree_depth", "num_steps")


def _warn_unused(method: str, arguments: dict, vectorized: bool = False) -> None:
    """One UnusedOptionWarning naming the options set (not to their default) that ``method``
    does not use; where the chains run vectorized (ChEES-HMC, ``vectorized``), another naming
    the NUTS/HMC options it ignores."""
    unused = [f"{k}={v!r}" for k, v in arguments.items() if k in USED_BY
              and method not in USED_BY[k] and not _is_default(v, _DEFAULTS[k])]
    if unused:
        warnings.warn(UnusedOptionWarning(f"method={method!r} does not use "
                                          f"{', '.join(unused)}"), stacklevel=3)
    if not vectorized:
        return
    ignored = [f"{k}={arguments[k]!r}" for k in _VECTORIZED_IGNORES if k in arguments
               and method in USED_BY[k] and not _is_default(arguments[k], _DEFAULTS[k])]
    if ignored:
        how = ("chain_method='vectorized'" if arguments.get("chain_method") == "vectorized"
               else f"chain_method=None with num_chains={arguments.get('num_chains')} "
                    f"(>= {ensemble.AUTO_MIN_CHAINS})")
        warnings.warn(UnusedOptionWarning(
            f"{how} ran the chains as vectorized ChEES-HMC, not method={method!r}, and it does "
            f"not use {', '.join(ignored)}; pass chain_method='independent' to run "
            f"{method.upper()} chains with them"), stacklevel=3)


def _is_default(value, default) -> bool:
    if value is None or default is None or isinstance(value, (bool, np.bool_)):
        return value is default or (value is not None and default is not None
                                    and bool(value) == bool(default))
    try:
        return bool(value == default)
    except (TypeError, ValueError, RuntimeError):  # a tensor, an executor
        return False


@contextlib.contextmanager
def _threads_for(mdp):
    """One torch and one BLAS thread on a small MDP (see the module doc), restored after."""
    if not isinstance(mdp, TabularMDP):
        yield
        return
    sweep = mdp.n_states * mdp.n_actions * mdp.successors.shape[-1] * (
        mdp.horizon if mdp.finite_horizon else 1)
    if sweep > _SMALL:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _thread_pools().limit(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)


_pools: tuple[int, threadpoolctl.ThreadpoolController] | None = None


def _thread_pools() -> threadpoolctl.ThreadpoolController:
    """The BLAS/OpenMP pools loaded in this process. Finding them scans every loaded library
    (as long as a small MAP's fixed points take), so the scan is kept until a
    module is imported (a native library comes with one: scipy's BLAS, numba's OpenMP)."""
    global _pools
    if _pools is None or _pools[0] != len(sys.modules):
        _pools = (len(sys.modules), threadpoolctl.ThreadpoolController())
    return _pools[1]


def _vectorized(target, o: Options) -> bool:
    """Whether the chains run as the vectorized ChEES-HMC ensemble
    (:func:`~bayesirl.inference.ensemble.use_vectorized`)."""
    return ensemble.use_vectorized(o.chain_method, target, o.method, o.space, o.num_chains,
                                   parallel=o.parallel, executor=o.executor,
                                   max_workers=o.max_workers)


def _run(target, o: Options, vectorized: bool | None = None) -> Fit:
    """Dispatch to the method's algorithm (``vectorized``: :func:`_vectorized`, where known)."""
    if vectorized is None:
        vectorized = _vectorized(target, o)
    if vectorized:
        return _run_vectorized(target, o)
    if o.method in _MCMC:
        return _run_mcmc(target, o)
    if o.method == "svi":
        return _run_svi(target, o)
    return _run_map(target, o)


# -- chain_method="vectorized": ChEES-HMC chains in lockstep (bayesirl/inference/ensemble.py)
def _run_vectorized(target, o: Options) -> Fit:
    run = ensemble.run_vectorized(target, ensemble.EnsembleOptions(
        o.num_chains, o.num_samples, o.warmup, o.seed, o.progress, o.map_init,
        dense_mass=o.dense_mass))
    return Fit(run.params, run.sample_stats, {}, run.incomplete,
               dict(warmup=o.warmup, num_chains=o.num_chains, space="reward", **run.settings))
# -- end of chain_method="vectorized"


def _run_mcmc(target, o: Options) -> Fit:
    options = mcmc.McmcOptions(o.method, o.num_samples, o.warmup, o.num_chains, o.seed,
                               o.progress, o.target_accept, o.max_tree_depth, o.num_steps,
                               o.dense_mass, o.map_init, o.space, o.parallel, o.executor,
                               o.max_workers)
    sampled, space, init = mcmc.sampling_target(target, o.method, o.space, o.map_init)
    kernel_kw = mcmc.kernel_options(sampled, init, options)
    params, sample_stats, incomplete = mcmc.run_mcmc(sampled, init, options, kernel_kw)
    return Fit(params, sample_stats, {}, incomplete,
               dict(warmup=o.warmup, num_chains=o.num_chains, space=space, **kernel_kw))


def _run_svi(target, o: Options) -> Fit:
    init = target.init_unconstrained()
    if o.map_init:
        init, _ = map_.fit_map(target, init)
    result = svi.run_svi(target, init, svi.SviOptions(
        o.guide, o.steps, o.lr, o.lr_decay, o.subsample_size, o.num_samples, o.seed,
        o.progress, o.checkpoint, o.checkpoint_every, o.map_init, o.strict))
    return Fit({k: v[None] for k, v in result.params.items()}, {},
               {"elbo": [-x for x in result.losses]}, result.incomplete,
               dict(guide=o.guide, steps=o.steps, lr=o.lr, lr_decay=o.lr_decay,
                    subsample_size=o.subsample_size))


def _run_map(target, o: Options) -> Fit:
    """The MAP with its standard errors (``method="map"``; a warning instead where the
    Hessian is not positive definite, and none beyond ``map.MAX_COORDINATES`` coordinates,
    as ``settings["hessian"]`` says; a warning where the search stopped short), or
    ``num_samples`` draws of the Laplace approximation (``method="laplace"``, seeded with
    ``seed``)."""
    u, _ = map_.fit_map(target, target.init_unconstrained(), warn=True)
    d = sum(v.numel() for v in u.values())
    if o.method == "map" and d > map_.MAX_COORDINATES:  # a dense Hessian: d gradients x 4
        return Fit({k: v[None, None] for k, v in target.constrain(u).items()}, {}, {}, False,
                   {"hessian": f"not computed: {d} coordinates (more than "
                               f"{map_.MAX_COORDINATES}); method='laplace' computes it"})
    try:
        laplace = map_.laplace(target, u)
    except ValueError as e:
        if o.method == "laplace":
            raise
        map_.warn_without_standard_errors(e)
        return Fit({k: v[None, None] for k, v in target.constrain(u).items()}, {}, {}, False,
                   {})
    if o.method == "map":
        params = {k: v[None, None] for k, v in target.constrain(laplace.u).items()}
    else:
        draws = map_.laplace_draws(target, laplace, o.num_samples, o.seed)
        params = {k: v[None] for k, v in draws.items()}
    return Fit(params, {}, laplace.extra, False, {"hessian": laplace.hessian})


def _posterior(target, o: Options, fit: Fit, settings: dict):
    """The target's posterior of ``fit``'s draws, after checking they are finite; convergence
    checked after MCMC."""
    for k, v in fit.params.items():
        if not torch.isfinite(v).all():
            raise FloatingPointError(f"inference produced non-finite draws of {k!r}; the "
                                     "posterior is not usable (check the prior scales and "
                                     "the reward magnitudes)")
    chains = next(iter(fit.params.values())).shape[0]
    post = target.make_posterior(
        {k: v.reshape(-1, *v.shape[2:]) for k, v in fit.params.items()}, method=o.method,
        log_lik=None, sample_stats=fit.sample_stats, settings=settings, num_chains=chains)
    post.extra.update(fit.extra)
    post.incomplete = bool(fit.incomplete)
    if o.method in _MCMC:
        post.check_convergence(strict=o.strict)
    return post
