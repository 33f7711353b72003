r"""Planning in tabular MDPs: soft and hard value iteration, occupancy, policy evaluation.

Shape contract (rightmost dims; everything to their left is batch and broadcasts):

- ``reward``: ``(..., S, A)``, or a state reward ``(..., S)`` that broadcasts over actions
  (a trailing ``(S, A)`` pair is read as a state-action reward, so with ``A == S`` pass
  ``(..., S, A)`` explicitly);
- finite horizon T (time-indexed policy): ``q``, ``log_policy``: ``(..., T, S, A)``,
  ``v``: ``(..., T, S)``; index 0 is the first decision;
- discounted (stationary policy): ``q``, ``log_policy``: ``(..., S, A)``, ``v``: ``(..., S)``.

Soft value iteration is the maximum causal entropy backup (Ziebart et al. 2010; Levine 2018,
"Reinforcement learning and control as probabilistic inference")::

    Q_t(s, a) = r(s, a) + sum_s' P(s' | s, a) V_{t+1}(s'),
    V_t(s) = tau log sum_a exp(Q_t(s, a) / tau),
    pi_t(a | s) = exp((Q_t(s, a) - V_t(s)) / tau),           V_{T+1} = terminal_reward (default 0),

and for a discount gamma the stationary fixed point with ``gamma`` in front of the expectation.
The discounted fixed point is found without building a graph, by plain iteration (a
gamma-contraction, ~log(tol) / log(gamma) sweeps) or, near gamma = 1, by Newton-Kantorovich
steps (:mod:`bayesirl.planning.newton`; :func:`choose_solver` says which); its gradient comes
from implicit differentiation (an adjoint linear system, iterated or solved with the Newton
factors), so memory does not grow with the iteration count, and it reaches the transition
probabilities too when they require grad (:meth:`TabularMDP.with_probabilities`).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import threading
import warnings

import torch

from bayesirl._validation import (
    as_tensor,
    check_distribution_rows,
    check_finite,
    check_int,
    check_number,
)
from bayesirl.core.mdp import TabularMDP
from bayesirl.planning import buffers as _buffers
from bayesirl.planning import cpu_kernels as _cpu_dp
from bayesirl.planning import newton as _newton

__all__ = [
    "SOLVERS",
    "ConvergenceWarning",
    "Plan",
    "broadcast_reward",
    "choose_solver",
    "clear_warm_starts",
    "feature_expectations",
    "occupancy",
    "policy_value",
    "soft_backup",
    "soft_value_iteration",
    "torch_threads",
    "value_iteration",
]

SOLVERS = ("auto", "iterate", "newton")
NEWTON_MIN_SWEEPS = 500   # "auto" iterates when plain iteration needs fewer sweeps than this
SMALL_WORK = 2**18        # batch * S * A * K at most this: the fixed point runs on one thread


class ConvergenceWarning(UserWarning):
    """A discounted fixed point stopped at ``max_iters`` before reaching its tolerance."""


class Plan:
    """Result of (soft) value iteration.

    Attributes:
        q: ``(..., T, S, A)`` finite horizon, ``(..., S, A)`` discounted. For the soft finite
            horizon it is ``log_policy + v`` computed on first access (a full-size tensor that
            the likelihood never needs), so access it where its gradient is wanted.
        v: ``(..., T, S)`` finite horizon, ``(..., S)`` discounted.
        log_policy: same shape as ``q``; ``-inf`` for actions a hard policy never takes
            (for the hard finite horizon on the CPU, computed on first access).
        num_iters: backups performed (T for a finite horizon).
        residual: sup-norm of the last update of ``v`` (0 for a finite horizon).
    """

    __slots__ = ("_q", "v", "_log_policy", "num_iters", "residual")

    def __init__(self, q: torch.Tensor | None, v: torch.Tensor, log_policy: torch.Tensor | None,
                 num_iters: int, residual: float):
        self._q, self.v, self._log_policy = q, v, log_policy
        self.num_iters, self.residual = num_iters, residual

    @property
    def q(self) -> torch.Tensor:
        if self._q is None:
            self._q = self.log_policy + self.v.unsqueeze(-1)
        return self._q

    @property
    def log_policy(self) -> torch.Tensor:
        if self._log_policy is None:  # a hard plan's greedy policy, not needed by Boltzmann
            self._log_policy = _hard_backup(self._q.detach())[1]
        return self._log_policy

    @property
    def policy(self) -> torch.Tensor:
        """Action probabilities, same shape as ``log_policy``."""
        return self.log_policy.exp()

    def _replace(self, **changes) -> Plan:
        fields = dict(q=self._q, v=self.v, log_policy=self._log_policy,
                      num_iters=self.num_iters, residual=self.residual)
        return Plan(**{**fields, **changes})

    def __repr__(self) -> str:
        return (f"Plan(log_policy={tuple(self.log_policy.shape)}, v={tuple(self.v.shape)}, "
                f"num_iters={self.num_iters}, residual={self.residual:.3g})")


def _check_mdp(mdp) -> None:
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")


def broadcast_reward(mdp: TabularMDP, reward: torch.Tensor) -> torch.Tensor:
    """Return ``reward`` as ``(..., S, A)``; a state reward ``(..., S)`` broadcasts over actions.

    ``reward`` must be real (a complex or non-numeric one raises); its values are not checked
    here (inference calls this in its inner loops): the public planners check them."""
    S, A = mdp.n_states, mdp.n_actions
    reward = as_tensor("reward", reward, dtype=mdp.dtype, device=mdp.device)
    if reward.dim() >= 2 and tuple(reward.shape[-2:]) == (S, A):
        return reward
    if reward.dim() >= 1 and reward.shape[-1] == S:
        return reward.unsqueeze(-1).expand(*reward.shape, A)
    raise ValueError(f"reward must have shape (..., {S}, {A}) or (..., {S}), "
                     f"got {tuple(reward.shape)}")


def soft_backup(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(V, log_policy)`` of ``q: (..., S, A)`` under a log-sum-exp over actions.

    ``log_policy = (q - max q) - log Z`` with ``Z = sum exp(q - max q)``, not ``q - V``: at
    ``|q|`` near 1e10 ``V = max q + log Z`` rounds away most of ``log Z`` and ``q - V`` loses
    the policy's normalisation (1e-7 in float64); shifting first keeps the best action's
    log-probability exact, as the finite-horizon kernels do."""
    m = q.amax(-1, keepdim=True)
    shifted = q - m
    log_z = shifted.exp().sum(-1, keepdim=True).log()
    return (m + log_z).squeeze(-1), shifted - log_z


