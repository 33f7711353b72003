"""The full likelihood through infer(): Rust's stage 3 (transition probabilities inside the
posterior) as a model object like any other, MAP equal to laplace_fit()'s, NUTS over theta and p,
bad input named."""

import warnings

import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
from bayesirl.datasets import rust_bus, rust_bus_transitions
from bayesirl.inference.map import laplace_fit
from bayesirl.model.dynamics_likelihood import FullLikelihood
from bayesirl.model.priors import flat
from bayesirl.posterior import FullLikelihoodPosterior, RewardPosterior
from bayesirl.posterior.diagnostics import InferenceWarning


@pytest.fixture(scope="module")
def bus():
    """Rust's group 4 (37 buses, 90 bins) at his discount, and its first stage."""
    mdp, demos = rust_bus(groups=(4,), discount=0.9999)
    return mdp, demos, rust_bus_transitions(groups=(4,))


def test_map_through_infer_is_laplaces_joint_mode_with_standard_errors_of_every_site(
        bus, tmp_path):
    mdp, demos, transitions = bus
    model = FullLikelihood(birl.LinearReward(mdp.features, prior=flat()), transitions)
    fit = laplace_fit(model.build_target(mdp, demos))
    post = birl.infer(mdp, demos, model, method="map", progress=False)
    assert isinstance(post, FullLikelihoodPosterior) and isinstance(post, RewardPosterior)
    assert post.samples["p"].shape == (1, 1, 3)
    assert set(post.extra["standard_errors"]) == {"theta", "p"}
    for site in ("theta", "p"):
        torch.testing.assert_close(post.samples[site][0], fit.params[site], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(post.extra["standard_errors"][site],
                                   fit.standard_errors[site], rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(post.extra["standard_errors_bhhh"][site],
                                   fit.opg_standard_errors[site], rtol=1e-4, atol=1e-9)
    # Rust's Table IX reports BHHH standard errors: 0.639 and 1.582
    assert post.extra["standard_errors_bhhh"]["theta"].tolist() == pytest.approx(
        [0.639, 1.582], abs=2e-3)
    # the pointwise log-likelihood is the choices, one term per bus; the transitions add theirs
    assert post.log_lik.shape == (1, 1, demos.n)
    total = float(post.log_lik.sum()) + float(transitions.log_likelihood(fit.params["p"]))
    assert total == pytest.approx(fit.log_likelihood, abs=1e-6)
    post.save(tmp_path / "full.nc")
    back = RewardPosterior.load(tmp_path / "full.nc", mdp)
    torch.testing.assert_close(back.extra["standard_errors"]["p"],
                               post.extra["standard_errors"]["p"])
    assert back.dims["p"] == ("group", "slot")
    # the tying of (s, a) into groups comes with the posterior and its file, so that each
    # draw's p can be planned in (decisions.counterfactual)
    assert torch.equal(post.transition_groups, transitions.support.groups)
    full = FullLikelihoodPosterior.load(tmp_path / "full.nc", mdp)
    assert torch.equal(full.transition_groups, transitions.support.groups)
    torch.testing.assert_close(full.transition_probs()[0], transitions.probabilities(
        fit.params["p"]), rtol=1e-6, atol=1e-9)


def test_a_short_nuts_run_samples_the_costs_and_the_increment_probabilities():
    mdp, demos = rust_bus(groups=(4,), discount=0.99)
    model = FullLikelihood(birl.LinearReward(mdp.features, prior=dist.Normal(0.0, 10.0)),
                           rust_bus_transitions(groups=(4,)))
    with warnings.catch_warnings():  # 20 draws: too few for the ESS check
        warnings.simplefilter("ignore", InferenceWarning)
        post = birl.infer(mdp, demos, model, method="nuts", num_samples=20, warmup=20,
                          num_chains=1, seed=0, progress=False)
    p = post.samples["p"]
    assert post.samples["theta"].shape == (20, 2) and p.shape == (20, 1, 3)
    torch.testing.assert_close(p.sum(-1), torch.ones(20, 1))
    assert (p > 0).all() and torch.isfinite(post.log_lik).all()
    assert post.log_lik.shape == (1, 20, demos.n) and post.reward().shape == (20, 90, 2)
    assert set(post.to_arviz().posterior.data_vars) == {"theta", "p", "reward"}


def test_bad_input_to_the_full_likelihood_through_infer_is_named(bus):
    mdp, demos, transitions = bus
    model = FullLikelihood(birl.LinearReward(mdp.features, prior=flat()), transitions)
    with pytest.raises(ValueError, match="likelihood is 'boltzmann'; the full likelihood"):
        birl.infer(mdp, demos, model, method="map", likelihood="boltzmann", progress=False)
    with pytest.raises(ValueError, match="rationality must be a number here"):
        birl.infer(mdp, demos, model, method="map", rationality=dist.LogNormal(0.0, 1.0),
                   progress=False)
    with pytest.raises(ValueError, match="method='svi' needs a target with a Pyro model"):
        birl.infer(mdp, demos, model, method="svi", progress=False)
    other, _ = rust_bus(groups=(4,), bins=100, discount=0.9999)
    with pytest.raises(ValueError, match=r"mdp's successors \(100, 2, 3\) are not the "
                                         r"transitions' support \(90, 2, 3\)"):
        birl.infer(other, demos, model, method="map", progress=False)
