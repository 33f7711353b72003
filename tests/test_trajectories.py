"""Trajectories of continuous observations: constructors, validation, views, rollouts."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bayesirl.core.control import EXPERTS, make_env
from bayesirl.core.trajectories import Trajectories, evaluate, rollout


def _episode(rng, length, dim=3, n_actions=2):
    return {"observations": rng.normal(size=(length + 1, dim)),
            "actions": rng.integers(n_actions, size=length),
            "rewards": rng.normal(size=length),
            "terminations": np.r_[np.zeros(length - 1, bool), True],
            "truncations": np.zeros(length, bool)}


def test_from_arrays_with_next_obs_keeps_every_field():
    obs = torch.randn(2, 4, 3)
    nxt = torch.randn(2, 4, 3)
    acts = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0]])
    data = Trajectories.from_arrays(obs, acts, nxt, lengths=[4, 2], terminals=[False, True])
    assert (data.n, data.max_length, data.obs_dim, data.n_actions) == (2, 4, 3, 3)
    assert data.lengths.tolist() == [4, 2] and data.n_transitions == 6
    assert data.terminals.tolist() == [[False] * 4, [False, True, False, False]]
    assert torch.equal(data.obs[0], obs[0]) and torch.equal(data.next_obs[1, :2], nxt[1, :2])
    assert (data.obs[1, 2:] == 0).all() and (data.actions[1, 2:] == 0).all()  # padding zeroed


def test_obs_one_step_longer_than_actions_gives_the_next_observations():
    obs = torch.arange(2 * 4 * 1, dtype=torch.float64).reshape(2, 4, 1)
    data = Trajectories.from_arrays(obs, torch.zeros(2, 3, dtype=torch.long), lengths=[3, 2])
    assert torch.equal(data.next_obs[0, :, 0], obs[0, 1:, 0])
    assert torch.equal(data.next_obs[1, :2, 0], obs[1, 1:3, 0])  # row 1's final obs at index 2


def test_a_two_dimensional_obs_is_one_trajectory():
    data = Trajectories.from_arrays(np.zeros((6, 2)), np.ones(5, dtype=int), terminals=[True])
    assert data.n == 1 and data.max_length == 5 and data.n_actions == 2
    assert data.terminals[0].tolist() == [False] * 4 + [True]


def test_transitions_are_the_real_steps_in_row_major_order():
    obs = torch.randn(2, 3, 2)
    data = Trajectories.from_arrays(obs, torch.tensor([[0, 1, 0], [1, 0, 0]]), obs + 1,
                                    lengths=[3, 1], n_actions=2)
    tr = data.transitions()
    assert tr.trajectory.tolist() == [0, 0, 0, 1] and tr.step.tolist() == [0, 1, 2, 0]
    assert torch.equal(tr.obs, torch.cat([obs[0], obs[1, :1]]))
    assert torch.equal(tr.next_obs, tr.obs + 1) and tr.actions.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("build, message", [
    (lambda: Trajectories.from_arrays(torch.zeros(2, 3, 1), torch.tensor([[0, 1, 5], [0, 0, 0]]),
                                      torch.zeros(2, 3, 1), n_actions=2),
     r"trajectory 0, step 2: actions\[0, 2\] is 5, expected an action in \[0, 2\)"),
    (lambda: Trajectories(torch.zeros(1, 3, 1), torch.zeros(1, 3), torch.zeros(1, 3, 1),
                          torch.tensor([[True, False, False]]), torch.ones(1, 3, dtype=bool), 2),
     r"terminals\[0, 0\] is True before the last step of trajectory 0"),
    (lambda: Trajectories(torch.zeros(1, 3, 1), torch.zeros(1, 3), torch.zeros(1, 3, 1),
                          torch.zeros(1, 3, dtype=bool), torch.tensor([[True, False, True]]), 2),
     r"mask\[0, 2\] is True after mask\[0, 1\] is False"),
    (lambda: Trajectories(torch.tensor([[[0.0], [float("nan")]]]), torch.zeros(1, 2),
                          torch.zeros(1, 2, 1), torch.zeros(1, 2, dtype=bool),
                          torch.ones(1, 2, dtype=bool), 2),
     r"obs\[0, 1, 0\] is nan, expected a finite number"),
    (lambda: Trajectories.from_arrays(torch.zeros(2, 3, 1), torch.zeros(2, 3),
                                      torch.zeros(2, 2, 1)),
     r"next_obs must have shape \(2, 3, 1\)"),
    (lambda: Trajectories.from_arrays(torch.zeros(2, 3, 1), torch.zeros(2, 3)),
     r"without next_obs it must have T \+ 1 = 4 steps"),
    (lambda: Trajectories.from_arrays(torch.zeros(2, 4, 1), torch.zeros(2, 3), lengths=[3, 0]),
     r"lengths\[1\] is 0, expected an integer in \[1, 3\]"),
    (lambda: Trajectories.from_arrays(torch.zeros(2, 4, 1), torch.zeros(2, 3), lengths=[3, 2],
                                      mask=torch.ones(2, 3, dtype=bool)),
     r"give at most one of lengths and mask"),
    (lambda: Trajectories.from_episodes([
        {"observations": np.zeros((3, 2)), "actions": np.zeros(2, dtype=int)},
        {"observations": np.zeros((3, 3)), "actions": np.zeros(2, dtype=int)}]),
     r"episodes have observations of different sizes \[2, 3\]"),
    (lambda: rollout("MountainCarContinuous-v0", lambda obs: 0, 1, progress=False),
     r"env must have a Discrete action space, got Box"),
    (lambda: Trajectories.from_arrays(torch.zeros(0, 4, 1), torch.zeros(0, 3)),
     r"trajectories are empty"),
])
def test_bad_input_names_the_argument_index_and_value(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_fractional_actions_are_refused_as_a_type_error():
    with pytest.raises(TypeError, match="actions must hold integer indices"):
        Trajectories.from_arrays(torch.zeros(1, 3, 1), torch.tensor([[0.5, 1.0]]))


def test_minari_style_episodes_as_dicts_or_objects_give_the_same_trajectories():
    rng = np.random.default_rng(0)
    eps = [_episode(rng, 4), _episode(rng, 2)]
    a = Trajectories.from_episodes(eps)
    b = Trajectories.from_episodes([SimpleNamespace(**e) for e in eps])
    assert a.lengths.tolist() == [4, 2] and a.n_actions == int(max(e["actions"].max()
                                                                  for e in eps)) + 1
    for field in ("obs", "next_obs", "actions", "terminals", "mask", "rewards"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert torch.allclose(a.obs[1, :2], torch.as_tensor(eps[1]["observations"][:2]))
    assert torch.allclose(a.next_obs[0, :4], torch.as_tensor(eps[0]["observations"][1:]))
    assert a.terminals[0, 3] and a.terminals[1, 1] and a.terminals.sum() == 2
    assert torch.allclose(a.returns(), torch.as_tensor([e["rewards"].sum() for e in eps]))


def test_imitation_style_trajectories_mark_a_terminal_only_when_the_episode_terminated():
    rng = np.random.default_rng(1)
    trajs = [SimpleNamespace(obs=rng.normal(size=(4, 2)), acts=np.array([0, 1, 1]),
                             infos=None, terminal=True, rews=np.ones(3)),
             SimpleNamespace(obs=rng.normal(size=(3, 2)), acts=np.array([1, 0]), infos=None,
                             terminal=False)]
    data = Trajectories.from_imitation(trajs, n_actions=3)
    assert data.n_actions == 3 and data.rewards is None  # rewards only when every one has them
    assert data.terminals.tolist() == [[False, False, True], [False, False, False]]
    assert torch.allclose(data.next_obs[1, :2], torch.as_tensor(trajs[1].obs[1:]))


def test_imitation_style_episodes_cut_by_a_time_limit_are_not_terminal():
    """imitation marks every whole episode ``terminal``; Stable-Baselines3's rollouts record a
    time limit's cut in the last info, and only an episode that was not cut ends in a terminal
    step. A mistaken cut would set V(s') = 0 at the last step of every time-limited episode."""
    rng = np.random.default_rng(4)

    def traj(n, infos):
        return SimpleNamespace(obs=rng.normal(size=(n + 1, 2)), acts=np.zeros(n, dtype=int),
                               infos=None if infos is None else np.array(infos, dtype=object),
                               terminal=True)

    trajs = [traj(3, [{}, {}, {"TimeLimit.truncated": True}]),
             traj(2, [{}, {"TimeLimit.truncated": False, "episode": {"r": 2.0}}]),
             traj(2, [{}, {}]),
             traj(2, None)]
    data = Trajectories.from_imitation(trajs, n_actions=2)
    assert data.terminals.tolist() == [[False, False, False], [False, True, False],
                                       [False, True, False], [False, True, False]]
    with pytest.raises(ValueError, match=r"trajectories\[0\] has 1 infos and 3 actions"):
        Trajectories.from_imitation([traj(3, [{}])])
    with pytest.raises(TypeError, match=r"trajectories\[0\] infos\[-1\]\['TimeLimit.truncated'\] "
                                        r"is 'yes', expected a bool"):
        Trajectories.from_imitation([traj(1, [{"TimeLimit.truncated": "yes"}])])
    with pytest.raises(TypeError, match=r"trajectories\[0\] infos\[-1\] is int, expected a dict"):
        Trajectories.from_imitation([traj(1, [3])])


def test_episode_readers_name_the_episode_that_is_wrong():
    rng = np.random.default_rng(2)
    good, bad = _episode(rng, 3), _episode(rng, 3)
    bad["observations"] = bad["observations"][:-1]
    with pytest.raises(ValueError, match=r"episodes\[1\] has 3 observations and 3 actions"):
        Trajectories.from_episodes([good, bad])
    with pytest.raises(ValueError, match=r"trajectories\[0\] has no 'acts' field"):
        Trajectories.from_imitation([SimpleNamespace(obs=np.zeros((2, 1)))])
    with pytest.raises(ValueError, match="episodes is empty"):
        Trajectories.from_episodes([])


def test_episode_readers_refuse_fractional_actions_and_terminations_by_name():
    """As from_arrays does: a cast would make action 1.7 action 1 and a termination of 0.5
    a terminal step."""
    rng = np.random.default_rng(3)
    ep = _episode(rng, 2)
    with pytest.raises(TypeError, match=r"episodes\[0\] actions must hold integer indices"):
        Trajectories.from_episodes([dict(ep, actions=np.array([1.7, 0.2]))])
    with pytest.raises(TypeError, match=r"episodes\[0\] terminations must be boolean"):
        Trajectories.from_episodes([dict(ep, terminations=np.array([0.0, 0.5]))])
    whole = Trajectories.from_episodes([dict(ep, actions=np.array([1.0, 0.0]),
                                             terminations=np.array([0.0, 1.0]))])
    assert whole.actions.tolist() == [[1, 0]] and whole.terminals.tolist() == [[False, True]]
    traj = SimpleNamespace(obs=rng.normal(size=(3, 2)), acts=np.array([0.5, 1.0]), infos=None,
                           terminal=True)
    with pytest.raises(TypeError, match=r"trajectories\[0\] actions must hold integer"):
        Trajectories.from_imitation([traj])


def test_indexing_selects_trajectories_and_trims_the_padding():
    obs = torch.randn(3, 5, 2)
    data = Trajectories.from_arrays(obs, torch.zeros(3, 5, dtype=torch.long), obs,
                                    lengths=[5, 2, 3])
    sub = data[[1, 2]]
    assert sub.n == 2 and sub.max_length == 3 and torch.equal(sub.obs[0, :2], obs[1, :2])
    assert data[0].n == 1 and data[1:].lengths.tolist() == [2, 3]
    assert data.to(dtype=torch.float32).obs.dtype == torch.float32


def test_rollouts_are_seeded_and_mark_terminations_not_truncations():
    env = make_env("CartPole-v1")
    a = rollout(env, lambda o: 0, 3, seed=5, progress=False)  # always left: falls quickly
    b = rollout(env, lambda o: 0, 3, seed=5, progress=False)
    assert torch.equal(a.obs, b.obs) and a.terminals.any(1).all()
    assert torch.equal(a.returns(), a.lengths.to(a.dtype))  # +1 per step
    cut = rollout(env, EXPERTS["CartPole-v1"], 1, seed=0, max_steps=7, progress=False)
    assert cut.lengths.tolist() == [7] and not cut.terminals.any()
    assert torch.allclose(cut.next_obs[0, :-1], cut.obs[0, 1:])


def test_a_policy_with_reset_is_reset_at_each_episode_with_its_seed():
    seen = []

    class Policy:
        def reset(self, seed):
            seen.append(seed)

        def __call__(self, obs):
            return 0

    returns = evaluate("CartPole-v1", Policy(), 2, seed=10, progress=False)
    assert seen == [10, 11] and returns.shape == (2,)


def test_an_environment_made_from_an_id_is_closed_and_a_given_one_left_open(monkeypatch):
    import gymnasium as gym

    closed = []
    for cls in (gym.Env, gym.Wrapper):  # gym.make returns wrappers around the Env
        monkeypatch.setattr(cls, "close", lambda self: closed.append(self))
    env = make_env("CartPole-v1")
    rollout(env, lambda o: 0, 1, progress=False)
    assert closed == []  # the caller's environment stays open
    rollout("CartPole-v1", lambda o: 0, 1, progress=False)
    assert len(closed) == 1 and closed[0] is not env


def test_rollout_refuses_bad_arguments():
    with pytest.raises(ValueError, match="n is 0"):
        rollout("CartPole-v1", lambda o: 0, 0)
    with pytest.raises(TypeError, match="policy must be callable"):
        rollout("CartPole-v1", 3, 1)


def _two_actions():
    return Trajectories.from_arrays(torch.randn(1, 4, 3, dtype=torch.float64),
                                    torch.tensor([[0, 1, 1]]))


def test_query_obs_takes_rows_of_the_data_s_width_in_its_dtype():
    data = _two_actions()
    one = data.query_obs("obs", np.zeros(3, dtype=np.float32))
    assert one.shape == (1, 3) and one.dtype == torch.float64
    assert data.query_obs("obs", torch.zeros(5, 3)).shape == (5, 3)


@pytest.mark.parametrize("bad", [torch.zeros(2, 4), torch.zeros(2, 1, 3), torch.zeros(4)])
def test_query_obs_of_another_shape_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"next_obs must have shape \(M, 3\), got"):
        _two_actions().query_obs("next_obs", bad)


def test_query_actions_repeat_one_action_and_check_each_against_the_data():
    data = _two_actions()
    assert data.query_actions(1, 3).tolist() == [1, 1, 1]
    assert data.query_actions([0, 1], 2).dtype == torch.long
    with pytest.raises(ValueError, match="actions has 2 entries for 3 observations"):
        data.query_actions([0, 1], 3)
    with pytest.raises(ValueError,
                       match=r"actions\[1\] is 2, expected an action index in \[0, 2\)"):
        data.query_actions([0, 2], 2)
    with pytest.raises(ValueError, match=r"actions\[0\] is -1"):
        data.query_actions([-1], 1)
