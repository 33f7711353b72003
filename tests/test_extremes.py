"""Numerical extremes: huge rewards, long horizons, discount 0.999, unreachable states,
near-deterministic experts, single-step horizons and one-state MDPs.

For the soft (maximum causal entropy) and Boltzmann likelihoods the expert's policy must stay
finite and normalised, the demonstrations' log-likelihood finite, and its gradient with respect
to the reward parameters finite with no NaN anywhere in the backward graph
(``torch.autograd.detect_anomaly``). float32 must agree with float64 to
``F32_ULPS * eps32 * scale``, ``scale`` the magnitude of the Q-values (``beta * max|r|`` times
the horizon, or over ``1 - gamma``): in float32 ``Q - V`` loses the bits that ``|Q|`` takes.
Non-convergence of a discounted fixed point must warn (``planning.ConvergenceWarning``).
"""

import contextlib
import math
import warnings

import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
from bayesirl.model.likelihood import action_log_probs, demo_log_likelihood
from bayesirl.planning.bellman import ConvergenceWarning
from bayesirl.testing import tiny_chain_mdp

torch.set_num_threads(1)

THETA = (1.0, -0.5)
EPS32 = torch.finfo(torch.float32).eps
F32_ULPS = 8  # measured worst case over the cases below: 0.8 (discount 0.999, rewards 1e3)
anomaly = pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")


def one_state(n_actions=2, **kw):
    return birl.TabularMDP.from_dense(torch.ones(1, n_actions, 1),
                                      features=torch.tensor([[1.0, 2.0]]), **kw)


def unreachable(**kw):
    """3 states; state 2 has initial probability 0 and no transition leads into it."""
    P = torch.zeros(3, 2, 3)
    P[0, 0, 0] = P[0, 1, 1] = P[1, 0, 0] = P[1, 1, 1] = 1.0
    P[2, :, 0] = 1.0
    return birl.TabularMDP.from_dense(P, initial=torch.tensor([0.5, 0.5, 0.0]),
                                      features=torch.tensor([[1.0, 0.0], [0.0, 1.0],
                                                             [1e3, -1e3]]), **kw)


# name -> (mdp builder, reward scale, rationality)
CASES = {
    "rewards_1e3": (lambda: tiny_chain_mdp(horizon=5), 1e3, 1.0),
    "horizon_1000": (lambda: tiny_chain_mdp(horizon=1000), 1.0, 1.0),
    "horizon_1000_rewards_1e3": (lambda: tiny_chain_mdp(horizon=1000), 1e3, 1.0),
    "rationality_100": (lambda: tiny_chain_mdp(horizon=5), 1.0, 100.0),
    "rationality_100_rewards_1e3": (lambda: tiny_chain_mdp(horizon=5), 1e3, 100.0),
    "single_step": (lambda: tiny_chain_mdp(horizon=1), 1.0, 1.0),
    "single_step_rationality_100": (lambda: tiny_chain_mdp(horizon=1), 10.0, 100.0),
    "one_state": (lambda: one_state(horizon=4), 1e3, 1.0),
    "one_state_one_action": (lambda: one_state(1, horizon=3), 1.0, 100.0),
    "unreachable_state": (lambda: unreachable(horizon=4), 1e3, 1.0),
    "discount_0.9_rewards_1e3": (lambda: tiny_chain_mdp(discount=0.9), 1e3, 1.0),
    "one_state_discount_0.9": (lambda: one_state(discount=0.9), 1e3, 100.0),
}
LIKELIHOODS = ("soft", "boltzmann")


def setup(name, dtype=torch.float64):
    build, scale, beta = CASES[name]
    mdp = build().to(dtype=dtype)
    theta = torch.tensor(THETA, dtype=dtype)
    model = birl.LinearReward(mdp.features * scale)
    return mdp, model, theta, beta


def q_scale(mdp, model, theta, beta):
    """Magnitude of the Q-values: beta * max|r| * (horizon or 1 / (1 - gamma))."""
    r = model.reward({"theta": theta}).abs().max().item()
    steps = mdp.horizon if mdp.finite_horizon else 1 / (1 - mdp.discount)
    return max(1.0, beta * r * steps)


def demos_of(mdp, log_pi, n=4):
    length = min(mdp.horizon, 6) if mdp.finite_horizon else 6
    return birl.rollouts(mdp, log_pi.exp(), n, seed=0, length=length)


