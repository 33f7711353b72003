"""Tests of bayesirl.core.demos: construction, validation, statistics, files and rollouts."""

import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bayesirl.core.demos import Demonstrations, rollouts
from bayesirl.core.mdp import TabularMDP


def chain_mdp(horizon=3, **kwargs):
    """4 states, action 0 stays, action 1 moves to s + 1 (mod 4); starts in state 0 or 1."""
    P = torch.zeros(4, 2, 4)
    for s in range(4):
        P[s, 0, s] = 1.0
        P[s, 1, (s + 1) % 4] = 1.0
    kwargs.setdefault("initial", torch.tensor([0.5, 0.5, 0.0, 0.0]))
    if "discount" not in kwargs:
        kwargs["horizon"] = horizon
    return TabularMDP.from_dense(P, **kwargs)


def random_mdp(S=5, A=3, seed=0, horizon=6, **kwargs):
    """Random sparse dynamics: each (s, a) reaches 2 random states (so most transitions are 0)."""
    g = torch.Generator().manual_seed(seed)
    P = torch.zeros(S, A, S)
    succ = torch.stack([torch.randperm(S, generator=g)[:2] for _ in range(S * A)]).view(S, A, 2)
    P.scatter_(-1, succ, torch.rand(S, A, 2, generator=g) + 0.1)
    P /= P.sum(-1, keepdim=True)
    if "discount" not in kwargs:
        kwargs["horizon"] = horizon
    return TabularMDP.from_dense(P, features=torch.randn(S, 2, generator=g), **kwargs)


def assert_same(a: Demonstrations, b: Demonstrations):
    for k in ("states", "actions", "mask"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and torch.equal(x, y), k
    assert (a.final_states is None) == (b.final_states is None)
    if a.final_states is not None:
        assert torch.equal(a.final_states, b.final_states)


def good_demos(final=True):
    """Two valid demonstrations of chain_mdp(): 0 -1-> 1 -1-> 2 -0-> 2 and 1 -0-> 1 -1-> 2."""
    return Demonstrations.from_arrays([[0, 1, 2], [1, 1, 9]], [[1, 1, 0], [0, 1, 9]],
                                      lengths=[3, 2], final_states=[2, 2] if final else None)


# ---------------------------------------------------------------------- construction
def test_construction_normalises_padding_and_sizes():
    d = good_demos()
    assert d.states.dtype == d.actions.dtype == d.final_states.dtype == torch.long
    assert d.mask.dtype == torch.bool
    assert d.states.tolist() == [[0, 1, 2], [1, 1, 0]]  # padding set to 0
    assert d.actions.tolist() == [[1, 1, 0], [0, 1, 0]]
    assert d.mask.tolist() == [[True, True, True], [True, True, False]]
    assert (d.n, len(d), d.max_length, d.n_steps) == (2, 2, 3, 5)
    assert d.lengths.tolist() == [3, 2]
    assert "n=2" in repr(d) and "max_length=3" in repr(d)
    # whole-number floats and 0/1 masks are accepted
    e = Demonstrations(np.array([[0.0, 1.0]]), [[1, 0]], np.array([[1, 0]]))
    assert e.states.dtype == torch.long and e.mask.tolist() == [[True, False]]
    assert e.states.tolist() == [[0, 0]]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(states=[0, 1], actions=[0, 1], mask=[1, 1]),
     ValueError, r"states must have shape \(N, T\)"),
    (dict(states=[[0, 1]], actions=[[0]], mask=[[1, 1]]),
     ValueError, r"actions must have shape \(1, 2\)"),
    (dict(states=[[0, 1]], actions=[[0, 1]], mask=[[1]]),
     ValueError, r"mask must have shape \(1, 2\)"),
    (dict(states=[[0.5, 1]], actions=[[0, 1]], mask=[[1, 1]]),
     TypeError, "states must hold integer"),
    (dict(states=[[True]], actions=[[0]], mask=[[1]]), TypeError, "states must hold integer"),
    (dict(states=[[0]], actions=[[0]], mask=[[2]]), TypeError, "mask must be boolean"),
    (dict(states=[[0, -3]], actions=[[0, 1]], mask=[[1, 1]]), ValueError, r"states\[0, 1\] is -3"),
    (dict(states=[[0, 1], [0, 0]], actions=[[0, 0], [0, -1]], mask=[[1, 1], [1, 1]]),
     ValueError, r"actions\[1, 1\] is -1, expected a non-negative index"),
    (dict(states=[[0, 1, 2]], actions=[[0, 0, 0]], mask=[[1, 0, 1]]),
     ValueError, r"mask\[0, 2\] is True after mask\[0, 1\] is False"),
    (dict(states=[[0, 1], [0, 0]], actions=[[0, 0], [0, 0]], mask=[[1, 1], [0, 0]]),
     ValueError, r"mask\[1\] has no True entry: demonstration 1 has length 0"),
    (dict(states=np.zeros((0, 3)), actions=np.zeros((0, 3)), mask=np.zeros((0, 3), bool)),
     ValueError, "demonstrations are empty"),
    (dict(states=[[0]], actions=[[0]], mask=[[1]], final_states=[0, 1]),
     ValueError, r"final_states must have shape \(1,\)"),
    (dict(states=[[0]], actions=[[0]], mask=[[1]], final_states=[-2]),
     ValueError, r"final_states\[0\] is -2"),
])
def test_construction_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        Demonstrations(**kwargs)


