"""Simulation-based calibration (SBC) of posterior inference.

Talts, Betancourt, Simpson, Vehtari & Gelman (2018), "Validating Bayesian inference algorithms
with simulation-based calibration", with the data-dependent log-likelihood test quantity of
Modrak, Moon, Kim, Kucukelbir, Hoffman & Vehtari (2023), "Simulation-based calibration checking
for Bayesian computation: the choice of test quantities shapes sensitivity".

Public as ``bayesirl.diagnostics.sbc`` (with :class:`SBCResult` and :func:`rank_uniformity`).
Every bayesirl module this one uses (inference, demos, the model, the diagnostics) is imported
inside the functions: posterior.py imports the diagnostics, which import this module.
"""

from __future__ import annotations

import math
import pickle
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bayesirl._validation import check_process_executor
from bayesirl.inference.executors import as_completed, one_thread

__all__ = ["SBCResult", "rank_uniformity", "sbc"]

SBC_METHODS = ("nuts", "hmc", "svi", "grid")
SBC_ALPHA = 0.001
_SBC_MAX_BINS = 20


@dataclass(frozen=True, eq=False)
class SBCResult:
    """Ranks of the true values among posterior draws, over many simulated data sets.

    Attributes:
        ranks: ``(n_sims, q)`` integer ranks in ``[0, L]``: how many of the ``L`` (thinned)
            posterior draws fall below the true value (ties broken at random).
        L: posterior draws each true value is ranked among (``L + 1`` possible ranks).
        names: the ``q`` quantities: every scalar parameter (``"theta[0]"``, ...,
            ``"rationality"`` when it has a prior), then ``"loglik"``, the log-likelihood of the
            full simulated data set at the parameters (Modrak et al. 2023).
        p_values: ``(q,)`` chi-square p-values of uniform ranks, one per quantity.
        passed: every p-value is at least ``alpha / q`` (Bonferroni over the quantities).
        alpha: the family-wise level.
        bins: ``J``, the number of rank bins of the chi-square test (and of :meth:`plot`).
        counts: ``(q, J)`` rank counts per bin; ``expected``: ``(J,)`` their expectation.
        thin: ``(n_sims,)`` stride between the draws kept of each simulation.
        ess: ``(n_sims,)`` smallest bulk ESS over the quantities of each simulation's draws
            before thinning (``nan`` when the draws were independent by construction).
        n_under_thinned: simulations whose ``L`` draws kept an ESS per draw below 0.5 even
            after one longer rerun; their ranks are less trustworthy.
        n_warned: simulations whose inference emitted an
            :class:`~bayesirl.posterior.diagnostics.InferenceWarning`.
        seconds: wall time.
    """

    ranks: np.ndarray
    L: int
    names: tuple[str, ...]
    p_values: np.ndarray
    passed: bool
    alpha: float
    bins: int
    counts: np.ndarray
    expected: np.ndarray
    thin: np.ndarray
    ess: np.ndarray
    n_under_thinned: int = 0
    n_warned: int = 0
    seconds: float = 0.0

    def __repr__(self) -> str:
        ps = ", ".join(f"{n}={p:.3g}" for n, p in zip(self.names, self.p_values, strict=True))
        return (f"SBCResult(n_sims={self.ranks.shape[0]}, L={self.L}, bins={self.bins}, "
                f"passed={self.passed}, p_values=[{ps}])")

    def plot(self, ax=None):
        """Rank histograms, one panel per quantity, with the 99% band of each bin count under
        uniformity (binomial quantiles 0.005 and 0.995). Returns the axes."""
        import matplotlib.pyplot as plt
        from scipy import stats

        q = len(self.names)
        if ax is None:
            _, ax = plt.subplots(1, q, figsize=(3 * q, 2.5), squeeze=False)
        axes = np.atleast_1d(np.asarray(ax, dtype=object)).ravel()
        if len(axes) != q:
            raise ValueError(f"ax has {len(axes)} axes, expected {q} (one per quantity: "
                             f"{', '.join(self.names)})")
        n = self.ranks.shape[0]
        probs = self.expected / n
        lo, hi = stats.binom.ppf(0.005, n, probs), stats.binom.ppf(0.995, n, probs)
        x = np.arange(self.bins)
        edges = np.arange(self.bins + 1) - 0.5
        for a, name, counts, p in zip(axes, self.names, self.counts, self.p_values,
                                      strict=True):
            a.fill_between(edges, np.append(lo, lo[-1]), np.append(hi, hi[-1]), step="post",
                           color="0.85", label="99% band")
            a.bar(x, counts, width=0.9, color="C0" if p >= self.alpha / q else "C3")
            a.set_title(f"{name} (p={p:.2g})", fontsize=9)
            a.set_xlabel(f"rank bin (L={self.L})")
        axes[0].set_ylabel("simulations")
        return ax


