"""Tests of bayesirl.core.envs: grid worlds, objectworld, Garnet MDPs, Gymnasium tables,
samplers."""

import math
import re

import gymnasium
import numpy as np
import pytest
import torch

from bayesirl import envs
from bayesirl.core.mdp import TabularMDP

TAXI = "Taxi-v4" if "Taxi-v4" in gymnasium.registry else "Taxi-v3"
CLIFF = "CliffWalking-v1" if "CliffWalking-v1" in gymnasium.registry else "CliffWalking-v0"


def same_mdp(m1, m2):
    return all(torch.equal(getattr(m1, f), getattr(m2, f)) for f in
               ("successors", "transition_probs", "initial", "features", "reward"))


# ---------------------------------------------------------------------------- gridworld
@pytest.mark.parametrize("dtype", [None, torch.float32])
def test_gridworld_shapes_and_dtypes(dtype):
    mdp = envs.gridworld(size=8, block=2, dtype=dtype)
    want = dtype or torch.float64
    assert (mdp.n_states, mdp.n_actions, mdp.n_features) == (64, 5, 16)
    assert mdp.successors.shape[-1] <= 5 and mdp.successors.dtype == torch.long
    for t in (mdp.transition_probs, mdp.initial, mdp.features, mdp.reward):
        assert t.dtype == want
    assert mdp.reward.shape == (64,)
    assert mdp.shape == (8, 8) and mdp.action_names == envs.GRID_ACTIONS
    assert mdp.feature_names[:2] == ("cell(0,0)", "cell(0,1)") and len(mdp.feature_names) == 16
    assert torch.allclose(mdp.initial, torch.full((64,), 1 / 64, dtype=want))
    assert mdp.discount == 0.9 and mdp.horizon is None


def test_gridworld_slip_probabilities_by_hand():
    P = envs.gridworld(size=3, slip=0.2, block=1).transition_matrix()
    o = 0.2 / 4
    # interior cell 4 = (1, 1), action up: intended 0.8, every other move 0.05
    expected = {1: 0.8, 4: o, 7: o, 3: o, 5: o}
    for s2 in range(9):
        assert P[4, 1, s2].item() == pytest.approx(expected.get(s2, 0.0), abs=1e-15)
    # top-left corner 0, action up bumps: stay + up + left all stay in place
    assert P[0, 1, 0].item() == pytest.approx(0.8 + 2 * o)
    assert P[0, 1, 3].item() == pytest.approx(o) and P[0, 1, 1].item() == pytest.approx(o)
    # top-left corner, action right
    assert P[0, 4, 1].item() == pytest.approx(0.8)
    assert P[0, 4, 0].item() == pytest.approx(3 * o) and P[0, 4, 3].item() == pytest.approx(o)
    # bottom-right corner 8, action down
    assert P[8, 2, 8].item() == pytest.approx(0.8 + 2 * o)
    assert P[8, 2, 5].item() == pytest.approx(o) and P[8, 2, 7].item() == pytest.approx(o)
    # stay in an edge cell 1 = (0, 1)
    assert P[1, 0, 1].item() == pytest.approx(0.8 + o)
    assert P[1, 0, 0].item() == pytest.approx(o) and P[1, 0, 4].item() == pytest.approx(o)


def test_gridworld_without_slip_is_deterministic():
    P = envs.gridworld(size=4, slip=0.0, block=1).transition_matrix()
    assert ((P == 0) | (P == 1)).all()
    assert P[5, 1, 1] == 1 and P[5, 2, 9] == 1 and P[5, 3, 4] == 1 and P[5, 4, 6] == 1
    assert P[0, 3, 0] == 1 and P[15, 4, 15] == 1


@pytest.mark.parametrize("block, d", [(2, 16), (4, 4), ((2, 4), 8), (1, 64), (8, 1)])
def test_gridworld_block_features_and_sparse_reward(block, d):
    mdp = envs.gridworld(size=8, block=block, seed=3)
    phi = mdp.features
    assert phi.shape == (64, d) and len(mdp.feature_names) == d
    assert torch.equal(phi.sum(1), torch.ones(64)) and ((phi == 0) | (phi == 1)).all()
    theta = mdp.reward[phi.argmax(0)]                                # one cell of each block
    assert torch.equal(phi @ theta, mdp.reward)                      # constant on macro-cells
    nonzero = theta[theta.abs() > 1e-12]
    assert len(nonzero) == max(1, round(0.25 * d))
    assert nonzero.max().item() == pytest.approx(1.0) and (nonzero.abs() <= 1).all()
    bh, bw = (block, block) if isinstance(block, int) else block
    assert mdp.features[8 * (bh - 1) + bw - 1].argmax() == 0         # last cell of block (0, 0)


