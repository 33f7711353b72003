"""Standard errors after MAP and the Laplace approximation (bayesirl.inference.map): on a
conjugate model through infer()'s extension point (a model with build_target and no MDP) they
are the analytic posterior sds, the delta method included; on a tiny MDP with a flat prior the
MAP is the MLE that SciPy finds and the standard errors are those of the finite-difference
Hessian of the log-likelihood; a Hessian that is not positive definite is named by coordinate."""

import math
import re
import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import scipy.optimize
import torch

import bayesirl as birl
from bayesirl.inference.map import coordinate_names
from bayesirl.model.likelihood import demo_log_likelihood
from bayesirl.posterior.diagnostics import InferenceWarning
from bayesirl.testing import simulate_demos, tiny_chain_mdp

# ---------------------------------------------------------------------------- a conjugate model
Y = torch.tensor([0.3, -1.2, 2.0, 0.7, 1.1], dtype=torch.float64)   # Normal(mu, SIGMA) data
COUNTS = torch.tensor([3.0, 5.0, 2.0, 4.0], dtype=torch.float64)  # Poisson(rate) data
SIGMA, M0, TAU = 0.8, 0.5, 2.0         # mu ~ Normal(M0, TAU)
A0, B0 = 2.0, 1.0                      # rate ~ Gamma(A0, B0)


class Posterior:
    """The least a target's posterior needs for infer(): draws, extra, incomplete."""

    def __init__(self, params, method, settings, num_chains):
        self.params, self.method, self.settings = params, method, settings
        self.num_chains, self.extra, self.incomplete = num_chains, {}, False

    def check_convergence(self, strict=False):
        return []


class ConjugateTarget:
    """mu with a Normal prior and Normal data; rate > 0 with a Gamma prior and Poisson counts
    (unconstrained log rate); ``free``, when asked for, an improper site the data never see."""

    def __init__(self, free=False):
        self.free = free

    def init_unconstrained(self):
        u = {"mu": torch.zeros((), dtype=torch.float64),
             "rate": torch.zeros((), dtype=torch.float64)}
        if self.free:
            u["free"] = torch.zeros(2, dtype=torch.float64)
        return u

    def constrain(self, u):
        return {**u, "rate": u["rate"].exp()}

    def log_likelihood(self, params):
        mu, rate = params["mu"][..., None], params["rate"][..., None]
        return torch.cat([dist.Normal(mu, SIGMA).log_prob(Y),
                          dist.Poisson(rate).log_prob(COUNTS)], -1)

    def potential(self, u, jacobian=True):
        params = self.constrain(u)
        logp = (dist.Normal(M0, TAU).log_prob(params["mu"])
                + dist.Gamma(A0, B0).log_prob(params["rate"])
                + self.log_likelihood(params).sum(-1))
        return -(logp + u["rate"] if jacobian else logp)

    def make_posterior(self, params, *, method, log_lik, sample_stats, settings, num_chains):
        return Posterior(params, method, settings, num_chains)


class ConjugateModel:
    def __init__(self, free=False):
        self.free = free

    def build_target(self, mdp, data, *, likelihood, rationality):
        assert mdp is None and data is None
        return ConjugateTarget(self.free)


MU_SD = 1 / math.sqrt(1 / TAU**2 + len(Y) / SIGMA**2)
MU_MAP = MU_SD**2 * (M0 / TAU**2 + float(Y.sum()) / SIGMA**2)
ALPHA, BETA = A0 + float(COUNTS.sum()), B0 + len(COUNTS)    # the Gamma posterior
RATE_MAP = (ALPHA - 1) / BETA                                 # its mode
RATE_SE = math.sqrt(ALPHA - 1) / BETA   # delta method: rate * sd(log rate), sd = 1/sqrt(a - 1)


