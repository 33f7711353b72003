"""Exact derivatives of the discounted soft policy (bayesirl.planning.sensitivity) and of the
soft log-likelihood (bayesirl.model.likelihood_derivatives): against autograd through the
planner, finite differences of the gradient, and the target's own potential; bad input."""

import pyro.distributions as dist
import pytest
import torch
from test_newton import random_mdp  # the random sparse discounted MDP of the solver's tests

import bayesirl as birl
from bayesirl.inference import map as map_
from bayesirl.inference.target import SecondOrder, Target
from bayesirl.model.likelihood import demo_log_likelihood
from bayesirl.model.likelihood_derivatives import (
    SoftSecondOrder,
    soft_log_likelihood_derivatives,
)
from bayesirl.model.priors import flat
from bayesirl.planning.sensitivity import soft_sensitivity, weighted_hessian


def features(S, A, d, seed=1):
    return torch.randn(S, A, d, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


@pytest.mark.parametrize("discount", [0.5, 0.95, 0.999])
def test_first_derivatives_equal_autograd_through_the_planner(discount):
    mdp = random_mdp(S=6, discount=discount)
    phi = features(6, 3, 4)
    theta = torch.tensor([0.3, -0.7, 1.1, 0.2], dtype=torch.float64)
    sens = soft_sensitivity(mdp, phi @ theta, phi)
    jac = torch.autograd.functional.jacobian(
        lambda t: birl.soft_value_iteration(mdp, phi @ t, tol=1e-13).log_policy, theta)
    assert torch.allclose(sens.log_policy, birl.soft_value_iteration(mdp, phi @ theta).log_policy,
                          atol=1e-9)
    assert torch.allclose(sens.dlog_policy, jac, atol=1e-8, rtol=1e-7)


def test_batched_rows_equal_one_at_a_time_and_state_features_broadcast():
    mdp = random_mdp(S=6, discount=0.95)
    phi = features(6, 3, 2)
    thetas = torch.tensor([[0.5, -0.2], [-1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    rewards = torch.einsum("sad,bd->bsa", phi, thetas)
    batch = soft_sensitivity(mdp, rewards.reshape(3, 1, 6, 3), phi)
    assert batch.dlog_policy.shape == (3, 1, 6, 3, 2)
    for b in range(3):
        one = soft_sensitivity(mdp, rewards[b], phi)
        assert torch.allclose(batch.dlog_policy[b, 0], one.dlog_policy, atol=1e-10)
        C = torch.rand(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(b))
        H_batch = weighted_hessian(mdp, batch, C)[b, 0]
        assert torch.allclose(H_batch, weighted_hessian(mdp, one, C), atol=1e-10)


def _fd_hessian(grad, theta, h=1e-2):
    """Richardson-extrapolated central differences of ``grad`` (error O(h^4)). A large step:
    at gamma = 0.9999 the fixed point's rounding floor (8 eps / (1 - gamma) of |v|) puts
    ~1e-7 of noise in each gradient, which a step of 1e-5 would amplify to 1e-2."""
    def central(i, step):
        e = torch.zeros_like(theta)
        e[i] = step
        return (grad(theta + e) - grad(theta - e)) / (2 * step)

    return torch.stack([(4 * central(i, h / 2) - central(i, h)) / 3
                        for i in range(theta.numel())], -1)


@pytest.mark.parametrize("discount, rtol", [(0.9, 1e-6), (0.9999, 1e-4)])
def test_weighted_hessian_equals_differences_of_the_exact_gradient(discount, rtol):
    """At 0.9999 the differences themselves carry ~1e-5 of rounding from the fixed point."""
    mdp = random_mdp(S=6, discount=discount, seed=3)
    phi = features(6, 3, 3, seed=4)
    C = torch.randint(0, 5, (6, 3), generator=torch.Generator().manual_seed(5)).double()

    def grad(t):
        sens = soft_sensitivity(mdp, phi @ t, phi)
        return (C.unsqueeze(-1) * sens.dlog_policy).sum((0, 1))

    theta = torch.tensor([0.4, -0.3, 0.8], dtype=torch.float64)
    H = weighted_hessian(mdp, soft_sensitivity(mdp, phi @ theta, phi), C)
    assert torch.equal(H, H.T)
    assert torch.allclose(H, _fd_hessian(grad, theta), rtol=rtol, atol=1e-6)


def test_weighted_hessian_with_a_reward_nonlinear_in_theta():
    """r = phi theta + theta_0^2 psi: R1 = phi + 2 theta_0 psi e_0, R2 = 2 psi e_0 e_0^T."""
    mdp = random_mdp(S=6, seed=6, discount=0.95)
    phi, psi = features(6, 3, 2, seed=7), features(6, 3, 1, seed=8)[..., 0]
    C = torch.randint(0, 4, (6, 3), generator=torch.Generator().manual_seed(9)).double()

    def parts(t):
        r = phi @ t + t[0] ** 2 * psi
        R1 = phi.clone()
        R1[..., 0] += 2 * t[0] * psi
        R2 = torch.zeros(6, 3, 2, 2, dtype=torch.float64)
        R2[..., 0, 0] = 2 * psi
        return r, R1, R2

    def grad(t):
        r, R1, _ = parts(t)
        return (C.unsqueeze(-1) * soft_sensitivity(mdp, r, R1).dlog_policy).sum((0, 1))

    theta = torch.tensor([0.7, -0.4], dtype=torch.float64)
    r, R1, R2 = parts(theta)
    H = weighted_hessian(mdp, soft_sensitivity(mdp, r, R1), C, reward_hessian=R2)
    assert torch.allclose(H, _fd_hessian(grad, theta), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(H, weighted_hessian(mdp, soft_sensitivity(mdp, r, R1), C),
                              atol=1e-3)  # the reward's own curvature counts


def test_warm_start_gives_the_same_derivatives_in_fewer_iterations():
    mdp = random_mdp(S=6, discount=0.9999, seed=2)
    phi = features(6, 3, 2, seed=2)
    theta = torch.tensor([0.5, 0.5], dtype=torch.float64)
    cold = soft_sensitivity(mdp, phi @ theta, phi)
    warm = soft_sensitivity(mdp, phi @ (theta + 1e-3), phi, v0=cold.v)
    again = soft_sensitivity(mdp, phi @ (theta + 1e-3), phi)
    assert warm.num_iters < again.num_iters
    assert torch.allclose(warm.dlog_policy, again.dlog_policy, atol=1e-9)


def test_bad_input_is_refused_with_a_clear_error():
    mdp = random_mdp(S=6, discount=0.95)
    phi = features(6, 3, 2)
    with pytest.raises(ValueError, match="discounted MDP"):
        soft_sensitivity(birl.envs.gridworld(size=4, horizon=4), torch.zeros(16, 5),
                         torch.zeros(16, 5, 1))
    with pytest.raises(ValueError, match=r"reward must have shape \(\.\.\., 6, 3\)"):
        soft_sensitivity(mdp, torch.zeros(6, 2, dtype=torch.float64), phi)
    with pytest.raises(ValueError, match="reward_jacobian must have shape"):
        soft_sensitivity(mdp, torch.zeros(6, 3, dtype=torch.float64), torch.zeros(6, 2))
    with pytest.raises(FloatingPointError, match="did not converge"):
        soft_sensitivity(mdp, torch.full((6, 3), float("nan"), dtype=torch.float64), phi)


# ---------------------------------------------------------------- the likelihood's derivatives
def _demos(mdp, reward, n=12, T=15, seed=0):
    """Demonstrations of the soft-optimal policy of ``reward`` (T steps each)."""
    g = torch.Generator().manual_seed(seed)
    pi = birl.soft_value_iteration(mdp, reward).policy
    states = torch.zeros(n, T, dtype=torch.long)
    actions = torch.zeros(n, T, dtype=torch.long)
    s = torch.multinomial(mdp.initial, n, replacement=True, generator=g)
    for t in range(T):
        a = torch.multinomial(pi[s], 1, generator=g)[:, 0]
        states[:, t], actions[:, t] = s, a
        k = torch.multinomial(mdp.transition_probs[s, a], 1, generator=g)[:, 0]
        s = mdp.successors[s, a, k]
    lengths = torch.randint(T // 2, T + 1, (n,), generator=g)
    mask = torch.arange(T) < lengths[:, None]
    return birl.Demonstrations(states=states, actions=actions, mask=mask)


def test_likelihood_derivatives_equal_autograd_and_the_planner_likelihood():
    mdp = random_mdp(S=8, discount=0.99, seed=11)
    phi = features(8, 3, 3, seed=12)
    theta = torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64)
    demos = _demos(mdp, phi @ theta)
    der = soft_log_likelihood_derivatives(mdp, demos, phi @ theta, phi)
    assert torch.allclose(der.log_lik, demo_log_likelihood(mdp, demos, phi @ theta), atol=1e-9)
    per_demo = torch.autograd.functional.jacobian(
        lambda t: demo_log_likelihood(mdp, demos, phi @ t), theta)
    assert torch.allclose(der.scores, per_demo, atol=1e-8)

    def grad(t):
        return soft_log_likelihood_derivatives(mdp, demos, phi @ t, phi).scores.sum(0)

    assert torch.allclose(der.hessian, _fd_hessian(grad, theta), rtol=1e-5, atol=1e-6)
    # BHHH's information: the sum over observed steps of outer products of their scores
    steps = torch.autograd.functional.jacobian(
        lambda t: birl.soft_value_iteration(mdp, phi @ t).log_policy, theta)
    obs = steps[demos.states[demos.mask], demos.actions[demos.mask]]            # (n_obs, d)
    assert torch.allclose(der.opg, obs.T @ obs, atol=1e-8)
    assert bool((torch.linalg.eigvalsh(der.opg) >= -1e-10).all())


@pytest.mark.parametrize("prior", [flat(), dist.Normal(0.5, 2.0), dist.Laplace(0.0, 1.0)])
def test_second_order_potential_is_the_targets_potential(prior):
    mdp = random_mdp(S=8, discount=0.995, seed=13)
    phi = features(8, 3, 3, seed=14)
    theta = torch.tensor([0.8, -0.2, 0.5], dtype=torch.float64)
    demos = _demos(mdp, phi @ theta, seed=1)
    target = Target(mdp, demos, birl.LinearReward(phi, prior=prior), "soft", 1.7)
    so = SoftSecondOrder.of(target)
    assert so is not None
    at = theta + 0.3
    u = {"theta": at.clone().requires_grad_(True)}
    value = target.potential(u, jacobian=False)
    grad, = torch.autograd.grad(value, u["theta"])
    out = so(at)
    assert torch.allclose(out.value, value.detach(), atol=1e-9)
    assert torch.allclose(out.gradient, grad, atol=1e-8)

    def g(t):
        return so(t).gradient

    assert torch.allclose(out.hessian, _fd_hessian(g, at), rtol=1e-5, atol=1e-6)
    assert bool((torch.linalg.eigvalsh(out.curvature) >= -1e-9).all())  # log-concave priors


def test_second_order_applies_only_where_its_assumptions_hold():
    disc = random_mdp(S=8, discount=0.99)
    phi = features(8, 3, 2)
    demos = _demos(disc, phi @ torch.tensor([0.5, -0.5], dtype=torch.float64))
    lin = birl.LinearReward(phi, prior=dist.Normal(0.0, 1.0))
    assert SoftSecondOrder.of(Target(disc, demos, lin, "soft", 1.0)) is not None
    assert SoftSecondOrder.of(Target(disc, demos, lin, "boltzmann", 1.0)) is None
    assert SoftSecondOrder.of(Target(disc, demos, lin, "soft", dist.LogNormal(0.0, 1.0))) is None
    positive = birl.LinearReward(phi, prior=dist.HalfNormal(1.0))
    assert SoftSecondOrder.of(Target(disc, demos, positive, "soft", 1.0)) is None
    tabular = birl.TabularReward(8, 3)  # linear, but the identity map: (S A)^2 Hessian entries
    assert SoftSecondOrder.of(Target(disc, demos, tabular, "soft", 1.0)) is None
    grid = birl.envs.gridworld(size=4, horizon=5)
    grid_demos = birl.Demonstrations(states=torch.zeros(2, 5, dtype=torch.long),
                                     actions=torch.zeros(2, 5, dtype=torch.long),
                                     mask=torch.ones(2, 5, dtype=torch.bool))
    finite = birl.LinearReward(grid.features, prior=dist.Normal(0.0, 1.0))
    assert SoftSecondOrder.of(Target(grid, grid_demos, finite, "soft", 1.0)) is None


# ---------------------------------------------------------------- Newton's MAP on SecondOrder
def test_newton_map_equals_the_quasi_newton_map_and_the_laplace_hessian_differences():
    mdp = random_mdp(S=8, discount=0.999, seed=21)
    phi = features(8, 3, 3, seed=22)
    demos = _demos(mdp, phi @ torch.tensor([0.6, -0.4, 0.2], dtype=torch.float64), seed=3)
    target = Target(mdp, demos, birl.LinearReward(phi, prior=dist.Normal(0.0, 2.0)), "soft", 1.0)
    assert isinstance(target, SecondOrder) and target.second_order is not None
    u_newton, loss_newton = map_.fit_map(target, target.init_unconstrained())
    plain = Target(mdp, demos, birl.LinearReward(phi, prior=dist.Normal(0.0, 2.0)), "soft", 1.0)
    plain.second_order = None                          # the L-BFGS path on autograd gradients
    u_lbfgs, loss_lbfgs = map_.fit_map(plain, plain.init_unconstrained())
    assert torch.allclose(u_newton["theta"], u_lbfgs["theta"], atol=1e-5)
    assert loss_newton <= loss_lbfgs + 1e-9
    exact, differences = map_.laplace(target, u_newton), map_.laplace(plain, u_newton)
    assert exact.hessian.startswith("analytic") and differences.hessian.startswith("finite")
    assert torch.allclose(exact.covariance, differences.covariance, rtol=1e-5)


def test_newton_map_on_rusts_buses_from_zero_takes_few_evaluations():
    """From theta = 0 the Hessian is indefinite (BHHH's curvature steps first) and the first
    full steps overshoot by orders of magnitude (the interpolating line search)."""
    mdp, demos = birl.datasets.rust_bus(groups=(4,), discount=0.9999)
    target = Target(mdp, demos, birl.LinearReward(mdp.features, prior=flat()), "soft", 1.0)
    calls = []

    def counted(theta, warm=None):
        calls.append(theta)
        return target.second_order(theta, warm)

    start = torch.zeros(2, dtype=torch.float64)
    assert not bool(torch.linalg.eigvalsh(target.second_order(start).hessian).min() > 0)
    theta, _, converged = map_.newton_map(counted, start)
    assert converged and len(calls) <= 20
    assert theta.tolist() == pytest.approx([2.2931, 10.0749], abs=5e-5)  # Rust's Table IX


def test_shorter_step_interpolates_within_its_bounds():
    # phi(0) = 10, phi'(0) = -4, phi(1) = 1e5: the quadratic's minimum is tiny -> step / 10
    assert map_._shorter_step(1.0, 4.0, 10.0, 1e5) == pytest.approx(0.1)
    # phi(1) = 9 (too little decrease): the minimum 4 / (2 * 3) = 0.667 -> capped at step / 2
    assert map_._shorter_step(1.0, 4.0, 10.0, 9.0) == pytest.approx(0.5)
    # phi(1) = 12: minimum 4 / (2 * 6) = 0.333, inside the bounds
    assert map_._shorter_step(1.0, 4.0, 10.0, 12.0) == pytest.approx(1 / 3)
    assert map_._shorter_step(0.5, 4.0, 10.0, float("inf")) == 0.25


def test_map_of_a_flat_prior_reports_bhhh_standard_errors_too(tmp_path):
    mdp = random_mdp(S=8, discount=0.99, seed=31)
    phi = features(8, 3, 2, seed=32)
    demos = _demos(mdp, phi @ torch.tensor([0.7, -0.5], dtype=torch.float64), n=30, seed=4)
    post = birl.infer(mdp, demos, birl.LinearReward(phi, prior=flat()), method="map",
                      progress=False)
    theta = post.samples["theta"][0]
    steps = torch.autograd.functional.jacobian(
        lambda t: birl.soft_value_iteration(mdp, phi @ t).log_policy, theta)
    obs = steps[demos.states[demos.mask], demos.actions[demos.mask]]            # (n_obs, d)
    expected = torch.linalg.inv(obs.T @ obs).diagonal().sqrt()
    assert torch.allclose(post.extra["standard_errors_bhhh"]["theta"], expected, rtol=1e-6)
    assert not torch.allclose(post.extra["standard_errors"]["theta"], expected, rtol=1e-3)
    proper = birl.infer(mdp, demos, birl.LinearReward(phi, prior=dist.Normal(0.0, 1.0)),
                        method="map", progress=False)
    assert "standard_errors_bhhh" not in proper.extra  # BHHH is the MLE's, not a posterior's
    path = tmp_path / "mle.nc"
    post.save(path)
    back = birl.RewardPosterior.load(path, mdp)
    for key in ("standard_errors", "standard_errors_bhhh"):
        assert torch.allclose(back.extra[key]["theta"], post.extra[key]["theta"])