def test_horizon_and_discount_choice():
    assert envs.gridworld(horizon=30).horizon == 30
    assert envs.gridworld(horizon=30).discount is None
    assert envs.gridworld(discount=0.5).discount == 0.5
    assert envs.objectworld(size=4, horizon=7).horizon == 7
    assert envs.objectworld(size=4, horizon=7).discount is None
    assert envs.objectworld(size=4).discount == 0.9
    assert envs.random_mdp(n_states=5, horizon=3).horizon == 3
    assert envs.random_mdp(n_states=5).discount == 0.9


@pytest.mark.parametrize("build", [
    lambda seed: envs.gridworld(seed=seed),
    lambda seed: envs.objectworld(size=8, seed=seed),
    lambda seed: envs.random_mdp(n_states=20, seed=seed),
], ids=["gridworld", "objectworld", "random_mdp"])
def test_seeds_are_deterministic(build):
    assert same_mdp(build(0), build(0))
    assert not same_mdp(build(0), build(1))


# ---------------------------------------------------------------------------- objectworld
def brute_force_distances(size, cells):
    """Distance from every cell to the nearest of ``cells`` (list of (row, col)), by loops."""
    out = np.full(size * size, math.inf)
    for s in range(size * size):
        r, c = divmod(s, size)
        for r2, c2 in cells:
            out[s] = min(out[s], math.sqrt((r - r2) ** 2 + (c - c2) ** 2))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objectworld_features_and_reward_by_brute_force(seed):
    size, C = 8, 3
    kw = dict(size=size, n_colors=C, density=0.15, seed=seed)
    cont = envs.objectworld(continuous=True, **kw)
    disc = envs.objectworld(**kw)
    dist = cont.features.numpy().reshape(size * size, 2, C)          # (S, part, color)
    assert cont.feature_names == ("outer0", "outer1", "outer2", "inner0", "inner1", "inner2")
    # objects are the zero-distance cells: one outer and one inner color per object cell
    holds = dist == 0
    assert (holds.sum(-1) == holds[:, :1].sum(-1).repeat(2, 1)).all()
    assert holds[:, 0].sum() == holds[:, 1].sum() == round(0.15 * size * size)
    assert (holds.sum(-1) <= 1).all()
    brute = np.empty_like(dist)
    for part in range(2):
        for c in range(C):
            cells = [divmod(s, size) for s in np.flatnonzero(holds[:, part, c])]
            d = brute_force_distances(size, cells)
            brute[:, part, c] = np.where(np.isinf(d), 2 * size, d)
    np.testing.assert_allclose(dist, brute, rtol=0, atol=1e-12)
    # discrete features: indicators distance <= k, k = 1..size, in (part, color, k) order
    phi = disc.features.numpy().reshape(size * size, 2, C, size)
    assert disc.features.shape == (64, 2 * C * size)
    assert disc.feature_names[3] == "outer0<=4" and disc.feature_names[size] == "outer1<=1"
    for k in range(1, size + 1):
        np.testing.assert_array_equal(phi[..., k - 1], (brute <= k) & (brute < 2 * size))
    # reward: +1 near outer 0 (<= 3) and outer 1 (<= 2), -1 near outer 0 only, else 0
    for mdp in (cont, disc):
        for s in range(size * size):
            near0, near1 = brute[s, 0, 0] <= 3, brute[s, 0, 1] <= 2
            want = (1.0 if near1 else -1.0) if near0 else 0.0
            assert mdp.reward[s].item() == want
    assert set(disc.reward.tolist()) <= {-1.0, 0.0, 1.0}


def test_objectworld_dynamics_reuse_gridworld():
    ow = envs.objectworld(size=5, determinism=0.6)
    gw = envs.gridworld(size=5, slip=0.4, block=1)
    assert torch.equal(ow.successors, gw.successors)
    assert torch.allclose(ow.transition_probs, gw.transition_probs)
    assert ow.shape == (5, 5) and ow.n_actions == 5


