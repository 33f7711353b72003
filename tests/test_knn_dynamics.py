"""The nearest-neighbour one-step model of logged continuous trajectories
(bayesirl.core.knn_dynamics)."""

import pytest
import torch

from bayesirl._validation import ArgumentTypeError
from bayesirl.core.knn_dynamics import knn_dynamics
from bayesirl.core.trajectories import Trajectories


def _line():
    """One trajectory on a line: from x = 0, 1, 2, 3 action 0 moves +1 and action 1 moves +10;
    the last step terminates. Second coordinate: a large constant offset plus 100 x."""
    xs = torch.tensor([0.0, 1.0, 2.0, 3.0])
    acts = torch.tensor([0, 1, 0, 1])
    step = torch.where(acts == 0, 1.0, 10.0)
    obs = torch.stack([xs, 1000 + 100 * xs], -1)
    nxt = torch.stack([xs + step, 1000 + 100 * xs], -1)
    return Trajectories.from_arrays(obs, acts, nxt, terminals=torch.tensor([0, 0, 0, 1]))


def test_one_neighbour_at_an_observed_step_gives_its_observed_successor():
    data = _line()
    tr = data.transitions()
    nxt, p_term = knn_dynamics(data, neighbours=1)(tr.obs, tr.actions)
    assert torch.equal(nxt, tr.next_obs)
    assert torch.equal(p_term, tr.terminals.to(p_term.dtype))


def test_the_query_moves_by_the_mean_displacement_of_its_nearest_same_action_steps():
    data = _line()
    f = knn_dynamics(data, neighbours=2)
    q = torch.tensor([[2.9, 1290.0], [0.1, 1010.0]])
    nxt, p_term = f(q, torch.tensor([1, 0]))
    # action 1 was taken at x = 1 (+10) and x = 3 (+10, terminal); action 0 at 0 and 2 (+1)
    assert torch.allclose(nxt, q + torch.tensor([[10.0, 0.0], [1.0, 0.0]]))
    assert torch.allclose(p_term, torch.tensor([0.5, 0.0]))


def test_distances_are_measured_in_the_data_s_spread():
    # two steps of action 0: from (0, 0) by (+1, 0) and from (1, 100) by (+5, 0); the second
    # coordinate spreads 100 times as wide. The query (0.9, 40) is nearer (0, 0) in raw units
    # (40.0 against 60.0) and nearer (1, 100) in units of the spread (0.86 against 1.39)
    obs = torch.tensor([[0.0, 0.0], [1.0, 100.0]])
    nxt = torch.tensor([[1.0, 0.0], [6.0, 100.0]])
    data = Trajectories.from_arrays(obs[:, None], torch.zeros(2, 1, dtype=torch.long),
                                    nxt[:, None])
    q = torch.tensor([[0.9, 40.0]])
    out, _ = knn_dynamics(data, neighbours=1)(q, torch.tensor([0]))
    assert torch.allclose(out, q + torch.tensor([[5.0, 0.0]]))


def test_an_action_never_taken_falls_back_to_every_step():
    obs = torch.tensor([[0.0], [1.0], [2.0]])
    data = Trajectories.from_arrays(obs, torch.tensor([0, 0]), n_actions=3)
    nxt, p_term = knn_dynamics(data, neighbours=5)(torch.tensor([[5.0]]), torch.tensor([2]))
    assert torch.allclose(nxt, torch.tensor([[6.0]])) and p_term.item() == 0.0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3"])
def test_a_bad_number_of_neighbours_is_refused(bad):
    with pytest.raises((ValueError, ArgumentTypeError), match="neighbours"):
        knn_dynamics(_line(), neighbours=bad)


def test_queries_are_checked_against_the_data():
    f = knn_dynamics(_line())
    with pytest.raises(ValueError, match=r"obs must have shape \(M, 2\), got \(1, 3\)"):
        f(torch.zeros(1, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"actions\[1\] is 2, expected an action index in"):
        f(torch.zeros(2, 2), torch.tensor([0, 2]))  # the data have 2 actions
    with pytest.raises(ValueError, match="actions has 3 entries for 2 observations"):
        f(torch.zeros(2, 2), torch.tensor([0, 1, 0]))
    nxt, _ = f(torch.zeros(2), 1)  # one observation, one action
    assert nxt.shape == (1, 2)


def test_data_that_are_not_trajectories_are_refused():
    with pytest.raises(ArgumentTypeError, match="data must be Trajectories"):
        knn_dynamics(torch.zeros(3, 2))
