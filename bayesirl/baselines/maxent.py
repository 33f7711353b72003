"""Maximum entropy IRL over paths (Ziebart, Maas, Bagnell and Dey 2008)."""

from __future__ import annotations

import torch

from bayesirl._validation import check_int
from bayesirl.baselines.mce import DEFAULT_L2, fit
from bayesirl.baselines.result import IRLResult
from bayesirl.core.demos import Demonstrations
from bayesirl.core.mdp import TabularMDP

__all__ = ["maxent_irl"]


def path_dual(mdp, reward, counts, start):
    """``(L, occupancy (S, A))`` of the path model ``P(tau) ∝ exp(r(tau)) prod_t P(s'|s, a)``.

    Backward pass (the partition function, in log space, non-causal)::

        W_t(s, a) = log sum_s' P(s'|s, a) exp(V_{t+1}(s')),   V_T = 0,
        V_t(s)    = logsumexp_a [r(s, a) + W_t(s, a)],

    so ``pi_t(a|s) = exp(r + W_t - V_t)``. Forward pass: expected visitation under the path
    distribution, whose next-state law is tilted towards high-value successors,
    ``P~_t(s'|s, a) = P(s'|s, a) exp(V_{t+1}(s') - W_t(s, a))``. ``L = E_start[V_0] - <counts, r>``
    and its gradient in ``r`` is ``occupancy - counts``. Works on the sparse ``(S, A, K)`` tables.
    """
    S, T = mdp.n_states, mdp.horizon
    succ = mdp.successors
    log_p = mdp.transition_probs.log()  # -inf on padding entries
    with torch.no_grad():
        v = reward.new_zeros(S)
        log_pi, log_tilt = [None] * T, [None] * T
        for t in reversed(range(T)):
            z = log_p + v[succ]                       # (S, A, K)
            w = torch.logsumexp(z, -1)                # (S, A)
            q = reward + w
            v = torch.logsumexp(q, -1)
            log_pi[t], log_tilt[t] = q - v[:, None], z - w[..., None]
        d, occ = start, torch.zeros_like(reward)
        for t in range(T):
            x = d[:, None] * log_pi[t].exp()
            occ += x
            d = torch.zeros_like(d).index_add_(0, succ.reshape(-1),
                                               (x[..., None] * log_tilt[t].exp()).reshape(-1))
        return float(start @ v - (counts * reward).sum()), occ


def maxent_irl(mdp, demos, *, horizon: int | None = None, l2: float = DEFAULT_L2,
               initial: str = "empirical", method: str = "lbfgs", max_iters: int = 500,
               tol: float = 1e-6, lr: float = 0.05, progress: bool = False) -> IRLResult:
    """Maximum entropy IRL (Ziebart et al. 2008): maximum likelihood in the path model
    ``P(tau | theta) ∝ exp(sum_t phi(s_t, a_t) . theta) prod_t P(s_{t+1} | s_t, a_t)``.

    The loss is the negative log-likelihood per demonstration (conditioned on its first state
    with ``initial="empirical"``), ``E_{s_0}[log Z_{s_0}] - theta . mu_E (+ l2/2 |theta|^2)``,
    where ``log Z`` comes from the *non-causal* backward pass (see :func:`path_dual`):
    ``V(s) = logsumexp_a [r(s, a) + log E_{s'}[exp V(s')]]``. The gradient is empirical minus
    expected feature counts, the expectation taken by the forward pass over the path
    distribution. MCE IRL (:func:`~bayesirl.baselines.mce_irl`) backs up ``E_{s'}[V(s')]``
    instead; the two coincide on deterministic dynamics, while under stochastic dynamics MaxEnt
    prefers paths through lucky transitions (it lets the agent choose its outcomes).

    Ziebart et al. (2008, Algorithm 1) propagate the local action probabilities through the
    true dynamics in the forward pass; that is exact on deterministic dynamics but is not the
    gradient of the likelihood above under stochastic dynamics. Here the forward pass is exact,
    so L-BFGS applies.

    The model is finite-horizon and undiscounted: a discounted MDP is solved with ``horizon``
    steps (default: the demonstrations' length) and undiscounted counts.

    Args:
        mdp, demos: as in :func:`~bayesirl.baselines.mce_irl`.
        horizon: number of steps T; default ``mdp.horizon``, or for a discounted MDP the
            demonstrations' padded length. Demonstrations are cut to T steps and must all have
            at least T.
        l2, initial, method, max_iters, tol, lr, progress: as in
            :func:`~bayesirl.baselines.mce_irl`, with the same default ``l2 = 0.01`` (the
            same unbounded dual on unvisited indicator features; the sign convention is there
            too: ``r = phi . theta``).

    Returns:
        :class:`IRLResult` like :func:`~bayesirl.baselines.mce_irl`.
    """
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")
    if isinstance(demos, Demonstrations) and (horizon is not None or not mdp.finite_horizon):
        if horizon is None:
            horizon = demos.max_length
        horizon = check_int("horizon", horizon)
        if int(demos.lengths.min()) < horizon:
            i = int((demos.lengths < horizon).nonzero()[0, 0])
            raise ValueError(f"demos: demonstration {i} has length {int(demos.lengths[i])}, "
                             f"expected at least horizon={horizon} steps")
        mdp = mdp.replace(horizon=horizon)
        demos = Demonstrations(demos.states[:, :horizon], demos.actions[:, :horizon],
                               demos.mask[:, :horizon])
    return fit(mdp, demos, path_dual, "MaxEnt IRL", l2=l2, initial=initial, method=method,
               max_iters=max_iters, tol=tol, lr=lr, progress=progress)
