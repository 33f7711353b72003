r"""Exact first and second derivatives of the discounted soft-optimal policy with respect to
reward parameters: the implicit function theorem on the Bellman fixed point, one factorisation.

For a reward ``r(theta): (S, A)`` with Jacobian ``R1 = dr/dtheta: (S, A, d)`` and second
derivatives ``R2: (S, A, d, d)`` (zero for a reward linear in theta), the soft fixed point
``V = logsumexp_a Q``, ``Q = r + gamma E[V(s')]``, ``pi = softmax_a Q`` satisfies::

    M dV  = sum_a pi(a|s) R1(s, a),          M = I - gamma P_pi                      (S, d)
    d log pi  = dQ - dV,                     dQ = R1 + gamma E[dV(s')]                (S, A, d)
    M d2V = sum_a pi (R2 + d log pi d log pi^T)                                       (S, d, d)
    d2 log pi = d2Q - d2V,                   d2Q = R2 + gamma E[d2V(s')]              (S, A, d, d)

(differentiating ``V = logsumexp Q`` twice: ``d2V = sum_a pi (d2Q + (dQ - dV)(dQ - dV)^T)``).
The log-likelihood of data with state-action counts ``C: (S, A)`` is ``sum C log pi``; its
Hessian ``sum C d2 log pi`` is linear in ``d2V``, so it needs no ``d x d`` solves: with
``m(s) = gamma sum_{s_, a} C(s_, a) P(s | s_, a) - sum_a C(s, a)`` and the adjoint
``lambda = M^{-T} m``::

    H = sum_{s,a} C R2 + sum_{s,a} lambda(s) pi(a|s) (R2 + d log pi d log pi^T).

So a Newton step on the likelihood costs one Bellman solve, ``d`` solves and one transpose
solve with the same factors of ``M``: the analytic derivatives of Rust's NFXP (1987; NFXP
manual 2000), which let an estimator converge in about ten evaluations where a quasi-Newton
method on gradients alone needs thirty and a Hessian by differences another ``4 d`` gradients.

Shapes: leading dims ``(...)`` of ``reward`` are batch (each row its own fixed point and
factors); ``d`` is the number of reward parameters. Everything is computed in float64 (the
solver's precision, see :mod:`bayesirl.planning.newton`) and returned in float64.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from bayesirl.core.mdp import TabularMDP
from bayesirl.planning import newton as _newton
from bayesirl.planning.bellman import SMALL_WORK, soft_backup, torch_threads
from bayesirl.planning.newton import DenseFactor, SparseFactor

__all__ = ["SoftSensitivity", "gram", "soft_sensitivity", "weighted_hessian"]


class SoftSensitivity(NamedTuple):
    """The soft fixed point and its first derivatives (see the module doc).

    ``v (..., S)``, ``dv (..., S, d)`` (its derivatives: ``v + dv @ delta`` is the fixed
    point at ``theta + delta`` to first order, a warm start), ``log_policy (..., S, A)``,
    ``dlog_policy (..., S, A, d)`` (the derivatives of ``log pi`` along the reward's
    Jacobian); ``factor``: the factors of ``I - gamma P_pi`` at ``v`` (batch rows flattened),
    reused by :func:`weighted_hessian`; ``num_iters``: the solver's sweeps plus Newton
    steps."""

    v: torch.Tensor
    dv: torch.Tensor
    log_policy: torch.Tensor
    dlog_policy: torch.Tensor
    factor: DenseFactor | SparseFactor
    num_iters: int


def _expect_columns(mdp: TabularMDP, x: torch.Tensor) -> torch.Tensor:
    """``E[x(s') | s, a]`` for every column of ``x: (B, S, k)``: ``(B, S, A, k)``."""
    return mdp.expected_next(x.transpose(-1, -2)).movedim(-3, -1)


def soft_sensitivity(mdp: TabularMDP, reward: torch.Tensor, reward_jacobian: torch.Tensor,
                     v0: torch.Tensor | None = None, tol: float = 1e-10,
                     max_iters: int = 100) -> SoftSensitivity:
    """The discounted soft fixed point of ``reward`` and ``d log pi / d theta``.

    Args:
        mdp: a discounted :class:`~bayesirl.core.mdp.TabularMDP` (``discount < 1``).
        reward: ``(..., S, A)``, the reward at theta (the rationality already applied).
        reward_jacobian: ``(..., S, A, d)`` or ``(S, A, d)``, ``dr / dtheta``.
        v0: ``(..., S)`` warm start of the fixed point (e.g. the previous Newton iterate's
            :attr:`SoftSensitivity.v`), or None for a cold start.
        tol, max_iters: those of the Newton-Kantorovich solver,
            :func:`~bayesirl.planning.newton.newton_fixed_point`.

    Raises:
        ValueError: a finite-horizon MDP, or shapes that do not match.
        FloatingPointError: the fixed point did not converge (a non-finite reward, or
            ``max_iters`` too small).
    """
    if mdp.finite_horizon:
        raise ValueError("soft_sensitivity needs a discounted MDP (this one has horizon "
                         f"{mdp.horizon}); finite-horizon derivatives come from autograd")
    S, A = mdp.n_states, mdp.n_actions
    if reward.dim() < 2 or tuple(reward.shape[-2:]) != (S, A):
        raise ValueError(f"reward must have shape (..., {S}, {A}), got {tuple(reward.shape)}")
    if reward_jacobian.dim() < 3 or tuple(reward_jacobian.shape[-3:-1]) != (S, A):
        raise ValueError(f"reward_jacobian must have shape (..., {S}, {A}, d), got "
                         f"{tuple(reward_jacobian.shape)}")
    batch = reward.shape[:-2]
    d = reward_jacobian.shape[-1]
    gamma = float(mdp.discount)
    mdp64 = mdp if mdp.dtype == torch.float64 else mdp.to(dtype=torch.float64)
    r = reward.detach().to(torch.float64).reshape(-1, S, A)
    B = r.shape[0]
    R1 = reward_jacobian.detach().to(torch.float64).expand(*batch, S, A, d).reshape(B, S, A, d)
    threads = 1 if B * S * A * mdp.successors.shape[-1] <= SMALL_WORK else None
    with torch_threads(threads), torch.no_grad():
        res = _newton.newton_fixed_point(
            r, mdp64.successors, mdp64.transition_probs, gamma, soft_backup,
            None if v0 is None else v0.reshape(B, S), tol, max_iters,
            expect=mdp64.expected_next)
        if not res.converged:
            raise FloatingPointError(
                f"the soft fixed point did not converge (residual {res.residual:.3g} after "
                f"{res.num_iters} iterations): a non-finite reward, or raise max_iters")
        v, log_pi = res.v, res.log_policy
        pi = log_pi.exp()
        factor = _newton.factorize(mdp64.successors, mdp64.transition_probs, pi, gamma)
        dv = factor.solve_columns((pi.unsqueeze(-1) * R1).sum(-2))                  # (B, S, d)
        dlog_pi = R1 + gamma * _expect_columns(mdp64, dv) - dv.unsqueeze(-2)         # (B,S,A,d)
    return SoftSensitivity(v.reshape(*batch, S), dv.reshape(*batch, S, d),
                           log_pi.reshape(*batch, S, A),
                           dlog_pi.reshape(*batch, S, A, d), factor, res.num_iters)


def gram(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``sum_{s,a} w(s, a) g(s, a) g(s, a)^T``: ``w (B, S, A)``, ``g (B, S, A, d)`` ->
    ``(B, d, d)``, as one batched matrix product (a three-operand einsum would plan its
    contraction order anew on every call, which costs more than the product here)."""
    B, S, A, d = g.shape
    flat = g.reshape(B, S * A, d)
    return (flat * w.reshape(B, S * A, 1)).transpose(-1, -2) @ flat


def weighted_hessian(mdp: TabularMDP, sens: SoftSensitivity, weights: torch.Tensor,
                     reward_hessian: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_{s,a} weights(s, a) d2 log pi(a|s) / dtheta2``: ``(..., d, d)``.

    ``weights: (..., S, A)`` (or ``(S, A)``), e.g. the state-action counts of demonstrations,
    so that the result is the Hessian of their log-likelihood ``sum weights log pi``;
    ``reward_hessian: (..., S, A, d, d)`` or None (a reward linear in theta). One transpose
    solve with ``sens.factor`` (see the module doc); symmetric by construction.
    """
    S, A = mdp.n_states, mdp.n_actions
    g = sens.dlog_policy
    batch, d = g.shape[:-3], g.shape[-1]
    B = math.prod(batch)
    gamma = float(mdp.discount)
    mdp64 = mdp if mdp.dtype == torch.float64 else mdp.to(dtype=torch.float64)
    w = weights.detach().to(torch.float64).expand(*batch, S, A).reshape(B, S, A)
    g = g.reshape(B, S, A, d)
    pi = sens.log_policy.reshape(B, S, A).exp()
    with torch.no_grad():
        m = gamma * mdp64.push(w) - w.sum(-1)                                          # (B, S)
        lam = sens.factor.solve_transpose(m)                                           # (B, S)
        lp = lam.unsqueeze(-1) * pi                                                    # (B, S, A)
        H = gram(lp, g)
        if reward_hessian is not None:
            R2 = reward_hessian.detach().to(torch.float64).expand(*batch, S, A, d, d)
            H = H + torch.einsum("bsa,bsakl->bkl", w + lp, R2.reshape(B, S, A, d, d))
    H = 0.5 * (H + H.transpose(-1, -2))
    return H.reshape(*batch, d, d)

