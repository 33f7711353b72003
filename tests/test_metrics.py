"""Tests of bayesirl.metrics: expected value difference, EPIC distance, held-out likelihood.

EPIC is checked against a naive implementation written here with explicit loops over all
(s, a, s') triples, and for its defining invariances (potential shaping, positive rescaling).
"""

import itertools
import math

import numpy as np
import pytest
import torch

import bayesirl as birl
from bayesirl import envs
from bayesirl.core.mdp import TabularMDP
from bayesirl.metrics import epic_distance, expected_value_difference, held_out_log_likelihood

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # these MDPs are tiny


@pytest.fixture(scope="module")
def grid():
    """A 5x5 stochastic finite-horizon gridworld, its expert and 60 soft-optimal demos."""
    mdp = envs.gridworld(size=5, slip=0.1, horizon=10, block=1, seed=0, dtype=torch.float64)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=60, seed=0)
    return mdp, demos


def tiny(seed=0, S=4, A=2, discount=0.5, zero_frac=0.3):
    """A random discounted MDP and its dense ``(S, A, S)`` numpy transitions."""
    rng = np.random.default_rng(seed)
    P = rng.random((S, A, S)) * (rng.random((S, A, S)) >= zero_frac)
    P[..., 0] += 0.1
    P /= P.sum(-1, keepdims=True)
    return TabularMDP.from_dense(torch.as_tensor(P), discount=discount), P


class Posterior:
    """Anything with ``.reward() -> (draws, S, A)`` counts as a posterior."""

    def __init__(self, draws):
        self.draws = draws

    def reward(self):
        return self.draws


# ---------------------------------------------------------------------------- EVD
def test_evd_zero_for_truth_and_nonnegative(grid):
    mdp, _ = grid
    S, A = mdp.n_states, mdp.n_actions
    assert expected_value_difference(mdp, mdp.reward, mdp.reward).item() == 0
    sa_truth = mdp.reward[:, None].expand(S, A)
    assert expected_value_difference(mdp, None, sa_truth).item() == 0
    assert expected_value_difference(mdp, mdp.reward, 3.0 * mdp.reward).abs().item() < 1e-12
    draws = torch.randn(7, S, A, generator=torch.Generator().manual_seed(0))
    evd = expected_value_difference(mdp, mdp.reward, draws)
    assert evd.shape == (7,) and (evd >= -1e-9).all() and (evd > 0.1).all()
    assert expected_value_difference(mdp, mdp.reward, draws[0]).shape == ()
    assert torch.allclose(expected_value_difference(mdp, mdp.reward, Posterior(draws)), evd)
    assert expected_value_difference(mdp, mdp.reward, draws[:6].reshape(2, 3, S, A)).shape == (2, 3)
    state_draws = torch.randn(4, S, generator=torch.Generator().manual_seed(1))
    assert expected_value_difference(mdp, mdp.reward, state_draws).shape == (4,)


def test_evd_soft_and_discounted():
    mdp, _ = tiny()
    r = torch.randn(mdp.n_states, mdp.n_actions, generator=torch.Generator().manual_seed(2))
    assert expected_value_difference(mdp, r, r, soft=True).abs().item() < 1e-12
    # hard EVD of the soft-optimal policy's value gap is >= 0; soft EVD can have either sign
    assert expected_value_difference(mdp, r, -r).item() > 0
    assert torch.isfinite(expected_value_difference(mdp, r, 5 * r, soft=True))


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_evd_against_enumerated_policies(soft):
    """EVD on a 4-state, 2-action MDP from first principles in NumPy: every deterministic
    stationary policy's value by a linear solve (V = (I - gamma P_pi)^-1 r_pi), the optimal one
    the best of all 16; soft-optimal policies by soft value iteration iterated to convergence."""
    mdp, P = tiny(seed=3, discount=0.8)
    S, A, gamma = 4, 2, 0.8
    init = mdp.initial.numpy()
    g = torch.Generator().manual_seed(4)
    true, other = (torch.randn(S, A, generator=g, dtype=torch.float64) for _ in range(2))

    def value(pi, r):                            # pi: (S, A) probabilities
        P_pi = np.einsum("sa,sat->st", pi, P)
        return np.linalg.solve(np.eye(S) - gamma * P_pi, (pi * r).sum(-1))

    def optimal(r):
        if soft:
            v = np.zeros(S)
            for _ in range(2000):
                q = r + gamma * P @ v
                v = np.log(np.exp(q).sum(-1))
            return np.exp(q - v[:, None])
        best = max(itertools.product(range(A), repeat=S),
                   key=lambda acts: init @ value(np.eye(A)[list(acts)], r))
        return np.eye(A)[list(best)]

    t, o = true.numpy(), other.numpy()
    want = init @ value(optimal(t), t) - init @ value(optimal(o), t)
    got = float(expected_value_difference(mdp, true, other, soft=soft))
    assert got == pytest.approx(want, abs=1e-9)
    assert abs(want) > 0.05  # the two rewards' optimal policies differ


