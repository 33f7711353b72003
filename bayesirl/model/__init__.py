"""Model layer: reward models with their priors, the demonstrations' likelihood, the Pyro model."""

from bayesirl.model.dynamics_likelihood import FullLikelihood
from bayesirl.model.hierarchical import HierarchicalReward, loo_compare, simulate_experts
from bayesirl.model.likelihood import (
    LIKELIHOODS,
    action_log_probs,
    demo_log_likelihood,
    irl_model,
)
from bayesirl.model.preferences import PreferenceModel
from bayesirl.model.q_value import QValueModel
from bayesirl.model.rewards import (
    GPReward,
    LinearReward,
    NeuralReward,
    RewardModel,
    TabularReward,
)

__all__ = [
    "QValueModel",
    "LIKELIHOODS",
    "FullLikelihood",
    "GPReward",
    "HierarchicalReward",
    "PreferenceModel",
    "LinearReward",
    "NeuralReward",
    "RewardModel",
    "TabularReward",
    "action_log_probs",
    "demo_log_likelihood",
    "loo_compare",
    "simulate_experts",
    "irl_model",
]
