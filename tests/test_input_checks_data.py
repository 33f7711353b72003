"""Input checks of the data types, the posterior and the tools that read them: each case was a
bare traceback from deep inside torch, NumPy, ArviZ or Gymnasium, or a silently wrong answer."""

import math
import re

import numpy as np
import pytest
import torch

import bayesirl as birl
from bayesirl import RewardPosterior, Trajectories
from bayesirl.core.control import point_mass
from bayesirl.core.trajectories import rollout
from bayesirl.datasets import load_panel
from bayesirl.datasets.panel import read_csv_columns
from bayesirl.inference import facade
from bayesirl.metrics import epic_distance, held_out_log_likelihood
from bayesirl.model.likelihood import check_rationality, demo_log_likelihood
from bayesirl.posterior.files import atomic_write
from bayesirl.posterior.reward_posterior import require_draws
from bayesirl.testing import simulate_demos, tiny_chain_mdp

MAP_NEEDS_DRAWS = "method='map' posterior has 1; a MAP fit is one point estimate"


@pytest.fixture(scope="module")
def fits():
    """``(mdp, demos, map_post, laplace_post)`` on the tiny chain MDP."""
    mdp = tiny_chain_mdp()
    demos = simulate_demos(mdp, mdp.reward, 10, seed=0)
    model = birl.LinearReward(mdp.features)
    map_post = birl.infer(mdp, demos, model, method="map", progress=False)
    laplace = birl.infer(mdp, demos, model, method="laplace", num_samples=20, progress=False)
    return mdp, demos, map_post, laplace


def _draws(mdp, n=4, seed=0):
    return torch.randn(n, mdp.n_states, generator=torch.Generator().manual_seed(seed))


def _log_mean_exp(rows):
    rows = torch.stack(rows)
    return torch.logsumexp(rows, 0) - math.log(rows.shape[0])


# ---------------------------------------------------------------- held-out likelihood (D3)
def test_held_out_log_likelihood_uses_the_posteriors_fixed_rationality(fits):
    mdp, demos, _, _ = fits
    post = RewardPosterior.from_draws(mdp, _draws(mdp), rationality=5.0)
    own = held_out_log_likelihood(mdp, post, demos)
    torch.testing.assert_close(own, held_out_log_likelihood(mdp, post.reward(), demos,
                                                            rationality=5.0))
    assert not torch.allclose(own, held_out_log_likelihood(mdp, post.reward(), demos))
    # an explicit rationality is honoured: the draws scored under another expert on purpose
    torch.testing.assert_close(held_out_log_likelihood(mdp, post, demos, rationality=1.0),
                               held_out_log_likelihood(mdp, post.reward(), demos))


def test_held_out_log_likelihood_uses_the_posteriors_likelihood(fits):
    mdp, demos, _, _ = fits
    draws = _draws(mdp, 3, seed=1)
    post = RewardPosterior.from_draws(mdp, draws, likelihood="boltzmann", rationality=2.0)
    want = _log_mean_exp([demo_log_likelihood(mdp, demos, post.reward()[d], "boltzmann", 2.0)
                          for d in range(3)])
    torch.testing.assert_close(held_out_log_likelihood(mdp, post, demos), want)
    soft = held_out_log_likelihood(mdp, post, demos, likelihood="soft")
    assert not torch.allclose(soft, want)
    with pytest.raises(ValueError, match="likelihood is 'hard'"):
        held_out_log_likelihood(mdp, post, demos, likelihood="hard")


