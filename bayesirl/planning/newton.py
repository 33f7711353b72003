r"""Discounted Bellman fixed points by Newton-Kantorovich steps (Rust's polyalgorithm).

Plain value iteration converges at the rate of the discount gamma: at gamma = 0.9999 it needs
~10^5 sweeps for an error of 1e-10. Newton's method on ``F(v) = T(v) - v`` converges
quadratically whatever gamma is. For a backup ``T(v) = backup(r + gamma E[v(s')])`` whose
policy at ``v`` is ``pi`` (softmax for the soft backup, the greedy policy for the hard max), the
Jacobian is ``T'(v) = gamma P_pi`` with ``P_pi(s, s') = sum_a pi(a|s) P(s'|s, a)``, and a step is
one linear solve::

    v <- v + (I - gamma P_pi)^{-1} (T(v) - v).

For the hard max this is policy iteration (Howard 1960); for the soft backup it is soft policy
iteration: the step lands on the entropy-regularised value of ``pi``, which improves ``pi``.
Both converge from any start, monotonically after the first step, so a stale warm start can
cost steps but never give a wrong answer. Rust (1987; NFXP manual 2000) runs a few contraction
sweeps first, which cheaply move a cold start towards the fixed point.

``I - gamma P_pi`` is strictly diagonally dominant (rows of ``P_pi`` sum to 1, gamma < 1), so it
is nonsingular and LU needs no care. It is factored densely (batched LU, ``torch.linalg``) or
sparsely (SuperLU, ``scipy.sparse.linalg.splu``, one factorisation per batch row on the CPU),
whichever :func:`factorization_cost` estimates cheaper: dense for a few hundred states, sparse
beyond where the transitions are local (gridworlds: a bandwidth of about sqrt(S)). The adjoint
of the fixed point, ``(I - gamma P_pi)^T u = g``, is a transpose solve with the same factors.

Precision: ``|v|`` grows like ``|r| / (1 - gamma)`` and the near-singular direction of
``I - gamma P_pi`` (``||(I - gamma P_pi)^{-1}||_inf = 1 / (1 - gamma)``) is the level of ``v``,
so rounding in ``T(v) - v`` reaches the step amplified by ``1 / (1 - gamma)``. Everything here
is computed in float64 and returned in the reward's dtype; the stopping threshold is never below
that rounding floor, ``8 eps_64 / (1 - gamma)`` relative to ``max(1, |v|)``.

Shapes: ``reward (..., S, A)``, ``v (..., S)``, ``successors``/``probs`` ``(S, A, K)`` as in
:class:`~bayesirl.core.mdp.TabularMDP`; leading dims are batch (posterior draws).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
import torch

__all__ = [
    "DenseFactor",
    "NewtonResult",
    "SparseFactor",
    "WarmStarts",
    "expected_next",
    "factorization_cost",
    "factorize",
    "newton_fixed_point",
    "newton_cost",
    "policy_transitions",
    "rounding_floor",
    "structure_bandwidth",
    "sweep_cost",
]

DENSE_MAX_BYTES = 2**28   # a dense batch of (B, S, S) float64 matrices at most this large
MIN_SWEEPS, MAX_SWEEPS = 2, 20  # contraction sweeps before the first Newton step (cold start)

# Cost model, in units of one state-action-successor term of a sweep (gather, multiply, add,
# log-sum-exp share); constants fitted to single-core timings of sweeps and factorisations on
# gridworlds, chains and random MDPs (benchmarks/discounted.py times the two solvers).
SWEEP_OVERHEAD = 6_000                  # per sweep: dispatch of a handful of torch operations
DENSE_FLOP, DENSE_OVERHEAD = 0.01, 3_000
SPARSE_FLOP, SPARSE_OVERHEAD = 0.1, 60_000  # SuperLU and its per-row Python call
NEWTON_STEPS = 10                       # sweeps and Newton steps a cold solve typically takes

Backup = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def expected_next(successors: torch.Tensor, probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``E[v(s') | s, a] = sum_k probs[s, a, k] v[succ[s, a, k]]``: ``v (B, S)`` -> ``(B, S, A)``.

    A gather, differentiable in ``v`` and ``probs`` (``(B, S, A, K)`` of temporary memory)."""
    return (v[:, successors] * probs).sum(-1)


def policy_transitions(successors: torch.Tensor, probs: torch.Tensor,
                       policy: torch.Tensor) -> torch.Tensor:
    """Dense ``P_pi (B, S, S')`` of ``policy (B, S, A)``: ``sum_a pi(a|s) P(s'|s, a)``."""
    B, S, A = policy.shape
    K = probs.shape[-1]
    out = policy.new_zeros(B, S, S)
    src = (policy.unsqueeze(-1) * probs).reshape(B, S, A * K)
    return out.scatter_add_(-1, successors.reshape(1, S, A * K).expand(B, S, A * K), src)


