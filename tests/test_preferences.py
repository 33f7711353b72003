"""Preferences between trajectories: the type, the Bradley-Terry (Davidson) likelihood, the
target's potential (fused and generic, batched), the posterior against quadrature through
infer() (vectorized chains, Pyro's NUTS, MAP)."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
from bayesirl.core.preferences import Preferences
from bayesirl.model.preferences import (
    PreferenceModel,
    outcome_log_probs,
    pair_log_likelihood,
    preference_log_likelihood,
    trajectory_returns,
)
from bayesirl.posterior.diagnostics import InferenceWarning
from bayesirl.testing import tiny_chain_mdp


def _feature_prefs(d=2, M=12, P=30, theta=(1.0, -0.5), seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    F = torch.randn(M, d, generator=g)
    pairs = torch.stack([torch.randperm(M, generator=g)[:2] for _ in range(P)])
    R = F @ torch.tensor(theta)
    p = torch.sigmoid(R[pairs[:, 0]] - R[pairs[:, 1]])
    flip = torch.rand(P, generator=g) > p
    pairs[flip] = pairs[flip].flip(-1)
    tie = (torch.rand(P, generator=g) < 0.2) if ties else None
    return Preferences.from_pairs(pairs, features=F, ties=tie)


# ---------------------------------------------------------------------------- the type
def test_rankings_give_every_implied_pair_and_tied_groups():
    prefs = Preferences.from_rankings([[3, (0, 2), 1]], features=torch.randn(4, 2))
    got = {(tuple(p), bool(t)) for p, t in zip(prefs.pairs.tolist(), prefs.ties, strict=True)}
    assert got == {((3, 0), False), ((3, 2), False), ((3, 1), False), ((0, 2), True),
                   ((0, 1), False), ((2, 1), False)}
    assert prefs.has_ties and prefs.n_pairs == 6 and prefs.n_trajectories == 4


def test_state_sequences_are_padded_and_their_feature_sums_discounted():
    states = torch.tensor([[0, 1, 2], [2, 2, 0]])
    actions = torch.tensor([[1, 1, 0], [0, 1, 1]])
    prefs = Preferences.from_pairs([[0, 1]], states=states, actions=actions, lengths=[3, 2])
    assert prefs.states[1, 2] == 0 and not prefs.mask[1, 2]
    phi = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]])
    F = prefs.feature_sums(phi, discount=0.9)
    want = torch.stack([phi[0] + 0.9 * phi[1] + 0.81 * phi[2], phi[2] + 0.9 * phi[2]])
    torch.testing.assert_close(F, want)


@pytest.mark.parametrize("kwargs, match", [
    ({"pairs": [[0, 5]]}, r"pairs\[0, 1\] is 5, expected a trajectory index in \[0, 3\)"),
    ({"pairs": [[1, 1]]}, "compares trajectory 1 with itself"),
    ({"pairs": [[0, 1]], "ties": [True, False]}, r"ties must have shape \(1,\)"),
    ({"pairs": [[0, 1, 2]]}, r"pairs must have shape \(P, 2\)"),
])
def test_bad_pairs_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Preferences.from_pairs(features=torch.randn(3, 2), **kwargs)


def test_bad_trajectories_are_named():
    with pytest.raises(ValueError, match="exactly one of the two"):
        Preferences([[0, 1]], states=torch.zeros(2, 2, dtype=torch.long),
                    features=torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"states\[1, 0\] is -1"):
        Preferences.from_pairs([[0, 1]], states=[[0, 1], [-1, 0]])
    with pytest.raises(ValueError, match=r"mask\[0, 2\] is True after mask\[0, 1\] is False"):
        Preferences([[0, 1]], states=torch.zeros(2, 3, dtype=torch.long),
                    mask=torch.tensor([[True, False, True], [True, True, True]]))
    prefs = Preferences.from_pairs([[0, 1]], states=[[0, 3], [1, 2]])
    with pytest.raises(ValueError, match=r"states\[0, 1\] is 3, expected an index in \[0, 3\)"):
        prefs.validate(tiny_chain_mdp())
    with pytest.raises(TypeError, match=r"rankings\[0\]\[1\] is 'a'"):
        Preferences.from_rankings([[0, "a"]], features=torch.zeros(2, 1))


# ---------------------------------------------------------------------------- likelihood
def test_returns_sum_the_reward_along_each_trajectory():
    g = torch.Generator().manual_seed(1)
    states = torch.randint(3, (4, 5), generator=g)
    actions = torch.randint(2, (4, 5), generator=g)
    prefs = Preferences.from_pairs([[0, 1], [2, 3]], states=states, actions=actions,
                                   lengths=[5, 3, 1, 4])
    r = torch.randn(7, 3, 2, generator=g)
    got = trajectory_returns(r, prefs, state_action=True, discount=0.8)
    for m in range(4):
        L = int(prefs.mask[m].sum())
        want = sum(0.8 ** t * r[:, states[m, t], actions[m, t]] for t in range(L))
        torch.testing.assert_close(got[:, m], want)
    state_only = Preferences.from_pairs([[0, 1]], states=states[:2])
    with pytest.raises(ValueError, match="have no actions"):
        trajectory_returns(r, state_only, state_action=True)


def test_bradley_terry_without_ties_is_a_logistic_in_the_return_difference():
    R = torch.tensor([[0.3, -1.2, 2.0]])
    prefs = Preferences.from_pairs([[0, 1], [2, 0]], features=torch.zeros(3, 1))
    ll = preference_log_likelihood(R, prefs, rationality=2.0)
    want = torch.nn.functional.logsigmoid(2.0 * torch.tensor([1.5, 1.7]))
    torch.testing.assert_close(ll[0], want)


def test_davidson_ties_sum_to_one_and_tie_at_equal_returns_with_nu_over_two_plus_nu():
    R = torch.tensor([[0.0, 0.0, 1.3, -0.4]])
    pairs = torch.tensor([[0, 1], [2, 3], [3, 2]])
    for nu in (0.5, 1.0, 3.0):
        lp = outcome_log_probs(R, pairs, rationality=1.5, tie_strength=nu)
        torch.testing.assert_close(lp.exp().sum(-1), torch.ones(1, 3))
        assert math.isclose(float(lp[0, 0, 2].exp()), nu / (2 + nu), rel_tol=1e-12)
        assert float(lp[0, 0, 0].exp()) == pytest.approx(1 / (2 + nu))
        # the better trajectory wins more often, and a tie gets rarer with the gap
        assert lp[0, 1, 0] > lp[0, 1, 1] and lp[0, 1, 2] < lp[0, 0, 2]
    no_tie = outcome_log_probs(R, pairs, tie_strength=0.0).exp()
    assert (no_tie[..., 2] == 0).all()
    torch.testing.assert_close(no_tie[0, 1, 0], torch.sigmoid(torch.tensor(1.7)))
    ties = torch.tensor([True, False, False])
    delta = R[:, pairs[:, 0]] - R[:, pairs[:, 1]]
    ll = pair_log_likelihood(delta, ties, 1.0)
    lp = outcome_log_probs(R, pairs, tie_strength=1.0)
    torch.testing.assert_close(ll[0], torch.stack([lp[0, 0, 2], lp[0, 1, 0], lp[0, 2, 0]]))


def test_ties_need_a_positive_tie_strength():
    prefs = _feature_prefs(ties=True)
    model = PreferenceModel(birl.LinearReward(torch.eye(2)), tie_strength=0.0)
    with pytest.raises(ValueError, match="tie_strength is 0 .* but pair"):
        model.build_target(None, prefs)
    target = PreferenceModel(birl.LinearReward(torch.eye(2))).build_target(None, prefs)
    assert target.tie_strength == 1.0  # the default with ties
    nu_prior = PreferenceModel(birl.LinearReward(torch.eye(2)),
                               tie_strength=dist.LogNormal(0.0, 1.0)).build_target(None, prefs)
    assert "tie_strength" in nu_prior.priors


def test_judges_rationality_and_tie_strength_priors_must_be_positive():
    with pytest.raises(ValueError, match="rationality prior must live on the positive reals"):
        PreferenceModel(birl.LinearReward(torch.eye(2)), rationality=dist.Uniform(-0.5, 2.0))
    with pytest.raises(ValueError, match="tie_strength prior must live on the positive reals"):
        PreferenceModel(birl.LinearReward(torch.eye(2)), tie_strength=dist.Uniform(-0.5, 2.0))
    PreferenceModel(birl.LinearReward(torch.eye(2)), rationality=dist.Uniform(2.0, 5.0))


def test_actions_past_the_reward_tables_last_are_refused_not_read_from_the_next_state():
    """A state-action reward is read flat: action 3 of 2 at state 0 would be state 1's
    action 1."""
    prefs = Preferences.from_pairs([[0, 1]], states=[[0], [1]], actions=[[3], [0]])
    model = PreferenceModel(birl.TabularReward(3, 2))
    with pytest.raises(ValueError, match=r"actions\[0, 0\] is 3, expected an index in "
                                         r"\[0, 2\) \(the reward's actions\)"):
        model.build_target(None, prefs)
    with pytest.raises(ValueError, match=r"actions\[0, 0\] is 3, .* \(the features' actions\)"):
        prefs.feature_sums(torch.ones(3, 2, 1))
    good = Preferences.from_pairs([[0, 1]], states=[[0], [1]], actions=[[1], [0]])
    target = model.build_target(None, good)
    theta = torch.arange(6.0).reshape(3, 2)
    assert target.returns({"theta": theta}).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"states\[1, 0\] is 3, expected an index in \[0, 3\)"):
        target.returns({"theta": theta}, Preferences.from_pairs([[0, 1]], states=[[0], [3]],
                                                                 actions=[[1], [0]]))


# ---------------------------------------------------------------------------- the target
def test_fused_potential_equals_the_generic_graph_in_value_and_gradient():
    target = PreferenceModel(birl.LinearReward(torch.eye(2), prior=dist.Normal(0.3, 2.0)),
                             rationality=1.7).build_target(None, _feature_prefs())
    assert target.fused is not None
    theta = torch.randn(5, 2, requires_grad=True)
    fast = target.potential({"theta": theta})
    (g_fast,) = torch.autograd.grad(fast.sum(), theta)
    fused, target.fused = target.fused, None
    slow = target.potential({"theta": theta})
    (g_slow,) = torch.autograd.grad(slow.sum(), theta)
    target.fused = fused
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-10, atol=1e-10)


def test_potential_accepts_leading_batch_dims():
    model = PreferenceModel(birl.LinearReward(torch.eye(2)), rationality=dist.LogNormal(0, 1),
                            tie_strength=dist.LogNormal(0, 1))
    target = model.build_target(None, _feature_prefs(ties=True))
    u = {k: torch.randn(3, 4, *v.shape) for k, v in target.init_unconstrained().items()}
    batched = target.potential(u)
    assert batched.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            single = target.potential({k: v[i, j] for k, v in u.items()})
            torch.testing.assert_close(batched[i, j], single)


def test_state_only_trajectories_take_a_state_reward_and_a_linear_one_needs_no_mdp():
    mdp = tiny_chain_mdp(horizon=4)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=6, seed=0)
    prefs = Preferences.from_demonstrations(demos, [[0, 1], [2, 3], [4, 5]], state_only=True)
    linear = PreferenceModel(birl.LinearReward(mdp.features)).build_target(None, prefs)
    generic = PreferenceModel(birl.TabularReward(3)).build_target(None, prefs)
    theta = torch.randn(4, 2)
    r = theta @ mdp.features.T                                   # the same state rewards
    torch.testing.assert_close(linear.returns({"theta": theta}),
                               generic.returns({"theta": r}))
    sa = PreferenceModel(birl.TabularReward(3, 2))
    with pytest.raises(ValueError, match="have no actions"):
        sa.build_target(None, prefs).log_likelihood({"theta": torch.zeros(3, 2)})


def test_joint_target_lists_demonstrations_then_pairs():
    mdp = tiny_chain_mdp(horizon=3)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=5, seed=1)
    prefs = Preferences.from_demonstrations(demos, [[0, 1], [3, 2]])
    model = PreferenceModel(birl.LinearReward(mdp.features), rationality=2.0)
    target = model.build_target(mdp, (demos, prefs), rationality=dist.LogNormal(0.0, 0.5))
    assert set(target.priors) == {"theta", "rationality"}
    params = {"theta": torch.randn(3, 2), "rationality": torch.rand(3) + 0.5}
    ll = target.log_likelihood(params)
    assert ll.shape == (3, 5 + 2)
    reward = params["theta"] @ mdp.features.T
    torch.testing.assert_close(ll[:, :5], birl.model.demo_log_likelihood(
        mdp, demos, reward, "soft", params["rationality"]))
    R = trajectory_returns(reward, prefs, state_action=False)
    torch.testing.assert_close(ll[:, 5:], preference_log_likelihood(R, prefs, 2.0))
    with pytest.raises(ValueError, match="mdp is None but data has demonstrations"):
        model.build_target(None, (demos, prefs))
    with pytest.raises(TypeError, match="data must be Preferences or a pair"):
        model.build_target(mdp, demos)


def test_pyro_model_has_the_targets_density():
    mdp = tiny_chain_mdp(horizon=3)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=4, seed=2)
    prefs = Preferences.from_demonstrations(demos, [[0, 1], [2, 3]])
    target = PreferenceModel(birl.LinearReward(mdp.features)).build_target(mdp, (demos, prefs))
    theta = torch.tensor([0.4, -0.2])
    trace = pyro.poutine.trace(pyro.poutine.condition(target.pyro_model(),
                                                      {"theta": theta})).get_trace()
    torch.testing.assert_close(trace.log_prob_sum(), -target.potential({"theta": theta}))


# ---------------------------------------------------------------------------- the posterior
def _quadrature(target, n=241, width=7.0):
    """Posterior mean and covariance of a 2-d weight vector by the midpoint rule on a grid
    around the Laplace-free box mean +- width sd of a coarse pass."""
    def moments(lo, hi):
        axes = [torch.linspace(float(lo[i]), float(hi[i]), n) for i in range(2)]
        pts = torch.cartesian_prod(*axes)
        with torch.no_grad():
            logp = -target.potential({"theta": pts})
        w = torch.softmax(logp, 0)
        mean = w @ pts
        cov = (w[:, None] * (pts - mean)).T @ (pts - mean)
        edge = w.reshape(n, n)
        edge_mass = float(edge.sum() - edge[1:-1, 1:-1].sum())
        return mean, cov, edge_mass

    mean, cov, _ = moments(torch.full((2,), -6.0), torch.full((2,), 6.0))
    sd = cov.diagonal().sqrt()
    mean, cov, edge = moments(mean - width * sd, mean + width * sd)
    assert edge < 1e-8
    return mean, cov


def _vectorized(prefs, model, **kwargs):
    """infer()'s many chains in lockstep on the preference target (short runs may warn)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        return birl.infer(None, prefs, model, method="hmc", chain_method="vectorized",
                          progress=False, **kwargs)


