r"""Counterfactuals over a posterior: change the reward or the dynamics, recompute, summarise.

A counterfactual asks what the expert would do in a world that was not observed: a higher
replacement cost, new dynamics, another discount. Under every posterior draw the reward
parameters are changed (a function of the draws, or fixed site values), the changed reward goes
through the same planner as the likelihood (soft or Boltzmann, the draw's rationality) in the
changed MDP, and the implied policy gives an occupancy:

- ``"stationary"``: the long-run distribution of the controlled chain
  ``P_pi(s' | s) = sum_a pi(a|s) P(s'|s, a)``, ``d = d P_pi``, times the policy: state-action
  frequencies summing to 1 (the chain must have a single recurrent class);
- ``"discounted"``: ``sum_t gamma^t Pr(s_t = s, a_t = a)`` from the initial distribution, total
  mass ``1 / (1 - gamma)`` (as :func:`~bayesirl.occupancy`).

A posterior with draws of the transition probabilities (a full likelihood's ``p``, Rust's
third stage) plans each draw in its own, so that the band carries the dynamics' uncertainty
beside the reward's; ``transition_probs=`` or ``mdp=`` fix the dynamics instead (the
first-stage estimate, as NFXP's counterfactuals do).

Any statistic of (policy, occupancy) is then summarised over the draws by its mean and an
equal-tailed credible band (:func:`band`). Draws are batched: one planner call per chunk of
draws, and linear solves batched over the chunk (for the stationary distribution a dense LU of
``(chunk, S, S)`` up to :data:`DENSE_MAX_STATES` states, the lazy chain's iteration beyond).

:func:`replacement_demand` is Rust's (1987, section 7) demand curve for bus engines on top: the
expected number of replacements per bus per year, ``12 sum_s d(s) pi(replace | s)`` under the
stationary distribution ``d`` of the controlled mileage chain, as a function of the replacement
cost RC with the other parameters at their posterior draws.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from bayesirl._validation import as_tensor, check_probability
from bayesirl.core.mdp import TabularMDP
from bayesirl.model.likelihood import action_log_probs
from bayesirl.planning.bellman import broadcast_reward
from bayesirl.planning.bellman import occupancy as _planning_occupancy
from bayesirl.planning.newton import policy_transitions
from bayesirl.posterior.bands import equal_tailed_interval
from bayesirl.posterior.full_likelihood import FullLikelihoodPosterior

__all__ = [
    "DENSE_MAX_STATES",
    "OCCUPANCIES",
    "Band",
    "Counterfactual",
    "FixedDynamicsWarning",
    "DemandCurve",
    "band",
    "counterfactual",
    "discounted_occupancy",
    "replacement_demand",
    "stationary_distribution",
]

OCCUPANCIES = ("stationary", "discounted")
DENSE_MAX_STATES = 1024  # dense batched LU of the controlled chain up to here
_DENSE_BYTES = 2**27  # largest (chunk, S, S) block of a dense solve
_POWER_TOL, _POWER_MAX_ITERS = 1e-12, 100_000


# ------------------------------------------------------------------------ summaries
class Band(NamedTuple):
    """Posterior mean and equal-tailed credible band of a quantity, each of its shape ``(...)``.

    ``lower``/``upper`` are the ``(1 - prob) / 2`` and ``(1 + prob) / 2`` quantiles over draws.
    """

    mean: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    prob: float


def _check_prob(prob) -> float:
    return check_probability("prob", prob, open_low=True, open_high=True)


def band(draws: torch.Tensor, prob: float = 0.95, dim: int = 0) -> Band:
    """Mean and equal-tailed ``prob`` band of ``draws`` over dimension ``dim`` (the draws).

    ``draws: (..., D, ...)``; returns a :class:`Band` whose tensors drop ``dim``. The band
    (:func:`~bayesirl.posterior.bands.equal_tailed_interval`) brackets the median, not
    necessarily the mean (a skewed quantity's mean can leave a narrow band; with ``prob`` near
    1 it stays inside).
    """
    lo, hi = equal_tailed_interval(draws, prob, dim)
    return Band(draws.mean(dim), lo, hi, _check_prob(prob))


# ------------------------------------------------------------------------ pure kernels
def _controlled_chain(mdp: TabularMDP, policy: torch.Tensor) -> torch.Tensor:
    """Dense ``P_pi (B, S, S')`` of ``policy (B, S, A)``: ``sum_a pi(a|s) P(s'|s, a)``."""
    return policy_transitions(mdp.successors, mdp.transition_probs, policy)


def _dense_chunk(S: int) -> int:
    """Draws per dense solve so that one ``(chunk, S, S)`` float64 block stays modest."""
    return max(1, _DENSE_BYTES // (8 * S * S))


def _batched(fn, x: torch.Tensor, rows: int) -> torch.Tensor:
    """``fn`` over ``x: (B, ...)`` in blocks of ``rows`` along the first dim, concatenated."""
    return torch.cat([fn(x[i:i + rows]) for i in range(0, x.shape[0], rows)])


def stationary_distribution(mdp: TabularMDP, policy: torch.Tensor) -> torch.Tensor:
    r"""Stationary state distribution of the chain that ``policy`` controls.

    Solves ``d = d P_pi``, ``sum_s d(s) = 1`` with ``P_pi(s, s') = sum_a pi(a|s) P(s'|s, a)``:
    a batched dense solve (one equation of ``(I - P_pi)^T d = 0`` replaced by the
    normalisation) up to :data:`DENSE_MAX_STATES` states, else the lazy chain
    ``d <- (d + d P_pi) / 2`` from a uniform and from a ramp start, which converges for any
    chain with one recurrent class, periodic or not (to one limit from both starts).

    Args:
        mdp: a discounted MDP (its transitions; the discount is not used).
        policy: ``(..., S, A)`` action probabilities, rows summing to 1.

    Returns:
        ``(..., S)``, non-negative, summing to 1 (float64 inside, the policy's dtype out).

    Raises:
        ValueError: when the chain has no unique stationary distribution (several recurrent
            classes: the solve is singular or its residual is not small).
    """
    S = mdp.n_states
    batch = policy.shape[:-2]
    pi = policy.detach().reshape(-1, S, mdp.n_actions).to(torch.float64)
    mdp64 = mdp.to(dtype=torch.float64)
    if S <= DENSE_MAX_STATES:
        def solve(p):
            chain = _controlled_chain(mdp64, p)
            M = torch.eye(S, dtype=p.dtype, device=p.device) - chain.transpose(-1, -2)
            M[:, -1, :] = 1.0
            rhs = torch.zeros(p.shape[0], S, 1, dtype=p.dtype, device=p.device)
            rhs[:, -1] = 1.0
            d, info = torch.linalg.solve_ex(M, rhs)
            d = d.squeeze(-1)
            resid = (torch.einsum("bs,bst->bt", d, chain) - d).abs().amax(-1)
            bad = (info != 0) | ~torch.isfinite(resid) | (resid > 1e-8)
            if bad.any():
                raise ValueError("the controlled chain has no unique stationary distribution "
                                 "(several recurrent classes under the policy of draw "
                                 f"{int(bad.nonzero()[0])} of the chunk); use "
                                 "occupancy='discounted'")
            return d.clamp_min(0.0)

        d = _batched(solve, pi, _dense_chunk(S))
    else:
        # two starts, uniform and a ramp: with one recurrent class both reach the same limit;
        # with several, each start's limit weighs the classes by the mass it sends into them
        ramp = torch.arange(1, S + 1, dtype=pi.dtype, device=pi.device)
        starts = torch.stack([torch.ones_like(ramp), ramp]) / torch.stack(
            [torch.ones_like(ramp), ramp]).sum(-1, keepdim=True)
        d = starts[:, None, :].expand(2, *pi.shape[:-1]).clone()           # (2, B, S)
        for _ in range(_POWER_MAX_ITERS):
            new = 0.5 * (d + mdp64.push(d.unsqueeze(-1) * pi))
            done = (new - d).abs().amax() <= _POWER_TOL
            d = new
            if done:
                break
        else:
            raise ValueError(f"the stationary distribution did not converge in "
                             f"{_POWER_MAX_ITERS} iterations of the lazy chain")
        apart = (d[0] - d[1]).abs().amax(-1) > 1e-8
        if apart.any():
            raise ValueError("the controlled chain has no unique stationary distribution "
                             "(several recurrent classes under the policy of draw "
                             f"{int(apart.nonzero()[0])}: the lazy chain's limit depends on "
                             "where it starts); use occupancy='discounted'")
        d = d[0]
    d = d / d.sum(-1, keepdim=True)
    return d.reshape(*batch, S).to(policy.dtype)


def discounted_occupancy(mdp: TabularMDP, policy: torch.Tensor,
                         initial: torch.Tensor | None = None) -> torch.Tensor:
    r"""Discounted state-action occupancy ``sum_t gamma^t Pr(s_t = s, a_t = a)``.

    :func:`~bayesirl.occupancy` with ``solver="newton"``: one LU of ``I - gamma P_pi`` per draw,
    exact however close gamma is to 1 (fixed-point iteration needs ``~1 / (1 - gamma)``
    sweeps), batched over the policy's leading dims.

    Args:
        mdp: a discounted MDP.
        policy: ``(..., S, A)`` action probabilities.
        initial: ``(S,)`` start distribution (default ``mdp.initial``).

    Returns:
        ``(..., S, A)``, total mass ``1 / (1 - gamma)``.
    """
    if mdp.finite_horizon:
        raise ValueError(f"mdp has horizon {mdp.horizon}; a discounted occupancy needs a "
                         "discounted MDP")
    with torch.no_grad():
        return _planning_occupancy(mdp, policy.detach(), initial=initial, solver="newton")


def _occupancy(mdp, policy, kind):
    if kind == "stationary":
        return stationary_distribution(mdp, policy).unsqueeze(-1) * policy
    return discounted_occupancy(mdp, policy)


def _implied(mdp: TabularMDP, rewards: torch.Tensor, likelihood: str, rationality: torch.Tensor,
             kind: str, chunk_size: int, progress: bool, desc: str,
             transitions: torch.Tensor | None = None, which: torch.Tensor | None = None):
    """Policies and occupancies ``(B, S, A)`` of reward draws ``(B, S, A)`` with rationalities
    ``(B,)``: one planner call and one batched solve per chunk of draws in ``mdp``.

    With ``transitions (T, S, A, K)`` (probabilities on ``mdp``'s successors), row ``i`` is
    planned in ``transitions[which[i]]`` (``which (B,)``, default ``arange(B)``): the rows
    sharing one set of probabilities are planned together in its MDP, a chunk at a time."""
    B = rewards.shape[0]
    with torch.no_grad():
        if transitions is None:
            policies, occupancies = [], []
            for i in tqdm(range(0, B, chunk_size), desc=desc, disable=not progress,
                          leave=False):
                pi = action_log_probs(mdp, rewards[i:i + chunk_size], likelihood,
                                      rationality[i:i + chunk_size]).exp()
                policies.append(pi)
                occupancies.append(_occupancy(mdp, pi, kind))
            return torch.cat(policies), torch.cat(occupancies)
        which = torch.arange(B) if which is None else which.cpu()
        policy, occupancy = torch.empty_like(rewards), torch.empty_like(rewards)
        order = torch.argsort(which, stable=True)
        starts = torch.searchsorted(which[order], torch.arange(transitions.shape[0] + 1))
        for t in tqdm(range(transitions.shape[0]), desc=desc, disable=not progress,
                      leave=False):
            rows = order[starts[t]:starts[t + 1]].to(rewards.device)
            if rows.numel() == 0:
                continue
            world = mdp.with_probabilities(transitions[t])
            for i in range(0, rows.numel(), chunk_size):
                block = rows[i:i + chunk_size]
                pi = action_log_probs(world, rewards[block], likelihood,
                                      rationality[block]).exp()
                policy[block] = pi
                occupancy[block] = _occupancy(world, pi, kind)
        return policy, occupancy


# ------------------------------------------------------------------------ inputs
def _check_chunk(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or (
            chunk_size < 1):
        raise ValueError(f"chunk_size is {chunk_size!r}, expected an integer >= 1")
    return int(chunk_size)


def _check_kind(occupancy, mdp: TabularMDP) -> str:
    if occupancy not in OCCUPANCIES:
        raise ValueError(f"occupancy is {occupancy!r}, expected one of {OCCUPANCIES}")
    if mdp.finite_horizon:
        raise ValueError(f"mdp has horizon {mdp.horizon}; counterfactual occupancies need a "
                         "discounted MDP (a stationary policy)")
    return occupancy


class FixedDynamicsWarning(UserWarning):
    """A posterior with draws of the transition probabilities (a full likelihood's ``"p"``)
    but not their layout over states and actions, planned in one MDP: the band leaves out the
    dynamics' uncertainty."""


DRAWS = "draws"  # transition_probs="draws": each posterior draw's own transition probabilities


def _draw_transitions(posterior) -> torch.Tensor | None:
    """``(D, S, A, K)`` each draw's transition probabilities, or None where the posterior has
    no draws of them (or cannot lay them out: warned by :func:`_world`)."""
    if not isinstance(posterior, FullLikelihoodPosterior) or (
            posterior.transition_groups is None or "p" not in posterior.params):
        return None
    return posterior.transition_probs()


def _world(posterior, mdp, transition_probs) -> tuple[TabularMDP, torch.Tensor | None]:
    """The counterfactual MDP, and each draw's transition probabilities ``(D, S, A, K)`` on its
    successors where the draws are planned in their own (else None).

    - ``transition_probs="draws"``, or neither ``mdp`` nor ``transition_probs`` for a posterior
      with draws of the transition probabilities (a
      :class:`~bayesirl.posterior.FullLikelihoodPosterior`): each draw in its own ``p``, in
      ``mdp`` (default the posterior's; same successors) otherwise;
    - a tensor ``transition_probs``: every draw in those probabilities on the posterior's MDP;
    - ``mdp``: every draw in that MDP.

    Warns (:class:`FixedDynamicsWarning`) for a posterior with draws of ``p`` that cannot be
    laid out over states and actions (a plain :class:`~bayesirl.RewardPosterior`), planned in
    its MDP: its transition probabilities are the first stage's estimate."""
    base = getattr(posterior, "mdp", None)
    by_draw = isinstance(transition_probs, str)
    if by_draw and transition_probs != DRAWS:
        raise ValueError(f"transition_probs is {transition_probs!r}, expected {DRAWS!r} (each "
                         "draw's own), probabilities (S, A, K) or None")
    if mdp is not None and transition_probs is not None and not by_draw:
        raise ValueError("give mdp or transition_probs, not both")
    draws = _draw_transitions(posterior) if (by_draw or (
        mdp is None and transition_probs is None)) else None
    if by_draw and draws is None:
        raise ValueError("transition_probs='draws' needs a posterior with draws of the "
                         "transition probabilities and their layout (a FullLikelihoodPosterior "
                         "from infer(..., FullLikelihood(...)) or FullLikelihoodPosterior.load)")
    if (mdp is None and transition_probs is None and draws is None
            and "p" in getattr(posterior, "params", {})):
        warnings.warn("this posterior has draws of the transition probabilities ('p') but not "
                      "their layout over states and actions, so every draw is planned in the "
                      "posterior's MDP (the first stage's estimate): the band leaves out the "
                      "dynamics' uncertainty; load it with FullLikelihoodPosterior.load to plan "
                      "each draw in its own p, or pass transition_probs= or mdp= to choose the "
                      "dynamics", FixedDynamicsWarning, stacklevel=3)
    if mdp is None:
        if base is None:
            raise ValueError("the posterior has no MDP (loaded without one): pass mdp")
        mdp = base
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")
    if base is not None and (base.n_states, base.n_actions) != (mdp.n_states, mdp.n_actions):
        raise ValueError(f"mdp has S={mdp.n_states}, A={mdp.n_actions} but the posterior's MDP "
                         f"has S={base.n_states}, A={base.n_actions}; a counterfactual keeps "
                         "the states and actions")
    if draws is not None:
        if tuple(mdp.successors.shape) != tuple(draws.shape[1:]) or (
                base is not None and not torch.equal(mdp.successors, base.successors)):
            raise ValueError("transition_probs='draws' plans each draw's p on the posterior "
                             "MDP's successors, but mdp has other successors "
                             f"{tuple(mdp.successors.shape)}; give an MDP with the same "
                             "successors (e.g. posterior.mdp.replace(discount=...))")
        return mdp, draws.to(mdp.dtype).detach()
    if transition_probs is not None:
        probs = torch.as_tensor(transition_probs, dtype=mdp.dtype, device=mdp.device)
        if probs.shape != mdp.transition_probs.shape:
            raise ValueError(f"transition_probs must have shape "
                             f"{tuple(mdp.transition_probs.shape)} (the successors' layout), got "
                             f"{tuple(probs.shape)}")
        mdp = mdp.replace(transition_probs=probs.detach())  # validated: rows sum to 1
    return mdp, None


def _linear_features(posterior, mdp: TabularMDP, site: str) -> torch.Tensor:
    """``phi (S, A, d)`` with ``posterior.reward() == phi @ theta`` for the draws of ``site``.

    The posterior does not carry its reward model; a linear one on the MDP's features is
    recognised by reproducing the stored reward draws (a few of them) from the parameters.
    """
    if site not in posterior.params:
        raise ValueError(f"the posterior has no site {site!r} (sites: {sorted(posterior.params)})"
                         "; pass reward_model")
    if mdp.features is None:
        raise ValueError("the MDP has no features; pass reward_model")
    phi = mdp.state_action_features()
    theta = posterior.samples[site]
    if theta.dim() != 2 or theta.shape[-1] != phi.shape[-1]:
        raise ValueError(f"site {site!r} has draws of shape {tuple(theta.shape[1:])} but the "
                         f"MDP has {phi.shape[-1]} features; pass reward_model")
    k = min(theta.shape[0], 8)
    stored = posterior.reward()[:k]
    recomputed = torch.einsum("dk,sak->dsa", theta[:k].to(phi), phi).to(stored)
    if not torch.allclose(recomputed, stored, rtol=1e-6, atol=1e-8 * (1 + stored.abs().max())):
        raise ValueError(f"the posterior's rewards are not the MDP's features times {site!r} "
                         "(another reward model); pass reward_model")
    return phi


def _rationality(posterior, n: int) -> torch.Tensor:
    beta = getattr(posterior, "rationality", None)
    return torch.ones(n, dtype=torch.float64) if beta is None else beta.reshape(-1)


def _likelihood(posterior) -> str:
    return getattr(posterior, "settings", {}).get("likelihood", "soft")


# ------------------------------------------------------------------------ counterfactuals
@dataclasses.dataclass(frozen=True)
class Counterfactual:
    """The implied behaviour under every posterior draw in a counterfactual world.

    Attributes:
        mdp: the counterfactual MDP.
        rewards: ``(D, S, A)`` the changed reward draws.
        policy: ``(D, S, A)`` the expert's action probabilities under each draw.
        occupancy: ``(D, S, A)`` stationary (sums to 1) or discounted (sums to
            ``1 / (1 - gamma)``) state-action occupancy under each draw.
        kind: ``"stationary"`` or ``"discounted"``.
        transitions: ``(D, S, A, K)`` each draw's own transition probabilities on
            ``mdp``'s successors, where each draw was planned in its own (a full likelihood's
            ``p``); None where every draw was planned in ``mdp``.
    """

    mdp: TabularMDP
    rewards: torch.Tensor
    policy: torch.Tensor
    occupancy: torch.Tensor
    kind: str
    transitions: torch.Tensor | None = None

    def state_distribution(self) -> torch.Tensor:
        """``(D, S)`` the occupancy summed over actions."""
        return self.occupancy.sum(-1)

    def summary(self, statistic: Callable | None = None, prob: float = 0.95) -> Band:
        """Mean and credible band over draws of ``statistic(policy, occupancy) -> (D, ...)``
        (default: the occupancy itself, a band per state-action pair)."""
        values = self.occupancy if statistic is None else statistic(self.policy, self.occupancy)
        if not isinstance(values, torch.Tensor) or values.dim() < 1 or (
                values.shape[0] != self.policy.shape[0]):
            raise ValueError(f"statistic must return a tensor (D, ...) with D = "
                             f"{self.policy.shape[0]} draws first")
        return band(values, prob)


def counterfactual(posterior, *, params=None, reward=None, reward_model=None, mdp=None,
                   transition_probs=None, occupancy: str = "stationary",
                   chunk_size: int = 256, progress: bool = True) -> Counterfactual:
    """Recompute the expert's policy and occupancy under every posterior draw in a changed world.

    Args:
        posterior: a :class:`~bayesirl.RewardPosterior` (its likelihood and rationality draws
            are used), or reward draws ``(D, S, A)`` with ``mdp`` (soft, rationality 1).
        params: change the reward parameters: a dict ``{site: value}`` of values that replace
            a site in every draw (broadcasting against ``(D, ...)``), or a function from the
            dict of draws ``{site: (D, ...)}`` to a changed dict. The rewards are recomputed by
            ``reward_model``, by default the MDP's features times ``theta`` when the posterior
            is a linear reward on them (checked on its stored draws); a changed
            ``rationality`` site is the planner's. The transition probabilities are changed
            by ``mdp`` or ``transition_probs``, not here (a full likelihood's ``p``: see
            :class:`FixedDynamicsWarning`).
        reward: or change the rewards directly: a function ``(D, S, A) -> (D, S, A)``.
        reward_model: the posterior's reward model (its ``reward(params)`` map) for ``params``.
        mdp: the counterfactual MDP (same states and actions; new transitions, discount or
            initial distribution), default the posterior's.
        transition_probs: or new probabilities ``(S, A, K)`` on the posterior MDP's successors;
            or ``"draws"``: each draw planned in its own transition probabilities (a
            :class:`~bayesirl.posterior.FullLikelihoodPosterior`'s ``p``), in ``mdp`` when
            given (same successors: e.g. another discount). The default for such a posterior
            when neither ``mdp`` nor ``transition_probs`` is given, so that the band carries
            the dynamics' uncertainty with the reward's; it plans draw by draw.
        occupancy: ``"stationary"`` or ``"discounted"`` (module docstring).
        chunk_size: draws planned at once.
        progress: a progress bar over chunks.

    Returns:
        A :class:`Counterfactual`; ``.summary(statistic, prob)`` gives a :class:`Band`.
    """
    chunk_size = _check_chunk(chunk_size)
    if params is not None and reward is not None:
        raise ValueError("give params or reward, not both")
    if isinstance(posterior, torch.Tensor):
        if mdp is None and transition_probs is None:
            raise ValueError("reward draws need mdp")
        if params is not None:
            raise ValueError("params need a posterior with parameter draws, not reward draws")
        world, draws = _world(None, mdp, transition_probs)
        rewards = broadcast_reward(world, posterior.detach())
        if rewards.dim() != 3:
            raise ValueError(f"reward draws must have shape (D, S, A), got "
                             f"{tuple(posterior.shape)}")
        beta, likelihood = torch.ones(rewards.shape[0], dtype=rewards.dtype), "soft"
    elif callable(getattr(posterior, "reward", None)):
        world, draws = _world(posterior, mdp, transition_probs)
        rewards = posterior.reward().to(world.dtype)
        beta, likelihood = _rationality(posterior, rewards.shape[0]), _likelihood(posterior)
        if params is not None:
            rewards, changed = _changed_rewards(posterior, world, params, reward_model)
            if "rationality" in changed:  # the planner's beta, a site like the reward's
                beta = torch.as_tensor(changed["rationality"]).reshape(-1).to(rewards)
    else:
        raise TypeError(f"posterior must be a RewardPosterior or a tensor of reward draws, got "
                        f"{type(posterior).__name__}")
    kind = _check_kind(occupancy, world)
    if reward is not None:
        if not callable(reward):
            raise TypeError(f"reward must be a function (D, S, A) -> (D, S, A), got "
                            f"{type(reward).__name__}")
        changed = broadcast_reward(world, reward(rewards))
        if changed.shape != rewards.shape:
            raise ValueError(f"reward returned shape {tuple(changed.shape)}, expected "
                             f"{tuple(rewards.shape)}")
        rewards = changed
    if not torch.isfinite(rewards).all():
        raise ValueError("the changed rewards contain non-finite values")
    policy, occ = _implied(world, rewards, likelihood, beta.to(rewards), kind, chunk_size,
                           progress, "counterfactual", draws)
    return Counterfactual(world, rewards, policy, occ, kind, draws)


def _changed_rewards(posterior, world, params, reward_model) -> tuple[torch.Tensor, dict]:
    """The rewards ``(D, S, A)`` of the changed draws, and those draws ``{site: (D, ...)}``."""
    draws = dict(posterior.samples)
    if callable(params):
        changed = params(dict(draws))
        if not isinstance(changed, dict):
            raise TypeError(f"params returned {type(changed).__name__}, expected a dict of "
                            "site draws")
    elif isinstance(params, dict):
        changed = dict(draws)
        D = next(iter(draws.values())).shape[0] if draws else 0
        for site, value in params.items():
            if site not in draws:
                raise ValueError(f"params names site {site!r}, which the posterior lacks "
                                 f"(sites: {sorted(draws)})")
            if site == "p":
                raise ValueError("params['p'] would change the transition probabilities, "
                                 "which the counterfactual takes from transition_probs= or "
                                 "mdp=")
            v = as_tensor(f"params[{site!r}]", value, dtype=draws[site].dtype)
            try:
                changed[site] = v.expand(D, *draws[site].shape[1:])
            except RuntimeError as e:
                raise ValueError(f"params[{site!r}] has shape {tuple(v.shape)}, which does not "
                                 f"broadcast to the draws' {tuple(draws[site].shape)}") from e
    else:
        raise TypeError(f"params must be a dict of site values or a function of the draws, "
                        f"got {type(params).__name__}")
    if reward_model is not None:
        with torch.no_grad():
            r = reward_model.reward(changed)
    else:
        phi = _linear_features(posterior, world if world.features is not None
                               else posterior.mdp, "theta")
        r = torch.einsum("dk,sak->dsa", changed["theta"].to(phi), phi)
    return broadcast_reward(world, r), changed


# ------------------------------------------------------------------------ Rust's demand curve
class DemandCurve(NamedTuple):
    """Expected replacements per unit per year as a function of the replacement cost.

    ``cost``: ``(G,)`` the grid; ``draws``: ``(G, D)`` the demand under each posterior draw;
    ``mean``, ``lower``, ``upper``: ``(G,)`` its posterior mean and equal-tailed ``prob`` band.
    """

    cost: torch.Tensor
    draws: torch.Tensor
    mean: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    prob: float


def replacement_demand(posterior, cost_grid, *, mdp=None, transition_probs=None,
                       site: str = "theta", feature: str = "RC", replace_action: int = 1,
                       periods_per_year: float = 12.0, prob: float = 0.95,
                       chunk_size: int = 256, progress: bool = True) -> DemandCurve:
    r"""Rust's (1987) expected replacement demand with a credible band over posterior draws.

    For each replacement cost ``c`` on the grid and each draw, the reward weight named
    ``feature`` is set to ``c`` (the others keep their draws), the expert's policy is
    recomputed, and the demand is ``periods_per_year * sum_s d(s) pi(replace | s)`` with ``d``
    the stationary distribution of the controlled state chain: the long-run replacements per
    bus per year when one period is a month. One planner call and one batched stationary solve
    per chunk of (cost, draw) pairs; with each draw's own transition probabilities, per draw
    (its costs together).

    Args:
        posterior: a :class:`~bayesirl.RewardPosterior` of a linear reward on the MDP's
            features (e.g. ``bayesirl.datasets.rust_bus``'s ``(theta_11, RC)``), on a
            discounted MDP.
        cost_grid: ``(G,)`` replacement costs, in the units of the weight ``feature``.
        mdp: the counterfactual MDP, default the posterior's.
        transition_probs: as :func:`counterfactual`'s: probabilities ``(S, A, K)``, or
            ``"draws"`` (the default for a posterior with draws of them: each draw's own).
        site, feature: the parameter site and the name of the cost weight among the
            features' names (``posterior.coords["feature"]`` or ``mdp.feature_names``).
        replace_action: index of the replacement action.
        periods_per_year: decisions per year (12: monthly).
        prob: the band's probability.

    Returns:
        A :class:`DemandCurve`.
    """
    prob = _check_prob(prob)
    chunk_size = _check_chunk(chunk_size)
    if not callable(getattr(posterior, "reward", None)) or not hasattr(posterior, "params"):
        raise TypeError(f"posterior must be a RewardPosterior, got {type(posterior).__name__}")
    world, draws = _world(posterior, mdp, transition_probs)
    kind = _check_kind("stationary", world)
    grid = torch.as_tensor(cost_grid, dtype=world.dtype) if not isinstance(cost_grid, str) \
        else None
    if grid is None or grid.dim() != 1 or grid.numel() == 0 or not torch.isfinite(grid).all():
        raise ValueError(f"cost_grid must be a non-empty 1-d sequence of finite costs, got "
                         f"{cost_grid!r}")
    if isinstance(replace_action, bool) or not isinstance(replace_action, numbers.Integral) or (
            not 0 <= replace_action < world.n_actions):
        raise ValueError(f"replace_action is {replace_action!r}, expected an action index in "
                         f"[0, {world.n_actions})")
    if isinstance(periods_per_year, bool) or not isinstance(periods_per_year, numbers.Real) or (
            not (math.isfinite(periods_per_year) and periods_per_year > 0)):
        raise ValueError(f"periods_per_year is {periods_per_year!r}, expected a number > 0")
    names = list(getattr(posterior, "coords", {}).get("feature") or world.feature_names or [])
    if feature not in names:
        raise ValueError(f"feature {feature!r} is not among the features' names {names}")
    phi = _linear_features(posterior, world if world.features is not None else posterior.mdp,
                           site)
    theta = posterior.samples[site].to(phi)  # (D, d)
    D, G = theta.shape[0], grid.shape[0]
    thetas = theta.expand(G, D, theta.shape[-1]).clone()
    thetas[..., names.index(feature)] = grid.to(phi).unsqueeze(-1)
    rewards = torch.einsum("gdk,sak->gdsa", thetas, phi).reshape(G * D, *phi.shape[:2])
    beta = _rationality(posterior, D).to(phi).repeat(G)
    which = None if draws is None else torch.arange(D).repeat(G)  # pair (g, d) -> draw d
    policy, occ = _implied(world, rewards, _likelihood(posterior), beta, kind, chunk_size,
                           progress, "replacement demand", draws, which)
    rate = periods_per_year * occ[..., replace_action].sum(-1).reshape(G, D)
    summary = band(rate, prob, dim=1)
    return DemandCurve(grid, rate, summary.mean, summary.lower, summary.upper, prob)
