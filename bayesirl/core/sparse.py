"""Sparse transition operators with hand-written adjoints.

``P``, the ``(S * A, S')`` matrix of a :class:`~bayesirl.TabularMDP`, is kept as CSR in both
orientations, so the expectation ``E[v(s') | s, a]`` and its transpose (pushing state-action mass
forward to next states) are each one sparse-dense product, and each is the other's backward.
A plain ``index_select`` would materialise ``(..., S, A, K)`` and backpropagate with a scattered
``index_add``, much slower on wide batches (``benchmarks/RESULTS.md``, "Figures behind design
choices"). These operators serve ``expected_next``/``push`` and the
accelerator path of the finite-horizon DP; on the CPU that DP is compiled
(:mod:`bayesirl.planning.cpu_kernels`).

Dense operands are batch-last, ``(S, B)`` and ``(S * A, B)``: the layout sparse products want.

Tiny MDPs (``S * A * S <= DENSE_MAX``, a few hundred states) use a dense ``(S * A, S)`` matrix
instead: a 2 MB matrix-vector product beats any sparse kernel there, and the CSR kernels start
OpenMP threads whose start-up outweighs that little work, most of all on a loaded machine.
Large MDPs never materialise anything dense.
"""

from __future__ import annotations

import warnings

import torch

DENSE_MAX = 2**18


def transition_operators(successors: torch.Tensor, probs: torch.Tensor):
    """``(P, P^T)`` of shapes ``(S * A, S)`` and ``(S, S * A)``: dense for tiny MDPs, else CSR."""
    S, A, K = probs.shape
    if S * A * S <= DENSE_MAX:
        P = torch.zeros(S, A, S, dtype=probs.dtype, device=probs.device)
        P = P.scatter_add_(-1, successors, probs).reshape(S * A, S)
        return P, P.T
    rows = torch.arange(S * A, device=probs.device).repeat_interleave(K)
    cols = successors.reshape(-1)
    vals = probs.reshape(-1)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        P = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (S * A, S),
                                    check_invariants=False).coalesce().to_sparse_csr()
        PT = torch.sparse_coo_tensor(torch.stack([cols, rows]), vals, (S, S * A),
                                     check_invariants=False).coalesce().to_sparse_csr()
    return P, PT


def matmul(M, MT, x):
    """``M @ x`` for ``x: (n, B)``; differentiable in ``x`` with ``MT`` as the adjoint."""
    return M @ x if M.layout == torch.strided else SparseMatmul.apply(x, M, MT)


class SparseMatmul(torch.autograd.Function):
    """``M @ x`` for a CSR ``M: (m, n)`` and dense ``x: (n, B)``, with ``M^T`` for the adjoint."""

    @staticmethod
    def forward(ctx, x, M, MT):
        ctx.MT, ctx.M = MT, M
        return M @ x

    @staticmethod
    def backward(ctx, g):
        return SparseMatmul.apply(g.contiguous(), ctx.MT, ctx.M), None, None


def batch_last(x: torch.Tensor, event_dims: int) -> torch.Tensor:
    """``(..., *event)`` -> ``(prod(event), B)`` (a view where the strides allow)."""
    event = x.shape[x.dim() - event_dims:]
    flat = x.reshape(-1, *event).flatten(1)
    return flat.T


def batch_first(x: torch.Tensor, batch_shape, event_shape) -> torch.Tensor:
    """Inverse of :func:`batch_last`: ``(prod(event), B)`` -> ``(*batch, *event)``."""
    return x.T.reshape(*batch_shape, *event_shape)
