r"""What to ask next, and what to do for someone new: information gain and the population's
robust policy.

**Expected information gain.** A query's answer ``y`` (a preference label, a new demonstration)
teaches ``I(y; theta) = H[p(y)] - E_theta H[p(y | theta)]`` nats about the parameters: the
expected drop of the posterior entropy (Lindley 1956; BALD, Houlsby et al. 2011). With the
posterior represented by its draws ``theta_1..D`` (weights ``w_d``), ``p(y) = sum_d w_d
p(y | theta_d)`` and the mutual information is that of the draws' discrete distribution:

- :func:`mutual_information` for an answer with K outcomes, given their probabilities under
  every draw (a preference pair: ``i > j``, ``j > i``, tie) -- exact for the draws;
- :func:`demonstration_information_gain` for a whole trajectory, whose outcomes are too many to
  enumerate: for every draw ``d`` a trajectory ``y ~ p(. | theta_d)`` is simulated and
  ``log p(y | theta_d) - log sum_d' w_d' p(y | theta_d')`` averaged (the dynamics' terms cancel,
  only the policy's remain). Unbiased for the draws' mutual information; it reports its Monte
  Carlo standard error.

:func:`pair_information_gain` ranks candidate comparisons for a preference posterior;
:func:`expert_information_gain` ranks the experts of a hierarchical posterior by what one more
demonstration of theirs would teach about their own reward and rationality (the only
parameters it depends on directly).

**A new member of the population.** :func:`population_robust_policy` draws the reward of a new
expert from the population's predictive distribution (``theta_new = mu + tau z`` for every
posterior draw of ``mu, tau``, ``z ~ N(0, I)``) and hands those draws to
:func:`~bayesirl.decisions.robust_policy` (BROIL): a policy that is good in expectation and in
the bad tail for someone of whom nothing is known but that they belong to the population.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from bayesirl._validation import check_int
from bayesirl.core.mdp import TabularMDP, check_mdp
from bayesirl.core.preferences import Preferences
from bayesirl.decisions._inputs import check_posterior_mdp, draw_log_probs
from bayesirl.decisions.robust import RobustPolicy, robust_policy
from bayesirl.model.hierarchical import sample_rollouts
from bayesirl.posterior.hierarchical import HierarchicalPosterior

__all__ = [
    "InformationGain",
    "demonstration_information_gain",
    "expert_information_gain",
    "mutual_information",
    "pair_information_gain",
    "population_robust_policy",
]


class InformationGain(NamedTuple):
    """Expected information gain of candidate queries, in nats.

    Attributes:
        gain: ``(Q,)`` the expected information gain of each candidate.
        stderr: ``(Q,)`` its Monte Carlo standard error (zeros when exact for the draws).
        best: index of the candidate with the largest gain (the lowest index among ties).
    """

    gain: torch.Tensor
    stderr: torch.Tensor
    best: int


def _weights(weights, D: int, like: torch.Tensor) -> torch.Tensor:
    if weights is None:
        return torch.full((D,), 1.0 / D, dtype=like.dtype, device=like.device)
    w = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if tuple(w.shape) != (D,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {D} non-negative finite numbers (one per draw) with "
                         f"a positive sum, got shape {tuple(w.shape)}")
    return w / w.sum()


def mutual_information(probs, weights=None) -> torch.Tensor:
    """``I(y; theta) = H[sum_d w_d p_d] - sum_d w_d H[p_d]`` in nats.

    ``probs``: ``(D, ..., K)`` probabilities of K outcomes under each of D draws (rows sum to
    1); ``weights``: ``(D,)`` probabilities of the draws (default uniform). Returns ``(...)``,
    between 0 (the draws agree) and ``log K``.
    """
    p = torch.as_tensor(probs)
    if not p.dtype.is_floating_point or p.dim() < 2:
        raise ValueError(f"probs must be a float tensor (D, ..., K), got dtype {p.dtype} and "
                         f"shape {tuple(p.shape)}")
    if not torch.isfinite(p).all() or (p < 0).any() or not torch.allclose(
            p.sum(-1), torch.ones((), dtype=p.dtype), atol=1e-6):
        raise ValueError("probs must be finite, >= 0 and sum to 1 over the last dim")
    w = _weights(weights, p.shape[0], p)
    mean = torch.einsum("d,d...->...", w, p)
    each = torch.special.entr(p).sum(-1)
    return (torch.special.entr(mean).sum(-1) - torch.einsum("d,d...->...", w, each)).clamp(
        min=0)


def pair_information_gain(posterior, candidates: Preferences, weights=None) -> InformationGain:
    """The expected information gain of asking for each candidate comparison.

    ``posterior``: a preference posterior (:class:`~bayesirl.PreferencePosterior`,
    or anything with ``outcome_probs(preferences) -> (draws, P, 3)``); ``candidates``:
    :class:`Preferences` whose pairs are the questions (their labels and ties are ignored; the
    trajectories need what the posterior's returns need). The outcome is the judge's answer,
    win, loss or (with a tie strength > 0) tie, under the posterior's rationality and tie
    strength draws. Exact for the draws.
    """
    if not isinstance(candidates, Preferences):
        raise TypeError(f"candidates must be Preferences, got {type(candidates).__name__}")
    if not callable(getattr(posterior, "outcome_probs", None)):
        raise TypeError("posterior must be a preference posterior with outcome_probs(), got "
                        f"{type(posterior).__name__}")
    probs = posterior.outcome_probs(candidates)                     # (D, P, 3)
    gain = mutual_information(probs, weights)
    return InformationGain(gain, torch.zeros_like(gain), int(torch.argmax(gain)))


def demonstration_information_gain(mdp: TabularMDP, log_policy: torch.Tensor, *,
                                   length: int | None = None, n_rollouts: int = 4,
                                   weights=None, seed: int = 0) -> InformationGain:
    """The expected information gain of one more demonstration from each of Q experts.

    ``log_policy``: ``(D, Q, T, S, A)`` (finite horizon) or ``(D, Q, S, A)``: expert q's
    policy under each of D posterior draws; ``length``: the demonstration's steps (default the
    horizon; required when discounted), starting from ``mdp.initial``; ``n_rollouts``
    trajectories per draw and expert; ``weights`` of the draws. Returns the mutual information
    between a demonstration of expert q and the parameters, per expert, with its standard
    error (see the module docstring). Cost: ``D * Q * n_rollouts`` simulated trajectories and
    ``D`` times as many policy look-ups.
    """
    mdp = check_mdp(mdp)
    lp = torch.as_tensor(log_policy, dtype=mdp.dtype, device=mdp.device)
    S, A = mdp.n_states, mdp.n_actions
    event = 3 if mdp.finite_horizon else 2
    if lp.dim() != event + 2 or tuple(lp.shape[-2:]) != (S, A):
        want = "(D, Q, T, S, A)" if mdp.finite_horizon else "(D, Q, S, A)"
        raise ValueError(f"log_policy must have shape {want} with S={S}, A={A}, got "
                         f"{tuple(lp.shape)}")
    if length is None:
        if not mdp.finite_horizon:
            raise ValueError("length is required for a discounted MDP (it has no horizon)")
        length = mdp.horizon
    length = check_int("length", length, 1, mdp.horizon if mdp.finite_horizon else None)
    n = check_int("n_rollouts", n_rollouts)
    D, Q = lp.shape[:2]
    w = _weights(weights, D, lp)
    g = torch.Generator(device=mdp.device).manual_seed(check_int("seed", seed, 0))
    flat = lp.transpose(0, 1).reshape(Q * D, *lp.shape[2:])            # (Q * D, [T,] S, A)
    states, actions, _ = sample_rollouts(mdp, flat.exp(), n, length, g)  # (Q * D, n, L)
    idx = states * A + actions
    if mdp.finite_horizon:
        idx = idx + torch.arange(length, device=idx.device) * (S * A)
    idx = idx.reshape(Q, 1, D * n * length)
    table = lp.transpose(0, 1).reshape(Q, D, -1)                       # (Q, D', [T] S A)
    ll = table.gather(-1, idx.expand(Q, D, D * n * length))
    ll = ll.reshape(Q, D, D, n, length).sum(-1)                        # (Q, D', D, n)
    own = ll.diagonal(dim1=1, dim2=2).movedim(-1, 1)                   # (Q, D, n)
    marginal = torch.logsumexp(ll + w.log()[None, :, None, None], 1)   # (Q, D, n)
    values = own - marginal
    terms = values.mean(-1)                                            # (Q, D)
    gain = terms @ w
    if n > 1:  # the simulation is the only randomness: its variance within each draw
        var = values.var(-1) / n
        stderr = (var @ (w * w)).sqrt()
    else:      # one rollout per draw: the spread over draws bounds it from above
        stderr = ((((terms - gain[:, None]) ** 2) @ w) * (w * w).sum()).sqrt()
    return InformationGain(gain.clamp(min=0), stderr, int(torch.argmax(gain)))


def expert_information_gain(posterior: HierarchicalPosterior, *, length: int | None = None,
                            n_rollouts: int = 4, max_draws: int = 256,
                            seed: int = 0) -> InformationGain:
    """Which expert's next demonstration would teach the most: the expected information gain
    about that expert's reward and rationality from one more of their demonstrations, under
    a hierarchical posterior (see :func:`demonstration_information_gain`).

    Uses ``max_draws`` evenly spaced posterior draws (the cost grows with their square);
    ``length`` defaults to the horizon; randomness from ``seed``.
    """
    if not isinstance(posterior, HierarchicalPosterior):
        raise TypeError(f"posterior must be a HierarchicalPosterior, got "
                        f"{type(posterior).__name__}")
    mdp = posterior.mdp
    R, beta = posterior.reward(), posterior.expert_rationality               # (D, E, S, A)
    keep = torch.linspace(0, R.shape[0] - 1, min(check_int("max_draws", max_draws),
                                                 R.shape[0])).round().long()
    R, beta = R[keep], beta[keep]
    likelihood = posterior.settings.get("likelihood", "soft")
    lp = draw_log_probs(mdp, R, likelihood, beta)
    return demonstration_information_gain(mdp, lp, length=length, n_rollouts=n_rollouts,
                                          seed=seed)


def population_robust_policy(mdp: TabularMDP, posterior: HierarchicalPosterior,
                             alpha: float = 0.95, lam: float = 0.5, *, n: int = 1,
                             seed: int = 0, method: str = "lp") -> RobustPolicy:
    """The BROIL policy for a new member of the population.

    Reward draws ``phi . (mu + tau z)``, ``n`` per posterior draw of ``mu, tau``
    (:meth:`HierarchicalPosterior.predictive_reward`, seeded by ``seed``), go to
    :func:`~bayesirl.decisions.robust_policy` with ``alpha``, ``lam`` and ``method``. ``mdp``
    must have the posterior's states, actions and transitions (its horizon, discount or
    initial distribution may differ: a new member's situation); other dynamics raise a
    ValueError naming both MDPs, the check :func:`~bayesirl.decisions.robust_policy` makes.
    """
    mdp = check_mdp(mdp)
    if not isinstance(posterior, HierarchicalPosterior):
        raise TypeError(f"posterior must be a HierarchicalPosterior, got "
                        f"{type(posterior).__name__}")
    check_posterior_mdp(mdp, posterior, instead=(  # states, actions, transitions: one rule
        "pass posterior.predictive_reward(n) to robust_policy to use the predictive reward "
        "draws with other dynamics"))
    draws = posterior.predictive_reward(n=n, seed=seed)
    return robust_policy(mdp, draws, alpha=alpha, lam=lam, method=method)