def rank_uniformity(ranks, L: int, bins: int | None = None):
    """Chi-square test of uniform ranks in ``[0, L]``.

    ``ranks``: ``(n_sims,)`` or ``(n_sims, q)``. The ``L + 1`` rank values are split into
    ``bins`` contiguous bins (default: the largest divisor of ``L + 1`` that is at most 20 and
    leaves at least 10 expected simulations per bin, and at least 2); unequal bins get their
    exact expected counts. Returns ``(p_values (q,), counts (q, J), expected (J,))``.
    """
    from scipy import stats

    r = np.asarray(ranks)
    r = r[:, None] if r.ndim == 1 else r
    n = r.shape[0]
    if (r < 0).any() or (r > L).any():
        raise ValueError(f"ranks must lie in [0, {L}], got values in [{r.min()}, {r.max()}]")
    J = _default_bins(n, L) if bins is None else bins
    if isinstance(J, bool) or not isinstance(J, (int, np.integer)) or not 2 <= J <= L + 1:
        raise ValueError(f"bins is {bins!r}, expected an integer in [2, L + 1 = {L + 1}]")
    which = np.arange(L + 1) * J // (L + 1)  # bin of each rank value
    expected = np.bincount(which, minlength=J) / (L + 1) * n
    counts = np.stack([np.bincount(which[col], minlength=J) for col in r.T.astype(int)])
    p = np.array([stats.chisquare(c, expected).pvalue for c in counts])
    return p, counts, expected


