"""bayesirl: Bayesian inverse reinforcement learning, posteriors over rewards."""

from bayesirl import envs
from bayesirl.demos import Demonstrations, rollouts
from bayesirl.mdp import TabularMDP
from bayesirl.planning import (
    Plan,
    feature_expectations,
    occupancy,
    policy_value,
    soft_value_iteration,
    value_iteration,
)

__all__ = [
    "Demonstrations",
    "Plan",
    "TabularMDP",
    "envs",
    "feature_expectations",
    "occupancy",
    "policy_value",
    "rollouts",
    "soft_value_iteration",
    "value_iteration",
]
__version__ = "0.1.0"
