"""Tests of bayesirl.plots.figures: what is drawn (image data, colorbars, arrows, lines), not only
that
it runs. Rendering uses Agg (conftest)."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.lines import Line2D
from matplotlib.quiver import Quiver

import bayesirl as birl
from bayesirl import plots
from bayesirl.core.envs import GRID_ACTIONS
from bayesirl.posterior.arviz_io import ARVIZ_1


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def grid():
    return birl.envs.gridworld(size=4, block=2, horizon=5, seed=0, dtype=torch.float64)


def fake_posterior(mdp, n=40, seed=0, state_action=False):
    """A posterior of known draws: reward = truth + noise whose sd grows with the state."""
    g = torch.Generator().manual_seed(seed)
    S, A = mdp.n_states, mdp.n_actions
    shape = (n, S, A) if state_action else (n, S)
    sd = torch.linspace(0.1, 1.0, S, dtype=torch.float64)
    sd = sd[:, None] if state_action else sd
    truth = mdp.reward if not state_action else mdp.reward[:, None].expand(S, A)
    draws = truth + sd * torch.randn(shape, generator=g, dtype=torch.float64)
    return birl.RewardPosterior.from_draws(mdp, draws)


def colorbar_label(ax):
    return ax.images[0].colorbar.ax.get_ylabel()


def test_reward_heatmap_is_the_reward_on_the_grid(grid):
    ax = plots.plot_reward(grid)
    img = ax.images[0].get_array()
    np.testing.assert_allclose(np.asarray(img), grid.reward.numpy().reshape(4, 4))
    assert colorbar_label(ax) == "reward"
    assert ax.get_title() == "true reward"
    assert ax.get_xlabel() == "column" and ax.get_ylabel() == "row"
    assert ax.get_xlim() == (-0.5, 3.5) and ax.get_ylim() == (3.5, -0.5)  # row 0 on top


def test_posterior_mean_sd_and_width_maps(grid):
    post = fake_posterior(grid)
    draws = post.reward()[..., 0].numpy()
    ax = plots.plot_reward(post, stat="mean")
    np.testing.assert_allclose(ax.images[0].get_array(), draws.mean(0).reshape(4, 4))
    assert ax.get_title() == "posterior mean reward" and colorbar_label(ax) == "reward"
    ax = plots.plot_reward(post, stat="sd")
    np.testing.assert_allclose(ax.images[0].get_array(), draws.std(0, ddof=1).reshape(4, 4))
    assert colorbar_label(ax) == "posterior sd of reward"
    ax = plots.plot_reward(post, stat="width", prob=0.8)
    lo, hi = np.quantile(draws, [0.1, 0.9], axis=0)
    np.testing.assert_allclose(ax.images[0].get_array(), (hi - lo).reshape(4, 4))
    assert colorbar_label(ax) == "80% interval width of reward"


def test_state_action_reward_is_reduced_with_a_note(grid):
    r = torch.arange(16 * 5, dtype=torch.float64).reshape(16, 5)
    ax = plots.plot_reward(grid, r)
    np.testing.assert_allclose(ax.images[0].get_array(), r.max(1).values.reshape(4, 4))
    assert "(max over actions)" in ax.get_title()
    ax = plots.plot_reward(grid, r, over_actions="mean")
    np.testing.assert_allclose(ax.images[0].get_array(), r.mean(1).reshape(4, 4))
    assert "(mean over actions)" in ax.get_title()


def test_reward_bars_for_non_grid_mdp():
    mdp = birl.envs.random_mdp(n_states=6, n_actions=2, horizon=3, dtype=torch.float64)
    ax = plots.plot_reward(mdp)
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, mdp.reward.numpy())
    assert ax.get_xlabel() == "state" and ax.get_ylabel() == "reward"
    post = fake_posterior(mdp)
    ax = plots.plot_reward(post, stat="sd")
    sd = post.reward()[..., 0].std(0).numpy()
    np.testing.assert_allclose([p.get_height() for p in ax.patches], sd)
    assert ax.get_ylabel() == "posterior sd of reward"


def test_reward_points_for_many_states():
    mdp = birl.envs.random_mdp(n_states=60, n_actions=2, horizon=3, dtype=torch.float64)
    ax = plots.plot_reward(mdp)
    x, y = ax.get_lines()[0].get_data()
    np.testing.assert_allclose(x, np.arange(60))
    np.testing.assert_allclose(y, mdp.reward.numpy())
    post = fake_posterior(mdp)
    ax = plots.plot_reward(post)
    x, y = ax.containers[0].lines[0].get_data()
    np.testing.assert_allclose(y, post.reward()[..., 0].mean(0).numpy())
    assert "90% interval" in ax.get_legend().get_texts()[0].get_text()


def test_reward_errors(grid):
    with pytest.raises(ValueError, match="stat is 'median'"):
        plots.plot_reward(grid, stat="median")
    with pytest.raises(ValueError, match="needs posterior draws"):
        plots.plot_reward(grid, stat="sd")
    with pytest.raises(ValueError,
                       match=r"reward must have shape \(\.\.\., 16, 5\) or \(\.\.\., 16\)"):
        plots.plot_reward(grid, torch.zeros(7))


def test_reward_panels_mean_and_sd_side_by_side(grid):
    post = fake_posterior(grid)
    axes = plots.plot_reward_panels(post)
    assert len(axes) == 2
    assert [colorbar_label(a) for a in axes] == ["reward", "posterior sd of reward"]
    axes = plots.plot_reward_panels(post, show_true=True)
    assert [a.get_title() for a in axes] == ["true reward", "posterior mean reward",
                                            "posterior sd of reward"]


def quiver_of(ax):
    (q,) = [c for c in ax.collections if isinstance(c, Quiver)]
    return q


def test_policy_arrows_have_lengths_proportional_to_probabilities(grid):
    S, A = grid.n_states, grid.n_actions
    probs = torch.softmax(torch.randn(S, A, generator=torch.Generator().manual_seed(1),
                                      dtype=torch.float64) * 2, -1)
    ax = plots.plot_policy(grid, probs, min_prob=0.05)
    q = quiver_of(ax)
    p = probs.numpy()
    moving = [a for a, name in enumerate(GRID_ACTIONS) if name != "stay"]
    shown = p[:, moving] >= 0.05
    assert q.N == shown.sum()
    lengths = np.hypot(q.U, q.V)
    # quiver order: action by action, states in order
    order = np.concatenate([p[:, a][p[:, a] >= 0.05] for a in moving])
    np.testing.assert_allclose(lengths / order, np.full(len(order), lengths[0] / order[0]))
    # the most likely action drawn (stay included) would get 0.45 cells
    assert lengths.max() == pytest.approx(0.45 * p[:, moving].max() / p.max())
    # directions: "up" is -row (drawn upward since row 0 is on top), "right" is +column
    up = np.flatnonzero((q.V < 0) & (q.U == 0))
    assert len(up) == (p[:, 1] >= 0.05).sum()
    # stay is a dot whose area is proportional to its probability
    (dots,) = [c for c in ax.collections if c is not q]
    stay = p[:, 0][p[:, 0] >= 0.05]
    np.testing.assert_allclose(dots.get_sizes() / stay, dots.get_sizes()[0] / stay[0])
    assert ax.get_xlim() == (-0.5, 3.5) and ax.get_ylim() == (3.5, -0.5)


def test_policy_directions_point_the_right_way(grid):
    probs = torch.zeros(16, 5, dtype=torch.float64)
    probs[:, 4] = 1.0  # everyone goes right
    probs[5] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])  # state 5 goes up
    q = quiver_of(plots.plot_policy(grid, probs))
    assert q.N == 16
    np.testing.assert_allclose(q.U[q.U != 0], 0.45)
    (i,) = np.flatnonzero(q.V != 0)
    assert (q.X[i], q.Y[i], q.V[i]) == (1, 1, -0.45)


def test_time_indexed_policy_uses_step_t_and_uncertainty_sets_alpha(grid):
    plan = birl.soft_value_iteration(grid, grid.reward * 3)
    ax = plots.plot_policy(grid, plan, t=2, min_prob=0.0)
    q = quiver_of(ax)
    p2 = plan.log_policy.exp()[2].numpy()
    np.testing.assert_allclose(np.sort(np.hypot(q.U, q.V)),
                               np.sort(0.45 * p2[:, 1:].ravel() / p2.max()))
    assert "(t = 2)" in ax.get_title(loc="left")
    u = np.linspace(0, 1, 16)
    q = quiver_of(plots.plot_policy(grid, plan, uncertainty=u, min_prob=0.0))
    alphas = q.get_facecolors()[:, 3]
    assert alphas.max() == pytest.approx(1.0) and alphas.min() == pytest.approx(0.15)


def test_policy_of_posterior_with_sd_uncertainty(grid):
    post = fake_posterior(grid)
    ax = plots.plot_policy(grid, post, uncertainty="sd", background=post.mean_reward()[:, 0])
    assert "faint = uncertain" in ax.get_title(loc="left")
    assert colorbar_label(ax) == "posterior mean reward"
    alphas = quiver_of(ax).get_facecolors()[:, 3]
    assert alphas.min() < 0.5 < alphas.max()


def test_policy_image_for_non_grid_mdp():
    mdp = birl.envs.random_mdp(n_states=6, n_actions=3, horizon=3, dtype=torch.float64)
    probs = torch.full((6, 3), 1 / 3, dtype=torch.float64)
    ax = plots.plot_policy(mdp, probs)
    np.testing.assert_allclose(ax.images[0].get_array(), probs.numpy())
    assert colorbar_label(ax) == "action probability"
    assert ax.get_xlabel() == "action" and ax.get_ylabel() == "state"


def test_policy_with_gym_directions():
    mdp = birl.envs.gridworld(size=2, block=1, horizon=2).replace(action_names=None)
    assert mdp.action_names is None
    probs = torch.zeros(4, 5)
    probs[:, 2] = 1.0
    q = quiver_of(plots.plot_policy(mdp, probs, directions=GRID_ACTIONS))
    np.testing.assert_allclose(q.V, 0.45)  # "down" is +row
    with pytest.raises(ValueError, match="directions is"):
        plots.plot_policy(mdp, probs, directions=("north",) * 5)


def texts_of(ax):
    return sorted((t.get_text(), tuple(np.round(t.get_position(), 2))) for t in ax.texts)


def test_frozenlake_marks_start_holes_and_goal():
    pytest.importorskip("gymnasium")
    mdp = birl.envs.from_gymnasium("FrozenLake-v1", horizon=5, dtype=torch.float64)
    marks = plots.map_marks(mdp)
    assert marks == {0: "S", 5: "H", 7: "H", 11: "H", 12: "H", 15: "G"}
    cells = sorted((label, (s % 4, s // 4)) for s, label in marks.items())     # (x=col, y=row)
    post = birl.RewardPosterior.from_draws(mdp, torch.randn(
        10, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    for ax in (plots.plot_reward(post), plots.plot_reward(post, stat="sd")):
        assert texts_of(ax) == cells
        assert {t.get_ha() for t in ax.texts} == {"center"}
    ax = plots.plot_policy(mdp, post, directions=plots.GYM_DIRECTIONS["FrozenLake"])
    assert texts_of(ax) == [(label, (round(x - 0.42, 2), round(y - 0.42, 2)))
                            for label, (x, y) in cells]
    assert len(plots.plot_reward(post, marks=None).texts) == 0


def test_marks_given_by_the_user(grid):
    ax = plots.plot_reward(grid, marks={(1, 2): "L", 0: "A", np.int64(15): "G"})
    assert texts_of(ax) == [("A", (0, 0)), ("G", (3, 3)), ("L", (2, 1))]
    assert len(plots.plot_reward(grid).texts) == 0          # gridworld has no map: nothing marked
    assert plots.map_marks(grid) == {}
    probs = torch.full((grid.n_states, 5), 0.2, dtype=torch.float64)
    ax = plots.plot_policy(grid, probs, marks={5: "X"})
    assert texts_of(ax) == [("X", (0.58, 0.58))]


@pytest.mark.parametrize("marks, error, match", [
    ({16: "X"}, ValueError, r"marks key 16 is not a state in \[0, 16\)"),
    ({(4, 0): "X"}, ValueError, r"marks key \(4, 0\) .* 4 x 4 grid"),
    ({True: "X"}, ValueError, "marks key True"),
    ({0: ""}, ValueError, r"marks\[0\] is ''"),
    ({0: 1}, ValueError, r"marks\[0\] is 1, expected a non-empty string"),
    ([0, 1], TypeError, "marks must be 'auto', None or a dict"),
])
def test_bad_marks(grid, marks, error, match):
    with pytest.raises(error, match=match):
        plots.plot_reward(grid, marks=marks)


def test_marks_need_a_grid():
    mdp = birl.envs.random_mdp(n_states=6, n_actions=3, horizon=3, dtype=torch.float64)
    assert len(plots.plot_reward(mdp).texts) == 0           # "auto": nothing to mark
    with pytest.raises(ValueError, match="marks are drawn on grid MDPs"):
        plots.plot_reward(mdp, marks={0: "X"})


def test_visits_map_is_the_occupancy(grid):
    plan = birl.soft_value_iteration(grid, grid.reward)
    visits = birl.occupancy(grid, plan).sum(-1).numpy()
    ax = plots.plot_visits(grid, plan)
    np.testing.assert_allclose(ax.images[0].get_array(), visits.reshape(4, 4))
    assert colorbar_label(ax) == "expected visits"
    ax = plots.plot_visits(grid, plan.log_policy.exp(), vmax=0.5, marks={0: "S"})
    assert ax.images[0].get_clim() == (0.0, 0.5)
    assert colorbar_label(ax) == "expected visits (clipped at 0.5)"
    assert texts_of(ax) == [("S", (0, 0))]
    mdp = birl.envs.random_mdp(n_states=6, n_actions=3, discount=0.5, dtype=torch.float64)
    plan = birl.soft_value_iteration(mdp, mdp.reward)
    ax = plots.plot_visits(mdp, plan)
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, birl.occupancy(mdp, plan).sum(-1).numpy())
    assert ax.get_ylabel() == "expected discounted visits"
    ax = plots.plot_visits(mdp, plan, vmax=0.1)
    assert ax.get_ylim() == (0.0, 0.1)
    assert ax.get_ylabel() == "expected discounted visits (clipped at 0.1)"


def test_policy_figures_refuse_what_is_not_a_policy(grid):
    """plot_policy drew no arrow for log-probabilities and drew Q-values or scaled
    probabilities as if they were probabilities; plot_visits summed negative visits."""
    plan = birl.soft_value_iteration(grid, grid.reward)
    for bad, match in ((plan.log_policy, r"policy\[0, 0, 0\] is -.*, expected a probability "
                                         r">= 0"),
                       (plan.q.abs() + 1, r"policy\[0, 0\] sums to .*, expected 1"),
                       (plan.policy * 3, r"policy\[0, 0\] sums to 3, expected 1")):
        for draw in (plots.plot_policy, plots.plot_visits):
            with pytest.raises(ValueError, match=match):
                draw(grid, bad)
    assert plt.get_fignums() == []                   # refused before a figure is made


def test_visits_and_reward_of_a_posterior_on_an_mdp(grid):
    """plot_reward(mdp, posterior) and plot_visits(mdp, posterior) failed inside float(): the
    posterior's reward draws and its posterior-averaged policy (as plot_policy draws it)."""
    post = fake_posterior(grid)
    ax = plots.plot_visits(grid, post)
    visits = birl.occupancy(grid, post.policy()).sum(-1).numpy()
    np.testing.assert_allclose(ax.images[0].get_array(), visits.reshape(4, 4))
    for stat in ("mean", "sd"):
        ax = plots.plot_reward(grid, post, stat=stat)
        expected = plots.plot_reward(post, stat=stat)
        np.testing.assert_allclose(ax.images[0].get_array(), expected.images[0].get_array())
        assert ax.get_title() == expected.get_title()
    other = birl.envs.random_mdp(n_states=6, n_actions=2, horizon=3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"reward is a RewardPosterior whose reward\(\) has "
                                        r"shape \(40, 16, 5\), expected draws \(n, 6, 2\)"):
        plots.plot_reward(other, post)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_reward_map_refuses_a_non_finite_reward(grid, bad):
    r = torch.zeros(grid.n_states, dtype=torch.float64)
    r[3] = bad
    with pytest.raises(ValueError, match=rf"reward\[3\] is {bad}, expected a finite number"):
        plots.plot_reward(grid, r)
    with pytest.raises(TypeError, match="reward must be real-valued"):
        plots.plot_reward(grid, torch.zeros(grid.n_states, dtype=torch.complex128))


