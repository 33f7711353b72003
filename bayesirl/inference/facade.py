"""``infer()``: posterior inference over reward parameters with NUTS, HMC, SVI or MAP.

The facade validates the arguments, builds the target
(:func:`~bayesirl.inference.target.build_target`) and hands it to one algorithm:
:mod:`~bayesirl.inference.mcmc` (NUTS/HMC on the target's potential, a density equal to that of
:func:`~bayesirl.irl_model` without re-tracing it per gradient; for a tabular reward on a
discounted MDP in value space, refracting at the greedy policy's jumps under Boltzmann),
:mod:`~bayesirl.inference.svi` (the Pyro model with an autoguide, so minibatches work) or
:mod:`~bayesirl.inference.map` (L-BFGS on the same density). The target turns the draws into the
posterior.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import time

import pyro
import torch

from bayesirl.inference import map as map_
from bayesirl.inference import mcmc, svi
from bayesirl.inference.target import HasGuide, HasPyroModel, Target, build_target
from bayesirl.model.likelihood import check_likelihood, check_rationality
from bayesirl.posterior.reward_posterior import RewardPosterior

__all__ = ["GUIDES", "METHODS", "SPACES", "infer"]

METHODS = ("nuts", "hmc", "svi", "map")
SPACES = ("auto", "reward", "value")
GUIDES = svi.GUIDES


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} is {value!r}, expected an integer >= {low}")


def _check_workers(parallel, max_workers, executor):
    """Where chains run: ``max_workers`` None or >= 1; ``executor`` a process-based
    ``concurrent.futures.Executor``, which ``parallel=False`` contradicts."""
    if max_workers is not None:
        _check_int("max_workers", max_workers, 1)
    if executor is None:
        return
    if not isinstance(executor, concurrent.futures.Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got "
                        f"{type(executor).__name__}")
    if isinstance(executor, concurrent.futures.ThreadPoolExecutor):
        raise ValueError("executor is a ThreadPoolExecutor, expected one that runs chains in "
                         "processes: chains seed torch's global random number generator, which "
                         "threads share")
    if parallel is False:
        raise ValueError("parallel is False but an executor was given; leave parallel unset "
                         "to run the chains on the executor")


def _check_options(method, space, num_samples, warmup, num_chains, steps, seed,
                   max_tree_depth, num_steps, target_accept, lr, lr_decay):
    """The checks of infer()'s options that need nothing else (one ValueError each)."""
    if space not in SPACES:
        raise ValueError(f"space is {space!r}, expected one of {SPACES}")
    if method not in METHODS:
        raise ValueError(f"method is {method!r}, expected one of {METHODS}")
    for name, value, low in (("num_samples", num_samples, 1), ("warmup", warmup, 0),
                             ("num_chains", num_chains, 1), ("steps", steps, 1),
                             ("max_tree_depth", max_tree_depth, 1), ("num_steps", num_steps, 1)):
        _check_int(name, value, low)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed is {seed!r}, expected an integer in [0, 2**32)")
    if not (isinstance(target_accept, (int, float)) and 0 < target_accept < 1):
        raise ValueError(f"target_accept is {target_accept!r}, expected a number in (0, 1)")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr is {lr!r}, expected a finite number > 0")
    if isinstance(lr_decay, bool) or not (isinstance(lr_decay, (int, float))
                                          and 0 < lr_decay <= 1):
        raise ValueError(f"lr_decay is {lr_decay!r}, expected a number in (0, 1] (the SVI "
                         "step at the last step relative to lr; 1 keeps it constant)")


