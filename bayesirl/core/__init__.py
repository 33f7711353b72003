"""Data layer: what the user hands in. TabularMDP, Demonstrations, environments."""

from bayesirl.core.demos import Demonstrations, rollouts
from bayesirl.core.mdp import TabularMDP

__all__ = ["Demonstrations", "TabularMDP", "rollouts"]
