"""Priors in a model's own units: flat (MLE-equivalent), weakly informative, the prior's pull."""

import math

import pytest
import scipy.optimize
import torch

import bayesirl as birl
from bayesirl.model.likelihood import demo_log_likelihood
from bayesirl.model.priors import flat, prior_influence, weakly_informative
from bayesirl.model.rewards import is_improper
from bayesirl.testing import simulate_demos, tiny_chain_mdp


@pytest.fixture(scope="module")
def problem():
    mdp = tiny_chain_mdp(discount=0.8)
    demos = simulate_demos(mdp, mdp.reward * 2, n=30, seed=1, length=8)
    return mdp, demos


def _mle(mdp, demos):
    """The maximum-likelihood weights by SciPy on the log-likelihood itself (no prior code)."""
    phi = mdp.features

    def nll(x):
        theta = torch.tensor(x, requires_grad=True)
        value = -demo_log_likelihood(mdp, demos, phi @ theta).sum()
        (grad,) = torch.autograd.grad(value, theta)
        return float(value.detach()), grad.numpy()

    res = scipy.optimize.minimize(nll, [0.0, 0.0], jac=True, method="BFGS",
                                  options={"gtol": 1e-10})
    return torch.tensor(res.x)


def test_flat_prior_is_improper_with_zero_log_density():
    prior = flat()
    assert is_improper(prior)
    x = torch.tensor([-1e6, 0.0, 3.0])
    assert torch.equal(prior.expand((3,)).log_prob(x), torch.zeros(3))


def test_map_under_the_flat_prior_is_the_maximum_likelihood_estimate(problem):
    mdp, demos = problem
    post = birl.infer(mdp, demos, birl.LinearReward(mdp.features, prior=flat()), method="map",
                      progress=False)
    mle = _mle(mdp, demos)
    assert torch.allclose(post.samples["theta"][0], mle, atol=1e-5)


def test_a_weakly_informative_prior_moves_the_map_by_what_prior_influence_predicts(problem):
    mdp, demos = problem
    mle = _mle(mdp, demos)
    # the inverse observed information at the MLE: central differences of autograd gradients
    # (the planner is differentiable once)
    def grad(t):
        t = t.clone().requires_grad_(True)
        return torch.autograd.grad(-demo_log_likelihood(mdp, demos, mdp.features @ t).sum(),
                                   t)[0]

    h = 1e-5
    hess = torch.stack([(grad(mle + h * e) - grad(mle - h * e)) / (2 * h)
                        for e in torch.eye(2)])
    cov = torch.linalg.inv((hess + hess.T) / 2)
    scale = 3.0
    post = birl.infer(mdp, demos, birl.LinearReward(mdp.features,
                                                    prior=weakly_informative(scale)),
                      method="map", progress=False)
    found = (post.samples["theta"][0] - mle) / cov.diagonal().sqrt()
    predicted = prior_influence(mle, cov, scale)
    assert (predicted.abs() > 0.01).all()  # the check has something to see
    assert torch.allclose(found, predicted, atol=0.2 * predicted.abs().max())


def test_prior_influence_of_one_parameter_is_the_normal_normal_shift():
    est, se, s, m = 9.0, 1.2, 1.0, 0.0
    shift = prior_influence([est], [[se ** 2]], s, m)
    assert shift.item() == pytest.approx((m - est) * se / (se ** 2 + s ** 2), rel=1e-12)
    assert prior_influence([est], [[se ** 2]], 1e6).abs().item() < 1e-10


def test_prior_influence_takes_one_scale_per_parameter_and_correlations():
    cov = torch.tensor([[0.6, 0.72], [0.72, 1.0]])
    shift = prior_influence([3.8, 9.0], cov, [100.0, 1.0])
    assert shift.shape == (2,)
    # the tight prior on the second parameter drags the first one too, through the correlation
    alone = prior_influence([3.8, 9.0], torch.diag(cov.diagonal()), [100.0, 1.0])
    assert abs(shift[0]) > 10 * abs(alone[0])


def test_weakly_informative_is_a_normal_in_the_given_units():
    prior = weakly_informative([2.0, 50.0], loc=[0.0, 10.0])
    assert prior.batch_shape == (2,)
    assert torch.equal(prior.scale, torch.tensor([2.0, 50.0]))
    model = birl.LinearReward(torch.ones(3, 2, 2).cumsum(0), prior=prior)
    assert model.priors()["theta"].batch_shape == ()  # one event of 2 weights
    assert weakly_informative(5.0).scale.item() == 5.0


@pytest.mark.parametrize("scale, error, match", [
    (0.0, ValueError, r"scale is 0.0, expected a finite number > 0"),
    (-1.0, ValueError, r"scale is -1.0"),
    (math.nan, ValueError, r"scale is nan"),
    ([1.0, math.inf], ValueError, r"scale\[1\] is inf"),
    ([[1.0]], ValueError, r"scale must be a number or a 1-d sequence"),
    ("wide", TypeError, r"scale must be a number or a sequence of numbers, got 'wide'"),
    (True, TypeError, r"scale must be a number"),
])
def test_bad_scales_raise_naming_the_scale(scale, error, match):
    with pytest.raises(error, match=match):
        weakly_informative(scale)


def test_bad_prior_influence_inputs_raise():
    with pytest.raises(ValueError, match=r"covariance must have shape \(2, 2\)"):
        prior_influence([1.0, 2.0], [[1.0]], 1.0)
    with pytest.raises(ValueError, match="not positive definite"):
        prior_influence([1.0, 2.0], [[1.0, 2.0], [2.0, 1.0]], 1.0)
    with pytest.raises(ValueError, match="symmetric"):
        prior_influence([1.0, 2.0], [[1.0, 0.5], [0.0, 1.0]], 1.0)
    with pytest.raises(ValueError, match="loc has 3 entries but scale has 2"):
        weakly_informative([1.0, 2.0], loc=[0.0, 0.0, 0.0])
