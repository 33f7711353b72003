"""Tests of bayesirl.model.likelihood: the Pyro model, the pointwise likelihood and the fast
potential.

References: the per-step likelihood is summed by a Python loop over demonstrations and steps
(:func:`bayesirl.testing.loop_log_likelihood`) over policies from ``soft_value_iteration`` and
from a naive dense dynamic program with explicit loops (:func:`bayesirl.testing.naive_log_policy`);
the Pyro model's density (its trace) is the reference for the potential that MCMC uses.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesirl.core.demos import Demonstrations
from bayesirl.inference.target import Target
from bayesirl.model.likelihood import action_log_probs, demo_log_likelihood, irl_model
from bayesirl.model.rewards import GPReward, LinearReward
from bayesirl.planning.bellman import soft_value_iteration, value_iteration
from bayesirl.testing import (
    loop_log_likelihood,
    naive_log_policy,
    simulate_demos,
    tiny_chain_mdp,
)

KINDS = {"finite": {"horizon": 4}, "discounted": {"discount": 0.7}}
LIKELIHOODS = ["soft", "boltzmann"]


def problem(kind, n=7, seed=0):
    """A tiny chain MDP and ``n`` demonstrations of unequal lengths (1 to 4 steps)."""
    mdp = tiny_chain_mdp(**KINDS[kind])
    full = simulate_demos(mdp, mdp.reward, n, seed=seed, length=4)
    lengths = torch.tensor([1 + i % 4 for i in range(n)])
    return mdp, Demonstrations.from_arrays(full.states, full.actions, lengths).validate(mdp)


def random_rewards(shape, seed=1):
    return torch.randn(*shape, 3, 2, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


# ---------------------------------------------------------------------------- likelihood
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_demo_log_likelihood_equals_loop_reference(kind, likelihood, beta):
    mdp, demos = problem(kind)
    r = random_rewards(())
    got = demo_log_likelihood(mdp, demos, r, likelihood, beta)
    assert got.shape == (demos.n,)
    naive = loop_log_likelihood(mdp, demos, naive_log_policy(mdp, r, likelihood, beta))
    torch.testing.assert_close(got, naive, rtol=1e-9, atol=1e-9)
    if likelihood == "soft":
        lp = soft_value_iteration(mdp, beta * r).log_policy
    else:
        lp = torch.log_softmax(beta * value_iteration(mdp, r).q, -1)
    torch.testing.assert_close(got, loop_log_likelihood(mdp, demos, lp))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("batch", [(5,), (2, 4)], ids=str)
def test_demo_log_likelihood_batched(kind, likelihood, batch):
    """Batched rewards and a batch of rationalities give the per-draw results."""
    mdp, demos = problem(kind)
    r = random_rewards(batch)
    beta = torch.rand(batch, generator=torch.Generator().manual_seed(2),
                      dtype=torch.float64) + 0.5
    got = demo_log_likelihood(mdp, demos, r, likelihood, beta)
    assert got.shape == batch + (demos.n,)
    flat_r, flat_b, flat_got = r.reshape(-1, 3, 2), beta.reshape(-1), got.reshape(-1, demos.n)
    for i in range(flat_r.shape[0]):
        one = demo_log_likelihood(mdp, demos, flat_r[i], likelihood, float(flat_b[i]))
        torch.testing.assert_close(flat_got[i], one)


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_reward_broadcasts_over_actions(kind):
    mdp, demos = problem(kind)
    r = random_rewards(())[:, 0]
    torch.testing.assert_close(demo_log_likelihood(mdp, demos, r),
                               demo_log_likelihood(mdp, demos, r[:, None].expand(3, 2)))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_action_log_probs_normalised(kind, likelihood):
    mdp, _ = problem(kind)
    lp = action_log_probs(mdp, random_rewards((2, 4)), likelihood, 3.0)
    assert lp.shape == ((2, 4, 4, 3, 2) if kind == "finite" else (2, 4, 3, 2))
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(lp.shape[:-1]))


@pytest.mark.parametrize("kind", list(KINDS))
def test_soft_likelihood_gradient(kind):
    """The custom backward passes of the planner give the numerical gradient."""
    mdp, demos = problem(kind)
    r = random_rewards((2,)).requires_grad_(True)
    beta = torch.tensor([0.7, 1.6], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda r, b: demo_log_likelihood(mdp, demos, r, "soft", b).sum(-1), (r, beta))


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_boltzmann_and_soft_likelihood_gradcheck_finite_horizon(likelihood):
    """The fused CPU node (one autograd node: plan, read the demonstrated rows, adjoint) has
    the numerical gradient in the reward and the rationality."""
    mdp, demos = problem("finite")
    r = random_rewards((2,)).requires_grad_(True)
    beta = torch.tensor([0.7, 1.6], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda r, b: demo_log_likelihood(mdp, demos, r, likelihood, b), (r, beta))


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("batch", [(), (3,), (2, 9)], ids=str)
def test_fused_likelihood_equals_generic_path(monkeypatch, likelihood, dtype, batch):
    """Values and gradients of the fused CPU node equal the generic path (log-policy tensor,
    gather, mask, sum under plain autograd), on a 4x4 gridworld with ragged demonstrations.
    Batch (2, 9) is wide enough for the batch-innermost soft kernel."""
    from bayesirl import envs
    from bayesirl.model import likelihood as model
    mdp = envs.gridworld(size=4, slip=0.2, horizon=6, block=2, seed=0, dtype=dtype)
    full = simulate_demos(mdp, mdp.reward, 5, seed=1, length=6)
    demos = Demonstrations.from_arrays(full.states, full.actions,
                                       torch.tensor([6, 1, 3, 5, 2]))
    g = torch.Generator().manual_seed(4)
    r = torch.randn(*batch, mdp.n_states, mdp.n_actions, generator=g, dtype=dtype)
    beta = 0.5 + torch.rand(batch, generator=g, dtype=dtype)

    def value_and_grads():
        rr, bb = r.clone().requires_grad_(True), beta.clone().requires_grad_(True)
        ll = demo_log_likelihood(mdp, demos, rr, likelihood, bb)
        (ll * torch.linspace(0.5, 1.5, demos.n, dtype=dtype)).sum().backward()
        return ll.detach(), rr.grad, bb.grad

    fused = value_and_grads()
    monkeypatch.setattr(model, "_use_cpu_kernel", lambda x: False)
    generic = value_and_grads()
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {}
    for got, want in zip(fused, generic, strict=True):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("kind", list(KINDS))
def test_likelihood_ignores_padding(kind):
    """Changing padded entries changes nothing."""
    mdp, demos = problem(kind)
    r = random_rewards(())
    states = torch.where(demos.mask, demos.states, 2)
    actions = torch.where(demos.mask, demos.actions, 1)
    other = Demonstrations(states, actions, demos.mask)
    torch.testing.assert_close(demo_log_likelihood(mdp, demos, r),
                               demo_log_likelihood(mdp, other, r))


# ---------------------------------------------------------------------------- Pyro model
def reward_models(mdp):
    return {"linear": LinearReward(mdp.features, prior=dist.Normal(0.2, 1.5)),
            "gp": GPReward(torch.tensor([[0.0], [1.0], [2.0]]),
                           lengthscale=dist.LogNormal(0.0, 0.5), variance=dist.Gamma(2.0, 1.0))}


RATIONALITIES = {"fixed": 2.0, "prior": dist.LogNormal(0.5, 0.5)}


def conditioned_trace(mdp, demos, model, likelihood, rationality, params, subsample_size=None):
    conditioned = pyro.poutine.condition(irl_model, data=params)
    return pyro.poutine.trace(conditioned).get_trace(mdp, demos, model, likelihood, rationality,
                                                     subsample_size)


def some_params(target, seed=3):
    g = torch.Generator().manual_seed(seed)
    u = {k: 0.5 * torch.randn(p.batch_shape + p.event_shape, generator=g, dtype=torch.float64)
         for k, p in target.priors.items()}
    return u, target.constrain(u)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("rat", list(RATIONALITIES))
@pytest.mark.parametrize("model_name", ["linear", "gp"])
def test_pyro_model_density_equals_target(kind, likelihood, rat, model_name):
    """The fast potential of MCMC is the Pyro model's density (plus the log-Jacobian)."""
    mdp, demos = problem(kind)
    model = reward_models(mdp)[model_name]
    rationality = RATIONALITIES[rat]
    target = Target(mdp, demos, model, likelihood, rationality)
    u, params = some_params(target)
    tr = conditioned_trace(mdp, demos, model, likelihood, rationality, params)
    log_joint = target.log_prior(params) + target.log_likelihood(params).sum()
    torch.testing.assert_close(tr.log_prob_sum(), log_joint)
    # pointwise: the "actions" site's per-demonstration terms are Target.log_likelihood
    tr.compute_log_prob()
    torch.testing.assert_close(tr.nodes["actions"]["log_prob"], target.log_likelihood(params))
    # the potential adds the log-Jacobian of the unconstraining transforms
    log_det = sum(t.log_abs_det_jacobian(u[k], params[k]).sum()
                  for k, t in target.transforms.items())
    torch.testing.assert_close(target.potential(u), -(tr.log_prob_sum() + log_det))
    expected_sites = set(model.priors()) | ({"rationality"} if rat == "prior" else set())
    latent = {k for k, v in tr.nodes.items() if v["type"] == "sample"} - {"actions", "demo"}
    assert latent == expected_sites