def test_held_out_log_likelihood_takes_inferred_rationality_per_draw(fits):
    mdp, demos, _, _ = fits
    R = _draws(mdp, 4, seed=2)[:, :, None].expand(-1, -1, mdp.n_actions)
    beta = torch.tensor([0.5, 1.0, 2.0, 4.0])
    post = RewardPosterior(mdp, R[None], params={"rationality": beta[None]},
                           settings={"likelihood": "soft"})
    want = _log_mean_exp([demo_log_likelihood(mdp, demos, R[d], "soft", float(beta[d]))
                          for d in range(4)])
    torch.testing.assert_close(held_out_log_likelihood(mdp, post, demos), want)
    # the same per-draw values may be passed for bare draws
    torch.testing.assert_close(held_out_log_likelihood(mdp, R, demos, rationality=beta), want)
    with pytest.raises(ValueError, match=re.escape("rationality has shape (3,), expected a "
                                                   "number or one per reward")):
        held_out_log_likelihood(mdp, R, demos, rationality=beta[:3])
    with pytest.raises(ValueError, match=re.escape("rationality[1] is -1.0")):
        held_out_log_likelihood(mdp, R, demos, rationality=torch.tensor([1.0, -1, 1, 1]))


# ---------------------------------------------------------------- one draw for draws (D5)
def test_require_draws_names_the_tool_and_the_method():
    require_draws(2, "tool")
    with pytest.raises(ValueError, match=r"^tool needs at least 2 posterior draws, got 1$"):
        require_draws(1, "tool")
    with pytest.raises(ValueError, match=r"tool needs at least 4 draws per chain, the "
                                         r"method='nuts' posterior has 3$"):
        require_draws(3, "tool", 4, method="nuts", per_chain=True)


def test_a_map_posterior_is_refused_where_draws_are_needed(fits):
    mdp, _, post, laplace = fits
    plan = birl.value_iteration(mdp, post.mean_reward())
    calls = {
        "credible_interval()": lambda: post.credible_interval(),
        "active_query(criterion='info_gain')": lambda: birl.decisions.active_query(
            mdp, post, criterion="info_gain"),
        "value_at_risk_bound": lambda: birl.decisions.value_at_risk_bound(mdp, post, plan),
        "plot_posterior": lambda: birl.plots.plot_posterior(post),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match=re.escape(f"{what} needs at least 2 posterior "
                                                       f"draws, the {MAP_NEEDS_DRAWS}")):
            call()
    with pytest.raises(ValueError, match=re.escape("plot_diagnostics needs at least 4 draws "
                                                   "per chain")):
        birl.plots.plot_diagnostics(post)
    # one draw of a bare tensor too: every information gain would be 0
    with pytest.raises(ValueError, match=r"needs at least 2 posterior draws, got 1"):
        birl.decisions.active_query(mdp, post.reward(), criterion="info_gain")
    # what a single draw does answer still works; several draws pass
    assert birl.decisions.active_query(mdp, post).scores.shape == (mdp.n_states,)
    lo, hi = laplace.credible_interval()
    assert (hi - lo).max() > 0
    assert birl.decisions.active_query(mdp, laplace, criterion="info_gain").scores.max() > 0


# ---------------------------------------------------------------- var_names (D7)
def test_var_names_are_checked_against_the_posterior(fits):
    _, _, post, laplace = fits
    msg = re.escape("var_names has 'beta', expected names from ['theta', 'reward']")
    with pytest.raises(ValueError, match=msg):
        laplace.summary(var_names=["beta"])
    with pytest.raises(ValueError, match=msg):
        post.summary(var_names=["beta"])
    with pytest.raises(ValueError, match=msg):
        birl.plots.plot_posterior(laplace, var_names=["beta"])
    with pytest.raises(ValueError, match=msg):
        birl.plots.plot_posterior(laplace.to_arviz(), var_names=["theta", "beta"])
    assert laplace.summary(var_names="theta").shape[0] == 2
    assert laplace.summary(var_names=["~reward"]).shape[0] == 2
    assert post.summary(var_names=["theta"]).shape[0] == 2


# ---------------------------------------------------------------- EPIC shapes (D9)
def test_epic_distance_batches_that_do_not_broadcast_are_named(fits):
    mdp = fits[0]
    S = mdp.n_states
    with pytest.raises(ValueError, match=re.escape(f"r1 has shape (3, {S}, 2) and r2 (4, {S}, "
                                                   "2): their leading (batch) dims (3,) and "
                                                   "(4,) do not broadcast")):
        epic_distance(mdp, torch.randn(3, S), torch.randn(4, S))
    assert epic_distance(mdp, torch.randn(3, 1, S), torch.randn(4, S)).shape == (3, 4)


