"""A one-step model of continuous-state dynamics estimated from logged trajectories.

A value-space model reads the reward of an observed step off the soft Bellman equation at the
observed successor; a reward prior over the actions *not* taken needs their successors too,
which logs do not hold. :func:`knn_dynamics` estimates them by nearest neighbours among the
logged transitions with the same action, so it needs no model of the system and follows the
logged dynamics near the data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bayesirl._validation import ArgumentTypeError, check_int
from bayesirl.core.trajectories import Trajectories

__all__ = ["knn_dynamics"]


def knn_dynamics(data: Trajectories, neighbours: int = 5) -> Callable:
    """A one-step model of ``data``: ``f(obs (M, obs_dim), actions (M,)) -> (next_obs,
    p_terminal)``. For each query the ``neighbours`` observed transitions with the same action
    whose ``s`` is nearest (Euclidean, observations standardised by the data's spread) give the
    mean displacement ``s' - s``, added to the query, and the fraction that terminated; an
    action never taken falls back to all transitions. Near the data it follows the logged
    dynamics; far from them it extrapolates the nearest displacement. Queries are checked
    against ``data`` (:meth:`~bayesirl.core.trajectories.Trajectories.query_obs`,
    :meth:`~bayesirl.core.trajectories.Trajectories.query_actions`): observations of its width,
    one action or one per observation, each in ``[0, data.n_actions)``."""
    if not isinstance(data, Trajectories):
        raise ArgumentTypeError(f"data must be Trajectories (bayesirl.core.trajectories), got "
                                f"{type(data).__name__}")
    k = check_int("neighbours", neighbours)
    tr = data.transitions()
    spread = tr.obs.std(0) if tr.obs.shape[0] > 1 else torch.ones_like(tr.obs[0])
    spread = torch.where(spread > 0, spread, torch.ones_like(spread))

    def step(obs, actions):
        obs = data.query_obs("obs", obs)
        actions = data.query_actions(actions, obs.shape[0])
        nxt = torch.empty_like(obs)
        p_term = torch.empty(obs.shape[0], dtype=obs.dtype, device=obs.device)
        for action in actions.unique().tolist():
            rows = actions == action
            pool = tr.actions == action
            if not pool.any():
                pool = torch.ones_like(pool)
            src, dst = tr.obs[pool], tr.next_obs[pool]
            d = torch.cdist(obs[rows] / spread, src / spread)
            idx = d.topk(min(k, src.shape[0]), largest=False).indices
            nxt[rows] = obs[rows] + (dst[idx] - src[idx]).mean(1)
            p_term[rows] = tr.terminals[pool].to(obs.dtype)[idx].mean(1)
        return nxt, p_term

    return step