class DenseFactor:
    """Batched LU factors of ``I - gamma P_pi``, ``(B, S, S)`` (``torch.linalg.lu_factor``)."""

    def __init__(self, successors, probs, policy, gamma):
        m = -gamma * policy_transitions(successors, probs, policy)
        m.diagonal(dim1=-2, dim2=-1).add_(1.0)
        self.lu, self.pivots = torch.linalg.lu_factor(m)

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``(I - gamma P_pi)^{-1} rhs`` for ``rhs (B, S)``."""
        return torch.linalg.lu_solve(self.lu, self.pivots, rhs.unsqueeze(-1)).squeeze(-1)

    def solve_transpose(self, rhs: torch.Tensor) -> torch.Tensor:
        """``(I - gamma P_pi)^{-T} rhs`` for ``rhs (B, S)``."""
        return torch.linalg.lu_solve(self.lu, self.pivots, rhs.unsqueeze(-1),
                                     adjoint=True).squeeze(-1)

    def solve_columns(self, rhs: torch.Tensor) -> torch.Tensor:
        """``(I - gamma P_pi)^{-1} rhs`` for every column of ``rhs (B, S, k)``."""
        return torch.linalg.lu_solve(self.lu, self.pivots, rhs)


class SparseFactor:
    """SuperLU factors of ``I - gamma P_pi``, one per batch row (``scipy.sparse.linalg.splu``).

    Works on the CPU in float64; ``solve`` returns tensors on the input's device and dtype."""

    def __init__(self, successors, probs, policy, gamma):
        B, S, A = policy.shape
        succ = successors.detach().cpu().numpy().reshape(S, -1)
        p = probs.detach().cpu().to(torch.float64).numpy()
        pi = policy.detach().cpu().to(torch.float64).numpy()
        rows = np.repeat(np.arange(S), succ.shape[1])
        cols = succ.reshape(-1)
        eye = scipy.sparse.identity(S, dtype=np.float64, format="csc")
        self.factors = []
        for b in range(B):
            vals = (pi[b][:, :, None] * p).reshape(-1)
            m = eye - gamma * scipy.sparse.csc_matrix((vals, (rows, cols)), shape=(S, S))
            self.factors.append(scipy.sparse.linalg.splu(m))

    def _solve(self, rhs: torch.Tensor, trans: str) -> torch.Tensor:
        x = rhs.detach().cpu().to(torch.float64).numpy()
        out = np.stack([f.solve(x[b], trans=trans) for b, f in enumerate(self.factors)])
        return torch.from_numpy(out).to(device=rhs.device, dtype=rhs.dtype)

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``(I - gamma P_pi)^{-1} rhs`` for ``rhs (B, S)``."""
        return self._solve(rhs, "N")

    def solve_transpose(self, rhs: torch.Tensor) -> torch.Tensor:
        """``(I - gamma P_pi)^{-T} rhs`` for ``rhs (B, S)``."""
        return self._solve(rhs, "T")

    def solve_columns(self, rhs: torch.Tensor) -> torch.Tensor:
        """``(I - gamma P_pi)^{-1} rhs`` for every column of ``rhs (B, S, k)``."""
        return self._solve(rhs, "N")


_bandwidths: OrderedDict[int, tuple[weakref.ref, int]] = OrderedDict()
_bandwidth_lock = threading.Lock()


def structure_bandwidth(successors: torch.Tensor, probs: torch.Tensor) -> int:
    """Bandwidth of the transition graph (entries with ``probs > 0``) after reverse
    Cuthill-McKee ordering: a bound on the fill of a sparse LU of ``I - gamma P_pi``, whatever
    the policy. ``O(S A K)``; cached per ``successors`` tensor (held weakly)."""
    with _bandwidth_lock:
        hit = _bandwidths.get(id(successors))
        if hit is not None and hit[0]() is successors:
            return hit[1]
    S = successors.shape[0]
    succ = successors.detach().cpu().numpy().reshape(S, -1)
    mask = probs.detach().cpu().numpy().reshape(S, -1) != 0
    rows = np.broadcast_to(np.arange(S)[:, None], succ.shape)[mask]
    cols = succ[mask]
    graph = scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(S, S))
    perm = scipy.sparse.csgraph.reverse_cuthill_mckee(graph, symmetric_mode=False)
    pos = np.empty(S, dtype=np.int64)
    pos[perm] = np.arange(S)
    width = int(np.abs(pos[rows] - pos[cols]).max()) if len(rows) else 0
    with _bandwidth_lock:
        _bandwidths[id(successors)] = (weakref.ref(successors), width)
        while len(_bandwidths) > 64:
            _bandwidths.popitem(last=False)
    return width


def sweep_cost(n_states: int, n_actions: int, n_successors: int) -> float:
    """Estimated cost of one sweep (see the cost model's constants)."""
    return n_states * n_actions * n_successors + SWEEP_OVERHEAD


def factorization_cost(successors: torch.Tensor, probs: torch.Tensor,
                       batch: int = 1) -> tuple[float, bool]:
    """``(cost, dense)``: the estimated cost of factoring ``I - gamma P_pi`` for one batch row
    and whether the dense LU is the cheaper one.

    Dense LU costs ``2 S^3 / 3`` flops; a sparse LU at most ``2 S b^2`` with ``b`` the
    :func:`structure_bandwidth` (a pessimistic bound for transitions that reset to one state,
    such as engine replacement, whose column is full). Dense is also ruled out when the
    ``(B, S, S)`` float64 batch would exceed :data:`DENSE_MAX_BYTES`.
    """
    S = successors.shape[0]
    dense = DENSE_FLOP * 2 * S ** 3 / 3 + DENSE_OVERHEAD
    if S ** 2 * batch * 8 > DENSE_MAX_BYTES:
        dense = math.inf
    b = structure_bandwidth(successors, probs)
    sparse = SPARSE_FLOP * 2 * S * b ** 2 + SPARSE_OVERHEAD
    return (dense, True) if dense <= sparse else (sparse, False)


def newton_cost(successors: torch.Tensor, probs: torch.Tensor, batch: int = 1) -> float:
    """Estimated cost of a cold Newton solve: :data:`NEWTON_STEPS` sweeps and factorisations."""
    S, A, K = successors.shape
    return NEWTON_STEPS * (sweep_cost(S, A, K) + factorization_cost(successors, probs, batch)[0])


def factorize(successors: torch.Tensor, probs: torch.Tensor, policy: torch.Tensor,
              gamma: float, dense: bool | None = None) -> DenseFactor | SparseFactor:
    """Factors of ``I - gamma P_pi`` for ``policy (B, S, A)``; ``dense=None`` picks the cheaper
    by :func:`factorization_cost`."""
    if dense is None:
        dense = factorization_cost(successors, probs, policy.shape[0])[1]
    return (DenseFactor if dense else SparseFactor)(successors, probs, policy, gamma)


def rounding_floor(gamma: float) -> float:
    """Smallest relative step the float64 iteration can resolve: ``8 eps / (1 - gamma)``."""
    return 8 * torch.finfo(torch.float64).eps / (1 - gamma)


class NewtonResult(NamedTuple):
    """``v (..., S)`` in float64 (cast it to the reward's dtype); ``factor``: the factors of
    ``I - gamma P_pi`` at the last Newton iterate (for the adjoint); ``num_iters``: sweeps plus
    Newton steps; ``residual``: ``max |T(v) - v|`` at the returned ``v``; ``converged``;
    ``log_policy (..., S, A)``: the backup's policy at the returned ``v`` (float64; computed
    for the residual, kept for callers that need the policy of the fixed point)."""

    v: torch.Tensor
    factor: DenseFactor | SparseFactor | None
    num_iters: int
    residual: float
    converged: bool
    log_policy: torch.Tensor


def _sweeps(r, expect, gamma, backup, v, max_sweeps):
    """Contraction sweeps ``v <- T(v)`` until the change shrinks at the asymptotic rate gamma
    (within 0.02, Rust's test) or after ``max_sweeps``; at least :data:`MIN_SWEEPS`."""
    change = math.inf
    n = 0
    for n in range(1, max_sweeps + 1):
        v_new = backup(r + gamma * expect(v))[0]
        new_change = (v_new - v).abs().max().item()
        ratio = new_change / change if change > 0 else 0.0
        v, change = v_new, new_change
        if n >= MIN_SWEEPS and (abs(ratio - gamma) < 0.02 or change == 0):
            break
    return v, n


def newton_fixed_point(reward: torch.Tensor, successors: torch.Tensor, probs: torch.Tensor,
                       gamma: float, backup: Backup, v0: torch.Tensor | None = None,
                       tol: float = 1e-10, max_iters: int = 100,
                       dense: bool | None = None,
                       expect: Callable[[torch.Tensor], torch.Tensor] | None = None
                       ) -> NewtonResult:
    """The fixed point ``v = backup(reward + gamma E[v(s')])`` by Newton-Kantorovich steps.

    Args:
        reward: ``(..., S, A)``; leading dims are batch.
        successors, probs: ``(S, A, K)`` transitions.
        gamma: discount in [0, 1).
        backup: ``q (B, S, A) -> (v (B, S), log_policy (B, S, A))``, the log-sum-exp or the max
            with its policy (the Jacobian's ``pi``).
        v0: ``(..., S)`` start (a warm start); ``None`` starts from ``backup(reward)`` and runs
            contraction sweeps first.
        tol: stop when every batch row's Newton step is at most ``max(tol, rounding_floor)``
            times ``max(1, |v|)`` of that row; the step after that one would be of order the
            square of it (quadratic convergence).
        max_iters: sweeps plus Newton steps; ``converged`` is False when they run out or the
            iterate is not finite.
        dense: force dense (True) or sparse (False) factors; ``None`` picks by
            :func:`factorization_cost`.
        expect: ``v (B, S) -> E[v(s') | s, a] (B, S, A)`` in float64 (default: the gather
            :func:`expected_next`; the MDP's sparse operators are faster on wide batches).

    Returns:
        :class:`NewtonResult`; no graph is built (call under ``torch.no_grad`` or detach).
    """
    batch, (S, A) = reward.shape[:-2], reward.shape[-2:]
    r = reward.detach().reshape(-1, S, A).to(torch.float64)
    p = probs.detach().to(torch.float64)
    B = r.shape[0]
    if expect is None:
        def expect(v):
            return expected_next(successors, p, v)
    if dense is None:
        dense = factorization_cost(successors, p, B)[1]
    if B == 0:
        return NewtonResult(r.new_zeros(*batch, S), None, 0, 0.0, True, r.new_zeros(*batch, S, A))
    thr = max(tol, rounding_floor(gamma))
    n = 0
    if v0 is None:
        v = backup(r)[0]
        v, n = _sweeps(r, expect, gamma, backup, v, min(MAX_SWEEPS, max_iters - 1))
    else:
        v = v0.detach().reshape(B, S).to(torch.float64)
    factor, converged = None, False
    while n < max_iters:
        tv, log_pi = backup(r + gamma * expect(v))
        factor = factorize(successors, p, log_pi.exp(), gamma, dense)
        step = factor.solve(tv - v)
        v = v + step
        n += 1
        size = step.abs().amax(-1)
        if not torch.isfinite(size).all():
            break
        if (size <= thr * v.abs().amax(-1).clamp(min=1.0)).all():
            converged = True
            break
    tv, log_pi = backup(r + gamma * expect(v))
    residual = (tv - v).abs().max().item()
    if not math.isfinite(residual):
        converged = False
    return NewtonResult(v.reshape(*batch, S), factor, n, residual, converged,
                        log_pi.reshape(*batch, S, A))


class WarmStarts:
    """Last solutions per transition structure, as start points for the next solve.

    Keyed by the ``successors`` tensor's identity (held weakly, so an MDP and its copies from
    ``with_probabilities`` or ``to(dtype)`` share an entry) and a tag (backup, discount, batch
    shape). At most ``max_structures`` structures and ``max_tags`` tags each, least recently
    used dropped first. A start point only: the Newton iterations converge from any of them.
    Thread-safe.
    """

    def __init__(self, max_structures: int = 16, max_tags: int = 8):
        self.max_structures, self.max_tags = max_structures, max_tags
        self._entries: OrderedDict[int, tuple[weakref.ref, OrderedDict]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, structure: torch.Tensor, tag) -> torch.Tensor | None:
        with self._lock:
            entry = self._entries.get(id(structure))
            if entry is None or entry[0]() is not structure:
                return None
            self._entries.move_to_end(id(structure))
            tags = entry[1]
            v = tags.get(tag)
            if v is not None:
                tags.move_to_end(tag)
            return v

    def put(self, structure: torch.Tensor, tag, v: torch.Tensor) -> None:
        v = v.detach()
        if not torch.isfinite(v).all():
            return
        with self._lock:
            entry = self._entries.get(id(structure))
            if entry is None or entry[0]() is not structure:
                entry = (weakref.ref(structure), OrderedDict())
                self._entries[id(structure)] = entry
            self._entries.move_to_end(id(structure))
            entry[1][tag] = v
            entry[1].move_to_end(tag)
            while len(entry[1]) > self.max_tags:
                entry[1].popitem(last=False)
            while len(self._entries) > self.max_structures:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for ref, _ in self._entries.values() if ref() is not None)
