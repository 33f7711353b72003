"""Tests of infer() (bayesirl.inference.facade: reproducibility, input validation, strictness)
and of the convergence diagnostics it reports (bayesirl.posterior.diagnostics).

Accuracy against the exact posterior lives in tests/oracles/test_exact.py.
"""

import importlib
import re
import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
from bayesirl.core.demos import Demonstrations
from bayesirl.posterior.arviz_io import from_groups, group_names
from bayesirl.posterior.diagnostics import (
    ConvergenceError,
    InferenceWarning,
    check_convergence,
    convergence_problems,
)
from bayesirl.testing import simulate_demos, tiny_chain_mdp

FAST_NUTS = {"method": "nuts", "num_samples": 10, "warmup": 10, "num_chains": 2}
FAST_SVI = {"method": "svi", "steps": 30, "num_samples": 10}
svi_module = importlib.import_module("bayesirl.inference.svi")  # SVI behind birl.infer


# ---------------------------------------------------------------------------- reproducibility
def run(chain_problem, **kwargs):
    mdp, demos, model = chain_problem
    return birl.infer(mdp, demos, model, progress=False, **kwargs)


def test_nuts_seeded_runs_are_identical(chain_problem):
    with pytest.warns(InferenceWarning):
        a = run(chain_problem, seed=3, **FAST_NUTS)
    with pytest.warns(InferenceWarning):
        b = run(chain_problem, seed=3, **FAST_NUTS)
    assert torch.equal(a.params["theta"], b.params["theta"])
    assert torch.equal(a.rewards, b.rewards)
    for k in a.sample_stats:
        assert torch.equal(a.sample_stats[k], b.sample_stats[k]), k
    assert not torch.equal(a.params["theta"][0], a.params["theta"][1])  # chains differ


@pytest.mark.parametrize("guide", ["normal", "mvn", "lowrank"])
def test_svi_seeded_runs_are_identical(chain_problem, guide):
    a = run(chain_problem, seed=5, guide=guide, **FAST_SVI)
    b = run(chain_problem, seed=5, guide=guide, **FAST_SVI)
    assert torch.equal(a.params["theta"], b.params["theta"])
    assert a.extra["elbo"] == b.extra["elbo"] and len(a.extra["elbo"]) == FAST_SVI["steps"]
    assert a.params["theta"].shape == (1, FAST_SVI["num_samples"], 2)
    assert a.settings["guide"] == guide
    c = run(chain_problem, seed=6, guide=guide, **FAST_SVI)
    assert not torch.equal(a.params["theta"], c.params["theta"])


def test_svi_step_decays_geometrically_to_lr_times_lr_decay(chain_problem, monkeypatch):
    """Every parameter's Adam step, read after the run, is lr * lr_decay; lr_decay=1 keeps it
    constant."""
    made = []
    adam = svi_module.pyro.optim.ClippedAdam

    def recording(args):
        made.append(adam(args))
        return made[-1]

    monkeypatch.setattr(svi_module.pyro.optim, "ClippedAdam", recording)
    for lr_decay in (0.05, 1.0):
        post = run(chain_problem, seed=0, lr=0.2, lr_decay=lr_decay, **FAST_SVI)
        assert post.settings["lr_decay"] == lr_decay
        steps = [g["lr"] for o in made[-1].optim_objs.values() for g in o.param_groups]
        assert steps and all(abs(x - 0.2 * lr_decay) < 1e-12 for x in steps), steps


def test_svi_subsampling_runs(chain_problem):
    """Minibatches of 3 of the 10 demonstrations: the ELBO's estimates are the noisier ones of
    a subsampled plate (scaled by 10/3; 4.5x the full batch's sd when measured), yet the fit
    lands within a posterior sd of the full-batch fit (0.38 and 0.19 sd when measured)."""
    kw = dict(method="svi", steps=300, lr=0.05, num_samples=200, seed=0)
    full = run(chain_problem, **kw)
    post = run(chain_problem, subsample_size=3, **kw)
    assert post.settings["subsample_size"] == 3
    assert torch.isfinite(post.params["theta"]).all()
    noise = np.std(post.extra["elbo"][-100:]) / np.std(full.extra["elbo"][-100:])
    assert noise > 3, noise
    theta, exact = post.samples["theta"], full.samples["theta"]
    z = (theta.mean(0) - exact.mean(0)) / exact.std(0)
    assert (z.abs() < 1).all(), z


