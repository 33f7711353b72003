"""What the posteriors of the model layer's targets share: their draws kept per chain beside
the target they came from.

:func:`per_chain` splits draws ``{site: (draws, *shape)}``, chains flattened in chain-major
order (what ``infer()`` hands ``make_posterior``), into ``(chains, draws_per_chain, *shape)``;
:class:`TargetDraws` gives the accessors that read only those draws and the target.
"""

from __future__ import annotations

import torch

from bayesirl._validation import check_int

__all__ = ["TargetDraws", "per_chain"]


def per_chain(params: dict[str, torch.Tensor], num_chains) -> dict[str, torch.Tensor]:
    """``{site: (C, D, *shape)}`` from ``{site: (C * D, *shape)}`` with ``C = num_chains``
    (a ValueError when the draws are not a multiple of it)."""
    C = check_int("num_chains", num_chains)
    n = next(iter(params.values())).shape[0]
    if n % C:
        raise ValueError(f"num_chains is {C} but there are {n} draws, not a multiple")
    return {k: v.reshape(C, n // C, *v.shape[1:]) for k, v in params.items()}


class TargetDraws:
    """A posterior's ``target`` and its site draws ``params: {site: (chains, draws, ...)}``;
    the MDP and demonstrations are the target's."""

    target: object
    params: dict[str, torch.Tensor]

    @property
    def mdp(self):
        return self.target.mdp

    @property
    def demos(self):
        return self.target.demos

    @property
    def num_chains(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def num_draws(self) -> int:
        """Draws per chain."""
        return next(iter(self.params.values())).shape[1]

    def flat_params(self) -> dict[str, torch.Tensor]:
        """Site draws with chains flattened, ``(chains * draws, ...)``."""
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.params.items()}
