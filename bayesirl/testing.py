r"""Oracles for Bayesian IRL on tiny problems, reusable by tests and users.

Brute force is the reference (STYLE.md point 4). This module gives

- :func:`tiny_chain_mdp`: a 3-state, 2-action chain with 1 or 2 state features, finite-horizon or
  discounted, small enough for exhaustive checks;
- :func:`naive_log_policy` and :func:`loop_log_likelihood`: the expert's policy and the
  per-demonstration log-likelihood by explicit Python loops over ``t, s, a, s'`` and over the
  steps of every demonstration (no batching, no sparse operators);
- :func:`grid_posterior` (from :mod:`bayesirl.inference.quadrature`, re-exported): the exact
  posterior over a 1-d or 2-d parameter (reward weights and, optionally, the rationality) by
  quadrature on a grid, with moments, marginal intervals, the mode, the log evidence and draws
  for simulation-based calibration.

Everything here is plain torch and follows the MDP's dtype; use float64 for exactness.
"""

from __future__ import annotations

import math
import warnings

import torch

from bayesirl.core.demos import Demonstrations, rollouts
from bayesirl.core.mdp import TabularMDP
from bayesirl.inference.quadrature import GridPosterior, grid_posterior
from bayesirl.model.likelihood import (
    action_log_probs,
    check_likelihood,
    check_rationality,
)
from bayesirl.planning.bellman import broadcast_reward

__all__ = [
    "GridPosterior",
    "grid_posterior",
    "loop_log_likelihood",
    "naive_log_policy",
    "simulate_demos",
    "tiny_chain_mdp",
]

#: Default grid points per axis (1-d, 2-d).


# ---------------------------------------------------------------------------- tiny MDPs
def tiny_chain_mdp(horizon: int | None = None, discount: float | None = None,
                   n_features: int = 2, slip: float = 0.2, theta=None,
                   dtype: torch.dtype = torch.float64) -> TabularMDP:
    """A 3-state, 2-action chain ``left - middle - right`` with state features.

    Action 0 ("left") moves one state left with probability ``1 - slip`` and stays put
    otherwise; action 1 ("right") moves right; the ends are walls (the move becomes a stay).
    The initial distribution is uniform. Give ``horizon`` (finite, time-indexed policy) or
    ``discount`` (stationary policy); with neither, ``horizon=3``.

    Features ``(3, n_features)``: ``[[1], [0], [-1]]`` for one feature, ``[[1, 0], [0, 1],
    [0.5, -0.5]]`` for two (no direction ``u`` makes ``phi . u`` constant, so every weight is
    identifiable). ``mdp.reward`` is the true state reward ``phi @ theta``, ``theta`` defaulting
    to ``(1,)`` or ``(1, -0.5)``.
    """
    if horizon is None and discount is None:
        horizon = 3
    if n_features not in (1, 2):
        raise ValueError(f"n_features is {n_features!r}, expected 1 or 2")
    if not (isinstance(slip, (int, float)) and 0 <= slip < 1):
        raise ValueError(f"slip is {slip!r}, expected a number in [0, 1)")
    P = torch.zeros(3, 2, 3, dtype=dtype)
    for s in range(3):
        for a, step in ((0, -1), (1, 1)):
            P[s, a, min(max(s + step, 0), 2)] += 1 - slip
            P[s, a, s] += slip
    phi = (torch.tensor([[1.0], [0.0], [-1.0]], dtype=dtype) if n_features == 1
           else torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]], dtype=dtype))
    if theta is None:
        theta = (1.0,) if n_features == 1 else (1.0, -0.5)
    theta = torch.as_tensor(theta, dtype=dtype)
    if tuple(theta.shape) != (n_features,):
        raise ValueError(f"theta has shape {tuple(theta.shape)}, expected ({n_features},)")
    return TabularMDP.from_dense(
        P, horizon=horizon, discount=discount, features=phi,
        feature_names=("phi0", "phi1")[:n_features], reward=phi @ theta,
        state_names=("left", "middle", "right"), action_names=("left", "right"))


def simulate_demos(mdp: TabularMDP, reward, n: int, seed: int = 0, likelihood: str = "soft",
                   rationality: float = 1.0, length: int | None = None) -> Demonstrations:
    """``n`` demonstrations from the expert of the model: ``pi = exp(action_log_probs(...))``.

    ``reward``: ``(S,)`` or ``(S, A)``; ``length`` defaults to the horizon (required when
    discounted). Sampling uses ``seed`` only.
    """
    with torch.no_grad():
        log_pi = action_log_probs(mdp, torch.as_tensor(reward, dtype=mdp.dtype),
                                  check_likelihood(likelihood), check_rationality(rationality))
    return rollouts(mdp, log_pi.exp(), n, seed=seed, length=length)