def test_from_arrays_lengths_errors():
    with pytest.raises(ValueError, match=r"lengths\[1\] is 4, expected an integer in \[1, 3\]"):
        Demonstrations.from_arrays([[0, 0, 0]] * 2, [[0, 0, 0]] * 2, lengths=[3, 4])
    with pytest.raises(ValueError, match=r"lengths\[0\] is 0"):
        Demonstrations.from_arrays([[0, 0, 0]], [[0, 0, 0]], lengths=[0])
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        Demonstrations.from_arrays([[0, 0, 0]] * 2, [[0, 0, 0]] * 2, lengths=[3])


def test_from_trajectories():
    d = Demonstrations.from_trajectories([([0, 1, 2, 2], [1, 1, 0]), ([1, 1, 2], [0, 1])])
    assert_same(d, good_demos())
    d = Demonstrations.from_trajectories([(np.array([0, 1, 2]), torch.tensor([1, 1, 0])),
                                          ([1, 1], [0, 1])])
    assert_same(d, good_demos(final=False))
    with pytest.raises(ValueError, match=r"trajectories\[1\] lacks a final state"):
        Demonstrations.from_trajectories([([0, 1, 2, 2], [1, 1, 0]), ([1, 1], [0, 1])])
    with pytest.raises(ValueError, match=r"trajectories\[0\] has 4 states and 2 actions"):
        Demonstrations.from_trajectories([([0, 1, 2, 2], [1, 1])])
    with pytest.raises(ValueError, match=r"trajectories\[0\] has 0 states and 0 actions"):
        Demonstrations.from_trajectories([([], [])])
    with pytest.raises(ValueError, match="demonstrations are empty"):
        Demonstrations.from_trajectories([])


def test_getitem_subsets_and_trims():
    d = Demonstrations.from_arrays([[0, 1, 2], [1, 1, 0], [3, 2, 1]], [[1, 1, 0]] * 3,
                                   lengths=[3, 1, 2], final_states=[2, 1, 0])
    one = d[1]
    assert one.n == 1 and one.max_length == 1 and one.final_states.tolist() == [1]
    assert d[-1].states.tolist() == [[3, 2]]
    assert_same(d[np.int64(1)], one)
    assert_same(d[torch.tensor(1)], one)
    sub = d[torch.tensor([2, 0])]
    assert sub.states.tolist() == [[3, 2, 0], [0, 1, 2]] and sub.lengths.tolist() == [2, 3]
    assert d[1:].max_length == 2 and d[1:].final_states.tolist() == [1, 0]
    assert d[torch.tensor([False, True, False])].n == 1
    assert_same(d[:], d)
    assert_same(d.to("cpu"), d)
    with pytest.raises(IndexError, match="demonstration 3 out of range"):
        d[3]



