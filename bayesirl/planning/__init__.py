"""Planning layer: soft and hard value iteration, occupancy, policy value.

``bellman`` holds the differentiable solvers over the MDP's sparse transitions; the compiled CPU
kernels (``cpu_kernels``) and their scratch buffers (``buffers``) sit below it.
"""

from bayesirl.planning.bellman import (
    ConvergenceWarning,
    Plan,
    broadcast_reward,
    feature_expectations,
    occupancy,
    policy_value,
    soft_value_iteration,
    value_iteration,
)

__all__ = [
    "ConvergenceWarning",
    "Plan",
    "broadcast_reward",
    "feature_expectations",
    "occupancy",
    "policy_value",
    "soft_value_iteration",
    "value_iteration",
]