def check_policy(lp, atol):
    assert torch.isfinite(lp).all(), "log-policy has non-finite entries"
    assert (lp <= atol).all()
    norm = torch.logsumexp(lp, -1)
    assert norm.abs().max().item() <= atol, f"policy rows sum to exp({norm.abs().max()})"


@anomaly
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("name", list(CASES))
def test_finite_normalised_and_finite_gradients(name, likelihood):
    mdp, model, theta, beta = setup(name)
    with torch.no_grad():
        lp = action_log_probs(mdp, model.reward({"theta": theta}), likelihood, beta)
    check_policy(lp, 1e-9)
    demos = demos_of(mdp, lp)
    theta = theta.clone().requires_grad_(True)
    # anomaly mode records a traceback per graph node: the hard DP's 1000 unfused steps would
    # take a minute, so there only the result is checked
    slow_graph = likelihood == "boltzmann" and mdp.finite_horizon and mdp.horizon > 100
    with torch.autograd.detect_anomaly() if not slow_graph else \
            contextlib.nullcontext():
        ll = demo_log_likelihood(mdp, demos, model.reward({"theta": theta}), likelihood, beta)
        (grad,) = torch.autograd.grad(ll.sum(), theta)
    assert ll.shape == (demos.n,) and torch.isfinite(ll).all() and (ll <= 1e-9).all()
    assert torch.isfinite(grad).all(), f"gradient {grad.tolist()}"


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("name", list(CASES))
def test_float32_agrees_with_float64(name, likelihood):
    mdp64, model64, theta64, beta = setup(name, torch.float64)
    mdp32, model32, theta32, _ = setup(name, torch.float32)
    lp64 = action_log_probs(mdp64, model64.reward({"theta": theta64}), likelihood, beta)
    lp32 = action_log_probs(mdp32, model32.reward({"theta": theta32}), likelihood, beta)
    assert lp32.dtype == torch.float32
    scale = q_scale(mdp64, model64, theta64, beta)
    # the planners normalise after subtracting each row's max, so a float32 row sums to 1
    # within a few eps at any Q scale; only the gap to float64 grows with the scale
    check_policy(lp32, 4 * EPS32)
    err = (lp32.double() - lp64).abs().max().item()
    assert err <= F32_ULPS * EPS32 * scale, f"float32 error {err:.3g} at scale {scale:.3g}"
    demos = demos_of(mdp64, lp64)
    ll64 = demo_log_likelihood(mdp64, demos, model64.reward({"theta": theta64}), likelihood,
                               beta)
    ll32 = demo_log_likelihood(mdp32, demos, model32.reward({"theta": theta32}), likelihood,
                               beta)
    steps = demos.n_steps
    assert (ll32.double() - ll64).abs().max().item() <= F32_ULPS * EPS32 * scale * steps