def test_preference_posterior_matches_quadrature_on_a_2d_problem():
    prefs = _feature_prefs(P=25)
    model = PreferenceModel(birl.LinearReward(torch.eye(2)))
    mean, cov = _quadrature(model.build_target(None, prefs))
    post = _vectorized(prefs, model, num_samples=1000, warmup=300, num_chains=32, seed=3)
    draws = post.params["theta"]                                    # (32, 1000, 2)
    import arviz as az

    ess = az.ess(draws.numpy()[..., 0]), az.ess(draws.numpy()[..., 1])
    flat = draws.reshape(-1, 2)
    for i in range(2):  # |mean - truth| / MCSE < 4 (a 6e-5 two-sided failure rate)
        mcse = cov[i, i].sqrt() / math.sqrt(float(ess[i]))
        assert abs(float(flat[:, i].mean() - mean[i])) < 4 * mcse
        # the sd: its MCSE is about sd / sqrt(2 ESS) for near-Gaussian draws
        assert abs(float(flat[:, i].std() / cov[i, i].sqrt()) - 1) < 4 / math.sqrt(2 * ess[i])
    corr = torch.corrcoef(flat.T)[0, 1]
    assert abs(float(corr - cov[0, 1] / cov.diagonal().prod().sqrt())) < 0.05


