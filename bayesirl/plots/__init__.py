"""Plots of rewards, policies and posterior diagnostics (matplotlib; no pyplot state).

One module a job: :mod:`~bayesirl.plots.rewards` (reward maps, mean and sd panels, recovery),
:mod:`~bayesirl.plots.policies` (policy arrows, visits), :mod:`~bayesirl.plots.diagnostics`
(ArviZ layers, per-chain diagnostics, the ELBO). ``GYM_DIRECTIONS`` and ``map_marks``, which read
Gymnasium's grids, live beside :func:`bayesirl.core.envs.from_gymnasium` and are re-exported.
"""

from bayesirl.core.envs import GYM_DIRECTIONS, map_marks
from bayesirl.plots.continuous import plot_reward_slice
from bayesirl.plots.diagnostics import plot_diagnostics, plot_elbo, plot_posterior
from bayesirl.plots.policies import plot_policy, plot_visits
from bayesirl.plots.rewards import plot_recovery, plot_reward, plot_reward_panels

__all__ = [
    "plot_reward_slice",
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
