r"""MCMC in value space: tabular rewards on discounted MDPs, soft likelihood (ValueWalk's idea).

Sampling a tabular reward ``r`` on a discounted MDP means solving a soft Bellman fixed point
(and its adjoint) at every gradient. Bajgar et al. (2024, "Walking the Values in Bayesian
Inverse Reinforcement Learning") sample the values instead: the Bellman equation maps values
to rewards in one step, with no planning. With ``gamma`` the discount,
``E V (s, a) = sum_s' P(s'|s, a) V(s')`` and ``beta`` the rationality (the soft DP plans on
``beta r``):

- state reward, parameters ``V: (S,)``: ``r = (V - logsumexp_a gamma E V) / beta`` and the
  expert's ``log pi = log_softmax(gamma E V)``;
- state-action reward, parameters ``Q: (S, A)``: ``r = (Q - gamma E logsumexp_a Q) / beta``
  and ``log pi = log_softmax(Q)``.

Each map is a smooth bijection (one soft Bellman fixed point per reward) whose Jacobian
determinant is ``det(I - gamma P_pi) / beta^n``: ``P_pi (S, S)`` moves states along the
expert's soft policy, ``n`` counts the parameters, and the ``(SA, SA)`` determinant of the
state-action map equals the ``(S, S)`` one by Sylvester's identity. The density sampled is
``p(r(V)) |det dr/dV| p(demos | V)``, the reward posterior carried to value space.

The sampler works on whitened coordinates ``w``, ``V = V0 + L w``: ``V0`` holds the values of
the starting reward (the MAP) and ``L L^T`` inverts the Gauss-Newton precision at ``V0``,
``J^T diag(1 / Var prior) J + Jz^T W Jz`` (``J = dr/dV``; ``z`` the softmax's logits, linear
in ``V``; ``W`` the demonstrated states' softmax covariances, times their visit counts). The
prior correlates neighbouring values strongly, which a diagonal mass matrix could not undo.

Not the Boltzmann likelihood (``pi ∝ exp(beta Q*)``, hard ``Q*``): there ``P_pi`` follows the
greedy policy, and the log-determinant jumps, by up to 1.9 along one random line through a
144-state gridworld's posterior, wherever the greedy action changes. NUTS's step size
collapsed to 1e-5 on it; dropping the term would sample a different posterior.
"""

from __future__ import annotations

import math

import torch

from bayesirl.planning import soft_value_iteration
from bayesirl.rewards import TabularReward

__all__ = ["ValueSpaceTarget"]

_MAX_STATES = 2048  # a dense (S, S) log-determinant per gradient


def ineligible(target) -> str | None:
    """Why ``target`` cannot be sampled in value space, or None when it can."""
    mdp = target.mdp
    if not isinstance(target.reward_model, TabularReward):
        return (f"the reward model is {type(target.reward_model).__name__}; value space needs "
                "a TabularReward (one parameter per state or state-action pair)")
    if mdp.finite_horizon:
        return ("the MDP is finite-horizon; value space needs a discounted MDP (one value per "
                "state, not per time step)")
    if target.likelihood == "boltzmann":
        return ("the likelihood is Boltzmann: the Jacobian determinant det(I - gamma P_pi) "
                "follows the greedy policy and jumps wherever the greedy action changes, which "
                "NUTS cannot integrate across")
    if isinstance(target.rationality, torch.distributions.Distribution):
        return "the rationality has a prior; value space needs a fixed rationality"
    prior = target.priors["theta"]
    if prior.support is not torch.distributions.constraints.real and not (
            isinstance(prior.support, torch.distributions.constraints.independent)
            and prior.support.base_constraint is torch.distributions.constraints.real):
        return (f"the prior's support is {prior.support}; the Bellman map from values reaches "
                "every real reward, so value space needs a prior on the real line")
    try:
        variance = prior.variance
    except NotImplementedError:
        variance = None
    if variance is None or not torch.isfinite(variance).all():
        return "the prior has no finite variance, which the whitening of value space needs"
    if mdp.n_states > _MAX_STATES:
        return (f"the MDP has {mdp.n_states} states; value space takes a dense log-determinant "
                f"of (S, S) at every gradient, kept to S <= {_MAX_STATES}")
    return None


def _policy_matrix(mdp, pi: torch.Tensor) -> torch.Tensor:
    """``P_pi[s, s'] = sum_a pi(a | s) P(s' | s, a)``: ``pi (S, A) -> (S, S)``, dense."""
    S = mdp.n_states
    rows = torch.arange(S, device=pi.device)[:, None, None] * S
    weights = pi[..., None] * mdp.transition_probs
    out = torch.zeros(S * S, dtype=pi.dtype, device=pi.device)
    out = out.scatter_add(0, (rows + mdp.successors).reshape(-1), weights.reshape(-1))
    return out.reshape(S, S)


