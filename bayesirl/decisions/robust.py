r"""Policies under reward uncertainty: BROIL and the Bayes-optimal policy.

BROIL (Brown, Niekum & Petrik, "Bayesian robust optimization for imitation learning",
NeurIPS 2020) chooses an occupancy measure ``u`` that maximises

    lam * E_i[psi_i(u)] + (1 - lam) * CVaR_alpha[psi_i(u)],   psi_i(u) = R_i . u - b_i,

over posterior reward draws ``R_i`` with probabilities ``p_i``; ``b_i`` is the return of a
baseline under ``R_i`` (0 without one, so ``psi`` is the return; the expert's return gives the
regret form of the paper). ``CVaR_alpha`` is the mean of the worst ``1 - alpha`` fraction of
``psi`` (the lower tail: returns are to be maximised). With the Rockafellar-Uryasev variables
``sigma`` (free) and ``z_i >= 0``,

    CVaR_alpha[psi] = max_sigma  sigma - 1 / (1 - alpha) * sum_i p_i (sigma - psi_i)_+,

so the whole problem is one linear program in ``(u, sigma, z)``: ``z_i >= sigma - psi_i(u)``
plus the Bellman flow constraints that make ``u`` an occupancy measure,

- discounted: ``sum_a u(s, a) - gamma sum_{s', a'} P(s | s', a') u(s', a') = mu(s)``;
- finite horizon (time-indexed ``u_t``): ``sum_a u_0(s, a) = mu(s)`` and
  ``sum_a u_t(s, a) = sum_{s', a'} P(s | s', a') u_{t-1}(s', a')`` for ``t >= 1``.

It is solved with HiGHS (``scipy.optimize.linprog(method="highs")``) on scipy.sparse matrices,
in its dual form (:func:`bayesirl.decisions._solvers.solve_lp`: the transition block has
``S * A * K`` entries per step, each draw ``S * A`` more, or ``r`` for a rank-r reward matrix
such as a linear reward in r features); ``method="columns"`` generates policies instead
(:func:`bayesirl.decisions._solvers.solve_columns`), much faster for long horizons with low-rank
rewards. The policy is ``u`` normalised per state (per step and state for a finite horizon),
uniform where a state is never visited. Every occupancy is a mixture of deterministic policies'
occupancies, and the objective is concave in ``u``, so the optimum can be a stochastic policy
(a hedge).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from bayesirl._validation import as_tensor, check_finite, check_probability, is_posterior
from bayesirl.core.mdp import TabularMDP, check_mdp
from bayesirl.decisions._inputs import policy_probs, reward_draws
from bayesirl.decisions._solvers import solve_columns, solve_lp
from bayesirl.planning.bellman import Plan, occupancy, value_iteration

__all__ = ["EXPERT_MASS_RTOL", "METHODS", "RobustPolicy", "bayes_optimal_policy", "cvar",
           "robust_policy"]

METHODS = ("lp", "columns")

#: The largest share of a policy's occupancy mass (``1 / (1 - gamma)``, or the horizon ``T``)
#: that the demonstrations may leave uncovered for ``baseline="expert"``. The regret
#: ``R_i . u - R_i . u_expert`` compares occupancies; where the demonstrations' empirical
#: occupancy has less mass than ``u``, a constant offset ``c`` of a draw (which a soft-optimal
#: likelihood cannot identify) shifts that draw's regret by ``c`` times the missing mass, so the
#: robust policy would follow offsets that mean nothing. With at most 1 % missing, the shift is
#: at most 1 % of the offset's effect on a return.
EXPERT_MASS_RTOL = 0.01


class RobustPolicy(NamedTuple):
    """Result of :func:`robust_policy`.

    Attributes:
        policy: ``(S, A)`` stationary (discounted) or ``(T, S, A)`` time-indexed action
            probabilities.
        occupancy: the optimal occupancy measure, ``(S, A)`` discounted visits (mass
            ``1 / (1 - gamma)``) or ``(T, S, A)`` per-step visits (each step of mass 1).
        expected_return: ``E_i[R_i . u]``, the posterior expected return (no baseline).
        cvar: ``CVaR_alpha`` of ``psi_i = R_i . u - b_i`` (the return minus the baseline's).
        objective: ``lam * E_i[psi_i] + (1 - lam) * cvar``, the maximised BROIL objective.
        returns: ``(D,)`` the return ``R_i . u`` under every draw.
    """

    policy: torch.Tensor
    occupancy: torch.Tensor
    expected_return: float
    cvar: float
    objective: float
    returns: torch.Tensor


def cvar(values, alpha: float, weights=None) -> float:
    """Lower-tail conditional value at risk: the mean of the worst ``1 - alpha`` of ``values``.

    ``values: (D,)`` finite numbers (a nan or inf is refused, naming its index: it would make
    the tail mean meaningless) with probabilities ``weights`` (default uniform); an atom
    straddling the ``1 - alpha`` quantile counts with the part of its weight inside the tail,
    so this equals ``max_sigma sigma - E[(sigma - X)_+] / (1 - alpha)`` exactly.
    """
    alpha = check_probability("alpha", alpha, open_low=True, open_high=True)
    x = as_tensor("values", values, dtype=torch.float64).detach().cpu()
    if x.dim() > 1:
        raise ValueError(f"values must have shape (D,), one value per draw, got "
                         f"{tuple(x.shape)}")
    x = x.reshape(-1)
    check_finite("values", x)
    p = torch.ones_like(x) if weights is None else as_tensor(
        "weights", weights, dtype=torch.float64).detach().cpu()
    if p.shape != x.shape or not torch.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"weights must be {x.numel()} non-negative numbers with a positive sum "
                         f"(one per value), got shape {tuple(p.shape)}")
    p = p / p.sum()
    order = torch.argsort(x)
    x, p = x[order], p[order]
    tail = 1.0 - alpha
    take = torch.minimum(p, (tail - (torch.cumsum(p, 0) - p)).clamp(min=0))
    return float((take * x).sum() / tail)


def _baseline_returns(mdp, posterior, baseline, R) -> torch.Tensor:
    """``b: (D,)``, the baseline's return under every draw (zeros for ``None``)."""
    if baseline is None:
        return torch.zeros(R.shape[0], dtype=R.dtype, device=R.device)
    if isinstance(baseline, str):
        if baseline != "expert":
            raise ValueError(f"baseline is {baseline!r}, expected None, 'expert', a Plan or a "
                             "policy/occupancy tensor")
        demos = getattr(posterior, "demos", None) if is_posterior(posterior) else None
        if demos is None:
            raise ValueError("baseline='expert' needs a RewardPosterior with demos (the "
                             "posterior has none); pass the expert's policy or occupancy")
        occ = _expert_occupancy(mdp, demos)
    elif isinstance(baseline, Plan):
        occ = occupancy(mdp, policy_probs(mdp, baseline, "baseline"))
    else:
        occ = _tensor_baseline(mdp, baseline)
    return torch.einsum("dsa,sa->d", R, occ)


def _expert_occupancy(mdp, demos) -> torch.Tensor:
    """The demonstrations' empirical occupancy ``(S, A)`` (visits per demonstration, step t
    weighted by ``gamma**t``; undiscounted summed over steps for a finite horizon).

    It stands for the expert's occupancy only when it has (nearly) a policy occupancy's mass,
    ``1 / (1 - gamma)`` or the horizon ``T``: truncated demonstrations miss the expert's later
    steps, and a regret against them is not a regret (see :data:`EXPERT_MASS_RTOL`). Missing
    more than that share raises a ValueError saying how much is missing and what to pass
    instead. The occupancy is not rescaled to full mass: that would assume the unseen steps
    visit what the first ones did, which is wrong whenever the expert's start is not where it
    stays (a chain walked from one end).
    """
    demos.validate(mdp)
    S, A = mdp.n_states, mdp.n_actions
    occ = demos.counts(S, A, mdp.discount, dtype=mdp.dtype).to(mdp.device) / demos.n
    full = float(mdp.horizon) if mdp.finite_horizon else 1.0 / (1.0 - mdp.discount)
    have = float(occ.sum())
    missing = full - have
    if missing <= EXPERT_MASS_RTOL * full:
        return occ
    lengths = demos.lengths
    span = (f"length {int(lengths.min())}" if int(lengths.min()) == int(lengths.max()) else
            f"lengths {int(lengths.min())} to {int(lengths.max())}")
    instead = ("pass the expert's policy (a Plan, or an (S, A) policy tensor) or its occupancy "
               "measure as baseline instead")
    if mdp.finite_horizon:
        raise ValueError(
            f"baseline='expert' needs demonstrations of the MDP's horizon {mdp.horizon}: the "
            f"demonstrations ({span}) cover {have:.4g} of the expert's {mdp.horizon} steps "
            f"on average, {missing / full:.1%} of its occupancy missing (at most "
            f"{EXPERT_MASS_RTOL:.0%} allowed), so the regret would compare a truncated expert "
            f"with whole policies; use demonstrations of {mdp.horizon} steps, or {instead}")
    gamma = mdp.discount
    need = math.ceil(math.log(EXPERT_MASS_RTOL) / math.log(gamma))
    raise ValueError(
        f"baseline='expert': the demonstrations ({span}) have a discounted occupancy of mass "
        f"{have:.4g} per demonstration, but a policy's has 1 / (1 - gamma) = {full:.4g} at "
        f"gamma={gamma:g}: {missing / full:.1%} of the expert's discounted occupancy is "
        f"missing (at most {EXPERT_MASS_RTOL:.0%} allowed), so per-draw reward offsets, which "
        f"the likelihood cannot identify, would change the regret; demonstrations of at "
        f"least {need} steps stand for the expert at this discount, or {instead}")


def _tensor_baseline(mdp, baseline) -> torch.Tensor:
    """A tensor baseline: a policy if every row sums to 1, otherwise an occupancy measure."""
    S, A = mdp.n_states, mdp.n_actions
    try:
        b = torch.as_tensor(baseline, dtype=mdp.dtype, device=mdp.device).detach()
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"baseline must be None, 'expert', a Plan or a tensor, got "
                        f"{type(baseline).__name__}") from e
    shapes = [(S, A)] + ([(mdp.horizon, S, A)] if mdp.finite_horizon else [])
    if tuple(b.shape) not in shapes or not torch.isfinite(b).all() or (b < 0).any():
        raise ValueError(f"baseline tensor must be non-negative and finite with shape "
                         f"{' or '.join(map(str, shapes))}, got shape {tuple(b.shape)}")
    if ((b.sum(-1) - 1).abs() <= 1e-6).all():                      # a policy
        if mdp.finite_horizon and b.dim() == 2:
            b = b.expand(mdp.horizon, S, A)
        return occupancy(mdp, policy_probs(mdp, b, "baseline"))
    mass = mdp.horizon if mdp.finite_horizon else 1.0 / (1.0 - mdp.discount)
    if abs(b.sum().item() - mass) > 1e-6 * mass:
        raise ValueError(f"baseline tensor is neither a policy (rows summing to 1) nor an "
                         f"occupancy measure (total mass {mass:.6g}): its total is "
                         f"{b.sum().item():.6g}")
    return b.sum(0) if b.dim() == 3 else b