def _check_svi_options(target, method, guide, subsample_size, checkpoint_every):
    """SVI's checks that need the target: a known guide and minibatches no larger than the
    demonstrations (checked whatever the method: a typo fails early); for SVI, a Pyro model
    and a valid checkpoint interval."""
    if not isinstance(target, HasGuide) and guide not in svi.GUIDES:
        raise ValueError(f"guide is {guide!r}, expected one of {tuple(svi.GUIDES)}")
    n = target.demos.n if isinstance(target, Target) else math.inf
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
          executor: concurrent.futures.Executor | None = None) -> RewardPosterior:
    """Infer the posterior over the reward parameters of ``reward_model``.

    Args:
        mdp, demos: the problem; demos are validated against the MDP.
        reward_model: a :class:`~bayesirl.model.rewards.RewardModel` carrying the prior, or any
            model with ``build_target(mdp, data, *, likelihood, rationality)``
            (:class:`~bayesirl.inference.target.TargetBuilder`; ``mdp`` may then be None).
        method: ``"nuts"``, ``"hmc"``, ``"svi"`` or ``"map"``.
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
        strict: turn convergence warnings (R-hat, ESS, divergences, E-BFMI) into errors.
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

    Returns:
        A :class:`~bayesirl.RewardPosterior`; ``post.samples["theta"]`` has shape
        ``(num_chains * num_samples, ...)``.
    """
    warmup = num_samples if warmup is None else warmup
    _check_options(method, space, num_samples, warmup, num_chains, steps, seed, max_tree_depth,
                   num_steps, target_accept, lr, lr_decay)
    _check_workers(parallel, max_workers, executor)
    likelihood = check_likelihood(likelihood)
    rationality = check_rationality(rationality)
    target = build_target(mdp, demos, reward_model, likelihood, rationality)
    _check_svi_options(target, method, guide, subsample_size, checkpoint_every)
    settings = {"likelihood": likelihood, "seed": seed, "num_samples": num_samples,
                "rationality": repr(rationality)}
    start = time.perf_counter()
    pyro.set_rng_seed(seed)
    extra, sample_stats, incomplete = {}, {}, False
    if method in ("nuts", "hmc"):
        options = mcmc.McmcOptions(method, num_samples, warmup, num_chains, seed, progress,
                                   target_accept, max_tree_depth, num_steps, dense_mass,
                                   map_init, space, parallel, executor, max_workers)
        sampled, space, init = mcmc.sampling_target(target, method, space, map_init)
        kernel_kw = mcmc.kernel_options(sampled, init, options)
        params, sample_stats, incomplete = mcmc.run_mcmc(sampled, init, options, kernel_kw)
        settings.update(warmup=warmup, num_chains=num_chains, space=space, **kernel_kw)
    else:
        init = target.init_unconstrained()
        if map_init or method == "map":
            init, _ = map_.fit_map(target, init)
        if method == "map":
            params = {k: v[None, None] for k, v in target.constrain(init).items()}
        else:
            fit = svi.run_svi(target, init, svi.SviOptions(
                guide, steps, lr, lr_decay, subsample_size, num_samples, seed, progress,
                None if checkpoint is None else os.fspath(checkpoint), checkpoint_every,
                map_init, strict))
            params, incomplete = {k: v[None] for k, v in fit.params.items()}, fit.incomplete
            extra["elbo"] = [-x for x in fit.losses]
            settings.update(guide=guide, steps=steps, lr=lr, lr_decay=lr_decay,
                            subsample_size=subsample_size)
    settings["seconds"] = time.perf_counter() - start
    for k, v in params.items():
        if not torch.isfinite(v).all():
            raise FloatingPointError(f"inference produced non-finite draws of {k!r}; the "
                                     "posterior is not usable (check the prior scales and "
                                     "the reward magnitudes)")
    chains = next(iter(params.values())).shape[0]
    post = target.make_posterior({k: v.reshape(-1, *v.shape[2:]) for k, v in params.items()},
                                 method=method, log_lik=None, sample_stats=sample_stats,
                                 settings=settings, num_chains=chains)
    post.extra.update(extra)
    post.incomplete = bool(incomplete)
    if method in ("nuts", "hmc"):
        post.check_convergence(strict=strict)
    return post