@pytest.mark.parametrize("idx, error, match", [
    ([0, 99], IndexError,
     r"index\[1\] is 99, out of range for 3 demonstrations, expected an index in \[-3, 3\)"),
    (torch.tensor([-4]), IndexError, r"index\[0\] is -4, out of range for 3 demonstrations"),
    (7, IndexError, r"demonstration 7 out of range for 3 demonstrations, expected an index in "
                    r"\[-3, 3\)"),
    (torch.tensor([True, False]), IndexError,
     r"the bool mask has shape \(2,\), expected \(3,\), one entry per demonstration"),
    (1.0, TypeError, "demonstrations must be indexed by an integer, a slice, a sequence of "
                     "integers or a bool mask of length 3, got 1.0"),
    ([0.5, 1.0], TypeError, r"demonstrations must be indexed by .*, got \[0.5, 1.0\]"),
    ("a", TypeError, "demonstrations must be indexed by .*, got str"),
    ([[0, 1]], TypeError, r"demonstrations must be indexed by .*, got \[\[0, 1\]\]"),
])
def test_getitem_errors_name_the_index_and_the_range(idx, error, match):
    """Only the single-int case was checked: index lists, floats and masks of another length
    fell through to torch's IndexError (or a silently wrong selection)."""
    d = Demonstrations.from_arrays([[0, 1], [1, 1], [3, 2]], [[1, 1]] * 3)
    with pytest.raises(error, match=match):
        d[idx]
    assert d[[0, -1]].states.tolist() == [[0, 1], [3, 2]]
    assert d[np.array([True, False, True])].n == 2

# ---------------------------------------------------------------------- validate
@pytest.mark.parametrize("states, actions, lengths, final, match", [
    ([[0, 1], [1, 4]], [[1, 0], [0, 0]], None, None,
     r"demonstration 1, step 1: states\[1, 1\] is 4, expected a state index in \[0, 4\)"),
    ([[0, 1], [1, 1]], [[1, 0], [0, 2]], None, None,
     r"demonstration 1, step 1: actions\[1, 1\] is 2, expected an action index in \[0, 2\)"),
    ([[0, 1], [1, 1]], [[1, 0], [0, 0]], None, [1, 7],
     r"final_states\[1\] is 7, expected a state index in \[0, 4\)"),
    ([[0, 0], [0, 0], [0, 0, 0, 0]], [[0, 0], [0, 0], [0, 0, 0, 0]], [2, 2, 4], None,
     r"demonstration 2 has length 4, expected at most the MDP's horizon 3"),
    ([[0, 1], [2, 2]], [[1, 0], [0, 0]], None, None,
     r"demonstration 1, step 0: initial state 2 has probability 0 under mdp.initial"),
    ([[0, 1, 2], [1, 1, 3]], [[1, 1, 0], [0, 1, 0]], None, None,
     r"demonstration 1, step 1: transition 1 --\(1\)--> 3 has probability 0 under the MDP"),
    ([[0, 1, 2], [1, 2, 0]], [[1, 1, 0], [0, 1, 0]], [3, 2], [2, 3],
     r"demonstration 1, step 0: transition 1 --\(0\)--> 2 has probability 0"),
    ([[0, 1, 2], [1, 1, 0]], [[1, 1, 0], [0, 1, 0]], [3, 2], [2, 3],
     r"demonstration 1, step 1: transition 1 --\(1\)--> 3 has probability 0"),  # final state
    ([[0, 1, 2], [1, 1, 0]], [[1, 1, 0], [0, 1, 0]], [3, 2], [3, 2],
     r"demonstration 0, step 2: transition 2 --\(0\)--> 3 has probability 0"),  # final state
])
def test_validate_rejects(states, actions, lengths, final, match):
    if lengths is not None and max(len(s) for s in states) != min(len(s) for s in states):
        T = max(lengths)
        states = [s + [0] * (T - len(s)) for s in states]
        actions = [a + [0] * (T - len(a)) for a in actions]
    d = Demonstrations.from_arrays(states, actions, lengths, final)
    with pytest.raises(ValueError, match=match):
        d.validate(chain_mdp())


def test_validate_accepts_and_returns_self():
    d = good_demos()
    assert d.validate(chain_mdp()) is d
    assert good_demos(final=False).validate(chain_mdp(discount=0.9)) is not None
    # shorter than the horizon is fine
    Demonstrations.from_arrays([[0]], [[1]], final_states=[1]).validate(chain_mdp(horizon=5))
    # padding columns beyond the horizon are not steps
    Demonstrations.from_arrays([[0, 1, 2, 0, 0]], [[1, 1, 0, 0, 0]], [3]).validate(chain_mdp())


