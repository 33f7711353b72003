"""The finite-horizon soft DP and its adjoint on the CPU, compiled with Numba.

Everything is batch-first, as the user sees it: ``r (B, S, A)``, ``log_policy (B, T, S, A)``,
``v (B, T, S)``, and each direction is ONE compiled call, loops over time, states and batch
included. Inference plans small MDPs thousands of times (an 8x8 gridworld with horizon 30 is
10^4 state-actions per pass), where a loop of array operations would cost its Python and
dispatch overhead dozens of times per step; here a backup is a few nanoseconds per
state-action. The states are swept in blocks (:func:`block_size`) and, inside a block, one
batch row after another, so that the block's transitions stay in cache across the batch while
each row reads its successors' values from one contiguous ``(S,)`` row.

The forward pass keeps no scratch: ``v[:, t + 1]`` is the next step's value. The backward pass
is the adjoint recursion (see ``planning._SoftBackwardInduction``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_BLOCK_BYTES = 2**18  # transitions of one block of states: (C, A, K) indices and probabilities

_jit = numba.njit(cache=True, nogil=True)


def block_size(S: int, A: int, K: int) -> int:
    """States per block: their ``(C, A, K)`` indices and probabilities in about 256 KB."""
    return max(1, min(S, _BLOCK_BYTES // (16 * A * K)))


@_jit
def _q_state(succ, prob, r_b, v_next, s, q_out):
    """``q_out[a] = r_b[s, a] + sum_k prob[s, a, k] v_next[succ[s, a, k]]``; returns max_a."""
    m = -math.inf
    for a in range(succ.shape[1]):
        q = r_b[s, a]
        for k in range(succ.shape[2]):
            q += prob[s, a, k] * v_next[succ[s, a, k]]
        q_out[a] = q
        m = max(m, q)
    return m


@_jit
def _scatter_state(succ, prob, g_q, s, carry_b):
    """``carry_b[s'] += sum_a P(s' | s, a) g_q[a]``: the transpose of :func:`_q_state`."""
    for a in range(succ.shape[1]):
        for k in range(succ.shape[2]):
            carry_b[succ[s, a, k]] += prob[s, a, k] * g_q[a]


@_jit
def _forward(succ, prob, r, v_end, log_policy, v, C):
    B, T, S, A = log_policy.shape
    for t in range(T - 1, -1, -1):
        for s0 in range(0, S, C):
            for b in range(B):
                v_next = v_end[b] if t == T - 1 else v[b, t + 1]
                lp = log_policy[b, t]
                for s in range(s0, min(S, s0 + C)):
                    m = _q_state(succ, prob, r[b], v_next, s, lp[s])
                    z = 0.0
                    for a in range(A):
                        z += math.exp(lp[s, a] - m)
                    value = m + math.log(z)
                    v[b, t, s] = value
                    for a in range(A):
                        lp[s, a] -= value


def soft_dp_forward(succ, prob, r, v_end, log_policy, v):
    """Backward induction, filling ``log_policy (B, T, S, A)`` and ``v (B, T, S)``.

    ``succ, prob: (S, A, K)`` the sparse transitions, ``r: (B, S, A)``, ``v_end: (B, S)`` the
    value of the state reached after the last step. All C-contiguous, one floating dtype.
    """
    S, A, K = succ.shape
    _forward(succ, prob, r, v_end, log_policy, v, block_size(S, A, K))


@_jit
def _backward(succ, prob, log_policy, g_v, g_lp, g_r, carry, carry_next, g_q, C):
    B, T, S, A = log_policy.shape
    g_r[...] = 0
    carry[...] = 0
    for t in range(T):
        carry_next[...] = 0
        for s0 in range(0, S, C):
            for b in range(B):
                lp = log_policy[b, t]
                for s in range(s0, min(S, s0 + C)):
                    w = carry[b, s]
                    if g_v is not None:
                        w += g_v[b, t, s]
                    if g_lp is not None:
                        for a in range(A):
                            w -= g_lp[b, t, s, a]
                    for a in range(A):
                        g_q[a] = math.exp(lp[s, a]) * w
                        if g_lp is not None:
                            g_q[a] += g_lp[b, t, s, a]
                        g_r[b, s, a] += g_q[a]
                    _scatter_state(succ, prob, g_q, s, carry_next[b])
        carry, carry_next = carry_next, carry
    return carry


def _adjoint_buffers(B, S, A, dtype):
    """Scratch of the adjoint passes: two ``(B, S)`` carries and one ``(A,)`` row of g_q."""
    return np.empty((B, S), dtype), np.empty((B, S), dtype), np.empty(A, dtype)


def soft_dp_backward(succ, prob, log_policy, g_v, g_lp, g_r):
    """Adjoint of :func:`soft_dp_forward`, forward in time::

        g_q_t = G_lp[t] + pi_t * (G_v[t] + P^T g_q_{t-1} - sum_a G_lp[t]),
        g_r = sum_t g_q_t,   g_v_end = P^T g_q_{T-1}.

    ``g_v: (B, T, S)`` and ``g_lp: (B, T, S, A)`` are the output gradients (either may be
    None); writes ``dL/dr`` into ``g_r: (B, S, A)`` and returns ``dL/dv_end: (B, S)``.
    """
    B, _, S, A = log_policy.shape
    return _backward(succ, prob, log_policy, g_v, g_lp, g_r,
                     *_adjoint_buffers(B, S, A, log_policy.dtype), block_size(*succ.shape))


@_jit
def _hard_forward(succ, prob, r, v_end, q, v, C):
    B, T, S, A = q.shape
    for t in range(T - 1, -1, -1):
        for s0 in range(0, S, C):
            for b in range(B):
                v_next = v_end[b] if t == T - 1 else v[b, t + 1]
                for s in range(s0, min(S, s0 + C)):
                    v[b, t, s] = _q_state(succ, prob, r[b], v_next, s, q[b, t, s])


def hard_dp_forward(succ, prob, r, v_end, q, v):
    """Hard backward induction: fills ``q (B, T, S, A)`` and ``v = max_a q`` ``(B, T, S)``.
    Arguments as in :func:`soft_dp_forward`."""
    S, A, K = succ.shape
    _hard_forward(succ, prob, r, v_end, q, v, block_size(S, A, K))


@_jit
def _hard_backward(succ, prob, q, v, g_v, g_qo, g_r, carry, carry_next, g_q, rtol, C):
    B, T, S, A = q.shape
    g_r[...] = 0
    carry[...] = 0
    for t in range(T):
        carry_next[...] = 0
        for s0 in range(0, S, C):
            for b in range(B):
                for s in range(s0, min(S, s0 + C)):
                    w = carry[b, s]
                    if g_v is not None:
                        w += g_v[b, t, s]
                    top = v[b, t, s] - rtol * max(1.0, abs(v[b, t, s]))
                    n = 0
                    for a in range(A):
                        n += q[b, t, s, a] >= top
                    for a in range(A):
                        g_q[a] = w / n if q[b, t, s, a] >= top else 0.0
                        if g_qo is not None:
                            g_q[a] += g_qo[b, t, s, a]
                        g_r[b, s, a] += g_q[a]
                    _scatter_state(succ, prob, g_q, s, carry_next[b])
        carry, carry_next = carry_next, carry
    return carry


def hard_dp_backward(succ, prob, q, v, g_v, g_q, g_r, rtol):
    """Adjoint of :func:`hard_dp_forward`: ``v_t = max_a q_t`` passes its gradient to the
    maximising actions, split evenly among ties within ``rtol * max(1, |v|)``::

        g_q_t = G_q[t] + w_t * (G_v[t] + P^T g_q_{t-1}),   g_r = sum_t g_q_t,

    ``w_t`` the tie-split greedy policy. Writes ``dL/dr`` into ``g_r (B, S, A)`` and returns
    ``dL/dv_end (B, S)``.
    """
    B, _, S, A = q.shape
    return _hard_backward(succ, prob, q, v, g_v, g_q, g_r,
                          *_adjoint_buffers(B, S, A, q.dtype), rtol, block_size(*succ.shape))