def test_recovery_plot_points_intervals_and_identity(grid):
    post = fake_posterior(grid)
    ax = plots.plot_recovery(grid.reward, post, prob=0.9)
    lines = [ln for ln in ax.get_lines() if ln.get_label() == "identity"]
    assert len(lines) == 1 and isinstance(lines[0], Line2D)
    (x0, y0), (x1, y1) = lines[0].get_xydata()[:2] if len(lines[0].get_xydata()) > 1 else (
        (0, 0), (1, 1))
    assert (y1 - y0) == pytest.approx(x1 - x0)  # slope 1
    container = ax.containers[0]
    x, y = container.lines[0].get_data()
    np.testing.assert_allclose(x, grid.reward.numpy())
    np.testing.assert_allclose(y, post.reward()[..., 0].mean(0).numpy())
    assert ax.get_xlabel() == "true reward" and ax.get_ylabel() == "inferred reward"
    lo, hi = ax.get_xlim()
    assert lo <= grid.reward.min() and hi >= grid.reward.max()
    assert ax.get_xlim() == ax.get_ylim()


def test_recovery_from_draws_centred():
    true = np.array([1.0, 2.0, 3.0])
    draws = true + 5.0 + np.zeros((10, 3))
    ax = plots.plot_recovery(true, draws, center=True, label="theta")
    x, y = ax.containers[0].lines[0].get_data()
    np.testing.assert_allclose(x, [-1, 0, 1])
    np.testing.assert_allclose(y, [-1, 0, 1])
    assert ax.get_xlabel() == "true theta (centred)"
    with pytest.raises(ValueError, match="draws have shape"):
        plots.plot_recovery(true, np.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"true\[1\] is nan, expected a finite number"):
        plots.plot_recovery(np.array([1.0, np.nan, 3.0]), draws)
    with pytest.raises(ValueError, match=r"draws\[2, 0\] is inf, expected a finite number"):
        plots.plot_recovery(true, np.where(np.arange(30).reshape(10, 3) == 6, np.inf, draws))