def _default_bins(n_sims: int, L: int) -> int:
    cap = max(2, min(_SBC_MAX_BINS, n_sims // 10))
    return max([j for j in range(2, cap + 1) if (L + 1) % j == 0] or [min(cap, L + 1)])


def _sbc_check(n_sims, n_demos, n_draws, thin, alpha, method, likelihood):
    from bayesirl.model.likelihood import check_likelihood

    for name, value in (("n_sims", n_sims), ("n_demos", n_demos), ("n_draws", n_draws)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} is {value!r}, expected an integer >= 1")
    if not (thin == "auto" or (isinstance(thin, int) and not isinstance(thin, bool)
                               and thin >= 1)):
        raise ValueError(f"thin is {thin!r}, expected 'auto' or an integer >= 1")
    if not (isinstance(alpha, float) and 0 < alpha < 1):
        raise ValueError(f"alpha is {alpha!r}, expected a number in (0, 1)")
    if not callable(method) and method not in SBC_METHODS:
        raise ValueError(f"method is {method!r}, expected one of {SBC_METHODS} or a callable")
    check_likelihood(likelihood)


def _sbc_draws(method, mdp, demos, reward_model, likelihood, rationality, L, seed, kwargs,
               generator):
    """Posterior draws ``{site: (chains, draws, *shape)}`` and how many warnings came up."""
    from bayesirl.inference.facade import infer
    from bayesirl.posterior.diagnostics import InferenceWarning
    from bayesirl.posterior.reward_posterior import RewardPosterior

    if method == "grid":
        from bayesirl.inference.quadrature import grid_posterior

        g = grid_posterior(mdp, demos, reward_model, likelihood=likelihood,
                           rationality=rationality, **kwargs)
        x = g.sample(L, generator=generator)
        return _split_sites(reward_model, rationality, x), 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InferenceWarning)
        if callable(method):
            out = method(mdp, demos, reward_model, likelihood=likelihood,
                         rationality=rationality, n_draws=L, seed=seed, **kwargs)
        else:
            options = {"num_chains": 1, "progress": False}
            options.update({"num_samples": L} if method == "svi" else {})
            options.update(kwargs)
            out = infer(mdp, demos, reward_model, method, likelihood=likelihood,
                        rationality=rationality, seed=seed, **options)
    n_warned = 0
    for w in caught:
        if issubclass(w.category, InferenceWarning):
            n_warned = 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if isinstance(out, RewardPosterior):
        return dict(out.params), n_warned
    if isinstance(out, dict):  # independent draws with a leading draws dim
        return {k: torch.as_tensor(v).unsqueeze(0) for k, v in out.items()}, n_warned
    raise TypeError(f"method returned {type(out).__name__}, expected a RewardPosterior or a "
                    "dict of draws {site: (draws, *shape)}")


def _split_sites(reward_model, rationality, x):
    """``(D, d)`` flat draws (grid order: sites in ``priors()`` order, then the rationality)
    into ``{site: (1, D, *shape)}``."""
    out, j = {}, 0
    shapes = _site_shapes(reward_model, rationality)
    for k, shape in shapes.items():
        size = math.prod(shape)
        out[k] = x[:, j:j + size].reshape(1, x.shape[0], *shape)
        j += size
    return out


def _site_shapes(reward_model, rationality):
    shapes = {k: tuple(p.batch_shape + p.event_shape) for k, p in reward_model.priors().items()}
    if isinstance(rationality, torch.distributions.Distribution):
        shapes["rationality"] = ()
    return shapes


def _flat(params, shapes, lead):
    """Concatenate sites into ``(*lead, d)``."""
    return torch.cat([params[k].reshape(*lead, -1) for k in shapes], -1)


def _loglik(mdp, demos, reward_model, likelihood, rationality, params):
    """Full-data log-likelihood ``(n,)`` of flat-batched parameter draws ``{site: (n, ...)}``."""
    from bayesirl.model.likelihood import demo_log_likelihood

    n = next(iter(params.values())).shape[0]
    out = []
    with torch.no_grad():
        for i in range(0, n, 256):
            chunk = {k: v[i:i + 256].to(mdp.dtype) for k, v in params.items()}
            beta = chunk.pop("rationality", rationality)
            reward = reward_model.reward(chunk)
            out.append(demo_log_likelihood(mdp, demos, reward, likelihood, beta).sum(-1))
    return torch.cat(out)


def _select(values, L, thin, rerun_left):
    """Pick ``L`` draws of ``values: (C, D, q)``; returns ``(indices into the flattened draws or
    None when a rerun is wanted, stride, ess, under_thinned)``."""
    C, D, _ = values.shape
    n = C * D
    if thin != "auto":
        if D // thin * C < L:
            raise ValueError(f"thin={thin} leaves {D // thin * C} of {n} draws, expected at "
                             f"least n_draws={L}; draw more samples or thin less")
        keep = (np.arange(C)[:, None] * D + np.arange(0, D, thin)[None]).ravel()
        return keep[np.floor(np.linspace(0, len(keep), L, endpoint=False)).astype(int)], thin, \
            np.nan, False
    ess = np.nan
    if n > L:
        import arviz as az

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant draws: nan ESS
            ess = min(float(az.ess(values[..., j].cpu().numpy(), method="bulk"))
                      for j in range(values.shape[-1]))
        ess = 0.0 if not math.isfinite(ess) else ess
    stride = 1 if not n > L else max(1, math.ceil(n / max(ess, 1e-12)))
    if D // stride * C < L:  # too few at ESS per draw 1: accept ESS per draw >= 0.5
        if ess < L / 2 and rerun_left:
            return None, stride, ess, True
        stride = max(1, D * C // L)
        while D // stride * C < L:
            stride -= 1
    under = bool(n > L and ess < L / 2)
    keep = (np.arange(C)[:, None] * D + np.arange(0, D, stride)[None]).ravel()
    return keep[np.floor(np.linspace(0, len(keep), L, endpoint=False)).astype(int)], stride, \
        ess, under


@dataclass(frozen=True)
class _Simulation:
    """One simulation of :func:`sbc`: a pure, seeded, picklable task. Everything random in it
    derives from ``SeedSequence([seed, i])``, and it runs on one torch and one BLAS thread, so
    its ranks are the same whether it runs in this process or on any executor's worker."""

    i: int
    seed: int
    mdp_factory: Any
    reward_model: Any
    n_demos: int
    demo_length: int | None
    method: Any
    kwargs: dict
    L: int
    thin: Any
    likelihood: str
    rationality: Any


@dataclass(frozen=True)
class _SimResult:
    """A simulation's ranks ``(q,)``, the stride and ESS of its draws, whether it stayed
    under-thinned and whether its inference warned."""

    ranks: np.ndarray
    stride: int
    ess: float
    under: bool
    warned: int


def _simulate(sim: _Simulation) -> _SimResult:
    """Run one simulation (see :func:`sbc`) on one thread, leaving the caller's torch RNG and
    thread counts as they were."""
    with one_thread(), torch.random.fork_rng(devices=[]):
        return _simulate_here(sim)


def _simulate_here(sim: _Simulation) -> _SimResult:
    from bayesirl.core.demos import rollouts
    from bayesirl.core.mdp import TabularMDP
    from bayesirl.model.likelihood import action_log_probs

    reward_model, rationality, likelihood, L = (sim.reward_model, sim.rationality,
                                                sim.likelihood, sim.L)
    method, thin = sim.method, sim.thin
    priors = dict(reward_model.priors())
    if isinstance(rationality, torch.distributions.Distribution):
        priors["rationality"] = rationality
    shapes = _site_shapes(reward_model, rationality)
    ss = np.random.SeedSequence([sim.seed, sim.i])
    rng = np.random.default_rng(ss)
    sim_seed = int(ss.generate_state(1)[0] & 0x7FFFFFFF)
    mdp_factory = sim.mdp_factory
    mdp = mdp_factory if isinstance(mdp_factory, TabularMDP) else mdp_factory(rng)
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp_factory returned {type(mdp).__name__}, expected a TabularMDP")
    reward_model.check(mdp)
    torch.manual_seed(sim_seed)
    truth = {k: p.sample().to(mdp.dtype) for k, p in priors.items()}
    beta = truth.get("rationality", rationality)
    with torch.no_grad():
        reward = reward_model.reward({k: v for k, v in truth.items() if k != "rationality"})
        pi = action_log_probs(mdp, reward, likelihood, beta).exp()
    demos = rollouts(mdp, pi, sim.n_demos, seed=sim_seed, length=sim.demo_length)
    generator = torch.Generator().manual_seed(sim_seed)
    run_kwargs = dict(sim.kwargs)
    for attempt in (0, 1):
        draws, warned = _sbc_draws(method, mdp, demos, reward_model, likelihood, rationality,
                                   L, sim_seed, run_kwargs, generator)
        C, D = next(iter(draws.values())).shape[:2]
        flat = {k: v.reshape(C * D, *v.shape[2:]) for k, v in draws.items()}
        ll = _loglik(mdp, demos, reward_model, likelihood, rationality, flat)
        values = torch.cat([_flat(flat, shapes, (C * D,)).to(ll), ll[:, None]], -1)
        rerun = attempt == 0 and method in ("nuts", "hmc")
        keep, stride, ess, under = _select(values.reshape(C, D, -1), L, thin, rerun)
        if keep is not None:
            break
        num = run_kwargs.get("num_samples", 1000)
        run_kwargs["num_samples"] = num * min(4, math.ceil(L / max(ess, 1.0)))
    true_ll = _loglik(mdp, demos, reward_model, likelihood, rationality,
                      {k: v[None] for k, v in truth.items()})
    true_values = torch.cat([_flat(truth, shapes, (1,))[0].to(ll), true_ll]).cpu()
    kept = values[torch.as_tensor(keep)].cpu()
    below = (kept < true_values).sum(0).numpy()
    ties = (kept == true_values).sum(0).numpy()
    return _SimResult(below + rng.integers(0, ties + 1), int(stride), float(ess), bool(under),
                      int(warned))


def _run_simulations(sims: list[_Simulation], executor, bar) -> list[_SimResult]:
    """The simulations' results in order: one after another here, or submitted to
    ``executor`` all at once (Ctrl-C cancels those not started and re-raises)."""
    if executor is None:
        results = []
        for sim in sims:
            results.append(_simulate(sim))
            bar.update()
        return results
    try:
        pickle.dumps(sims[0])
    except Exception as e:  # pickling raises many types (a lambda, a closure, a lock)
        raise TypeError("with an executor each simulation is sent to a worker, so "
                        "mdp_factory, reward_model and a callable method must be picklable "
                        f"(module-level functions, not lambdas or closures): {e}") from None
    futures = {executor.submit(_simulate, sim): k for k, sim in enumerate(sims)}
    results: list = [None] * len(sims)
    try:
        for future in as_completed(futures):  # sees a Ctrl-C that landed on another thread
            results[futures[future]] = future.result()
            bar.update()
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return results


def sbc(mdp_factory, reward_model, n_sims: int, *, n_demos: int = 10,
        demo_length: int | None = None, method="nuts", infer_kwargs=None, n_draws: int = 99,
        thin="auto", bins: int | None = None, seed: int = 0, likelihood: str = "soft",
        rationality=1.0, alpha: float = SBC_ALPHA, progress: bool = True,
        executor=None) -> SBCResult:
    """Simulation-based calibration of posterior inference (Talts et al. 2018).

    For each of ``n_sims`` simulations: draw the parameters from the prior
    (``reward_model.priors()``, and the rationality when it is a prior), simulate ``n_demos``
    demonstrations from the expert of the model (``exp(action_log_probs(mdp, reward,
    likelihood, beta))``), infer the posterior, keep ``L = n_draws`` draws and record the rank
    of the true value of each scalar parameter among them, and the rank of the full-data
    log-likelihood at the true parameters among the draws' (Modrak et al. 2023: a likelihood that
    drops half of the data still passes on the parameters, since the posterior of part of the
    data is calibrated, but fails on the log-likelihood). With exact inference every rank is
    uniform on ``{0, ..., L}``; a chi-square test per quantity checks that.

    Args:
        mdp_factory: a :class:`~bayesirl.TabularMDP`, or ``f(rng) -> TabularMDP`` called
            with a ``numpy.random.Generator`` per simulation (the MDP may vary).
        reward_model: a reward model with a proper prior.
        n_sims: simulations (``>= 10 * bins`` for the chi-square approximation).
        n_demos, demo_length: demonstrations per data set and their length (default the
            horizon; required for a discounted MDP).
        method: ``"nuts"``, ``"hmc"``, ``"svi"`` (through :func:`bayesirl.infer`), ``"grid"``
            (exact draws by quadrature,
            :func:`bayesirl.inference.quadrature.grid_posterior`, 1-d or 2-d parameters:
            checks that the simulator and the likelihood agree), or a callable
            ``f(mdp, demos, reward_model, *, likelihood, rationality, n_draws, seed, **kw)``
            returning a :class:`~bayesirl.RewardPosterior` or a dict of independent
            draws ``{site: (draws, *shape)}``.
        infer_kwargs: passed to the method (e.g. ``num_samples``, ``warmup``; ``grid``,
            ``bounds`` for the grid). MCMC defaults to one chain.
        n_draws: ``L``; pick it so that ``bins`` divides ``L + 1``.
        thin: ``"auto"``: keep every ``ceil(n / ESS)``-th draw (the smallest bulk ESS over the
            quantities), or ``L`` evenly spaced draws when that leaves fewer than ``L`` and the
            ESS per kept draw is still >= 0.5; otherwise MCMC is rerun once with more samples,
            and a simulation still short is counted in ``n_under_thinned``. An integer: that
            stride.
        bins: chi-square bins ``J`` (default: see :func:`rank_uniformity`).
        seed: all randomness derives from it (per simulation: ``SeedSequence([seed, i])``).
        likelihood, rationality: the model of the expert, used to simulate and to infer.
        alpha: family-wise level; each quantity passes when its p-value is >= ``alpha / q``.
        progress: a tqdm bar over simulations.
        executor: run the simulations on this ``concurrent.futures.Executor`` (e.g. a
            ``ProcessPoolExecutor``, or a Dask client's ``get_executor()``), all submitted at
            once; None runs them here one after another. Each simulation is a pure, seeded
            task on one thread (see :class:`_Simulation`), so the ranks are the same either
            way; ``mdp_factory`` and a callable ``method`` must then be picklable
            (module-level functions). A ``ThreadPoolExecutor`` is refused (simulations seed
            torch's global random number generator).

    Returns:
        :class:`SBCResult`.
    """
    from tqdm.auto import tqdm

    from bayesirl.core.mdp import TabularMDP
    from bayesirl.model.likelihood import check_rationality
    from bayesirl.model.rewards import RewardModel, is_improper

    _sbc_check(n_sims, n_demos, n_draws, thin, alpha, method, likelihood)
    if not isinstance(reward_model, RewardModel):
        raise TypeError(f"reward_model must be a bayesirl reward model, got "
                        f"{type(reward_model).__name__}")
    rationality = check_rationality(rationality)
    priors = dict(reward_model.priors())
    if isinstance(rationality, torch.distributions.Distribution):
        priors["rationality"] = rationality
    improper = [k for k, p in priors.items() if is_improper(p)]
    if improper:
        raise ValueError(f"the prior of {improper[0]!r} is improper; SBC draws the true "
                         "parameters from the prior, so it needs a proper one")
    if not (isinstance(mdp_factory, TabularMDP) or callable(mdp_factory)):
        raise TypeError(f"mdp_factory must be a TabularMDP or a callable rng -> TabularMDP, got "
                        f"{type(mdp_factory).__name__}")
    check_process_executor(executor, "simulations")
    shapes = _site_shapes(reward_model, rationality)
    names = tuple(k if not s else f"{k}[{i}]" for k, s in shapes.items()
                  for i in range(math.prod(s))) + ("loglik",)
    L = n_draws
    sims = [_Simulation(i, seed, mdp_factory, reward_model, n_demos, demo_length, method,
                        dict(infer_kwargs or {}), L, thin, likelihood, rationality)
            for i in range(n_sims)]
    start = time.perf_counter()
    bar = tqdm(total=n_sims, desc=f"sbc ({getattr(method, '__name__', method)})",
               disable=not progress, leave=False)
    try:
        results = _run_simulations(sims, executor, bar)
    finally:
        bar.close()
    ranks = np.stack([r.ranks for r in results]).astype(np.int64)
    strides = np.array([r.stride for r in results], dtype=np.int64)
    esses = np.array([r.ess for r in results], dtype=float)
    n_under = sum(r.under for r in results)
    n_warned = sum(r.warned for r in results)
    p, counts, expected = rank_uniformity(ranks, L, bins)
    return SBCResult(ranks, L, names, p, bool((p >= alpha / len(names)).all()), alpha,
                     counts.shape[1], counts, expected, strides, esses, n_under, n_warned,
                     time.perf_counter() - start)
