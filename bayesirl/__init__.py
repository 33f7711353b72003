"""bayesirl: Bayesian inverse reinforcement learning, posteriors over rewards.

The public facade, nothing else. Layers, bottom to top (each a subpackage; nothing imports
upward): ``core`` (MDPs, demonstrations, environments), ``planning`` (soft and hard value
iteration), ``model`` (reward models, likelihoods, the Pyro model), ``inference`` (``infer``),
``posterior`` (RewardPosterior, diagnostics, ArviZ), then ``decisions``, ``baselines``,
``metrics``, ``plots``, ``sbc`` and ``cli``.
"""

# arviz_io first: it imports ArviZ (0.x or 1.x) without its import-time announcements
from bayesirl.posterior import arviz_io as _arviz  # noqa: F401  isort: skip
from bayesirl import baselines, datasets, decisions, diagnostics, metrics, plots
from bayesirl.core import envs
from bayesirl.core.demos import Demonstrations, rollouts
from bayesirl.core.experts import ExpertDemonstrations
from bayesirl.core.mdp import TabularMDP
from bayesirl.core.preferences import Preferences
from bayesirl.core.trajectories import Trajectories
from bayesirl.inference import infer
from bayesirl.model import (
    GPReward,
    HierarchicalReward,
    LinearReward,
    NeuralReward,
    PreferenceModel,
    TabularReward,
    irl_model,
)
from bayesirl.model.q_value import QValueModel
from bayesirl.planning import (
    Plan,
    feature_expectations,
    occupancy,
    policy_value,
    soft_value_iteration,
    value_iteration,
)
from bayesirl.posterior import (
    ContinuousPosterior,
    HierarchicalPosterior,
    PreferencePosterior,
    RewardPosterior,
)
from bayesirl.sweep import sweep

__all__ = [
    "ContinuousPosterior",
    "QValueModel",
    "Trajectories",
    "Demonstrations",
    "ExpertDemonstrations",
    "GPReward",
    "HierarchicalPosterior",
    "HierarchicalReward",
    "LinearReward",
    "NeuralReward",
    "Plan",
    "PreferenceModel",
    "PreferencePosterior",
    "Preferences",
    "RewardPosterior",
    "TabularMDP",
    "TabularReward",
    "baselines",
    "datasets",
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
    "sweep",
    "value_iteration",
]
__version__ = "0.1.0"
