"""Plots of rewards, policies and posterior diagnostics (matplotlib; no pyplot state)."""

from bayesirl.plots.figures import (
    GYM_DIRECTIONS,
    map_marks,
    plot_diagnostics,
    plot_elbo,
    plot_policy,
    plot_posterior,
    plot_recovery,
    plot_reward,
    plot_reward_panels,
    plot_visits,
)

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
