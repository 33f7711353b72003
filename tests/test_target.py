"""The posterior density MCMC samples: the fused potential of linear rewards with a Normal prior
equals the generic one, and the generic one's Jacobian is right for every site shape."""

import concurrent.futures
import multiprocessing

import numpy as np
import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
from bayesirl.inference.target import Target
from bayesirl.model import fused as _fused


def _problem(dtype=torch.float64, **horizon):
    mdp = birl.envs.gridworld(size=6, slip=0.2, block=(3, 2), seed=3, dtype=dtype,
                              **(horizon or dict(horizon=7)))
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=6, seed=1, length=7)
    return mdp, demos


def _linear_models(mdp):
    g = torch.Generator().manual_seed(0)
    phi_sa = torch.randn(mdp.n_states, mdp.n_actions, 3, generator=g, dtype=mdp.dtype)
    return {
        "linear-state": birl.LinearReward(mdp.features),
        "linear-state-action": birl.LinearReward(phi_sa, prior=dist.Normal(0.5, 2.0)),
        "tabular-state": birl.TabularReward(mdp.n_states, prior=dist.Normal(0.0, 10.0)),
        "tabular-state-action": birl.TabularReward(mdp.n_states, mdp.n_actions,
                                                   prior=dist.Normal(-1.0, 3.0)),
        "gp-fixed": birl.GPReward(mdp.features, lengthscale=2.0, variance=3.0),
    }


def _value_and_grad(target, u):
    u = {k: v.clone().requires_grad_() for k, v in u.items()}
    value = target.potential(u)
    return value.detach(), torch.autograd.grad(value, list(u.values()))[0]


@pytest.mark.parametrize("name", ["linear-state", "linear-state-action", "tabular-state",
                                  "tabular-state-action", "gp-fixed"])
@pytest.mark.parametrize("likelihood", ["soft", "boltzmann"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_fused_potential_equals_the_generic_one(name, likelihood, dtype):
    mdp, demos = _problem(dtype)
    target = Target(mdp, demos, _linear_models(mdp)[name], likelihood, 0.7)
    assert target.fused is not None
    g = torch.Generator().manual_seed(2)
    u = {k: 0.5 * torch.randn(v.shape, generator=g, dtype=dtype)
         for k, v in target.init_unconstrained().items()}
    fused = _value_and_grad(target, u)
    target.fused = None
    generic = _value_and_grad(target, u)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for a, b in zip(fused, generic, strict=True):
        assert a.dtype == dtype  # (the generic value may come out in the prior's dtype)
        torch.testing.assert_close(a, b.to(dtype), **tol)


def test_fused_potential_skips_the_gradient_when_none_is_wanted(monkeypatch):
    """PolicyWalk-style callers evaluate the density only: no adjoint pass is run."""
    mdp, demos = _problem()
    target = Target(mdp, demos, birl.LinearReward(mdp.features), "soft", 1.0)
    u = {"theta": torch.full((mdp.n_features,), 0.3, dtype=torch.float64)}
    expected = _value_and_grad(target, u)[0]

    def no_adjoint(*args):
        raise AssertionError("the adjoint ran although no gradient was wanted")

    monkeypatch.setattr(_fused, "log_likelihood_grad", no_adjoint)
    with torch.no_grad():
        assert torch.equal(target.potential(u), expected)
    assert torch.equal(target.potential(u), expected)  # u does not require a gradient


def test_fused_potential_only_where_it_applies():
    mdp, demos = _problem()
    linear = birl.LinearReward(mdp.features)
    assert Target(mdp, demos, linear, "soft", 1.0).fused is not None
    not_fused = [
        Target(mdp, demos, birl.LinearReward(mdp.features, prior=dist.Laplace(0.0, 1.0)),
               "soft", 1.0),                                       # not a Normal prior
        Target(mdp, demos, linear, "soft", dist.LogNormal(0.0, 1.0)),  # inferred rationality
        Target(mdp, demos, birl.GPReward(mdp.features, lengthscale=dist.LogNormal(0.0, 1.0)),
               "soft", 1.0),                                       # not linear in one site
        Target(*_problem(discount=0.9), linear, "soft", 1.0),          # discounted
    ]
    assert all(t.fused is None for t in not_fused)


def test_batched_parameters_take_the_generic_path():
    mdp, demos = _problem()
    target = Target(mdp, demos, birl.LinearReward(mdp.features), "boltzmann", 2.0)
    theta = torch.randn(4, mdp.n_features, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    batched = target.potential({"theta": theta})
    assert batched.shape == (4,)
    single = torch.stack([target.potential({"theta": t}) for t in theta])  # fused
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(), (4,), (4, 5)], ids=str)
def test_jacobian_is_summed_once_per_draw(shape):
    """``log |d params / d u|`` of a constrained site is one number per draw, whatever the
    site's shape (a transform already sums its own event dims)."""
    mdp, demos = _problem()
    model = birl.TabularReward(mdp.n_states)  # any model: the Jacobian is the priors' alone
    target = Target(mdp, demos, model, "soft", 1.0)
    prior = dist.HalfNormal(1.0)
    prior = prior.expand(shape).to_event(len(shape)) if shape else prior
    target.priors = {"s": prior}
    target.transforms = {"s": dist.transforms.biject_to(prior.support)}  # exp
    u = {"s": torch.randn((3,) + shape, generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)}
    got = target.log_abs_det_jacobian(u, target.constrain(u))
    np.testing.assert_allclose(got.numpy(), u["s"].reshape(3, -1).sum(-1).numpy(), rtol=1e-12)


def _value_in_process(target, u):
    return _value_and_grad(target, u)


@pytest.mark.parametrize("name", ["linear-state", "gp-fixed"])
def test_fused_potential_is_the_same_in_a_spawned_chain_process(name):
    """Parallel chains unpickle the target in a fresh process; the fused potential there
    equals the parent's (its arrays once came out as garbage)."""
    mdp, demos = _problem()
    target = Target(mdp, demos, _linear_models(mdp)[name], "soft", 1.0)
    u = {k: torch.full(v.shape, 0.3, dtype=torch.float64)
         for k, v in target.init_unconstrained().items()}
    here = _value_and_grad(target, u)
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        there = pool.submit(_value_in_process, target, u).result()
    for a, b in zip(here, there, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
