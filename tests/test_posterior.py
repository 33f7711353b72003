"""Tests of bayesirl.posterior.reward_posterior: accessors, ArviZ conversion, netCDF round trips,
from_draws."""

import os
import warnings

import arviz as az
import numpy as np
import pytest
import torch

import bayesirl as birl
from bayesirl.core.demos import Demonstrations
from bayesirl.inference.target import Target
from bayesirl.model.likelihood import action_log_probs, demo_log_likelihood
from bayesirl.posterior.arviz_io import ARVIZ_1, from_groups, group_names
from bayesirl.posterior.diagnostics import InferenceWarning
from bayesirl.posterior.reward_posterior import RewardPosterior
from bayesirl.testing import grid_posterior, simulate_demos, tiny_chain_mdp


@pytest.fixture(scope="module")
def problem():
    mdp = tiny_chain_mdp()
    return mdp, simulate_demos(mdp, mdp.reward, 12, seed=0)


@pytest.fixture(scope="module")
def nuts_post(problem):
    """A short two-chain NUTS run (few draws: it warns about ESS, which is not tested here)."""
    mdp, demos = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        return birl.infer(mdp, demos, birl.LinearReward(mdp.features), num_samples=20,
                          warmup=50, num_chains=2, seed=1, progress=False)


def svi_like_post(mdp, demos, draws=7, seed=0):
    """A posterior from explicit parameter draws (no sampler), as SVI would build it: exact
    posterior draws from the grid oracle."""
    target = Target(mdp, demos, birl.LinearReward(mdp.features), "soft", 1.0)
    grid = grid_posterior(mdp, demos, birl.LinearReward(mdp.features), grid=41)
    theta = grid.sample(draws, torch.Generator().manual_seed(seed))[None]
    return RewardPosterior.from_params(target, {"theta": theta}, method="svi",
                                       settings={"likelihood": "soft", "guide": "mvn",
                                                 "lr": 0.01, "rationality": "1.0"},
                                       extra={"elbo": [-10.5, -9.25, -9.0]})


# ---------------------------------------------------------------------------- accessors
def test_shapes_and_flattening(nuts_post, problem):
    mdp, demos = problem
    post = nuts_post
    assert post.num_chains == 2 and post.num_draws == 20
    assert post.params["theta"].shape == (2, 20, 2)
    assert post.samples["theta"].shape == (40, 2)
    torch.testing.assert_close(post.samples["theta"][20:], post.params["theta"][1])
    assert post.rewards.shape == (2, 20, 3, 2)
    assert post.reward().shape == (40, 3, 2)
    # rewards are the reward model's map of the draws, broadcast over actions
    expect = post.samples["theta"] @ mdp.features.T
    torch.testing.assert_close(post.reward(), expect[..., None].expand(40, 3, 2))
    torch.testing.assert_close(post.mean_reward(), post.reward().mean(0))
    assert post.log_lik.shape == (2, 20, demos.n)
    torch.testing.assert_close(post.log_lik.reshape(40, -1),
                               demo_log_likelihood(mdp, demos, post.reward()))
    assert "nuts" in repr(post)


def test_credible_interval(nuts_post):
    lo, hi = nuts_post.credible_interval(0.9)
    assert lo.shape == hi.shape == (3, 2)
    mean = nuts_post.mean_reward()
    assert (lo <= mean).all() and (mean <= hi).all()
    lo50, hi50 = nuts_post.credible_interval(0.5)
    assert (lo <= lo50).all() and (hi50 <= hi).all()
    r = nuts_post.reward()
    torch.testing.assert_close(lo, torch.quantile(r, 0.05, dim=0))
    for prob in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=f"prob is {prob}"):
            nuts_post.credible_interval(prob)


def test_policy_is_posterior_average(nuts_post, problem):
    mdp, _ = problem
    pi = nuts_post.policy()
    assert pi.shape == (mdp.horizon, 3, 2)
    torch.testing.assert_close(pi.sum(-1), torch.ones(mdp.horizon, 3))
    loop = sum(action_log_probs(mdp, r).exp() for r in nuts_post.reward()) / 40
    torch.testing.assert_close(pi, loop)


