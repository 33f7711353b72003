"""Tests of bayesirl.decisions: BROIL robust policies, VaR bounds, active queries, PPCs.

References: exhaustive enumeration of deterministic policies and a closed-form risky/safe choice
for the linear program; the Rockafellar-Uryasev formula for CVaR; the binomial definition of the
order-statistic bound; an exact grid posterior on a one-parameter reward family for the
statistical properties (coverage of the VaR bound, uniform predictive p-values; slow).
"""

import functools
import itertools
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pyro.distributions as dist
import pytest
import torch
from scipy.stats import binom, kstest

import bayesirl as birl
from bayesirl import decisions as dec
from bayesirl import envs
from bayesirl.core.mdp import TabularMDP
from bayesirl.decisions._solvers import flow_constraints
from bayesirl.decisions.bounds import order_statistic
from bayesirl.testing import simulate_demos, tiny_chain_mdp


# ---------------------------------------------------------------------------- problems
def risky_safe(finite: bool) -> tuple[TabularMDP, torch.Tensor]:
    """Start in state 0; action 0 moves to the absorbing "risky" state 1, action 1 to the
    absorbing "safe" state 2. Two equally likely rewards: risky pays +4 or -2 per step, safe
    +0.5 in both. The mean prefers risky (1 > 0.5), the worst case prefers safe (0.5 > -2)."""
    P = torch.zeros(3, 2, 3)
    P[0, 0, 1] = P[0, 1, 2] = 1
    P[1, :, 1] = P[2, :, 2] = 1
    time = {"horizon": 3} if finite else {"discount": 0.5}
    mdp = TabularMDP.from_dense(P, initial=torch.tensor([1.0, 0, 0]), **time)
    return mdp, torch.tensor([[0.0, 4.0, 0.5], [0.0, -2.0, 0.5]])


def tiny(seed=0, S=3, A=2, horizon=None, discount=None, zero_frac=0.3):
    """A random MDP from dense transitions with a random initial distribution."""
    rng = np.random.default_rng(seed)
    P = rng.random((S, A, S)) * (rng.random((S, A, S)) >= zero_frac)
    P[..., rng.integers(S)] += 0.1
    P /= P.sum(-1, keepdims=True)
    return TabularMDP.from_dense(torch.as_tensor(P), initial=torch.as_tensor(
        rng.dirichlet(np.ones(S))), horizon=horizon, discount=discount)


def deterministic_policies(mdp):
    """Every deterministic (time-indexed for a finite horizon) policy: ``(N, [T,] S, A)``."""
    S, A = mdp.n_states, mdp.n_actions
    T = mdp.horizon or 1
    choices = torch.tensor(list(itertools.product(range(A), repeat=T * S)))
    pi = torch.nn.functional.one_hot(choices, A).to(mdp.dtype)
    return pi.reshape(-1, T, S, A) if mdp.finite_horizon else pi.reshape(-1, S, A)


def broil_objectives(mdp, policies, R, alpha, lam):
    """The BROIL objective of every policy in ``policies (N, ...)`` (uniform draws)."""
    psi = birl.policy_value(mdp, policies.unsqueeze(1), R)                # (N, D)
    return [lam * float(row.mean()) + (1 - lam) * dec.cvar(row, alpha) for row in psi]


# ---------------------------------------------------------------------------- robust_policy
@pytest.mark.parametrize("method", ["lp", "columns"])
@pytest.mark.parametrize("finite", [False, True])
def test_lam_one_is_mean_optimal_and_alpha_to_one_is_max_min(finite, method):
    mdp, R = risky_safe(finite)
    first = (lambda pi: pi[0, 0]) if finite else (lambda pi: pi[0])
    mean = dec.robust_policy(mdp, R, lam=1.0, method=method)
    assert torch.allclose(first(mean.policy), torch.tensor([1.0, 0.0]), atol=1e-9)  # risky
    robust = dec.robust_policy(mdp, R, lam=0.0, alpha=0.999, method=method)
    assert torch.allclose(first(robust.policy), torch.tensor([0.0, 1.0]), atol=1e-9)  # safe
    # CVaR at alpha -> 1 of two equally likely draws is the smaller return: max-min
    assert robust.cvar == pytest.approx(float(robust.returns.min()), abs=1e-9)
    best_min = float(birl.policy_value(mdp, deterministic_policies(mdp).unsqueeze(1), R)
                     .amin(1).max())
    assert robust.objective == pytest.approx(best_min, abs=1e-9)
    assert mean.expected_return > robust.expected_return


@pytest.mark.parametrize("lam", [0.0, 0.7, 0.9])
def test_mean_cvar_trade_off_by_hand(lam):
    """Horizon 3, risky with probability x: returns (1 + 7x, 1 - 5x) under the two draws; with
    alpha = 0.5 the CVaR is the worse one, so the objective lam (1 + x) + (1 - lam)(1 - 5x) =
    1 + x (6 lam - 5) is maximised by x = 1 when lam > 5/6, else by x = 0."""
    mdp, R = risky_safe(finite=True)
    out = dec.robust_policy(mdp, R, lam=lam, alpha=0.5)
    x = 1.0 if lam > 5 / 6 else 0.0
    assert float(out.policy[0, 0, 0]) == pytest.approx(x, abs=1e-9)
    assert out.objective == pytest.approx(1 + x * (6 * lam - 5), abs=1e-9)
    assert out.expected_return == pytest.approx(1 + x, abs=1e-9)
    assert out.cvar == pytest.approx(1 - 5 * x, abs=1e-9)