def test_evd_bad_inputs(grid):
    mdp, _ = grid
    with pytest.raises(ValueError, match=r"reward must have shape \(\.\.\., 25, 5\)"):
        expected_value_difference(mdp, mdp.reward, torch.zeros(3))
    with pytest.raises(ValueError, match="true_reward must be one reward"):
        expected_value_difference(mdp, torch.zeros(2, 25), mdp.reward)
    with pytest.raises(ValueError, match=r"reward\[3\] is nan"):
        nan_at_3 = torch.zeros(25).index_fill(0, torch.tensor(3), math.nan)
        expected_value_difference(mdp, mdp.reward, nan_at_3)
    with pytest.raises(TypeError, match="mdp must be a TabularMDP"):
        expected_value_difference("grid", mdp.reward, mdp.reward)


# ---------------------------------------------------------------------------- EPIC
def naive_epic(P, R1, R2, gamma, coverage):
    """EPIC by the definition, explicit loops over every triple, uniform D_S and D_A."""
    S, A, _ = P.shape

    def canon(R):
        C = np.zeros((S, A, S))
        for s in range(S):
            for a in range(A):
                for t in range(S):
                    C[s, a, t] = R[s, a, t] + gamma * R[t].mean() - R[s].mean() - gamma * R.mean()
        return C

    C1, C2 = canon(R1), canon(R2)
    W = P / (S * A) if coverage == "transitions" else np.full((S, A, S), 1 / (S * A * S))
    m1, m2 = (W * C1).sum(), (W * C2).sum()
    cov = (W * (C1 - m1) * (C2 - m2)).sum()
    rho = cov / math.sqrt((W * (C1 - m1) ** 2).sum() * (W * (C2 - m2) ** 2).sum())
    return math.sqrt(max(1 - rho, 0) / 2)


@pytest.mark.parametrize("coverage", ["transitions", "uniform"])
@pytest.mark.parametrize("dense", [False, True])
def test_epic_matches_naive(coverage, dense):
    mdp, P = tiny(seed=3)
    S, A = mdp.n_states, mdp.n_actions
    g = torch.Generator().manual_seed(0)
    r1 = torch.randn(S, A, generator=g)
    r2 = torch.randn(S, A, S, generator=g) if dense else torch.randn(S, A, generator=g)
    R1 = np.broadcast_to(r1.numpy()[..., None], (S, A, S))
    R2 = r2.numpy() if dense else np.broadcast_to(r2.numpy()[..., None], (S, A, S))
    want = naive_epic(P, R1, R2, 0.5, coverage)
    got = epic_distance(mdp, r1, r2, coverage=coverage)
    assert got.item() == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("coverage", ["transitions", "uniform"])