class ValueSpaceTarget:
    """The posterior of a :class:`~bayesirl._target.Target` with a tabular reward, a soft
    likelihood and a discounted MDP, in whitened value coordinates ``w: (n,)`` (see the module doc).

    ``potential(u)``, ``constrain(u)`` and ``init_unconstrained()`` are what MCMC uses of a
    target; ``constrain`` maps ``u["w"]: (..., n)`` to ``{"theta": (..., S) or (..., S, A)}``.
    ``theta0`` is the reward the sampler starts at (the MAP); check :func:`ineligible` first.
    """

    def __init__(self, target, theta0: torch.Tensor):
        self.mdp = target.mdp
        self.prior = target.priors["theta"]
        self.shape = tuple(target.reward_model.shape)
        self.state_only = len(self.shape) == 1
        self.beta = float(target.rationality)
        self.gamma = float(self.mdp.discount)
        self.counts = target.demos.counts(self.mdp.n_states, self.mdp.n_actions,
                                          dtype=self.mdp.dtype)        # demonstrated (s, a)
        self.v0 = self._values_of(theta0.detach())
        self.chol = self._whitening()

    # ------------------------------------------------------------ values <-> rewards
    def _values_of(self, theta):
        """The parameters ``V (S,)`` or ``Q (S, A)`` whose Bellman map gives ``theta``."""
        plan = soft_value_iteration(self.mdp, self.beta * theta)  # the DP plans on beta r
        return (plan.v if self.state_only else plan.q).detach()

    def _bellman(self, p):
        """``(reward, logits)`` of parameters ``p: (..., S)`` or ``(..., S, A)``: the reward
        of :attr:`shape` and the logits ``(..., S, A)`` whose softmax is the expert's
        policy."""
        if self.state_only:
            logits = self.gamma * self.mdp.expected_next(p)                 # (..., S, A)
            return (p - torch.logsumexp(logits, -1)) / self.beta, logits
        future = self.gamma * self.mdp.expected_next(torch.logsumexp(p, -1))
        return (p - future) / self.beta, p

    def _log_det(self, pi):
        """``log |det d reward / d p|`` where the expert's policy is ``pi: (S, A)``."""
        eye = torch.eye(self.mdp.n_states, dtype=pi.dtype, device=pi.device)
        logdet = torch.linalg.slogdet(eye - self.gamma * _policy_matrix(self.mdp, pi))[1]
        return logdet - math.prod(self.shape) * math.log(self.beta)

    def _whitening(self):
        """Cholesky factor ``L (n, n)`` of the inverse Gauss-Newton precision at ``v0``."""
        p0 = self.v0.reshape(-1)
        n = p0.numel()

        def reward(p):
            return self._bellman(p.reshape(self.v0.shape))[0].reshape(-1)

        def logits(p):
            return self._bellman(p.reshape(self.v0.shape))[1].reshape(-1)

        jr = torch.autograd.functional.jacobian(reward, p0)                  # (n, n)
        jz = torch.autograd.functional.jacobian(logits, p0)                 # (S A, n)
        var = self.prior.variance.expand(self.shape).reshape(-1)
        pi = torch.softmax(logits(p0).reshape(self.counts.shape), -1)
        c = self.counts.sum(-1, keepdim=True)
        A = pi.shape[-1]
        w = c[..., None] * (torch.diag_embed(pi) - pi[..., :, None] * pi[..., None, :])
        jz = jz.reshape(-1, A, n)                                           # (S, A, n)
        precision = jr.T @ (jr / var[:, None]) + torch.einsum("san,sab,sbm->nm", jz, w, jz)
        precision = 0.5 * (precision + precision.T)
        cov = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        return torch.linalg.cholesky(0.5 * (cov + cov.T))

    # ------------------------------------------------------------ what MCMC uses
    def params_of(self, w):
        """Values ``(..., S)`` or ``(..., S, A)`` of whitened coordinates ``w: (..., n)``."""
        p = self.v0.reshape(-1) + w @ self.chol.T
        return p.reshape(*w.shape[:-1], *self.v0.shape)

    def constrain(self, u):
        return {"theta": self._bellman(self.params_of(u["w"]))[0]}

    def init_unconstrained(self):
        return {"w": torch.zeros(self.chol.shape[0], dtype=self.v0.dtype,
                                 device=self.v0.device)}

    def potential(self, u) -> torch.Tensor:
        """``-log`` of the value-space density at ``u["w"]: (n,)``, up to the constant
        ``log det L``."""
        reward, logits = self._bellman(self.params_of(u["w"]))
        log_pi = torch.log_softmax(logits, -1)
        loglik = (self.counts * log_pi).sum()
        return -(self.prior.log_prob(reward).sum() + self._log_det(log_pi.exp()) + loglik)
