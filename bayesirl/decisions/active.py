r"""Active learning: which states to ask the expert about next.

Lopes, Melo & Montesano, "Active learning for reward estimation in inverse reinforcement
learning" (ECML PKDD 2009) query the expert at the states where the posterior is most uncertain
about the expert's action. With ``pi_i(. | s)`` the expert policy under posterior draw ``i``
(soft or Boltzmann, as the posterior's likelihood says) and ``pbar = E_i[pi_i]``:

- ``"entropy"``: ``H(pbar(. | s))``, the entropy of the predicted action. It is also high where
  every draw agrees that the expert is indifferent between actions, which a query cannot fix.
- ``"info_gain"``: ``H(pbar(. | s)) - E_i[H(pi_i(. | s))]``, the mutual information between the
  expert's answer at ``s`` and the reward (BALD; Houlsby et al. 2011): the expected reduction of
  the posterior entropy from one answer, estimated from the draws. It is 0 where the draws agree.

For a finite horizon the per-step scores are averaged uniformly over the T steps (a query asks
for the action at ``s`` without naming a time).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from bayesirl._validation import check_int
from bayesirl.core.mdp import TabularMDP, check_mdp
from bayesirl.decisions._inputs import expert_probs, reward_draws
from bayesirl.posterior.reward_posterior import require_draws

__all__ = ["CRITERIA", "Query", "active_query"]

CRITERIA = ("entropy", "info_gain")


class Query(NamedTuple):
    """Result of :func:`active_query`: the ``k`` best ``states`` (LongTensor ``(k,)``, best
    first) and the ``scores`` ``(S,)`` of every state (excluded states keep theirs)."""

    states: torch.Tensor
    scores: torch.Tensor


def _excluded(exclude, S: int, device) -> torch.Tensor:
    """``(S,)`` bool mask from None, a bool mask or state indices."""
    mask = torch.zeros(S, dtype=torch.bool, device=device)
    if exclude is None:
        return mask
    e = torch.as_tensor(exclude, device=device).reshape(-1)
    if e.dtype == torch.bool:
        if e.numel() != S:
            raise ValueError(f"exclude as a mask must have shape ({S},), got {e.numel()} entries")
        return e
    if e.dtype.is_floating_point or e.dtype.is_complex:
        raise TypeError(f"exclude must hold integer state indices, got dtype {e.dtype}")
    bad = (e < 0) | (e >= S)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"exclude[{i}] is {int(e[i])}, expected a state index in [0, {S})")
    return mask.index_fill_(0, e.long(), True)


def active_query(mdp: TabularMDP, posterior, k: int = 1, criterion: str = "entropy",
                 exclude=None, weights=None) -> Query:
    """The ``k`` states whose expert action the posterior is most uncertain about.

    Args:
        mdp: the MDP.
        posterior: a :class:`~bayesirl.RewardPosterior` or reward draws ``(D, S)`` /
            ``(D, S, A)`` (then the soft expert with rationality 1).
        k: how many states, in ``[1, S - len(exclude)]``.
        criterion: ``"entropy"`` or ``"info_gain"`` (see the module docstring);
            ``"info_gain"`` compares draws, so it needs at least 2 (a ValueError for one
            draw, e.g. a MAP fit, where every score would be 0).
        exclude: states never returned (e.g. already asked): indices or an ``(S,)`` bool mask.
        weights: ``(D,)`` probabilities of the draws (default uniform).

    Returns:
        :class:`Query` ``(states, scores)``; ties keep the lower state index first.
    """
    mdp = check_mdp(mdp)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion is {criterion!r}, expected one of {CRITERIA}")
    S = mdp.n_states
    skip = _excluded(exclude, S, mdp.device)
    if skip.all():
        raise ValueError(f"exclude leaves no state to query: it excludes all {S} states")
    k = check_int("k", k, 1, S - int(skip.sum()))
    R, p = reward_draws(mdp, posterior, weights)
    if criterion == "info_gain":
        require_draws(R.shape[0], "active_query(criterion='info_gain')",
                      method=getattr(posterior, "method", None))
    probs = expert_probs(mdp, posterior, R)                       # (D, [T,] S, A)
    mean = torch.einsum("d,d...->...", p, probs)
    scores = torch.special.entr(mean).sum(-1)
    if criterion == "info_gain":
        each = torch.special.entr(probs).sum(-1)
        scores = (scores - torch.einsum("d,d...->...", p, each)).clamp(min=0)
    if mdp.finite_horizon:
        scores = scores.mean(0)
    ranked = torch.where(skip, torch.full_like(scores, -torch.inf), scores)
    order = torch.sort(ranked, descending=True, stable=True).indices
    return Query(order[:k], scores)
