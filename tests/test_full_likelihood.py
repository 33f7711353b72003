"""The full likelihood: transition probabilities and reward in one posterior (Rust's stage 3)."""

import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
from bayesirl.core.dynamics import DirichletTransitions, TransitionSupport
from bayesirl.inference.map import laplace_fit
from bayesirl.model.dynamics_likelihood import FullLikelihood, soft_log_policy
from bayesirl.model.priors import flat
from bayesirl.testing import naive_log_policy, simulate_demos

S, KEEP, REPLACE = 5, 0, 1


def chain(reset=True, counts=(30.0, 50.0, 8.0), discount=0.9):
    """Five mileage bins, increments 0/1/2 tied across states and actions; replace resets to
    bin 0 first (``reset``) or moves like keep (then the actions differ only in reward, and the
    choices say nothing about the increments). Rust's features: keep (-x/4, 0), replace (0, -1).
    """
    support = TransitionSupport.from_offsets(S, 2, (0, 1, 2),
                                             origin=(None, 0) if reset else (None, None))
    transitions = DirichletTransitions.from_counts(support, torch.tensor([counts]))
    phi = torch.zeros(S, 2, 2)
    phi[:, KEEP, 0] = -torch.arange(S) / 4.0
    phi[:, REPLACE, 1] = -1.0
    mdp = transitions.to_mdp("mode", discount=discount, features=phi,
                             feature_names=("theta_11", "RC"))
    return mdp, transitions


def demos_of(mdp, theta=(2.0, 3.0), n=40, seed=0):
    return simulate_demos(mdp, mdp.features @ torch.tensor(theta), n=n, seed=seed, length=15)


def target_of(mdp, transitions, demos, prior=None):
    model = FullLikelihood(birl.LinearReward(mdp.features, prior=prior or flat()), transitions)
    return model.build_target(mdp, demos)


def test_soft_log_policy_at_the_mdps_own_probabilities_is_the_planners():
    mdp, _ = chain()
    reward = mdp.features @ torch.tensor([1.5, 2.0])
    lp = soft_log_policy(mdp, reward, mdp.transition_probs)
    assert torch.allclose(lp, naive_log_policy(mdp, reward), atol=1e-9)


def test_the_gradient_in_p_matches_finite_differences_on_a_tiny_chain():
    mdp, transitions = chain()
    demos = demos_of(mdp)
    target = target_of(mdp, transitions, demos)
    x = torch.tensor([1.7, 2.6, 0.3, -0.8], requires_grad=True)

    def f(z):  # p's unconstrained site is (G, K - 1) = (1, 2)
        return target.potential({"theta": z[:2], "p": z[2:].reshape(1, 2)}, jacobian=False)

    (grad,) = torch.autograd.grad(f(x), x)
    h = 1e-6
    with torch.no_grad():
        fd = torch.stack([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in torch.eye(4)])
    assert torch.allclose(grad, fd, rtol=1e-6, atol=1e-6)
    # the p part is not the transitions' alone: the choices pull on p through the planner
    trans_only = torch.autograd.grad(-transitions.log_likelihood(target.constrain(
        {"theta": x[:2], "p": x[2:].reshape(1, 2)})["p"]), x)[0]
    assert (grad[2:] - trans_only[2:]).abs().max() > 1e-3


def test_batched_probabilities_give_each_row_its_own_gradient():
    mdp, transitions = chain()
    reward = mdp.features @ torch.tensor([1.5, 2.0])
    p = transitions.group_mean().expand(3, 1, 3).clone().requires_grad_(True)
    lp = soft_log_policy(mdp, reward.expand(3, S, 2), transitions.probabilities(p))
    (grad,) = torch.autograd.grad(lp[0, 2, REPLACE] + 2 * lp[2, 2, REPLACE], p)
    single = transitions.group_mean().clone().requires_grad_(True)
    (one,) = torch.autograd.grad(soft_log_policy(mdp, reward, transitions.probabilities(
        single))[2, REPLACE], single)
    assert torch.allclose(grad[0], one, atol=1e-12)
    assert torch.equal(grad[1], torch.zeros_like(one))
    assert torch.allclose(grad[2], 2 * one, atol=1e-12)


def test_when_choices_say_nothing_about_p_the_joint_map_of_p_is_the_count_mle():
    counts = torch.tensor([30.0, 50.0, 8.0])
    mdp, transitions = chain(reset=False, counts=tuple(counts.tolist()))
    fit = laplace_fit(target_of(mdp, transitions, demos_of(mdp)))
    mle = counts / counts.sum()
    assert torch.allclose(fit.params["p"][0], mle, atol=1e-7)
    # and its standard errors are the multinomial's, sqrt(p (1 - p) / n), both kinds
    multinomial = (mle * (1 - mle) / counts.sum()).sqrt()
    assert torch.allclose(fit.standard_errors["p"][0], multinomial, rtol=1e-4)
    assert torch.allclose(fit.opg_standard_errors["p"][0], multinomial, rtol=1e-6)