def test_epic_invariances(grid, coverage):
    mdp, _ = grid
    S, A = mdp.n_states, mdp.n_actions
    g = torch.Generator().manual_seed(4)
    r = mdp.reward[:, None].expand(S, A) + 0.3 * torch.randn(S, A, generator=g)
    phi = torch.randn(S, generator=g)
    gamma = 1.0  # finite horizon: shaping with gamma = 1
    shaped = r[..., None] + gamma * phi[None, None, :] - phi[:, None, None]   # (S, A, S)
    for other in (shaped, 2.5 * r, 0.1 * shaped + 7.0, r):
        assert epic_distance(mdp, r, other, coverage=coverage).item() < 1e-6
    assert epic_distance(mdp, r, -r, coverage=coverage).item() == pytest.approx(1.0)
    different = torch.randn(S, A, generator=g)
    assert epic_distance(mdp, r, different, coverage=coverage).item() > 0.2
    disc = mdp.replace(discount=0.9)
    shaped9 = r[..., None] + 0.9 * phi[None, None, :] - phi[:, None, None]
    assert epic_distance(disc, r, shaped9, coverage=coverage).item() < 1e-6
    assert epic_distance(mdp, r, shaped9, coverage=coverage).item() > 1e-3  # wrong gamma


def test_epic_batched_and_degenerate(grid):
    mdp, _ = grid
    S, A = mdp.n_states, mdp.n_actions
    draws = torch.randn(6, S, A, generator=torch.Generator().manual_seed(5))
    d = epic_distance(mdp, mdp.reward, draws)
    assert d.shape == (6,) and ((d > 0) & (d <= 1)).all()
    for i in range(6):
        assert d[i].item() == pytest.approx(epic_distance(mdp, mdp.reward, draws[i]).item())
    assert torch.allclose(epic_distance(mdp, mdp.reward, Posterior(draws)), d)
    assert epic_distance(mdp, draws[:2, None], draws[None, :3]).shape == (2, 3)
    const = torch.full((S,), 2.0)
    assert epic_distance(mdp, const, torch.zeros(S)).item() == 0
    assert math.isnan(epic_distance(mdp, const, mdp.reward).item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_epic_recognises_pure_shaping_in_either_dtype(dtype):
    """A pure shaping reward gamma Phi(s') - Phi(s) (plus a constant) canonicalises to 0 up to
    round-off, which scales with the dtype's eps: nan against the truth, 0 against the zero
    reward. In float32 the fixed 1e-10 max|R| threshold was below round-off (0.668, nan)."""
    mdp = envs.gridworld(size=5, slip=0.1, discount=0.9, block=1, seed=0, dtype=dtype)
    S, A = mdp.n_states, mdp.n_actions
    g = torch.Generator().manual_seed(0)
    for scale, const in ((1.0, 0.0), (100.0, 3.0), (1e-3, -50.0)):
        phi = scale * torch.randn(S, generator=g, dtype=dtype)
        shaped = (0.9 * phi[None, None, :] - phi[:, None, None] + const).expand(S, A, S)
        for coverage in ("transitions", "uniform"):
            assert math.isnan(epic_distance(mdp, shaped, mdp.reward, coverage=coverage).item())
            assert epic_distance(mdp, shaped, torch.zeros(S), coverage=coverage).item() == 0
    # a real reward on top of a large constant is still a reward (distance 0 to itself)
    offset = mdp.reward + 1000
    assert epic_distance(mdp, offset, mdp.reward).item() == pytest.approx(0, abs=1e-3)
    assert not math.isnan(epic_distance(mdp, 1e-3 * mdp.reward + 1, mdp.reward).item())


def test_epic_bad_inputs(grid):
    mdp, _ = grid
    with pytest.raises(ValueError, match="coverage is 'all'"):
        epic_distance(mdp, mdp.reward, mdp.reward, coverage="all")
    with pytest.raises(ValueError, match="discount is 1.5"):
        epic_distance(mdp, mdp.reward, mdp.reward, discount=1.5)
    # a NumPy scalar is a number (it was refused as "discount is np.float32(0.9), expected a
    # number in [0, 1]")
    assert epic_distance(mdp, mdp.reward, 2 * mdp.reward, discount=np.float32(0.9)).item() == \
        pytest.approx(epic_distance(mdp, mdp.reward, 2 * mdp.reward, discount=0.9).item())
    with pytest.raises(ValueError, match=r"state_dist must be a probability vector of shape \(25"):
        epic_distance(mdp, mdp.reward, mdp.reward, state_dist=torch.ones(25))
    with pytest.raises(ValueError, match=r"r2 must have shape"):
        epic_distance(mdp, mdp.reward, torch.zeros(25, 5, 3))


# ---------------------------------------------------------------------------- held-out likelihood
def test_held_out_log_likelihood(grid):
    mdp, demos = grid
    held_out = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=40, seed=1)
    ll_true = held_out_log_likelihood(mdp, mdp.reward, held_out)
    assert ll_true.shape == (40,) and (ll_true <= 0).all()
    g = torch.Generator().manual_seed(6)
    for _ in range(3):
        ll_rand = held_out_log_likelihood(mdp, torch.randn(mdp.n_states, generator=g), held_out)
        assert ll_true.mean() > ll_rand.mean() + 1.0
    # a posterior whose draws are all the truth predicts like the truth
    same = Posterior(mdp.reward.expand(4, -1))
    assert torch.allclose(held_out_log_likelihood(mdp, same, held_out), ll_true)
    # log-mean-exp over two draws, by hand
    other = torch.randn(mdp.n_states, generator=g)
    mixed = held_out_log_likelihood(mdp, torch.stack([mdp.reward, other]), held_out)
    by_hand = torch.logaddexp(ll_true, held_out_log_likelihood(mdp, other, held_out)) - math.log(2)
    assert torch.allclose(mixed, by_hand)
    # rationality = 2 is the soft policy of 2 r
    assert torch.allclose(held_out_log_likelihood(mdp, mdp.reward, held_out, rationality=2.0),
                          held_out_log_likelihood(mdp, 2 * mdp.reward, held_out))


