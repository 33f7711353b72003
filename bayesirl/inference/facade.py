"""``infer()``: posterior inference over reward parameters with NUTS, HMC, SVI or MAP.

MCMC runs Pyro's NUTS/HMC kernels on a *potential function* built directly from the reward
model's independent priors and the pointwise likelihood (:mod:`bayesirl.model.likelihood`),
instead of re-tracing the Pyro model at every gradient: the density is the same as that of
:func:`~bayesirl.irl_model` (a test checks it), minus the tracing overhead. For a tabular
reward on a discounted MDP they move the values instead of the rewards
(:mod:`bayesirl.inference.value_space`), which needs no planning per gradient; with the Boltzmann
likelihood NUTS there refracts at the greedy policy's jumps (:mod:`bayesirl.inference.refraction`).
SVI uses the Pyro model itself with an autoguide, so minibatches over demonstrations work. MAP
maximises the same joint density with L-BFGS.
"""

from __future__ import annotations

import concurrent.futures
import copy
import math
import multiprocessing
import os
import time

import pyro
import scipy.optimize
import threadpoolctl
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer import autoguide as ag
from pyro.infer.mcmc import HMC, NUTS
from tqdm.auto import tqdm

from bayesirl.core.demos import Demonstrations
from bayesirl.core.mdp import TabularMDP
from bayesirl.inference.refraction import RefractiveNUTS
from bayesirl.inference.target import Target
from bayesirl.inference.value_space import ValueSpaceTarget, ineligible
from bayesirl.model.likelihood import check_likelihood, check_rationality, irl_model
from bayesirl.model.rewards import RewardModel
from bayesirl.posterior.reward_posterior import RewardPosterior

__all__ = ["GUIDES", "METHODS", "infer"]

METHODS = ("nuts", "hmc", "svi", "map")
SPACES = ("auto", "reward", "value")
GUIDES = {"normal": ag.AutoNormal, "mvn": ag.AutoMultivariateNormal,
          "lowrank": ag.AutoLowRankMultivariateNormal}


def _fit_map(target: Target, u0, max_iter: int = 200, jacobian: bool = False):
    """Minimise the negative joint density with SciPy's L-BFGS-B (no bounds: ``u`` is
    unconstrained); ``jacobian=False`` is the MAP of AutoDelta.

    SciPy rather than ``torch.optim.LBFGS``: the first step of a torch optimizer imports
    ``torch._dynamo`` (5-18 s in every fresh process, parallel chains included).
    Returns ``(u, loss)``.
    """
    names = list(u0)
    shapes = [u0[k].shape for k in names]
    sizes = [u0[k].numel() for k in names]
    like = u0[names[0]]

    def unflatten(x):
        flat = torch.as_tensor(x, dtype=like.dtype, device=like.device)
        return {k: p.reshape(shape)
                for k, p, shape in zip(names, flat.split(sizes), shapes, strict=True)}

    def loss_and_grad(x):
        u = {k: v.clone().requires_grad_(True) for k, v in unflatten(x).items()}
        loss = target.potential(u, jacobian=jacobian)
        grads = torch.autograd.grad(loss, list(u.values()))
        grad = torch.cat([g.reshape(-1) for g in grads]).to("cpu", torch.float64).numpy()
        return float(loss.detach()), grad

    x0 = torch.cat([u0[k].reshape(-1) for k in names]).to("cpu", torch.float64).numpy()
    result = scipy.optimize.minimize(loss_and_grad, x0, jac=True, method="L-BFGS-B",
                                     options={"maxiter": max_iter, "gtol": 1e-9, "ftol": 1e-14})
    return unflatten(result.x), float(result.fun)


