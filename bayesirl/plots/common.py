"""What every figure shares: axes made on demand, inputs read as arrays, grid cells and marks.

A plot input is a :class:`~bayesirl.RewardPosterior` when :func:`is_posterior` says so (anything
whose ``reward`` is a method); an MDP's ``reward`` is a tensor or None. Arrays are read as float64
NumPy (:func:`as_numpy`), whatever the tensor's dtype or device, since matplotlib draws from NumPy.
Grid cells are ``s = row * cols + col`` with row 0 drawn at the top.
"""

from __future__ import annotations

import numpy as np

from bayesirl._validation import is_posterior, to_numpy
from bayesirl.core.envs import map_marks

__all__ = ["as_numpy", "draw_marks", "grid_axes", "is_posterior", "new_axes", "one_expert_hint",
           "posterior_rewards", "reduce_actions", "resolve_marks"]


def new_axes(ax, ncols=1, figsize=None):
    """``ax`` itself, or new axes (``ncols`` of them in a row) on a new pyplot figure."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(1, ncols, figsize=figsize or (4.8 * ncols, 4.0), squeeze=ncols == 1,
                         layout="constrained")
    return ax


def as_numpy(x) -> np.ndarray:
    """A tensor or array-like as a float64 NumPy array (detached, on the CPU)."""
    return to_numpy(x, np.float64)


def one_expert_hint(posterior) -> str:
    """What to pass instead of a posterior of several experts' rewards (one with a callable
    ``expert(e)``, a :class:`~bayesirl.HierarchicalPosterior`): ``""`` for any other."""
    if not callable(getattr(posterior, "expert", None)):
        return ""
    return (f"; a {type(posterior).__name__} holds one reward per expert: pass "
            "posterior.expert(e) for expert e's posterior")


def posterior_rewards(posterior, what: str):
    """``(mdp, draws)`` of a posterior of one reward: its MDP and reward draws ``(n, S, A)``.

    The one check of the posteriors that figures take (``what`` names the figure in the
    messages): a posterior without an MDP (a saved posterior loaded without one, a
    preference fit without one) raises a ValueError, one whose ``reward()`` is not
    ``(n, S, A)`` a TypeError, saying what to pass instead (a hierarchical posterior's
    ``reward()`` is ``(n, E, S, A)``, one reward per expert: ``posterior.expert(e)``).
    """
    mdp = getattr(posterior, "mdp", None)
    if mdp is None:
        raise ValueError(f"the posterior has no MDP, which {what} needs: load a saved posterior "
                         "with RewardPosterior.load(path, mdp), or infer with an MDP")
    draws = posterior.reward()
    S, A = mdp.n_states, mdp.n_actions
    if draws.dim() != 3 or tuple(draws.shape[1:]) != (S, A):
        raise TypeError(f"{what} takes a posterior of one reward, draws (n, {S}, {A}); "
                        f"{type(posterior).__name__}.reward() has shape "
                        f"{tuple(draws.shape)}{one_expert_hint(posterior)}")
    return mdp, draws


def reduce_actions(values: np.ndarray, over_actions: str) -> tuple[np.ndarray, str]:
    """``(S, A) -> (S,)``: exact when constant over actions, else the ``"max"`` or ``"mean"``
    over actions, with a note for titles and labels (``" (max over actions)"``)."""
    if np.allclose(values, values[:, :1], rtol=1e-9, atol=1e-12):
        return values[:, 0], ""
    if over_actions not in ("max", "mean"):
        raise ValueError(f"over_actions is {over_actions!r}, expected 'max' or 'mean'")
    reduce = np.max if over_actions == "max" else np.mean
    return reduce(values, axis=1), f" ({over_actions} over actions)"




def grid_axes(ax, rows, cols):
    """Limits, integer ticks and labels of a ``rows x cols`` grid drawn with row 0 on top."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("column")
    ax.set_ylabel("row")




def resolve_marks(mdp, marks) -> dict[int, str]:
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


def draw_marks(ax, mdp, marks: dict[int, str], corner: bool = False) -> None:
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
