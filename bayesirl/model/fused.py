"""MCMC's potential for a linear reward with a Normal prior, as one autograd node.

NUTS evaluates ``U(theta) = -log N(theta; mu, sigma) - sum_n log p(demo_n | r = phi theta)``
and its gradient at every leapfrog step. On the generic path (:meth:`Target.potential`: the
reward model, :class:`~bayesirl.model.likelihood_kernels.DemoLogLikelihood`, the prior's
``log_prob``, the transforms and their Jacobian) that is a graph of some twenty tensor
operations, whose construction and backward cost more than the planning itself on an 8x8
gridworld. When the reward is linear in one site (:meth:`RewardModel.linear_map`:
LinearReward, TabularReward, GPReward with fixed hyperparameters) with a Normal prior (real
support: no transform), the rationality is a fixed number and the MDP is finite-horizon on the
CPU, :class:`LinearNormalPotential` computes the value and, when a gradient is wanted,
``dU/dtheta = (theta - mu) / sigma^2 - phi^T dL/dr`` in NumPy around the compiled DP, in one
node. Values and gradients equal the generic path's (tests/test_target.py).
"""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions as dist
import torch

from bayesirl.model.likelihood_kernels import log_likelihood, log_likelihood_grad
from bayesirl.planning.bellman import _no_double_backward, _numpy, _use_cpu_kernel


def _normal(prior):
    """``(loc, scale)`` NumPy arrays of the prior's shape when it is a (batched, expanded or
    independent) Normal, else None."""
    base = prior.base_dist if isinstance(prior, dist.Independent) else prior
    if type(base) not in (dist.Normal, torch.distributions.Normal):
        return None
    shape = prior.batch_shape + prior.event_shape
    return (_numpy(base.loc.expand(shape)).copy(), _numpy(base.scale.expand(shape)).copy())


def _log_normaliser(scale: np.ndarray) -> float:
    """``sum log sigma + (n / 2) log 2 pi``: minus the log density of independent Normals
    with these scales at their means."""
    return float(np.log(scale).sum() + 0.5 * scale.size * math.log(2 * math.pi))


class LinearNormalPotential:
    """``U(theta)`` of a :class:`~bayesirl.inference.target.Target` whose reward is linear in
    its one site ``theta`` (shape of the prior) with a Normal prior; see the module doc.
    :meth:`of` builds it, or returns None when the target does not qualify."""

    def __init__(self, target, site, phi, loc, scale):
        self.target, self.site = target, site
        # own copies: a NumPy view of a tensor's memory came out of a spawned chain process's
        # unpickling as garbage (torch's multiprocessing reductions)
        self.phi = None if phi is None else _numpy(phi.to(target.mdp.dtype)).copy()
        self.loc, self.scale = loc, scale
        self.log_norm = _log_normaliser(scale)
        S, A = target.mdp.n_states, target.mdp.n_actions
        self.state_only = (self.phi is None and loc.shape == (S,)) or (
            self.phi is not None and self.phi.ndim == 2)
        self.shape = (S, A)

    @classmethod
    def of(cls, target):
        mdp, linear = target.mdp, target.reward_model.linear_map()
        if (linear is None or not mdp.finite_horizon or set(target.priors) != {linear[0]}
                or isinstance(target.rationality, torch.distributions.Distribution)):
            return None
        normal = _normal(target.priors[linear[0]])  # real support: no transform, no Jacobian
        if normal is None or not _use_cpu_kernel(mdp.initial):
            return None
        return cls(target, linear[0], linear[1], *normal)

    def __call__(self, u: dict) -> torch.Tensor:
        """The potential (a 0-d tensor), differentiable in ``u[site]`` when it requires a
        gradient; None for a batched ``u`` (the caller takes the generic path)."""
        theta = u[self.site]
        if tuple(theta.shape) != self.loc.shape or theta.dtype != self.target.mdp.dtype:
            return None
        return _Potential.apply(theta, self, torch.is_grad_enabled() and theta.requires_grad)

    def value_and_grad(self, theta: np.ndarray, grad: bool):
        """``(U, dU/dtheta)`` for ``theta`` of the prior's shape (``(d,)``, ``(S,)`` or
        ``(S, A)``): a float and an array of ``theta``'s shape, or None without ``grad``."""
        t = self.target
        beta = float(t.rationality)
        flat = theta.reshape(-1) if self.phi is None else self.phi @ theta
        r = np.empty((1,) + self.shape, theta.dtype)
        r[0] = flat.reshape(-1, 1) if self.state_only else flat.reshape(self.shape)
        boltzmann = t.likelihood == "boltzmann"
        if not boltzmann:  # the soft DP plans on beta r (DemoLogLikelihood's convention)
            r *= beta
        ll, saved = log_likelihood(r, np.full(1, beta if boltzmann else 1.0, r.dtype), t.mdp,
                                   t.demos, boltzmann)
        z = (theta - self.loc) / self.scale
        value = 0.5 * float((z * z).sum()) + self.log_norm - float(ll.sum())
        if not grad:
            return value, None
        g_r = log_likelihood_grad(saved, np.ones_like(ll))[0][0]
        if not boltzmann:
            g_r *= beta
        g_flat = g_r.sum(-1) if self.state_only else g_r.reshape(-1)
        g_lik = g_flat if self.phi is None else g_flat.reshape(-1) @ self.phi.reshape(
            -1, self.phi.shape[-1])
        return value, z / self.scale - g_lik.reshape(theta.shape)


class _Potential(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta, potential, wants_grad):
        value, grad = potential.value_and_grad(_numpy(theta), wants_grad)
        ctx.grad = None if grad is None else torch.from_numpy(np.ascontiguousarray(grad))
        return torch.tensor(value, dtype=theta.dtype)

    @staticmethod
    def backward(ctx, g):
        _no_double_backward()
        return g * ctx.grad, None, None