class _Recorder:
    """Wraps a Pyro HMC/NUTS kernel to record per-draw sample stats.

    Records the Hamiltonian after momentum resampling (``energy``, for E-BFMI), the number of
    leapfrog steps and tree depth, divergences and the step size; for
    :class:`~bayesirl.inference.refraction.RefractiveNUTS` also the boundary crossings of the draw's
    trajectory that refracted and that reflected (``n_refracted``, ``n_reflected``: many
    reflections mean walls of the jump term that the momentum could not pay to cross).
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.n_leapfrog = 0
        self.r_unscaled = None
        sample_r = kernel._sample_r

        def _sample_r(name):
            r, r_unscaled = sample_r(name)
            self.r_unscaled = r_unscaled
            return r, r_unscaled

        kernel._sample_r = _sample_r
        if isinstance(kernel, NUTS):
            build = kernel._build_basetree

            def _build_basetree(*args, **kwargs):
                self.n_leapfrog += 1
                return build(*args, **kwargs)

            kernel._build_basetree = _build_basetree

    def step(self, params):
        kernel = self.kernel
        n_div = len(kernel._divergences)
        self.n_leapfrog = 0
        pe_before = kernel._potential_energy_last
        refractive = isinstance(kernel, RefractiveNUTS)
        crossings = (kernel.n_refracted, kernel.n_reflected) if refractive else None
        params = kernel.sample(params)
        stats = {"step_size": float(kernel.step_size),
                 "diverging": len(kernel._divergences) > n_div}
        if refractive:
            stats["n_refracted"] = kernel.n_refracted - crossings[0]
            stats["n_reflected"] = kernel.n_reflected - crossings[1]
        if self.r_unscaled is not None and pe_before is not None:
            stats["energy"] = float(pe_before + kernel._kinetic_energy(self.r_unscaled))
        stats["lp"] = -float(kernel._potential_energy_last)
        if isinstance(kernel, NUTS):
            stats["n_steps"] = self.n_leapfrog
            stats["tree_depth"] = int(math.floor(math.log2(max(self.n_leapfrog, 1)))) + 1
        return params, stats


_MIN_PILOT = 100  # warmup iterations from which value space re-whitens (_run_chain)


def _kernel(target, method, kernel_options, params, warmup):
    """A NUTS/HMC kernel on ``target`` set up for ``warmup`` adaptation steps from ``params``,
    wrapped in a :class:`_Recorder`."""
    regions = getattr(target, "regions", None)  # value space, Boltzmann: refract at jumps
    if regions is not None:
        kernel = RefractiveNUTS(target.potential, regions, **kernel_options)
    else:
        kernel = (NUTS if method == "nuts" else HMC)(potential_fn=target.potential,
                                                     **kernel_options)
    kernel.initial_params = params
    kernel.setup(warmup)
    return _Recorder(kernel)


def _run_chain(target, method, c, num_chains, num_samples, warmup, seed, progress, init,
               kernel_options):
    """One NUTS/HMC chain seeded with ``seed + c``: ``(draws, stats, interrupted)``, the draws
    constrained (a dict of ``(draws, ...)`` tensors).

    A value-space target (one with ``rewhitened``) warms up in two stages when ``warmup >=``
    :data:`_MIN_PILOT`: the second half of the draws of a pilot, the first two thirds of
    the warmup, re-whitens it (see :meth:`ValueSpaceTarget.rewhitened`), and the last third
    adapts the step size again, not the mass matrix: the coordinates are whitened by the
    pilot's covariance. (On the 144-state task, chains seeded 0-3 x (300 + 300), when this
    schedule was chosen: the slowest reached a min ESS of 47 (Boltzmann) and 33 (soft),
    against 29 and 21 with a pilot of half the warmup and a diagonal mass adapted after it.
    Chains differ a lot: the same four chains at a later commit, which changed rounding
    only, reached 22-88.)"""
    if getattr(target, "regions", None) is not None:
        # the regions' caches (the jump's inverses, updated along the path; where the last
        # drift ended) start empty in each chain as in a chain's own process: sequential
        # chains draw what parallel ones do
        target = copy.deepcopy(target)
    pyro.set_rng_seed(seed + c)
    params = {k: v + 0.1 * torch.randn_like(v) for k, v in init.items()}
    pilot = 2 * warmup // 3 if hasattr(target, "rewhitened") and warmup >= _MIN_PILOT else 0
    draws, stats, interrupted = [], [], False
    bar = tqdm(total=warmup + num_samples, desc=f"{method} chain {c + 1}/{num_chains}",
               disable=not progress, leave=False, position=c)

    def run(rec, n, keep, kept_draws, kept_stats):
        nonlocal params
        try:
            for i in range(n):
                params, st = rec.step(params)
                if i >= keep:
                    kept_draws.append({k: v.detach().clone() for k, v in params.items()})
                    kept_stats.append(st)
                bar.update()
                if i % 20 == 0:
                    bar.set_postfix(step_size=f"{st['step_size']:.2g}")
        finally:
            rec.kernel.cleanup()

    try:
        if pilot:  # its draws are warmup, never returned
            pilot_draws = []
            run(_kernel(target, method, kernel_options, params, pilot), pilot, pilot // 2,
                pilot_draws, [])
            rewhitened = target.rewhitened(torch.stack([d["w"] for d in pilot_draws]))
            params = {"w": rewhitened.whiten(target.params_of(params["w"]))}
            target = rewhitened
            kernel_options = dict(kernel_options, adapt_mass_matrix=False)
        rest = warmup - pilot
        run(_kernel(target, method, kernel_options, params, rest), rest + num_samples, rest,
            draws, stats)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    constrained = (target.constrain({k: torch.stack([d[k] for d in draws]) for k in draws[0]})
                   if draws else {})
    return constrained, stats, interrupted


def _chain_in_process(*args):
    # one chain per core: one torch thread and one BLAS thread (numpy's, which refracting NUTS
    # uses; two chains with a 2-thread BLAS each on 2 cores ran 3.6x slower)
    torch.set_num_threads(1)
    with threadpoolctl.threadpool_limits(1):
        return _run_chain(*args)


def _run_mcmc(target, method, num_samples, warmup, num_chains, seed, progress, init,
              kernel_options, parallel):
    args = (target, method, num_chains, num_samples, warmup, seed, progress, init,
            kernel_options)
    results = []
    if parallel:
        ctx = multiprocessing.get_context("spawn")  # fork is unsafe with OpenMP threads
        with concurrent.futures.ProcessPoolExecutor(num_chains, mp_context=ctx) as pool:
            futures = [pool.submit(_chain_in_process, *args[:2], c, *args[2:])
                       for c in range(num_chains)]
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
        for c in range(num_chains):
            results.append(_run_chain(*args[:2], c, *args[2:]))
            if results[-1][2]:
                break
    incomplete = any(r[2] for r in results)
    results = [r for r in results if r[0]]
    if not results:
        raise KeyboardInterrupt("inference interrupted before any draw was made")
    n = min(len(r[1]) for r in results)  # an interrupted chain truncates all to its length
    params = {k: torch.stack([r[0][k][:n] for r in results]) for k in results[0][0]}
    sample_stats = {k: torch.tensor([[s[k] for s in r[1][:n]] for r in results])
                    for k in results[0][1][0]}
    return params, sample_stats, incomplete


def _save_checkpoint(path, step, losses, guide, optim):
    """Atomically write everything SVI needs to resume exactly: parameters, optimiser moments,
    the step, the ELBO trace and the RNG states."""
    state = {"format": "bayesirl.svi-checkpoint/1", "step": step, "losses": list(losses),
             "guide": guide.state_dict(), "optim": optim.get_state(),
             "rng": pyro.util.get_rng_state()}
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path):
    try:  # our own file: it holds Pyro constraint objects, which weights_only refuses
        state = torch.load(path, weights_only=False)
    except Exception as e:
        raise ValueError(f"checkpoint {path} is not readable ({e})") from e
    if not isinstance(state, dict) or state.get("format") != "bayesirl.svi-checkpoint/1":
        raise ValueError(f"checkpoint {path} is not a bayesirl SVI checkpoint")
    return state


def _run_svi(mdp, demos, reward_model, target, guide, steps, lr, lr_decay, subsample_size,
             num_samples, seed, progress, init, checkpoint, checkpoint_every):
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()

    def model():
        return irl_model(mdp, demos, reward_model, target.likelihood, target.rationality,
                         subsample_size)

    init_values = target.constrain(init)
    auto = GUIDES[guide](model, init_loc_fn=pyro.infer.autoguide.init_to_value(
        values=init_values))
    # the final iterate of a constant-step Adam jitters around the optimum (the ELBO's
    # gradient is one noisy draw): the step decays geometrically to lr * lr_decay
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": lr_decay ** (1 / steps)})
    svi = SVI(model, auto, optim, Trace_ELBO())
    losses, start = [], 0
    if checkpoint is not None and os.path.exists(checkpoint):
        state = _load_checkpoint(checkpoint)
        auto()  # create the guide's parameters, then overwrite them
        with torch.no_grad():
            for name, value in auto.named_parameters():
                value.copy_(state["guide"][name])
        optim.set_state(state["optim"])
        pyro.util.set_rng_state(state["rng"])
        losses, start = state["losses"], state["step"]
    bar = tqdm(range(start, steps), desc=f"svi ({guide})", disable=not progress, leave=False)
    incomplete = False
    try:
        for i in bar:
            loss = svi.step()
            if not math.isfinite(loss):
                raise FloatingPointError(f"the ELBO became {loss} at step {i}; lower lr "
                                         f"(is {lr})")
            losses.append(loss)
            if i % 50 == 0:
                bar.set_postfix(elbo=f"{-loss:.4g}")
            if checkpoint is not None and (i + 1) % checkpoint_every == 0:
                _save_checkpoint(checkpoint, i + 1, losses, auto, optim)
    except KeyboardInterrupt:
        incomplete = True
    with torch.no_grad():
        draws = [auto() for _ in range(num_samples)]
    params = {k: torch.stack([d[k] for d in draws]).unsqueeze(0) for k in target.priors}
    return params, losses, incomplete


def _validate(mdp, demos, reward_model, method, num_samples, warmup, num_chains, guide, lr,
              lr_decay, steps, seed, target_accept, max_tree_depth, num_steps):
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")
    if not isinstance(demos, Demonstrations):
        raise TypeError(f"demos must be Demonstrations, got {type(demos).__name__}")
    if not isinstance(reward_model, RewardModel):
        raise TypeError("reward_model must be a bayesirl reward model (LinearReward, "
                        "TabularReward, GPReward, NeuralReward), got "
                        f"{type(reward_model).__name__}")
    if method not in METHODS:
        raise ValueError(f"method is {method!r}, expected one of {METHODS}")
    for name, value, low in (("num_samples", num_samples, 1), ("warmup", warmup, 0),
                             ("num_chains", num_chains, 1), ("steps", steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} is {value!r}, expected an integer >= {low}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed is {seed!r}, expected an integer in [0, 2**32)")
    for name, value in (("max_tree_depth", max_tree_depth), ("num_steps", num_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} is {value!r}, expected an integer >= 1")
    if not (isinstance(target_accept, (int, float)) and 0 < target_accept < 1):
        raise ValueError(f"target_accept is {target_accept!r}, expected a number in (0, 1)")
    if guide not in GUIDES:
        raise ValueError(f"guide is {guide!r}, expected one of {tuple(GUIDES)}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr is {lr!r}, expected a finite number > 0")
    if isinstance(lr_decay, bool) or not (isinstance(lr_decay, (int, float))
                                          and 0 < lr_decay <= 1):
        raise ValueError(f"lr_decay is {lr_decay!r}, expected a number in (0, 1] (the SVI "
                         "step at the last step relative to lr; 1 keeps it constant)")
    if demos.device != mdp.device:
        raise ValueError(f"demos are on {demos.device} but the MDP is on {mdp.device}; "
                         "move one with .to(device)")
    demos.validate(mdp)
    reward_model.check(mdp)


def infer(mdp: TabularMDP, demos: Demonstrations, reward_model: RewardModel,
          method: str = "nuts", *, likelihood: str = "soft", rationality=1.0,
          num_samples: int = 1000, warmup: int | None = None, num_chains: int = 2,
          seed: int = 0, progress: bool = True, strict: bool = False,
          target_accept: float = 0.8, max_tree_depth: int = 10, num_steps: int = 10,
          guide: str = "mvn", steps: int = 2000, lr: float = 0.01, lr_decay: float = 1.0,
          subsample_size: int | None = None, checkpoint=None, checkpoint_every: int = 100,
          map_init: bool = True, dense_mass: bool | None = None,
          parallel: bool | None = None, space: str = "auto") -> RewardPosterior:
    """Infer the posterior over the reward parameters of ``reward_model``.

    Args:
        mdp, demos: the problem; demos are validated against the MDP.
        reward_model: a :class:`~bayesirl.model.rewards.RewardModel` carrying the prior.
        method: ``"nuts"``, ``"hmc"``, ``"svi"`` or ``"map"``.
        likelihood: ``"soft"`` (maximum causal entropy) or ``"boltzmann"``.
        rationality: beta > 0, or a prior on it (e.g. ``dist.LogNormal(0., 1.)``).
        num_samples: draws per chain (MCMC) or from the fitted guide (SVI).
        warmup: MCMC adaptation steps (default ``num_samples``).
        num_chains: MCMC chains, chain c seeded with ``seed + c`` (the same draws whether
            chains run one after another or in parallel).
        parallel: run chains in parallel processes (default: when there are several chains,
            several cores and at least 1000 iterations in all); an interrupted parallel run
            keeps the draws each chain made, like a sequential one.
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
            value space, whose coordinates are whitened already: a dense matrix adapted there
            from 300 warmup draws made a 144-parameter run over 9x slower).
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
    if space not in SPACES:
        raise ValueError(f"space is {space!r}, expected one of {SPACES}")
    _validate(mdp, demos, reward_model, method, num_samples, warmup, num_chains, guide, lr,
              lr_decay, steps, seed, target_accept, max_tree_depth, num_steps)
    likelihood = check_likelihood(likelihood)
    rationality = check_rationality(rationality)
    if subsample_size is not None and not (isinstance(subsample_size, int)
                                           and 1 <= subsample_size <= demos.n):
        raise ValueError(f"subsample_size is {subsample_size!r}, expected an integer in "
                         f"[1, {demos.n}]")
    target = Target(mdp, demos, reward_model, likelihood, rationality)
    settings = {"likelihood": likelihood, "seed": seed, "num_samples": num_samples,
                "rationality": repr(rationality)}
    if method in ("nuts", "hmc"):
        why_not = ineligible(target, method)
        if space == "value" and why_not is not None:
            raise ValueError(f"space='value' does not apply: {why_not}")
        space = "reward" if space == "reward" or why_not is not None else "value"
    start = time.perf_counter()
    pyro.set_rng_seed(seed)
    init = target.init_unconstrained()
    if (map_init or method == "map") and space != "value":
        init, _ = _fit_map(target, init)
    extra = {}
    incomplete = False
    if method == "map":
        params = {k: v.unsqueeze(0).unsqueeze(0) for k, v in target.constrain(init).items()}
        sample_stats = {}
    elif method == "svi":
        if not (isinstance(checkpoint_every, int) and checkpoint_every >= 1):
            raise ValueError(f"checkpoint_every is {checkpoint_every!r}, expected an integer "
                             ">= 1")
        params, losses, incomplete = _run_svi(mdp, demos, reward_model, target, guide, steps,
                                              lr, lr_decay, subsample_size, num_samples, seed,
                                              progress, init, None if checkpoint is None
                                              else os.fspath(checkpoint), checkpoint_every)
        sample_stats = {}
        extra["elbo"] = [-x for x in losses]
        settings.update(guide=guide, steps=steps, lr=lr, lr_decay=lr_decay,
                        subsample_size=subsample_size)
    else:
        sampled = target
        if space == "value":
            sampled = ValueSpaceTarget(target, target.constrain(init)["theta"])
            if map_init:  # the MAP found in value space, whitened there again
                u, _ = _fit_map(sampled, sampled.init_unconstrained(), jacobian=False)
                sampled = ValueSpaceTarget(target, sampled.constrain(u)["theta"])
        n_params = sum(p.batch_shape.numel() * p.event_shape.numel()
                       for p in target.priors.values())
        if dense_mass is None:  # value space is whitened already
            dense_mass = space == "reward" and n_params <= 50
        options = ({"target_accept_prob": target_accept, "max_tree_depth": max_tree_depth}
                   if method == "nuts" else {"num_steps": num_steps,
                                             "target_accept_prob": target_accept})
        options["full_mass"] = bool(dense_mass)
        if parallel is None:
            parallel = (num_chains > 1 and (os.cpu_count() or 1) > 1
                        and num_chains * (num_samples + warmup) >= 1000)
        params, sample_stats, incomplete = _run_mcmc(
            sampled, method, num_samples, warmup, num_chains, seed, progress,
            init if space == "reward" else sampled.init_unconstrained(), options, parallel)
        settings.update(warmup=warmup, num_chains=num_chains, space=space, **options)
    settings["seconds"] = time.perf_counter() - start
    for k, v in params.items():
        if not torch.isfinite(v).all():
            raise FloatingPointError(f"inference produced non-finite draws of {k!r}; the "
                                     "posterior is not usable (check the prior scales and "
                                     "the reward magnitudes)")
    post = RewardPosterior.from_params(target, params, method=method, settings=settings,
                                       sample_stats=sample_stats, extra=extra,
                                       incomplete=incomplete)
    for name, value in (("reward", post.rewards), ("log-likelihood", post.log_lik)):
        if not torch.isfinite(value).all():
            raise FloatingPointError(f"inference produced non-finite {name} values at some "
                                     "draws; the posterior is not usable")
    if method in ("nuts", "hmc"):
        post.check_convergence(strict=strict)
    return post