@pytest.mark.parametrize("method", ["lp", "columns"])
@pytest.mark.parametrize("time", [{"discount": 0.8}, {"horizon": 3}])
def test_optimum_beats_every_deterministic_policy(time, method):
    mdp = tiny(seed=1, **time)
    R = torch.randn(7, 3, 2, generator=torch.Generator().manual_seed(0))
    for lam, alpha in [(1.0, 0.9), (0.4, 0.8), (0.0, 0.6)]:
        out = dec.robust_policy(mdp, R, alpha=alpha, lam=lam, method=method)
        brute = max(broil_objectives(mdp, deterministic_policies(mdp), R, alpha, lam))
        assert out.objective >= brute - 1e-8
        if lam == 1:  # a linear objective: a deterministic policy is optimal
            assert out.objective == pytest.approx(brute, abs=1e-8)
        # the reported numbers are those of the returned policy
        assert out.objective == pytest.approx(
            broil_objectives(mdp, out.policy[None], R, alpha, lam)[0], abs=1e-8)


@pytest.mark.parametrize("method", ["lp", "columns"])
@pytest.mark.parametrize("time", [{"discount": 0.9}, {"horizon": 6}])
def test_solution_satisfies_flow_constraints(time, method):
    mdp = envs.random_mdp(n_states=12, n_actions=3, branching=3, seed=2, **time)
    R = torch.randn(15, 12, 3, generator=torch.Generator().manual_seed(1))
    out = dec.robust_policy(mdp, R, alpha=0.9, lam=0.3, method=method)
    A_eq, b_eq = flow_constraints(mdp)
    u = out.occupancy.reshape(-1).numpy()
    assert np.abs(A_eq @ u - b_eq).max() < 1e-8 and (u >= 0).all()
    shape = (6, 12, 3) if mdp.finite_horizon else (12, 3)
    assert out.policy.shape == out.occupancy.shape == shape
    assert torch.allclose(out.policy.sum(-1), torch.ones(shape[:-1]), atol=1e-12)
    # the policy's own occupancy is the solution's
    occ = birl.occupancy(mdp, out.policy, per_time=mdp.finite_horizon)
    assert torch.allclose(occ, out.occupancy, atol=1e-8)
    assert out.returns.shape == (15,)


@pytest.mark.parametrize("time", [{"discount": 0.9}, {"horizon": 5}])
def test_lp_and_column_generation_agree(time):
    mdp = envs.gridworld(size=4, slip=0.1, block=2, **time)
    theta = torch.randn(60, mdp.n_features, generator=torch.Generator().manual_seed(3))
    R = theta @ mdp.features.T                                   # (60, S): rank 4
    for lam in (0.0, 0.5):
        lp = dec.robust_policy(mdp, R, alpha=0.9, lam=lam, method="lp")
        cg = dec.robust_policy(mdp, R, alpha=0.9, lam=lam, method="columns")
        assert lp.objective == pytest.approx(cg.objective, rel=1e-8, abs=1e-8)


def test_lam_one_equals_bayes_optimal_value():
    mdp = envs.gridworld(size=5, slip=0.1, block=1, discount=0.9, seed=1)
    g = torch.Generator().manual_seed(0)
    R = torch.randn(40, 25, generator=g)
    w = torch.rand(40, generator=g)
    for weights in (None, w):
        p = torch.full((40,), 1 / 40) if weights is None else w / w.sum()
        plan = dec.bayes_optimal_policy(mdp, R, weights=weights)
        want = birl.policy_value(mdp, plan, torch.einsum("d,ds->s", p, R))
        got = dec.robust_policy(mdp, R, lam=1.0, weights=weights)
        assert got.expected_return == pytest.approx(float(want), rel=1e-9)
        assert got.objective == pytest.approx(got.expected_return, rel=1e-12)


def test_weights_equal_repeated_draws():
    mdp = tiny(seed=3, discount=0.7)
    R = torch.randn(3, 3, 2, generator=torch.Generator().manual_seed(5))
    repeated = R[[0, 1, 1, 2, 2, 2]]
    a = dec.robust_policy(mdp, R, alpha=0.6, lam=0.2, weights=torch.tensor([1.0, 2, 3]))
    b = dec.robust_policy(mdp, repeated, alpha=0.6, lam=0.2)
    assert a.objective == pytest.approx(b.objective, abs=1e-9)


def test_cvar_is_rockafellar_uryasev():
    g = torch.Generator().manual_seed(0)
    for n, alpha in [(1, 0.5), (5, 0.9), (40, 0.95), (40, 0.3)]:
        x, w = torch.randn(n, generator=g), torch.rand(n, generator=g)
        for weights in (None, w):
            p = torch.full((n,), 1 / n) if weights is None else w / w.sum()
            ru = max(float(s - (p * (s - x).clamp(min=0)).sum() / (1 - alpha)) for s in x)
            assert dec.cvar(x, alpha, weights) == pytest.approx(ru, abs=1e-12)


def test_baselines():
    mdp = tiny(seed=4, S=4, horizon=3)
    R = torch.randn(30, 4, 2, generator=torch.Generator().manual_seed(2))
    plan = birl.soft_value_iteration(mdp, R[0])
    occ = birl.occupancy(mdp, plan)
    outs = [dec.robust_policy(mdp, R, alpha=0.9, lam=0.0, baseline=b)
            for b in (plan, plan.policy, occ, birl.occupancy(mdp, plan, per_time=True))]
    for out in outs:
        assert out.objective == pytest.approx(outs[0].objective, abs=1e-9)
        assert out.cvar >= -1e-9           # the baseline itself is feasible with psi = 0
    # "expert": the demonstrations' empirical occupancy (full-length demos: mass T)
    demos = birl.rollouts(mdp, plan, n=7, seed=0)
    post = birl.RewardPosterior.from_draws(mdp, R, demos=demos)
    expert = dec.robust_policy(mdp, post, alpha=0.9, lam=0.0, baseline="expert")
    counts = demos.counts(4, 2) / demos.n
    explicit = dec.robust_policy(mdp, R, alpha=0.9, lam=0.0, baseline=counts)
    assert expert.objective == pytest.approx(explicit.objective, abs=1e-9)
    # the baseline shifts the CVaR, not the expected return's meaning
    none = dec.robust_policy(mdp, R, alpha=0.9, lam=1.0)
    shifted = dec.robust_policy(mdp, R, alpha=0.9, lam=1.0, baseline=occ)
    assert shifted.expected_return == pytest.approx(none.expected_return, abs=1e-9)


