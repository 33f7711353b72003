r"""The potential of a discounted soft-likelihood target with its exact gradient and Hessian,
for Newton's method at the MAP and the Laplace approximation.

For a reward linear in one site, ``r = beta phi theta`` (:meth:`RewardModel.linear_map`), the
log-likelihood of demonstrations with state-action counts ``C`` is ``sum C log pi``; its gradient
``sum C d log pi`` and Hessian ``sum C d2 log pi`` come from the implicit function theorem on the
Bellman fixed point (:mod:`bayesirl.planning.sensitivity`), at the cost of about one Bellman
solve. The per-demonstration scores ``sum_t d log pi(a_t | s_t)`` are returned too: their outer
products are the BHHH estimate of the information an econometrician reports beside the
Hessian's.

:class:`SoftSecondOrder` serves a reward-space target when the likelihood is soft, the MDP is
discounted, the rationality a fixed number and the one site's prior has real support (no
transform: the unconstrained coordinates are ``theta`` itself); :meth:`SoftSecondOrder.of`
returns None otherwise, and MAP falls back to a quasi-Newton method on autograd gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.distributions import constraints

from bayesirl.core.demos import Demonstrations
from bayesirl.core.mdp import TabularMDP
from bayesirl.model.likelihood import step_log_probs
from bayesirl.model.rewards import is_improper
from bayesirl.planning.sensitivity import gram, soft_sensitivity, weighted_hessian

__all__ = ["MAX_PARAMETERS", "LikelihoodDerivatives", "SecondOrderValue", "SoftSecondOrder",
           "soft_log_likelihood_derivatives"]

#: The most parameters for which the second-order path is used (its Jacobian is ``(S, A, d)``
#: and its Hessian ``(d, d)``); beyond, a quasi-Newton method needs neither.
MAX_PARAMETERS = 256


class LikelihoodDerivatives(NamedTuple):
    """``log_lik (N,)`` per demonstration, ``scores (N, d)`` (each demonstration's gradient),
    ``hessian (d, d)`` of the summed log-likelihood and ``opg (d, d)``, the sum over observed
    steps of the outer products of their scores ``d log pi(a_t | s_t)`` (BHHH's estimate of the
    information, positive semi-definite), all float64; ``v (S,)`` the soft fixed point and
    ``dv (S, d)`` its derivatives (a warm start for the next evaluation)."""

    log_lik: torch.Tensor
    scores: torch.Tensor
    hessian: torch.Tensor
    opg: torch.Tensor
    v: torch.Tensor
    dv: torch.Tensor


def _state_action_counts(mdp: TabularMDP, demos: Demonstrations) -> torch.Tensor:
    """``(S, A)`` float64: the number of visits of each state-action pair over every
    demonstration."""
    S, A = mdp.n_states, mdp.n_actions
    idx = demos.states[demos.mask] * A + demos.actions[demos.mask]
    return torch.bincount(idx, minlength=S * A).reshape(S, A).to(torch.float64)


def soft_log_likelihood_derivatives(mdp: TabularMDP, demos: Demonstrations,
                                    reward: torch.Tensor, reward_jacobian: torch.Tensor,
                                    v0: torch.Tensor | None = None, *,
                                    counts: torch.Tensor | None = None) -> LikelihoodDerivatives:
    """The soft log-likelihood of ``demos`` under ``reward: (S, A)`` (discounted ``mdp``), each
    demonstration's score along ``reward_jacobian: (S, A, d)`` and the Hessian (the reward
    linear in the parameters). ``v0: (S,)`` warm-starts the fixed point; ``counts``: the
    demonstrations' ``(S, A)`` state-action counts, when the caller keeps them."""
    C = _state_action_counts(mdp, demos) if counts is None else counts
    sens = soft_sensitivity(mdp, reward, reward_jacobian, v0)
    # log pi and its d derivatives at the observed steps, in one gather: (1 + d, N)
    per_demo = step_log_probs(mdp, demos, torch.cat([sens.log_policy.unsqueeze(0),
                                                     sens.dlog_policy.movedim(-1, 0)])).sum(-1)
    log_lik, scores = per_demo[0], per_demo[1:].T                                # (N,), (N, d)
    opg = gram(C.unsqueeze(0), sens.dlog_policy.unsqueeze(0))[0]
    return LikelihoodDerivatives(log_lik, scores, weighted_hessian(mdp, sens, C), opg, sens.v,
                                 sens.dv)


