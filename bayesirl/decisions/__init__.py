"""Decisions under reward uncertainty: what to do, how badly it can go, what to ask next.

- :func:`robust_policy` (BROIL: expected return traded against its CVaR, one linear program)
  and :func:`bayes_optimal_policy` (optimal for the posterior-mean reward), in :mod:`.robust`;
- :func:`value_at_risk_bound`: high-confidence bound on a policy's value-at-risk of expected
  value difference (Brown & Niekum 2018), in :mod:`.bounds`;
- :func:`active_query`: the states whose expert action is most uncertain (Lopes, Melo &
  Montesano 2009), in :mod:`.active`;
- :func:`posterior_predictive_check`: replicated demonstrations against the observed ones, in
  :mod:`.checks`;
- :func:`counterfactual` (policy and occupancy under every draw in a changed world) and
  :func:`replacement_demand` (Rust's demand curve with a credible band), in :mod:`.counterfactual`.

Every function takes a :class:`~bayesirl.RewardPosterior` or a tensor of reward draws
``(D, S)`` / ``(D, S, A)``. A posterior must have been inferred on the MDP passed alongside it
(same states, actions and transitions; the initial distribution, horizon or discount may
differ), else a ``ValueError`` names both MDPs; pass ``posterior.reward()`` to use the draws
with other dynamics.
"""

from bayesirl.decisions.active import CRITERIA, Query, active_query
from bayesirl.decisions.bounds import VaRBound, value_at_risk_bound
from bayesirl.decisions.checks import STATISTICS, PredictiveCheck, posterior_predictive_check
from bayesirl.decisions.counterfactual import (
    Band,
    Counterfactual,
    DemandCurve,
    FixedDynamicsWarning,
    counterfactual,
    replacement_demand,
)
from bayesirl.decisions.information import (
    InformationGain,
    expert_information_gain,
    pair_information_gain,
    population_robust_policy,
)
from bayesirl.decisions.robust import RobustPolicy, bayes_optimal_policy, cvar, robust_policy

__all__ = [
    "Band",
    "Counterfactual",
    "DemandCurve",
    "FixedDynamicsWarning",
    "counterfactual",
    "replacement_demand",
    "CRITERIA",
    "InformationGain",
    "STATISTICS",
    "PredictiveCheck",
    "Query",
    "RobustPolicy",
    "VaRBound",
    "active_query",
    "bayes_optimal_policy",
    "cvar",
    "expert_information_gain",
    "pair_information_gain",
    "population_robust_policy",
    "posterior_predictive_check",
    "robust_policy",
    "value_at_risk_bound",
]
