r"""The full likelihood: transition probabilities inside the same posterior as the reward.

Rust (1987) estimates his bus model in three stages: the mileage increments' probabilities from
the observed transitions (stage 1), the cost parameters from the choices given those (stage 2,
the partial likelihood), and finally everything jointly (stage 3, the full likelihood). This
module is the third stage, and its Bayesian version: the transition probabilities ``p`` of a
:class:`~bayesirl.core.dynamics.DirichletTransitions` (``G`` groups, ``K`` slots each, tied
across states) become parameters beside the reward's, with the Dirichlet prior of the first
stage, and

    log p(data | theta, p) = sum_i sum_t log pi_{theta, p}(a_t^i | s_t^i)      (choices)
                           + sum_{g, k} n_{g k} log p_{g k}                     (transitions)

where ``pi_{theta, p}`` is the soft-optimal policy of the MDP whose transition probabilities are
``p`` spread over the support (``P[s, a, k] = p[groups[s, a], k]``) and ``n`` the first stage's
slot counts. The choices depend on ``p`` through the planner; the transitions do not depend on
``theta``.

**Gradient in p through the fixed point.** The discounted planners differentiate through
transition probabilities (``mdp.with_probabilities(P)`` with ``P`` requiring grad: the implicit
gradient of the fixed point ``v = logsumexp_a(r + gamma P v)``). Per-observation scores need
one gradient per observation, so :func:`soft_log_policy` also takes a batch of probabilities
with equal values and a graph each; one MDP serves them all because the fixed point moves with
``dP`` exactly as it moves with a reward ``gamma (dP) v``: the implicit function theorem gives
``dv = (I - gamma P_pi)^{-1} pi (dr + gamma dP v)`` in both cases. So it plans once for ``v`` (no
graph), once more on ``r + gamma (E_P[v] - E_{P.detach()}[v])``, a tensor equal to ``r`` whose
gradient carries each row's ``dP``, and forms ``q = r + gamma E_P[v]``.

:class:`FullLikelihood` is the model object, which ``infer(mdp, demos, FullLikelihood(...),
method=...)`` takes like any other (NUTS, HMC, ``"map"`` with standard errors of every site,
``"laplace"``) and which returns a
:class:`~bayesirl.posterior.full_likelihood.FullLikelihoodPosterior` with ``p``'s draws beside
the reward's (``build_target`` gives the target they work on).
:func:`~bayesirl.inference.map.laplace_fit` on that target is the econometrician's table: the
joint mode and standard errors in each parameter's own units (``theta`` and the probabilities
``p``), from the inverse Hessian in unconstrained coordinates by the delta method and from the
outer product of per-observation scores (BHHH, the kind Rust published), with the
log-likelihood split into choices and transitions.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from bayesirl.core.demos import Demonstrations
from bayesirl.core.dynamics import DirichletTransitions
from bayesirl.core.flat import flattening
from bayesirl.core.mdp import TabularMDP
from bayesirl.model.base_target import BaseTarget
from bayesirl.model.likelihood import check_rationality
from bayesirl.model.rewards import RewardModel
from bayesirl.planning.bellman import broadcast_reward, soft_value_iteration

__all__ = [
    "FullLikelihood",
    "FullLikelihoodTarget",
    "soft_log_policy",
]

SITE = "p"  # the transition probabilities' site


# ---------------------------------------------------------------------------- pure functions
def _expected(successors: torch.Tensor, probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_k probs[..., s, a, k] v[..., successors[s, a, k]]``: ``v (B, S)`` and ``probs``
    ``(S, A, K)`` or ``(B, S, A, K)`` -> ``(B, S, A)``; differentiable in both."""
    return (v[:, successors] * probs).sum(-1)


def soft_log_policy(mdp: TabularMDP, reward: torch.Tensor, probs: torch.Tensor,
                    rationality: float = 1.0) -> torch.Tensor:
    r"""The soft-optimal ``log pi(a | s)`` of a discounted MDP with transition probabilities
    ``probs``, differentiable in the reward and in ``probs``.

    Args:
        mdp: a discounted MDP whose successors ``(S, A, K)`` the probabilities sit on.
        reward: ``(..., S, A)`` or ``(..., S)``; leading dims are batch.
        probs: ``(S, A, K)`` (may require grad), or ``(..., S, A, K)`` with the reward's batch
            dims and equal values in every batch row (so that one MDP serves them; each row
            gets its own gradient, which per-observation scores need). Rows sum to 1.
        rationality: beta > 0, multiplying the reward.

    Returns:
        ``(..., S, A)``. The gradient in ``probs`` is the implicit one through the fixed point
        (module docstring); batched ``probs`` cost a second solve.
    """
    if mdp.finite_horizon:
        raise ValueError(f"mdp has horizon {mdp.horizon}; the full likelihood needs a "
                         "discounted MDP")
    r = rationality * broadcast_reward(mdp, reward)
    batch = r.shape[:-2]
    S, A = r.shape[-2:]
    K = mdp.successors.shape[-1]
    if tuple(probs.shape[-3:]) != (S, A, K):
        raise ValueError(f"probs must have shape (..., {S}, {A}, {K}), got {tuple(probs.shape)}")
    rows = r.reshape(-1, S, A)
    p = probs.reshape(-1, S, A, K) if probs.dim() > 3 else probs
    if p.dim() == 4 and p.shape[0] != rows.shape[0]:
        raise ValueError(f"probs has batch shape {tuple(probs.shape[:-3])}, expected the "
                         f"reward's {tuple(batch)}")
    if p.dim() == 3:
        world = mdp.with_probabilities(p)
        return soft_value_iteration(world, rows, check=False).log_policy.reshape(*batch, S, A)
    world = mdp.with_probabilities(p[0].detach())
    gamma = mdp.discount
    succ = mdp.successors
    with torch.no_grad():
        v0 = soft_value_iteration(world, rows.detach(), check=False).v
    shift = gamma * (_expected(succ, p, v0) - _expected(succ, p.detach(), v0))
    v = soft_value_iteration(world, rows + shift, check=False).v
    q = rows + gamma * _expected(succ, p, v)
    return torch.log_softmax(q, -1).reshape(*batch, S, A)