@pytest.fixture(scope="module")
def mcmc_post():
    """A two-chain posterior of known draws over theta (2 features), as MCMC would give."""
    mdp = birl.envs.gridworld(size=2, block=1, horizon=3, seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(2, 50, 4, generator=g, dtype=torch.float64) * torch.tensor(
        [1.0, 0.5, 0.2, 2.0], dtype=torch.float64)
    rewards = torch.einsum("cnd,sd->cns", theta, mdp.features)[..., None].expand(-1, -1, -1, 5)
    return birl.RewardPosterior(mdp, rewards, params={"theta": theta}, method="nuts",
                                dims={"theta": ("feature",)},
                                coords={"feature": ["a", "b", "c", "d"]})


@pytest.mark.parametrize("kind", ["trace", "rank", "forest"])
def test_plot_posterior_wraps_arviz(mcmc_post, kind):
    axes = np.asarray(plots.plot_posterior(mcmc_post, kind=kind))
    assert axes.size >= 1
    text = " ".join(a.get_title() + " " + " ".join(t.get_text() for t in a.get_yticklabels())
                    for a in axes.ravel())
    if ARVIZ_1:  # ArviZ 1.x names the site in the y label (trace) or in text artists (forest)
        text += " ".join(a.get_ylabel() + " " + " ".join(t.get_text() for t in a.texts)
                         for a in axes.ravel())
    assert "theta" in text
    with pytest.raises(ValueError, match="kind is 'pair'"):
        plots.plot_posterior(mcmc_post, kind="pair")


@pytest.mark.parametrize("kind, shape", [
    ("trace", (1, 2)),                           # one variable: density and trace
    ("rank", (2, 2)),                            # one plot per component of theta
    ("forest", (1, 2) if ARVIZ_1 else (1, 1)),   # 1.x: labels beside the intervals
])
def test_plot_posterior_draws_on_given_axes(mcmc_post, kind, shape):
    fig, grid = plt.subplots(*shape, squeeze=False)
    other = fig.add_axes((0.0, 0.0, 0.05, 0.05))  # not given: must stay empty
    given = grid if grid.size > 1 else grid[0, 0]
    figures = plt.get_fignums()
    axes = plots.plot_posterior(mcmc_post, kind=kind, axes=given)
    assert plt.get_fignums() == figures  # no figure of ArviZ's own
    assert list(np.ravel(axes)) == list(grid.ravel())
    assert all(ax.figure is fig for ax in np.ravel(axes))
    for ax in grid.ravel():  # every given axes is drawn on
        assert ax.get_lines() or ax.collections or ax.texts
    assert not (other.get_lines() or other.collections or other.texts)
    if kind == "forest" and ARVIZ_1:  # the labels line up with the intervals
        assert grid[0, 0].get_ylim() == grid[0, 1].get_ylim()
    # a plot after that gets a figure of its own again
    assert np.ravel(plots.plot_posterior(mcmc_post, kind=kind))[0].figure is not fig


@pytest.mark.skipif(not ARVIZ_1, reason="ArviZ 0.x checks the axes itself")
def test_plot_posterior_given_the_wrong_number_of_axes(mcmc_post):
    _, axes = plt.subplots(1, 3)
    with pytest.raises(ValueError, match=r"az\.plot_trace_dist lays this out on 1 x 2 axes; "
                                         r"axes= has 3"):
        plots.plot_posterior(mcmc_post, kind="trace", axes=axes)
    with pytest.raises(ValueError, match="matplotlib axes; got backend='bokeh'"):
        plots.plot_posterior(mcmc_post, kind="trace", axes=axes[:2], backend="bokeh")
    axes = plots.plot_posterior(mcmc_post, kind="trace")  # the grid maker is restored
    assert len(axes) == 2


def test_plot_diagnostics_rows_per_parameter(mcmc_post):
    axes = plots.plot_diagnostics(mcmc_post, max_params=2)
    assert axes.shape == (2, 3)
    titles = [a.get_title() for a in axes[:, 0]]
    assert set(titles) <= {"theta[a]", "theta[b]", "theta[c]", "theta[d]"}
    assert len(set(titles)) == 2
    assert axes[-1, 2].get_xlabel() == "rank (all chains)"
    assert len(axes[0, 1].get_lines()) >= 2  # one trace per chain


def test_plot_diagnostics_of_a_stuck_chain(mcmc_post):
    stuck = birl.RewardPosterior(mcmc_post.mdp, mcmc_post.rewards,
                                 params={"theta": mcmc_post.params["theta"].clone()},
                                 method="nuts", dims=mcmc_post.dims, coords=mcmc_post.coords)
    stuck.params["theta"][1] = stuck.params["theta"][1, :1]  # chain 2 never moves
    axes = plots.plot_diagnostics(stuck, max_params=4)
    assert axes.shape == (4, 3)


def test_plot_elbo():
    class Fit:
        extra = {"elbo": list(np.linspace(-100, -10, 200))}

    ax = plots.plot_elbo(Fit())
    x, y = ax.get_lines()[0].get_data()
    assert len(x) == 200 and y[-1] == pytest.approx(-10)
    assert ax.get_xlabel() == "SVI step" and ax.get_ylabel() == "ELBO (nats)"
    with pytest.raises(ValueError, match="no ELBO"):
        plots.plot_elbo(type("Fit", (), {"extra": {}})())


def test_functions_draw_on_given_axes(grid):
    fig, axes = plt.subplots(1, 3)
    post = fake_posterior(grid)
    assert plots.plot_reward(grid, ax=axes[0]) is axes[0]
    assert plots.plot_policy(grid, post, ax=axes[1]) is axes[1]
    assert plots.plot_recovery(grid.reward, post, ax=axes[2]) is axes[2]
    assert len(fig.axes) == 3 + 1 + 0  # one colorbar axes added


def test_gymnasium_map_knowledge_lives_beside_from_gymnasium():
    from bayesirl.core import envs

    assert plots.GYM_DIRECTIONS is envs.GYM_DIRECTIONS and plots.map_marks is envs.map_marks
    assert envs.gym_directions("FrozenLake8x8-v1") == ("left", "down", "right", "up")
    assert envs.gym_directions("CliffWalking-v0") == ("up", "right", "down", "left")
    assert envs.gym_directions("Taxi-v3") is None
    grid = birl.envs.gridworld(size=3, block=1, horizon=2)
    letters = "SFFFHFFFG"
    named = grid.replace(state_names=tuple(f"{ch}({s // 3},{s % 3})"
                                           for s, ch in enumerate(letters)))
    assert envs.map_marks(named) == {0: "S", 4: "H", 8: "G"}
    shifted = grid.replace(state_names=tuple(f"F({s % 3},{s // 3})" for s in range(9)))
    assert envs.map_marks(shifted) == {}  # names whose cell is not the state's: no map


def test_one_rule_says_what_a_posterior_is(grid):
    from bayesirl.plots.common import is_posterior

    post = birl.RewardPosterior.from_draws(grid, torch.zeros(3, grid.n_states,
                                                              dtype=torch.float64))
    assert is_posterior(post)
    assert not is_posterior(grid) and not is_posterior(grid.reward)
    assert not is_posterior(torch.zeros(3, grid.n_states))


def test_state_action_reward_with_as_many_actions_as_states():
    """An (S, A) reward with S == A is one state-action reward, as broadcast_reward and
    RewardPosterior.from_draws read it, not S draws of a state reward."""
    P = np.full((3, 3, 3), 1 / 3)
    mdp = birl.TabularMDP.from_dense(P, discount=0.9, initial=np.ones(3) / 3)
    r = torch.tensor([[0.0, 0.0, 10.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    ax = plots.plot_reward(mdp, reward=r)
    assert [p.get_height() for p in ax.patches] == [10.0, 1.0, 2.0]
    assert ax.get_title() == "reward (max over actions)"
    draws = r.expand(2, 3, 3)          # draws of state-action rewards: (n, S, A)
    ax = plots.plot_reward(mdp, reward=draws)
    np.testing.assert_allclose([p.get_height() for p in ax.patches], [10.0, 1.0, 2.0])
    states = torch.tensor([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]])   # (n, S), n != S: state rewards
    ax = plots.plot_reward(mdp, reward=states)
    np.testing.assert_allclose([p.get_height() for p in ax.patches], [1.0, 2.0, 3.0])


def _hierarchical(mdp):
    """A hierarchical posterior of 3 experts from known draws (one chain of 6)."""
    from bayesirl.model.hierarchical import HierarchicalReward, simulate_experts

    data, theta = simulate_experts(mdp, mdp.features, 2, mean=torch.tensor([1.0, -0.5]),
                                   scale=0.5, n_experts=3, seed=0)
    target = HierarchicalReward(mdp.features, 3).build_target(mdp, data)
    g = torch.Generator().manual_seed(0)
    params = {"mu": torch.randn(6, 2, generator=g), "tau": torch.rand(6, 2, generator=g),
              "z": torch.randn(6, 3, 2, generator=g)}
    return target.make_posterior(params, method="draws"), theta


def test_hierarchical_posterior_is_refused_with_what_to_pass():
    from bayesirl.testing import tiny_chain_mdp

    mdp = tiny_chain_mdp(horizon=3)
    hier, theta = _hierarchical(mdp)
    one_reward = r"takes a posterior of one reward, draws \(n, 3, 2\); HierarchicalPosterior"
    expert = r"pass posterior\.expert\(e\) for expert e's posterior"
    for draw in (lambda: plots.plot_reward(hier), lambda: plots.plot_reward_panels(hier),
                 lambda: plots.plot_policy(mdp, hier), lambda: plots.plot_visits(mdp, hier)):
        with pytest.raises(TypeError, match=one_reward + r".*\(6, 3, 3, 2\); .*" + expert):
            draw()
    with pytest.raises(TypeError, match=r"reward is a HierarchicalPosterior whose reward\(\) "
                                        r"has shape \(6, 3, 3, 2\), expected draws \(n, 3, 2\) "
                                        r"on this MDP; .*" + expert):
        plots.plot_reward(mdp, hier)
    assert plt.get_fignums() == []                   # refused before a figure is made
    with pytest.raises(ValueError, match=r"true has shape \(2,\), expected a reward \(3, 3\) or "
                                         r"\(3, 3, 2\), or theta \(3, 2\); .*" + expert):
        plots.plot_recovery(theta[0], hier)
    # what works: every expert's theta at once, one expert's posterior, the diagnostics
    ax = plots.plot_recovery(theta, hier, label="theta")
    np.testing.assert_allclose(ax.containers[0].lines[0].get_data()[1],
                               hier.theta.mean(0).reshape(-1).numpy(), rtol=1e-6)
    one = hier.expert(1)
    ax = plots.plot_reward(one)
    np.testing.assert_allclose([p.get_height() for p in ax.patches],
                               hier.reward()[:, 1, :, 0].mean(0).numpy(), rtol=1e-6)
    assert plots.plot_policy(mdp, one).images
    assert plots.plot_recovery(theta[1], one, label="theta").get_xlabel() == "true theta"
    axes = plots.plot_diagnostics(hier, max_params=3)
    assert axes.shape == (3, 3)
    assert {a.get_title().split("[")[0] for a in axes[:, 0]} <= {"mu", "tau", "z"}
    with pytest.raises(TypeError, match=r"plot_diagnostics needs a posterior's per-chain "
                                        r"parameter draws .*pass the hierarchical posterior"):
        plots.plot_diagnostics(one)


def test_preference_posterior_plots():
    from bayesirl.core.preferences import Preferences
    from bayesirl.model.preferences import PreferenceModel
    from bayesirl.testing import tiny_chain_mdp

    mdp = tiny_chain_mdp(horizon=3)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=4, seed=0)
    prefs = Preferences.from_demonstrations(demos, [[0, 1], [2, 3]])
    theta = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = PreferenceModel(birl.LinearReward(mdp.features))
    post = model.build_target(mdp, prefs).make_posterior({"theta": theta}, method="draws")
    ax = plots.plot_reward(post)
    np.testing.assert_allclose([p.get_height() for p in ax.patches],
                               (theta @ mdp.features.T).mean(0).numpy())
    assert plots.plot_recovery(torch.zeros(2), post).get_xlabel() == "true reward"
    assert plots.plot_diagnostics(post, max_params=2).shape == (2, 3)
    assert plots.plot_policy(mdp, post).images
    alone = model.build_target(None, prefs).make_posterior({"theta": theta}, method="draws")
    with pytest.raises(ValueError, match="the posterior has no MDP, which plot_reward needs"):
        plots.plot_reward(alone)


def test_policy_background_of_state_action_values(grid):
    post = fake_posterior(grid, state_action=True)
    probs = torch.full((16, 5), 0.2)
    mean = post.mean_reward()                                     # (S, A)
    ax = plots.plot_policy(grid, probs, background=mean)
    np.testing.assert_allclose(ax.images[0].get_array().data,
                               mean.max(1).values.reshape(4, 4).numpy())
    assert colorbar_label(ax) == "posterior mean reward (max over actions)"
    ax = plots.plot_policy(grid, probs, background=grid.reward)  # (S,): as it is
    assert colorbar_label(ax) == "posterior mean reward"
    for bad in (torch.ones(5), torch.ones(16, 4), torch.full((16,), float("nan"))):
        with pytest.raises(ValueError, match=r"background must be 16 finite values, one per "
                                             r"state, with shape \(16,\) or \(16, 5\)"):
            plots.plot_policy(grid, probs, background=bad)


def test_reward_panels_take_a_posterior():
    with pytest.raises(TypeError, match="posterior must be a RewardPosterior .* got Tensor"):
        plots.plot_reward_panels(torch.zeros(3, 2))