def test_expert_baseline_refuses_demonstrations_too_short_for_the_experts_occupancy():
    """Demonstrations of 5 steps at gamma 0.9 carry discounted mass 4.1 of a policy's 10: the
    expert's own policy then showed a regret, and per-draw reward offsets (which a soft
    likelihood cannot identify) changed the robust policy. Refused, naming what is missing."""
    mdp = tiny_chain_mdp(discount=0.9)
    r = mdp.reward.unsqueeze(-1).expand(3, 2)
    demos = simulate_demos(mdp, r, 50, seed=0, length=5)
    R = r + torch.randn(20, 1, 1, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    post = birl.RewardPosterior.from_draws(mdp, R, demos=demos)
    with pytest.raises(ValueError, match=r"mass 4\.095 per demonstration.* = 10 at gamma=0\.9: "
                                         r"59\.0% of the expert's discounted occupancy is "
                                         r"missing.*at least 44 steps.*Plan"):
        dec.robust_policy(mdp, post, alpha=0.9, baseline="expert")
    # finite horizon: demonstrations shorter than the horizon miss the expert's last steps
    fh = tiny_chain_mdp(horizon=4)
    short = simulate_demos(fh, r, 20, seed=0, length=2)
    post = birl.RewardPosterior.from_draws(fh, R, demos=short)
    with pytest.raises(ValueError, match=r"demonstrations of the MDP's horizon 4.*\(length 2\) "
                                         r"cover 2 of the expert's 4 steps.*50\.0%"):
        dec.robust_policy(fh, post, alpha=0.9, baseline="expert")
    full = simulate_demos(fh, r, 20, seed=0, length=4)
    post = birl.RewardPosterior.from_draws(fh, R, demos=full)
    assert math.isfinite(dec.robust_policy(fh, post, alpha=0.9, baseline="expert").cvar)


def test_expert_baseline_gives_the_expert_no_regret():
    """With demonstrations long enough to stand for the discounted occupancy, the expert's own
    policy has ~0 regret in every draw, whatever the draw's offset, and the robust policy is
    the one the expert's Plan as baseline gives."""
    from bayesirl.decisions.robust import _baseline_returns

    mdp = tiny_chain_mdp(discount=0.9)
    r = mdp.reward.unsqueeze(-1).expand(3, 2)
    expert = birl.soft_value_iteration(mdp, r)
    demos = simulate_demos(mdp, r, 2000, seed=0, length=100)
    g = torch.Generator().manual_seed(0)
    R = r + 0.5 * torch.randn(30, 3, 1, generator=g, dtype=torch.float64) + 3.0 * torch.randn(
        30, 1, 1, generator=g, dtype=torch.float64)
    post = birl.RewardPosterior.from_draws(mdp, R, demos=demos)
    own = torch.einsum("dsa,sa->d", R, birl.occupancy(mdp, expert))
    regret = own - _baseline_returns(mdp, post, "expert", R)
    # the Monte Carlo error of 2000 demonstrations, against returns spread over +-30 by the
    # offsets (5-step demonstrations gave regrets of that size)
    assert own.std() > 10 and regret.abs().max() < 0.1
    a = dec.robust_policy(mdp, post, alpha=0.9, lam=0.0, baseline="expert")
    b = dec.robust_policy(mdp, post, alpha=0.9, lam=0.0, baseline=expert)
    assert a.cvar == pytest.approx(b.cvar, abs=0.1)
    torch.testing.assert_close(a.policy, b.policy, atol=0.05, rtol=0)  # 5 steps: 0.7 apart


def test_accepts_posterior_and_state_rewards():
    mdp, R = risky_safe(finite=False)
    post = birl.RewardPosterior.from_draws(mdp, R)
    a = dec.robust_policy(mdp, post, lam=0.0, alpha=0.9)
    b = dec.robust_policy(mdp, R[:, :, None].expand(-1, -1, 2), lam=0.0, alpha=0.9)
    assert torch.allclose(a.policy, b.policy) and a.objective == pytest.approx(b.objective)


def test_posterior_must_belong_to_the_mdp():
    mdp, R = risky_safe(finite=False)
    post = birl.RewardPosterior.from_draws(mdp, R)
    plan = birl.value_iteration(mdp, R[0])
    demos = birl.rollouts(mdp, plan, n=2, length=3)
    tools = [lambda m: dec.robust_policy(m, post, lam=0.0, alpha=0.9),
             lambda m: dec.bayes_optimal_policy(m, post),
             lambda m: dec.value_at_risk_bound(m, post, torch.full((3, 2), 0.5)),
             lambda m: dec.active_query(m, post),
             lambda m: dec.posterior_predictive_check(m, post, demos, n_sims=5)]
    # other dynamics, same sizes: the message names both MDPs and both fingerprints
    moved = tiny(seed=0, S=3, A=2, discount=0.5)
    for tool in tools:
        with pytest.raises(ValueError, match="transition probabilities differ") as err:
            tool(moved)
        msg = str(err.value)
        assert repr(mdp) in msg and repr(moved) in msg
        assert mdp.fingerprint() in msg and moved.fingerprint() in msg
    with pytest.raises(ValueError, match=re.escape("numbers of states differ (3 vs 4)")):
        dec.bayes_optimal_policy(tiny(S=4, discount=0.5), post)
    with pytest.raises(ValueError, match=re.escape("numbers of actions differ (2 vs 3)")):
        dec.bayes_optimal_policy(tiny(A=3, discount=0.5), post)
    # deployment choices may differ: start, time, dtype, the sparse layout of the same table
    padded = TabularMDP(  # one more successor slot per (s, a), with probability 0
        successors=torch.cat([torch.zeros_like(mdp.successors[..., :1]), mdp.successors], -1),
        transition_probs=torch.cat([torch.zeros_like(mdp.transition_probs[..., :1]),
                                    mdp.transition_probs], -1),
        initial=mdp.initial, discount=0.5)
    for other in (mdp.replace(initial=torch.tensor([0.0, 0.5, 0.5])), mdp.replace(horizon=2),
                  mdp.to(dtype=torch.float32), padded):
        for tool in tools[:2]:
            tool(other)
    # the draws themselves go anywhere with the right sizes (reward transfer)
    dec.bayes_optimal_policy(moved, post.reward())


# ---------------------------------------------------------------------------- VaR bound
def test_order_statistic_definition():
    for n, alpha, delta in [(59, 0.95, 0.05), (200, 0.95, 0.05), (1000, 0.99, 0.01), (10, 0.5,
                                                                                        0.1)]:
        k = order_statistic(n, alpha, delta)
        assert binom.cdf(k - 1, n, alpha) >= 1 - delta
        assert k == 1 or binom.cdf(k - 2, n, alpha) < 1 - delta
    assert order_statistic(59, 0.95, 0.05) == 59      # 1 - 0.95**59 = 0.9515
    assert order_statistic(58, 0.95, 0.05) is None    # too few draws


@pytest.mark.parametrize("time", [{"discount": 0.9}, {"horizon": 4}])
def test_value_at_risk_bound_by_hand(time):
    mdp = tiny(seed=5, S=4, **time)
    R = torch.randn(100, 4, 2, generator=torch.Generator().manual_seed(0))
    plan = birl.value_iteration(mdp, R.mean(0))
    out = dec.value_at_risk_bound(mdp, R, plan, alpha=0.9, delta=0.1)
    want = (birl.policy_value(mdp, birl.value_iteration(mdp, R), R)
            - birl.policy_value(mdp, plan, R))
    assert torch.allclose(out.evd, want, atol=1e-8) and (out.evd > -1e-8).all()
    ordered = want.sort().values
    assert out.var == pytest.approx(float(ordered[89]), abs=1e-8)    # ceil(0.9 * 100) = 90th
    assert out.order == order_statistic(100, 0.9, 0.1)
    assert out.bound == pytest.approx(float(ordered[out.order - 1]), abs=1e-8)
    assert out.bound >= out.var
    # probabilities and a Plan give the same; too few draws give an infinite bound
    same = dec.value_at_risk_bound(mdp, R, plan.policy, alpha=0.9, delta=0.1)
    assert same.bound == out.bound
    few = dec.value_at_risk_bound(mdp, R[:5], plan, alpha=0.9, delta=0.1)
    assert few.bound == math.inf and few.order is None


# ---------------------------------------------------------------------------- active queries
@pytest.fixture(scope="module")
def split_posterior():
    """A 5x5 grid: demos from the left column to a goal at (0, 0) never visit the right two
    columns; the draws share the true reward on the left three columns and differ, widely, on
    the others. (The goal reward is large so that the expert is nearly deterministic where the
    draws agree: the entropy criterion cannot tell indifference from disagreement.)"""
    mdp = envs.gridworld(size=5, slip=0.0, block=1, discount=0.9, seed=0)
    truth = torch.zeros(25)
    truth[0] = 10.0
    start = torch.zeros(25)
    start[[5, 10, 15, 20]] = 0.25
    demos = birl.rollouts(mdp, birl.value_iteration(mdp, truth), n=20, length=10, initial=start)
    visited = torch.zeros(25, dtype=torch.bool)
    visited[demos.states.reshape(-1)] = True
    cols = torch.arange(25) % 5
    unvisited = cols >= 3
    assert not (visited & unvisited).any()
    g = torch.Generator().manual_seed(0)
    draws = truth.expand(200, 25).clone()
    draws[:, unvisited] = 4 * torch.randn(200, int(unvisited.sum()), generator=g)
    return mdp, draws, visited, unvisited


@pytest.mark.parametrize("criterion", ["entropy", "info_gain"])
def test_active_query_picks_an_unvisited_state(split_posterior, criterion):
    mdp, draws, visited, unvisited = split_posterior
    q = dec.active_query(mdp, draws, k=3, criterion=criterion)
    assert q.states.shape == (3,) and q.states.dtype == torch.long
    assert unvisited[q.states].all()
    assert q.scores[unvisited].max() > q.scores[visited].max()
    assert torch.equal(q.states, q.scores.argsort(descending=True, stable=True)[:3])
    # excluded states are skipped, scores untouched
    skip = dec.active_query(mdp, draws, k=2, criterion=criterion, exclude=q.states[:1])
    assert torch.equal(skip.states, q.states[1:3]) and torch.equal(skip.scores, q.scores)


def test_info_gain_is_zero_when_draws_agree():
    mdp = envs.gridworld(size=3, block=1, horizon=4)
    R = mdp.reward.expand(10, 9)
    q = dec.active_query(mdp, R, k=9, criterion="info_gain")
    assert torch.allclose(q.scores, torch.zeros(9), atol=1e-12)
    e = dec.active_query(mdp, R, k=1, criterion="entropy")
    pi = birl.soft_value_iteration(mdp, mdp.reward).policy                   # (T, S, A)
    want = -(pi * pi.log()).sum(-1).mean(0)
    assert torch.allclose(e.scores, want, atol=1e-12)


# ---------------------------------------------------------------------------- predictive checks
@pytest.mark.parametrize("statistic", ["state_visitation", "action_frequency", "feature_counts"])
@pytest.mark.parametrize("time", [{"discount": 0.9}, {"horizon": 8}])
def test_ppc_shapes_and_observed(statistic, time):
    mdp = envs.gridworld(size=4, block=2, seed=0, **time)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=6, length=8,
                          seed=0)
    demos = birl.Demonstrations.from_arrays(demos.states, demos.actions,
                                            lengths=torch.tensor([8, 3, 5, 8, 1, 7]))
    R = mdp.reward + 0.1 * torch.randn(30, 16, generator=torch.Generator().manual_seed(0))
    out = dec.posterior_predictive_check(mdp, R, demos, statistic=statistic, n_sims=50)
    k = {"state_visitation": 16, "action_frequency": 5, "feature_counts": 4}[statistic]
    assert out.observed.shape == (k,) and out.replicated.shape == (50, k)
    assert out.p_values.shape == (k,) and ((out.p_values >= 0) & (out.p_values <= 1)).all()
    assert 0 <= out.omnibus_p <= 1 and out.ax is None
    if statistic == "feature_counts":
        assert torch.allclose(out.observed, demos.feature_expectations(mdp))
    else:
        idx = demos.states if statistic == "state_visitation" else demos.actions
        want = torch.bincount(idx[demos.mask], minlength=k).to(out.observed)
        assert torch.equal(out.observed, want)
        # replicates keep the demonstrations' lengths
        assert torch.equal(out.replicated.sum(1), torch.full((50,), float(demos.n_steps)))
    # the same seed gives the same replicates
    again = dec.posterior_predictive_check(mdp, R, demos, statistic=statistic, n_sims=50)
    assert torch.equal(again.replicated, out.replicated)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_ppc_p_values_follow_their_definitions(alternative):
    """The p-values recomputed from the returned replicates by counting, as the module doc
    defines them: mid-p per component (ties split), and the omnibus mid-p of the discrepancy
    sum_j (T_j - m_j)^2 / v_j (a component with v = 0 adds 0 where the data agree,
    infinity where they do not)."""
    mdp = envs.gridworld(size=4, block=2, seed=0, horizon=8)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=6, length=8,
                          seed=0)
    R = mdp.reward + 0.5 * torch.randn(30, 16, generator=torch.Generator().manual_seed(0))

    def visits_and_steps(d):  # the last component is the same in every replicate and the data
        visits = torch.bincount(d.states[d.mask], minlength=16).double()
        return torch.cat([visits, torch.tensor([float(d.n_steps)])])

    out = dec.posterior_predictive_check(mdp, R, demos, statistic=visits_and_steps,
                                         n_sims=40, alternative=alternative)
    rep, obs = out.replicated.numpy(), out.observed.numpy()
    n, k = rep.shape
    upper = np.array([(sum(rep[b, j] > obs[j] for b in range(n))
                       + 0.5 * sum(rep[b, j] == obs[j] for b in range(n))) / n
                      for j in range(k)])
    want = {"greater": upper, "less": 1 - upper,
            "two-sided": np.minimum(1.0, 2 * np.minimum(upper, 1 - upper))}[alternative]
    np.testing.assert_allclose(out.p_values.numpy(), want, rtol=0, atol=1e-12)
    assert 0 < want.min() < 0.5 < want.max()   # the components do not all tie
    m, v = rep.mean(0), rep.var(0, ddof=1)
    assert v[-1] == 0 and (v > 0).any()    # both kinds of component are exercised

    def discrepancy(x):
        return sum(0.0 if x[j] == m[j] else np.inf if v[j] == 0 else (x[j] - m[j]) ** 2 / v[j]
                   for j in range(k))

    x_obs, x_rep = discrepancy(obs), [discrepancy(rep[b]) for b in range(n)]
    omnibus = (sum(x > x_obs for x in x_rep) + 0.5 * sum(x == x_obs for x in x_rep)) / n
    assert out.omnibus_p == pytest.approx(omnibus, abs=1e-12)