def test_the_laplace_covariance_is_the_inverse_hessian_of_the_log_density():
    mdp, transitions = chain()
    target = target_of(mdp, transitions, demos_of(mdp, n=60, seed=3))
    fit = laplace_fit(target)
    assert fit.gradient_norm < 1e-6
    # an independent Hessian: second differences of the potential's value, in the constrained
    # coordinates (theta_11, RC, p0, p1) with p2 = 1 - p0 - p1
    theta, p = fit.params["theta"], fit.params["p"][0]
    x = torch.cat([theta, p[:2]])

    def f(z):
        prob = torch.cat([z[2:], 1 - z[2:].sum(-1, keepdim=True)]).unsqueeze(0)
        with torch.no_grad():
            return target.potential(target.unconstrain({"theta": z[:2], "p": prob}),
                                    jacobian=False)

    h = 1e-4
    eye = torch.eye(4) * h
    H = torch.stack([torch.stack([(f(x + eye[i] + eye[j]) - f(x + eye[i] - eye[j])
                                   - f(x - eye[i] + eye[j]) + f(x - eye[i] - eye[j]))
                                  / (4 * h * h) for j in range(4)]) for i in range(4)])
    cov = torch.linalg.inv(H)
    assert torch.allclose(fit.standard_errors["theta"], cov.diagonal()[:2].sqrt(), rtol=1e-3)
    assert torch.allclose(fit.standard_errors["p"][0, :2], cov.diagonal()[2:].sqrt(), rtol=1e-3)
    # the mode maximises the full log-likelihood: the stage-2 estimate at the count MLE of p
    # does no better
    stage2 = target.log_likelihood({"theta": theta, "p": transitions.group_mode()}).sum()
    assert fit.log_likelihood >= float(stage2) - 1e-9


def test_a_posterior_of_draws_plans_each_draws_own_dynamics():
    mdp, transitions = chain()
    target = target_of(mdp, transitions, demos_of(mdp, n=5))
    p = torch.stack([transitions.group_mean(), torch.tensor([[0.2, 0.5, 0.3]])])
    theta = torch.tensor([[1.0, 2.0], [1.5, 2.5]])
    both = target.log_likelihood({"theta": theta, "p": p})
    assert both.shape == (2, 6)
    for i in range(2):
        one = target.log_likelihood({"theta": theta[i], "p": p[i]})
        assert torch.allclose(both[i], one, atol=1e-12)


def test_a_dirichlet_prior_on_p_enters_the_potential():
    mdp, transitions = chain()
    prior_transitions = DirichletTransitions.from_counts(transitions.support,
                                                         transitions.counts, prior=5.0)
    demos = demos_of(mdp, n=5)
    flat_target = target_of(mdp, transitions, demos)
    informed = target_of(mdp, prior_transitions, demos)
    u = flat_target.init_unconstrained()
    params = flat_target.constrain(u)
    diff = informed.potential(u, jacobian=False) - flat_target.potential(u, jacobian=False)
    expected = -(dist.Dirichlet(torch.full((3,), 5.0)).log_prob(params["p"][0])
                 - dist.Dirichlet(torch.ones(3)).log_prob(params["p"][0]))
    assert torch.allclose(diff, expected, atol=1e-10)


def test_bad_inputs_raise_naming_the_argument():
    mdp, transitions = chain()
    demos = demos_of(mdp, n=3)
    reward_model = birl.LinearReward(mdp.features)
    with pytest.raises(TypeError, match="transitions must be a DirichletTransitions"):
        FullLikelihood(reward_model, mdp)
    with pytest.raises(TypeError, match="reward_model must be a bayesirl RewardModel"):
        FullLikelihood("theta", transitions)
    model = FullLikelihood(reward_model, transitions)
    with pytest.raises(ValueError, match="likelihood is 'boltzmann'"):
        model.build_target(mdp, demos, likelihood="boltzmann")
    with pytest.raises(ValueError, match="rationality must be a number here"):
        model.build_target(mdp, demos, rationality=dist.LogNormal(0.0, 1.0))
    with pytest.raises(ValueError, match="mdp has horizon 4"):
        model.build_target(mdp.replace(horizon=4), demos)
    other, _ = chain(reset=False)
    with pytest.raises(ValueError, match="are not the transitions' support"):
        model.build_target(other, demos)
    with pytest.raises(ValueError, match=r"probs must have shape \(\.\.\., 5, 2, 3\)"):
        soft_log_policy(mdp, mdp.features @ torch.ones(2), torch.ones(5, 2, 2) / 2)


def test_laplace_fit_gives_bhhh_with_any_prior_when_asked_and_infers_map_only_for_an_mle():
    """``laplace_fit`` (the econometric table) reports BHHH's standard errors whatever the prior
    when ``opg``; ``map.laplace`` adds them by default only for a maximum-likelihood fit."""
    import pyro.distributions as dist

    from bayesirl.inference import map as map_

    mdp, transitions = chain()
    demos = demos_of(mdp, n=60, seed=3)
    proper = target_of(mdp, transitions, demos, prior=dist.Normal(0.0, 5.0))
    fit = laplace_fit(proper)
    assert fit.gradient_norm < 1e-6
    assert set(fit.opg_standard_errors) == {"theta", "p"}
    assert bool((fit.opg_standard_errors["theta"] > 0).all())
    assert laplace_fit(proper, opg=False).opg_standard_errors is None
    u = proper.unconstrain(fit.params)
    assert map_.laplace(proper, u).standard_errors_bhhh is None
    assert map_.laplace(proper, u, bhhh=True).standard_errors_bhhh is not None
    # each site's covariance block is the delta method's: its diagonal, the squared s.e.
    for site in ("theta", "p"):
        torch.testing.assert_close(fit.covariance[site].diagonal().clamp_min(0).sqrt(),
                                   fit.standard_errors[site].reshape(-1))
    flat_fit = laplace_fit(target_of(mdp, transitions, demos))
    assert flat_fit.log_likelihood == pytest.approx(
        flat_fit.log_likelihood_choice + flat_fit.log_likelihood_transition)