def _real_support(prior) -> bool:
    support = prior.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


class SoftSecondOrder:
    """The :class:`SecondOrderValue` of a reward-space target's potential without Jacobian
    (the MAP's objective: ``-log prior - log-likelihood``) at its one site's value
    ``theta (d,)``; see the module doc. Build with :meth:`of`."""

    def __init__(self, target, phi: torch.Tensor, prior):
        self.target, self.phi, self.prior = target, phi, prior
        self._parts = None  # (float64 MDP, jacobian (S, A, d), counts), built on first call
        self._last = None   # (theta, value) of the last call: the MAP's Laplace asks again

    def __getstate__(self):
        return {**self.__dict__, "_last": None}  # a chain process recomputes what it needs

    def _problem(self):
        """The float64 MDP, the reward's Jacobian ``(S, A, d)`` and the demonstrations'
        counts, made once: every evaluation plans in float64 on the same MDP."""
        if self._parts is None:
            mdp = self.target.mdp
            mdp = mdp if mdp.dtype == torch.float64 else mdp.to(dtype=torch.float64)
            S, A = mdp.n_states, mdp.n_actions
            phi = self.phi.to(torch.float64)
            if phi.dim() == 2:                                               # state features
                phi = phi.unsqueeze(1).expand(S, A, phi.shape[-1])
            jacobian = float(self.target.rationality) * phi                  # (S, A, d)
            self._parts = (mdp, jacobian, _state_action_counts(mdp, self.target.demos))
        return self._parts

    @classmethod
    def of(cls, target) -> SoftSecondOrder | None:
        """The second-order potential of ``target``, or None where it does not apply."""
        mdp, linear = target.mdp, target.reward_model.linear_map()
        if (target.likelihood != "soft" or mdp.finite_horizon or linear is None
                or linear[1] is None or set(target.priors) != {linear[0]}
                or isinstance(target.rationality, torch.distributions.Distribution)
                or not _real_support(target.priors[linear[0]])
                or linear[1].shape[-1] > MAX_PARAMETERS):
            return None
        return cls(target, linear[1], target.priors[linear[0]])

    def __call__(self, theta: torch.Tensor, warm: tuple | None = None) -> SecondOrderValue:
        """The potential's :class:`SecondOrderValue` at ``theta (d,)``; ``warm``: an earlier
        evaluation's ``warm``, from which the fixed point starts at its first-order prediction
        ``v + dv @ (theta - theta_then)`` (a Newton-Kantorovich step or two near the mode)."""
        mdp, jacobian, counts = self._problem()
        theta = theta.detach().to(torch.float64)
        if self._last is not None and torch.equal(self._last[0], theta):
            return self._last[1]
        v0 = None if warm is None else warm[1] + warm[2] @ (theta - warm[0])
        der = soft_log_likelihood_derivatives(mdp, self.target.demos, jacobian @ theta,
                                              jacobian, v0, counts=counts)
        value, grad, hess, opg = -der.log_lik.sum(), -der.scores.sum(0), -der.hessian, der.opg
        if not is_improper(self.prior):
            def log_prior(t):
                return self.prior.log_prob(t.to(self.target.mdp.dtype)).sum().double()
            with torch.enable_grad():
                prior_hess = torch.autograd.functional.hessian(log_prior, theta)
                value = value - log_prior(theta).detach()
                grad = grad - torch.autograd.functional.jacobian(log_prior, theta)
            hess, opg = hess - prior_hess, opg - prior_hess
        out = SecondOrderValue(value, grad, 0.5 * (hess + hess.T), opg, (theta, der.v, der.dv),
                               der)
        self._last = (theta.clone(), out)
        return out


class SecondOrderValue(NamedTuple):
    """A potential ``value`` (0-d) with its ``gradient (d,)`` and ``hessian (d, d)``;
    ``curvature (d, d)``: a positive semi-definite stand-in for the Hessian where that is not
    positive definite (BHHH's outer product of scores, plus the prior's curvature); ``warm``:
    ``(theta, v, dv)``, a start for the next evaluation's fixed point; ``derivatives``: the
    log-likelihood's."""

    value: torch.Tensor
    gradient: torch.Tensor
    hessian: torch.Tensor
    curvature: torch.Tensor
    warm: tuple
    derivatives: LikelihoodDerivatives
