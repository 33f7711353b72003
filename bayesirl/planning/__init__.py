"""Planning layer: soft and hard value iteration, occupancy, policy value.

``bellman`` holds the differentiable solvers over the MDP's sparse transitions; ``newton`` the
Newton-Kantorovich fixed points that discounted problems near gamma = 1 use (chosen by
:func:`choose_solver`); the compiled CPU kernels (``cpu_kernels``) and their scratch buffers
(``buffers``) sit below them.

The package exports exactly what ``bellman.__all__`` lists, so the public names have one home
(the module that defines them) and this file never restates the list.
"""

from bayesirl.planning import bellman
from bayesirl.planning.bellman import *  # noqa: F403  (bellman.__all__ is the public surface)

__all__ = []
__all__ += bellman.__all__
