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
The discounted fixed point is found without building a graph; its gradient comes from implicit
differentiation (an adjoint fixed point), so memory does not grow with the iteration count.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from bayesirl.core.mdp import TabularMDP
from bayesirl.planning import buffers as _buffers
from bayesirl.planning import cpu_kernels as _cpu_dp

__all__ = [
    "ConvergenceWarning",
    "Plan",
    "broadcast_reward",
    "feature_expectations",
    "occupancy",
    "policy_value",
    "soft_value_iteration",
    "value_iteration",
]


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
    """Return ``reward`` as ``(..., S, A)``; a state reward ``(..., S)`` broadcasts over actions."""
    S, A = mdp.n_states, mdp.n_actions
    reward = torch.as_tensor(reward, dtype=mdp.dtype, device=mdp.device)
    if reward.dim() >= 2 and tuple(reward.shape[-2:]) == (S, A):
        return reward
    if reward.dim() >= 1 and reward.shape[-1] == S:
        return reward.unsqueeze(-1).expand(*reward.shape, A)
    raise ValueError(f"reward must have shape (..., {S}, {A}) or (..., {S}), "
                     f"got {tuple(reward.shape)}")


def _soft_backup(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(V, log_policy)`` of ``q: (..., S, A)`` under a log-sum-exp over actions."""
    v = torch.logsumexp(q, -1)
    return v, q - v.unsqueeze(-1)


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
    if backup is _soft_backup:
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
    ``tol * max(1, |x|_inf)``; otherwise warns with :class:`ConvergenceWarning`.
    Returns ``(x, num_iters, residual)``, the residual being the last update's sup-norm.
    """
    residual = math.inf
    for it in range(1, max_iters + 1):
        x_new = step(x)
        residual = (x_new - x).abs().max().item() if x.numel() else 0.0
        x = x_new
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


class _ImplicitFixedPoint(torch.autograd.Function):
    """Identity on the fixed point ``V* = backup(r + gamma E[V*])``, with its implicit gradient.

    For ``g = dL/dV*``: solve the adjoint ``u = g + gamma P_pi^T u``; then
    ``dL/dr(s, a) = pi(a|s) u(s)``. Memory is that of one backup, whatever the iteration count.
    """

    @staticmethod
    def forward(ctx, r, v, mdp, backup, tol, max_iters):
        pi = backup(r + mdp.discount * mdp.expected_next(v))[1].exp()
        ctx.save_for_backward(pi)
        ctx.mdp, ctx.tol, ctx.max_iters = mdp, tol, max_iters
        return v.clone()

    @staticmethod
    def backward(ctx, g):
        _no_double_backward()
        (pi,) = ctx.saved_tensors
        u = _solve_discounted(ctx.mdp, pi, g, ctx.tol, ctx.max_iters, "the adjoint fixed point")
        return pi * u.unsqueeze(-1), None, None, None, None, None


def _fixed_point(mdp, r, backup, tol, max_iters):
    """Discounted fixed point of ``backup`` over ``r: (..., S, A)``; returns a :class:`Plan`."""
    tol = _default_tol(r.dtype) if tol is None else tol
    gamma = mdp.discount
    with torch.no_grad():
        rd = r.detach()
        v, num_iters, residual = _iterate(
            lambda v: backup(rd + gamma * mdp.expected_next(v))[0], backup(rd)[0], gamma, tol,
            max_iters, "value iteration")
    v = _ImplicitFixedPoint.apply(r, v, mdp, backup, tol, max_iters)
    q = r + gamma * mdp.expected_next(v)
    v, log_policy = backup(q)
    return Plan(q, v, log_policy, num_iters, residual)


def _default_tol(dtype):
    return 1e-10 if dtype == torch.float64 else 1e-5


def _plan(mdp, reward, backup, terminal_reward, tol, max_iters):
    r = broadcast_reward(mdp, reward)
    if mdp.finite_horizon:
        terminal = None
        if terminal_reward is not None:
            S = mdp.n_states
            terminal = torch.as_tensor(terminal_reward, dtype=r.dtype, device=r.device)
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
    return _fixed_point(mdp, r, backup, tol, max_iters)


def soft_value_iteration(mdp: TabularMDP, reward: torch.Tensor, temperature: float = 1.0,
                         terminal_reward: torch.Tensor | None = None, tol: float | None = None,
                         max_iters: int = 100_000) -> Plan:
    """Soft (maximum causal entropy) value iteration.

    Args:
        mdp: the MDP; its horizon or discount picks backward induction or a fixed point.
        reward: ``(..., S, A)`` or ``(..., S)``; leading dims are batch.
        temperature: tau > 0; the policy is ``softmax(Q / tau)`` (tau -> 0 is the hard max).
        terminal_reward: ``(..., S)`` value of the state reached after the last decision
            (finite horizon only; default 0).
        tol: discounted only, error bound on ``v`` relative to ``max(1, |v|)``
            (default 1e-10 in float64, 1e-5 in float32).
        max_iters: discounted only; a :class:`ConvergenceWarning` reports non-convergence.

    Returns:
        :class:`Plan` with ``q``, ``v``, ``log_policy`` of shape ``(..., T, S, A)`` /
        ``(..., T, S)`` (finite horizon) or ``(..., S, A)`` / ``(..., S)`` (discounted).
    """
    _check_mdp(mdp)
    if isinstance(temperature, torch.Tensor) and temperature.numel() == 1:
        temperature = temperature.item()
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float, np.floating))
                                             and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature is {temperature!r}, expected a finite number > 0")
    if temperature == 1:
        return _plan(mdp, reward, _soft_backup, terminal_reward, tol, max_iters)
    tau = float(temperature)
    scaled = None if terminal_reward is None else torch.as_tensor(terminal_reward) / tau
    plan = _plan(mdp, broadcast_reward(mdp, reward) / tau, _soft_backup, scaled, tol, max_iters)
    return plan._replace(q=plan.q * tau, v=plan.v * tau, residual=plan.residual * tau)