# ---------------------------------------------------------------------- statistics
def reference_counts(d, S, A, gamma=1.0):
    c = torch.zeros(S, A)
    for i in range(d.n):
        for t in range(int(d.lengths[i])):
            c[d.states[i, t], d.actions[i, t]] += gamma ** t
    return c


@pytest.mark.parametrize("discount", [None, 0.5])
def test_counts(discount):
    d = good_demos()
    c = d.counts(4, 2, discount=discount)
    assert c.shape == (4, 2) and c.dtype == torch.float64
    g = 1.0 if discount is None else discount
    # demo 0: (0,1) t0, (1,1) t1, (2,0) t2; demo 1: (1,0) t0, (1,1) t1
    expected = torch.zeros(4, 2)
    expected[0, 1], expected[1, 1], expected[2, 0], expected[1, 0] = 1, 2 * g, g**2, 1
    torch.testing.assert_close(c, expected, rtol=0, atol=1e-15)
    d = Demonstrations.from_arrays(torch.randint(0, 5, (7, 6)), torch.randint(0, 3, (7, 6)),
                                   lengths=torch.randint(1, 7, (7,)))
    torch.testing.assert_close(d.counts(5, 3, discount), reference_counts(d, 5, 3, g))
    with pytest.raises(ValueError, match=r"step 2: states\[0, 2\] is 2, expected a state index"):
        good_demos().counts(2, 2)



@pytest.mark.parametrize("discount, match", [(2.0, "discount is 2.0"), (-0.1, "discount is -0.1"),
                                             ("0.9", "discount is '0.9'"),
                                             (float("nan"), "discount is nan")])
def test_counts_discount_is_checked(discount, match):
    """discount=2.0 was accepted and "0.9" failed in a pow."""
    with pytest.raises(ValueError, match=match + r", expected a number in \[0, 1\]"):
        good_demos().counts(4, 2, discount=discount)
    assert good_demos().counts(4, 2, discount=np.float64(0.5)).sum().item() == pytest.approx(
        1 + 0.5 + 0.25 + 1 + 0.5)

@pytest.mark.parametrize("kind", ["finite", "discounted", "state_action"])
def test_feature_expectations(kind):
    g = torch.Generator().manual_seed(1)
    if kind == "discounted":
        mdp = random_mdp(discount=0.8)
    elif kind == "finite":
        mdp = random_mdp()
    else:
        mdp = random_mdp().replace(features=torch.randn(5, 3, 4, generator=g))
    d = rollouts(mdp, torch.full((5, 3), 1 / 3), n=4, length=5, seed=3)
    d = d[:]  # a copy
    d = Demonstrations.from_arrays(d.states, d.actions, lengths=[5, 2, 3, 1])
    gamma = mdp.discount if mdp.discount is not None else 1.0
    phi = mdp.state_action_features()
    expected = sum(gamma ** t * phi[d.states[i, t], d.actions[i, t]]
                   for i in range(d.n) for t in range(int(d.lengths[i]))) / d.n
    fe = d.feature_expectations(mdp)
    assert fe.shape == (phi.shape[-1],)
    torch.testing.assert_close(fe, expected)


def test_empirical_initial():
    d = Demonstrations.from_arrays([[0, 1], [2, 1], [0, 0], [3, 3]], [[0, 0]] * 4)
    torch.testing.assert_close(d.empirical_initial(5), torch.tensor([0.5, 0, 0.25, 0.25, 0]))
    with pytest.raises(ValueError, match=r"demonstration 3, step 0: states\[3, 0\] is 3"):
        d.empirical_initial(3)


# ---------------------------------------------------------------------- files
@pytest.mark.parametrize("final", [True, False])
def test_save_load_round_trip(tmp_path, final):
    d = good_demos(final)
    path = tmp_path / "demos.data"  # saved at exactly this path, no suffix added
    d.save(path)
    assert path.exists()
    assert_same(Demonstrations.load(path), d)
    assert_same(Demonstrations.load(str(path)), d)