def _policy_from_occupancy(u: torch.Tensor) -> torch.Tensor:
    """Normalise ``u (..., S, A)`` over actions; uniform where a state is never visited."""
    visits = u.sum(-1, keepdim=True)
    seen = visits > 1e-12 * max(float(u.sum()), 1.0)
    uniform = torch.full_like(u, 1.0 / u.shape[-1])
    return torch.where(seen, u / visits.clamp(min=1e-300), uniform)


def robust_policy(mdp: TabularMDP, posterior, alpha: float = 0.95, lam: float = 0.5,
                  baseline=None, weights=None, method: str = "lp") -> RobustPolicy:
    """The BROIL policy: best trade-off of expected return and its lower-tail CVaR.

    Args:
        mdp: the MDP (its horizon or discount decides the flow constraints).
        posterior: a :class:`~bayesirl.RewardPosterior` (draws ``posterior.reward()``) or reward
            draws ``(D, S)`` / ``(D, S, A)``.
        alpha: CVaR level in (0, 1); ``1 - alpha`` is the tail averaged (``alpha -> 1``: the
            worst draw, max-min; small alpha: close to the mean).
        lam: weight in [0, 1] of the expected value; ``lam = 1`` maximises the posterior mean
            return (:func:`bayes_optimal_policy`), ``lam = 0`` the CVaR alone.
        baseline: what ``psi`` subtracts from each draw's return: ``None`` (nothing),
            ``"expert"`` (the demonstrations' empirical occupancy from ``posterior.demos``, step
            t weighted by ``gamma**t``: regret against the expert; refused when the
            demonstrations miss more than
            :data:`~bayesirl.decisions.robust.EXPERT_MASS_RTOL` of a policy's occupancy mass,
            i.e. are shorter than the horizon or too short for the discount), a
            :class:`Plan`, or a tensor:
            a policy (rows summing to 1; ``(S, A)`` or ``(T, S, A)``) or an occupancy measure
            (``(S, A)``, or ``(T, S, A)`` per step, with the MDP's total mass).
        weights: ``(D,)`` probabilities of the draws (e.g. a grid posterior); default uniform.
        method: ``"lp"`` (one sparse LP) or ``"columns"`` (column generation over policies:
            one value iteration per policy, tiny master LPs; best for long horizons and
            low-rank rewards, slow for full-rank tabular draws). Both reach the same optimum
            (to about 1e-9 relative).

    Returns:
        :class:`RobustPolicy`. Scalars are Python floats.
    """
    mdp = check_mdp(mdp)
    alpha = check_probability("alpha", alpha, open_low=True, open_high=True)
    lam = check_probability("lam", lam)
    if method not in METHODS:
        raise ValueError(f"method is {method!r}, expected one of {METHODS}")
    R, p = reward_draws(mdp, posterior, weights)
    b = _baseline_returns(mdp, posterior, baseline, R)
    u = (solve_lp if method == "lp" else solve_columns)(mdp, R, p, b, alpha, lam)
    total = u.sum(0) if mdp.finite_horizon else u
    returns = torch.einsum("dsa,sa->d", R, total)
    psi = returns - b
    tail = cvar(psi.cpu(), alpha, p.cpu())
    return RobustPolicy(_policy_from_occupancy(u), u, float(p @ returns), tail,
                        lam * float(p @ psi) + (1 - lam) * tail, returns)


def bayes_optimal_policy(mdp: TabularMDP, posterior, weights=None) -> Plan:
    """The optimal policy for the posterior-mean reward.

    Returns are linear in the reward, so this policy maximises the posterior expected return
    (the ``lam = 1`` end of :func:`robust_policy`). Hard :func:`~bayesirl.value_iteration`
    (ties split uniformly); ``posterior`` and ``weights`` as in :func:`robust_policy`.
    """
    mdp = check_mdp(mdp)
    R, p = reward_draws(mdp, posterior, weights)
    return value_iteration(mdp, torch.einsum("d,dsa->sa", p, R))