def test_ppc_callable_statistic_and_plot():
    mdp = envs.gridworld(size=4, block=2, seed=0)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=5, length=6)
    post = birl.RewardPosterior.from_draws(mdp, mdp.reward.expand(20, 16), demos=demos)

    def goal_visits(d):
        return torch.stack([(d.states[d.mask] == 0).sum(), d.lengths.float().mean()])

    out = dec.posterior_predictive_check(mdp, post, statistic=goal_visits, n_sims=20, plot=True)
    assert out.replicated.shape == (20, 2) and out.ax is not None
    assert torch.allclose(out.replicated[:, 1], torch.full((20,), 6.0))
    fig, ax = plt.subplots()
    again = dec.posterior_predictive_check(mdp, post, statistic="action_frequency", n_sims=20,
                                           ax=ax)
    assert again.ax is ax and len(ax.get_xticklabels()) == 5
    plt.close("all")


def test_ppc_replicates_end_where_each_demonstration_ends():
    """A replicate's final_states are the states after each demonstration's own last step, not
    after the padded length: a one-step demonstration from state 0 that moves right (no slip,
    the expert always does) ends in state 1 in every replicate."""
    mdp = tiny_chain_mdp(horizon=4, slip=0.0)
    R = torch.tensor([[-10.0, -10.0, 10.0]] * 5, dtype=torch.float64)
    states = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 2]])
    actions = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    demos = birl.Demonstrations.from_arrays(states, actions, lengths=[1, 4],
                                            final_states=[1, 2])
    out = dec.posterior_predictive_check(mdp, R, demos, n_sims=30,
                                         statistic=lambda d: d.final_states.double())
    assert torch.equal(out.observed, torch.tensor([1.0, 2.0]))
    assert (out.replicated[:, 0] == 1).all()
    assert out.p_values[0] == 1.0