def test_map_standard_errors_are_the_analytic_posterior_sds():
    post = birl.infer(None, None, ConjugateModel(), method="map", progress=False)
    assert post.params["mu"].shape == (1,) and post.num_chains == 1
    np.testing.assert_allclose(float(post.params["mu"][0]), MU_MAP, rtol=1e-7)
    np.testing.assert_allclose(float(post.params["rate"][0]), RATE_MAP, rtol=1e-7)
    se = post.extra["standard_errors"]
    assert set(se) == {"mu", "rate"} and se["mu"].shape == ()
    np.testing.assert_allclose(float(se["mu"]), MU_SD, rtol=1e-9)
    np.testing.assert_allclose(float(se["rate"]), RATE_SE, rtol=1e-6)
    assert post.extra["coordinates"] == ["mu", "rate"]
    cov = post.extra["covariance"]  # unconstrained: mu and log rate, independent
    np.testing.assert_allclose(cov.numpy(), np.diag([MU_SD**2, 1 / (ALPHA - 1)]), rtol=1e-6,
                               atol=1e-12)
    assert post.settings["hessian"] == "autograd"


def test_laplace_draws_are_that_gaussian_seeded():
    n = 4000
    post = birl.infer(None, None, ConjugateModel(), method="laplace", num_samples=n, seed=3,
                      progress=False)
    again = birl.infer(None, None, ConjugateModel(), method="laplace", num_samples=n, seed=3,
                       progress=False)
    other = birl.infer(None, None, ConjugateModel(), method="laplace", num_samples=n, seed=4,
                       progress=False)
    assert torch.equal(post.params["mu"], again.params["mu"])
    assert not torch.equal(post.params["mu"], other.params["mu"])
    mu, log_rate = post.params["mu"], post.params["rate"].log()
    assert mu.shape == (n,) and bool((post.params["rate"] > 0).all())
    for x, mean, sd in ((mu, MU_MAP, MU_SD), (log_rate, math.log(RATE_MAP),
                                               1 / math.sqrt(ALPHA - 1))):
        assert abs(float(x.mean()) - mean) < 4 * sd / math.sqrt(n)
        assert abs(float(x.std()) / sd - 1) < 4 / math.sqrt(2 * n)
    np.testing.assert_allclose(float(post.extra["standard_errors"]["mu"]), MU_SD, rtol=1e-9)


def test_a_flat_direction_is_named_by_coordinate():
    """An improper site the data never see: the Hessian is singular along it. MAP keeps its
    point without standard errors and says why; Laplace has no Gaussian to draw from."""
    with pytest.warns(InferenceWarning, match=r"no standard errors at the MAP: the Hessian of "
                      r"the negative log posterior at the MAP is not positive definite \("
                      r"smallest eigenvalue .*, mostly along free\[[01]\]\)") as record:
        post = birl.infer(None, None, ConjugateModel(free=True), method="map", progress=False)
    assert [w.filename for w in record] == [__file__]  # the caller's line, not infer's insides
    assert "standard_errors" not in post.extra
    with pytest.raises(ValueError, match=r"mostly along free\[[01]\]"):
        birl.infer(None, None, ConjugateModel(free=True), method="laplace", num_samples=5,
                   progress=False)


def test_coordinate_names_index_every_site_element():
    u = {"theta": torch.zeros(2, 3), "beta": torch.zeros(()), "w": torch.zeros(2)}
    assert coordinate_names(u) == ["theta[0, 0]", "theta[0, 1]", "theta[0, 2]", "theta[1, 0]",
                                   "theta[1, 1]", "theta[1, 2]", "beta", "w[0]", "w[1]"]


# ---------------------------------------------------------------------------- an MDP, flat prior
FLAT = dist.ImproperUniform(dist.constraints.real, (), ())


@pytest.fixture
def chain():
    mdp = tiny_chain_mdp()
    return mdp, simulate_demos(mdp, mdp.reward, 40, seed=0)