def test_objectworld_without_objects():
    cont = envs.objectworld(size=6, density=0.0, continuous=True)
    assert (cont.features == 12).all() and (cont.reward == 0).all()
    disc = envs.objectworld(size=6, density=0.0)
    assert (disc.features == 0).all() and disc.features.shape == (36, 24)


def test_objectworld_default_size():
    mdp = envs.objectworld(dtype=torch.float32)
    assert mdp.features.shape == (1024, 128) and mdp.features.dtype == torch.float32
    assert set(mdp.reward.tolist()) == {-1.0, 0.0, 1.0}


# ---------------------------------------------------------------------------- random_mdp
@pytest.mark.parametrize("S, A, K", [(100, 4, 3), (7, 2, 7), (50, 3, 1)])
def test_random_mdp_branching_is_exact(S, A, K):
    mdp = envs.random_mdp(n_states=S, n_actions=A, branching=K, n_features=5, seed=4)
    assert mdp.successors.shape == (S, A, K)
    succ = mdp.successors.sort(-1).values
    assert (succ[..., 1:] != succ[..., :-1]).all()                    # distinct successors
    assert (mdp.transition_probs > 0).all()
    assert mdp.features.shape == (S, 5) and mdp.feature_names[0] == "f0"
    theta = torch.linalg.lstsq(mdp.features, mdp.reward).solution
    assert torch.allclose(mdp.features @ theta, mdp.reward)


def test_random_mdp_successors_are_uniform():
    mdp = envs.random_mdp(n_states=10, n_actions=50, branching=2, seed=0)
    counts = torch.bincount(mdp.successors.flatten(), minlength=10).double()
    expected = 10 * 50 * 2 / 10
    assert ((counts - expected).abs() / math.sqrt(expected * 0.9) < 4.5).all()


# ---------------------------------------------------------------------------- gymnasium
def table_check(mdp, env):
    """Transitions and expected rewards match env.unwrapped.P off the absorbing states."""
    P, u = mdp.transition_matrix(), env.unwrapped
    S, A = mdp.n_states, mdp.n_actions
    terminal = {int(s2) for s in range(S) for a in range(A) for _, s2, _, t in u.P[s][a] if t}
    assert terminal
    for s in range(S):
        for a in range(A):
            if s in terminal:
                assert P[s, a, s] == 1 and mdp.reward[s, a] == 0
                continue
            dense, r = torch.zeros(S, dtype=P.dtype), 0.0
            for p, s2, rew, _ in u.P[s][a]:
                dense[int(s2)] += p
                r += p * rew
            assert torch.allclose(P[s, a], dense)
            assert mdp.reward[s, a].item() == pytest.approx(r)
    return terminal


@pytest.mark.parametrize("slippery, K", [(True, 3), (False, 1)])
def test_from_gymnasium_frozenlake(slippery, K):
    env = gymnasium.make("FrozenLake-v1", is_slippery=slippery)
    mdp = envs.from_gymnasium(env, horizon=20)
    assert (mdp.n_states, mdp.n_actions, mdp.successors.shape[-1]) == (16, 4, K)
    assert mdp.shape == (4, 4) and mdp.horizon == 20
    assert torch.equal(mdp.features, torch.eye(16)) and mdp.feature_names[3] == "state3"
    assert mdp.initial[0] == 1
    terminal = table_check(mdp, env)
    desc = env.unwrapped.desc.flatten()
    assert terminal == {s for s in range(16) if desc[s] in (b"H", b"G")}
    assert mdp.reward[14, 2].item() == pytest.approx(1 / 3 if slippery else 1.0)
    # state names from the map: letter, then (row, col)
    assert mdp.state_names[:6] == ("S(0,0)", "F(0,1)", "F(0,2)", "F(0,3)", "F(1,0)", "H(1,1)")
    assert mdp.state_names[15] == "G(3,3)"


def test_from_gymnasium_cliffwalking_and_taxi():
    cliff = envs.from_gymnasium(CLIFF, dtype=torch.float32)
    assert (cliff.n_states, cliff.n_actions, cliff.shape) == (48, 4, (4, 12))
    assert cliff.discount == 0.9 and cliff.features.dtype == torch.float32
    assert table_check(cliff, gymnasium.make(CLIFF)) == {47}
    assert cliff.reward[36, 1] == -100 and cliff.initial[36] == 1
    assert cliff.state_names is None  # no character map
    env = gymnasium.make(TAXI)
    taxi = envs.from_gymnasium(env, discount=0.95)
    assert (taxi.n_states, taxi.n_actions, taxi.shape) == (500, 6, None)
    terminal = table_check(taxi, env)
    assert len(terminal) == 4 and taxi.initial[sorted(terminal)].sum() == 0