def test_load_errors(tmp_path):
    path = tmp_path / "demos.npz"
    good_demos().save(path)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot read demonstrations from .*truncated.npz"):
        Demonstrations.load(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, states=np.zeros((2, 3), dtype=np.int64), x=np.ones(3))
    with pytest.raises(ValueError, match="foreign.npz' is missing format, actions, mask"):
        Demonstrations.load(foreign)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="cannot read demonstrations from .*text.npz"):
        Demonstrations.load(text)
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="array.npy.*not an .npz archive"):
        Demonstrations.load(npy)
    with pytest.raises(FileNotFoundError):
        Demonstrations.load(tmp_path / "absent.npz")


@st.composite
def demo_arrays(draw):
    N, T = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    ints = st.integers(0, 2**40)
    states = draw(st.lists(st.lists(ints, min_size=T, max_size=T), min_size=N, max_size=N))
    actions = draw(st.lists(st.lists(ints, min_size=T, max_size=T), min_size=N, max_size=N))
    lengths = draw(st.lists(st.integers(1, T), min_size=N, max_size=N))
    final = draw(st.none() | st.lists(ints, min_size=N, max_size=N))
    return states, actions, lengths, final


@settings(max_examples=40, deadline=None)
@given(demo_arrays())
def test_property_save_load_round_trip(arrays):
    states, actions, lengths, final = arrays
    d = Demonstrations.from_arrays(np.array(states), np.array(actions), lengths, final)
    with tempfile.TemporaryDirectory() as tmp:
        d.save(Path(tmp) / "d.npz")
        e = Demonstrations.load(Path(tmp) / "d.npz")
    assert_same(d, e)
    assert e.lengths.tolist() == lengths


# ---------------------------------------------------------------------- rollouts
class Plan(NamedTuple):
    log_policy: torch.Tensor


def test_rollouts_shapes_validity_and_seed():
    mdp = random_mdp(horizon=7)
    pi = torch.softmax(torch.randn(7, 5, 3, generator=torch.Generator().manual_seed(0)), -1)
    d = rollouts(mdp, Plan(pi.log()), n=50, seed=1)
    assert d.states.shape == d.actions.shape == (50, 7) and d.final_states.shape == (50,)
    assert bool(d.mask.all()) and d.n_steps == 350
    assert d.validate(mdp) is d  # every sampled transition has positive probability
    assert_same(rollouts(mdp, pi, n=50, seed=1), d)
    assert not torch.equal(rollouts(mdp, pi, n=50, seed=2).states, d.states)
    short = rollouts(mdp, pi[0], n=3, length=2, progress=True)  # stationary on a finite MDP
    assert short.states.shape == (3, 2)
    disc = random_mdp(discount=0.9)
    assert rollouts(disc, pi[0], n=4, length=11).validate(disc).max_length == 11


def test_rollouts_deterministic_path():
    mdp = chain_mdp(horizon=6, initial=torch.tensor([0.0, 1.0, 0.0, 0.0]))
    pi = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # stop in state 2
    d = rollouts(mdp, pi, n=3, seed=5)
    assert d.states.tolist() == [[1, 2, 2, 2, 2, 2]] * 3
    assert d.actions.tolist() == [[1, 0, 0, 0, 0, 0]] * 3
    assert d.final_states.tolist() == [2, 2, 2]
    d = rollouts(mdp, pi, n=2, length=3, initial=3)
    assert d.states.tolist() == [[3, 0, 1]] * 2 and d.final_states.tolist() == [2, 2]
    # one start state as a NumPy integer or a 0-d tensor (e.g. a logged state) is a state
    # index too; they were refused ("initial must be a state index ..., got 3.0")
    for state in (np.int64(3), torch.tensor(3), d.states[0, 0]):
        assert torch.equal(rollouts(mdp, pi, n=2, length=3, initial=state).states, d.states)
    for bad in (np.int64(4), torch.tensor(-1)):
        with pytest.raises(ValueError, match=r"initial is (4|-1), expected a state index in "
                                             r"\[0, 4\)"):
            rollouts(mdp, pi, n=2, length=3, initial=bad)


def test_rollouts_time_indexed_policy_uses_step_t():
    mdp = random_mdp(horizon=5)
    pi = torch.nn.functional.one_hot(torch.arange(5) % 3, 3).double()[:, None].expand(5, 5, 3)
    d = rollouts(mdp, pi, n=20)
    assert d.actions.tolist() == [[0, 1, 2, 0, 1]] * 20


