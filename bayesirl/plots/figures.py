"""Figures: reward maps with uncertainty, policy arrows, recovery and posterior panels.

Every function takes ``ax=None`` (or ``axes=None``) and returns what it drew on; without axes
it makes a new figure with :func:`matplotlib.pyplot.subplots`. Grid MDPs (``mdp.shape`` set)
are drawn as images with row 0 at the top, so the action "up" points up; states are
``s = row * cols + col``. Other MDPs get bar plots (rewards) or a state x action image
(policies). On grids, :func:`plot_reward` and :func:`plot_policy` mark special cells with a
letter (``marks``): by default those of the MDP's map (:func:`map_marks`, e.g. FrozenLake's
start, holes and goal), or any cells you give.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections import Counter

import numpy as np
import torch

from bayesirl.posterior import arviz_io as _arviz

__all__ = [
    "GYM_DIRECTIONS",
    "map_marks",
    "plot_diagnostics",
    "plot_elbo",
    "plot_policy",
    "plot_posterior",
    "plot_recovery",
    "plot_reward",
    "plot_reward_panels",
    "plot_visits",
]

#: (d_row, d_col) of the action names that :func:`plot_policy` draws as arrows
_MOVES = {"stay": (0, 0), "up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
#: action names, in action-index order, of toy-text Gymnasium grids (their MDPs carry none)
GYM_DIRECTIONS = {"FrozenLake": ("left", "down", "right", "up"),
                  "CliffWalking": ("up", "right", "down", "left")}
_ARROW = 0.45   # arrow length, in cells, of an action taken with probability 1
_DOT = 120.0    # marker area (points^2) of "stay" taken with probability 1
_MAX_BARS = 40  # non-grid MDPs with more states get points instead of bars
_STAT_LABELS = {"mean": "reward", "sd": "posterior sd of reward"}
_MAP_NAME = re.compile(r"(\S)\((\d+),(\d+)\)")  # "H(1,1)": map letter, row, column


def _new_axes(ax, ncols=1, figsize=None):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(1, ncols, figsize=figsize or (4.8 * ncols, 4.0), squeeze=ncols == 1,
                         layout="constrained")
    return ax


def _is_posterior(obj) -> bool:
    return hasattr(obj, "rewards") and hasattr(obj, "mdp") and hasattr(obj, "reward")


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def _reward_draws(obj, reward):
    """``(mdp, draws (n, S, A) or None, single (S, A) or None, source)`` of a plot input."""
    if _is_posterior(obj):
        if obj.mdp is None:
            raise ValueError("the posterior has no MDP: load it with RewardPosterior.load(path, "
                             "mdp) to plot it")
        return obj.mdp, _numpy(obj.reward()), "posterior"
    mdp = obj
    if not hasattr(mdp, "n_states"):
        raise TypeError(f"expected a TabularMDP or a RewardPosterior, got {type(obj).__name__}")
    S, A = mdp.n_states, mdp.n_actions
    source = "reward"
    if reward is None:
        if mdp.reward is None:
            raise ValueError("the MDP has no true reward; pass reward=")
        reward, source = mdp.reward, "true"
    r = _numpy(reward)
    if r.ndim >= 1 and r.shape[-1] == S:
        r = np.repeat(r[..., None], A, -1)
    elif not (r.ndim >= 2 and r.shape[-2:] == (S, A)):
        raise ValueError(f"reward must have shape (..., {S}) or (..., {S}, {A}), got {r.shape}")
    draws = r.reshape(-1, S, A)
    if draws.shape[0] > 1:
        source = "posterior" if source == "reward" else source
    return mdp, draws, source


def _reduce_actions(values: np.ndarray, over_actions: str) -> tuple[np.ndarray, str]:
    """``(S, A) -> (S,)``: exact when constant over actions, else max/mean with a note."""
    if np.allclose(values, values[:, :1], rtol=1e-9, atol=1e-12):
        return values[:, 0], ""
    if over_actions not in ("max", "mean"):
        raise ValueError(f"over_actions is {over_actions!r}, expected 'max' or 'mean'")
    reduce = np.max if over_actions == "max" else np.mean
    return reduce(values, axis=1), f" ({over_actions} over actions)"


def _stat(draws: np.ndarray, stat: str, prob: float) -> np.ndarray:
    if stat == "mean":
        return draws.mean(0)
    if draws.shape[0] < 2:
        raise ValueError(f"stat={stat!r} needs posterior draws (got a single reward)")
    if stat == "sd":
        return draws.std(0, ddof=1)
    lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return hi - lo


def plot_reward(mdp_or_posterior, reward=None, ax=None, stat: str = "mean",
                over_actions: str = "max", prob: float = 0.9, cmap=None, title=None,
                marks="auto"):
    """Reward map: a heatmap on grid MDPs, else one bar per state (points beyond 40 states)
    with the central ``prob`` interval of posterior draws.

    Args:
        mdp_or_posterior: a :class:`~bayesirl.RewardPosterior` (its reward draws), or
            an MDP with ``reward`` (``(S,)``, ``(S, A)`` or draws ``(n, S[, A])``; default the
            MDP's true reward).
        stat: ``"mean"``, ``"sd"`` (posterior sd) or ``"width"`` (width of the central ``prob``
            interval); the last two need draws.
        over_actions: how a state-action reward becomes a map: ``"max"`` or ``"mean"`` over
            actions (the title says which); state rewards are drawn as they are.
        cmap, title: matplotlib colormap and title (defaults depend on ``stat``).
        marks: letters drawn on grid cells (``ax.texts``): ``"auto"`` (the MDP's map,
            :func:`map_marks`: FrozenLake's ``S``, ``H``, ``G``), ``None``, or a dict
            ``{state or (row, col): label}``, e.g. ``{s: "L" for s in lava}``.

    Returns the axes. The colorbar (``ax.images[0].colorbar``) is labelled "reward",
    "posterior sd of reward" or "90% interval width of reward".
    """
    if stat not in ("mean", "sd", "width"):
        raise ValueError(f"stat is {stat!r}, expected 'mean', 'sd' or 'width'")
    if not 0 < prob < 1:
        raise ValueError(f"prob is {prob!r}, expected a number in (0, 1)")
    mdp, draws, source = _reward_draws(mdp_or_posterior, reward)
    marks = _marks(mdp, marks)
    values, note = _reduce_actions(_stat(draws, stat, prob), over_actions)
    label = _STAT_LABELS.get(stat, f"{prob:.0%} interval width of reward")
    if title is None:
        title = {"mean": {"posterior": "posterior mean reward", "true": "true reward"}.get(
            source, "reward"), "sd": "posterior sd of reward",
            "width": f"{prob:.0%} interval width"}[stat] + note
    ax = _new_axes(ax)
    if cmap is None:
        cmap = "viridis" if stat == "mean" else "magma"
    if mdp.shape is not None:
        rows, cols = mdp.shape
        im = ax.imshow(values.reshape(rows, cols), cmap=cmap, origin="upper",
                       interpolation="nearest")
        ax.figure.colorbar(im, ax=ax, label=label, shrink=0.9)
        _grid_axes(ax, rows, cols)
        _draw_marks(ax, mdp, marks)
    else:
        S = values.shape[0]
        x = np.arange(S)
        color = "C0" if stat == "mean" else "C3"
        if stat == "mean" and draws.shape[0] > 1:
            q = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
            lo, hi = (_reduce_actions(x, over_actions)[0] for x in q)
            lo, hi = np.minimum(lo, values), np.maximum(hi, values)
            if S <= _MAX_BARS:
                ax.bar(x, values, color=color, width=0.8, label="posterior mean")
            ax.errorbar(x, values, yerr=[values - lo, hi - values],
                        fmt="none" if S <= _MAX_BARS else "o", ms=2.5, color=color,
                        ecolor="k" if S <= _MAX_BARS else color, elinewidth=0.8,
                        capsize=2 if S <= _MAX_BARS else 0,
                        label=("" if S <= _MAX_BARS else "posterior mean, ")
                        + f"{prob:.0%} interval")
            ax.legend(loc="best", fontsize="small")
        elif S <= _MAX_BARS:
            ax.bar(x, values, color=color, width=0.8)
        else:  # a stem plot: bars would blur into each other
            ax.vlines(x, 0.0, values, color=color, lw=0.8)
            ax.plot(x, values, "o", ms=2.5, color=color)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_xlabel("state")
        ax.set_ylabel(label)
        ax.set_xlim(-0.6, S - 0.4)
    ax.set_title(title)
    return ax


def _grid_axes(ax, rows, cols):
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("column")
    ax.set_ylabel("row")


def map_marks(mdp) -> dict[int, str]:
    """The special cells of a grid MDP's map: ``{state: letter}``.

    Read from state names of the form ``"H(1,1)"`` (the cell's map letter, then its row and
    column), which :func:`bayesirl.core.envs.from_gymnasium` gives FrozenLake's states; every letter
    but the most common one (the plain cells) is special: FrozenLake's start ``S``, holes ``H``
    and goal ``G``. Empty for MDPs without such names or without a grid ``shape``.
    """
    names = getattr(mdp, "state_names", None)
    if mdp.shape is None or not names:
        return {}
    cols = mdp.shape[1]
    letters = []
    for s, name in enumerate(names):
        m = _MAP_NAME.fullmatch(str(name))
        if m is None or (int(m[2]), int(m[3])) != divmod(s, cols):
            return {}
        letters.append(m[1])
    plain = Counter(letters).most_common(1)[0][0]
    return {s: ch for s, ch in enumerate(letters) if ch != plain}


def _marks(mdp, marks) -> dict[int, str]:
    """``marks`` ("auto", None or ``{state or (row, col): label}``) as ``{state: label}``."""
    if isinstance(marks, str) and marks == "auto":
        return map_marks(mdp)
    if marks is None:
        return {}
    if not isinstance(marks, dict):
        raise TypeError(f"marks must be 'auto', None or a dict {{state or (row, col): label}}, "
                        f"got {type(marks).__name__}")
    if marks and mdp.shape is None:
        raise ValueError("marks are drawn on grid MDPs (mdp.shape set); this MDP has no grid "
                         "shape, pass marks=None")
    rows, cols = mdp.shape or (0, 0)
    out = {}
    for key, label in marks.items():
        cell = tuple(key) if isinstance(key, (tuple, list)) else None
        if cell is not None and len(cell) == 2 and all(
                isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in cell) and (
                0 <= cell[0] < rows and 0 <= cell[1] < cols):
            state = int(cell[0]) * cols + int(cell[1])
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool) and (
                0 <= key < mdp.n_states):
            state = int(key)
        else:
            raise ValueError(f"marks key {key!r} is not a state in [0, {mdp.n_states}) or a "
                             f"(row, col) cell of the {rows} x {cols} grid")
        if not isinstance(label, str) or not label:
            raise ValueError(f"marks[{key!r}] is {label!r}, expected a non-empty string")
        out[state] = label
    return out


def _draw_marks(ax, mdp, marks: dict[int, str], corner: bool = False) -> None:
    """Each mark as bold white text with a dark outline, centred in its cell (``corner``: in
    the top-left corner, clear of policy arrows)."""
    from matplotlib import patheffects

    if not marks:
        return
    rows, cols = mdp.shape
    size = max(6.0, min(14.0, 160.0 / max(rows, cols))) * (0.8 if corner else 1.0)
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    for s, label in marks.items():
        r, c = divmod(s, cols)
        x, y = (c - 0.42, r - 0.42) if corner else (c, r)
        ax.text(x, y, label, ha="left" if corner else "center",
                va="top" if corner else "center", fontsize=size, fontweight="bold",
                color="white", path_effects=outline, zorder=4)


def plot_reward_panels(posterior, axes=None, show_true: bool = False, over_actions="max"):
    """Posterior mean and posterior sd of the reward side by side (and the true reward first
    with ``show_true`` when the MDP has one). Returns the array of axes."""
    mdp = posterior.mdp
    with_true = show_true and mdp is not None and mdp.reward is not None
    n = 3 if with_true else 2
    axes = _new_axes(axes, ncols=n, figsize=(4.6 * n, 3.9) if mdp is not None and
                     mdp.shape is not None else (5.5 * n, 3.6))
    axes = np.asarray(axes).ravel()
    if len(axes) != n:
        raise ValueError(f"axes has {len(axes)} axes, expected {n}")
    i = 0
    if with_true:
        plot_reward(mdp, ax=axes[0], over_actions=over_actions)
        i = 1
    plot_reward(posterior, ax=axes[i], stat="mean", over_actions=over_actions)
    plot_reward(posterior, ax=axes[i + 1], stat="sd", over_actions=over_actions)
    return axes


# ---------------------------------------------------------------------------- policies
def _policy_probs(policy) -> np.ndarray:
    if hasattr(policy, "log_policy"):
        return _numpy(policy.log_policy.exp())
    return _numpy(policy)


def _policy_draws(posterior, t: int, max_draws: int = 200) -> np.ndarray:
    """Expert action probabilities ``(n, S, A)`` at step ``t`` under at most ``max_draws``
    evenly spaced posterior reward draws."""
    from bayesirl.model.likelihood import action_log_probs

    mdp = posterior.mdp
    if mdp is None:
        raise ValueError("the posterior has no MDP: load it with RewardPosterior.load(path, "
                         "mdp) to plot its policy")
    likelihood = posterior.settings.get("likelihood", "soft")
    rewards, beta = posterior.reward(), posterior.rationality
    idx = torch.linspace(0, rewards.shape[0] - 1, min(max_draws, rewards.shape[0])).round()
    idx = idx.long().unique()
    if mdp.finite_horizon and not 0 <= t < mdp.horizon:
        raise ValueError(f"t is {t}, expected a step in [0, {mdp.horizon})")
    out = []
    with torch.no_grad():
        for chunk in idx.split(64):
            p = action_log_probs(mdp, rewards[chunk], likelihood, beta[chunk]).exp()
            out.append(p[:, t] if mdp.finite_horizon else p)
    return _numpy(torch.cat(out))


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
        background: ``(S,)`` values drawn in grey under the arrows (e.g. the mean reward).
        directions: action names from ``stay, up, down, left, right`` in action order
            (default ``mdp.action_names``; :data:`GYM_DIRECTIONS` has Gymnasium's grids).
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
    marks = _marks(mdp, marks)
    if isinstance(uncertainty, str) and (uncertainty != "sd" or not _is_posterior(policy)):
        raise ValueError(f"uncertainty is {uncertainty!r}; 'sd' needs a RewardPosterior "
                         "policy, else pass an array")
    timed = mdp.finite_horizon
    if _is_posterior(policy):
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
        u = _numpy(uncertainty)
        u = np.repeat(u[:, None], A, 1) if u.shape == (S,) else u
        if u.shape != (S, A) or not np.all(np.isfinite(u)) or (u < 0).any():
            raise ValueError(f"uncertainty must be non-negative with shape ({S},) or ({S}, {A})"
                             f", got shape {u.shape}")
        alpha = 1.0 - 0.85 * u / max(float(u.max()), 1e-12)
    moves = _directions(mdp, directions)
    ax = _new_axes(ax)
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
        bg = _numpy(background).reshape(rows, cols)
        im = ax.imshow(bg, cmap="Greys", origin="upper", interpolation="nearest", alpha=0.6)
        ax.figure.colorbar(im, ax=ax, label="posterior mean reward", shrink=0.9)
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
    _grid_axes(ax, rows, cols)
    _draw_marks(ax, mdp, marks, corner=True)
    ax.set_title(title or "expert policy" + when
                 + (" (faint = uncertain)" if uncertainty is not None else ""), loc="left")
    return ax


def plot_visits(mdp, policy, ax=None, vmax=None, marks="auto", title=None):
    """Where a policy goes: its expected visits per state from ``mdp.initial``
    (:func:`bayesirl.occupancy` summed over actions, and over the steps of a finite horizon;
    discounted visits otherwise).

    Args:
        policy: a plan or probabilities ``(S, A)`` / ``(T, S, A)``.
        vmax: clip the colour scale there (e.g. 1, so that a path shows next to the cell where
            the agent then stays); the colorbar says so.
        marks: as in :func:`plot_reward`.

    A grid MDP gets an image (``ax.images[0]``, colorbar "expected visits"), others bars.
    Returns the axes.
    """
    from bayesirl.planning.bellman import occupancy

    marks = _marks(mdp, marks)
    if not hasattr(policy, "log_policy"):
        policy = torch.as_tensor(policy, dtype=mdp.dtype, device=mdp.device)
    visits = _numpy(occupancy(mdp, policy).sum(-1))
    clipped = vmax is not None and visits.max() > vmax
    label = ("expected visits" if mdp.finite_horizon else "expected discounted visits") + (
        f" (clipped at {vmax:g})" if clipped else "")
    ax = _new_axes(ax)
    if mdp.shape is not None:
        rows, cols = mdp.shape
        im = ax.imshow(visits.reshape(rows, cols), cmap="Purples", vmin=0, vmax=vmax,
                       origin="upper", interpolation="nearest")
        ax.figure.colorbar(im, ax=ax, shrink=0.9, extend="max" if clipped else "neither",
                           label=label)
        _grid_axes(ax, rows, cols)
        _draw_marks(ax, mdp, marks)
    else:
        ax.bar(np.arange(mdp.n_states), visits, color="C4", width=0.8)
        ax.set_xlabel("state")
        ax.set_ylabel(label)
        if vmax is not None:
            ax.set_ylim(0, vmax)
    ax.set_title(title or "where the policy goes")
    return ax


# ---------------------------------------------------------------------------- recovery
def plot_recovery(true, posterior_or_draws, ax=None, prob: float = 0.9, center: bool = False,
                  label: str = "reward"):
    """True versus inferred values with central ``prob`` intervals and the identity line.

    Args:
        true: true values: a reward ``(S,)`` / ``(S, A)``, or parameters ``(d,)``.
        posterior_or_draws: a :class:`RewardPosterior` (its reward draws, or its ``theta`` draws
            when ``true`` has the length of theta but not of the reward) or draws
            ``(n, *true.shape)``.
        center: subtract the mean over entries from the truth and from every draw (soft-optimal
            rewards are identified only up to a constant).
        label: what is compared, for the axis labels.

    Returns the axes; the identity line is the ``Line2D`` labelled "identity".
    """
    t = _numpy(true)
    if _is_posterior(posterior_or_draws):
        post = posterior_or_draws
        S, A = post.rewards.shape[-2:]
        theta = post.samples.get("theta")
        if t.shape == (S,) or t.shape == (S, A):
            draws = _numpy(post.reward())
            draws = draws[..., 0] if t.shape == (S,) else draws
            if t.shape == (S,) and not np.allclose(_numpy(post.reward()), draws[..., None]):
                raise ValueError("true is a state reward (S,) but the posterior rewards vary "
                                 "over actions; pass true with shape (S, A)")
        elif theta is not None and t.shape == tuple(theta.shape[1:]):
            draws = _numpy(theta)
        else:
            raise ValueError(f"true has shape {t.shape}, expected ({S},), ({S}, {A}) or the "
                             "shape of theta")
    else:
        draws = _numpy(posterior_or_draws)
        if draws.shape[1:] != t.shape:
            raise ValueError(f"draws have shape {draws.shape}, expected (n, *{t.shape})")
    t, draws = t.reshape(-1), draws.reshape(draws.shape[0], -1)
    if center:
        t = t - t.mean()
        draws = draws - draws.mean(1, keepdims=True)
    mean = draws.mean(0)
    lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    ax = _new_axes(ax)
    ax.errorbar(t, mean, yerr=[mean - lo, hi - mean], fmt="o", ms=4, color="C0", ecolor="C0",
                elinewidth=1, alpha=0.8, label=f"posterior mean, {prob:.0%} interval")
    lim = [min(t.min(), lo.min()), max(t.max(), hi.max())]
    pad = 0.05 * (lim[1] - lim[0] or 1.0)
    ax.axline((lim[0], lim[0]), slope=1, color="0.4", ls="--", lw=1, label="identity")
    ax.set_xlim(lim[0] - pad, lim[1] + pad)
    ax.set_ylim(lim[0] - pad, lim[1] + pad)
    ax.set_aspect("equal", adjustable="box")
    centred = " (centred)" if center else ""
    ax.set_xlabel(f"true {label}{centred}")
    ax.set_ylabel(f"inferred {label}{centred}")
    ax.set_title(f"recovery of the {label}")
    ax.legend(loc="upper left", fontsize="small")
    return ax


# ---------------------------------------------------------------------------- ArviZ layers
@contextlib.contextmanager
def _quiet_arviz():
    """ArviZ 0.2x calls matplotlib APIs that matplotlib 3.11 deprecates (not ours to fix), and
    warns on the density of a chain that never moved (the trace and rank plots show that)."""
    from matplotlib import MatplotlibDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
        warnings.filterwarnings("ignore", "Your data appears to have a single value",
                                UserWarning)
        yield


def _idata(posterior):
    return posterior.to_arviz() if hasattr(posterior, "to_arviz") else posterior


def plot_posterior(posterior, kind: str = "trace", var_names=None, axes=None, **kwargs):
    """A thin layer over ArviZ: ``kind="trace"`` (``az.plot_trace``; ``az.plot_trace_dist`` on
    ArviZ >= 1.0), ``"rank"`` (``az.plot_rank``) or ``"forest"`` (``az.plot_forest``, chains
    combined).

    ``posterior`` is a :class:`RewardPosterior` or ArviZ data (``arviz.InferenceData``, or
    ``xarray.DataTree`` on ArviZ >= 1.0); ``var_names`` defaults to every parameter site (not
    the derived ``reward``). Extra keyword arguments go to ArviZ, whose arguments differ
    between 0.x and 1.x. Returns the array of matplotlib axes drawn on.

    ``axes``: matplotlib axes to draw on (default: a new figure), laid out as ArviZ lays the
    plot out. For the trace, an array ``(n_variables, 2)`` (density, trace) with either ArviZ;
    for the rank plot, one per scalar component. The forest plot takes one axes on ArviZ 0.x
    and two on 1.x (labels, intervals; their y axes are shared). ArviZ 1.x has no axes
    argument: its plot is laid out on these in place of a figure of its own (any number of
    axes of the right size, in row-major order; a wrong number raises ``ValueError`` naming
    the rows x columns it needs), and ``axes`` is returned as an array.
    """
    if kind not in ("trace", "rank", "forest"):
        raise ValueError(f"kind is {kind!r}, expected 'trace', 'rank' or 'forest'")
    idata = _idata(posterior)
    if var_names is None:
        params = getattr(posterior, "params", None)
        var_names = list(params) if params else [v for v in idata.posterior.data_vars
                                                 if v != "reward"] or ["reward"]
    if kind == "forest":
        kwargs.setdefault("combined", True)
    with _quiet_arviz():
        return _arviz.plot(kind, idata, var_names, axes=axes, **kwargs)


def _scalar_draws(posterior) -> dict[str, np.ndarray]:
    """Every scalar component of every parameter site as ``(chains, draws)``, named like
    ``theta[cell(0,1)]``."""
    out = {}
    for name, value in posterior.params.items():
        v = _numpy(value)
        C, D = v.shape[:2]
        flat = v.reshape(C, D, -1)
        dims = posterior.dims.get(name, ())
        coords = [posterior.coords.get(d) for d in dims]
        for j, idx in enumerate(np.ndindex(*v.shape[2:]) if v.ndim > 2 else [()]):
            labels = [str(coords[k][i]) if k < len(coords) and coords[k] and i < len(coords[k])
                      else str(i) for k, i in enumerate(idx)]
            out[f"{name}[{','.join(labels)}]" if idx else name] = flat[:, :, j]
    return out


def plot_diagnostics(posterior, max_params: int = 6, axes=None):
    """MCMC diagnostics of the ``max_params`` scalar parameters with the largest R-hat (and the
    rationality, when inferred): one row each with the marginal density per chain, the trace and
    the rank histogram (ranks among all chains' draws; a uniform histogram per chain is what
    mixing chains give).

    Drawn with matplotlib (R-hat from ArviZ), so it draws on given ``axes`` with any ArviZ.
    Returns the ``(k, 3)`` array of axes.
    """
    draws = _scalar_draws(posterior)
    if not draws:
        raise ValueError("the posterior has no parameter draws")
    C, D = next(iter(draws.values())).shape
    if D < 4:
        raise ValueError(f"diagnostics need several draws per chain, got {D}")
    names = list(draws)
    if C > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a chain that never moved
            rhat = _arviz.az.rhat(_arviz.from_groups({"posterior": draws}))
        score = [float(np.nan_to_num(rhat[n].values, nan=np.inf)) for n in names]
        names = [n for _, n in sorted(zip(score, names, strict=True), key=lambda x: -x[0])]
    if "rationality" in names:  # the quantity a Boltzmann spec is about: always shown
        names.remove("rationality")
        names.insert(0, "rationality")
    names = names[:max_params]
    k = len(names)
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(k, 3, figsize=(12, 1.9 * k + 0.6), squeeze=False,
                               layout="constrained")
    axes = np.asarray(axes).reshape(k, 3)
    for i, n in enumerate(names):
        _chain_panels(axes[i], np.asarray(draws[n], dtype=float))
        axes[i, 2].set_title(f"{n} (rank)", fontsize="medium")
        axes[i, 0].set_title(n, fontsize="medium")
        axes[i, 1].set_title(f"{n} (trace)", fontsize="medium")
        axes[i, 2].set_xlabel("rank (all chains)" if i == k - 1 else "", fontsize="medium")
        axes[i, 2].set_ylabel("chain", fontsize="medium")
    axes[-1, 1].set_xlabel("draw")
    return axes


def _chain_panels(row, values: np.ndarray) -> None:
    """Density (Gaussian kernel, Silverman's bandwidth of the pooled draws), trace and rank
    histogram of ``values: (chains, draws)`` on the three axes of ``row``, a colour a chain."""
    from scipy.stats import rankdata

    C, D = values.shape
    sd = float(values.std())
    bw = 1.06 * (sd if sd > 0 else 1.0) * (C * D) ** -0.2
    grid = np.linspace(values.min() - 3 * bw, values.max() + 3 * bw, 200)
    ranks = rankdata(values.ravel()).reshape(C, D)
    bins = np.linspace(0.5, C * D + 0.5, max(2, min(20, D // 5)) + 1)
    expected = D / (len(bins) - 1)
    for c in range(C):
        colour = f"C{c % 10}"
        z = (grid[:, None] - values[c][None, :]) / bw
        row[0].plot(grid, np.exp(-0.5 * z ** 2).mean(1) / (bw * math.sqrt(2 * math.pi)),
                    color=colour, lw=1)
        row[1].plot(np.arange(D), values[c], color=colour, lw=0.7)
        counts, _ = np.histogram(ranks[c], bins=bins)
        row[2].bar(bins[:-1], 0.45 * counts / expected, width=np.diff(bins), bottom=c,
                   align="edge", color=colour, alpha=0.8, edgecolor="white", lw=0.5)
        row[2].axhline(c + 0.45, color="k", ls="--", lw=0.7)
    row[2].set_yticks(np.arange(C) + 0.45, [str(c) for c in range(C)])


def plot_elbo(posterior, ax=None, skip: float = 0.0):
    """The ELBO of an SVI fit per step (``posterior.extra["elbo"]``); ``skip`` drops that
    fraction of the first steps. Returns the axes."""
    elbo = np.asarray(getattr(posterior, "extra", {}).get("elbo", []), dtype=float)
    if elbo.size == 0:
        raise ValueError("the posterior has no ELBO history (it is not an SVI fit)")
    start = int(math.floor(skip * elbo.size))
    ax = _new_axes(ax)
    steps = np.arange(start, elbo.size)
    ax.plot(steps, elbo[start:], lw=0.8, color="C0", alpha=0.6, label="ELBO")
    if elbo.size - start >= 20:
        w = max((elbo.size - start) // 20, 2)
        smooth = np.convolve(elbo[start:], np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], smooth, color="C1", lw=1.5, label=f"moving mean ({w} steps)")
        ax.legend(loc="lower right", fontsize="small")
    ax.set_xlabel("SVI step")
    ax.set_ylabel("ELBO (nats)")
    ax.set_title("evidence lower bound")
    return ax
