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


def _counts(mdp: TabularMDP, demos: Demonstrations) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index (N, T), counts (S, A))``: each step's flat state-action index (padding -> 0)
    and the number of visits of each pair over every demonstration."""
    S, A = mdp.n_states, mdp.n_actions
    idx = (demos.states * A + demos.actions).masked_fill(~demos.mask, 0)
    counts = torch.bincount(idx[demos.mask].reshape(-1), minlength=S * A)
    return idx, counts.reshape(S, A).to(torch.float64)


def soft_log_likelihood_derivatives(mdp: TabularMDP, demos: Demonstrations,
                                    reward: torch.Tensor, reward_jacobian: torch.Tensor,
                                    v0: torch.Tensor | None = None, *,
                                    counts=None) -> LikelihoodDerivatives:
    """The soft log-likelihood of ``demos`` under ``reward: (S, A)`` (discounted ``mdp``), each
    demonstration's score along ``reward_jacobian: (S, A, d)`` and the Hessian (the reward
    linear in the parameters). ``v0: (S,)`` warm-starts the fixed point; ``counts``: the
    ``(index, counts)`` of :func:`_counts`, when the caller keeps them."""
    S, A = mdp.n_states, mdp.n_actions
    idx, C = _counts(mdp, demos) if counts is None else counts
    sens = soft_sensitivity(mdp, reward, reward_jacobian, v0)
    mask = demos.mask.to(torch.float64)
    flat_lp = sens.log_policy.reshape(S * A)
    flat_g = sens.dlog_policy.reshape(S * A, -1)
    log_lik = (flat_lp[idx] * mask).sum(-1)                                     # (N,)
    scores = (flat_g[idx] * mask.unsqueeze(-1)).sum(-2)                         # (N, d)
    opg = gram(C.unsqueeze(0), sens.dlog_policy.unsqueeze(0))[0]
    return LikelihoodDerivatives(log_lik, scores, weighted_hessian(mdp, sens, C), opg, sens.v,
                                 sens.dv)


def _real_support(prior) -> bool:
    support = prior.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


class SoftSecondOrder:
    """``(potential, gradient (d,), Hessian (d, d), warm)`` of a reward-space target's
    potential without Jacobian (the MAP's objective: ``-log prior - log-likelihood``) at its
    one site's value ``theta (d,)``; see the module doc. Build with :meth:`of`."""

    def __getstate__(self):
        return {**self.__dict__, "_last": None}  # a chain process recomputes what it needs

    def __init__(self, target, site: str, phi: torch.Tensor):
        self.target, self.site, self.phi = target, site, phi
        self.prior = target.priors[site]
        self._parts = None  # (jacobian (S, A, d), counts), built on the first call
        self._last = None   # (theta, value) of the last call: the MAP's Laplace asks again

    def _jacobian_and_counts(self):
        if self._parts is None:
            mdp = self.target.mdp
            S, A = mdp.n_states, mdp.n_actions
            phi = self.phi.to(torch.float64)
            if phi.dim() == 2:                                               # state features
                phi = phi.unsqueeze(1).expand(S, A, phi.shape[-1])
            jacobian = float(self.target.rationality) * phi                  # (S, A, d)
            self._parts = (jacobian, _counts(mdp, self.target.demos))
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
        return cls(target, linear[0], linear[1])

    def __call__(self, theta: torch.Tensor, warm: tuple | None = None) -> SecondOrderValue:
        """The potential's :class:`SecondOrderValue` at ``theta (d,)``; ``warm``: an earlier
        evaluation's ``warm``, from which the fixed point starts at its first-order prediction
        ``v + dv @ (theta - theta_then)`` (a Newton-Kantorovich step or two near the mode)."""
        target = self.target
        jacobian, counts = self._jacobian_and_counts()
        theta = theta.detach().to(torch.float64)
        if self._last is not None and torch.equal(self._last[0], theta):
            return self._last[1]
        v0 = None if warm is None else warm[1] + warm[2] @ (theta - warm[0])
        der = soft_log_likelihood_derivatives(target.mdp, target.demos, jacobian @ theta,
                                              jacobian, v0, counts=counts)
        value, grad, hess, opg = -der.log_lik.sum(), -der.scores.sum(0), -der.hessian, der.opg
        if not is_improper(self.prior):
            def log_prior(t):
                return self.prior.log_prob(t.to(target.mdp.dtype)).sum().to(torch.float64)
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
