"""bayesirl: Bayesian inverse reinforcement learning, posteriors over rewards."""

# _arviz first: it imports ArviZ (0.x or 1.x) without its import-time announcements
from bayesirl import _arviz, baselines, decisions, diagnostics, envs, metrics, plots  # noqa: F401
from bayesirl.demos import Demonstrations, rollouts
from bayesirl.infer import infer
from bayesirl.mdp import TabularMDP
from bayesirl.model import irl_model
from bayesirl.planning import (
    Plan,
    feature_expectations,
    occupancy,
    policy_value,
    soft_value_iteration,
    value_iteration,
)
from bayesirl.posterior import RewardPosterior
from bayesirl.rewards import GPReward, LinearReward, NeuralReward, TabularReward

__all__ = [
    "Demonstrations",
    "GPReward",
    "LinearReward",
    "NeuralReward",
    "Plan",
    "RewardPosterior",
    "TabularMDP",
    "TabularReward",
    "baselines",
    "decisions",
    "diagnostics",
    "envs",
    "metrics",
    "plots",
    "feature_expectations",
    "infer",
    "irl_model",
    "occupancy",
    "policy_value",
    "rollouts",
    "soft_value_iteration",
    "value_iteration",
]
__version__ = "0.1.0"