def test_predictive(nuts_post, problem):
    mdp, _ = problem
    d = nuts_post.predictive(5, seed=3)
    assert isinstance(d, Demonstrations)
    assert d.states.shape == d.actions.shape == (5, mdp.horizon)
    d.validate(mdp)
    again = nuts_post.predictive(5, seed=3)
    assert torch.equal(d.states, again.states) and torch.equal(d.actions, again.actions)
    assert nuts_post.predictive(2, length=2).states.shape == (2, 2)
    for n, match in ((0, "n is 0"), (-1, "n is -1"), (2.5, "n must be an integer, got 2.5"),
                     (True, "n must be an integer, got True")):
        with pytest.raises(ValueError, match=match):
            nuts_post.predictive(n)


def test_predictive_discounted():
    mdp = tiny_chain_mdp(discount=0.6)
    post = RewardPosterior.from_draws(mdp, torch.randn(4, 3, generator=torch.Generator()))
    assert post.predictive(3, length=5).states.shape == (3, 5)
    assert post.policy().shape == (3, 2)


def test_rationality_draws_inferred_or_fixed(problem, tmp_path):
    import pyro.distributions as dist

    mdp, demos = problem
    model = birl.LinearReward(mdp.features)
    target = Target(mdp, demos, model, "boltzmann", dist.LogNormal(0.0, 1.0))
    g = torch.Generator().manual_seed(0)
    beta = torch.rand(2, 3, generator=g, dtype=torch.float64) + 0.5          # (chains, draws)
    theta = torch.randn(2, 3, mdp.n_features, generator=g, dtype=torch.float64)
    post = RewardPosterior.from_params(target, {"theta": theta, "rationality": beta}, "nuts",
                                       {"likelihood": "boltzmann", "rationality": "LogNormal"})
    assert torch.equal(post.rationality, beta.reshape(-1))        # aligned with post.reward()
    loop = sum(action_log_probs(mdp, r, "boltzmann", b).exp()
               for r, b in zip(post.reward(), beta.reshape(-1), strict=True)) / 6
    torch.testing.assert_close(post.policy(), loop)
    post.save(tmp_path / "beta.nc")
    torch.testing.assert_close(RewardPosterior.load(tmp_path / "beta.nc").rationality,
                               beta.reshape(-1))
    fixed = RewardPosterior.from_draws(mdp, torch.randn(4, 3, dtype=torch.float64),
                                       rationality=2.5)
    assert torch.equal(fixed.rationality, torch.full((4,), 2.5, dtype=torch.float64))
    assert torch.equal(svi_like_post(mdp, demos).rationality, torch.ones(7, dtype=torch.float64))


# ---------------------------------------------------------------------------- ArviZ
def test_to_arviz_groups_dims_coords(nuts_post, problem):
    mdp, demos = problem
    idata = nuts_post.to_arviz()
    if ARVIZ_1:  # the documented return type of each ArviZ
        import xarray as xr

        assert isinstance(idata, xr.DataTree)
    else:
        assert isinstance(idata, az.InferenceData)
    assert {"posterior", "log_likelihood", "observed_data", "sample_stats"} <= set(
        group_names(idata))
    post = idata.posterior
    assert post["theta"].dims == ("chain", "draw", "feature")
    assert post["reward"].dims == ("chain", "draw", "state", "action")
    assert list(post.coords["feature"].values) == list(mdp.feature_names)
    assert list(post.coords["state"].values) == list(mdp.state_names)
    assert list(post.coords["action"].values) == list(mdp.action_names)
    np.testing.assert_array_equal(post["theta"].values, nuts_post.params["theta"].numpy())
    ll = idata.log_likelihood["actions"]
    assert ll.dims == ("chain", "draw", "demo")
    np.testing.assert_array_equal(ll.values, nuts_post.log_lik.numpy())
    obs = idata.observed_data
    assert obs["states"].dims == ("demo", "step")
    np.testing.assert_array_equal(obs["actions"].values, demos.actions.numpy())
    stats = idata.sample_stats
    assert {"diverging", "energy", "lp", "step_size", "n_steps", "tree_depth"} <= set(
        stats.data_vars)
    assert stats["diverging"].dims == ("chain", "draw")
    assert stats["diverging"].dtype == bool
    # the lp stat is the log joint density of the draw (identity transforms: no Jacobian)
    target = Target(mdp, demos, birl.LinearReward(mdp.features), "soft", 1.0)
    theta = nuts_post.params["theta"]
    lp = target.log_prior({"theta": theta}) + target.log_likelihood({"theta": theta}).sum(-1)
    np.testing.assert_allclose(stats["lp"].values, lp.numpy(), rtol=1e-8)