# ---------------------------------------------------------------- rollout actions (D10)
@pytest.mark.parametrize("action", [2, -1, 0.7, np.array([1, 0]), True, "1"])
def test_rollout_refuses_an_action_that_is_not_one(action):
    with pytest.raises(ValueError, match=r"policy returned .* in episode 0, step 0, expected "
                                         r"an integer action in \[0, 2\)"):
        rollout("CartPole-v1", lambda obs: action, 1, progress=False)


def test_rollout_takes_numpy_and_tensor_integers():
    for action in (np.int64(1), np.array(1), torch.tensor(1)):
        data = rollout("CartPole-v1", lambda obs, a=action: a, 1, seed=0, progress=False)
        assert (data.actions[data.mask] == 1).all()


# ---------------------------------------------------------------- NumPy scalars (D12)
def test_infer_takes_numpy_integers(chain_problem):
    mdp, demos, model = chain_problem
    post = birl.infer(mdp, demos, model, method="laplace", num_samples=np.int64(5),
                      seed=np.int64(2), progress=False)
    assert post.num_draws == 5
    assert type(post.settings["seed"]) is int and type(post.settings["num_samples"]) is int


def test_infer_options_take_numpy_numbers():
    out = facade._check_options("nuts", "auto", np.int64(10), np.int32(5), np.int64(2),
                                np.int64(3), np.uint32(7), np.int64(4), np.int64(5),
                                np.float32(0.9), np.float64(0.01), np.float32(0.5))
    assert out["num_samples"] == 10 and type(out["num_samples"]) is int
    assert out["seed"] == 7 and type(out["seed"]) is int
    assert out["target_accept"] == pytest.approx(0.9) and type(out["target_accept"]) is float
    assert out["lr_decay"] == 0.5
    with pytest.raises(ValueError, match=r"target_accept is 1.0, expected a number in \(0, 1\)"):
        facade._check_options("nuts", "auto", 10, 5, 2, 3, 7, 4, 5, 1.0, 0.01, 0.5)
    with pytest.raises(ValueError, match=r"lr_decay is 0.0, .* \(the SVI step at the last"):
        facade._check_options("nuts", "auto", 10, 5, 2, 3, 7, 4, 5, 0.8, 0.01, 0.0)


def test_rationality_takes_numpy_and_0d_tensors(fits):
    mdp = fits[0]
    for value in (np.float32(2.0), np.int64(2), torch.tensor(2.0), torch.tensor(2)):
        assert check_rationality(value) == 2.0
    for bad in (torch.tensor(True), torch.tensor([2.0]), np.float32(-1.0), "2"):
        with pytest.raises(ValueError, match="rationality is .*, expected a number > 0"):
            check_rationality(bad)
    post = RewardPosterior.from_draws(mdp, _draws(mdp), rationality=np.float32(2.0))
    assert float(post.rationality[0]) == 2.0


def test_predictive_and_tabular_reward_take_numpy_integers(fits):
    post = fits[3]
    assert post.predictive(np.int64(3), seed=np.int64(1)).n == 3
    model = birl.TabularReward(np.int64(3), np.int64(2))
    assert model.shape == (3, 2) and all(type(n) is int for n in model.shape)


# ---------------------------------------------------------------- predictive's seed (D11)
def test_predictive_checks_its_seed(fits):
    post = fits[3]
    with pytest.raises(TypeError, match="seed must be an integer, got '1'"):
        post.predictive(3, seed="1")
    with pytest.raises(ValueError, match="seed is 1152921504606846976, expected an integer "
                                         r"\[0, 4294967295\]"):
        post.predictive(3, seed=2 ** 60)  # seed * 100_003 overflowed torch's 64 bits
    with pytest.raises(ValueError, match="seed is -1"):
        post.predictive(3, seed=-1)
    assert post.predictive(2, seed=facade.SEED_MAX).n == 2