class FakeEnv:
    """A minimal toy-text style environment with duplicate (s, a, s') entries."""

    def __init__(self, P=None, initial=True, space=None):
        self.observation_space = space or gymnasium.spaces.Discrete(2)
        self.action_space = gymnasium.spaces.Discrete(1)
        if P is not None:
            self.P = P
        if initial:
            self.initial_state_distrib = np.array([1.0, 0.0])

    def __repr__(self):
        return "FakeEnv()"


TABLE = {0: {0: [(0.5, 1, 1.0, False), (0.25, 1, 3.0, False), (0.25, 0, 0.0, False)]},
         1: {0: [(1.0, 0, 2.0, False)]}}


def test_from_gymnasium_sums_duplicates_and_takes_initial():
    mdp = envs.from_gymnasium(FakeEnv(TABLE, initial=False), initial=[0.25, 0.75])
    P = mdp.transition_matrix()
    assert P[0, 0].tolist() == [0.25, 0.75] and P[1, 0].tolist() == [1.0, 0.0]
    assert mdp.reward[:, 0].tolist() == [1.25, 2.0]
    assert mdp.initial.tolist() == [0.25, 0.75] and mdp.successors.shape == (2, 1, 2)


@pytest.mark.parametrize("env, error, match", [
    (FakeEnv(), TypeError, "env FakeEnv() has no transition table"),
    (FakeEnv(TABLE, space=gymnasium.spaces.Box(0, 1, (2,))), TypeError,
     "env must have a Discrete observation_space"),
    (FakeEnv(TABLE, initial=False), ValueError, "env FakeEnv() has no initial_state_distrib"),
    (FakeEnv({0: {0: [(1.0, 5, 0.0, False)]}, 1: {0: [(1.0, 0, 0.0, False)]}}), ValueError,
     "env.unwrapped.P[0][0] has next_state 5"),
    (FakeEnv({0: {}}), ValueError, "env.unwrapped.P must map every state"),
])
def test_from_gymnasium_errors(env, error, match):
    with pytest.raises(error, match=re.escape(match)):
        envs.from_gymnasium(env)


# ---------------------------------------------------------------------------- samplers
def run_episode(smp, seed, actions):
    traj = [smp.reset(seed=seed)]
    for a in actions:
        s2, r, done = smp.step(a)
        traj.append((s2, r, done))
        if done:
            break
    return traj


def test_sampler_on_frozenlake():
    smp = envs.sampler(gymnasium.make("FrozenLake-v1"))
    assert (smp.n_states, smp.n_actions) == (16, 4)
    actions = [int(a) for a in np.random.default_rng(0).integers(0, 4, 200)]
    traj = run_episode(smp, 3, actions)
    assert traj[0] == 0 and traj[-1][2]                               # ends (hole, goal, limit)
    for s2, r, done in traj[1:]:
        assert isinstance(s2, int) and 0 <= s2 < 16 and isinstance(r, float)
        assert isinstance(done, bool)
    assert run_episode(smp, 3, actions) == traj
    capped = envs.sampler("FrozenLake-v1", horizon=2)
    assert len(run_episode(capped, 0, [1, 1, 1])) <= 3


def test_sampler_on_tabular_mdp():
    mdp = envs.gridworld(size=4, slip=0.3, horizon=6, block=1, seed=1)
    P = mdp.transition_matrix()
    smp = envs.sampler(mdp)
    assert (smp.n_states, smp.n_actions, smp.horizon) == (16, 5, 6)
    actions = [4, 2, 4, 2, 0, 1, 3]
    traj = run_episode(smp, 7, actions)
    assert len(traj) == 7 and traj[-1][2] and not any(d for _, _, d in traj[1:-1])
    s = traj[0]
    for a, (s2, r, _) in zip(actions, traj[1:], strict=False):
        assert P[s, a, s2] > 0 and r == pytest.approx(mdp.reward[s].item())
        s = s2
    assert run_episode(smp, 7, actions) == traj
    assert any(run_episode(smp, seed, actions) != traj for seed in range(8, 12))