def test_to_arviz_without_sampler_stats(problem):
    mdp, demos = problem
    post = svi_like_post(mdp, demos, draws=400)
    idata = post.to_arviz()
    assert "sample_stats" not in group_names(idata)
    assert {"posterior", "log_likelihood", "observed_data"} <= set(group_names(idata))
    loo = az.loo(idata)
    assert loo.n_data_points == demos.n
    assert np.isfinite(loo.elpd if ARVIZ_1 else loo.elpd_loo)  # ArviZ 1.x renamed the field


@pytest.mark.filterwarnings(  # ArviZ 0.23's compare() on pandas >= 3.1 (not ours)
    "ignore:The inplace keyword in DataFrame.sort_values is deprecated")
def test_loo_and_compare_take_the_posteriors(problem):
    """Exact posterior draws of the linear reward against those of a reward whose one feature
    ignores the informative states: az.loo and az.compare take the posteriors, and rank the
    right model first."""
    mdp, demos = problem
    right = svi_like_post(mdp, demos, draws=400)
    blind = birl.LinearReward(torch.tensor([[0.0], [0.0], [1.0]]))
    grid = grid_posterior(mdp, demos, blind, grid=41)
    wrong = RewardPosterior.from_params(
        Target(mdp, demos, blind, "soft", 1.0),
        {"theta": grid.sample(400, torch.Generator().manual_seed(1))[None]}, "svi",
        {"likelihood": "soft"})
    unrounded = {"round_to": "none"} if ARVIZ_1 else {}  # ArviZ 1.x rounds the table itself
    table = az.compare({"right": right.to_arviz(), "wrong": wrong.to_arviz()}, **unrounded)
    assert list(table.index) == ["right", "wrong"]
    # the column names and the sign of elpd_diff differ: ArviZ 0.x reports best minus this
    # model (>= 0) and elpd_loo, ArviZ 1.x this model minus best (<= 0) and elpd
    elpd = table["elpd" if ARVIZ_1 else "elpd_loo"]
    assert elpd["right"] > elpd["wrong"]
    gap = -table.loc["wrong", "elpd_diff"] if ARVIZ_1 else table.loc["wrong", "elpd_diff"]
    assert gap == pytest.approx(elpd["right"] - elpd["wrong"], abs=0.01)


def test_summary(nuts_post):
    table = nuts_post.summary()
    assert list(table.index) == ["theta[phi0]", "theta[phi1]"]
    assert {"mean", "sd", "r_hat", "ess_bulk"} <= set(table.columns)


# ---------------------------------------------------------------------------- files
def assert_same(a: RewardPosterior, b: RewardPosterior):
    assert a.method == b.method
    assert a.settings == b.settings
    assert a.fingerprint == b.fingerprint
    assert a.incomplete == b.incomplete
    assert a.dims == b.dims and a.coords == b.coords
    assert a.extra == b.extra
    assert set(a.params) == set(b.params)
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), k
    assert torch.equal(a.rewards, b.rewards)
    assert (a.log_lik is None) == (b.log_lik is None)
    if a.log_lik is not None:
        assert torch.equal(a.log_lik, b.log_lik)
    assert set(a.sample_stats) == set(b.sample_stats)
    for k in a.sample_stats:
        assert torch.equal(a.sample_stats[k], b.sample_stats[k]), k
    assert (a.demos is None) == (b.demos is None)
    if a.demos is not None:
        for k in ("states", "actions", "mask"):
            assert torch.equal(getattr(a.demos, k), getattr(b.demos, k)), k
        assert (a.demos.final_states is None) == (b.demos.final_states is None)
        if a.demos.final_states is not None:
            assert torch.equal(a.demos.final_states, b.demos.final_states)