def _demo_terms(log_policy: torch.Tensor, demos: Demonstrations) -> torch.Tensor:
    """``(..., N)`` per-demonstration sums of ``log pi(a_t | s_t)``; ``log_policy (..., S, A)``."""
    lp = log_policy[..., demos.states, demos.actions]  # (..., N, T)
    return lp.masked_fill(~demos.mask, 0.0).sum(-1)


# ---------------------------------------------------------------------------- model and target
class FullLikelihood:
    """A reward model and the transition probabilities in one posterior (Rust's third stage).

    Args:
        reward_model: the reward's model and prior (e.g.
            ``LinearReward(mdp.features, prior=bayesirl.model.priors.flat())`` for maximum
            likelihood).
        transitions: the first stage, a :class:`~bayesirl.core.dynamics.DirichletTransitions`
            (e.g. ``bayesirl.datasets.rust_bus_transitions()``): its support gives the
            successors and the tying, its counts the transitions' likelihood and its prior
            concentration the Dirichlet prior on ``p`` (1: uniform on the simplex, so the MAP of
            ``p`` is its maximum-likelihood estimate). Every group's slots must all be valid.

    Site ``"p"``: ``(G, K)``, each row on the simplex. ``build_target(mdp, demos, ...)`` gives
    the :class:`FullLikelihoodTarget`; :func:`laplace` fits it, and ``infer(mdp, demos, model,
    method=...)`` samples it or finds its MAP (``likelihood="soft"`` and a fixed rationality
    only).
    """

    def __init__(self, reward_model: RewardModel, transitions: DirichletTransitions):
        if not isinstance(reward_model, RewardModel):
            raise TypeError(f"reward_model must be a bayesirl RewardModel (e.g. LinearReward), "
                            f"got {type(reward_model).__name__}")
        if not isinstance(transitions, DirichletTransitions):
            raise TypeError(f"transitions must be a DirichletTransitions (the first stage, e.g. "
                            f"bayesirl.core.dynamics.fit_transitions), got "
                            f"{type(transitions).__name__}")
        if SITE in reward_model.priors():
            raise ValueError(f"reward_model has a site named {SITE!r}, which the transition "
                             "probabilities use")
        valid = transitions.support.group_valid()
        if not valid.all():
            g = int((~valid.all(-1)).nonzero()[0])
            raise ValueError(f"group {g} has invalid slots {valid[g].tolist()}; the full "
                             "likelihood needs every slot of every group valid")
        self.reward_model = reward_model
        self.transitions = transitions

    def build_target(self, mdp: TabularMDP, data: Demonstrations, *, likelihood: str = "soft",
                     rationality=1.0) -> FullLikelihoodTarget:
        """The unnormalised joint posterior of ``(reward params, p)`` given the demonstrations
        ``data`` and the first stage's transition counts."""
        if not isinstance(mdp, TabularMDP):
            raise TypeError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")
        if not isinstance(data, Demonstrations):
            raise TypeError(f"data must be Demonstrations, got {type(data).__name__}")
        if likelihood != "soft":
            raise ValueError(f"likelihood is {likelihood!r}; the full likelihood is implemented "
                             "for 'soft' (Rust's logit model)")
        rationality = check_rationality(rationality)
        if isinstance(rationality, torch.distributions.Distribution):
            raise ValueError("rationality must be a number here: with the reward's scale free "
                             "and the shocks' scale 1 a prior on it is not identified")
        if mdp.finite_horizon:
            raise ValueError(f"mdp has horizon {mdp.horizon}; the full likelihood needs a "
                             "discounted MDP")
        support = self.transitions.support
        if tuple(mdp.successors.shape) != tuple(support.successors.shape) or not torch.equal(
                mdp.successors.cpu(), support.successors):
            raise ValueError(f"mdp's successors {tuple(mdp.successors.shape)} are not the "
                             f"transitions' support {tuple(support.successors.shape)}; build the "
                             "MDP from the same first stage (transitions.to_mdp)")
        data.validate(mdp)
        self.reward_model.check(mdp)
        return FullLikelihoodTarget(self, mdp, data, float(rationality))