def test_float32_with_q_values_near_1e8_stays_finite_and_normalised():
    """beta * r * T = 100 * 1e3 * 1000: float32 keeps ~8 absolute units there, the policy is
    still a finite, normalised distribution."""
    mdp = tiny_chain_mdp(horizon=1000, dtype=torch.float32)
    r = mdp.features @ torch.tensor(THETA, dtype=torch.float32) * 1e3
    for likelihood in LIKELIHOODS:
        lp = action_log_probs(mdp, r, likelihood, 100.0)
        assert torch.isfinite(lp).all()
        assert torch.allclose(lp.exp().sum(-1), torch.ones((), dtype=torch.float32), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_discounted_soft_policy_normalised_at_q_values_near_1e10(dtype):
    """rationality x reward near 1e10: ``V`` rounds at that magnitude, so ``Q - V`` lost the
    policy's normalisation (1.6e-7 in float64); the backup shifts by ``max Q`` first and the
    best action's log-probability is exact (normalised to a few eps)."""
    mdp = tiny_chain_mdp(discount=0.9, dtype=dtype)
    offset = 1e9 if dtype == torch.float64 else 1e4  # Q ~ 10 x offset, differences ~ 1
    r = mdp.features @ torch.tensor(THETA, dtype=dtype) + offset
    plan = birl.soft_value_iteration(mdp, r)
    eps = torch.finfo(dtype).eps
    assert torch.isfinite(plan.log_policy).all() and plan.v.abs().max() > offset
    assert plan.log_policy.max(-1).values.min() < -0.01  # no state's policy is deterministic
    assert (plan.log_policy.exp().sum(-1) - 1).abs().max().item() <= 4 * eps
    v, lp = birl.planning.bellman.soft_backup(torch.tensor([[1e10, 1e10 - 1.0, 1e10 - 3.0]],
                                                           dtype=torch.float64))
    assert abs(lp.exp().sum().item() - 1) <= 4 * torch.finfo(torch.float64).eps
    assert lp[0, 0].item() == pytest.approx(-math.log(1 + math.exp(-1) + math.exp(-3)), abs=1e-15)


# ---------------------------------------------------------------------------- discount 0.999
@anomaly
@pytest.mark.parametrize("solver", ["iterate", "newton"])
def test_discount_0999_soft_finite_values_and_gradient(solver):
    """Plain iteration: ~23000 fixed-point iterations (error bound 1e-10 relative at
    gamma = 0.999), forward and adjoint; Newton: a few steps and a transpose solve. No
    ConvergenceWarning (warnings are errors in this suite)."""
    mdp = tiny_chain_mdp(discount=0.999)
    theta = torch.tensor(THETA, requires_grad=True)
    with torch.autograd.detect_anomaly():
        plan = birl.soft_value_iteration(mdp, mdp.features @ theta, solver=solver)
        demos = demos_of(mdp, plan.log_policy.detach())
        ll = birl.model.likelihood.step_log_probs(mdp, demos, plan.log_policy).sum()
        (grad,) = torch.autograd.grad(ll, theta)
    check_policy(plan.log_policy.detach(), 1e-9)
    assert plan.residual * 0.999 / 0.001 <= 1e-10 * max(1.0, plan.v.abs().max().item())
    assert torch.isfinite(plan.v).all() and plan.v.abs().max() > 100  # V ~ r / (1 - gamma)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


@pytest.mark.slow
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_discount_0999_float32_agrees_and_boltzmann_finite(likelihood):
    mdp = tiny_chain_mdp(discount=0.999)
    r = (mdp.features @ torch.tensor(THETA)) * 1e3
    lp64 = action_log_probs(mdp, r, likelihood)
    lp32 = action_log_probs(mdp.to(dtype=torch.float32), r.float(), likelihood)
    check_policy(lp64, 1e-9)
    scale = r.abs().max().item() / (1 - 0.999)  # |Q| ~ 7.5e5
    assert (lp32.double() - lp64).abs().max().item() <= F32_ULPS * EPS32 * scale


@pytest.mark.parametrize("plan_fn", [birl.soft_value_iteration, birl.value_iteration])
def test_non_convergence_warns_forward(plan_fn):
    mdp = tiny_chain_mdp(discount=0.999)
    with pytest.warns(ConvergenceWarning, match=r"did not converge: residual .* after 50 "
                                                  r"iterations \(discount 0.999"):
        plan = plan_fn(mdp, mdp.reward, max_iters=50, solver="iterate")
    assert plan.num_iters == 50 and plan.residual > 0
    assert torch.isfinite(plan.log_policy).any()


def test_non_convergence_warns_in_the_adjoint():
    """The gradient's adjoint fixed point has its own iteration: it must warn too."""
    mdp = tiny_chain_mdp(discount=0.999)
    theta = torch.tensor(THETA, requires_grad=True)
    with pytest.warns(ConvergenceWarning) as record:
        plan = birl.soft_value_iteration(mdp, mdp.features @ theta, max_iters=50,
                                         solver="iterate")
        plan.v.sum().backward()
    messages = [str(w.message) for w in record]
    assert any("adjoint" in m for m in messages), messages
    assert torch.isfinite(theta.grad).all()


def test_converged_fixed_point_does_not_warn():
    mdp = tiny_chain_mdp(discount=0.99)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        plan = birl.soft_value_iteration(mdp, mdp.reward)
    assert plan.num_iters < 100_000


# ---------------------------------------------------------------------------- inference
def test_map_on_an_extreme_problem_is_finite():
    """Rewards of order 1e3, a near-deterministic expert (rationality 100), horizon 20."""
    mdp = tiny_chain_mdp(horizon=20)
    model = birl.LinearReward(mdp.features * 1e3, prior=dist.Normal(0.0, 1.0))
    with torch.no_grad():
        lp = action_log_probs(mdp, model.reward({"theta": torch.tensor(THETA)}), "soft", 100.0)
    demos = birl.rollouts(mdp, lp.exp(), 5, seed=0)
    for likelihood in LIKELIHOODS:
        post = birl.infer(mdp, demos, model, "map", likelihood=likelihood, rationality=100.0,
                          progress=False)
        assert torch.isfinite(post.samples["theta"]).all()
        assert torch.isfinite(post.reward()).all()
        assert torch.isfinite(post.log_lik).all()
        assert math.isfinite(post.settings["seconds"])
