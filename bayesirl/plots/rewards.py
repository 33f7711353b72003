"""Reward figures: maps with posterior uncertainty, mean and sd side by side, recovery of a truth.

Every function takes ``ax=None`` (or ``axes=None``) and returns what it drew on; without axes
it makes a new figure with :func:`matplotlib.pyplot.subplots`. Grid MDPs (``mdp.shape`` set)
are drawn as images with row 0 at the top; states are ``s = row * cols + col``. Other MDPs get
bar plots. On grids, :func:`plot_reward` marks special cells with a letter (``marks``): by
default those of the MDP's map (:func:`bayesirl.core.envs.map_marks`, e.g. FrozenLake's start,
holes and goal), or any cells you give.
"""

from __future__ import annotations

import numpy as np
import torch

from bayesirl._validation import as_tensor, check_finite, check_probability
from bayesirl.planning.bellman import broadcast_reward
from bayesirl.plots.common import (
    as_numpy,
    draw_marks,
    grid_axes,
    is_posterior,
    new_axes,
    one_expert_hint,
    posterior_rewards,
    reduce_actions,
    resolve_marks,
)
from bayesirl.posterior.bands import equal_tailed_interval

__all__ = ["plot_recovery", "plot_reward", "plot_reward_panels"]

_MAX_BARS = 40  # non-grid MDPs with more states get points instead of bars
_STAT_LABELS = {"mean": "reward", "sd": "posterior sd of reward"}


def _reward_draws(obj, reward):
    """``(mdp, draws (n, S, A), source)`` of a plot input: a posterior's reward draws, or an
    MDP's ``reward`` (default its true reward) read by
    :func:`~bayesirl.planning.broadcast_reward`'s rule: ``(..., S, A)`` when the last two dims
    are ``(S, A)`` (so an ``(S, S)`` reward with ``S == A`` is one state-action reward), else
    ``(..., S)`` state rewards."""
    if is_posterior(obj):
        mdp, draws = posterior_rewards(obj, "plot_reward")
        return mdp, as_numpy(draws), "posterior"
    mdp = obj
    if not hasattr(mdp, "n_states"):
        raise TypeError(f"expected a TabularMDP or a RewardPosterior, got {type(obj).__name__}")
    S, A = mdp.n_states, mdp.n_actions
    source = "reward"
    if is_posterior(reward):  # plot_reward(mdp, posterior): the posterior's draws on mdp
        draws = reward.reward()
        if draws.dim() != 3 or tuple(draws.shape[1:]) != (S, A):
            raise TypeError(f"reward is a {type(reward).__name__} whose reward() has shape "
                            f"{tuple(draws.shape)}, expected draws (n, {S}, {A}) on this MDP"
                            f"{one_expert_hint(reward)}")
        return mdp, as_numpy(draws), "posterior"
    if reward is None:
        if mdp.reward is None:
            raise ValueError("the MDP has no true reward; pass reward=")
        reward, source = mdp.reward, "true"
    reward = as_tensor("reward", reward)
    check_finite("reward", reward.detach())
    draws = as_numpy(broadcast_reward(mdp, reward)).reshape(-1, S, A)
    if draws.shape[0] > 1:
        source = "posterior" if source == "reward" else source
    return mdp, draws, source


