"""Flat parameter vectors: a dict of tensors ``{site: (*shape,)}`` and one vector ``(n,)``.

Targets take and return dicts of sites; an optimiser (scipy's L-BFGS), a Hessian, the rows of
per-observation scores and a batch of chains each want one vector per point. There is one
layout for all of them: the sites in the dict's order, each flattened row-major, so a vector
made by one layer is read correctly by another.
"""

from __future__ import annotations

import math

import torch

__all__ = ["flattening"]


def flattening(like: dict[str, torch.Tensor]):
    """``(flatten, unflatten)`` between dicts shaped like ``like`` and vectors.

    ``flatten(u) -> (n,)`` concatenates the sites of ``u`` (shaped as in ``like``).
    ``unflatten(x)``: ``x (..., n)``, anything ``torch.as_tensor`` takes (a NumPy vector from
    scipy included), in ``like``'s dtype and device -> ``{site: (..., *like[site].shape)}``;
    leading dims are a batch (chains, draws, one row per observation) and stay leading.
    """
    names = list(like)
    shapes = [tuple(like[k].shape) for k in names]
    sizes = [math.prod(s) for s in shapes]
    ref = like[names[0]]

    def flatten(u: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([u[k].reshape(-1) for k in names])

    def unflatten(x) -> dict[str, torch.Tensor]:
        flat = torch.as_tensor(x, dtype=ref.dtype, device=ref.device)
        return {k: part.reshape((*flat.shape[:-1], *shape))
                for k, part, shape in zip(names, flat.split(sizes, -1), shapes, strict=True)}

    return flatten, unflatten
