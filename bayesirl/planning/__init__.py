"""Planning layer: soft and hard value iteration, occupancy, policy value.

``bellman`` holds the differentiable solvers over the MDP's sparse transitions; ``newton`` the
Newton-Kantorovich fixed points that discounted problems near gamma = 1 use (chosen by
:func:`choose_solver`); the compiled CPU kernels (``cpu_kernels``) and their scratch buffers
(``buffers``) sit below them.
"""

from bayesirl.planning.bellman import (
    SOLVERS,
    ConvergenceWarning,
    Plan,
    broadcast_reward,
    choose_solver,
    clear_warm_starts,
    feature_expectations,
    occupancy,
    policy_value,
    soft_value_iteration,
    value_iteration,
)

__all__ = [
    "SOLVERS",
    "ConvergenceWarning",
    "Plan",
    "broadcast_reward",
    "choose_solver",
    "clear_warm_starts",
    "feature_expectations",
    "occupancy",
    "policy_value",
    "soft_value_iteration",
    "value_iteration",
]