def _interval(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """The equal-tailed ``prob`` interval over the draws of ``draws: (n, ...)``, as arrays."""
    lo, hi = equal_tailed_interval(torch.tensor(draws), prob)  # a copy: draws may be read-only
    return lo.numpy(), hi.numpy()


def _stat(draws: np.ndarray, stat: str, prob: float) -> np.ndarray:
    if stat == "mean":
        return draws.mean(0)
    if draws.shape[0] < 2:
        raise ValueError(f"stat={stat!r} needs posterior draws (got a single reward)")
    if stat == "sd":
        return draws.std(0, ddof=1)
    lo, hi = _interval(draws, prob)
    return hi - lo


def plot_reward(mdp_or_posterior, reward=None, ax=None, stat: str = "mean",
                over_actions: str = "max", prob: float = 0.9, cmap=None, title=None,
                marks="auto"):
    """Reward map: a heatmap on grid MDPs, else one bar per state (points beyond 40 states)
    with the central ``prob`` interval of posterior draws.

    Args:
        mdp_or_posterior: a :class:`~bayesirl.RewardPosterior` (its reward draws), or
            an MDP with ``reward`` (``(S,)``, ``(S, A)`` or draws ``(n, S[, A])``, finite; a
            RewardPosterior of this MDP's states and actions, its draws; default the MDP's
            true reward).
        stat: ``"mean"``, ``"sd"`` (posterior sd) or ``"width"`` (width of the central ``prob``
            interval); the last two need draws.
        over_actions: how a state-action reward becomes a map: ``"max"`` or ``"mean"`` over
            actions (the title says which); state rewards are drawn as they are.
        cmap, title: matplotlib colormap and title (defaults depend on ``stat``).
        marks: letters drawn on grid cells (``ax.texts``): ``"auto"`` (the MDP's map,
            :func:`~bayesirl.core.envs.map_marks`: FrozenLake's ``S``, ``H``, ``G``), ``None``,
            or a dict ``{state or (row, col): label}``, e.g. ``{s: "L" for s in lava}``.

    Returns the axes. The colorbar (``ax.images[0].colorbar``) is labelled "reward",
    "posterior sd of reward" or "90% interval width of reward".
    """
    if stat not in ("mean", "sd", "width"):
        raise ValueError(f"stat is {stat!r}, expected 'mean', 'sd' or 'width'")
    prob = check_probability("prob", prob, open_low=True, open_high=True)  # titles use it
    mdp, draws, source = _reward_draws(mdp_or_posterior, reward)
    marks = resolve_marks(mdp, marks)
    values, note = reduce_actions(_stat(draws, stat, prob), over_actions)
    label = _STAT_LABELS.get(stat, f"{prob:.0%} interval width of reward")
    if title is None:
        title = {"mean": {"posterior": "posterior mean reward", "true": "true reward"}.get(
            source, "reward"), "sd": "posterior sd of reward",
            "width": f"{prob:.0%} interval width"}[stat] + note
    ax = new_axes(ax)
    if cmap is None:
        cmap = "viridis" if stat == "mean" else "magma"
    if mdp.shape is not None:
        rows, cols = mdp.shape
        im = ax.imshow(values.reshape(rows, cols), cmap=cmap, origin="upper",
                       interpolation="nearest")
        ax.figure.colorbar(im, ax=ax, label=label, shrink=0.9)
        grid_axes(ax, rows, cols)
        draw_marks(ax, mdp, marks)
    else:
        S = values.shape[0]
        x = np.arange(S)
        color = "C0" if stat == "mean" else "C3"
        if stat == "mean" and draws.shape[0] > 1:
            lo, hi = (reduce_actions(x, over_actions)[0] for x in _interval(draws, prob))
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




def plot_reward_panels(posterior, axes=None, show_true: bool = False, over_actions="max"):
    """Posterior mean and posterior sd of the reward side by side (and the true reward first
    with ``show_true`` when the MDP has one). Returns the array of axes.

    ``posterior`` is a posterior of one reward (:func:`plot_reward`'s); anything else raises
    before anything is drawn."""
    if not is_posterior(posterior):
        raise TypeError(f"posterior must be a RewardPosterior (or another posterior with "
                        f"reward()), got {type(posterior).__name__}; plot_reward draws a reward "
                        "tensor")
    mdp, _ = posterior_rewards(posterior, "plot_reward_panels")
    with_true = show_true and mdp.reward is not None
    n = 3 if with_true else 2
    axes = new_axes(axes, ncols=n, figsize=(4.6 * n, 3.9) if mdp.shape is not None else
                    (5.5 * n, 3.6))
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




def plot_recovery(true, posterior_or_draws, ax=None, prob: float = 0.9, center: bool = False,
                  label: str = "reward"):
    """True versus inferred values with central ``prob`` intervals and the identity line.

    Args:
        true: true values: a reward ``(S,)`` / ``(S, A)``, or parameters ``(d,)``; for a
            hierarchical posterior every expert's, ``(E, S[, A])`` or ``(E, d)``.
        posterior_or_draws: a posterior (its reward draws ``reward()``, or its ``theta``
            draws when ``true`` has the shape of theta but not of the reward) or draws
            ``(n, *true.shape)``.
        center: subtract the mean over entries from the truth and from every draw (soft-optimal
            rewards are identified only up to a constant).
        label: what is compared, for the axis labels.

    Returns the axes; the identity line is the ``Line2D`` labelled "identity".
    """
    t = as_numpy(true)
    if is_posterior(posterior_or_draws):
        post = posterior_or_draws
        rewards = as_numpy(post.reward())                      # (n, [E,] S, A)
        shape = rewards.shape[1:]
        theta = getattr(post, "samples", {}).get("theta")
        if t.shape in (shape, shape[:-1]):
            draws = rewards[..., 0] if t.shape == shape[:-1] else rewards
            if t.shape == shape[:-1] and not np.allclose(rewards, draws[..., None]):
                raise ValueError(f"true is a state reward {t.shape} but the posterior rewards "
                                 f"vary over actions; pass true with shape {shape}")
        elif theta is not None and t.shape == tuple(theta.shape[1:]):
            draws = as_numpy(theta)
        else:
            of_theta = "" if theta is None else f", or theta {tuple(theta.shape[1:])}"
            raise ValueError(f"true has shape {t.shape}, expected a reward {shape[:-1]} or "
                             f"{shape}{of_theta}{one_expert_hint(post)}")
    else:
        draws = as_numpy(posterior_or_draws)
        if draws.shape[1:] != t.shape:
            raise ValueError(f"draws have shape {draws.shape}, expected (n, *{t.shape})")
    check_finite("true", torch.as_tensor(t))
    check_finite("draws", torch.as_tensor(draws))
    t, draws = t.reshape(-1), draws.reshape(draws.shape[0], -1)
    if center:
        t = t - t.mean()
        draws = draws - draws.mean(1, keepdims=True)
    mean = draws.mean(0)
    lo, hi = _interval(draws, prob)
    ax = new_axes(ax)
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
