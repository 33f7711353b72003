"""SVI says when it has not converged (bayesirl.inference.svi): features scaled so that the
posterior is far narrower than the prior are reported before fitting, and a fit whose guide
wanders from the MAP or whose ELBO is still moving is an InferenceWarning with the numbers (a
ConvergenceError with strict=True); a converged fit says nothing."""

import re
import warnings

import numpy as np
import pytest
import torch

import bayesirl as birl
from bayesirl.inference.svi import convergence_problems
from bayesirl.posterior.diagnostics import ConvergenceError, InferenceWarning


@pytest.fixture
def gridworld():
    mdp = birl.envs.gridworld(size=4, slip=0.1, horizon=5, block=2, seed=0)
    return mdp, birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=10, seed=0)


def _svi(mdp, demos, scale, **kwargs):
    return birl.infer(mdp, demos, birl.LinearReward(mdp.features * scale), method="svi",
                      steps=100, num_samples=10, progress=False, **kwargs)


@pytest.mark.parametrize("scale", [1e3, 1e6])
def test_badly_scaled_features_are_reported_and_the_wandering_fit_too(gridworld, scale):
    """Features times 1e3 or 1e6 under an N(0, 1) prior: MAP is right, SVI's guide ends
    dozens of its sds away from it. Both are said, with the numbers."""
    mdp, demos = gridworld
    with pytest.warns(InferenceWarning) as record:
        _svi(mdp, demos, scale)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2, messages
    assert messages[0].startswith("ill-conditioned features:\n- features[..., 0] reach "
                                  f"{scale:.3g} in magnitude with a prior sd of 1")
    assert f"rescale the features to order 1 (e.g. divide feature 0 by {scale:.3g})" in (
        messages[0])
    assert messages[1].startswith("SVI has not converged:\n- the guide's mean of theta[")
    assert "of its sds" in messages[1] and "from the MAP" in messages[1]


def test_a_converged_fit_on_well_scaled_features_says_nothing(gridworld):
    mdp, demos = gridworld
    with warnings.catch_warnings():
        warnings.simplefilter("error", InferenceWarning)
        _svi(mdp, demos, 1.0)


def test_strict_makes_svi_non_convergence_an_error(gridworld):
    mdp, demos = gridworld
    with pytest.warns(InferenceWarning, match="ill-conditioned"):
        with pytest.raises(ConvergenceError, match="SVI has not converged:\n- the guide's mean"):
            _svi(mdp, demos, 1e3, strict=True)


def test_a_moving_elbo_is_reported_and_noise_is_not():
    rng = np.random.default_rng(0)
    noise = list(100 + rng.standard_normal(400))
    assert convergence_problems(noise, {}, None) == []
    rising = [x - 0.02 * i for i, x in enumerate(noise)]  # the loss still falls: ELBO rises
    (problem,) = convergence_problems(rising, {}, None)
    moved = re.match(r"the ELBO still rose by (\S+) nats \(standard error (\S+)\) between "
                     r"the last two tenths of its 400 steps", problem)
    assert moved, problem
    assert abs(float(moved[1]) - 0.8) < 3 * float(moved[2])  # 40 steps x 0.02, and noise
    falling = [x + 0.02 * i for i, x in enumerate(noise)]
    assert convergence_problems(falling, {}, None)[0].startswith("the ELBO still fell by ")
    tiny = [100 + 1e-4 * x - 1e-6 * i for i, x in enumerate(rng.standard_normal(400))]
    assert convergence_problems(tiny, {}, None) == []  # significant but under 0.1 nats


def test_a_guide_far_from_the_map_is_reported_per_coordinate():
    g = torch.Generator().manual_seed(0)
    draws = {"theta": torch.randn(256, 3, generator=g, dtype=torch.float64) * 0.1 + 1.0}
    near = {"theta": torch.tensor([1.02, 0.98, 1.1], dtype=torch.float64)}
    assert convergence_problems([], draws, near) == []
    far = {"theta": torch.tensor([1.0, 1.0, 0.2], dtype=torch.float64)}
    (problem,) = convergence_problems([], draws, far)
    assert problem.startswith("the guide's mean of theta[2] is 0.9974, 7.54 of its sds")
    assert "from the MAP 0.2" in problem
    # both readings: an unfinished fit, or a family that cannot centre on the mode
    assert "has not converged, or the guide's family cannot centre on the mode" in problem
