"""Point-estimate IRL baselines: each ``algorithm(mdp, demos, **options) -> IRLResult``.

- :func:`projection_irl`: apprenticeship learning, projection method (Abbeel and Ng 2004);
- :func:`max_margin_irl`: max-margin constraint generation (Abbeel and Ng 2004; Ratliff et al.
  2006), linear programs solved by HiGHS;
- :func:`maxent_irl`: maximum entropy IRL over paths (Ziebart et al. 2008);
- :func:`mce_irl`: maximum causal entropy IRL (Ziebart et al. 2010);
- :func:`deep_maxent_irl`: neural rewards trained by visitation matching (Wulfmeier et al. 2016);
- :func:`guided_cost_learning`: sample-based, unknown dynamics (Finn et al. 2016).

Rewards follow bayesirl's convention ``r = phi . theta`` (reward weights, not costs).
"""

from bayesirl.baselines.deep_maxent import deep_maxent_irl
from bayesirl.baselines.max_margin import max_margin_irl
from bayesirl.baselines.maxent import maxent_irl
from bayesirl.baselines.mce import mce_irl
from bayesirl.baselines.projection import projection_irl
from bayesirl.baselines.result import IRLResult

__all__ = [
    "IRLResult",
    "deep_maxent_irl",
    "guided_cost_learning",
    "max_margin_irl",
    "maxent_irl",
    "mce_irl",
    "projection_irl",
]

from bayesirl.baselines.gcl import guided_cost_learning  # noqa: E402
