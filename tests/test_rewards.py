"""Tests of bayesirl.model.rewards: shapes over batch dims, priors, Pyro sites, prior validation."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch.distributions import biject_to

from bayesirl.model.rewards import GPReward, LinearReward, NeuralReward, TabularReward, is_improper
from bayesirl.testing import tiny_chain_mdp

BATCH_SHAPES = [(), (5,), (2, 4)]
S, A = 3, 2


def state_features(d=2):
    return torch.tensor([[1.0, 0.0, 0.3], [0.0, 1.0, -0.2], [0.5, -0.5, 0.1]])[:, :d]


def models():
    """``(id, model, reward event shape)`` for every reward model kind."""
    coords = torch.tensor([[0.0], [1.0], [2.0]])
    return [
        ("linear-state", LinearReward(state_features()), (S,)),
        ("linear-state-action", LinearReward(torch.randn(S, A, 3,
                                                         generator=torch.Generator().manual_seed(0),
                                                         dtype=torch.float64)), (S, A)),
        ("linear-laplace", LinearReward(state_features(), prior=dist.Laplace(0.0, 0.5)), (S,)),
        ("tabular-state", TabularReward(S), (S,)),
        ("tabular-state-action", TabularReward(S, A), (S, A)),
        ("gp-fixed", GPReward(coords, lengthscale=1.5, variance=2.0), (S,)),
        ("gp-hyperpriors", GPReward(coords, lengthscale=dist.LogNormal(0.0, 0.5),
                                    variance=dist.Gamma(2.0, 2.0)), (S,)),
        ("neural", NeuralReward(state_features(), hidden=(4, 3)), (S,)),
    ]


MODEL_IDS = [m[0] for m in models()]


def get_model(name):
    return {m[0]: m[1:] for m in models()}[name]


def sample_params(model, batch):
    g = torch.Generator().manual_seed(1)
    out = {}
    for name, prior in model.priors().items():
        shape = tuple(prior.batch_shape + prior.event_shape)
        u = torch.randn(batch + shape, generator=g, dtype=torch.float64)
        out[name] = biject_to(prior.support)(u)
    return out


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("batch", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("name", MODEL_IDS)
def test_reward_shape_over_batch_dims(name, batch):
    model, event = get_model(name)
    params = sample_params(model, batch)
    r = model.reward(params)
    assert r.shape == batch + event
    assert torch.isfinite(r).all()


@pytest.mark.parametrize("name", MODEL_IDS)
def test_batched_reward_equals_loop_over_draws(name):
    """The batched map is the per-draw map, draw by draw."""
    model, _ = get_model(name)
    params = sample_params(model, (2, 4))
    r = model.reward(params)
    for i in range(2):
        for j in range(4):
            one = model.reward({k: v[i, j] for k, v in params.items()})
            torch.testing.assert_close(r[i, j], one)


def test_linear_reward_is_features_dot_theta():
    phi = state_features()
    theta = torch.tensor([0.7, -1.3])
    r = LinearReward(phi).reward({"theta": theta})
    torch.testing.assert_close(r, torch.stack([phi[s] @ theta for s in range(S)]))
    phi_sa = torch.randn(S, A, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = LinearReward(phi_sa).reward({"theta": theta})
    expect = torch.tensor([[float(phi_sa[s, a] @ theta) for a in range(A)] for s in range(S)])
    torch.testing.assert_close(r, expect)


def test_gp_reward_covariance_matches_kernel():
    """r = L z with z ~ N(0, I): Cov(r) = K + jitter I, computed by the map on the identity."""
    x = torch.tensor([[0.0], [1.0], [3.0]])
    model = GPReward(x, lengthscale=1.5, variance=2.0, jitter=1e-6)
    L = model.reward({"z": torch.eye(S)}).T  # columns: L e_i
    K = torch.tensor([[2.0 * math.exp(-0.5 * (float(x[i] - x[j]) / 1.5) ** 2)
                       for j in range(S)] for i in range(S)]) + 1e-6 * torch.eye(S)
    torch.testing.assert_close(L @ L.T, K)


def test_gp_hyperparameters_batch_with_z():
    """A batch of lengthscales gives a batch of kernels: each draw uses its own."""
    x = torch.tensor([[0.0], [1.0], [3.0]])
    model = GPReward(x, lengthscale=dist.LogNormal(0.0, 0.5), variance=dist.Gamma(2.0, 2.0))
    z = torch.randn(4, S, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ls = torch.tensor([0.5, 1.0, 2.0, 4.0])
    var = torch.tensor([1.0, 0.5, 2.0, 1.5])
    r = model.reward({"z": z, "lengthscale": ls, "variance": var})
    for i in range(4):
        fixed = GPReward(x, lengthscale=float(ls[i]), variance=float(var[i]))
        torch.testing.assert_close(r[i], fixed.reward({"z": z[i]}))


def test_gp_fixed_hyperparameters_factor_once_per_dtype():
    """Fixed hyperparameters: the Cholesky factor is cached (never recomputed per call), cast to
    the dtype of z; with a hyperprior every call factors its own draw's kernel."""
    x = torch.tensor([[0.0], [1.0], [3.0]])
    model = GPReward(x, lengthscale=1.5, variance=2.0)
    want = model.reward({"z": torch.eye(S, dtype=torch.float64)})

    def fail(*args):
        raise AssertionError("refactored the fixed kernel")
    model._chol = fail
    for dtype in (torch.float64, torch.float32, torch.float64):
        z = torch.eye(S, dtype=dtype)
        r = model.reward({"z": z})
        assert r.dtype == dtype
        torch.testing.assert_close(r, want.to(dtype))
    assert set(model._cast) == {(torch.float64, z.device), (torch.float32, z.device)}
    # overriding a hyperparameter in params bypasses the cache
    with pytest.raises(AssertionError, match="refactored"):
        model.reward({"z": z, "lengthscale": torch.tensor(0.5, dtype=torch.float64)})
    sampled = GPReward(x, lengthscale=dist.LogNormal(0.0, 0.5), variance=2.0)
    z = torch.ones(S, dtype=torch.float64)
    a, b = (sampled.reward({"z": z, "lengthscale": torch.tensor(v, dtype=torch.float64)})
            for v in (0.5, 3.0))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, GPReward(x, lengthscale=3.0, variance=2.0).reward({"z": z}))