@pytest.mark.parametrize("kind", list(KINDS))
def test_actions_site_batch_shape(kind):
    mdp, demos = problem(kind)
    tr = pyro.poutine.trace(irl_model).get_trace(mdp, demos, LinearReward(mdp.features))
    site = tr.nodes["actions"]
    assert site["is_observed"]
    assert site["fn"].batch_shape == (demos.n,)
    assert site["fn"].event_shape == (demos.max_length,)
    assert torch.equal(site["value"], demos.actions)
    assert [f.name for f in site["cond_indep_stack"]] == ["demo"]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("m", [1, 3, 6])
def test_subsampling_scales_log_likelihood(kind, m):
    """pyro.plate subsampling: the observed site's log-probability is scaled by N / m."""
    mdp, demos = problem(kind, n=9)
    model = LinearReward(mdp.features)
    target = Target(mdp, demos, model, "soft", 1.0)
    _, params = some_params(target)
    tr = conditioned_trace(mdp, demos, model, "soft", 1.0, params, subsample_size=m)
    idx = tr.nodes["demo"]["value"]
    assert idx.shape == (m,)
    assert len(set(idx.tolist())) == m
    site = tr.nodes["actions"]
    assert site["scale"] == pytest.approx(demos.n / m)
    assert site["fn"].batch_shape == (m,)
    full = target.log_likelihood(params)
    expect = target.log_prior(params) + demos.n / m * full[idx].sum()
    torch.testing.assert_close(tr.log_prob_sum(), expect)


