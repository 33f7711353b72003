"""The reward of a continuous-state posterior over a 2-d slice of the observation space.

:func:`plot_reward_slice` draws two panels for a
:class:`~bayesirl.posterior.continuous.ContinuousPosterior`: the posterior mean reward and the
width of its equal-tailed credible band, over a grid of two observation coordinates with the
others held fixed, and the observed states projected onto the slice (where the data, and so the
posterior's information, lie).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bayesirl._validation import ArgumentTypeError, check_int, check_probability
from bayesirl.plots.common import as_numpy, new_axes
from bayesirl.posterior.continuous import ContinuousPosterior, credible_band

__all__ = ["plot_reward_slice", "reward_slice"]


def reward_slice(posterior, dims=(0, 1), action: int | None = None, fixed=None, bounds=None,
                 grid: int = 40, prob: float = 0.9, dynamics: Callable | None = None,
                 neighbours: int = 5):
    """The reward over a ``grid x grid`` slice: ``(xs (grid,), ys (grid,), mean, lower,
    upper)``, the last three ``(grid, grid)`` indexed ``[y, x]``.

    Args:
        posterior: a :class:`~bayesirl.posterior.continuous.ContinuousPosterior`.
        dims: the two observation coordinates spanned (x, then y).
        action: the action whose reward is shown; None averages the reward over the actions
            within each draw (a state reward) before the band is taken.
        fixed: ``(obs_dim,)`` values of the other coordinates (default: the data's mean).
        bounds: ``((x_lo, x_hi), (y_lo, y_hi))`` (default: the data's range on ``dims``).
        dynamics: ``dynamics(obs (M, obs_dim), actions (M,)) -> (next_obs, terminals)``, the
            successor of each grid point when known (a simulator, a known model); default the
            posterior's one-step model of the data.
    """
    if not isinstance(posterior, ContinuousPosterior):
        raise ArgumentTypeError(f"posterior must be a ContinuousPosterior (of a value-space "
                                f"model on continuous observations), got "
                                f"{type(posterior).__name__}; a tabular posterior's reward is "
                                "drawn by plot_reward")
    data = posterior.data
    D = data.obs_dim
    if np.ndim(dims) != 1 or len(dims) != 2:
        raise ValueError(f"dims is {dims!r}, expected two observation coordinates")
    dx, dy = (check_int(f"dims[{i}]", d, low=0, high=D - 1) for i, d in enumerate(dims))
    if dx == dy:
        raise ValueError(f"dims is {dims!r}, expected two different coordinates")
    grid = check_int("grid", grid, low=2)
    check_probability("prob", prob, open_low=True, open_high=True)
    tr = data.transitions()
    obs = tr.obs
    base = obs.mean(0) if fixed is None else torch.as_tensor(
        np.asarray(fixed, dtype=np.float64)).to(obs)
    if base.shape != (D,):
        raise ValueError(f"fixed must have shape ({D},), got {tuple(base.shape)}")
    if bounds is None:
        bounds = [(float(obs[:, d].min()), float(obs[:, d].max())) for d in (dx, dy)]
    (x0, x1), (y0, y1) = bounds
    xs = torch.linspace(float(x0), float(x1), grid, dtype=obs.dtype, device=obs.device)
    ys = torch.linspace(float(y0), float(y1), grid, dtype=obs.dtype, device=obs.device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    points = base.expand(grid * grid, D).clone()
    points[:, dx], points[:, dy] = xx.reshape(-1), yy.reshape(-1)
    A = data.n_actions
    actions = range(A) if action is None else [check_int("action", action, low=0, high=A - 1)]
    total = 0.0
    for a in actions:
        acts = torch.full((grid * grid,), a, dtype=torch.long)
        if dynamics is not None:
            nxt, term = dynamics(points, acts)
            total = total + posterior.reward_at(points, acts, nxt, term)
        else:
            total = total + posterior.reward_at(points, acts, neighbours=neighbours)
    band = credible_band(total / len(actions), prob)  # draws (draws, grid * grid)

    def img(x):
        return as_numpy(x.reshape(grid, grid))

    return as_numpy(xs), as_numpy(ys), img(band.mean), img(band.lower), img(band.upper)


def plot_reward_slice(posterior, dims=(0, 1), action: int | None = None, fixed=None,
                      bounds=None, grid: int = 40, prob: float = 0.9,
                      dynamics: Callable | None = None, neighbours: int = 5, axes=None,
                      names=None, show_data: bool = True):
    """Posterior mean reward and the width of its ``prob`` credible band over a 2-d slice (see
    :func:`reward_slice` for the arguments); ``names``: labels of the two coordinates;
    ``axes``: two matplotlib axes (default: a new figure). Returns the two axes."""
    if axes is not None and np.asarray(axes, dtype=object).size != 2:
        raise ArgumentTypeError("axes must be two matplotlib axes (mean, band width)")
    xs, ys, mean, lo, hi = reward_slice(posterior, dims, action, fixed, bounds, grid, prob,
                                        dynamics, neighbours)
    axes = new_axes(axes, ncols=2)
    ax_mean, ax_band = np.asarray(axes, dtype=object).ravel()
    extent = (xs[0], xs[-1], ys[0], ys[-1])
    labels = names or (f"obs[{dims[0]}]", f"obs[{dims[1]}]")
    what = "mean over actions" if action is None else f"action {action}"
    for ax, values, title, cmap in ((ax_mean, mean, f"posterior mean reward ({what})",
                                     "viridis"),
                                    (ax_band, hi - lo, f"{prob:.0%} credible band width",
                                     "magma")):
        im = ax.imshow(values, origin="lower", extent=extent, aspect="auto", cmap=cmap)
        ax.figure.colorbar(im, ax=ax)
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_title(title)
        if show_data:
            pts = as_numpy(posterior.data.transitions().obs)
            ax.scatter(pts[:, dims[0]], pts[:, dims[1]], s=3, c="white", alpha=0.5,
                       edgecolors="none")
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(ys[0], ys[-1])
    return ax_mean, ax_band