def test_map_is_deterministic_and_single_draw(chain_problem):
    a = run(chain_problem, method="map")
    b = run(chain_problem, method="map", seed=9)
    assert a.params["theta"].shape == (1, 1, 2)
    assert torch.equal(a.params["theta"], b.params["theta"])
    assert "sample_stats" not in group_names(a.to_arviz())


def test_progress_false_is_silent_and_true_shows_a_bar(chain_problem, capsys):
    run(chain_problem, **FAST_SVI)
    assert capsys.readouterr().err == ""
    mdp, demos, model = chain_problem
    birl.infer(mdp, demos, model, progress=True, **FAST_SVI)
    assert "svi" in capsys.readouterr().err


# ---------------------------------------------------------------------------- validation
BAD_ARGUMENTS = [
    ("method", {"method": "gibbs"}, ValueError, "method is 'gibbs', expected one of"),
    ("method-case", {"method": "NUTS"}, ValueError, "method is 'NUTS'"),
    ("guide", {"guide": "flow"}, ValueError, "guide is 'flow', expected one of"),
    ("likelihood", {"likelihood": "hard"}, ValueError, "likelihood is 'hard', expected one of"),
    ("num_samples-0", {"num_samples": 0}, ValueError, "num_samples is 0, expected an integer >= 1"),
    ("num_samples-neg", {"num_samples": -5}, ValueError, "num_samples is -5"),
    ("num_samples-float", {"num_samples": 2.5}, ValueError,
     "num_samples must be an integer, got 2.5"),
    ("num_samples-bool", {"num_samples": True}, ValueError,
     "num_samples must be an integer, got True"),
    ("warmup-neg", {"warmup": -1}, ValueError, "warmup is -1, expected an integer >= 0"),
    ("num_chains-0", {"num_chains": 0}, ValueError, "num_chains is 0, expected an integer >= 1"),
    ("steps-0", {"steps": 0}, ValueError, "steps is 0, expected an integer >= 1"),
    ("lr-nan", {"lr": float("nan")}, ValueError, "lr is nan, expected a number > 0"),
    ("lr-inf", {"lr": float("inf")}, ValueError, "lr is inf"),
    ("lr-0", {"lr": 0.0}, ValueError, "lr is 0.0"),
    ("lr-str", {"lr": "0.1"}, ValueError, "lr is '0.1'"),
    ("lr_decay-0", {"lr_decay": 0.0}, ValueError,
     r"lr_decay is 0.0, expected a number in \(0, 1\]"),
    ("lr_decay-big", {"lr_decay": 1.5}, ValueError, "lr_decay is 1.5"),
    ("lr_decay-nan", {"lr_decay": float("nan")}, ValueError, "lr_decay is nan"),
    ("lr_decay-bool", {"lr_decay": True}, ValueError, "lr_decay is True"),
    ("rationality-0", {"rationality": 0.0}, ValueError,
     "rationality is 0.0, expected a number > 0"),
    ("rationality-neg", {"rationality": -2}, ValueError, "rationality is -2"),
    ("rationality-nan", {"rationality": float("nan")}, ValueError, "rationality is nan"),
    ("rationality-inf", {"rationality": float("inf")}, ValueError, "rationality is inf"),
    ("rationality-str", {"rationality": "5"}, ValueError, "rationality is '5'"),
    ("rationality-prior-real", {"rationality": dist.Normal(0.0, 1.0)}, ValueError,
     "rationality prior must live on the positive reals"),
    ("rationality-prior-part-negative", {"rationality": dist.Uniform(-0.5, 2.0)}, ValueError,
     "rationality prior must live on the positive reals"),
    ("rationality-prior-batch", {"rationality": dist.LogNormal(torch.zeros(2), 1.0)}, ValueError,
     r"rationality prior must be a scalar distribution, got batch_shape \(2,\)"),
    ("subsample-0", {"method": "svi", "subsample_size": 0}, ValueError,
     r"subsample_size is 0, expected an integer in \[1, 10\]"),
    ("subsample-big", {"method": "svi", "subsample_size": 11}, ValueError,
     "subsample_size is 11"),
    ("subsample-float", {"method": "svi", "subsample_size": 3.0}, ValueError,
     "subsample_size is 3.0"),
]


@pytest.mark.parametrize("kwargs,exc,match", [b[1:] for b in BAD_ARGUMENTS],
                         ids=[b[0] for b in BAD_ARGUMENTS])
def test_bad_arguments_raise_naming_them(chain_problem, kwargs, exc, match):
    mdp, demos, model = chain_problem
    with pytest.raises(exc, match=match):
        birl.infer(mdp, demos, model, progress=False, **kwargs)