class FullLikelihoodTarget(BaseTarget):
    """The unnormalised joint posterior of the reward parameters and ``p``.

    What ``infer`` and :func:`laplace` work on (the plumbing of
    :class:`~bayesirl.model.base_target.BaseTarget`): ``priors``, ``transforms``,
    ``constrain``/``unconstrain``, ``potential(u, jacobian=True)``, ``init_unconstrained()``,
    ``log_likelihood(params)`` (``(..., N + 1)``: one term per demonstration, then the
    transitions), ``log_prior(params)``, ``make_posterior`` (a
    :class:`~bayesirl.posterior.full_likelihood.FullLikelihoodPosterior`, registered by the
    posterior layer). Parameters may carry leading batch dims; draws with different ``p`` are
    different MDPs, planned one after another.
    """

    def __init__(self, model: FullLikelihood, mdp: TabularMDP, demos: Demonstrations,
                 rationality: float):
        self.model, self.mdp, self.demos = model, mdp, demos
        self.reward_model = model.reward_model
        self.transitions = model.transitions
        self.likelihood, self.rationality = "soft", rationality
        tr = self.transitions
        self.counts = tr.counts.to(mdp.dtype)
        priors = dict(self.reward_model.priors())
        priors[SITE] = dist.Dirichlet(tr.prior.to(mdp.dtype)).to_event(1)
        super().__init__(priors, mdp.dtype, mdp.device)

    # ------------------------------------------------------------------ pieces
    def _reward_params(self, params):
        return {k: v for k, v in params.items() if k != SITE}

    def transition_probs(self, params) -> torch.Tensor:
        """``(..., S, A, K)`` the transition probabilities of ``params[SITE]``."""
        return self.transitions.probabilities(params[SITE])

    def log_policy(self, params) -> torch.Tensor:
        """``(..., S, A)`` the expert's log-policy under the reward and ``p`` of ``params``."""
        reward = self.reward_model.reward(self._reward_params(params))
        p = params[SITE]
        if p.dim() == 2:
            return soft_log_policy(self.mdp, reward, self.transitions.probabilities(p),
                                   self.rationality)
        batch = p.shape[:-2]
        reward = broadcast_reward(self.mdp, reward).expand(*batch, self.mdp.n_states,
                                                           self.mdp.n_actions)
        flat_r = reward.reshape(-1, *reward.shape[-2:])
        flat_p = p.reshape(-1, *p.shape[-2:])
        rows = [soft_log_policy(self.mdp, flat_r[i], self.transitions.probabilities(flat_p[i]),
                                self.rationality) for i in range(flat_p.shape[0])]
        return torch.stack(rows).reshape(*batch, *rows[0].shape)

    def log_likelihood(self, params) -> torch.Tensor:
        """``(..., N + 1)``: each demonstration's choices, then the transitions' term."""
        choices = _demo_terms(self.log_policy(params), self.demos)
        trans = self.transitions.log_likelihood(params[SITE])
        return torch.cat([choices, trans.unsqueeze(-1).expand(*choices.shape[:-1], 1)], -1)

    def init_unconstrained(self):
        """Reward sites at zero (unconstrained), ``p`` at the first stage's posterior mean."""
        out = super().init_unconstrained()
        out[SITE] = self.transforms[SITE].inv(self.transitions.group_mean(self.mdp.dtype))
        return out

    # ------------------------------------------------------------------ scores
    def observation_scores(self, u) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-observation scores at unconstrained ``u``: ``(scores (C, n), weights (C,))``.

        One row per distinct observed choice ``(s, a)`` (the gradient of ``log pi(a | s)``)
        and per observed transition slot (the gradient of ``log p_{g k}``), weighted by their
        counts; ``n`` is the number of unconstrained coordinates. The choice rows come from
        one batched planner call with the parameters replicated per row.
        """
        flatten, unflatten = flattening(u)
        flat = flatten(u).detach()
        mask = self.demos.mask
        S, A = self.mdp.n_states, self.mdp.n_actions
        cells = (self.demos.states * A + self.demos.actions)[mask]
        cell, count = torch.unique(cells, return_counts=True)
        G, K = self.counts.shape
        seen = (self.counts > 0).reshape(-1).nonzero().reshape(-1)
        rows = cell.shape[0] + seen.shape[0]
        x = flat.expand(rows, -1).clone().requires_grad_(True)
        params = self.constrain(unflatten(x))
        n_cells = cell.shape[0]
        reward = self.reward_model.reward(self._reward_params(
            {k: v[:n_cells] for k, v in params.items()}))
        lp = soft_log_policy(self.mdp, reward,
                             self.transitions.probabilities(params[SITE][:n_cells]),
                             self.rationality)
        choice = lp.reshape(n_cells, S * A).gather(1, cell[:, None]).squeeze(1)
        logp = params[SITE][n_cells:].reshape(seen.shape[0], G * K).log()
        trans = logp.gather(1, seen[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(torch.cat([choice, trans]).sum(), x)
        weights = torch.cat([count.to(grad), self.counts.reshape(-1)[seen]])
        return grad.detach(), weights