def test_subsampling_is_unbiased_over_plate_draws():
    """Averaged over subsample draws, the scaled log-likelihood is the full one (exactly,
    enumerating every subsample of size 1)."""
    mdp, demos = problem("finite", n=5)
    model = LinearReward(mdp.features)
    target = Target(mdp, demos, model, "soft", 1.0)
    _, params = some_params(target)
    seen = {}
    for seed in range(60):
        pyro.set_rng_seed(seed)
        tr = conditioned_trace(mdp, demos, model, "soft", 1.0, params, subsample_size=1)
        tr.compute_log_prob()
        i = int(tr.nodes["demo"]["value"])
        seen[i] = float(tr.nodes["actions"]["log_prob_sum"])
    assert set(seen) == set(range(5))
    full = target.log_likelihood(params)
    total = sum(seen.values()) / len(seen)
    assert total == pytest.approx(float(full.sum()), rel=1e-12)


def test_model_returns_reward_and_samples_prior():
    mdp, demos = problem("finite")
    model = LinearReward(mdp.features)
    tr = pyro.poutine.trace(irl_model).get_trace(mdp, demos, model)
    theta = tr.nodes["theta"]["value"]
    torch.testing.assert_close(tr.nodes["_RETURN"]["value"], mdp.features @ theta)


def test_rationality_scales_soft_reward():
    """Soft likelihood at beta equals the soft likelihood of beta * r."""
    mdp, demos = problem("discounted")
    r = random_rewards(())
    torch.testing.assert_close(demo_log_likelihood(mdp, demos, r, "soft", 3.0),
                               demo_log_likelihood(mdp, demos, 3.0 * r, "soft", 1.0))
    # and the Boltzmann likelihood is not that (Q* is not scaled by the softmax temperature)
    b = demo_log_likelihood(mdp, demos, r, "boltzmann", 3.0)
    assert torch.isfinite(b).all()
    assert not math.isclose(float(b.sum()), float(demo_log_likelihood(
        mdp, demos, r, "soft", 3.0).sum()))
