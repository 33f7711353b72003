"""The per-demonstration log-likelihood of a finite-horizon MDP on the CPU, as one autograd node.

MCMC evaluates ``reward -> plan -> log pi_t(a_t | s_t) at the demonstrations -> sum`` and its
gradient thousands of times on small MDPs, where the planner itself takes a fraction of a
millisecond and a chain of tensor operations around it (a log-softmax over every ``(t, s)``
row, a gather, a mask, a sum, each with its backward) would cost more than the planning.
:class:`DemoLogLikelihood` plans with the compiled DPs of :mod:`bayesirl.planning.cpu_kernels`,
reads only the demonstrated ``(t, s)`` rows, and in the backward pass puts the gradient of
those rows straight into the DP's adjoint:

- soft: ``dL/d log pi_t(., s_t) = onehot(a_t)`` (the adjoint then gives empirical minus
  expected visitation, the maximum causal entropy identity);
- Boltzmann, ``log pi = log_softmax(beta q)``: ``dL/dq_t(., s_t) = beta (onehot(a_t) - pi)``
  and ``dL/dbeta = q_t(a_t) - E_pi[q_t]``, into the hard DP's adjoint.

The density is that of :func:`bayesirl.model.likelihood.demo_log_likelihood`'s generic path (a test
checks values and gradients against it).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from bayesirl.planning import cpu_kernels as _cpu_dp
from bayesirl.planning.bellman import _no_double_backward, _numpy, _tie_rtol

_jit = numba.njit(cache=True, nogil=True)


@_jit
def _boltzmann_row(row, beta, p):
    """``log sum_a exp(beta row[a])``, with ``p`` filled with ``softmax(beta row)``."""
    m = -math.inf
    for a in range(row.size):
        m = max(m, beta * row[a])
    z = 0.0
    for a in range(row.size):
        p[a] = math.exp(beta * row[a] - m)
        z += p[a]
    for a in range(row.size):
        p[a] /= z
    return m + math.log(z)


@_jit
def _terms(out, states, actions, mask, beta, boltzmann, ll):
    """``ll[b, n] = sum_t mask * log pi_t(a | s)`` from ``out (B, T, S, A)`` (the log-policy,
    or with ``boltzmann`` the Q-values of which ``log_softmax(beta[b] q)`` is the policy);
    ``states, actions, mask: (N, L)``, ``beta: (B,)``."""
    B, N, L = out.shape[0], states.shape[0], states.shape[1]
    p = np.empty(out.shape[3], out.dtype)
    for b in range(B):
        for n in range(N):
            total = 0.0
            for t in range(L):
                if not mask[n, t]:
                    continue
                row, a = out[b, t, states[n, t]], actions[n, t]
                if boltzmann:
                    total += beta[b] * row[a] - _boltzmann_row(row, beta[b], p)
                else:
                    total += row[a]
            ll[b, n] = total


@_jit
def _term_grads(out, states, actions, mask, beta, boltzmann, g_ll, g_out, g_beta):
    """The adjoint of :func:`_terms`: adds ``dL/d out`` into the zeroed ``g_out (B, T, S, A)``
    and (Boltzmann) ``dL/d beta`` into the zeroed ``g_beta (B,)``, for ``g_ll = dL/d ll``."""
    B, N, L = out.shape[0], states.shape[0], states.shape[1]
    A = out.shape[3]
    p = np.empty(A, out.dtype)
    for b in range(B):
        for n in range(N):
            g = g_ll[b, n]
            for t in range(L):
                if not mask[n, t]:
                    continue
                s, a_obs = states[n, t], actions[n, t]
                if boltzmann:
                    row = out[b, t, s]
                    _boltzmann_row(row, beta[b], p)
                    mean_q = 0.0
                    for a in range(A):
                        mean_q += p[a] * row[a]
                        g_out[b, t, s, a] -= g * beta[b] * p[a]
                    g_out[b, t, s, a_obs] += g * beta[b]
                    g_beta[b] += g * (row[a_obs] - mean_q)
                else:
                    g_out[b, t, s, a_obs] += g


def log_likelihood(r, beta, mdp, demos, boltzmann):
    """``ll (B, N)`` for NumPy ``r (B, S, A)``, ``beta (B,)``, and what
    :func:`log_likelihood_grad` needs (the plan and the demonstrations' indices)."""
    B, S, A = r.shape
    T = mdp.horizon
    succ, prob = _numpy(mdp.successors), _numpy(mdp.transition_probs)
    out, v = np.empty((B, T, S, A), r.dtype), np.empty((B, T, S), r.dtype)
    v_end = np.zeros((B, S), r.dtype)
    if boltzmann:
        _cpu_dp.hard_dp_forward(succ, prob, r, v_end, out, v)
    else:
        _cpu_dp.soft_dp_forward(succ, prob, r, v_end, out, v, threads=torch.get_num_threads())
    index = (_numpy(demos.states), _numpy(demos.actions), _numpy(demos.mask))
    ll = np.empty((B, demos.n), r.dtype)
    _terms(out, *index, beta, boltzmann, ll)
    return ll, (succ, prob, out, v, index, beta, boltzmann)


def log_likelihood_grad(saved, g_ll):
    """``(dL/dr (B, S, A), dL/dbeta (B,))`` for ``g_ll = dL/d ll (B, N)``, ``saved`` from
    :func:`log_likelihood`."""
    succ, prob, out, v, index, beta, boltzmann = saved
    B, _, S, A = out.shape
    g_out, g_beta = np.zeros_like(out), np.zeros_like(beta)
    _term_grads(out, *index, beta, boltzmann, g_ll, g_out, g_beta)
    g_r = np.empty((B, S, A), out.dtype)
    if boltzmann:
        rtol = _tie_rtol(torch.float64 if out.dtype == np.float64 else torch.float32)
        _cpu_dp.hard_dp_backward(succ, prob, out, v, None, g_out, g_r, rtol)
    else:
        _cpu_dp.soft_dp_backward(succ, prob, out, None, g_out, g_r,
                                 threads=torch.get_num_threads())
    return g_r, g_beta


class DemoLogLikelihood(torch.autograd.Function):
    """``(r (B, S, A), beta (B,)) -> (B, N)`` per-demonstration log-likelihood.

    Soft: ``r`` is already scaled by the rationality and ``beta`` is ignored (ones).
    Boltzmann: ``log pi = log_softmax(beta q*)`` with the hard optimal ``q*`` of ``r``.
    """

    @staticmethod
    def forward(ctx, r, beta, mdp, demos, boltzmann):
        ll, ctx.saved = log_likelihood(_numpy(r), _numpy(beta), mdp, demos, boltzmann)
        return torch.from_numpy(ll)

    @staticmethod
    def backward(ctx, g_ll):
        _no_double_backward()
        g_r, g_beta = log_likelihood_grad(ctx.saved, _numpy(g_ll))
        return torch.from_numpy(g_r), torch.from_numpy(g_beta), None, None, None