def test_ppc_flags_demos_from_another_reward():
    mdp = envs.gridworld(size=5, slip=0.1, block=1, discount=0.9, seed=0)
    truth, wrong = torch.zeros(25), torch.zeros(25)
    truth[0], wrong[24] = 3.0, 3.0                           # opposite corners
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, truth), n=10, length=15, seed=0)
    R = wrong + 0.2 * torch.randn(100, 25, generator=torch.Generator().manual_seed(0))
    out = dec.posterior_predictive_check(mdp, R, demos, n_sims=200)
    assert out.omnibus_p < 0.01 and out.p_values.min() < 0.01
    right = dec.posterior_predictive_check(mdp, truth.expand(100, 25), demos, n_sims=200)
    assert right.omnibus_p > 0.01


# ---------------------------------------------------------------------------- bad inputs
@functools.lru_cache(maxsize=1)
def _bad_cases():
    mdp, R = risky_safe(finite=False)
    plan = birl.value_iteration(mdp, R[0])
    demos = birl.rollouts(mdp, plan, n=2, length=3)
    return [
        (lambda: dec.robust_policy(mdp, R, alpha=0.0), ValueError, "alpha is 0.0"),
        (lambda: dec.robust_policy(mdp, R, alpha=1.0), ValueError, "alpha is 1.0"),
        (lambda: dec.robust_policy(mdp, R, alpha=float("nan")), ValueError, "alpha is nan"),
        (lambda: dec.robust_policy(mdp, R, alpha=True), ValueError, "alpha is True"),
        (lambda: dec.robust_policy(mdp, R, lam=-0.1), ValueError, "lam is -0.1"),
        (lambda: dec.robust_policy(mdp, R, lam=1.5), ValueError, "lam is 1.5"),
        (lambda: dec.robust_policy(mdp, R, method="simplex"), ValueError, "method is 'simplex'"),
        (lambda: dec.robust_policy(mdp, R[:, :2]), ValueError,
         re.escape("reward draws must have shape (draws, 3) or (draws, 3, 2), got (2, 2)")),
        (lambda: dec.robust_policy(mdp, torch.zeros(0, 3)), ValueError, "reward draws"),
        (lambda: dec.robust_policy(mdp, R, weights=[1.0]), ValueError, "weights is"),
        (lambda: dec.robust_policy(mdp, R, weights=[1.0, -1.0]), ValueError, "weights is"),
        (lambda: dec.robust_policy(mdp, R, baseline="teacher"), ValueError,
         "baseline is 'teacher'"),
        (lambda: dec.robust_policy(mdp, R, baseline="expert"), ValueError,
         "baseline='expert' needs a RewardPosterior with demos"),
        (lambda: dec.robust_policy(mdp, R, baseline=torch.full((3, 2), 0.3)), ValueError,
         "neither a policy"),
        (lambda: dec.robust_policy(mdp, R, baseline=torch.ones(4, 2)), ValueError,
         "baseline tensor"),
        (lambda: dec.robust_policy("mdp", R), TypeError, "mdp must be a TabularMDP"),
        (lambda: dec.bayes_optimal_policy(mdp, R[:, :, None, None]), ValueError, "reward draws"),
        (lambda: dec.value_at_risk_bound(mdp, R, plan, delta=1.0), ValueError, "delta is 1.0"),
        (lambda: dec.value_at_risk_bound(mdp, R, plan, alpha=-1), ValueError, "alpha is -1"),
        (lambda: dec.value_at_risk_bound(mdp, R, torch.ones(3, 3) / 3), ValueError,
         re.escape("policy must have shape (3, 2) (one policy), got (3, 3)")),
        (lambda: dec.value_at_risk_bound(mdp, R, torch.ones(3, 2)), ValueError,
         re.escape("policy[0] sums to 2, expected 1")),
        (lambda: dec.active_query(mdp, R, k=0), ValueError, re.escape("k is 0, expected an "
                                                                      "integer [1, 3]")),
        (lambda: dec.active_query(mdp, R, k=3, exclude=[1]), ValueError,
         re.escape("k is 3, expected an integer [1, 2]")),
        (lambda: dec.active_query(mdp, R, criterion="variance"), ValueError,
         "criterion is 'variance'"),
        (lambda: dec.active_query(mdp, R, exclude=[5]), ValueError, re.escape("exclude[0] is 5")),
        (lambda: dec.active_query(mdp, R, exclude=[True, False]), ValueError, "exclude as a mask"),
        (lambda: dec.posterior_predictive_check(mdp, R, demos, statistic="mean"), ValueError,
         "statistic is 'mean'"),
        (lambda: dec.posterior_predictive_check(mdp, R, demos, n_sims=0), ValueError,
         "n_sims is 0"),
        (lambda: dec.posterior_predictive_check(mdp, R, demos, alternative="left"), ValueError,
         "alternative is 'left'"),
        (lambda: dec.posterior_predictive_check(mdp, R), ValueError, "demos is None"),
        (lambda: dec.posterior_predictive_check(mdp, R, demos, statistic="feature_counts"),
         ValueError, "needs an MDP with features"),
        (lambda: dec.posterior_predictive_check(mdp, R, demos, statistic=lambda d: [math.nan]),
         ValueError, "statistic returned"),
        (lambda: dec.cvar([1.0, 2.0], 0.5, weights=[1.0]), ValueError, "weights must be 2"),
        (lambda: dec.cvar([1.0, math.nan], 0.5), ValueError,
         re.escape("values[1] is nan, expected a finite number")),
        (lambda: dec.cvar([-math.inf, 1.0], 0.5), ValueError, re.escape("values[0] is -inf")),
        (lambda: dec.posterior_predictive_check(mdp, R, demos, seed="a"), TypeError,
         "seed must be an integer, got 'a'"),
        (lambda: dec.posterior_predictive_check(mdp, R, demos, seed=-1), ValueError,
         re.escape("seed is -1, expected an integer [0, 18446744073709551615]")),
        (lambda: dec.posterior_predictive_check(mdp, R, demos, seed=2 ** 70), ValueError,
         re.escape(f"seed is {2 ** 70}, expected an integer [0, 18446744073709551615]")),
        (lambda: dec.posterior_predictive_check(mdp, R, demos, statistic=lambda d: "x"),
         TypeError, r"statistic returned str 'x' \(the callable <lambda>\), expected a tensor"),
        (lambda: dec.posterior_predictive_check(mdp, R, demos, statistic=lambda d: [1j]),
         TypeError, "statistic returned a tensor of dtype torch.complex"),
        (lambda: dec.robust_policy(mdp, birl.RewardPosterior.from_draws(mdp, R, demos=demos),
                                   baseline="expert"), ValueError,
         r"12\.5% of the expert's discounted occupancy is missing.*at least 7 steps"),
        (lambda: envs.lava_world(lava=[(0, 9)]), ValueError, re.escape("lava[0] is (0, 9)")),
        (lambda: envs.lava_world(goal=(4, 8)), ValueError, "is a lava cell"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_inputs(case):
    fn, error, match = _bad_cases()[case]
    with pytest.raises(error, match=match):
        fn()



def test_policy_rows_are_checked_within_their_dtype_tolerance():
    """One rule for policy rows (bayesirl._validation.check_distribution_rows): a float32
    policy's rows may round 1e-5 away from 1 (refused at 1e-6 before), log-probabilities and
    scaled probabilities are refused as everywhere else."""
    mdp, R = risky_safe(finite=False)
    pi = torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.9, 0.1]], dtype=torch.float32)
    rounded = pi.clone()
    rounded[0, 0] += 1e-5
    assert dec.value_at_risk_bound(mdp, R.repeat(10, 1), rounded).evd.shape == (20,)
    for bad, match in ((pi.log(), r"policy\[0, 0\] is -1.20397, expected a probability >= 0"),
                       (pi * 2, r"policy\[0\] sums to 2, expected 1")):
        with pytest.raises(ValueError, match=match):
            dec.value_at_risk_bound(mdp, R.repeat(10, 1), bad)


