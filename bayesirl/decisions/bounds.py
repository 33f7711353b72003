r"""High-confidence bounds on a policy's loss under reward uncertainty.

Brown & Niekum, "Efficient probabilistic performance bounds for inverse reinforcement learning"
(AAAI 2018): for posterior draws ``R_1..R_n`` the expected value difference of an evaluation
policy ``pi``,

    EVD_i = V*_{R_i} - V^pi_{R_i}        (values from mdp.initial),

is a sample from the posterior distribution of the loss of ``pi``. Its ``alpha``-quantile (the
``alpha``-value at risk) is bounded with confidence ``1 - delta`` by an order statistic: if ``N``
of the ``n`` i.i.d. draws fall below the true quantile ``q_alpha``, ``N ~ Binomial(n, alpha)``
and ``EVD_(k) < q_alpha`` exactly when ``N >= k``; so ``EVD_(k)`` with the smallest ``k`` such
that ``BinomCDF(k - 1; n, alpha) >= 1 - delta`` is at least ``q_alpha`` with probability
``>= 1 - delta`` (Brown & Niekum, Theorem 1). Since the posterior itself puts mass ``>= alpha``
on ``EVD <= q_alpha``, the true loss falls below the bound with (Bayesian) probability about
``alpha`` or more.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from scipy.stats import binom

from bayesirl._validation import check_probability
from bayesirl.core.mdp import TabularMDP, check_mdp
from bayesirl.decisions._inputs import policy_probs, reward_draws
from bayesirl.planning.bellman import occupancy, value_iteration
from bayesirl.planning.buffers import DRAWS_PER_PLAN
from bayesirl.posterior.reward_posterior import require_draws

__all__ = ["VaRBound", "value_at_risk_bound"]


class VaRBound(NamedTuple):
    """Result of :func:`value_at_risk_bound`.

    Attributes:
        bound: ``(1 - delta)``-confidence upper bound on the ``alpha``-VaR of the EVD
            (``inf`` when there are too few draws: ``n < log(delta) / log(alpha)``).
        var: the empirical ``alpha``-VaR, the ``ceil(alpha * n)``-th smallest EVD.
        evd: ``(n,)`` the expected value difference under every draw.
        order: the 1-based order statistic ``k`` used for ``bound`` (None when ``bound`` is
            ``inf``).
    """

    bound: float
    var: float
    evd: torch.Tensor
    order: int | None


def optimal_values(mdp: TabularMDP, R: torch.Tensor) -> torch.Tensor:
    """``(D,)`` optimal expected return ``V*_{R_i}`` from ``mdp.initial`` for draws ``R``."""
    out = []
    with torch.no_grad():
        for i in range(0, R.shape[0], DRAWS_PER_PLAN):
            v = value_iteration(mdp, R[i:i + DRAWS_PER_PLAN]).v
            out.append((v[:, 0] if mdp.finite_horizon else v) @ mdp.initial)
    return torch.cat(out)


def order_statistic(n: int, alpha: float, delta: float) -> int | None:
    """Smallest 1-based ``k`` with ``BinomCDF(k - 1; n, alpha) >= 1 - delta`` (None if none)."""
    ks = torch.arange(1, n + 1).numpy()
    ok = binom.cdf(ks - 1, n, alpha) >= 1 - delta
    return int(ks[ok][0]) if ok.any() else None


def value_at_risk_bound(mdp: TabularMDP, posterior, policy, alpha: float = 0.95,
                        delta: float = 0.05) -> VaRBound:
    """Upper bound on the ``alpha``-value at risk of ``policy``'s expected value difference.

    Args:
        mdp: the MDP; values are expected (discounted, or summed over the horizon) returns from
            ``mdp.initial``.
        posterior: a :class:`~bayesirl.RewardPosterior` or reward draws ``(n, S)`` /
            ``(n, S, A)``. The bound assumes the draws are independent posterior samples:
            thin MCMC chains to about their effective sample size first. At least 2 draws (a
            ValueError for one, e.g. a MAP fit: a point estimate is no sample of the loss).
        policy: the evaluation policy, a :class:`~bayesirl.Plan` or probabilities ``(S, A)``
            (discounted) / ``(T, S, A)`` (finite horizon).
        alpha: quantile level in (0, 1).
        delta: the bound fails with probability at most ``delta``, in (0, 1).

    Returns:
        :class:`VaRBound` ``(bound, var, evd, order)``.
    """
    mdp = check_mdp(mdp)
    alpha = check_probability("alpha", alpha, open_low=True, open_high=True)
    delta = check_probability("delta", delta, open_low=True, open_high=True)
    R, _ = reward_draws(mdp, posterior)
    require_draws(R.shape[0], "value_at_risk_bound", method=getattr(posterior, "method", None))
    pi = policy_probs(mdp, policy)
    with torch.no_grad():
        evd = optimal_values(mdp, R) - torch.einsum("dsa,sa->d", R, occupancy(mdp, pi))
    n = evd.numel()
    ordered = torch.sort(evd).values
    var = float(ordered[max(math.ceil(alpha * n - 1e-9), 1) - 1])
    k = order_statistic(n, alpha, delta)
    return VaRBound(math.inf if k is None else float(ordered[k - 1]), var, evd, k)
