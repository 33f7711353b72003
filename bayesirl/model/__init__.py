"""Model layer: reward models with their priors, the demonstrations' likelihood, the Pyro model."""

from bayesirl.model.likelihood import (
    LIKELIHOODS,
    action_log_probs,
    demo_log_likelihood,
    irl_model,
)
from bayesirl.model.rewards import (
    GPReward,
    LinearReward,
    NeuralReward,
    RewardModel,
    TabularReward,
)

__all__ = [
    "LIKELIHOODS",
    "GPReward",
    "LinearReward",
    "NeuralReward",
    "RewardModel",
    "TabularReward",
    "action_log_probs",
    "demo_log_likelihood",
    "irl_model",
]