def test_gp_predict_is_the_conditional_mean():
    """predict = K(x_new, x) (K + jitter I)^-1 L z, batched over draws and hyperparameters."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.5], [3.0, -1.0]], dtype=torch.float64)
    x_new = torch.tensor([[0.5, 0.0], [2.0, 2.0], [10.0, 10.0], [1.0, 0.5]], dtype=torch.float64)
    z = torch.randn(5, S, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def kernel(a, b, ls, var):
        return var * torch.exp(-0.5 * torch.cdist(a, b).pow(2) / ls**2)

    model = GPReward(x, lengthscale=1.5, variance=2.0, jitter=1e-4)
    K = kernel(x, x, 1.5, 2.0) + 1e-4 * torch.eye(S, dtype=torch.float64)
    f = model.reward({"z": z})                                            # (5, S) = L z
    want = (kernel(x_new, x, 1.5, 2.0) @ torch.linalg.solve(K, f.T)).T
    got = model.predict({"z": z}, x_new)
    assert got.shape == (5, 4)
    torch.testing.assert_close(got, want)
    assert float(got[:, 2].abs().max()) < 1e-10            # far from the data: the prior mean
    torch.testing.assert_close(got[:, 3], f[:, 1], atol=1e-3, rtol=0)   # a training input
    torch.testing.assert_close(model.predict({"z": z[0]}, x_new), got[0])
    # hyperparameters per draw, as in a posterior with hyperpriors
    hyper = GPReward(x, lengthscale=dist.LogNormal(0.0, 0.5), variance=dist.Gamma(2.0, 2.0),
                     jitter=1e-4)
    ls = torch.tensor([0.5, 1.0, 2.0, 4.0, 1.5], dtype=torch.float64)
    var = torch.tensor([1.0, 0.5, 2.0, 1.5, 2.0], dtype=torch.float64)
    got = hyper.predict({"z": z, "lengthscale": ls, "variance": var}, x_new)
    for i in range(5):
        fixed = GPReward(x, lengthscale=float(ls[i]), variance=float(var[i]), jitter=1e-4)
        torch.testing.assert_close(got[i], fixed.predict({"z": z[i]}, x_new))
    with pytest.raises(ValueError, match=r"new_coords must have shape \(S_new, 2\)"):
        model.predict({"z": z}, torch.zeros(4, 3))


@pytest.mark.parametrize("coords,jitter,match", [
    ([[0.0], [1.0], [2.0]], -1.0, "jitter is -1.0, expected a finite number >= 0"),
    ([[0.0], [1.0], [2.0]], float("inf"), "jitter is inf"),
    ([[0.0], [1.0], [2.0]], "1e-6", "jitter is '1e-6'"),
    ([[0.0], [1.0], [0.0]], 0.0, "jitter is 0.0 but coords rows 0 and 2 are equal"),
    ([[0.0], [1e-9], [2.0]], 0, "jitter is 0.0, too small: K \\+ jitter I is not positive"),
])
def test_gp_bad_jitter(coords, jitter, match):
    with pytest.raises(ValueError, match=match):
        GPReward(torch.tensor(coords), jitter=jitter)


def test_gp_jitter_zero_with_distinct_coords():
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    L = GPReward(x, jitter=0.0).reward({"z": torch.eye(S, dtype=torch.float64)}).T
    torch.testing.assert_close(L @ L.T, torch.exp(-0.5 * torch.cdist(x, x).pow(2)))


def test_neural_reward_shapes_and_sites():
    model = NeuralReward(state_features(), hidden=(4, 3))
    pri = model.priors()
    assert list(pri) == ["w0", "b0", "w1", "b1", "w2", "b2"]
    shapes = {k: tuple(p.event_shape) for k, p in pri.items()}
    assert shapes == {"w0": (2, 4), "b0": (4,), "w1": (4, 3), "b1": (3,), "w2": (3, 1),
                      "b2": (1,)}
    assert model.dims["w1"] == ("w1_in", "w1_out")
    # prior scale prior_scale / sqrt(fan_in) on weights
    assert float(pri["w1"].base_dist.scale.reshape(-1)[0]) == pytest.approx(1 / math.sqrt(4))
    # a hand-written forward pass
    params = sample_params(model, ())
    h = torch.tanh(state_features() @ params["w0"] + params["b0"])
    h = torch.tanh(h @ params["w1"] + params["b1"])
    torch.testing.assert_close(model.reward(params), (h @ params["w2"] + params["b2"])[:, 0])


# ---------------------------------------------------------------------------- priors and Pyro
@pytest.mark.parametrize("name", MODEL_IDS)
def test_priors_are_distributions_with_full_event_shape(name):
    model, _ = get_model(name)
    for site, prior in model.priors().items():
        assert isinstance(prior, TorchDistributionMixin)
        assert prior.batch_shape == ()
        assert site in model.dims
        assert len(model.dims[site]) == len(prior.event_shape)


@pytest.mark.parametrize("name", MODEL_IDS)
def test_call_inside_pyro_samples_named_sites(name):
    model, event = get_model(name)
    tr = pyro.poutine.trace(model).get_trace()
    sites = {k: v for k, v in tr.nodes.items() if v["type"] == "sample"}
    assert set(sites) == set(model.priors())
    for k, prior in model.priors().items():
        assert sites[k]["value"].shape == prior.event_shape
        assert not sites[k]["is_observed"]
    params = {k: v["value"] for k, v in sites.items()}
    torch.testing.assert_close(tr.nodes["_RETURN"]["value"], model.reward(params))
    # the trace's density is the sum of the independent priors
    expect = sum(p.log_prob(params[k]) for k, p in model.priors().items())
    torch.testing.assert_close(tr.log_prob_sum(), expect)


def test_linear_prior_batch_shape_d_and_laplace():
    scales = torch.tensor([0.5, 2.0])
    model = LinearReward(state_features(), prior=dist.Normal(0.0, scales))
    theta = torch.tensor([0.3, -1.0])
    expect = dist.Normal(0.0, scales).log_prob(theta).sum()
    torch.testing.assert_close(model.priors()["theta"].log_prob(theta), expect)


def test_plain_torch_distribution_is_wrapped():
    model = LinearReward(state_features(), prior=torch.distributions.Normal(0.0, 2.0))
    prior = model.priors()["theta"]
    assert isinstance(prior, TorchDistributionMixin)
    theta = torch.tensor([0.3, -1.0])
    torch.testing.assert_close(prior.log_prob(theta),
                               torch.distributions.Normal(0.0, 2.0).log_prob(theta).sum())


@pytest.mark.parametrize("make", [
    lambda td: td.HalfNormal(1.5), lambda td: td.LogNormal(0.2, 0.7),
    lambda td: td.HalfCauchy(1.0), lambda td: td.Gamma(2.0, 3.0),
    lambda td: td.Uniform(-1.0, 2.0), lambda td: td.Laplace(0.0, torch.tensor([1.0, 2.0])),
], ids=["HalfNormal", "LogNormal", "HalfCauchy", "Gamma", "Uniform", "Laplace"])
def test_plain_torch_distributions_transformed_ones_included_become_pyros(make):
    torch_prior = make(torch.distributions)
    model = LinearReward(state_features(), prior=torch_prior)
    prior = model.priors()["theta"]
    assert isinstance(prior, TorchDistributionMixin)
    torch.manual_seed(0)
    theta = torch_prior.expand((2,)).sample()
    torch.testing.assert_close(prior.log_prob(theta), torch_prior.log_prob(theta).sum())
    trace = pyro.poutine.trace(lambda: pyro.sample("theta", prior)).get_trace()
    assert trace.nodes["theta"]["value"].shape == (2,)


def test_a_plain_torch_distribution_without_a_pyro_counterpart_is_a_type_error():
    class Odd(torch.distributions.Normal):
        pass

    with pytest.raises(TypeError, match="prior is a plain torch Odd with no Pyro counterpart; "
                                        "pass prior as a pyro.distributions"):
        LinearReward(state_features(), prior=Odd(0.0, 1.0))


def test_a_plain_torch_rationality_prior_runs_with_svi():
    import bayesirl as birl
    from bayesirl.testing import simulate_demos

    mdp = tiny_chain_mdp(horizon=4)
    demos = simulate_demos(mdp, mdp.reward, 10, seed=0)
    model = LinearReward(mdp.features, prior=torch.distributions.Normal(0.0, 1.0))
    post = birl.infer(mdp, demos, model, method="svi", steps=20, num_samples=10,
                      rationality=torch.distributions.LogNormal(0.0, 1.0), progress=False)
    assert post.samples["rationality"].shape == (10,)
    assert (post.samples["rationality"] > 0).all()


def test_gp_hyperprior_sites_sampled():
    model, _ = get_model("gp-hyperpriors")
    tr = pyro.poutine.trace(model).get_trace()
    assert {"z", "lengthscale", "variance"} <= set(tr.nodes)
    assert tr.nodes["lengthscale"]["value"] > 0


# ---------------------------------------------------------------------------- validation
BAD_PRIORS = [
    ("not-a-distribution", 1.0, TypeError, "prior must be a torch distribution"),
    ("nan-scale", dist.Normal(torch.tensor(0.0), torch.tensor(float("nan")),
                              validate_args=False), ValueError, r"prior.scale is \[?nan"),
    ("inf-loc", dist.Normal(torch.tensor(float("inf")), torch.tensor(1.0),
                            validate_args=False), ValueError, r"prior.loc is \[?inf"),
    ("wrong-batch", dist.Normal(torch.zeros(5), 1.0), ValueError,
     r"batch_shape \(5,\), expected \(\) or \(2,\)"),
    ("multivariate", dist.MultivariateNormal(torch.zeros(2), torch.eye(2)), ValueError,
     r"event_shape \(2,\)"),
]


@pytest.mark.parametrize("prior,exc,match", [b[1:] for b in BAD_PRIORS],
                         ids=[b[0] for b in BAD_PRIORS])
def test_bad_prior_raises(prior, exc, match):
    with pytest.raises(exc, match=match):
        LinearReward(state_features(), prior=prior)


def test_bad_prior_tabular_batch():
    with pytest.raises(ValueError, match=r"batch_shape \(4,\), expected \(\) or \(3, 2\)"):
        TabularReward(3, 2, prior=dist.Normal(torch.zeros(4), 1.0))


@pytest.mark.parametrize("kwargs,match", [
    ({"n_states": 0}, "n_states is 0"),
    ({"n_states": 3, "n_actions": 0}, "n_actions is 0"),
    ({"n_states": 2.5}, "n_states must be an integer, got 2.5"),
    ({"n_states": True}, "n_states must be an integer, got True"),
])
def test_tabular_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TabularReward(**kwargs)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"lengthscale": -1.0}, ValueError, "lengthscale is -1.0"),
    ({"variance": float("nan")}, ValueError, "variance is nan"),
    ({"lengthscale": dist.Normal(0.0, 1.0)}, ValueError, "lengthscale prior must have positive"),
    ({"coords": torch.zeros(3)}, ValueError, r"coords must have shape \(S, d\)"),
])
def test_gp_bad_arguments(kwargs, exc, match):
    args = {"coords": torch.tensor([[0.0], [1.0], [2.0]]), **kwargs}
    with pytest.raises(exc, match=match):
        GPReward(**args)


@pytest.mark.parametrize("kwargs,match", [
    ({"prior_scale": 0.0}, "prior_scale is 0.0"),
    ({"hidden": (4, 0)}, "hidden is"),
    ({"features": torch.zeros(3, 2, 2)}, "NeuralReward takes state features"),
])
def test_neural_bad_arguments(kwargs, match):
    args = {"features": state_features(), **kwargs}
    with pytest.raises(ValueError, match=match):
        NeuralReward(**args)


def test_bad_features():
    with pytest.raises(ValueError, match="features contains non-finite"):
        LinearReward(torch.tensor([[1.0], [float("nan")], [0.0]]))
    with pytest.raises(ValueError, match=r"features must have shape \(S, d\) or \(S, A, d\)"):
        LinearReward(torch.zeros(3))
    with pytest.raises(ValueError, match="feature_names has 1 names, expected 2"):
        LinearReward(state_features(), feature_names=["a"])


def improper():
    return dist.ImproperUniform(constraints.real, (), ())


def test_improper_prior_with_constant_feature_direction_raises():
    """phi . u constant for u = (1, 0): the likelihood cannot identify it."""
    mdp = tiny_chain_mdp()
    phi = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    model = LinearReward(phi, prior=improper())
    assert is_improper(model.priors()["theta"])
    with pytest.raises(ValueError, match=r"prior is improper.*centred rank 1 < 2"):
        model.check(mdp)
    # a hidden constant direction: columns 0 + 1 sum to a constant
    phi = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]])
    with pytest.raises(ValueError, match="prior is improper"):
        LinearReward(phi, prior=improper()).check(mdp)
    # proper prior: fine; improper with identifiable features: fine
    LinearReward(torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])).check(mdp)
    LinearReward(mdp.features, prior=improper()).check(mdp)


@pytest.mark.parametrize("model,match", [
    (LinearReward(torch.zeros(4, 2)), "features have shape"),
    (LinearReward(torch.zeros(3, 3, 2)), "features have shape"),
    (TabularReward(4), r"TabularReward has shape \(4,\), but the MDP needs \(3,\)"),
    (TabularReward(3, 3), r"but the MDP needs \(3, 2\)"),
    (GPReward(torch.zeros(4, 1)), "GPReward coords have 4 rows"),
    (NeuralReward(torch.zeros(4, 1), hidden=(2,)), "NeuralReward features have 4 rows"),
], ids=["linear-S", "linear-A", "tabular-S", "tabular-A", "gp", "neural"])
def test_check_rejects_mismatched_mdp(model, match):
    with pytest.raises(ValueError, match=match):
        model.check(tiny_chain_mdp())


def test_coords_default_names():
    assert LinearReward(state_features()).coords() == {"feature": ["f0", "f1"]}
    assert LinearReward(state_features(), feature_names=["x", "y"]).coords() == {
        "feature": ["x", "y"]}


def test_coords_default_to_the_mdp_feature_names():
    """LinearReward's docstring: feature names default to the MDP's (for the MDP's features)."""
    mdp = tiny_chain_mdp()
    assert LinearReward(mdp.features).coords(mdp) == {"feature": ["phi0", "phi1"]}
    assert LinearReward(mdp.features, feature_names=["x", "y"]).coords(mdp) == {
        "feature": ["x", "y"]}
    other = LinearReward(mdp.features + 1.0)  # not the MDP's features: generic names
    assert other.coords(mdp) == {"feature": ["f0", "f1"]}