def test_save_load_round_trip_nuts(nuts_post, problem, tmp_path):
    mdp, _ = problem
    path = tmp_path / "post.nc"
    nuts_post.save(path)
    loaded = RewardPosterior.load(path, mdp)
    assert loaded.mdp is mdp
    assert_same(nuts_post, loaded)
    torch.testing.assert_close(loaded.policy(), nuts_post.policy())
    # saving the loaded posterior again gives the same content
    loaded.save(tmp_path / "again.nc")
    assert_same(nuts_post, RewardPosterior.load(tmp_path / "again.nc", mdp))
    assert sorted(os.listdir(tmp_path)) == ["again.nc", "post.nc"]  # no temporary files left


def test_save_load_round_trip_svi_and_from_draws(problem, tmp_path):
    mdp, demos = problem
    post = svi_like_post(mdp, demos)
    post.save(str(tmp_path / "svi.nc"))
    assert_same(post, RewardPosterior.load(str(tmp_path / "svi.nc"), mdp))
    drawn = RewardPosterior.from_draws(mdp, torch.randn(5, 3, 2, dtype=torch.float64),
                                       demos=demos)
    drawn.save(tmp_path / "draws.nc")
    assert_same(drawn, RewardPosterior.load(tmp_path / "draws.nc", mdp))


def test_load_without_mdp(nuts_post, tmp_path):
    nuts_post.save(tmp_path / "post.nc")
    loaded = RewardPosterior.load(tmp_path / "post.nc")
    assert loaded.mdp is None
    assert loaded.fingerprint == nuts_post.fingerprint
    torch.testing.assert_close(loaded.mean_reward(), nuts_post.mean_reward())
    with pytest.raises(ValueError, match=r"policy\(\) needs the MDP"):
        loaded.policy()


def test_load_with_different_mdp_raises(nuts_post, tmp_path):
    nuts_post.save(tmp_path / "post.nc")
    for other in (tiny_chain_mdp(horizon=4), tiny_chain_mdp(discount=0.9),
                  tiny_chain_mdp(slip=0.1)):
        with pytest.raises(ValueError, match="was made on a different MDP"):
            RewardPosterior.load(tmp_path / "post.nc", other)


def test_load_truncated_and_foreign_files_raise(nuts_post, tmp_path):
    path = tmp_path / "post.nc"
    nuts_post.save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.nc is not a readable netCDF"):
        RewardPosterior.load(truncated)
    garbage = tmp_path / "garbage.nc"
    garbage.write_bytes(b"not a netcdf file at all")
    with pytest.raises(ValueError, match="not a readable netCDF"):
        RewardPosterior.load(garbage)
    foreign = tmp_path / "foreign.nc"
    from_groups({"posterior": {"x": np.zeros((1, 3))}}).to_netcdf(str(foreign))
    with pytest.raises(ValueError, match="foreign.nc is not a bayesirl posterior"):
        RewardPosterior.load(foreign)
    with pytest.raises(FileNotFoundError, match="no posterior file"):
        RewardPosterior.load(tmp_path / "missing.nc")