def test_with_a_flat_prior_map_is_the_mle_and_its_standard_errors(chain):
    """The econometrician's numbers: the MLE (SciPy's Nelder-Mead on the log-likelihood, no
    gradients) and standard errors from the observed information (second differences of the
    log-likelihood's values, inverted)."""
    mdp, demos = chain
    post = birl.infer(mdp, demos, birl.LinearReward(mdp.features, prior=FLAT), method="map",
                      progress=False)

    def nll(theta):
        reward = mdp.features @ torch.as_tensor(theta, dtype=torch.float64)
        return -float(demo_log_likelihood(mdp, demos, reward).sum())

    mle = scipy.optimize.minimize(nll, np.zeros(2), method="Nelder-Mead",
                                  options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 4000}).x
    theta = post.params["theta"][0, 0].numpy()
    np.testing.assert_allclose(theta, mle, atol=1e-6)
    h, d = 1e-4, len(mle)
    info = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            ei, ej = np.eye(d)[i] * h, np.eye(d)[j] * h
            info[i, j] = (nll(theta + ei + ej) - nll(theta + ei - ej) - nll(theta - ei + ej)
                          + nll(theta - ei - ej)) / (4 * h * h)
    expected = np.sqrt(np.diag(np.linalg.inv(info)))
    np.testing.assert_allclose(post.extra["standard_errors"]["theta"].numpy(), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(post.extra["covariance"].numpy(), np.linalg.inv(info),
                               rtol=1e-4)
    assert post.extra["coordinates"] == ["theta[0]", "theta[1]"]
    assert post.settings["hessian"] == "finite differences of the gradient"


def test_laplace_on_an_mdp_draws_around_the_map(chain):
    mdp, demos = chain
    model = birl.LinearReward(mdp.features)
    point = birl.infer(mdp, demos, model, method="map", progress=False)
    post = birl.infer(mdp, demos, model, method="laplace", num_samples=2000, seed=1,
                      progress=False)
    theta = post.samples["theta"]
    assert theta.shape == (2000, 2) and post.method == "laplace"
    se = point.extra["standard_errors"]["theta"]
    assert torch.equal(post.extra["standard_errors"]["theta"], se)
    z = (theta.mean(0) - point.params["theta"][0, 0]) / (se / math.sqrt(2000))
    assert (z.abs() < 4).all(), z
    assert torch.isfinite(post.log_lik).all() and post.log_lik.shape == (1, 2000, demos.n)


def test_a_flat_direction_is_named_in_the_parameters_not_the_samplers_coordinates():
    """A target sampled in reparametrised coordinates (here the weights swapped, as a
    whitening mixes them): the flat direction is unconstrained ``z[1]``, which is weight
    ``w[0]``, and the message names the weight."""
    from bayesirl.inference.map import laplace

    class Swapped:
        def constrain(self, u):
            return {"w": u["z"].flip(-1)}

        def potential(self, u, jacobian=True):
            return 0.5 * u["z"][..., 0] ** 2  # nothing pins z[1]

    with pytest.raises(ValueError, match=r"in the unconstrained coordinates, mostly along "
                                         r"w\[0\]\)"):
        laplace(Swapped(), {"z": torch.zeros(2, dtype=torch.float64)})


def test_bhhh_standard_errors_are_the_scores_alone_whatever_the_prior():
    """BHHH's information is the outer product of the likelihood's scores; a proper prior's
    curvature (which the second-order target's Newton fallback adds) must not shrink them:
    at one point, a Normal(0, 0.5) prior and a flat one give the same BHHH errors, while the
    Hessian's errors differ."""
    from bayesirl.inference.map import laplace, laplace_fit
    from bayesirl.inference.target import build_target

    mdp = tiny_chain_mdp(discount=0.9)  # discounted: the exact second-order potential
    demos = simulate_demos(mdp, mdp.reward, 40, seed=0, length=8)
    proper = build_target(mdp, demos, birl.LinearReward(mdp.features,
                                                        prior=dist.Normal(0.0, 0.5)),
                          "soft", 1.0)
    flat = build_target(mdp, demos, birl.LinearReward(mdp.features, prior=FLAT), "soft", 1.0)
    fit = laplace_fit(proper)
    u = proper.unconstrain(fit.params)
    a, b = laplace(proper, u, bhhh=True), laplace(flat, u, bhhh=True)
    torch.testing.assert_close(a.standard_errors_bhhh["theta"], b.standard_errors_bhhh["theta"])
    torch.testing.assert_close(fit.opg_standard_errors["theta"], b.standard_errors_bhhh["theta"])
    assert bool((a.standard_errors["theta"] < b.standard_errors["theta"]).all())
    # a target without a transitions term: every log-likelihood term is a choice's
    assert fit.log_likelihood_transition == 0.0
    assert fit.log_likelihood_choice == fit.log_likelihood == pytest.approx(
        float(demo_log_likelihood(mdp, demos, mdp.features @ fit.params["theta"]).sum()))


def test_float32_mdp_standard_errors_agree_with_float64():
    # the finite-difference Hessian's step is scaled to the dtype: with 1e-3 in float32 the
    # gradient's rounding dominated (standard errors ~3x too small, or a spurious warning)
    import warnings

    m = birl.TabularReward(3, prior=dist.Normal(0., 1.))
    mdp64 = tiny_chain_mdp(discount=0.99)
    demos = simulate_demos(mdp64, mdp64.reward, 20, seed=2, length=4)
    se = []
    for mdp in (mdp64, mdp64.to(dtype=torch.float32)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            post = birl.infer(mdp, demos, m, method="map")
        se.append(post.extra["standard_errors"]["theta"].double())
    # float32 rounding leaves them 2e-4 to 4e-4 apart (relative) on this and three more seeds
    assert torch.allclose(se[1], se[0], rtol=2e-3, atol=0), se


@pytest.mark.parametrize("prior, site", [(dist.HalfNormal(1.0), "theta[1]"),
                                         (dist.Uniform(-0.2, 0.3), "theta[0]")])
def test_a_map_on_the_edge_of_a_bounded_prior_withholds_its_standard_errors(prior, site):
    # true theta (1, -0.5): a HalfNormal's mode of theta[1] is 0, a Uniform's at its bounds;
    # the delta method there gave standard errors of 1e-5 without a word
    mdp = tiny_chain_mdp(horizon=4)
    demos = simulate_demos(mdp, mdp.reward, 5, seed=0)
    model = birl.LinearReward(mdp.features, prior=prior)
    with pytest.warns(InferenceWarning,
                      match=f"edge of the prior's support along {re.escape(site)}"):
        post = birl.infer(mdp, demos, model, method="map")
    assert "standard_errors" not in post.extra
    with pytest.raises(ValueError, match="not meaningful"):
        birl.infer(mdp, demos, model, method="laplace", num_samples=10)


def test_a_map_search_stopped_at_its_iteration_cap_says_so(monkeypatch):
    """L-BFGS out of iterations before its tolerances are met: the point is not the MAP, and
    ``method="map"`` says so at the caller's line (the cap forced to 1 iteration here; the
    continuous tutorial's point mass without whitening meets the real one, 200, with its
    largest gradient at 11). A search that converges says nothing."""
    import bayesirl.inference.map as map_

    _, *rest = map_.fit_map.__defaults__  # the cap, set in place: no wrapper's frame
    monkeypatch.setattr(map_.fit_map, "__defaults__", (1, *rest))
    with pytest.warns(InferenceWarning, match=r"the MAP search stopped at its cap of 1 L-BFGS "
                      r"iterations with the largest gradient .* is not the MAP") as record:
        short = birl.infer(None, None, ConjugateModel(), method="map", progress=False)
    assert [w.filename for w in record] == [__file__]
    assert abs(float(short.params["mu"]) - MU_MAP) > 1e-3
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        post = birl.infer(None, None, ConjugateModel(), method="map", progress=False)
    np.testing.assert_allclose(float(post.params["mu"]), MU_MAP, rtol=1e-6)
