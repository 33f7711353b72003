r"""What every target shares: named sites with priors, their transforms to unconstrained
coordinates, and the potential built from a log-likelihood.

A target (the protocol :class:`~bayesirl.inference.target.InferenceTarget`) is an unnormalised
posterior over named parameters, its *sites*, each with an independent prior
``priors[site]``. Samplers and optimisers move in unconstrained coordinates ``u`` (a dict of
tensors, as Pyro's kernels want); ``transforms[site] = biject_to(priors[site].support)`` maps
``u[site]`` to the site's constrained value. :class:`BaseTarget` holds the priors and transforms
and builds the potential from the one thing a subclass gives, ``log_likelihood(params)``
``(..., N)`` (one term per observation unit)::

    potential(u) = -(log p(params) + sum_n log p(y_n | params) + log |d params / d u|),
    params = constrain(u),

the last term only with ``jacobian=True``: without it the minimum is the mode of the density
of the constrained parameters (the MAP of Pyro's ``AutoDelta``). Every method accepts leading
batch dims ``(...)`` on the sites (chains, draws) and returns them. A subclass with a closed
form of the potential (a fused autograd node) returns it from :meth:`BaseTarget.fused_potential`.

The posterior object of a target's draws lives in the posterior layer, which this layer may not
import: a subclass's ``posterior_class`` is set by the posterior module that defines that
class when it is imported (``import bayesirl.posterior`` imports them all, and
``bayesirl.infer`` imports it), and :meth:`BaseTarget.make_posterior` calls its
``from_target``.
"""

from __future__ import annotations

import torch
from pyro.distributions.transforms import biject_to

from bayesirl.model.rewards import is_improper

__all__ = ["BaseTarget"]


class BaseTarget:
    """Priors, transforms, the potential and the posterior hook of a target (module doc).

    Args:
        priors: ``{site: distribution}``; a site's value has shape
            ``batch_shape + event_shape`` of its prior.
        dtype, device: of the sites' starting point (:meth:`init_unconstrained`).

    A subclass defines ``log_likelihood(params) -> (..., N)`` and, for
    :meth:`make_posterior`, has its ``posterior_class`` set by the posterior layer.
    """

    #: the posterior class of this target's draws (with a ``from_target`` classmethod); set
    #: by the posterior module that defines it, when that module is imported
    posterior_class = None

    #: Whether the potential adds the sites' log-Jacobians to the log density one site at a
    #: time (True) or as one sum (False, :meth:`log_abs_det_jacobian`). The density is the
    #: same; the rounding of the two sums is not, and a last-bit difference in the potential
    #: changes seeded draws (step-size adaptation is continuous in it), so each target keeps
    #: the order its seeded draws are made with.
    jacobian_by_site = False

    def __init__(self, priors: dict, dtype: torch.dtype, device):
        self.priors = dict(priors)
        self.transforms = {k: biject_to(p.support) for k, p in self.priors.items()}
        self.dtype, self.device = dtype, device

    def log_likelihood(self, params) -> torch.Tensor:
        """``(..., N)`` pointwise log-likelihood at constrained ``params`` (the subclass's)."""
        raise NotImplementedError

    def log_prior(self, params) -> torch.Tensor:
        """``(...)``: the sum of the sites' prior log-densities at constrained ``params``."""
        return sum(p.log_prob(params[k]) for k, p in self.priors.items())

    def constrain(self, u):
        """Constrained values of unconstrained ``u`` (any leading batch dims)."""
        return {k: self.transforms[k](v) for k, v in u.items()}

    def unconstrain(self, params):
        """Unconstrained coordinates of constrained ``params``."""
        return {k: self.transforms[k].inv(v) for k, v in params.items()}

    def log_abs_det_jacobian(self, u, params) -> torch.Tensor:
        """``log |d params / d u|`` summed over the sites, ``(...)`` (a transform's own
        log-Jacobian is already summed over its ``domain.event_dim`` rightmost dims; the rest
        of the prior's event dims are summed here)."""
        return sum(_sum_event(t.log_abs_det_jacobian(u[k], params[k]),
                              self.priors[k].event_dim - t.domain.event_dim)
                   for k, t in self.transforms.items())

    def fused_potential(self, u) -> torch.Tensor | None:
        """The potential at ``u`` from a closed form where the subclass has one (it then
        needs no log-Jacobian: such forms exist only on sites of real support), else None."""
        return None

    def potential(self, u, jacobian: bool = True) -> torch.Tensor:
        """Minus the log density at unconstrained ``u``, ``(...)`` for sites with leading
        batch dims ``(...)``, with the log-Jacobian of the transforms when ``jacobian``
        (module doc); differentiable in ``u``."""
        value = self.fused_potential(u)
        if value is not None:
            return value
        params = self.constrain(u)
        logp = self.log_prior(params) + self.log_likelihood(params).sum(-1)
        if jacobian and self.jacobian_by_site:
            for k, t in self.transforms.items():
                logp = logp + _sum_event(t.log_abs_det_jacobian(u[k], params[k]),
                                         self.priors[k].event_dim - t.domain.event_dim)
        elif jacobian:
            logp = logp + self.log_abs_det_jacobian(u, params)
        return -logp

    def init_unconstrained(self):
        """A starting point: every site at 0 in unconstrained coordinates (the transformed
        centre of its support), ``{site: batch_shape + event_shape}``."""
        return {k: torch.zeros(p.batch_shape + p.event_shape, dtype=self.dtype,
                               device=self.device) for k, p in self.priors.items()}

    @property
    def improper(self) -> bool:
        """Whether some prior is improper (flat): then the MAP is the maximum-likelihood
        estimate on those sites."""
        return any(is_improper(p) for p in self.priors.values())

    def make_posterior(self, params, *, method: str, log_lik=None, sample_stats=None,
                       settings=None, num_chains: int = 1):
        """The posterior of constrained draws ``params: {site: (draws, *shape)}`` (chains
        flattened into ``num_chains`` equal blocks): ``posterior_class.from_target(...)``.
        A RuntimeError when no posterior class is registered (``import bayesirl.posterior``
        registers them)."""
        if self.posterior_class is None:
            raise RuntimeError(f"no posterior class is registered for {type(self).__name__}: "
                               "import bayesirl.posterior (bayesirl.infer does)")
        return self.posterior_class.from_target(self, params, method=method, log_lik=log_lik,
                                                sample_stats=sample_stats, settings=settings,
                                                num_chains=num_chains)


def _sum_event(x, event_dim):
    return x.sum(tuple(range(-event_dim, 0))) if event_dim else x