def test_save_is_atomic(nuts_post, problem, tmp_path, monkeypatch):
    """A save that fails midway leaves the previous file intact and no temporary file."""
    mdp, demos = problem
    path = tmp_path / "post.nc"
    nuts_post.save(path)
    before = path.read_bytes()
    written = []

    def broken_to_netcdf(self, filename, *args, **kwargs):
        with open(filename, "wb") as f:  # half a file, then a crash
            f.write(before[: len(before) // 3])
        written.append(filename)
        raise OSError("disk full")

    # InferenceData on ArviZ 0.x, xarray.DataTree on 1.x
    monkeypatch.setattr(type(nuts_post.to_arviz()), "to_netcdf", broken_to_netcdf)
    other = svi_like_post(mdp, demos)
    with pytest.raises(OSError, match="disk full"):
        other.save(path)
    assert written and os.path.abspath(written[0]) != os.path.abspath(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["post.nc"]
    monkeypatch.undo()
    assert_same(nuts_post, RewardPosterior.load(path, mdp))


# ---------------------------------------------------------------------------- from_draws
def test_from_draws_state_and_state_action(problem):
    mdp, demos = problem
    g = torch.Generator().manual_seed(4)
    r_s = torch.randn(6, 3, generator=g, dtype=torch.float64)
    post = RewardPosterior.from_draws(mdp, r_s)
    assert post.rewards.shape == (1, 6, 3, 2)
    torch.testing.assert_close(post.reward(), r_s[..., None].expand(6, 3, 2))
    assert post.params == {} and post.log_lik is None
    r_sa = torch.randn(6, 3, 2, generator=g, dtype=torch.float64)
    post = RewardPosterior.from_draws(mdp, r_sa, demos=demos)
    torch.testing.assert_close(post.reward(), r_sa)
    torch.testing.assert_close(post.log_lik[0], demo_log_likelihood(mdp, demos, r_sa))
    idata = post.to_arviz()
    assert list(idata.posterior.data_vars) == ["reward"]
    assert post.summary().shape[0] == 6
    # numpy input works
    RewardPosterior.from_draws(mdp, r_sa.numpy())


def test_from_draws_square_mdp_state_reward():
    """With S == A and as many draws as states, (draws, S) is still a state reward."""
    P = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
    mdp = birl.TabularMDP.from_dense(P, horizon=2)
    r = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    post = RewardPosterior.from_draws(mdp, r)
    assert post.rewards.shape == (1, 2, 2, 2)
    torch.testing.assert_close(post.reward(), r[..., None].expand(2, 2, 2))


@pytest.mark.parametrize("draws,match", [
    (torch.zeros(3), r"reward_draws must have shape \(draws, 3\) or \(draws, 3, 2\), got \(3,\)"),
    (torch.zeros(5, 4), r"got \(5, 4\)"),
    (torch.zeros(5, 3, 3), r"got \(5, 3, 3\)"),
    (torch.zeros(5, 3, 2, 1), r"got \(5, 3, 2, 1\)"),
    (torch.zeros(0, 3), r"got \(0, 3\)"),
    (torch.tensor([[0.0, float("nan"), 1.0]]), "non-finite"),
], ids=["1d", "wrong-S", "wrong-A", "4d", "empty", "nan"])
def test_from_draws_bad_shapes(draws, match):
    with pytest.raises(ValueError, match=match):
        RewardPosterior.from_draws(tiny_chain_mdp(), draws)


def test_from_draws_bad_mdp_and_demos(problem):
    with pytest.raises(TypeError, match="mdp must be a TabularMDP"):
        RewardPosterior.from_draws("mdp", torch.zeros(2, 3))
    mdp, demos = problem
    with pytest.raises(ValueError, match="horizon"):
        RewardPosterior.from_draws(tiny_chain_mdp(horizon=2), torch.zeros(2, 3), demos=demos)


# ---------------------------------------------------------------------------- MAP and Laplace
def fit_posterior(problem, draws=1, se=True, cov=True):
    """A posterior as MAP (one draw) or Laplace (several) return it: draws of theta, the
    standard errors per site and the covariance of the unconstrained coordinates."""
    mdp, demos = problem
    target = Target(mdp, demos, birl.LinearReward(mdp.features), "soft", 1.0)
    theta = torch.tensor([[0.5, -0.25]], dtype=torch.float64)
    if draws > 1:
        theta = theta + 0.1 * torch.randn(draws, 2, generator=torch.Generator().manual_seed(0),
                                          dtype=torch.float64)
    extra = {}
    if se:
        extra["standard_errors"] = {"theta": torch.tensor([0.125, 0.0625],
                                                          dtype=torch.float64)}
    if cov:
        extra["covariance"] = torch.tensor([[0.015625, 0.001], [0.001, 0.00390625]],
                                           dtype=torch.float64)
        extra["coordinates"] = ["theta[phi0]", "theta[phi1]"]
    return RewardPosterior.from_params(target, {"theta": theta[None]},
                                       method="map" if draws == 1 else "laplace",
                                       settings={"likelihood": "soft", "rationality": "1.0"},
                                       extra=extra)


def test_summary_after_map_shows_each_estimate_and_its_standard_error(problem, caplog):
    post = fit_posterior(problem)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = post.summary()
    assert list(table.index) == ["theta[phi0]", "theta[phi1]"]
    assert list(table.columns) == ["estimate", "se"]
    assert table["estimate"].tolist() == [0.5, -0.25]
    assert table["se"].tolist() == [0.125, 0.0625]
    assert not table.isna().any().any()
    assert not [r for r in caplog.records if r.name.startswith("arviz")]
    bare = fit_posterior(problem, se=False, cov=False).summary()
    assert list(bare.columns) == ["estimate"] and not bare.isna().any().any()
    reward = post.summary(var_names=["reward"])
    assert reward.shape == (6, 1) and list(reward.index[:2]) == ["reward[left, left]",
                                                                 "reward[left, right]"]
    with pytest.raises(ValueError, match="var_names has 'beta'"):
        post.summary(var_names=["beta"])


def test_summary_of_one_chain_of_draws_has_no_r_hat_and_no_warnings(problem, caplog):
    post = fit_posterior(problem, draws=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = post.summary()
    assert {"mean", "sd"} <= set(table.columns) and "r_hat" not in table.columns
    assert not table.isna().any().any()
    assert not [r for r in caplog.records if r.name.startswith("arviz")]


@pytest.mark.parametrize("draws", [1, 30], ids=["map", "laplace"])
def test_map_and_laplace_extras_survive_save_and_load(problem, tmp_path, draws):
    mdp, _ = problem
    post = fit_posterior(problem, draws=draws)
    post.save(tmp_path / "fit.nc")
    loaded = RewardPosterior.load(tmp_path / "fit.nc", mdp)
    assert loaded.method == post.method and torch.equal(loaded.params["theta"],
                                                        post.params["theta"])
    assert set(loaded.extra) == {"standard_errors", "covariance", "coordinates"}
    assert torch.equal(loaded.extra["standard_errors"]["theta"],
                       post.extra["standard_errors"]["theta"])
    assert torch.equal(loaded.extra["covariance"], post.extra["covariance"])
    assert loaded.extra["coordinates"] == post.extra["coordinates"]
    assert loaded.summary().equals(post.summary())
    idata = post.to_arviz()
    assert idata.constant_data["standard_error_theta"].dims == ("feature",)


def test_a_covariance_without_coordinate_names_is_saved_with_indices(problem, tmp_path):
    post = fit_posterior(problem)
    del post.extra["coordinates"]
    post.save(tmp_path / "fit.nc")
    loaded = RewardPosterior.load(tmp_path / "fit.nc")
    assert loaded.extra["coordinates"] == ["0", "1"]
    assert torch.equal(loaded.extra["covariance"], post.extra["covariance"])


def test_a_covariance_that_does_not_match_its_coordinates_is_refused(problem):
    post = fit_posterior(problem)
    post.extra["coordinates"] = ["theta[phi0]"]
    with pytest.raises(ValueError, match=r"extra\['covariance'\] has shape \(2, 2\), "
                                         r"expected \(1, 1\)"):
        post.to_arviz()


# ---------------------------------------------------------------------------- damaged files
def test_a_corrupted_file_is_a_value_error_naming_it(nuts_post, tmp_path):
    """Damaged compressed draws: a ValueError naming the file at load, not h5py's OSError
    ("filter returned failure") at a later access, which named no file."""
    import h5py

    path = tmp_path / "post.nc"
    nuts_post.save(path)
    with h5py.File(path, "r") as f:
        chunk = f["posterior/reward"].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    start = chunk.byte_offset + chunk.size // 2
    raw[start:start + 64] = bytes(64)
    (tmp_path / "damaged.nc").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"damaged\.nc is not a readable netCDF posterior"):
        RewardPosterior.load(tmp_path / "damaged.nc")


def rewrite(nuts_post, path, drop_attrs=(), rewards=None):
    """Save ``nuts_post`` with posterior attributes dropped or rewards replaced."""
    post = nuts_post
    if rewards is not None:
        post = RewardPosterior(post.mdp, rewards, post.params, post.log_lik, post.demos,
                               post.method, post.settings, post.sample_stats, post.extra,
                               post.incomplete, post.dims, post.coords)
    idata = post.to_arviz()
    for a in drop_attrs:
        del idata.posterior.attrs[a]
    idata.to_netcdf(str(path))


def test_a_file_without_its_attributes_names_what_is_missing(nuts_post, tmp_path):
    rewrite(nuts_post, tmp_path / "bare.nc", drop_attrs=("settings", "incomplete"))
    with pytest.raises(ValueError, match=r"bare\.nc is missing the attribute\(s\) settings, "
                                         "incomplete of its posterior group"):
        RewardPosterior.load(tmp_path / "bare.nc")


def test_nan_rewards_are_refused_on_load_naming_the_first_bad_draw(nuts_post, tmp_path):
    rewards = nuts_post.rewards.clone()
    rewards[1, 2, 0, 1] = float("nan")
    rewards[1, 5] = float("inf")
    rewrite(nuts_post, tmp_path / "nan.nc", rewards=rewards)
    draws = nuts_post.num_draws
    with pytest.raises(ValueError, match=rf"nan\.nc: reward draw {draws + 2} \(chain 1, draw 2\)"
                                         r" is not finite \(2 of"):
        RewardPosterior.load(tmp_path / "nan.nc")


# ---------------------------------------------------------------------------- how files are written
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_saved_files_have_the_permissions_the_umask_gives(nuts_post, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        nuts_post.save(tmp_path / "post.nc")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "post.nc").st_mode & 0o777 == mode


def test_save_flushes_the_file_to_disk_before_the_rename(nuts_post, tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def spy_replace(src, dst):
        events.append(("replace", os.fspath(src)))
        return replace(src, dst)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to name a file descriptor")
    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    nuts_post.save(tmp_path / "post.nc")
    kinds = [e[0] for e in events]
    assert "replace" in kinds
    renamed = events[kinds.index("replace")][1]
    assert ("fsync", renamed) in events[:kinds.index("replace")]
    assert ("fsync", str(tmp_path)) in events[kinds.index("replace"):]  # the rename, durable


KILLED_SAVE = """
import os, sys, time, torch
import bayesirl as birl
from bayesirl.testing import tiny_chain_mdp
torch.set_default_dtype(torch.float64)
post = birl.RewardPosterior.from_draws(tiny_chain_mdp(), torch.zeros(5, 3))
data = type(post.to_arviz())

def slow(self, path, *args, **kwargs):
    with open(path, "wb") as f:
        f.write(b"half a netCDF file")
    print("writing", flush=True)
    time.sleep(60)

data.to_netcdf = slow
post.save(sys.argv[1])
"""


def test_a_killed_save_leaves_no_temporary_file_after_the_next_save(nuts_post, tmp_path):
    """SIGKILL mid-save (nothing can clean up then): the next save of that file removes the
    dead writer's temporary file, and the file itself was never touched."""
    import signal
    import subprocess
    import sys

    target = tmp_path / "post.nc"
    nuts_post.save(target)
    before = target.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(target)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        left = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
        assert len(left) == 1 and left[0].startswith(".post.nc.")
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
        child.stdout.close()
    assert target.read_bytes() == before
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == left
    nuts_post.save(target)
    assert sorted(os.listdir(tmp_path)) == ["post.nc"]