# ---------------------------------------------------------------- reward slice (D13)
def test_plot_reward_slice_needs_a_continuous_posterior(fits):
    with pytest.raises(TypeError, match="posterior must be a ContinuousPosterior .* got "
                                        "RewardPosterior"):
        birl.plots.plot_reward_slice(fits[3])


# ---------------------------------------------------------------- CSV files (D14)
def test_a_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text("id,period,state,action\n1,1,0,0\n1,2,1,1\n", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert list(read_csv_columns(path)) == ["id", "period", "state", "action"]
    panel = load_panel(path)
    assert len(panel) == 2


def test_a_file_that_is_no_csv_is_named(tmp_path):
    binary = tmp_path / "data.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01")
    with pytest.raises(ValueError, match=re.escape(f"{str(binary)!r} is not a UTF-8 text "
                                                   "file")):
        load_panel(binary)
    with pytest.raises(ValueError, match=re.escape(f"{str(tmp_path)!r} is a directory, "
                                                   "expected a CSV file")):
        read_csv_columns(tmp_path)


# ---------------------------------------------------------------- point mass (D16)
@pytest.fixture(scope="module")
def mass():
    return point_mass(grid=5)


def test_point_mass_dynamics_checks_the_actions(mass):
    obs = np.zeros((1, 2))
    for bad in (5, -1):
        with pytest.raises(ValueError, match=rf"actions\[0\] is {bad}, expected an action "
                                             r"index in \[0, 5\)"):
            mass.dynamics(obs, np.array([bad]))
    with pytest.raises(TypeError, match="actions must hold integer indices"):
        mass.dynamics(torch.zeros(1, 2), torch.tensor([1.5]))
    nxt, _ = mass.dynamics(torch.zeros(1, 2), torch.tensor([4]))
    torch.testing.assert_close(nxt, torch.tensor([[mass.step_size, 0.0]]))


def test_point_mass_checks_the_observations(mass):
    with pytest.raises(ValueError, match=re.escape("obs must have shape (..., 2), the point's "
                                                   "(x, y), got (3, 1)")):
        mass.log_policy(np.zeros((3, 1)))
    with pytest.raises(ValueError, match=re.escape("got (3, 3)")):
        mass.true_reward(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=re.escape("got (2, 1)")):
        mass.dynamics(np.zeros((2, 1)), np.array([0, 0]))


def test_point_mass_checks_tol():
    with pytest.raises(ValueError, match="tol is -1, expected a number > 0"):
        point_mass(grid=3, tol=-1)


# ---------------------------------------------------------------- indexing (D6)
@pytest.fixture
def traj():
    g = torch.Generator().manual_seed(0)
    return Trajectories.from_arrays(torch.randn(3, 5, 2, generator=g),
                                    torch.tensor([[0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 1]]),
                                    lengths=[4, 2, 3], rewards=torch.ones(3, 4))


def test_trajectories_indexing(traj):
    with pytest.raises(IndexError, match=re.escape("trajectory 7 out of range for 3 "
                                                   "trajectories, expected an index in [-3, 3)")):
        traj[7]
    with pytest.raises(IndexError, match=re.escape("index[1] is 5, out of range for 3 "
                                                   "trajectories")):
        traj[[0, 5]]
    with pytest.raises(IndexError, match=re.escape("the bool mask has shape (2,), expected "
                                                   "(3,)")):
        traj[torch.tensor([True, False])]
    for bad in (1.0, [0.0, 1.0], "a", None):
        with pytest.raises(TypeError, match="trajectories must be indexed by an integer"):
            traj[bad]
    for one in (torch.tensor(1), np.int64(1), -2):
        assert torch.equal(traj[one].obs, traj[[1]].obs) and traj[one].n == 1
    picked = traj[torch.tensor([True, False, True])]
    assert torch.equal(picked.lengths, torch.tensor([4, 3]))
    assert torch.equal(traj[np.array([2, 0])].lengths, torch.tensor([3, 4]))