# ---------------------------------------------------------------------------- lava world
def test_lava_world_layout():
    mdp = envs.lava_world()
    assert (mdp.n_states, mdp.n_actions, mdp.n_features) == (81, 5, 8)
    assert mdp.discount == 0.9 and mdp.feature_names == envs.LAVA_FEATURES
    kinds = mdp.features.sum(1)
    assert ((kinds == 0) | (kinds == 1)).all()
    lava = mdp.features[:, 1] > 0
    assert lava.sum() == 6 and (mdp.initial[lava] == 0).all()
    assert mdp.reward[8] == 2.0 and (mdp.reward[lava] == -10).all()
    # the optimal policy from below the lava goes around it
    occ = birl.occupancy(mdp, birl.value_iteration(mdp, mdp.reward))
    assert float(occ[lava].sum()) < 1e-9


# ---------------------------------------------------------------------------- statistical (slow)
class GridFamily:
    """Rewards ``r_theta = goal + theta * trap`` on a 5x5 slippery grid (gamma 0.9), theta on a
    grid of 81 points in [-2.5, 2.5] with a discretised N(0, 1) prior: the exact posterior is
    the prior times the soft-optimal likelihood at each grid point."""

    def __init__(self):
        self.mdp = envs.gridworld(size=5, slip=0.1, block=1, discount=0.9, seed=0)
        goal, trap = torch.zeros(25), torch.zeros(25)
        goal[4] = 1.0
        trap[[7, 12, 17, 13]] = 1.0                      # the middle, between most starts and goal
        self.theta = torch.linspace(-2.5, 2.5, 81)
        self.rewards = goal + self.theta[:, None] * trap                      # (G, S)
        self.log_prior = -0.5 * self.theta ** 2
        self.log_policy = birl.soft_value_iteration(self.mdp, self.rewards).log_policy

    def demos(self, g, n, seed):
        truth = self.rewards[g]
        return birl.rollouts(self.mdp, birl.soft_value_iteration(self.mdp, truth), n=n,
                             length=10, seed=seed)

    def posterior_weights(self, demos):
        counts = demos.counts(25, 5)
        logw = self.log_prior + torch.einsum("gsa,sa->g", self.log_policy, counts)
        return torch.softmax(logw, 0)

    def draws(self, weights, n, seed):
        idx = torch.multinomial(weights, n, replacement=True,
                                generator=torch.Generator().manual_seed(seed))
        return idx, self.rewards[idx]


