"""Hierarchical reward models: demonstrations keyed by expert, the batched likelihood against a
loop over experts, the non-centred map, the three poolings, the posterior with an expert dim,
LOO comparison, and (slow) simulation-based calibration."""

import math
import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
from bayesirl.core.experts import ExpertDemonstrations
from bayesirl.model.hierarchical import (
    HierarchicalReward,
    expert_log_likelihood,
    loo_compare,
    simulate_experts,
)
from bayesirl.posterior.diagnostics import InferenceWarning
from bayesirl.posterior.hierarchical import HierarchicalPosterior
from bayesirl.testing import tiny_chain_mdp


def _data(mdp, E=3, n=4, seed=0, scale=0.5, rationality=1.0):
    return simulate_experts(mdp, mdp.features, n, mean=torch.tensor([1.0, -0.5]), scale=scale,
                            n_experts=E, rationality=rationality, seed=seed)


def _fit(mdp, data, model, num_samples=100, warmup=100, chains=8, seed=0):
    """infer()'s many chains in lockstep (short runs may warn about their ESS)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        return birl.infer(mdp, data, model, method="hmc", chain_method="vectorized",
                          num_samples=num_samples, warmup=warmup, num_chains=chains, seed=seed,
                          progress=False)


# ---------------------------------------------------------------------------- the data type
def test_expert_demonstrations_key_each_trajectory_by_its_expert():
    mdp = tiny_chain_mdp(horizon=3)
    plan = birl.soft_value_iteration(mdp, mdp.reward)
    a, b = birl.rollouts(mdp, plan, n=2, seed=0), birl.rollouts(mdp, plan, n=3, seed=1)
    data = ExpertDemonstrations.from_groups([a, b], expert_names=["ann", "bob"])
    assert data.n == 5 and data.counts.tolist() == [2, 3] and data.names == ["ann", "bob"]
    assert torch.equal(data.of(1).states, b.states)
    more = ExpertDemonstrations(data.demos, data.expert, n_experts=4)
    assert more.counts.tolist() == [2, 3, 0, 0]
    with pytest.raises(ValueError, match="expert 2 has no demonstrations"):
        more.of(2)
    with pytest.raises(ValueError, match=r"expert\[2\] is 1, expected an index in \[0, "
                                         r"n_experts=1\)"):
        ExpertDemonstrations(data.demos, data.expert, n_experts=1)
    with pytest.raises(ValueError, match=r"expert must have shape \(5,\)"):
        ExpertDemonstrations(data.demos, [0, 1])
    with pytest.raises(ValueError, match="expert_names has 1 names, expected 2"):
        ExpertDemonstrations(data.demos, data.expert, expert_names=["x"])


@pytest.mark.parametrize("index", [4, np.int64(4), torch.tensor(4), -1, np.int32(-1)])
def test_expert_demonstrations_take_one_index_as_demonstrations_do(index):
    """One index, as an int, NumPy integer or 0-d tensor, picks one demonstration and its
    expert (NumPy and tensor scalars were refused: "expert must have shape (1,) ..., got ()")."""
    mdp = tiny_chain_mdp(horizon=3)
    plan = birl.soft_value_iteration(mdp, mdp.reward)
    a, b = birl.rollouts(mdp, plan, n=3, seed=0), birl.rollouts(mdp, plan, n=2, seed=1)
    data = ExpertDemonstrations.from_groups([a, b])
    one = data[index]
    assert one.n == 1 and one.expert.tolist() == [1] and one.counts.tolist() == [0, 1]
    assert torch.equal(one.demos.states, data.demos[index].states)
    assert torch.equal(one.demos.states, b.states[1:])
    with pytest.raises(IndexError, match="demonstration 5 out of range for 5"):
        data[np.int64(5)]


@pytest.mark.parametrize("kwargs, match", [
    ({"rationality": -1.0}, "rationality must be > 0, got -1.0"),
    ({"rationality": torch.ones(3)}, r"rationality must be a number or have shape \(2,\) "
                                     r"\(one per expert\), got shape \(3,\)"),
    ({"mean": torch.zeros(3)}, r"mean must be a number or have shape \(2,\) \(one per "
                               r"feature\)"),
    ({"scale": float("nan")}, "scale is nan, expected a finite number"),
])
def test_simulated_experts_refuse_bad_settings_by_name(kwargs, match):
    mdp = tiny_chain_mdp(horizon=3)
    args = {"mean": 0.0, "scale": 1.0, "n_experts": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        simulate_experts(mdp, mdp.features, 2, **args)


# ---------------------------------------------------------------------------- likelihood
@pytest.mark.parametrize("time", [{"horizon": 4}, {"discount": 0.8}])
def test_batched_experts_equal_a_loop_over_experts(time):
    mdp = tiny_chain_mdp(**time)
    data, _ = _data(mdp, E=3, n=3, seed=1) if "horizon" in time else (None, None)
    if data is None:
        data, _ = simulate_experts(mdp, mdp.features, 3, mean=0.0, scale=1.0, n_experts=3,
                                   length=5, seed=1)
    reward = torch.randn(2, 3, 3, requires_grad=True)               # (draws, E, S)
    beta = torch.tensor([[0.5, 1.0, 2.0], [1.5, 1.0, 0.7]])
    ll = expert_log_likelihood(mdp, data, reward, "soft", beta)
    assert ll.shape == (2, data.n)
    (g_batched,) = torch.autograd.grad(ll.sum(), reward)
    loop = torch.zeros(2, data.n)
    r2 = reward.detach().clone().requires_grad_(True)
    for d in range(2):
        for e in range(3):
            idx = (data.expert == e).nonzero().squeeze(-1)
            loop[d, idx] = birl.model.demo_log_likelihood(mdp, data.of(e), r2[d, e], "soft",
                                                          float(beta[d, e]))
    (g_loop,) = torch.autograd.grad(loop.sum(), r2)
    torch.testing.assert_close(ll, loop)
    torch.testing.assert_close(g_batched, g_loop)


def test_non_centred_map_is_mu_plus_tau_times_z_and_its_jacobian_is_counted():
    mdp = tiny_chain_mdp(horizon=3)
    data, _ = _data(mdp)
    model = HierarchicalReward(mdp.features, 3)
    params = {"mu": torch.randn(5, 2), "tau": torch.rand(5, 2) + 0.1, "z": torch.randn(5, 3, 2)}
    theta = model.expert_theta(params)
    torch.testing.assert_close(theta, params["mu"][:, None] + params["tau"][:, None] * params["z"])
    torch.testing.assert_close(model.reward(params), theta @ mdp.features.T)
    target = model.build_target(mdp, data)
    u = {"mu": torch.randn(2), "tau": torch.randn(2), "z": torch.randn(3, 2)}
    p = target.constrain(u)
    torch.testing.assert_close(p["tau"], u["tau"].exp())
    want = -(target.log_prior(p) + target.log_likelihood(p).sum() + u["tau"].sum())
    torch.testing.assert_close(target.potential(u), want)
    torch.testing.assert_close(target.potential(u, jacobian=False), want + u["tau"].sum())
    # the prior of theta_e given mu and tau is N(mu, tau^2): the non-centred draws' moments
    z = torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0))
    draws = model.population_theta({"mu": torch.tensor([1.0, -2.0]),
                                    "tau": torch.tensor([0.5, 2.0])}, z)
    torch.testing.assert_close(draws.mean(0), torch.tensor([1.0, -2.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.tensor([0.5, 2.0]), atol=0.02, rtol=0)


def test_potential_is_batched_over_chains():
    mdp = tiny_chain_mdp(horizon=3)
    data, _ = _data(mdp)
    target = HierarchicalReward(mdp.features, 3, rationality="expert").build_target(
        mdp, data, rationality=dist.LogNormal(0.0, 0.5))
    u = {k: torch.randn(4, *v.shape) for k, v in target.init_unconstrained().items()}
    batched = target.potential(u)
    assert batched.shape == (4,)
    for c in range(4):
        torch.testing.assert_close(batched[c], target.potential({k: v[c] for k, v in u.items()}))


def test_complete_pooling_is_one_linear_reward_for_everyone():
    mdp = tiny_chain_mdp(horizon=4)
    data, _ = _data(mdp)
    target = HierarchicalReward(mdp.features, 3, pooling="complete").build_target(mdp, data)
    theta = torch.randn(6, 2)
    want = birl.model.demo_log_likelihood(mdp, data.demos, theta @ mdp.features.T)
    torch.testing.assert_close(target.log_likelihood({"theta": theta}), want)
    separate = HierarchicalReward(mdp.features, 3, pooling="none").build_target(mdp, data)
    assert separate.priors["theta"].event_shape == (3, 2)


def test_expert_rationality_is_the_median_times_a_lognormal_deviation():
    mdp = tiny_chain_mdp(horizon=3)
    model = HierarchicalReward(mdp.features, 3, rationality="expert")
    params = {"mu": torch.zeros(2, 2), "tau": torch.ones(2, 2), "z": torch.zeros(2, 3, 2),
              "rationality_scale": torch.tensor([0.5, 1.0]),
              "rationality_z": torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])}
    beta = model.expert_rationality(params, 2.0)
    want = 2.0 * torch.exp(params["rationality_scale"][:, None] * params["rationality_z"])
    torch.testing.assert_close(beta, want)
    shared = HierarchicalReward(mdp.features, 3)
    assert shared.expert_rationality(params, 2.0).shape == (2, 3)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"pooling": "some"}, ValueError, "pooling is 'some', expected one of"),
    ({"rationality": "each"}, ValueError, "rationality is 'each'"),
    ({"pooling": "none", "scale_prior": dist.HalfNormal(1.0)}, ValueError,
     "scale_prior applies to pooling='partial'"),
    ({"scale_prior": dist.Normal(0.0, 1.0)}, ValueError, "must live on the positive reals"),
    ({"scale_prior": dist.Uniform(-0.5, 2.0)}, ValueError, "must live on the positive reals"),
    ({"n_experts": 0}, ValueError, "n_experts is 0"),
])
def test_bad_model_arguments_are_named(kwargs, error, match):
    mdp = tiny_chain_mdp(horizon=3)
    args = {"n_experts": 3, **kwargs}
    with pytest.raises(error, match=match):
        HierarchicalReward(mdp.features, **args)


def test_data_must_match_the_model():
    mdp = tiny_chain_mdp(horizon=3)
    data, _ = _data(mdp, E=2)
    with pytest.raises(ValueError, match="data has n_experts=2 but the model has n_experts=3"):
        HierarchicalReward(mdp.features, 3).build_target(mdp, data)
    with pytest.raises(TypeError, match="data must be ExpertDemonstrations"):
        HierarchicalReward(mdp.features, 2).build_target(mdp, data.demos)


# ---------------------------------------------------------------------------- the posterior
def test_posterior_has_population_individuals_and_an_expert_dim_in_arviz():
    mdp = tiny_chain_mdp(horizon=4)
    data, _ = _data(mdp, E=3, n=3)
    model = HierarchicalReward(mdp.features, 3, expert_names=["a", "b", "c"])
    post = _fit(mdp, data, model, num_samples=15, warmup=30, chains=8)
    assert isinstance(post, HierarchicalPosterior)
    assert post.theta.shape == (120, 3, 2) and post.reward().shape == (120, 3, 3, 2)
    assert post.log_lik.shape == (8, 15, data.n)
    assert set(post.population()) == {"mu", "tau"}
    idata = post.to_arviz()
    assert list(idata.posterior["theta"].dims) == ["chain", "draw", "expert", "feature"]
    assert list(idata.posterior["expert"].values) == ["a", "b", "c"]
    assert list(idata.posterior["reward"].dims) == ["chain", "draw", "expert", "state",
                                                    "action"]
    assert list(idata.log_likelihood["actions"].dims) == ["chain", "draw", "demo"]
    assert idata.observed_data["expert"].values.tolist() == data.expert.tolist()
    one = post.expert(1)
    assert one.reward().shape == (120, 3, 2) and one.rationality.shape == (120,)
    torch.testing.assert_close(one.samples["theta"], post.theta[:, 1])


def test_predictive_theta_of_a_new_member_is_mu_plus_tau_z():
    mdp = tiny_chain_mdp(horizon=3)
    data, _ = _data(mdp)
    target = HierarchicalReward(mdp.features, 3).build_target(mdp, data)
    D = 4
    params = {"mu": torch.randn(D, 2), "tau": torch.zeros(D, 2), "z": torch.randn(D, 3, 2)}
    post = target.make_posterior(params, method="draws")
    torch.testing.assert_close(post.predictive_theta(n=3), params["mu"].repeat_interleave(3, 0))
    params["tau"] = torch.full((D, 2), 2.0)
    post = target.make_posterior(params, method="draws")
    new = post.predictive_theta(n=5000, seed=1).reshape(D, 5000, 2)
    torch.testing.assert_close(new.std(1), torch.full((D, 2), 2.0), atol=0.1, rtol=0)
    assert post.predictive_reward(n=2).shape == (2 * D, 3, 2)
    separate = HierarchicalReward(mdp.features, 3, pooling="none").build_target(mdp, data)
    post = separate.make_posterior({"theta": torch.randn(D, 3, 2)}, method="draws")
    with pytest.raises(ValueError, match="has no population"):
        post.predictive_theta()


def test_feature_coords_take_the_mdps_names_only_for_the_mdps_own_features():
    """The MDP's feature names label the model's features only when they are the MDP's
    features (as LinearReward's do): other features of the same shape (here its columns
    swapped) once took them on shape alone, naming each weight after the other feature."""
    mdp = tiny_chain_mdp(horizon=3)
    assert mdp.feature_names == ("phi0", "phi1")
    own = HierarchicalReward(mdp.features, 2)
    assert own.coords(mdp) == {"feature": ["phi0", "phi1"], "expert": ["e0", "e1"]}
    swapped = HierarchicalReward(mdp.features[:, [1, 0]], 2)
    assert swapped.coords(mdp)["feature"] == ["f0", "f1"]
    named = HierarchicalReward(mdp.features[:, [1, 0]], 2, feature_names=["b", "a"])
    assert named.coords(mdp)["feature"] == ["b", "a"]


def test_loo_compares_pooled_separate_and_hierarchical_fits_of_the_same_data():
    mdp = tiny_chain_mdp(horizon=4)
    data, _ = _data(mdp, E=3, n=4)
    posts = {p: _fit(mdp, data, HierarchicalReward(mdp.features, 3, pooling=p),
                     num_samples=50, warmup=100, chains=8)
             for p in ("complete", "none", "partial")}
    with warnings.catch_warnings():  # few draws: PSIS may warn about its Pareto k
        warnings.simplefilter("ignore", UserWarning)
        table = loo_compare(posts)
    assert set(table.index) == {"complete", "none", "partial"}
    assert np.isfinite(table["elpd_loo"]).all()
    with pytest.raises(ValueError, match="at least two"):
        loo_compare({"a": posts["none"]})


def test_loo_compare_names_a_posterior_without_pointwise_demonstration_terms():
    """A preference posterior without log_lik (not computed for very many draws) once failed
    with AttributeError on None, one fitted to preferences alone with a TypeError from inside
    ArviZ; both are a ValueError naming the posterior."""
    from bayesirl.core.preferences import Preferences
    from bayesirl.model.preferences import PreferenceModel

    g = torch.Generator().manual_seed(0)
    prefs = Preferences.from_pairs(torch.tensor([[0, 1], [2, 1], [3, 0]]),
                                   features=torch.randn(4, 2, generator=g))
    target = PreferenceModel(birl.LinearReward(torch.eye(2))).build_target(None, prefs)
    theta = torch.randn(40, 2, generator=g)
    pairs_only = target.make_posterior({"theta": theta}, method="draws", num_chains=2)
    assert pairs_only.log_lik.shape == (2, 20, 3)
    without = target.posterior_class(target, pairs_only.params, None, "draws")
    mdp = tiny_chain_mdp(horizon=3)
    data, _ = _data(mdp, E=2, n=3)
    model = HierarchicalReward(mdp.features, 2, pooling="complete")
    fit = model.build_target(mdp, data).make_posterior({"theta": theta}, method="draws",
                                                       num_chains=2)
    with pytest.raises(ValueError, match=r"posterior 'prefs' \(PreferencePosterior\) has no "
                                         r"pointwise log-likelihood \(log_lik is None\)"):
        loo_compare({"pooled": fit, "prefs": without})
    with pytest.raises(ValueError, match=r"posterior 'prefs' \(PreferencePosterior\) has no "
                                         r"pointwise log-likelihood of demonstrations "
                                         r"\('actions'; its terms: \['preference'\]\)"):
        loo_compare({"pooled": fit, "prefs": pairs_only})


# ---------------------------------------------------------------------------- calibration
@pytest.mark.slow
def test_sbc_of_the_hierarchical_model_population_and_one_expert():
    """Simulation-based calibration (Talts et al. 2018): 120 data sets from the prior, each
    fitted by infer()'s vectorized chains (8 x (200 + 100)); the ranks of the true mu[0],
    tau[0] and theta[expert 0, 0] among 99 thinned draws must be uniform (chi-square,
    Bonferroni over the three at alpha = 0.001)."""
    from bayesirl.sbc import rank_uniformity

    mdp = tiny_chain_mdp(horizon=3)
    E, n_demos, n_sims, L = 3, 4, 120, 99
    model = HierarchicalReward(mdp.features, E, scale_prior=dist.HalfNormal(1.0))
    g = torch.Generator().manual_seed(2024)
    ranks = []
    for sim in range(n_sims):
        truth = {"mu": torch.randn(2, generator=g),
                 "tau": torch.randn(2, generator=g).abs(),
                 "z": torch.randn(E, 2, generator=g)}
        theta = model.expert_theta(truth)
        reward = theta @ mdp.features.T
        with torch.no_grad():
            pi = birl.soft_value_iteration(mdp, reward).log_policy.exp()
        groups = [birl.rollouts(mdp, pi[e], n_demos, seed=sim * 10 + e) for e in range(E)]
        data = ExpertDemonstrations.from_groups(groups)
        p = _fit(mdp, data, model, num_samples=100, warmup=200, chains=8, seed=sim).params
        draws = {"mu": p["mu"][..., 0], "tau": p["tau"][..., 0],
                 "theta": model.expert_theta(p)[..., 0, 0]}
        values = {"mu": truth["mu"][0], "tau": truth["tau"][0], "theta": theta[0, 0]}
        row = []
        for k in ("mu", "tau", "theta"):
            kept = draws[k].reshape(-1)[torch.linspace(0, 799, L).round().long()]
            row.append(int((kept < values[k]).sum()))
        ranks.append(row)
    p_values, _, _ = rank_uniformity(np.array(ranks), L)
    assert (p_values > 0.001 / 3).all(), p_values
    assert math.isfinite(float(p_values.min()))


def test_infer_takes_a_hierarchical_model():
    mdp = tiny_chain_mdp(horizon=3)
    data, _ = _data(mdp, E=2, n=3)
    model = HierarchicalReward(mdp.features, 2)
    # the joint mode of a hierarchy collapses tau[1] to 0, the edge of its HalfNormal's support
    with pytest.warns(InferenceWarning, match="edge of the prior's support along tau"):
        fit = birl.infer(mdp, data, model, method="map", progress=False)
    assert isinstance(fit, HierarchicalPosterior)
    assert fit.theta.shape == (1, 2, 2) and fit.log_lik.shape == (1, 1, data.n)
    with pytest.warns(UserWarning, match="MCMC convergence problems"):  # 20 draws
        post = birl.infer(mdp, data, model, method="nuts", num_samples=20, warmup=20,
                          num_chains=1, progress=False)
    assert post.params["z"].shape == (1, 20, 2, 2)


def test_rewards_that_overflow_get_minus_infinity_without_planning():
    mdp = tiny_chain_mdp(discount=0.9)
    data, _ = simulate_experts(mdp, mdp.features, 2, mean=0.0, scale=1.0, n_experts=2,
                               length=4, seed=0)
    target = HierarchicalReward(mdp.features, 2).build_target(mdp, data)
    params = {"mu": torch.tensor([[0.5, -0.5], [1e20, 0.0], [math.nan, 0.0]]),
              "tau": torch.ones(3, 2), "z": torch.zeros(3, 2, 2)}
    ll = target.log_likelihood(params)            # a planner would warn (an error here)
    assert torch.isfinite(ll[0]).all() and (ll[1:] == -math.inf).all()
    torch.testing.assert_close(ll[0], target.log_likelihood({k: v[0] for k, v in
                                                             params.items()}))


def test_pyro_model_has_the_targets_density_and_svi_runs_in_minibatches():
    import pyro

    mdp = tiny_chain_mdp(horizon=3)
    data, _ = _data(mdp, E=3, n=4)
    model = HierarchicalReward(mdp.features, 3)
    target = model.build_target(mdp, data)
    params = {"mu": torch.tensor([0.3, -0.2]), "tau": torch.tensor([0.5, 1.5]),
              "z": torch.randn(3, 2, generator=torch.Generator().manual_seed(0))}
    trace = pyro.poutine.trace(pyro.poutine.condition(target.pyro_model(), params)).get_trace()
    torch.testing.assert_close(trace.log_prob_sum(),
                               -target.potential(target.unconstrain(params), jacobian=False))
    post = birl.infer(mdp, data, model, method="svi", steps=50, num_samples=20,
                      subsample_size=6, progress=False)
    assert post.theta.shape == (20, 3, 2) and len(post.extra["elbo"]) == 50


def test_subsample_size_of_a_hierarchical_target_is_bounded_by_its_demonstrations():
    mdp = tiny_chain_mdp(horizon=3)
    data, _ = _data(mdp)
    with pytest.raises(ValueError, match=rf"subsample_size is 99, expected an integer in "
                                         rf"\[1, {data.n}\]"):
        birl.infer(mdp, data, HierarchicalReward(mdp.features, 3), method="svi", steps=2,
                   subsample_size=99, progress=False)