def test_preferences_indexing(chain_problem):
    _, demos, _ = chain_problem
    prefs = birl.Preferences.from_demonstrations(demos, [[0, 1], [2, 3]])
    with pytest.raises(IndexError, match=re.escape("pair 5 out of range for 2 pairs")):
        prefs[5]
    with pytest.raises(TypeError, match="pairs must be indexed by an integer"):
        prefs[0.5]
    with pytest.raises(IndexError, match=re.escape("the bool mask has shape (3,)")):
        prefs[[True, False, True]]
    assert prefs[torch.tensor(1)].pairs.tolist() == [[2, 3]]
    assert prefs[[False, True]].pairs.tolist() == [[2, 3]]
    with pytest.raises(TypeError, match=re.escape("ties must be boolean (or 0/1), got ['yes']")):
        birl.Preferences.from_demonstrations(demos, [[0, 1]], ties=["yes"])


# ---------------------------------------------------------------- trajectories' fields (D15)
@pytest.mark.parametrize("discount,match", [(math.nan, "discount is nan"),
                                            (2.0, "discount is 2.0"),
                                            ("0.9", "discount is '0.9'")])
def test_returns_checks_the_discount(traj, discount, match):
    with pytest.raises(ValueError, match=match + re.escape(", expected a number in [0, 1]")):
        traj.returns(discount)


def test_trajectories_to_refuses_a_dtype_that_is_not_floating(traj):
    with pytest.raises(TypeError, match="dtype must be a floating torch dtype"):
        traj.to(dtype=torch.int64)
    assert traj.to(dtype=torch.float32).obs.dtype == torch.float32


def test_from_imitation_reads_terminal_as_a_bool():
    def one(terminal):
        return {"obs": np.zeros((3, 2)), "acts": [0, 1], "terminal": terminal}

    with pytest.raises(TypeError, match=re.escape("trajectories[0].terminal must be boolean "
                                                  "(or 0/1), got 'False'")):
        Trajectories.from_imitation([one("False")])
    assert Trajectories.from_imitation([one(np.bool_(True))]).terminals.tolist() == [[False,
                                                                                        True]]
    assert not Trajectories.from_imitation([one(False)]).terminals.any()


# ---------------------------------------------------------------- decisions' inputs
def test_cvar_refuses_what_is_not_one_value_per_draw():
    with pytest.raises(ValueError, match=re.escape("values must have shape (D,), one value per "
                                                   "draw, got (3, 4)")):
        birl.decisions.cvar(torch.randn(3, 4), 0.9)
    with pytest.raises(TypeError, match="values must be an array of numbers, got str"):
        birl.decisions.cvar("abc", 0.9)
    with pytest.raises(TypeError, match="weights must be an array of numbers"):
        birl.decisions.cvar([1.0, 2.0], 0.5, weights=["a", "b"])


def test_counterfactual_names_a_site_value_that_is_no_number(fits):
    with pytest.raises(TypeError, match=re.escape("params['theta'] must be an array of "
                                                  "numbers, got str")):
        birl.decisions.counterfactual(fits[3], params={"theta": "x"}, progress=False)


def test_active_query_says_when_exclude_leaves_no_state(fits):
    mdp, _, _, post = fits
    with pytest.raises(ValueError, match="exclude leaves no state to query: it excludes all 3 "
                                         "states"):
        birl.decisions.active_query(mdp, post, exclude=[0, 1, 2])


def test_plot_diagnostics_checks_max_params(fits):
    with pytest.raises(ValueError, match="max_params is 0, expected an integer >= 1"):
        birl.plots.plot_diagnostics(fits[3], max_params=0)


# ---------------------------------------------------------------- files
def test_save_into_a_missing_folder_names_the_folder(fits, tmp_path):
    target = tmp_path / "missing_dir" / "x.nc"
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"cannot write {target}: its folder {target.parent} does not exist")):
        fits[3].save(target)
    with pytest.raises(IsADirectoryError, match=re.escape(f"cannot write {tmp_path}: it is a "
                                                          "folder")):
        atomic_write(tmp_path, lambda tmp: None)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
