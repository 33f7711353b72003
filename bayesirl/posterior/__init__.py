"""Posterior layer: RewardPosterior, convergence diagnostics (ArviZ only), netCDF input/output."""

from bayesirl.posterior.reward_posterior import RewardPosterior

__all__ = ["RewardPosterior"]