# ---------------------------------------------------------------------------- brute force
def naive_log_policy(mdp: TabularMDP, reward, likelihood: str = "soft",
                     rationality: float = 1.0, tol: float = 1e-13,
                     max_iters: int = 100_000) -> torch.Tensor:
    """The expert's ``log pi(a | s)`` by explicit loops over ``t, s, a, s'`` on the dense
    transitions (tiny MDPs only).

    Soft: ``Q_t(s, a) = beta r(s, a) + sum_s' P(s'|s,a) V_{t+1}(s')``,
    ``V_t(s) = log sum_a exp Q_t(s, a)``, ``log pi_t = Q_t - V_t``. Boltzmann: hard ``Q*`` of
    ``r`` (max instead of log-sum-exp), ``log pi = log_softmax(beta Q*)``. Discounted MDPs put
    ``gamma`` before the expectation and iterate until the sup-norm update is below ``tol``.

    Args:
        reward: ``(S,)`` or ``(S, A)`` (no batch dims).

    Returns:
        ``(T, S, A)`` (finite horizon) or ``(S, A)`` (discounted).
    """
    S, A = mdp.n_states, mdp.n_actions
    r = broadcast_reward(mdp, torch.as_tensor(reward, dtype=mdp.dtype)).detach().cpu()
    if r.dim() != 2:
        raise ValueError(f"reward must be (S,) or (S, A) without batch dims, got {tuple(r.shape)}")
    P = mdp.transition_matrix().cpu()
    beta = float(rationality)
    soft = check_likelihood(likelihood) == "soft"
    scale = beta if soft else 1.0
    gamma = 1.0 if mdp.finite_horizon else mdp.discount

    def backup(v_next):
        q = torch.zeros(S, A, dtype=r.dtype)
        for s in range(S):
            for a in range(A):
                ev = sum(P[s, a, s2] * v_next[s2] for s2 in range(S))
                q[s, a] = scale * r[s, a] + gamma * ev
        v = torch.zeros(S, dtype=r.dtype)
        for s in range(S):
            m = max(q[s, a] for a in range(A))
            v[s] = m + math.log(sum(math.exp(q[s, a] - m) for a in range(A))) if soft else m
        return q, v

    def log_pi(q):
        out = torch.zeros(S, A, dtype=r.dtype)
        for s in range(S):
            z = beta if not soft else 1.0
            m = max(z * q[s, a] for a in range(A))
            lse = m + math.log(sum(math.exp(z * q[s, a] - m) for a in range(A)))
            for a in range(A):
                out[s, a] = z * q[s, a] - lse
        return out

    v = torch.zeros(S, dtype=r.dtype)
    if mdp.finite_horizon:
        out = [None] * mdp.horizon
        for t in reversed(range(mdp.horizon)):
            q, v = backup(v)
            out[t] = log_pi(q)
        return torch.stack(out).to(mdp.device)
    for _ in range(max_iters):
        q, v_new = backup(v)
        done = float((v_new - v).abs().max()) < tol
        v = v_new
        if done:
            break
    else:
        warnings.warn(f"naive value iteration did not reach tol {tol} in {max_iters} "
                      "iterations", RuntimeWarning, stacklevel=2)
    q, _ = backup(v)
    return log_pi(q).to(mdp.device)


def loop_log_likelihood(mdp: TabularMDP, demos: Demonstrations,
                        log_policy: torch.Tensor) -> torch.Tensor:
    """Per-demonstration log-likelihood ``(N,)`` by a Python loop over demonstrations and steps:
    ``sum_t log_policy[t, s_t, a_t]`` (finite horizon) or ``log_policy[s_t, a_t]``.

    ``log_policy``: ``(T, S, A)`` or ``(S, A)`` (no batch dims), e.g. from
    :func:`naive_log_policy` or ``soft_value_iteration(...).log_policy``.
    """
    out = torch.zeros(demos.n, dtype=log_policy.dtype)
    for i in range(demos.n):
        total = 0.0
        for t in range(int(demos.lengths[i])):
            s, a = int(demos.states[i, t]), int(demos.actions[i, t])
            lp = log_policy[t, s, a] if mdp.finite_horizon else log_policy[s, a]
            total = total + float(lp)
        out[i] = total
    return out