@pytest.fixture(scope="module")
def family():
    return GridFamily()


@pytest.mark.slow
def test_value_at_risk_bound_coverage(family):
    """Truth drawn from the prior, exact posterior: the bound covers the true EVD of the MAP
    policy in about >= 1 - delta of the datasets, and the exact posterior VaR in >= 1 - delta."""
    alpha, delta = 0.95, 0.05
    reps, n_draws = 100, 150
    g = torch.Generator().manual_seed(0)
    truths = torch.multinomial(torch.softmax(family.log_prior, 0), reps, replacement=True,
                               generator=g)
    covered = exact_covered = 0
    bounds, grid_evd = [], {}
    for rep, t in enumerate(truths.tolist()):
        demos = family.demos(t, n=5, seed=rep)
        w = family.posterior_weights(demos)
        _, draws = family.draws(w, n_draws, seed=rep)
        m = int(w.argmax())
        plan = birl.value_iteration(family.mdp, family.rewards[m])               # MAP policy
        out = dec.value_at_risk_bound(family.mdp, draws, plan, alpha=alpha, delta=delta)
        if m not in grid_evd:       # the EVD of the MAP policy at every grid point
            grid_evd[m] = dec.value_at_risk_bound(family.mdp, family.rewards, plan).evd
        evd = grid_evd[m]
        true_evd = float(evd[t])
        order = evd.argsort()                                 # the exact posterior alpha-VaR
        exact_var = float(evd[order][(w[order].cumsum(0) >= alpha - 1e-12).nonzero()[0]])
        covered += true_evd <= out.bound + 1e-9
        exact_covered += exact_var <= out.bound + 1e-9
        bounds.append(out.bound)
    assert float(birl.metrics.expected_value_difference(
        family.mdp, family.rewards[t], family.rewards[m])) == pytest.approx(true_evd, abs=1e-8)
    slack = 2.6 * math.sqrt((1 - delta) * delta / reps)
    print(f"\nVaR bound: covers the true EVD in {covered}/{reps}, the exact posterior VaR in "
          f"{exact_covered}/{reps}; median bound {np.median(bounds):.3f}")
    assert covered / reps >= 1 - delta - slack
    assert exact_covered / reps >= 1 - delta - slack


