"""An initial HMC/NUTS metric (inverse mass matrix) from the curvature of the potential at the MAP.

Pyro's kernels start from the identity metric and only replace it at the end of the first slow
adaptation window. When the posterior's scales differ by orders of magnitude (a tabular reward
under a wide prior: states the demonstrations pin down beside states only the prior speaks
for), the early warmup then integrates with a step size set by the narrowest direction for as
many leapfrog steps as the widest one needs, i.e. at the maximum tree depth, and that costs
more than all the sampling after it. A Laplace approximation at the MAP, the inverse of the
potential's Hessian, is the metric the adaptation would converge to for a Gaussian posterior.

The Hessian comes from central finite differences of the gradient (the planners are
differentiable once), all ``2 D`` perturbed points evaluated as one batch.
"""

from __future__ import annotations

import torch

MAX_PARAMS = 1000        # beyond this, 2 D batched gradients cost more than they save
_CHUNK_ELEMENTS = 2**23  # planner outputs (batch, T, S, A) per chunk of perturbed points


def flatten(u: dict, names) -> torch.Tensor:
    """``u``'s values concatenated in the order ``names`` (Pyro's mass-matrix order)."""
    return torch.cat([u[k].reshape(-1) for k in names])


def laplace_inverse_mass(potential, u: dict, plan_size: int, dense: bool,
                         rel_step: float = 1e-4) -> torch.Tensor | None:
    """Inverse mass matrix ``(D, D)`` (``dense``) or ``(D,)`` from the Hessian of
    ``potential`` at ``u``, flattened over ``sorted(u)``.

    Args:
        potential: batched potential: ``u`` with leading batch dims ``(n,)`` -> ``(n,)``.
        u: the point (the MAP), unconstrained, unbatched.
        plan_size: ``T * S * A`` of one planner call, to chunk the batch by memory.
        dense: the dense inverse ``H^-1``, else its diagonal (the marginal variances).

    Returns None when there are more than :data:`MAX_PARAMS` parameters or the curvature is
    not finite. Directions of non-positive curvature (the likelihood need not be concave) get
    unit variance, the kernels' default.
    """
    names = sorted(u)
    sizes, shapes = [u[k].numel() for k in names], [u[k].shape for k in names]
    x0 = flatten(u, names).detach()
    D = x0.numel()
    if D > MAX_PARAMS:
        return None
    h = rel_step * x0.abs().clamp(min=1.0)
    eye = torch.diag(h)
    points = torch.cat([x0 + eye, x0 - eye])                             # (2D, D)
    grads = []
    for chunk in points.split(max(1, _CHUNK_ELEMENTS // max(plan_size, 1))):
        x = chunk.clone().requires_grad_(True)
        batch = {k: p.reshape(len(chunk), *shape)
                 for k, p, shape in zip(names, x.split(sizes, dim=1), shapes, strict=True)}
        grads.append(torch.autograd.grad(potential(batch).sum(), x)[0])
    g = torch.cat(grads)
    H = (g[:D] - g[D:]) / (2 * h[:, None])
    H = 0.5 * (H + H.T)
    if not torch.isfinite(H).all():
        return None
    lam, vec = torch.linalg.eigh(H)
    floor = 1e-8 * lam.abs().max().clamp(min=1.0)
    variances = torch.where(lam > floor, 1.0 / lam, torch.ones_like(lam))
    cov = (vec * variances) @ vec.T
    return 0.5 * (cov + cov.T) if dense else cov.diagonal().clone()
