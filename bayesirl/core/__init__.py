"""Data layer: what the user hands in. TabularMDP, Demonstrations, environments."""

from bayesirl.core.demos import Demonstrations, rollouts
from bayesirl.core.experts import ExpertDemonstrations
from bayesirl.core.mdp import TabularMDP
from bayesirl.core.preferences import Preferences
from bayesirl.core.trajectories import Trajectories, rollout

__all__ = ["Trajectories", "rollout",  # continuous observations
           "Demonstrations", "ExpertDemonstrations", "Preferences", "TabularMDP", "rollouts"]