def test_sampler_frequencies_match_the_mdp():
    mdp = envs.random_mdp(n_states=3, n_actions=1, branching=3, horizon=1, seed=2)
    mdp = mdp.replace(reward=torch.arange(3.0).unsqueeze(1))            # (S, A) reward
    smp, n = envs.sampler(mdp), 6000
    smp.reset(seed=0)
    counts = np.zeros((3, 3))
    for _ in range(n):
        s = smp.reset()
        s2, r, done = smp.step(0)
        assert done and r == s
        counts[s, s2] += 1
    p_init = mdp.initial.numpy()
    z = (counts.sum(1) - n * p_init) / np.sqrt(n * p_init * (1 - p_init))
    assert (np.abs(z) < 4.5).all()
    P = mdp.transition_matrix()[:, 0].numpy()
    rows = counts.sum(1, keepdims=True)
    z = (counts - rows * P) / np.sqrt(rows * P * (1 - P))
    assert (np.abs(z) < 4.5).all()


def test_sampler_errors():
    smp = envs.sampler(envs.gridworld(size=2, block=1, horizon=1))
    with pytest.raises(RuntimeError, match="call reset"):
        smp.step(0)
    smp.reset(seed=0)
    for bad in (5, -1, 1.5, True):
        with pytest.raises(ValueError, match=re.escape(f"action is {bad!r}, expected an int")):
            smp.step(bad)
    smp.step(0)
    with pytest.raises(RuntimeError, match="episode is over"):
        smp.step(0)
    with pytest.raises(TypeError, match="source must be a TabularMDP or a Gymnasium env, got 3"):
        envs.sampler(3)
    with pytest.raises(ValueError, match="horizon is 0"):
        envs.sampler(envs.gridworld(), horizon=0)


def test_discounted_sampler_never_ends():
    smp = envs.sampler(envs.random_mdp(n_states=5, seed=0))
    smp.reset(seed=0)
    assert not any(smp.step(0)[2] for _ in range(200))


# ---------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("fn, kwargs, error, match", [
    (envs.gridworld, dict(size=0), ValueError, "size is 0, expected an integer >= 1"),
    (envs.gridworld, dict(size=2.5), TypeError, "size must be an integer, got 2.5"),
    (envs.gridworld, dict(slip=1.5), ValueError, "slip is 1.5, expected a number in [0, 1]"),
    (envs.gridworld, dict(slip=-0.1), ValueError, "slip is -0.1"),
    (envs.gridworld, dict(block=3), ValueError, "block is 3, but size=8 is not divisible"),
    (envs.gridworld, dict(block=(2, 3)), ValueError, "block is (2, 3), but size=8"),
    (envs.gridworld, dict(block=(2, 0)), ValueError, "block is (2, 0), expected a positive"),
    (envs.gridworld, dict(block="a"), ValueError, "block is 'a', expected a positive"),
    (envs.gridworld, dict(horizon=5, discount=0.9), ValueError,
     "at most one of horizon and discount, got horizon=5, discount=0.9"),
    (envs.objectworld, dict(size=0), ValueError, "size is 0"),
    (envs.objectworld, dict(n_colors=1), ValueError, "n_colors is 1, expected an integer >= 2"),
    (envs.objectworld, dict(density=-0.1), ValueError, "density is -0.1, expected a number"),
    (envs.objectworld, dict(density=2), ValueError, "density is 2, expected a number in [0, 1]"),
    (envs.objectworld, dict(determinism=1.5), ValueError, "determinism is 1.5"),
    (envs.random_mdp, dict(n_states=10, branching=11), ValueError,
     "branching is 11, expected at most n_states=10"),
    (envs.random_mdp, dict(n_states=0), ValueError, "n_states is 0"),
    (envs.random_mdp, dict(n_actions=0), ValueError, "n_actions is 0"),
    (envs.random_mdp, dict(branching=0), ValueError, "branching is 0"),
    (envs.random_mdp, dict(n_features=0), ValueError, "n_features is 0"),
    (envs.random_mdp, dict(n_states=4.0), TypeError, "n_states must be an integer, got 4.0"),
    (envs.random_mdp, dict(horizon=3, discount=0.5), ValueError, "horizon=3, discount=0.5"),
])
def test_bad_arguments(fn, kwargs, error, match):
    with pytest.raises(error, match=re.escape(match)):
        fn(**kwargs)


def test_results_are_tabular_mdps():
    for mdp in (envs.gridworld(), envs.objectworld(size=4), envs.random_mdp(),
                envs.from_gymnasium("FrozenLake-v1")):
        assert isinstance(mdp, TabularMDP)