def test_pyros_nuts_samples_the_same_target():
    target = PreferenceModel(birl.LinearReward(torch.eye(2))).build_target(
        None, _feature_prefs(P=25))
    mean, cov = _quadrature(target)
    pyro.set_rng_seed(0)
    kernel = pyro.infer.NUTS(potential_fn=target.potential)
    mcmc = pyro.infer.MCMC(kernel, num_samples=600, warmup_steps=300,
                           initial_params=target.init_unconstrained(), disable_progbar=True)
    mcmc.run()
    flat = mcmc.get_samples()["theta"]
    import arviz as az

    for i in range(2):
        ess = float(az.ess(flat[None, :, i].numpy()))
        mcse = cov[i, i].sqrt() / math.sqrt(ess)
        assert abs(float(flat[:, i].mean() - mean[i])) < 4 * mcse


def test_posterior_object_has_draws_rewards_and_arviz_groups():
    prefs = _feature_prefs(P=20)
    model = PreferenceModel(birl.LinearReward(torch.eye(2)))
    post = _vectorized(prefs, model, num_samples=25, warmup=50, num_chains=8, seed=0)
    assert post.samples["theta"].shape == (200, 2) and post.num_chains == 8
    assert post.reward().shape == (200, 2) and post.log_lik.shape == (8, 25, 20)
    assert post.sample_stats["diverging"].shape == (8, 25)
    idata = post.to_arviz()
    assert dict(idata.log_likelihood["preference"].sizes) == {"chain": 8, "draw": 25,
                                                              "pair": 20}
    assert list(idata.posterior["theta"].dims) == ["chain", "draw", "feature"]
    assert post.outcome_probs().shape == (200, 20, 3)