def test_bad_types_raise_type_error(chain_problem):
    mdp, demos, model = chain_problem
    with pytest.raises(TypeError, match="mdp must be a TabularMDP, got dict"):
        birl.infer({}, demos, model)
    with pytest.raises(TypeError, match="demos must be Demonstrations, got ndarray"):
        birl.infer(mdp, demos.states.numpy(), model)
    with pytest.raises(TypeError, match="reward_model must be a bayesirl reward model.*function"):
        birl.infer(mdp, demos, lambda: None)


def test_demos_out_of_range_raise(chain_problem):
    mdp, demos, model = chain_problem
    states = demos.states.clone()
    states[2, 1] = 7
    bad = Demonstrations(states, demos.actions, demos.mask)
    with pytest.raises(ValueError, match=re.escape("states[2, 1] is 7, expected a state index "
                                                   "in [0, 3)")):
        birl.infer(mdp, bad, model, progress=False)
    actions = demos.actions.clone()
    actions[0, 2] = 2
    bad = Demonstrations(demos.states, actions, demos.mask)
    with pytest.raises(ValueError, match=re.escape("actions[0, 2] is 2, expected an action")):
        birl.infer(mdp, bad, model, progress=False)


def test_demos_longer_than_horizon_raise(chain_problem):
    mdp, _, model = chain_problem
    long = simulate_demos(tiny_chain_mdp(horizon=5), mdp.reward, 3, seed=0)
    with pytest.raises(ValueError, match="demonstration 0 has length 5, expected at most the "
                                         "MDP's horizon 3"):
        birl.infer(mdp, long, model, progress=False)


def test_impossible_transition_raises(chain_problem):
    mdp, demos, model = chain_problem
    states = demos.states.clone()
    states[0] = torch.tensor([0, 2, 0])  # 0 -> 2 is not one step of the chain
    bad = Demonstrations(states, demos.actions, demos.mask)
    with pytest.raises(ValueError, match="demonstration 0, step 0: transition 0"):
        birl.infer(mdp, bad, model, progress=False)


@pytest.mark.parametrize("model,match", [
    (birl.LinearReward(torch.zeros(4, 2)), r"features have shape \(4, 2\), but the MDP has S=3"),
    (birl.TabularReward(3, 3), r"TabularReward has shape \(3, 3\), but the MDP needs \(3, 2\)"),
    (birl.GPReward(torch.zeros(5, 1)), "GPReward coords have 5 rows, but the MDP has 3 states"),
], ids=["linear", "tabular", "gp"])
def test_reward_model_not_matching_mdp_raises(chain_problem, model, match):
    mdp, demos, _ = chain_problem
    with pytest.raises(ValueError, match=match):
        birl.infer(mdp, demos, model, progress=False)


def test_demos_on_another_device_raise(chain_problem):
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    mdp, demos, model = chain_problem
    with pytest.raises(ValueError, match="demos are on cuda"):
        birl.infer(mdp, demos.to("cuda"), model)


UNVALIDATED = [
    ("target_accept-1.5", {"target_accept": 1.5}, "target_accept is 1.5"),
    ("target_accept-0", {"target_accept": 0.0}, "target_accept is 0.0"),
    ("max_tree_depth-0", {"max_tree_depth": 0}, "max_tree_depth is 0"),
    ("num_steps-0", {"method": "hmc", "num_steps": 0}, "num_steps is 0"),
    ("seed-float", {"seed": 1.5}, "seed must be an integer, got 1.5"),
    ("seed-str", {"seed": "a"}, "seed must be an integer, got 'a'"),
    ("seed-neg", {"seed": -1}, "seed is -1"),
]


@pytest.mark.parametrize("kwargs,match", [u[1:] for u in UNVALIDATED],
                         ids=[u[0] for u in UNVALIDATED])
