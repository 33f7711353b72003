"""Convergence diagnostics for MCMC posteriors (R-hat, ESS, divergences, E-BFMI, NUTS's tree
depth) via ArviZ.

Thresholds follow Vehtari et al. (2021), "Rank-normalization, folding, and localization":
R-hat <= 1.01 and bulk ESS >= 400 (100 per chain for 4 chains); Betancourt (2016) for
E-BFMI >= 0.3. NUTS draws whose trajectory ran to ``max_tree_depth`` (Stan's "maximum treedepth"
warning) are an efficiency problem, not a bias: reported when more than
:data:`TREE_DEPTH_SHARE` of the draws did, as where every draw does the sampler is crawling
through a posterior it cannot traverse (an MLP's weights). Simulation-based calibration is
:func:`bayesirl.sbc.sbc` and re-exported here.
"""

from __future__ import annotations

import json
import warnings

import numpy as np

from bayesirl.posterior.arviz_io import az, bfmi

__all__ = ["ConvergenceError", "InferenceWarning", "check_convergence"]

RHAT_MAX = 1.01
ESS_MIN = 400
BFMI_MIN = 0.3
TREE_DEPTH_SHARE = 0.1


class InferenceWarning(UserWarning):
    """MCMC diagnostics suggest the draws do not represent the posterior."""


class ConvergenceError(RuntimeError):
    """Raised instead of :class:`InferenceWarning` when ``strict=True``."""


def convergence_problems(idata, var_names) -> list[str]:
    """Human-readable problems found in ``idata`` (empty when none)."""
    problems = []
    post = idata.posterior
    n_chains, n_draws = post.sizes["chain"], post.sizes["draw"]
    if n_draws >= 4:
        with warnings.catch_warnings():
            # constant draws give nan R-hat and ESS; an all-nan slice warns in nanmax/nanmin
            warnings.simplefilter("ignore", RuntimeWarning)
            worst_rhat = np.nan
            if n_chains >= 2:  # ArviZ's R-hat needs two chains (it logs and returns nan)
                rhat = az.rhat(idata, var_names=var_names)
                worst_rhat = max((float(np.nanmax(rhat[v].values)) for v in rhat.data_vars),
                                 default=np.nan)
            ess = az.ess(idata, var_names=var_names, method="bulk")
            worst_ess = min((float(np.nanmin(ess[v].values)) for v in ess.data_vars),
                            default=np.nan)
        stuck = _stuck(post, var_names)
        if stuck:
            problems.append(f"draws of {', '.join(stuck)} are constant within a chain: the "
                            "sampler did not move (every proposal rejected)")
        if worst_rhat > RHAT_MAX:
            problems.append(f"R-hat is {worst_rhat:.3f} (> {RHAT_MAX}): chains disagree; run "
                            "longer or reparameterise")
        if worst_ess < ESS_MIN:
            problems.append(f"bulk ESS is {worst_ess:.0f} (< {ESS_MIN}) with {n_chains} "
                            f"chain(s) of {n_draws} draws: draw more samples")
    stats = getattr(idata, "sample_stats", None)
    if stats is not None and "diverging" in stats:
        n_div = int(stats["diverging"].values.sum())
        if n_div:
            problems.append(f"{n_div} divergent transitions: raise target_accept or "
                            "reparameterise")
    if stats is not None and "energy" in stats and n_draws >= 4:
        e_bfmi = bfmi(idata)
        if np.nanmin(e_bfmi) < BFMI_MIN:
            problems.append(f"E-BFMI is {float(np.nanmin(e_bfmi)):.2f} (< {BFMI_MIN}) in a chain:"
                            " the momentum resampling explores the energy poorly")
    capped = _capped_trees(idata)
    if capped is not None and capped[0] > TREE_DEPTH_SHARE * capped[1]:
        n, total, depth = capped
        problems.append(f"{n} of {total} NUTS draws ran to the maximum tree depth ({depth}, "
                        f"{2 ** depth - 1} leapfrog steps): their trajectories were cut short, "
                        "so the draws are correlated and slow; the posterior is hard to "
                        "traverse (reparameterise or simplify the model), or raise "
                        "max_tree_depth (each level doubles the cost of a draw)")
    return problems


def _stuck(post, var_names) -> list[str]:
    """The variables of ``post`` (an ArviZ posterior group) with a component that a chain
    never moved: constant within a chain although it varies across the posterior, or
    constant in a chain where every component of every variable is (a chain that rejected
    every proposal, which also catches a lone stuck chain).

    A component constant in every draw of every chain while others vary (a normalisation
    pinned by construction, e.g. ``r[:, 0] = 0``) is not flagged: it has nothing to explore.
    ArviZ gives constant draws a large ESS, so this is checked explicitly."""
    names = [v for v in var_names if v in post]
    if not names:
        return []
    draws = {v: post[v].transpose("chain", "draw", ...).values for v in names}
    within = {v: (x.max(1) == x.min(1)) for v, x in draws.items()}        # (chain, ...)
    frozen = np.logical_and.reduce([w.reshape(w.shape[0], -1).all(1)
                                    for w in within.values()])             # (chain,)
    out = []
    for v, x in draws.items():
        varies = x.max((0, 1)) != x.min((0, 1))                            # (...)
        flags = within[v] & (varies | frozen.reshape((-1,) + (1,) * varies.ndim))
        if flags.any():
            out.append(v)
    return out


def _capped_trees(idata) -> tuple[int, int, int] | None:
    """``(draws whose tree ran to the cap, draws, max_tree_depth)`` of a NUTS posterior whose
    settings (the posterior group's JSON ``settings`` attribute) record ``max_tree_depth``, or
    None. A tree at the cap made every doubling: ``2 ** depth - 1`` leapfrog steps."""
    stats = getattr(idata, "sample_stats", None)
    if stats is None or "n_steps" not in stats:
        return None
    try:
        depth = int(json.loads(idata.posterior.attrs["settings"])["max_tree_depth"])
    except (KeyError, TypeError, ValueError):
        return None
    steps = np.asarray(stats["n_steps"].values)
    return int((steps >= 2 ** depth - 1).sum()), int(steps.size), depth


def check_convergence(idata, var_names, strict: bool = False) -> list[str]:
    """Warn with :class:`InferenceWarning` (or raise :class:`ConvergenceError` when ``strict``)
    for each convergence problem; returns the list of problems."""
    problems = convergence_problems(idata, var_names)
    if problems:
        message = "MCMC convergence problems:\n- " + "\n- ".join(problems)
        if strict:
            raise ConvergenceError(message)
        warnings.warn(message, InferenceWarning, stacklevel=3)
    return problems