def test_infer_takes_a_preference_model_for_map_and_nuts():
    prefs = _feature_prefs(P=25)
    model = PreferenceModel(birl.LinearReward(torch.eye(2)))
    target = model.build_target(None, prefs)
    mean, _ = _quadrature(target)
    fit = birl.infer(None, prefs, model, method="map", progress=False)
    theta = fit.samples["theta"][0]
    u = {"theta": theta.clone().requires_grad_(True)}
    (grad,) = torch.autograd.grad(target.potential(u, jacobian=False), u["theta"])
    assert grad.abs().max() < 1e-5                            # the posterior's mode
    with pytest.warns(UserWarning, match="MCMC convergence problems"):  # 40 draws: low ESS
        post = birl.infer(None, prefs, model, method="nuts", num_samples=40, warmup=40,
                          num_chains=1, progress=False)
    assert post.samples["theta"].shape == (40, 2) and post.log_lik.shape == (1, 40, 25)
    assert post.method == "nuts" and "seconds" in post.settings


def test_without_an_mdp_the_target_takes_the_datas_dtype():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        prefs = Preferences.from_pairs([[0, 1]], features=torch.randn(2, 2, dtype=torch.float64))
        target = PreferenceModel(birl.LinearReward(torch.eye(2))).build_target(None, prefs)
        assert target.dtype == torch.float64 and target.X.dtype == torch.float64
        assert target.init_unconstrained()["theta"].dtype == torch.float64
    finally:
        torch.set_default_dtype(old)


def test_feature_sums_need_a_linear_reward_of_their_dimension():
    prefs = _feature_prefs(d=2)
    with pytest.raises(ValueError, match="feature sums, which give returns only for a reward "
                                         "linear"):
        PreferenceModel(birl.NeuralReward(torch.randn(3, 2), hidden=(4,))).build_target(
            None, prefs)
    with pytest.raises(ValueError, match="feature sums with d=2 but the reward model's site"):
        PreferenceModel(birl.LinearReward(torch.eye(3))).build_target(None, prefs)