def value_iteration(mdp: TabularMDP, reward: torch.Tensor,
                    terminal_reward: torch.Tensor | None = None, tol: float | None = None,
                    max_iters: int = 100_000) -> Plan:
    """Hard value iteration: the optimal ``Q*`` and a greedy policy (ties split uniformly).

    Shapes as in :func:`soft_value_iteration`; ``log_policy`` is ``-inf`` off the argmax.
    ``q`` is differentiable in ``reward`` (almost everywhere), as the Boltzmann likelihood needs.
    """
    _check_mdp(mdp)
    return _plan(mdp, reward, _hard_backup, terminal_reward, tol, max_iters)


def _policy_probs(mdp: TabularMDP, policy) -> torch.Tensor:
    """Action probabilities ``(..., T, S, A)`` or ``(..., S, A)`` from a Plan or a tensor."""
    probs = policy.policy if isinstance(policy, Plan) else torch.as_tensor(
        policy, dtype=mdp.dtype, device=mdp.device)
    S, A = mdp.n_states, mdp.n_actions
    need = 3 if mdp.finite_horizon else 2
    if probs.dim() < need or tuple(probs.shape[-2:]) != (S, A) or (
            mdp.finite_horizon and probs.shape[-3] != mdp.horizon):
        want = f"(..., {mdp.horizon}, {S}, {A})" if mdp.finite_horizon else f"(..., {S}, {A})"
        raise ValueError(f"policy must have shape {want}, got {tuple(probs.shape)}")
    return probs


def occupancy(mdp: TabularMDP, policy, initial: torch.Tensor | None = None,
              per_time: bool = False, tol: float | None = None,
              max_iters: int = 100_000) -> torch.Tensor:
    """Expected state-action visits of ``policy`` from ``initial`` (default ``mdp.initial``).

    Args:
        policy: a :class:`Plan`, or action probabilities ``(..., T, S, A)`` (finite horizon)
            or ``(..., S, A)`` (discounted).
        initial: ``(S,)`` start distribution.
        per_time: finite horizon only: return ``(..., T, S, A)`` per-step visitation.

    Returns:
        ``(..., S, A)``: summed over the T steps (total mass T), or discounted
        ``sum_t gamma^t Pr(s_t = s, a_t = a)`` (total mass ``1 / (1 - gamma)``).
    """
    _check_mdp(mdp)
    pi = _policy_probs(mdp, policy)
    mu = mdp.initial if initial is None else torch.as_tensor(initial, dtype=pi.dtype,
                                                             device=pi.device)
    if mu.shape != (mdp.n_states,):
        raise ValueError(f"initial must have shape ({mdp.n_states},), got {tuple(mu.shape)}")
    if mdp.finite_horizon:
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
    d = _solve_discounted(mdp, pi, mu.expand(pi.shape[:-2] + mu.shape), tol, max_iters,
                          "the discounted occupancy")
    return d.unsqueeze(-1) * pi


def policy_value(mdp: TabularMDP, policy, reward: torch.Tensor, **kwargs) -> torch.Tensor:
    """Expected return ``(...)`` of ``policy`` under ``reward`` from ``mdp.initial``.

    Finite horizon: expected sum of the T rewards; discounted: expected discounted sum.
    Keyword arguments go to :func:`occupancy`.
    """
    _check_mdp(mdp)
    return (occupancy(mdp, policy, **kwargs) * broadcast_reward(mdp, reward)).sum((-2, -1))


def feature_expectations(mdp: TabularMDP, policy, **kwargs) -> torch.Tensor:
    """Expected (discounted) feature counts ``(..., d)`` of ``policy`` from ``mdp.initial``."""
    _check_mdp(mdp)
    d = occupancy(mdp, policy, **kwargs)
    return torch.einsum("...sa,saf->...f", d, mdp.state_action_features())