def _tie_rtol(dtype) -> float:
    """Actions within ``rtol * max(1, |V|)`` of the max are tied (the hard policy's ties)."""
    return 1e-9 if dtype == torch.float64 else 1e-5


def _hard_backup(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(V, log_policy)`` of ``q`` under a max; ties share probability uniformly."""
    v = q.amax(-1)
    tol = _tie_rtol(q.dtype) * v.abs().clamp(min=1.0)
    best = (q >= (v - tol).unsqueeze(-1)).to(q.dtype)
    return v, (best / best.sum(-1, keepdim=True)).log()


def _soft_dp_forward_torch(P, r, v_end, log_policy, v, buf):
    """Backward induction in torch (the accelerator path), batch-last and in place:
    ``r: (S, A, B)``, ``v_end: (S, B)`` into ``log_policy: (T, S, A, B)``, ``v: (T, S, B)``;
    ``buf`` is an ``(S, A, B)`` scratch tensor. Same arithmetic as
    :mod:`bayesirl.planning.cpu_kernels`."""
    T, S, A, B = log_policy.shape
    v_next = v_end
    for t in reversed(range(T)):
        q = torch.add((P @ v_next).reshape(S, A, B), r, out=log_policy[t])
        vt = torch.amax(q, 1, out=v[t])  # log-sum-exp over actions, leaving q - V in place
        q -= vt[:, None]
        log_z = torch.exp(q, out=buf).sum(1).log_()
        q -= log_z[:, None]
        vt += log_z
        v_next = vt


def _soft_dp_backward_torch(PT, log_policy, g_v, g_lp, g_r, buf):
    """Adjoint of :func:`_soft_dp_forward_torch` (batch-last), accumulating into ``g_r``;
    returns ``g_v_end: (S, B)``."""
    T, S, A, B = log_policy.shape
    carry = torch.zeros_like(log_policy[0, :, 0])
    for t in range(T):
        g = carry if g_v is None else carry + g_v[t]
        g_q = torch.exp(log_policy[t], out=buf)
        if g_lp is None:
            g_q *= g[:, None]
        else:
            g_q *= (g - g_lp[t].sum(1))[:, None]
            g_q += g_lp[t]
        g_r += g_q
        carry = PT @ g_q.reshape(S * A, B)
    return carry


def _use_cpu_kernel(x: torch.Tensor) -> bool:
    """CPU tensors take the compiled kernel of :mod:`bayesirl.planning.cpu_kernels`; others the
    torch one.     (A test patches this to check the torch kernel on the CPU.)"""
    return x.device.type == "cpu"


def _no_double_backward():
    if torch.is_grad_enabled():
        raise RuntimeError("second derivatives of soft value iteration are not implemented "
                           "(the fused finite-horizon DP and the implicit discounted fixed "
                           "point are differentiable once)")


def _cpu_empty(like: torch.Tensor, *shape: int) -> torch.Tensor:
    """A CPU output tensor whose memory is reused across calls (see ``planning.buffers``)."""
    return torch.from_numpy(_buffers.empty(shape, like.detach().numpy().dtype))


def _numpy(x: torch.Tensor | None):
    return None if x is None else x.detach().contiguous().numpy()


class _SoftBackwardInduction(torch.autograd.Function):
    """Finite-horizon soft DP, batch-first: ``r: (B, S, A)``, ``v_end: (B, S)``.

    Returns ``v: (B, T, S)`` and ``log_policy: (B, T, S, A)``. Fused by hand so a backup costs
    about one pass over memory each way, and only ``log_policy`` is saved.
    The backward pass is the adjoint recursion, forward in time::

        g_v_t  = G_v[t] + P^T g_q_{t-1},
        g_q_t  = G_lp[t] + pi_t * (g_v_t - sum_a G_lp[t]),
        g_r    = sum_t g_q_t,   g_v_end = P^T g_q_{T-1}.

    With ``G_lp`` the observed action counts this is the maximum-causal-entropy identity:
    the likelihood gradient is empirical minus expected visitation (Ziebart et al. 2010).
    On the CPU a batch of at least ``2 * _cpu_dp.WIDE_BATCH`` rows is split over up to
    ``torch.get_num_threads()`` threads.
    """

    @staticmethod
    def forward(ctx, r, v_end, mdp):
        B, S, A = r.shape
        T = mdp.horizon
        if _use_cpu_kernel(r):
            log_policy, v = _cpu_empty(r, B, T, S, A), _cpu_empty(r, B, T, S)
            _cpu_dp.soft_dp_forward(_numpy(mdp.successors), _numpy(mdp.transition_probs),
                                    _numpy(r), _numpy(v_end), log_policy.numpy(), v.numpy(),
                                    threads=torch.get_num_threads())
        else:
            log_policy, v = r.new_empty(B, T, S, A), r.new_empty(B, T, S)
            lp_, v_ = r.new_empty(T, S, A, B), r.new_empty(T, S, B)
            _soft_dp_forward_torch(mdp._operators[0], r.permute(1, 2, 0), v_end.T, lp_, v_,
                                   r.new_empty(S, A, B))
            log_policy.copy_(lp_.permute(3, 0, 1, 2))
            v.copy_(v_.permute(2, 0, 1))
        ctx.mdp = mdp
        ctx.save_for_backward(log_policy)
        return v, log_policy

    @staticmethod
    def backward(ctx, g_v, g_lp):
        _no_double_backward()
        (log_policy,) = ctx.saved_tensors
        mdp = ctx.mdp
        B, T, S, A = log_policy.shape
        if _use_cpu_kernel(log_policy):
            g_r = _cpu_empty(log_policy, B, S, A)
            g_v_end = torch.from_numpy(_cpu_dp.soft_dp_backward(
                _numpy(mdp.successors), _numpy(mdp.transition_probs), log_policy.numpy(),
                _numpy(g_v), _numpy(g_lp), g_r.numpy(), threads=torch.get_num_threads()))
            return g_r, g_v_end, None
        g_r_ = log_policy.new_zeros(S, A, B)
        g_v_end = _soft_dp_backward_torch(
            mdp._operators[1], log_policy.permute(1, 2, 3, 0).contiguous(),
            None if g_v is None else g_v.permute(1, 2, 0).contiguous(),
            None if g_lp is None else g_lp.permute(1, 2, 3, 0).contiguous(),
            g_r_, log_policy.new_empty(S, A, B))
        return g_r_.permute(2, 0, 1).contiguous(), g_v_end.T.contiguous(), None


class _HardBackwardInduction(torch.autograd.Function):
    """Finite-horizon hard DP on the CPU, batch-first: ``r: (B, S, A)``, ``v_end: (B, S)``.

    Returns ``q: (B, T, S, A)`` and ``v = max_a q: (B, T, S)``, both differentiable (almost
    everywhere): the adjoint sends ``dL/dv_t`` to the maximising actions, ties split evenly
    (:func:`bayesirl.planning.cpu_kernels.hard_dp_backward`). The Boltzmann likelihood's planner.
    """

    @staticmethod
    def forward(ctx, r, v_end, mdp):
        B, S, A = r.shape
        T = mdp.horizon
        q, v = _cpu_empty(r, B, T, S, A), _cpu_empty(r, B, T, S)
        _cpu_dp.hard_dp_forward(_numpy(mdp.successors), _numpy(mdp.transition_probs),
                                _numpy(r), _numpy(v_end), q.numpy(), v.numpy())
        ctx.mdp = mdp
        ctx.save_for_backward(q, v)
        return q, v

    @staticmethod
    def backward(ctx, g_q, g_v):
        _no_double_backward()
        q, v = ctx.saved_tensors
        mdp = ctx.mdp
        B, T, S, A = q.shape
        g_r = _cpu_empty(q, B, S, A)
        g_v_end = torch.from_numpy(_cpu_dp.hard_dp_backward(
            _numpy(mdp.successors), _numpy(mdp.transition_probs), q.numpy(), v.numpy(),
            _numpy(g_v), _numpy(g_q), g_r.numpy(), _tie_rtol(q.dtype)))
        return g_r, g_v_end, None


def _backward_induction(mdp, r, backup, terminal):
    """Finite-horizon dynamic program over ``r: (..., S, A)``; returns a :class:`Plan`."""
    T = mdp.horizon
    batch = r.shape[:-2]
    v_end = torch.zeros(batch + r.shape[-2:-1], dtype=r.dtype, device=r.device) if (
        terminal is None) else terminal.expand(batch + r.shape[-2:-1])
    if backup is soft_backup:
        S, A = r.shape[-2:]
        v, log_policy = _SoftBackwardInduction.apply(
            r.reshape(-1, S, A).contiguous(), v_end.reshape(-1, S).contiguous(), mdp)
        return Plan(None, v.reshape(*batch, T, S), log_policy.reshape(*batch, T, S, A), T, 0.0)
    if backup is _hard_backup and _use_cpu_kernel(r):
        S, A = r.shape[-2:]
        q, v = _HardBackwardInduction.apply(
            r.reshape(-1, S, A).contiguous(), v_end.reshape(-1, S).contiguous(), mdp)
        q, v = q.reshape(*batch, T, S, A), v.reshape(*batch, T, S)
        return Plan(q, v, None, T, 0.0)
    qs = [None] * T
    v = v_end
    for t in reversed(range(T)):
        qs[t] = r + mdp.expected_next(v)
        v = backup(qs[t])[0]
    q = torch.stack(qs, dim=-3)
    v, log_policy = backup(q)
    return Plan(q, v, log_policy, T, 0.0)


def _iterate(step, x, gamma, tol, max_iters, what):
    """Iterate the gamma-contraction ``x <- step(x)`` from ``x`` to its fixed point.

    Stops when the error bound ``gamma / (1 - gamma) * |x_new - x|_inf`` falls below
    ``tol * max(1, |x|_inf)``, or at once when the update is not finite; otherwise (and then)
    warns with :class:`ConvergenceWarning`.
    Returns ``(x, num_iters, residual)``, the residual being the last update's sup-norm.
    """
    residual = math.inf
    for it in range(1, max_iters + 1):
        x_new = step(x)
        residual = (x_new - x).abs().max().item() if x.numel() else 0.0
        x = x_new
        if not math.isfinite(residual):  # a non-finite reward: more sweeps cannot help
            warnings.warn(f"{what} did not converge: the iterate is not finite after {it} "
                          "iterations; check the reward is finite", ConvergenceWarning,
                          stacklevel=4)
            return x, it, residual
        scale = max(1.0, x.abs().max().item()) if x.numel() else 1.0
        if gamma == 0 or residual * gamma / (1 - gamma) <= tol * scale:
            return x, it, residual
    warnings.warn(f"{what} did not converge: residual {residual:.3g} after {max_iters} "
                  f"iterations (discount {gamma}, tol {tol:.1e}); raise max_iters",
                  ConvergenceWarning, stacklevel=4)
    return x, max_iters, residual


def _solve_discounted(mdp, pi, b, tol, max_iters, what):
    """Solve ``x = b + gamma P_pi^T x`` for ``x: (..., S)`` (discounted visitation-type sums)."""
    gamma = mdp.discount
    return _iterate(lambda x: b + gamma * mdp.push(pi * x.unsqueeze(-1)), b, gamma, tol,
                    max_iters, what)[0]


def _expected_next(mdp, v):
    """``E[v(s') | s, a]``, differentiable in the transition probabilities when they require
    grad (the MDP's cached operators treat them as constants)."""
    probs = mdp.transition_probs
    if probs.requires_grad and torch.is_grad_enabled():
        return (v[..., mdp.successors] * probs).sum(-1)
    return mdp.expected_next(v)


class _ImplicitFixedPoint(torch.autograd.Function):
    """Identity on the fixed point ``V* = backup(r + gamma E[V*])``, with its implicit gradient.

    For ``g = dL/dV*``: solve the adjoint ``u = g + gamma P_pi^T u`` (``adjoint(pi, g)``: plain
    iteration, or a transpose solve with the Newton factors); then
    ``dL/dr(s, a) = pi(a|s) u(s)`` and, for transition probabilities that require grad,
    ``dL/dP[s, a, k] = gamma pi(a|s) u(s) V*[succ[s, a, k]]`` (summed over the batch).
    Memory is that of one backup, whatever the iteration count.
    """

    @staticmethod
    def forward(ctx, r, probs, v, mdp, backup, adjoint, threads):
        pi = backup(r + mdp.discount * mdp.expected_next(v))[1].exp()
        ctx.save_for_backward(pi, v)
        ctx.mdp, ctx.adjoint, ctx.threads = mdp, adjoint, threads
        return v.clone()

    @staticmethod
    def backward(ctx, g):
        _no_double_backward()
        pi, v = ctx.saved_tensors
        with torch_threads(ctx.threads):
            u = ctx.adjoint(pi, g)
        g_q = pi * u.unsqueeze(-1)
        g_probs = None
        if ctx.needs_input_grad[1]:
            mdp = ctx.mdp
            S, A, K = mdp.successors.shape
            v_next = v.reshape(-1, S)[:, mdp.successors]                  # (B, S, A, K)
            g_probs = mdp.discount * torch.einsum("bsa,bsak->sak", g_q.reshape(-1, S, A), v_next)
        return g_q, g_probs, None, None, None, None, None


_WARM_STARTS = _newton.WarmStarts()


def clear_warm_starts() -> None:
    """Forget the Newton solver's warm starts (each solve then starts cold)."""
    _WARM_STARTS.clear()


def _newton_solve(mdp, r, backup, tol, max_iters, warm_start):
    """Newton-Kantorovich fixed point of ``backup`` over ``r: (..., S, A)`` (no graph).

    Returns ``(v, num_iters, residual, adjoint)``; ``v`` in ``r``'s dtype, computed in float64.
    A warm start that fails to converge is retried cold, so the cache can cost time, never
    correctness.
    """
    gamma = mdp.discount
    # Keyed by the number of batch rows, not the batch shape: a ``(1, S, A)`` reward and an
    # ``(S, A)`` one (a MAP's evaluations and its final per-demonstration log-likelihood)
    # share their start point.
    tag = (backup.__name__, gamma, math.prod(r.shape[:-2]))
    expect = mdp.expected_next if mdp.dtype == torch.float64 else None
    v0 = _WARM_STARTS.get(mdp.successors, tag) if warm_start else None
    res = _newton.newton_fixed_point(r, mdp.successors, mdp.transition_probs, gamma, backup, v0,
                                     tol, max_iters, expect=expect)
    if not res.converged and v0 is not None:
        res = _newton.newton_fixed_point(r, mdp.successors, mdp.transition_probs, gamma, backup,
                                         None, tol, max_iters, expect=expect)
    if not res.converged:
        warnings.warn(f"Newton-Kantorovich did not converge: residual {res.residual:.3g} after "
                      f"{res.num_iters} iterations (discount {gamma}, tol {tol:.1e}); raise "
                      "max_iters, or check the reward is finite", ConvergenceWarning,
                      stacklevel=5)
    elif warm_start:
        _WARM_STARTS.put(mdp.successors, tag, res.v)
    factor, S = res.factor, mdp.n_states

    def adjoint(pi, g):
        if factor is None:
            return g
        x = factor.solve_transpose(g.reshape(-1, S).to(torch.float64))
        return x.to(g.dtype).reshape(g.shape)
    return res.v.to(r.dtype), res.num_iters, res.residual, adjoint


def _fixed_point(mdp, r, backup, tol, max_iters, solver="auto", threads=None, warm_start=True):
    """Discounted fixed point of ``backup`` over ``r: (..., S, A)``; returns a :class:`Plan`."""
    tol = _default_tol(r.dtype) if tol is None else tol
    gamma = mdp.discount
    S, A, K = mdp.successors.shape
    batch = math.prod(r.shape[:-2])
    method = choose_solver(mdp, tol, batch, solver)
    n_threads = threads if threads is not None else (
        1 if batch * S * A * K <= SMALL_WORK else None)
    with torch_threads(n_threads):
        with torch.no_grad():
            rd = r.detach()
            if method == "newton":
                v, num_iters, residual, adjoint = _newton_solve(mdp, rd, backup, tol, max_iters,
                                                                warm_start)
            else:
                v, num_iters, residual = _iterate(
                    lambda v: backup(rd + gamma * mdp.expected_next(v))[0], backup(rd)[0],
                    gamma, tol, max_iters, "value iteration")

                def adjoint(pi, g):
                    return _solve_discounted(mdp, pi, g, tol, max_iters,
                                             "the adjoint fixed point")
        v = _ImplicitFixedPoint.apply(r, mdp.transition_probs, v, mdp, backup, adjoint,
                                      n_threads)
        q = r + gamma * _expected_next(mdp, v)
        v, log_policy = backup(q)
    return Plan(q, v, log_policy, num_iters, residual)


def choose_solver(mdp: TabularMDP, tol: float | None = None, batch: int = 1,
                  solver: str = "auto") -> str:
    """The discounted solver that ``solver`` names: ``"iterate"`` or ``"newton"``.

    ``"auto"`` picks Newton-Kantorovich (:mod:`bayesirl.planning.newton`) when plain value
    iteration would need at least :data:`NEWTON_MIN_SWEEPS` sweeps, and Newton's estimated
    cost is the smaller (:func:`bayesirl.planning.newton.newton_cost`, about ten sweeps and
    factorisations of ``I - gamma P_pi``). Iteration's error bound shrinks like ``gamma^n``, so
    it needs ``n = log(tol) / log(gamma)`` sweeps: 218 at gamma = 0.9 and tol = 1e-10, 2 292 at
    0.99, 23 015 at 0.999, 230 247 at 0.9999. With the default tolerances Newton is chosen from
    gamma of about 0.955 (float64) or 0.977 (float32) on, unless the states are too many for a
    factorisation to pay (thousands of states with non-local transitions, whose LU fills in).

    Args:
        mdp: a discounted MDP.
        tol: the fixed point's tolerance (default that of ``mdp.dtype``).
        batch: number of reward rows solved together (dense factors are ``(batch, S, S)``).
        solver: ``"auto"``, ``"iterate"`` or ``"newton"``.
    """
    _check_mdp(mdp)
    solver = _check_solver(solver)
    _check_tol(tol)
    if mdp.finite_horizon:
        raise ValueError(f"solver applies to discounted MDPs only (this one has horizon "
                         f"{mdp.horizon})")
    if solver != "auto":
        return solver
    gamma = mdp.discount
    tol = _default_tol(mdp.dtype) if tol is None else tol
    if gamma == 0 or not 0 < tol < 1:
        return "iterate"
    sweeps = math.log(tol) / math.log(gamma)
    if sweeps < NEWTON_MIN_SWEEPS:
        return "iterate"
    S, A, K = mdp.successors.shape
    newton = _newton.newton_cost(mdp.successors, mdp.transition_probs, batch)
    return "newton" if newton < sweeps * _newton.sweep_cost(S, A, K) else "iterate"


def _check_solver(solver) -> str:
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a string, one of {SOLVERS}, got {solver!r} "
                        f"({type(solver).__name__})")
    if solver not in SOLVERS:
        raise ValueError(f"solver is {solver!r}, expected one of {SOLVERS}")
    return solver


def _check_threads(threads) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"threads must be None or an integer >= 1, got {threads!r} "
                        f"({type(threads).__name__})")
    if threads < 1:
        raise ValueError(f"threads is {threads}, expected None or an integer >= 1")
    return int(threads)


_threads_lock = threading.Lock()
_threads_depth = 0
_threads_saved = 1


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with torch's intra-op threads set to ``n`` (``None``: leave them).

    Small solves run on one thread: their operations take microseconds, and a pool of OpenMP
    threads spinning for work against another busy process costs more than it saves. The
    setting is process-wide (torch's), so nested and concurrent blocks count themselves in and
    the last one out restores the value found by the first one in.
    """
    global _threads_depth, _threads_saved
    if n is None:
        yield
        return
    with _threads_lock:
        if _threads_depth == 0:
            _threads_saved = torch.get_num_threads()
        _threads_depth += 1
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    try:
        yield
    finally:
        with _threads_lock:
            _threads_depth -= 1
            if _threads_depth == 0 and torch.get_num_threads() != _threads_saved:
                torch.set_num_threads(_threads_saved)


def _default_tol(dtype):
    return 1e-10 if dtype == torch.float64 else 1e-5


def _check_tol(tol, max_iters=None):
    """The public entries' check of the discounted options: ``tol`` None or a finite number
    > 0, ``max_iters`` an integer >= 1."""
    if tol is not None:
        check_number("tol", tol, 0.0, low_open=True)
    if max_iters is not None:
        check_int("max_iters", max_iters)


def _checked_plan_inputs(mdp, reward, terminal_reward, tol, max_iters):
    """The public planners' checks of what they plan on (unless ``check=False``): ``tol`` and
    ``max_iters`` as :func:`_check_tol` wants, and ``(reward, terminal_reward)`` returned as
    tensors in the MDP's dtype and device (gradients kept), checked real and finite, so that
    planning converts them once."""
    _check_tol(tol, max_iters)
    reward = as_tensor("reward", reward, mdp.dtype, mdp.device)
    check_finite("reward", reward.detach())
    if terminal_reward is not None:
        terminal_reward = as_tensor("terminal_reward", terminal_reward, mdp.dtype, mdp.device)
        check_finite("terminal_reward", terminal_reward.detach())
    return reward, terminal_reward


def _plan(mdp, reward, backup, terminal_reward, tol, max_iters, solver, threads, warm_start):
    _check_solver(solver)
    threads = _check_threads(threads)
    r = broadcast_reward(mdp, reward)
    if mdp.finite_horizon:
        if solver == "newton":
            raise ValueError(f"solver='newton' applies to discounted MDPs only (this one has "
                             f"horizon {mdp.horizon})")
        if mdp.transition_probs.requires_grad and torch.is_grad_enabled():
            raise ValueError("mdp.transition_probs requires grad, but gradients with respect "
                             "to transition probabilities are implemented for discounted MDPs "
                             f"only (this one has horizon {mdp.horizon}); detach them")
        terminal = None
        if terminal_reward is not None:
            S = mdp.n_states
            terminal = as_tensor("terminal_reward", terminal_reward, r.dtype, r.device)
            if terminal.shape[-1:] != (S,):
                raise ValueError(f"terminal_reward must have shape (..., {S}), "
                                 f"got {tuple(terminal.shape)}")
            try:
                batch = torch.broadcast_shapes(r.shape[:-2], terminal.shape[:-1])
            except RuntimeError as e:
                raise ValueError(f"terminal_reward batch shape {tuple(terminal.shape[:-1])} "
                                 "does not broadcast with the reward's "
                                 f"{tuple(r.shape[:-2])}") from e
            r = r.expand(*batch, *r.shape[-2:])
            terminal = terminal.expand(*batch, S)
        return _backward_induction(mdp, r, backup, terminal)
    if terminal_reward is not None:
        raise ValueError("terminal_reward applies to finite-horizon MDPs only (this one is "
                         f"discounted, discount={mdp.discount})")
    return _fixed_point(mdp, r, backup, tol, max_iters, solver, threads, warm_start)


def soft_value_iteration(mdp: TabularMDP, reward: torch.Tensor, temperature: float = 1.0,
                         terminal_reward: torch.Tensor | None = None, tol: float | None = None,
                         max_iters: int = 100_000, solver: str = "auto",
                         threads: int | None = None, warm_start: bool = True,
                         check: bool = True) -> Plan:
    """Soft (maximum causal entropy) value iteration.

    Args:
        mdp: the MDP; its horizon or discount picks backward induction or a fixed point.
        reward: ``(..., S, A)`` or ``(..., S)``; leading dims are batch.
        temperature: tau > 0; the policy is ``softmax(Q / tau)`` (tau -> 0 is the hard max).
        terminal_reward: ``(..., S)`` value of the state reached after the last decision
            (finite horizon only; default 0).
        tol: discounted only, error bound on ``v`` relative to ``max(1, |v|)``
            (default 1e-10 in float64, 1e-5 in float32).
        max_iters: discounted only, sweeps (plus Newton steps); a :class:`ConvergenceWarning`
            reports non-convergence.
        solver, threads, warm_start: discounted only, see below.

    Returns:
        :class:`Plan` with ``q``, ``v``, ``log_policy`` of shape ``(..., T, S, A)`` /
        ``(..., T, S)`` (finite horizon) or ``(..., S, A)`` / ``(..., S)`` (discounted).
        ``residual`` is the last sweep's update (iteration) or ``max |T(v) - v|`` in float64
        at the solution (Newton).

    Discounted MDPs: the fixed point is found without a graph and differentiated implicitly
    (an adjoint linear system), by one of two solvers (``solver``):

    - ``"iterate"``: plain value iteration, a gamma-contraction; it stops when its error bound
      ``gamma / (1 - gamma) * |v_new - v|_inf`` is below ``tol * max(1, |v|_inf)``, so it needs
      about ``log(tol) / log(gamma)`` sweeps (2 292 at gamma = 0.99, 230 247 at 0.9999); the
      adjoint iterates too.
    - ``"newton"``: Rust's polyalgorithm (:mod:`bayesirl.planning.newton`): a few sweeps, then
      Newton-Kantorovich steps, each a linear solve with ``I - gamma P_pi`` (soft policy
      iteration; policy iteration for the hard max), converging quadratically; computed in
      float64 whatever the MDP's dtype and returned in it; the adjoint is a transpose solve
      with the last factors. It starts from the last solution for the same transitions, number
      of batch rows and discount (``warm_start``; :func:`clear_warm_starts` forgets them).
    - ``"auto"`` (default): Newton when iteration would need at least 500 sweeps and
      Newton's estimated cost is smaller (:func:`choose_solver`: from gamma of about 0.955 on
      in float64, unless the MDP is too large to factor cheaply), else iteration.

    ``threads``: torch's intra-op threads during the solve and its adjoint; ``None`` runs a
    small problem (``batch * S * A * K <= SMALL_WORK``) on one thread and leaves larger ones
    alone.

    ``reward`` and ``terminal_reward`` must be real and finite (a ValueError names the first
    entry that is not), ``tol`` a number > 0 and ``max_iters`` an integer >= 1. ``check=False``
    skips those checks, for loops that plan many times (inference: there a check costs a
    device sync, and a non-finite reward is a rejected proposal, which gives non-finite values
    and, discounted, a :class:`ConvergenceWarning`, not an error).
    """
    _check_mdp(mdp)
    if check:
        reward, terminal_reward = _checked_plan_inputs(mdp, reward, terminal_reward, tol,
                                                       max_iters)
    if isinstance(temperature, torch.Tensor) and temperature.numel() == 1:
        temperature = temperature.item()
    temperature = check_number("temperature", temperature, 0.0, low_open=True)
    opts = (tol, max_iters, solver, threads, warm_start)
    if temperature == 1:
        return _plan(mdp, reward, soft_backup, terminal_reward, *opts)
    tau = float(temperature)
    scaled = None if terminal_reward is None else torch.as_tensor(terminal_reward) / tau
    plan = _plan(mdp, broadcast_reward(mdp, reward) / tau, soft_backup, scaled, *opts)
    return plan._replace(q=plan.q * tau, v=plan.v * tau, residual=plan.residual * tau)


def value_iteration(mdp: TabularMDP, reward: torch.Tensor,
                    terminal_reward: torch.Tensor | None = None, tol: float | None = None,
                    max_iters: int = 100_000, solver: str = "auto",
                    threads: int | None = None, warm_start: bool = True,
                    check: bool = True) -> Plan:
    """Hard value iteration: the optimal ``Q*`` and a greedy policy (ties split uniformly).

    Shapes, arguments and the discounted solvers as in :func:`soft_value_iteration`;
    ``log_policy`` is ``-inf`` off the argmax. ``q`` is differentiable in ``reward`` (almost
    everywhere), as the Boltzmann likelihood needs. ``solver="newton"`` is policy iteration: it
    stops when the greedy policy is stable, at the exact fixed point up to rounding.
    ``reward``, ``terminal_reward``, ``tol`` and ``max_iters`` are checked as there (``check``).
    """
    _check_mdp(mdp)
    if check:
        reward, terminal_reward = _checked_plan_inputs(mdp, reward, terminal_reward, tol,
                                                       max_iters)
    return _plan(mdp, reward, _hard_backup, terminal_reward, tol, max_iters, solver, threads,
                 warm_start)


def _policy_probs(mdp: TabularMDP, policy) -> torch.Tensor:
    """Action probabilities ``(..., T, S, A)`` or ``(..., S, A)`` from a Plan or a tensor.

    A tensor must hold probabilities (each ``[..., s, :]`` row finite, >= 0 and summing to 1,
    checked in its own dtype): log-probabilities, Q-values or scaled probabilities raise."""
    if isinstance(policy, Plan):
        probs = policy.policy
    else:
        probs = as_tensor("policy", policy, device=mdp.device)
    S, A = mdp.n_states, mdp.n_actions
    need = 3 if mdp.finite_horizon else 2
    if probs.dim() < need or tuple(probs.shape[-2:]) != (S, A) or (
            mdp.finite_horizon and probs.shape[-3] != mdp.horizon):
        want = f"(..., {mdp.horizon}, {S}, {A})" if mdp.finite_horizon else f"(..., {S}, {A})"
        raise ValueError(f"policy must have shape {want}, got {tuple(probs.shape)}")
    if isinstance(policy, Plan):
        return probs
    check_distribution_rows("policy", probs)
    return probs.to(mdp.dtype)


class _DiscountedVisits(torch.autograd.Function):
    """``x = b + gamma P_pi^T x``, i.e. ``(I - gamma P_pi)^T x = b``, by one LU (float64 inside).

    ``pi: (B, S, A)``, ``b: (B, S)``. For ``g = dL/dx``: ``w = (I - gamma P_pi)^{-1} g``, then
    ``dL/db = w`` and ``dL/dpi(s, a) = gamma x(s) E[w(s') | s, a]``, with the same factors.
    """

    @staticmethod
    def forward(ctx, pi, b, mdp):
        S = mdp.n_states
        factor = _newton.factorize(mdp.successors, mdp.transition_probs.to(torch.float64),
                                   pi.to(torch.float64), mdp.discount)
        x = factor.solve_transpose(b.to(torch.float64))
        ctx.factor, ctx.mdp = factor, mdp
        ctx.save_for_backward(x)
        return x.to(b.dtype).reshape(-1, S)

    @staticmethod
    def backward(ctx, g):
        _no_double_backward()
        (x,) = ctx.saved_tensors
        mdp = ctx.mdp
        w = ctx.factor.solve(g.to(torch.float64))
        g_pi = mdp.discount * x.unsqueeze(-1) * _newton.expected_next(
            mdp.successors, mdp.transition_probs.to(torch.float64), w)
        return g_pi.to(g.dtype), w.to(g.dtype), None


def occupancy(mdp: TabularMDP, policy, initial: torch.Tensor | None = None,
              per_time: bool = False, tol: float | None = None,
              max_iters: int = 100_000, solver: str = "auto") -> torch.Tensor:
    """Expected state-action visits of ``policy`` from ``initial`` (default ``mdp.initial``).

    Args:
        policy: a :class:`Plan`, or action probabilities ``(..., T, S, A)`` (finite horizon)
            or ``(..., S, A)`` (discounted), each row finite, >= 0 and summing to 1 (not
            ``plan.log_policy``: pass the plan or ``plan.policy``).
        initial: ``(S,)`` start distribution (finite, >= 0, summing to 1).
        per_time: finite horizon only: return ``(..., T, S, A)`` per-step visitation.
        tol, max_iters: discounted, plain iteration only (error bound and sweeps).
        solver: discounted only: ``"iterate"`` sums the visits by the gamma-contraction
            ``d = mu + gamma P_pi^T d``; ``"newton"`` solves ``(I - gamma P_pi)^T d = mu`` with
            one LU (float64 inside; its gradient is a solve with the same factors);
            ``"auto"`` picks as :func:`choose_solver` does for the fixed point.

    Returns:
        ``(..., S, A)``: summed over the T steps (total mass T), or discounted
        ``sum_t gamma^t Pr(s_t = s, a_t = a)`` (total mass ``1 / (1 - gamma)``).
    """
    _check_mdp(mdp)
    _check_solver(solver)
    if mdp.transition_probs.requires_grad and torch.is_grad_enabled():
        raise ValueError("mdp.transition_probs requires grad, but occupancy does not "
                         "differentiate with respect to transition probabilities; detach them "
                         "or call it under torch.no_grad()")
    _check_tol(tol, max_iters)
    pi = _policy_probs(mdp, policy)
    mu = mdp.initial if initial is None else as_tensor("initial", initial, device=pi.device)
    if mu.shape != (mdp.n_states,):
        raise ValueError(f"initial must have shape ({mdp.n_states},), got {tuple(mu.shape)}")
    if initial is not None:
        check_distribution_rows("initial", mu)
        mu = mu.to(pi.dtype)
    if mdp.finite_horizon:
        if solver == "newton":
            raise ValueError(f"solver='newton' applies to discounted MDPs only (this one has "
                             f"horizon {mdp.horizon})")
        d = mu.expand(pi.shape[:-3] + mu.shape)
        visits = []
        for t in range(mdp.horizon):
            visits.append(d.unsqueeze(-1) * pi[..., t, :, :])
            d = mdp.push(visits[-1])
        per_step = torch.stack(visits, dim=-3)
        return per_step if per_time else per_step.sum(-3)
    if per_time:
        raise ValueError("per_time applies to finite-horizon MDPs only")
    tol = _default_tol(pi.dtype) if tol is None else tol
    batch, (S, A) = pi.shape[:-2], pi.shape[-2:]
    if choose_solver(mdp, tol, math.prod(batch), solver) == "newton":
        b = mu.expand(math.prod(batch), S)
        d = _DiscountedVisits.apply(pi.reshape(-1, S, A), b, mdp).reshape(*batch, S)
    else:
        d = _solve_discounted(mdp, pi, mu.expand(batch + mu.shape), tol, max_iters,
                              "the discounted occupancy")
    return d.unsqueeze(-1) * pi


def policy_value(mdp: TabularMDP, policy, reward: torch.Tensor, **kwargs) -> torch.Tensor:
    """Expected return ``(...)`` of ``policy`` under ``reward`` from ``mdp.initial``.

    Finite horizon: expected sum of the T rewards; discounted: expected discounted sum.
    ``policy`` as in :func:`occupancy`; ``reward`` ``(..., S, A)`` or ``(..., S)``, real and
    finite. Keyword arguments go to :func:`occupancy`.
    """
    _check_mdp(mdp)
    check_finite("reward", as_tensor("reward", reward, mdp.dtype, mdp.device).detach())
    return (occupancy(mdp, policy, **kwargs) * broadcast_reward(mdp, reward)).sum((-2, -1))


def feature_expectations(mdp: TabularMDP, policy, **kwargs) -> torch.Tensor:
    """Expected (discounted) feature counts ``(..., d)`` of ``policy`` from ``mdp.initial``."""
    _check_mdp(mdp)
    d = occupancy(mdp, policy, **kwargs)
    return torch.einsum("...sa,saf->...f", d, mdp.state_action_features())
