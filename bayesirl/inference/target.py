"""The unnormalised posterior density that MCMC and MAP work on (:class:`Target`)."""

from __future__ import annotations

import torch
from pyro.distributions.transforms import biject_to

from bayesirl.model.fused import LinearNormalPotential
from bayesirl.model.likelihood import demo_log_likelihood


class Target:
    """The unnormalised posterior over named reward parameters (and the rationality).

    ``log_prior(params)`` and ``log_likelihood(params)`` accept parameters with any leading
    batch shape; ``potential(u)`` takes unconstrained values (a dict, as Pyro's kernels want)
    and includes the log-Jacobian of the transforms to each prior's support.
    """

    def __init__(self, mdp, demos, reward_model, likelihood, rationality):
        self.mdp, self.demos, self.reward_model = mdp, demos, reward_model
        self.likelihood, self.rationality = likelihood, rationality
        self.priors = dict(reward_model.priors())
        if isinstance(rationality, torch.distributions.Distribution):
            self.priors["rationality"] = rationality
        self.transforms = {k: biject_to(p.support) for k, p in self.priors.items()}
        self.fused = LinearNormalPotential.of(self)

    def beta(self, params):
        return params.get("rationality", self.rationality)

    def log_likelihood(self, params) -> torch.Tensor:
        """``(..., N)`` per-demonstration log-likelihood."""
        reward = self.reward_model.reward(params)
        return demo_log_likelihood(self.mdp, self.demos, reward, self.likelihood,
                                   self.beta(params))

    def log_prior(self, params) -> torch.Tensor:
        return sum(p.log_prob(params[k]) for k, p in self.priors.items())

    def constrain(self, u):
        return {k: self.transforms[k](v) for k, v in u.items()}

    def unconstrain(self, params):
        return {k: self.transforms[k].inv(v) for k, v in params.items()}

    def log_abs_det_jacobian(self, u, params) -> torch.Tensor:
        """``log |d params / d u|`` summed over the sites (a transform's own log-Jacobian is
        already summed over its ``domain.event_dim`` rightmost dims)."""
        return sum(_sum_event(t.log_abs_det_jacobian(u[k], params[k]),
                              self.priors[k].event_dim - t.domain.event_dim)
                   for k, t in self.transforms.items())

    def potential(self, u, jacobian: bool = True) -> torch.Tensor:
        if self.fused is not None:  # a linear reward with a Normal prior: one fused node
            value = self.fused(u)
            if value is not None:
                return value
        params = self.constrain(u)
        logp = self.log_prior(params) + self.log_likelihood(params).sum(-1)
        if jacobian:
            logp = logp + self.log_abs_det_jacobian(u, params)
        return -logp

    def init_unconstrained(self):
        """A point in unconstrained space: each prior's transformed median-like centre."""
        like = torch.zeros((), dtype=self.mdp.dtype, device=self.mdp.device)
        out = {}
        for k, p in self.priors.items():
            shape = p.batch_shape + p.event_shape
            out[k] = torch.zeros(shape, dtype=like.dtype, device=like.device)
        return out


def _sum_event(x, event_dim):
    return x.sum(tuple(range(-event_dim, 0))) if event_dim else x
