"""BaseTarget, the plumbing every target shares: the potential is minus the log prior, the
log-likelihood and (with jacobian) the log-Jacobian, whichever order the terms are added in;
a target without a registered posterior class says what to import."""

import pyro.distributions as dist
import pytest
import torch

from bayesirl.model.base_target import BaseTarget


class _Gaussian(BaseTarget):
    """y_n ~ N(mu, sigma): a real site and a positive one, N = 3 observations."""

    def __init__(self, by_site=False):
        super().__init__({"mu": dist.Normal(0.0, 2.0), "sigma": dist.LogNormal(0.0, 1.0)},
                         torch.float64, "cpu")
        self.jacobian_by_site = by_site
        self.y = torch.tensor([0.3, -1.2, 2.0])

    def log_likelihood(self, params):
        return dist.Normal(params["mu"][..., None], params["sigma"][..., None]).log_prob(self.y)


@pytest.mark.parametrize("by_site", [False, True])
def test_the_potential_is_minus_prior_likelihood_and_log_jacobian_at_batched_points(by_site):
    target = _Gaussian(by_site)
    u = {"mu": torch.tensor([0.5, -1.0]), "sigma": torch.tensor([0.2, -0.7])}
    sigma = u["sigma"].exp()
    logp = (dist.Normal(0.0, 2.0).log_prob(u["mu"]) + dist.LogNormal(0.0, 1.0).log_prob(sigma)
            + dist.Normal(u["mu"][:, None], sigma[:, None]).log_prob(target.y).sum(-1))
    torch.testing.assert_close(target.potential(u, jacobian=False), -logp)
    torch.testing.assert_close(target.potential(u), -(logp + u["sigma"]))  # d sigma/du = sigma
    assert target.init_unconstrained()["sigma"].shape == () and not target.improper
    back = target.unconstrain(target.constrain(u))
    torch.testing.assert_close(back["sigma"], u["sigma"])


def test_a_target_without_a_registered_posterior_says_what_to_import():
    with pytest.raises(RuntimeError, match="no posterior class is registered for _Gaussian: "
                                           "import bayesirl.posterior"):
        _Gaussian().make_posterior({"mu": torch.zeros(4), "sigma": torch.ones(4)},
                                   method="nuts")
