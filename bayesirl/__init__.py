"""bayesirl: Bayesian inverse reinforcement learning, posteriors over rewards."""

import warnings as _warnings

with _warnings.catch_warnings():  # ArviZ 0.2x announces its 1.0 refactor on import
    _warnings.simplefilter("ignore", FutureWarning)
    import arviz as _arviz  # noqa: F401

from bayesirl import baselines, decisions, diagnostics, envs, metrics, plots  # noqa: E402
from bayesirl.demos import Demonstrations, rollouts  # noqa: E402
from bayesirl.infer import infer  # noqa: E402
from bayesirl.mdp import TabularMDP  # noqa: E402
from bayesirl.model import irl_model  # noqa: E402
from bayesirl.planning import (  # noqa: E402
    Plan,
    feature_expectations,
    occupancy,
    policy_value,
    soft_value_iteration,
    value_iteration,
)
from bayesirl.posterior import RewardPosterior  # noqa: E402
from bayesirl.rewards import GPReward, LinearReward, NeuralReward, TabularReward  # noqa: E402

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