def test_sampler_settings_validated(chain_problem, kwargs, match):
    mdp, demos, model = chain_problem
    settings = {"num_samples": 1, "warmup": 1, "num_chains": 1, "map_init": False,
                "progress": False, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        with pytest.raises(ValueError, match=match):
            birl.infer(mdp, demos, model, **settings)


# ---------------------------------------------------------------------------- strictness
def test_strict_turns_warning_into_error(chain_problem):
    with pytest.raises(ConvergenceError, match=r"bulk ESS is \d+ \(< 400\) with 1 chain"):
        run(chain_problem, num_samples=20, warmup=20, num_chains=1, strict=True)


def test_non_strict_short_run_warns(chain_problem):
    with pytest.warns(InferenceWarning, match="MCMC convergence problems") as record:
        post = run(chain_problem, num_samples=20, warmup=20, num_chains=1)
    assert post.num_draws == 20
    # one warning; no stray RuntimeWarning from the diagnostics of a single chain
    assert [w.category for w in record] == [InferenceWarning]
    problems = convergence_problems(post.to_arviz(), ["theta"])
    assert any("ESS" in p for p in problems)


def test_svi_and_map_do_not_check_convergence(chain_problem):
    with warnings.catch_warnings():
        warnings.simplefilter("error", InferenceWarning)
        run(chain_problem, method="map")
        run(chain_problem, **FAST_SVI)


# ---------------------------------------------------------------------------- diagnostics
def idata_of(theta, **stats):
    groups = {"posterior": {"theta": theta}}
    if stats:
        groups["sample_stats"] = stats
    return from_groups(groups)


def test_diagnostics_accept_iid_draws():
    rng = np.random.default_rng(0)
    assert convergence_problems(idata_of(rng.standard_normal((4, 500, 2))), ["theta"]) == []


def test_diagnostics_single_chain_no_runtime_warning():
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert convergence_problems(idata_of(rng.standard_normal((1, 1000))), ["theta"]) == []


def test_diagnostics_flag_disagreeing_chains():
    rng = np.random.default_rng(1)
    theta = rng.standard_normal((2, 1000)) + np.array([[0.0], [0.5]])
    problems = convergence_problems(idata_of(theta), ["theta"])
    assert any(p.startswith("R-hat is") for p in problems)


def test_diagnostics_flag_few_draws_divergences_and_bfmi():
    rng = np.random.default_rng(2)
    theta = rng.standard_normal((2, 50))
    diverging = np.zeros((2, 50), dtype=bool)
    diverging[1, 3] = True
    # energy drifting slowly across draws: E-BFMI = mean(diff(E)^2) / var(E) ~ 0.005
    energy = np.linspace(0.0, 10.0, 50) + 0.01 * rng.standard_normal((2, 50))
    problems = convergence_problems(idata_of(theta, diverging=diverging, energy=energy),
                                    ["theta"])
    assert any("bulk ESS is" in p for p in problems)
    assert any(p.startswith("1 divergent transitions") for p in problems)
    assert any(p.startswith("E-BFMI is") for p in problems)


def test_diagnostics_flag_stuck_chain():
    """A chain that rejects every proposal has constant draws; ArviZ reports a large ESS for
    constant draws, so this must be caught explicitly."""
    rng = np.random.default_rng(3)
    theta = rng.standard_normal((2, 1000, 2))
    theta[1, :, :] = 0.3
    problems = convergence_problems(idata_of(theta), ["theta"])
    assert any("constant within a chain" in p for p in problems)


def test_diagnostics_do_not_flag_components_constant_by_construction():
    """A component pinned in every draw (a normalisation such as r[:, 0] = 0) has nothing to
    explore: it is not a chain that did not move, in one chain or several."""
    rng = np.random.default_rng(4)
    for chains in (1, 4):
        theta = rng.standard_normal((chains, 1000, 3))
        theta[..., 0] = 0.0
        assert convergence_problems(idata_of(theta), ["theta"]) == []
    mdp = tiny_chain_mdp(discount=0.9)
    r = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r[:, 0] = 0.0
    assert birl.RewardPosterior.from_draws(mdp, r).check_convergence() == []


def test_diagnostics_flag_a_stuck_chain_beside_pinned_components():
    """A chain that rejected every proposal is flagged though another component is pinned,
    also when it is the only chain (nothing to compare it with)."""
    rng = np.random.default_rng(5)
    theta = rng.standard_normal((2, 1000, 3))
    theta[..., 0] = 0.0
    theta[1, :, 1:] = 0.3                       # chain 1 never moves
    assert any("constant within a chain" in p
               for p in convergence_problems(idata_of(theta), ["theta"]))
    lone = np.full((1, 1000, 2), 0.3)
    assert any("constant within a chain" in p
               for p in convergence_problems(idata_of(lone), ["theta"]))
    partly = rng.standard_normal((2, 1000, 2))
    partly[1, :, 1] = 0.3                       # one component stuck in one chain
    assert any("constant within a chain" in p
               for p in convergence_problems(idata_of(partly), ["theta"]))


def _nuts_idata(n_steps, settings):
    theta = np.random.default_rng(5).standard_normal(n_steps.shape)
    idata = idata_of(theta, n_steps=n_steps)
    if settings is not None:
        idata.posterior.attrs["settings"] = settings
    return idata


def test_diagnostics_flag_draws_at_the_maximum_tree_depth():
    """A tree at the cap of depth 3 made every doubling: 7 leapfrog steps. More than a tenth of
    the draws there is a problem; a U-turn inside the last doubling (4-6 steps) is not the
    cap, and a posterior without NUTS settings (HMC, ChEES) has no cap to check."""
    steps = np.full((2, 500), 3)
    steps[0, :60] = 7  # 60 of 1000 draws: below the share
    steps[1, :60] = 6
    settings = '{"max_tree_depth": 3, "likelihood": "soft"}'
    assert not any("tree depth" in p for p in convergence_problems(
        _nuts_idata(steps, settings), ["theta"]))
    steps[1, :60] = 7  # 120 of 1000
    problems = convergence_problems(_nuts_idata(steps, settings), ["theta"])
    assert any(p.startswith("120 of 1000 NUTS draws ran to the maximum tree depth (3, 7 "
                            "leapfrog steps)") for p in problems)
    for no_cap in (None, '{"num_steps": 10}', "not json"):
        assert not any("tree depth" in p for p in convergence_problems(
            _nuts_idata(steps, no_cap), ["theta"]))


def test_infer_warns_when_nuts_runs_to_its_tree_depth(chain_problem):
    mdp, demos, model = chain_problem
    with pytest.warns(InferenceWarning, match=r"ran to the maximum tree depth \(1, 1 leapfrog"):
        post = birl.infer(mdp, demos, model, num_samples=30, warmup=30, num_chains=1,
                          max_tree_depth=1, progress=False)
    assert post.settings["max_tree_depth"] == 1


def test_check_convergence_warns_or_raises():
    theta = np.random.default_rng(4).standard_normal((1, 30))
    with pytest.warns(InferenceWarning, match="bulk ESS"):
        problems = check_convergence(idata_of(theta), ["theta"])
    assert problems
    with pytest.raises(ConvergenceError, match="bulk ESS"):
        check_convergence(idata_of(theta), ["theta"], strict=True)


# ---------------------------------------------------------------------------- interruption
def test_interrupted_nuts_keeps_common_length_and_flags_incomplete(chain_problem, monkeypatch):
    """Ctrl-C during the second chain: both chains are truncated to the draws the second one
    made, and the posterior is marked incomplete."""
    from pyro.infer.mcmc import NUTS

    calls = {"n": 0}
    sample = NUTS.sample

    def interrupting(self, params):
        calls["n"] += 1
        if calls["n"] == 10 + 10 + 10 + 4 + 1:  # chain 1: 20 steps; chain 2: warmup, 4 draws
            raise KeyboardInterrupt
        return sample(self, params)

    monkeypatch.setattr(NUTS, "sample", interrupting)
    with pytest.warns(InferenceWarning):
        post = run(chain_problem, seed=0, **FAST_NUTS)
    assert post.incomplete
    assert post.num_chains == 2 and post.num_draws == 4
    assert "incomplete" in repr(post)


def test_interrupted_svi_keeps_fit_so_far(chain_problem, monkeypatch):
    from pyro.infer import SVI

    calls = {"n": 0}
    step = SVI.step

    def interrupting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(SVI, "step", interrupting)
    post = run(chain_problem, seed=0, **FAST_SVI)
    assert post.incomplete
    assert len(post.extra["elbo"]) == 11
    assert post.samples["theta"].shape == (FAST_SVI["num_samples"], 2)


def test_the_blas_pools_are_scanned_again_only_after_an_import(monkeypatch):
    """infer() limits BLAS/OpenMP threads on a small problem; the pools' scan (a millisecond)
    is kept, and made again once a module is imported (which may bring a native library)."""
    import sys
    import types

    from bayesirl.inference import facade

    first = facade._thread_pools()
    assert facade._thread_pools() is first
    monkeypatch.setitem(sys.modules, "bayesirl_test_new_module", types.ModuleType("m"))
    assert facade._thread_pools() is not first


def test_subsample_size_of_a_preference_target_is_bounded_by_its_pairs():
    from bayesirl.core.preferences import Preferences
    from bayesirl.model.preferences import PreferenceModel

    mdp = tiny_chain_mdp(horizon=4)
    demos = simulate_demos(mdp, mdp.reward, 6, seed=0)
    prefs = Preferences.from_demonstrations(demos, [[0, 1], [2, 3], [4, 5]])
    model = PreferenceModel(birl.LinearReward(mdp.features))
    with pytest.raises(ValueError, match=r"subsample_size is 10, expected an integer in \[1, 3\]"):
        birl.infer(mdp, prefs, model, method="svi", steps=2, subsample_size=10, progress=False)