def test_held_out_log_likelihood_by_hand_discounted():
    mdp, _ = tiny(seed=7, zero_frac=0)
    r = torch.randn(mdp.n_states, mdp.n_actions, generator=torch.Generator().manual_seed(8))
    demos = birl.Demonstrations.from_arrays(torch.tensor([[0, 1, 2], [3, 3, 0]]),
                                            torch.tensor([[1, 0, 1], [0, 1, 1]]),
                                            lengths=torch.tensor([3, 2]))
    lp = birl.soft_value_iteration(mdp, r).log_policy
    want = torch.stack([lp[0, 1] + lp[1, 0] + lp[2, 1], lp[3, 0] + lp[3, 1]])
    assert torch.allclose(held_out_log_likelihood(mdp, r, demos), want)


def test_held_out_ignores_padding_past_the_horizon(grid):
    """Valid demonstrations padded wider than a finite horizon (the extra columns all masked):
    the same values as unpadded, not an IndexError from the time-indexed policy."""
    mdp, demos = grid
    d = demos[:3]

    def pad(x):
        return torch.nn.functional.pad(x, (0, 4))
    wide = birl.Demonstrations(pad(d.states), pad(d.actions), pad(d.mask))
    assert wide.max_length == mdp.horizon + 4 and wide.validate(mdp) is wide
    torch.testing.assert_close(held_out_log_likelihood(mdp, mdp.reward, wide),
                               held_out_log_likelihood(mdp, mdp.reward, d))
    draws = torch.stack([mdp.reward, -mdp.reward])
    torch.testing.assert_close(held_out_log_likelihood(mdp, draws, wide),
                               held_out_log_likelihood(mdp, draws, d))


def test_held_out_bad_inputs(grid):
    mdp, demos = grid
    with pytest.raises(ValueError, match="rationality is 0"):
        held_out_log_likelihood(mdp, mdp.reward, demos, rationality=0)
    # a NumPy scalar is a number (it was refused as "rationality is np.float32(2.0), expected
    # a finite number > 0")
    torch.testing.assert_close(
        held_out_log_likelihood(mdp, mdp.reward, demos, rationality=np.float32(2)),
        held_out_log_likelihood(mdp, mdp.reward, demos, rationality=2.0))
    bad = birl.Demonstrations.from_arrays(torch.tensor([[30, 0]]), torch.tensor([[0, 0]]))
    with pytest.raises(ValueError, match=r"states\[0, 0\] is 30"):
        held_out_log_likelihood(mdp, mdp.reward, bad)
    with pytest.raises(TypeError, match="demos must be Demonstrations"):
        held_out_log_likelihood(mdp, mdp.reward, [[0, 1]])