@pytest.mark.slow
@pytest.mark.parametrize("statistic", ["state_visitation", "action_frequency"])
def test_ppc_p_values_uniform_when_model_is_right(family, statistic):
    """Truth drawn from the prior, exact posterior, demos from the truth: omnibus p-values over
    repeated datasets pass a KS test of uniformity (the 1-parameter posterior takes little of the
    statistic's variance, so the usual conservativeness of posterior predictive p-values is
    small here)."""
    reps = 100
    g = torch.Generator().manual_seed(1)
    truths = torch.multinomial(torch.softmax(family.log_prior, 0), reps, replacement=True,
                               generator=g)
    omnibus, component = [], []
    for rep, t in enumerate(truths.tolist()):
        demos = family.demos(t, n=5, seed=1000 + rep)
        _, draws = family.draws(family.posterior_weights(demos), 200, seed=rep)
        out = dec.posterior_predictive_check(family.mdp, draws, demos, statistic=statistic,
                                             n_sims=200, seed=rep)
        omnibus.append(out.omnibus_p)
        component.append(float(out.p_values[0]))
    ks = kstest(omnibus, "uniform").pvalue
    print(f"\nPPC {statistic}: omnibus p KS p-value {ks:.3g}; omnibus p deciles "
          f"{np.quantile(omnibus, np.linspace(0.1, 0.9, 9)).round(2).tolist()}; component-0 "
          f"p deciles {np.quantile(component, np.linspace(0.1, 0.9, 9)).round(2).tolist()}")
    assert ks > 1e-3


@pytest.mark.slow
def test_lava_world_robust_policy_and_shrinking_bound():
    """Demonstrations from the top rows never come near the lava, so its weight stays
    uncertain: the posterior-mean policy walks through lava from below, the CVaR policy
    (lam = 0, alpha = 0.95) goes around; the VaR bound of the mean policy shrinks with demos."""
    mdp = envs.lava_world()
    lava = mdp.features[:, 1] > 0
    top = (torch.arange(81) // 9 <= 2).to(mdp.dtype)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=9, length=20,
                          seed=1, initial=top / top.sum())
    assert not lava[demos.states].any()
    model = birl.LinearReward(mdp.features, prior=dist.Normal(0.0, 2.0))
    bounds = {}
    for n in (1, 5, 9):
        post = birl.infer(mdp, demos[:n], model, method="svi", steps=300, lr=0.03,
                          num_samples=300, guide="mvn", progress=False, seed=0)
        mean_policy = dec.bayes_optimal_policy(mdp, post)
        bound = dec.value_at_risk_bound(mdp, post, mean_policy, alpha=0.95, delta=0.05)
        bounds[n] = bound
        if n == 5:
            robust = dec.robust_policy(mdp, post, alpha=0.95, lam=0.0)
            into_mean = float(birl.occupancy(mdp, mean_policy)[lava].sum())
            into_robust = float(birl.occupancy(mdp, robust.policy)[lava].sum())
            value = {k: float(birl.policy_value(mdp, pi, mdp.reward)) for k, pi in
                     (("mean", mean_policy), ("robust", robust.policy))}
            theta = post.samples["theta"]
            print(f"\nlava weight posterior {float(theta[:, 1].mean()):.2f} +- "
                  f"{float(theta[:, 1].std()):.2f}; lava visits: mean policy {into_mean:.3f}, "
                  f"robust {into_robust:.2e}; true value: mean {value['mean']:.3f}, robust "
                  f"{value['robust']:.3f}")
            assert into_mean > 0.05 and into_robust < 1e-6
            assert value["robust"] > value["mean"]
    print("VaR bounds (alpha 0.95, delta 0.05) of the mean policy: " + ", ".join(
        f"{n} demos {b.bound:.3f} (empirical VaR {b.var:.3f})" for n, b in bounds.items()))
    assert bounds[9].bound < bounds[5].bound < bounds[1].bound