def test_rollouts_action_frequencies_match_policy():
    # Next states are uniform whatever the action, so the actions drawn in a state are i.i.d.
    # from pi(.|s) and their counts are multinomial. Each of the 3 tests fails with probability
    # 1e-3 under a correct sampler (about 0.3% in all for a random seed; the seed here is fixed).
    S, A = 3, 3
    mdp = TabularMDP.from_dense(torch.full((S, A, S), 1 / S), discount=0.9)
    pi = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.05, 0.9, 0.05]])
    d = rollouts(mdp, pi, n=2000, length=10, seed=0)
    c = d.counts(S, A)
    for s in range(S):
        n = c[s].sum()
        assert n > 5000
        assert stats.chisquare(c[s].numpy(), (n * pi[s]).numpy()).pvalue > 1e-3


@pytest.mark.parametrize("kwargs, match", [
    (dict(policy=torch.full((5, 3), 1 / 3), n=2, discounted=True), "length is required"),
    (dict(policy=torch.full((4, 3), 1 / 3), n=2),
     r"policy must have shape \(5, 3\) or \(T, 5, 3\)"),
    (dict(policy=torch.full((2, 3, 5, 3), 1 / 3), n=2), "policy must have shape"),
    (dict(policy=torch.full((3, 5, 3), 1 / 3), n=2), "policy has 3 time steps, expected at least"),
    (dict(policy=torch.full((5, 3), 0.5), n=2), r"policy\[0\] sums to 1.5, expected 1"),
    (dict(policy=torch.tensor([[1 / 3] * 3] * 4 + [[-1.0, 1.0, 1.0]]), n=2),
     r"policy\[4, 0\] is -1, expected a probability >= 0"),
    (dict(policy=torch.full((5, 3), float("nan")), n=2),
     r"policy\[0, 0\] is nan, expected a finite number"),
    (dict(policy=torch.full((5, 3), 1 / 3), n=2, length=0), "length is 0, expected an integer"),
    (dict(policy=torch.full((5, 3), 1 / 3), n=0), "n is 0, expected an integer >= 1"),
    (dict(policy=torch.full((5, 3), 1 / 3), n=1, length=9), "length is 9, expected at most"),
    (dict(policy=torch.full((5, 3), 1 / 3), n=1, initial=5), "initial is 5"),
    (dict(policy=torch.full((5, 3), 1 / 3), n=1, initial=[0.5, 0.5]), "initial must be"),
])
def test_rollouts_errors(kwargs, match):
    mdp = random_mdp(discount=0.9) if kwargs.pop("discounted", False) else random_mdp()
    with pytest.raises(ValueError, match=match):
        rollouts(mdp, **kwargs)


@pytest.mark.parametrize("mdp, seed, error, match", [
    ("ok", "0", TypeError, r"seed must be an integer, got '0' \(str\)"),
    ("ok", 1.0, TypeError, r"seed must be an integer, got 1.0 \(float\)"),
    ("ok", 2 ** 70, ValueError, r"seed is 1180591620717411303424, expected an integer "
                                r"\[0, 18446744073709551615\]"),
    ("ok", -1, ValueError, "seed is -1, expected an integer"),
    (None, 0, TypeError, "mdp must be a TabularMDP, got NoneType"),
])
def test_rollouts_checks_mdp_and_seed(mdp, seed, error, match):
    """A string seed was a torch RuntimeError, 2**70 an OverflowError and mdp=None an
    AttributeError."""
    world = random_mdp()
    with pytest.raises(error, match=match):
        rollouts(world if mdp == "ok" else mdp, torch.full((5, 3), 1 / 3), 2, seed=seed)
    big = rollouts(world, torch.full((5, 3), 1 / 3), 2, seed=2 ** 64 - 1)  # a Generator's range
    assert_same(big, rollouts(world, torch.full((5, 3), 1 / 3), 2, seed=np.uint64(2 ** 64 - 1)))


def test_rollouts_initial_must_be_a_distribution():
    with pytest.raises(ValueError, match="initial sums to 2.5, expected 1"):
        rollouts(random_mdp(), torch.full((5, 3), 1 / 3), 2, initial=[0.5] * 5)
