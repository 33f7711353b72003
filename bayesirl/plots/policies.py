"""Policy figures: action probabilities as arrows (with posterior uncertainty) and where a
policy goes (its expected visits).

Grid MDPs (``mdp.shape`` set) are drawn with row 0 at the top, so the action "up" points up;
other MDPs get a state x action image (policies) or bars (visits). Every function takes
``ax=None`` and returns the axes it drew on.
"""

from __future__ import annotations

import numpy as np
import torch

from bayesirl._validation import as_tensor, check_distribution_rows
from bayesirl.planning.buffers import DRAWS_PER_PLAN
from bayesirl.plots.common import (
    as_numpy,
    draw_marks,
    grid_axes,
    is_posterior,
    new_axes,
    posterior_rewards,
    reduce_actions,
    resolve_marks,
)

__all__ = ["plot_policy", "plot_visits"]

#: (d_row, d_col) of the action names that :func:`plot_policy` draws as arrows
_MOVES = {"stay": (0, 0), "up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
_ARROW = 0.45   # arrow length, in cells, of an action taken with probability 1
_DOT = 120.0    # marker area (points^2) of "stay" taken with probability 1


def _policy_probs(policy) -> np.ndarray:
    """A plan's action probabilities, or those of a tensor ``(..., S, A)`` whose rows are
    distributions (log-probabilities or Q-values raise, naming ``policy``)."""
    if hasattr(policy, "log_policy"):
        return as_numpy(policy.log_policy.exp())
    probs = as_tensor("policy", policy)
    if probs.dim() >= 2:  # others fail plot_policy's shape check
        check_distribution_rows("policy", probs)
    return as_numpy(probs)


def _policy_draws(posterior, t: int, max_draws: int = 200) -> np.ndarray:
    """Expert action probabilities ``(n, S, A)`` at step ``t`` under at most ``max_draws``
    evenly spaced posterior reward draws."""
    from bayesirl.model.likelihood import action_log_probs

    mdp, rewards = posterior_rewards(posterior, "plot_policy")
    likelihood = (getattr(posterior, "settings", None) or {}).get("likelihood", "soft")
    beta = posterior.rationality
    idx = torch.linspace(0, rewards.shape[0] - 1, min(max_draws, rewards.shape[0])).round()
    idx = idx.long().unique()
    if mdp.finite_horizon and not 0 <= t < mdp.horizon:
        raise ValueError(f"t is {t}, expected a step in [0, {mdp.horizon})")
    out = []
    with torch.no_grad():
        for chunk in idx.split(DRAWS_PER_PLAN):
            p = action_log_probs(mdp, rewards[chunk], likelihood, beta[chunk]).exp()
            out.append(p[:, t] if mdp.finite_horizon else p)
    return as_numpy(torch.cat(out))


def _background(mdp, background) -> tuple[np.ndarray, str]:
    """``background`` as ``(S,)`` values and a note for the colorbar: ``(S,)`` as it is,
    ``(S, A)`` reduced over actions (the maximum, as :func:`plot_reward`); else a ValueError
    naming ``background`` and its shape."""
    S, A = mdp.n_states, mdp.n_actions
    bg = as_numpy(background)
    if bg.shape == (S, A):
        return reduce_actions(bg, "max")
    if bg.shape != (S,) or not np.all(np.isfinite(bg)):
        raise ValueError(f"background must be {S} finite values, one per state, with shape "
                         f"({S},) or ({S}, {A}) (reduced over actions), got shape {bg.shape}")
    return bg, ""


def _directions(mdp, directions):
    names = directions if directions is not None else mdp.action_names
    if names is None:
        return None
    names = tuple(names)
    if len(names) != mdp.n_actions or any(n not in _MOVES for n in names):
        if directions is not None:
            raise ValueError(f"directions is {directions!r}, expected {mdp.n_actions} names "
                             f"from {tuple(_MOVES)}")
        return None
    return [_MOVES[n] for n in names]


def plot_policy(mdp, policy, ax=None, uncertainty=None, t: int = 0, background=None,
                directions=None, min_prob: float = 0.02, title=None, max_draws: int = 200,
                marks="auto"):
    """Action probabilities: arrows on grid MDPs, a state x action image otherwise.

    Args:
        mdp: the MDP (``mdp.shape`` set for arrows).
        policy: a plan (``log_policy``), a :class:`RewardPosterior` (its posterior-averaged
            policy, over at most ``max_draws`` evenly spaced draws) or probabilities
            ``(S, A)`` / ``(T, S, A)``; time-indexed policies are drawn at step ``t``.
        uncertainty: ``(S,)`` or ``(S, A)`` non-negative values (e.g. posterior sd of the action
            probabilities), drawn as arrow transparency: opaque where 0, faint at the maximum;
            ``"sd"`` computes that sd from a posterior ``policy``.
        background: ``(S,)`` values drawn in grey under the arrows (e.g. the mean reward),
            or ``(S, A)`` values (``posterior.mean_reward()``) reduced to their maximum over
            actions as :func:`~bayesirl.plots.plot_reward` reduces them (exact when constant
            over actions; the colorbar says so otherwise). Grid MDPs only.
        directions: action names from ``stay, up, down, left, right`` in action order
            (default ``mdp.action_names``; :data:`bayesirl.core.envs.GYM_DIRECTIONS` has
            Gymnasium's grids).
        min_prob: arrows (and dots) for smaller probabilities are not drawn.
        marks: letters in the top-left corner of grid cells, as in :func:`plot_reward`
            (default: the MDP's map, e.g. FrozenLake's holes and goal).

    On grids each move action with probability ``p >= min_prob`` is one arrow from the cell
    centre (one ``matplotlib.quiver.Quiver`` in ``ax.collections``) whose length is
    proportional to ``p``: the most likely action drawn gets 0.45 cells, and a key arrow above
    the plot gives the scale. "stay" is a red dot whose area is proportional to ``p``.
    Returns the axes.
    """
    S, A = mdp.n_states, mdp.n_actions
    marks = resolve_marks(mdp, marks)
    if isinstance(uncertainty, str) and (uncertainty != "sd" or not is_posterior(policy)):
        raise ValueError(f"uncertainty is {uncertainty!r}; 'sd' needs a RewardPosterior "
                         "policy, else pass an array")
    timed = mdp.finite_horizon
    if is_posterior(policy):
        draws = _policy_draws(policy, t, max_draws)
        probs = draws.mean(0)
        if isinstance(uncertainty, str):
            uncertainty = draws.std(0, ddof=1) if draws.shape[0] > 1 else None
    else:
        probs = _policy_probs(policy)
        timed = probs.ndim == 3
        if probs.ndim == 3:
            if not 0 <= t < probs.shape[0]:
                raise ValueError(f"t is {t}, expected a step in [0, {probs.shape[0]})")
            probs = probs[t]
    if probs.shape != (S, A):
        raise ValueError(f"policy must have shape ({S}, {A}) or (T, {S}, {A}), got "
                         f"{probs.shape}")
    alpha = np.ones((S, A))
    if uncertainty is not None:
        u = as_numpy(uncertainty)
        u = np.repeat(u[:, None], A, 1) if u.shape == (S,) else u
        if u.shape != (S, A) or not np.all(np.isfinite(u)) or (u < 0).any():
            raise ValueError(f"uncertainty must be non-negative with shape ({S},) or ({S}, {A})"
                             f", got shape {u.shape}")
        alpha = 1.0 - 0.85 * u / max(float(u.max()), 1e-12)
    if background is not None:
        bg, bg_note = _background(mdp, background)
    moves = _directions(mdp, directions)
    ax = new_axes(ax)
    when = f" (t = {t})" if timed else ""
    if mdp.shape is None or moves is None:
        im = ax.imshow(probs, aspect="auto", cmap="Blues", vmin=0, vmax=1,
                       interpolation="nearest")
        ax.figure.colorbar(im, ax=ax, label="action probability")
        ax.set_xlabel("action")
        ax.set_ylabel("state")
        names = mdp.action_names or (tuple(directions) if directions else None)
        ax.set_xticks(range(A), names if names else [str(a) for a in range(A)])
        ax.set_title(title or "expert policy" + when)
        return ax
    rows, cols = mdp.shape
    if background is not None:
        im = ax.imshow(bg.reshape(rows, cols), cmap="Greys", origin="upper",
                       interpolation="nearest", alpha=0.6)
        ax.figure.colorbar(im, ax=ax, label="posterior mean reward" + bg_note, shrink=0.9)
    row, col = np.divmod(np.arange(S), cols)
    shown = probs >= min_prob
    top = float(probs[shown].max()) if shown.any() else 1.0
    length = _ARROW / top  # cells per unit probability: the most likely action gets 0.45
    X, Y, U, V, C = [], [], [], [], []
    dots = ([], [], [], [])
    for a, (dr, dc) in enumerate(moves):
        keep = shown[:, a]
        if dr == 0 and dc == 0:
            dots[0].extend(col[keep])
            dots[1].extend(row[keep])
            dots[2].extend(_DOT * probs[keep, a] / top)
            dots[3].extend(alpha[keep, a])
            continue
        X.extend(col[keep])
        Y.extend(row[keep])
        U.extend(dc * length * probs[keep, a])
        V.extend(dr * length * probs[keep, a])
        C.extend(alpha[keep, a])
    if dots[0]:
        ax.scatter(dots[0], dots[1], s=dots[2], marker="o", zorder=2,
                   color=[(0.75, 0.1, 0.1, float(a)) for a in dots[3]], linewidths=0)
    if X:
        colors = [(0.05, 0.2, 0.55, float(a)) for a in C]
        q = ax.quiver(X, Y, U, V, angles="xy", scale_units="xy", scale=1, color=colors,
                      width=0.006, headwidth=3.5, headlength=4, headaxislength=3.5,
                      minlength=0, pivot="tail", zorder=3)
        key = 0.5 if top >= 0.5 else round(top, 1) or top
        ax.quiverkey(q, X=1.0, Y=1.02, U=key * length, label=f"p = {key:g}", labelpos="W",
                     coordinates="axes", color=(0.05, 0.2, 0.55), fontproperties={
                         "size": "small"})
    ax.set_xticks(np.arange(-0.5, cols, 1.0), minor=True)
    ax.set_yticks(np.arange(-0.5, rows, 1.0), minor=True)
    ax.grid(which="minor", color="0.85", lw=0.5)
    ax.tick_params(which="minor", length=0)
    grid_axes(ax, rows, cols)
    draw_marks(ax, mdp, marks, corner=True)
    ax.set_title(title or "expert policy" + when
                 + (" (faint = uncertain)" if uncertainty is not None else ""), loc="left")
    return ax


def plot_visits(mdp, policy, ax=None, vmax=None, marks="auto", title=None):
    """Where a policy goes: its expected visits per state from ``mdp.initial``
    (:func:`bayesirl.occupancy` summed over actions, and over the steps of a finite horizon;
    discounted visits otherwise).

    Args:
        policy: a plan, probabilities ``(S, A)`` / ``(T, S, A)`` (each row >= 0 and summing to
            1), or a :class:`RewardPosterior` (its posterior-averaged policy,
            ``posterior.policy()``, as :func:`plot_policy` draws it).
        vmax: clip the colour scale there (e.g. 1, so that a path shows next to the cell where
            the agent then stays); the colorbar says so.
        marks: as in :func:`plot_reward`.

    A grid MDP gets an image (``ax.images[0]``, colorbar "expected visits"), others bars.
    Returns the axes.
    """
    from bayesirl.planning.bellman import occupancy

    marks = resolve_marks(mdp, marks)
    if is_posterior(policy):
        posterior_rewards(policy, "plot_visits")  # a posterior of one reward, with an MDP
        policy = policy.policy()
    visits = as_numpy(occupancy(mdp, policy).sum(-1))
    clipped = vmax is not None and visits.max() > vmax
    label = ("expected visits" if mdp.finite_horizon else "expected discounted visits") + (
        f" (clipped at {vmax:g})" if clipped else "")
    ax = new_axes(ax)
    if mdp.shape is not None:
        rows, cols = mdp.shape
        im = ax.imshow(visits.reshape(rows, cols), cmap="Purples", vmin=0, vmax=vmax,
                       origin="upper", interpolation="nearest")
        ax.figure.colorbar(im, ax=ax, shrink=0.9, extend="max" if clipped else "neither",
                           label=label)
        grid_axes(ax, rows, cols)
        draw_marks(ax, mdp, marks)
    else:
        ax.bar(np.arange(mdp.n_states), visits, color="C4", width=0.8)
        ax.set_xlabel("state")
        ax.set_ylabel(label)
        if vmax is not None:
            ax.set_ylim(0, vmax)
    ax.set_title(title or "where the policy goes")
    return ax
