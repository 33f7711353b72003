"""Posterior layer: RewardPosterior, the posteriors of the other targets (preferences,
hierarchical experts, the full likelihood, continuous observations), convergence diagnostics
(ArviZ only), netCDF input/output.

Importing this package registers each target's posterior class with its target
(``posterior_class``, see :class:`~bayesirl.model.base_target.BaseTarget`), so a target
built in the model layer returns its posterior from ``make_posterior`` once this package is
imported (``bayesirl.infer`` imports it).
"""

from bayesirl.posterior.continuous import ContinuousPosterior
from bayesirl.posterior.full_likelihood import FullLikelihoodPosterior
from bayesirl.posterior.hierarchical import ExpertPosterior, HierarchicalPosterior
from bayesirl.posterior.preferences import PreferencePosterior
from bayesirl.posterior.reward_posterior import RewardPosterior

__all__ = ["ContinuousPosterior", "ExpertPosterior", "FullLikelihoodPosterior",
           "HierarchicalPosterior", "PreferencePosterior", "RewardPosterior"]
