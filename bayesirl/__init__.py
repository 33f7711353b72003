"""bayesirl: Bayesian inverse reinforcement learning, posteriors over rewards."""

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
    "Plan",
    "TabularMDP",
    "feature_expectations",
    "occupancy",
    "policy_value",
    "soft_value_iteration",
    "value_iteration",
]
__version__ = "0.1.0"
