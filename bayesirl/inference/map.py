"""The maximum a posteriori point of a target (:func:`fit_map`).

The MAP minimises the target's potential without the log-Jacobian (``jacobian=False``): the mode
of the density of the constrained parameters, the point Pyro's ``AutoDelta`` finds, searched in
unconstrained coordinates so that no bounds are needed.
"""

from __future__ import annotations

import scipy.optimize
import torch

__all__ = ["fit_map"]


def _flattening(u0: dict[str, torch.Tensor]):
    """``(flatten, unflatten)`` between dicts shaped like ``u0`` and 1-d vectors; ``unflatten``
    takes anything ``torch.as_tensor`` takes and returns tensors in ``u0``'s dtype and device."""
    names = list(u0)
    shapes = [u0[k].shape for k in names]
    sizes = [u0[k].numel() for k in names]
    like = u0[names[0]]

    def flatten(u):
        return torch.cat([u[k].reshape(-1) for k in names])

    def unflatten(x):
        flat = torch.as_tensor(x, dtype=like.dtype, device=like.device)
        return {k: p.reshape(shape)
                for k, p, shape in zip(names, flat.split(sizes), shapes, strict=True)}

    return flatten, unflatten


def fit_map(target, u0: dict[str, torch.Tensor], max_iter: int = 200,
            jacobian: bool = False) -> tuple[dict[str, torch.Tensor], float]:
    """Minimise ``target.potential(u, jacobian)`` over unconstrained ``u`` from ``u0`` with
    SciPy's L-BFGS-B (no bounds: ``u`` is unconstrained); ``jacobian=False`` is the MAP of
    AutoDelta. Returns ``(u, loss)``, ``u`` shaped like ``u0``.

    SciPy rather than ``torch.optim.LBFGS``: the first step of a torch optimizer imports
    ``torch._dynamo``, seconds in every fresh process, parallel chains' included.
    """
    flatten, unflatten = _flattening(u0)

    def loss_and_grad(x):
        u = {k: v.clone().requires_grad_(True) for k, v in unflatten(x).items()}
        loss = target.potential(u, jacobian=jacobian)
        grads = torch.autograd.grad(loss, list(u.values()))
        grad = torch.cat([g.reshape(-1) for g in grads]).to("cpu", torch.float64).numpy()
        return float(loss.detach()), grad

    x0 = flatten(u0).to("cpu", torch.float64).numpy()
    result = scipy.optimize.minimize(loss_and_grad, x0, jac=True, method="L-BFGS-B",
                                     options={"maxiter": max_iter, "gtol": 1e-9, "ftol": 1e-14})
    return unflatten(result.x), float(result.fun)
