"""Tests of bayesirl.planning.bellman: soft/hard value iteration, occupancy, policy value.

Brute force is the reference (STYLE.md point 4): every dynamic program is checked on tiny MDPs
(3 states, 2 actions, horizon <= 4) against exhaustive enumeration of action sequences or
trajectories, or against a naive dense implementation written here with explicit loops over
s, a, s'. Monte Carlo checks scale their tolerance with the standard error. Hypothesis covers
random small MDPs; one stress test runs at scale (S = 1e4, T = 1000, rewards x100).
"""

import itertools
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bayesirl as birl
from bayesirl import envs
from bayesirl.core.demos import rollouts
from bayesirl.core.mdp import TabularMDP
from bayesirl.planning.bellman import ConvergenceWarning, broadcast_reward

BATCH_SHAPES = [(), (5,), (2, 4)]


# ---------------------------------------------------------------------------- tiny MDPs
def random_dense(rng, S, A, zero_frac=0.3, deterministic=False):
    """A random ``(S, A, S)`` numpy transition tensor; about ``zero_frac`` of entries are 0."""
    if deterministic:
        return np.eye(S)[rng.integers(0, S, size=(S, A))]
    P = rng.random((S, A, S)) * (rng.random((S, A, S)) >= zero_frac)
    s, a = np.nonzero(P.sum(-1) == 0)
    P[s, a, rng.integers(0, S, size=len(s))] = 1.0
    return P / P.sum(-1, keepdims=True)


def tiny(seed=0, S=3, A=2, horizon=None, discount=None, deterministic=False, zero_frac=0.3):
    """``(mdp, P, r)``: a random MDP with a non-uniform initial distribution, its dense numpy
    ``P (S, A, S)`` and a random ``(S, A)`` reward tensor (no ties, almost surely)."""
    rng = np.random.default_rng(seed)
    P = random_dense(rng, S, A, zero_frac, deterministic)
    mdp = TabularMDP.from_dense(torch.as_tensor(P), initial=torch.as_tensor(rng.dirichlet(
        np.ones(S))), horizon=horizon, discount=discount,
        features=torch.as_tensor(rng.standard_normal((S, A, 2))))
    return mdp, P, torch.as_tensor(rng.standard_normal((S, A)))


def re_shape(shape):
    return re.escape(str(tuple(shape)))


def np_(t):
    return t.detach().cpu().double().numpy()


def logsumexp(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


# ---------------------------------------------------------------------------- references
def naive_soft_dp(P, r, T, terminal=None, tau=1.0):
    """Finite-horizon soft backward induction, explicit loops over s, a, s'.

    Returns numpy ``Q (T, S, A)``, ``V (T, S)``, ``log_pi (T, S, A)``; ``V_{T+1} = terminal``.
    """
    S, A = r.shape
    Q, V = np.zeros((T, S, A)), np.zeros((T, S))
    v_next = np.zeros(S) if terminal is None else np.asarray(terminal, dtype=float)
    for t in reversed(range(T)):
        for s in range(S):
            for a in range(A):
                Q[t, s, a] = r[s, a] + sum(P[s, a, s2] * v_next[s2] for s2 in range(S))
            V[t, s] = tau * logsumexp([Q[t, s, a] / tau for a in range(A)])
        v_next = V[t]
    return Q, V, (Q - V[..., None]) / tau


def naive_soft_discounted(P, r, gamma, tau=1.0, iters=3000):
    """Discounted soft value iteration by explicit loops, iterated far past convergence."""
    S, A = r.shape
    v = np.zeros(S)
    for _ in range(iters):
        Q = np.array([[r[s, a] + gamma * sum(P[s, a, s2] * v[s2] for s2 in range(S))
                       for a in range(A)] for s in range(S)])
        v = np.array([tau * logsumexp([Q[s, a] / tau for a in range(A)]) for s in range(S)])
    return Q, v, (Q - v[:, None]) / tau


def brute_soft_deterministic(P, r, T, terminal):
    """Deterministic dynamics: ``V_t(s) = log sum_{a_t..a_T} exp(total reward + terminal)`` and
    ``log pi_t(a|s)`` (the share of sequences starting with a), by exhaustive enumeration."""
    S, A = r.shape
    nxt = P.argmax(-1)
    V, logpi = np.zeros((T, S)), np.zeros((T, S, A))
    for t in range(T):
        for s in range(S):
            totals = {a: [] for a in range(A)}
            for seq in itertools.product(range(A), repeat=T - t):
                x, total = s, 0.0
                for a in seq:
                    total, x = total + r[x, a], nxt[x, a]
                totals[seq[0]].append(total + terminal[x])
            V[t, s] = logsumexp(sum(totals.values(), []))
            for a in range(A):
                logpi[t, s, a] = logsumexp(totals[a]) - V[t, s]
    return V, logpi


def trajectories(P, pi, mu, T):
    """Every trajectory ``(prob, states, actions)`` of a time-indexed policy ``pi (T, S, A)``."""
    S, A = pi.shape[-2:]
    for states in itertools.product(range(S), repeat=T):
        for actions in itertools.product(range(A), repeat=T):
            p = mu[states[0]]
            for t in range(T):
                p *= pi[t, states[t], actions[t]]
                if t + 1 < T:
                    p *= P[states[t], actions[t], states[t + 1]]
            if p > 0:
                yield p, states, actions


def exact_occupancy(P, pi, mu, T):
    """``(per_time (T, S, A), total mean (S, A), total variance (S, A))`` of visit counts,
    by enumerating every trajectory."""
    S, A = pi.shape[-2:]
    per_time, m1, m2 = np.zeros((T, S, A)), np.zeros((S, A)), np.zeros((S, A))
    for p, states, actions in trajectories(P, pi, mu, T):
        count = np.zeros((S, A))
        for t, (s, a) in enumerate(zip(states, actions, strict=True)):
            per_time[t, s, a] += p
            count[s, a] += 1
        m1 += p * count
        m2 += p * count**2
    return per_time, m1, m2 - m1**2


def evaluate_finite(P, r, pi, T, terminal):
    """``V^pi_t (T, S)`` of a time-indexed policy by dense backward evaluation."""
    v, out = terminal, np.zeros((T, r.shape[0]))
    for t in reversed(range(T)):
        v = (pi[t] * (r + P @ v)).sum(-1)
        out[t] = v
    return out


def evaluate_discounted(P, r, pi, gamma):
    """``V^pi = (I - gamma P_pi)^{-1} r_pi``, a dense linear solve."""
    S = r.shape[0]
    P_pi = np.einsum("sa,sat->st", pi, P)
    return np.linalg.solve(np.eye(S) - gamma * P_pi, (pi * r).sum(-1))


def deterministic_policies(S, A, T=None):
    """All deterministic policies as one-hot arrays ``(T, S, A)`` or ``(S, A)``."""
    n = S * (1 if T is None else T)
    for choice in itertools.product(range(A), repeat=n):
        pi = np.eye(A)[list(choice)]
        yield pi.reshape(S, A) if T is None else pi.reshape(T, S, A)


# ---------------------------------------------------------------------------- finite-horizon soft
@pytest.mark.parametrize("T", [1, 2, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_soft_deterministic_dynamics_equals_enumeration(T, seed):
    mdp, P, r = tiny(seed, horizon=T, deterministic=True)
    terminal = torch.as_tensor(np.random.default_rng(seed + 10).standard_normal(3))
    for term in (None, terminal):
        plan = birl.soft_value_iteration(mdp, r, terminal_reward=term)
        V, logpi = brute_soft_deterministic(P, np_(r), T, np.zeros(3) if term is None
                                            else np_(term))
        np.testing.assert_allclose(np_(plan.v), V, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np_(plan.log_policy), logpi, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("state_reward", [False, True])
def test_soft_stochastic_equals_naive_loops(seed, state_reward):
    T = 4
    mdp, P, r = tiny(seed, horizon=T)
    if state_reward:
        r = r[:, 0]
    plan = birl.soft_value_iteration(mdp, r)
    Q, V, logpi = naive_soft_dp(P, np_(broadcast_reward(mdp, r)), T)
    np.testing.assert_allclose(np_(plan.q), Q, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np_(plan.v), V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np_(plan.log_policy), logpi, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np_(plan.policy), np.exp(logpi), rtol=1e-12, atol=1e-12)
    assert plan.num_iters == T and plan.residual == 0


def test_terminal_reward_is_v_after_last_decision():
    T = 3
    mdp, P, r = tiny(2, horizon=T)
    terminal = torch.tensor([0.5, -2.0, 1.5])
    plan = birl.soft_value_iteration(mdp, r, terminal_reward=terminal)
    Q, V, logpi = naive_soft_dp(P, np_(r), T, terminal=np_(terminal))
    np.testing.assert_allclose(np_(plan.v), V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np_(plan.log_policy), logpi, rtol=1e-12, atol=1e-12)
    # the last decision sees V_{T+1} = terminal through the dynamics, and nothing else
    np.testing.assert_allclose(np_(plan.q[-1]), np_(r) + P @ np_(terminal), rtol=1e-12)
    # a constant terminal reward shifts every V_t by that constant and leaves pi unchanged
    base = birl.soft_value_iteration(mdp, r)
    shifted = birl.soft_value_iteration(mdp, r, terminal_reward=torch.full((3,), 7.0))
    torch.testing.assert_close(shifted.v, base.v + 7.0)
    torch.testing.assert_close(shifted.log_policy, base.log_policy)


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_temperature_equals_naive_loops_and_rescaling(tau):
    T = 4
    mdp, P, r = tiny(3, horizon=T)
    terminal = torch.tensor([1.0, -0.5, 0.25])
    plan = birl.soft_value_iteration(mdp, r, temperature=tau, terminal_reward=terminal)
    Q, V, logpi = naive_soft_dp(P, np_(r), T, terminal=np_(terminal), tau=tau)
    np.testing.assert_allclose(np_(plan.q), Q, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np_(plan.v), V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np_(plan.log_policy), logpi, rtol=1e-12, atol=1e-12)
    # planning at tau == planning with r / tau (and terminal / tau), then scaling q, v by tau
    unit = birl.soft_value_iteration(mdp, r / tau, terminal_reward=terminal / tau)
    torch.testing.assert_close(plan.q, tau * unit.q)
    torch.testing.assert_close(plan.v, tau * unit.v)
    torch.testing.assert_close(plan.log_policy, unit.log_policy)


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_temperature_discounted(tau):
    mdp, P, r = tiny(4, discount=0.8)
    plan = birl.soft_value_iteration(mdp, r, temperature=tau)
    Q, V, logpi = naive_soft_discounted(P, np_(r), 0.8, tau=tau, iters=400)
    np.testing.assert_allclose(np_(plan.v), V, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np_(plan.log_policy), logpi, rtol=1e-9, atol=1e-9)
    unit = birl.soft_value_iteration(mdp, r / tau)
    torch.testing.assert_close(plan.v, tau * unit.v, rtol=1e-9, atol=1e-9)


def test_small_temperature_approaches_hard_max():
    """0 <= V_soft_t - V_hard_t <= tau * log(A) * (steps to go), and pi -> greedy."""
    T, tau = 4, 0.01
    mdp, P, r = tiny(5, horizon=T)
    soft = birl.soft_value_iteration(mdp, r, temperature=tau)
    hard = birl.value_iteration(mdp, r)
    gap = np_(soft.v - hard.v)
    steps = np.arange(T, 0, -1)[:, None]
    assert (gap >= -1e-12).all() and (gap <= tau * math.log(2) * steps + 1e-12).all()
    np.testing.assert_allclose(np_(soft.policy), np_(hard.policy), atol=1e-6)


# ---------------------------------------------------------------------------- occupancy
@pytest.mark.parametrize("T", [1, 3, 4])
def test_occupancy_equals_trajectory_enumeration(T):
    mdp, P, r = tiny(6, horizon=T, zero_frac=0.2)
    plan = birl.soft_value_iteration(mdp, r)
    pi, mu = np_(plan.policy), np_(mdp.initial)
    per_time, total, _ = exact_occupancy(P, pi, mu, T)
    np.testing.assert_allclose(np_(birl.occupancy(mdp, plan, per_time=True)), per_time,
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np_(birl.occupancy(mdp, plan)), total, rtol=1e-12, atol=1e-14)
    # a policy tensor works like a Plan; so does a different start distribution
    np.testing.assert_allclose(np_(birl.occupancy(mdp, plan.policy)), total, rtol=1e-12)
    start = np.array([0.0, 0.0, 1.0])
    _, total2, _ = exact_occupancy(P, pi, start, T)
    np.testing.assert_allclose(np_(birl.occupancy(mdp, plan, initial=torch.as_tensor(start))),
                               total2, rtol=1e-12, atol=1e-14)
    # policy value and feature expectations are occupancy-weighted sums
    value = sum(p * sum(np_(r)[s, a] for s, a in zip(ss, aa, strict=True))
                for p, ss, aa in trajectories(P, pi, mu, T))
    assert birl.policy_value(mdp, plan, r).item() == pytest.approx(value, rel=1e-12)
    phi = np_(mdp.features)
    np.testing.assert_allclose(np_(birl.feature_expectations(mdp, plan)),
                               np.einsum("sa,saf->f", total, phi), rtol=1e-12)


def test_occupancy_agrees_with_monte_carlo_rollouts():
    """Rollout frequencies vs exact occupancy, |diff| < 4 standard errors per cell.

    Per-step visits are Bernoulli (se = sqrt(p (1 - p) / n)); total visit counts use their exact
    variance from trajectory enumeration. Under the normal approximation each of the
    T*S*A + S*A = 30 cells fails with probability 6.3e-5, so a correct implementation fails
    with probability about 2e-3 over seeds; the seed is fixed, so the test is deterministic.
    """
    T, n = 4, 20_000
    mdp, P, r = tiny(7, horizon=T, zero_frac=0.2)
    plan = birl.soft_value_iteration(mdp, r)
    per_time, total, var = exact_occupancy(P, np_(plan.policy), np_(mdp.initial), T)
    demos = rollouts(mdp, plan, n=n, seed=0)
    flat = (demos.states * 2 + demos.actions).numpy()
    freq = np.stack([np.bincount(flat[:, t], minlength=6) for t in range(T)]).reshape(T, 3, 2)
    se = np.sqrt(per_time * (1 - per_time) / n)
    assert (np.abs(freq / n - per_time) <= 4 * se + 1e-12).all()
    counts = np_(demos.counts(3, 2)) / n
    assert (np.abs(counts - total) <= 4 * np.sqrt(var / n) + 1e-12).all()
    np.testing.assert_allclose(np_(birl.occupancy(mdp, plan, per_time=True)), per_time,
                               rtol=1e-12, atol=1e-14)


def test_likelihood_gradient_is_counts_minus_occupancy():
    """Deterministic dynamics: grad_r sum_t log pi_t(a_t|s_t) = counts(tau) - occupancy from s_1
    (the maximum causal entropy identity; it exercises the backward pass through log_policy)."""
    T = 4
    mdp, P, r = tiny(8, horizon=T, deterministic=True)
    nxt = P.argmax(-1)
    states, actions, s = [], [1, 0, 0, 1], 2
    for a in actions:
        states.append(s)
        s = nxt[s, a]
    r = r.clone().requires_grad_()
    plan = birl.soft_value_iteration(mdp, r)
    plan.log_policy[torch.arange(T), states, actions].sum().backward()
    counts = np.zeros((3, 2))
    for s, a in zip(states, actions, strict=True):
        counts[s, a] += 1
    occ = birl.occupancy(mdp, plan, initial=torch.tensor([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(np_(r.grad), counts - np_(occ), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------- hard planning
@pytest.mark.parametrize("seed", range(2))
def test_value_iteration_finite_equals_best_deterministic_policy(seed):
    T = 4
    mdp, P, r = tiny(seed, horizon=T)
    terminal = np.random.default_rng(seed).standard_normal(3)
    plan = birl.value_iteration(mdp, r, terminal_reward=torch.as_tensor(terminal))
    rn = np_(r)
    best = np.full((T, 3), -np.inf)
    for pi in deterministic_policies(3, 2, T):  # 2 ** (3 * 4) = 4096 Markov policies
        best = np.maximum(best, evaluate_finite(P, rn, pi, T, terminal))
    np.testing.assert_allclose(np_(plan.v), best, rtol=1e-12, atol=1e-12)
    v_next = np.concatenate([best[1:], terminal[None]])
    np.testing.assert_allclose(np_(plan.q), rn + np.einsum("sat,kt->ksa", P, v_next),
                               rtol=1e-12)
    # the greedy policy attains the optimum; it is deterministic (random reward: no ties)
    pi = np_(plan.policy)
    np.testing.assert_allclose(evaluate_finite(P, rn, pi, T, terminal), best, rtol=1e-12)
    assert set(np.unique(pi)) <= {0.0, 1.0}


@pytest.mark.parametrize("seed", range(2))
def test_value_iteration_discounted_equals_best_deterministic_policy(seed):
    gamma = 0.9
    mdp, P, r = tiny(seed, discount=gamma)
    plan = birl.value_iteration(mdp, r)
    rn = np_(r)
    values = [evaluate_discounted(P, rn, pi, gamma) for pi in deterministic_policies(3, 2)]
    best = np.max(values, axis=0)
    np.testing.assert_allclose(np_(plan.v), best, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np_(plan.q), rn + gamma * P @ best, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(evaluate_discounted(P, rn, np_(plan.policy), gamma), best,
                               rtol=1e-9, atol=1e-9)
    # and with a 3-action, 4-state MDP (81 policies) whose best is found by policy iteration
    mdp, P, r = tiny(seed, S=4, A=3, discount=gamma)
    rn, pi = np_(r), np.eye(3)[np.zeros(4, dtype=int)]
    for _ in range(50):
        v = evaluate_discounted(P, rn, pi, gamma)
        pi = np.eye(3)[(rn + gamma * P @ v).argmax(-1)]
    np.testing.assert_allclose(np_(birl.value_iteration(mdp, r).v), v, rtol=1e-9, atol=1e-9)


def test_hard_ties_split_uniformly():
    mdp, P, _ = tiny(0, horizon=2)
    plan = birl.value_iteration(mdp, torch.zeros(3, 2))
    torch.testing.assert_close(plan.policy, torch.full((2, 3, 2), 0.5))


# ---------------------------------------------------------------------------- discounted
@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 0.99])
def test_discounted_soft_bellman_equation(gamma):
    mdp, P, r = tiny(9, discount=gamma)
    plan = birl.soft_value_iteration(mdp, r)
    rn, v = np_(r), np_(plan.v)
    q = rn + gamma * P @ v
    np.testing.assert_allclose(v, np.log(np.exp(q).sum(-1)), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np_(plan.q), q, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np_(plan.log_policy), q - v[:, None], rtol=1e-9, atol=1e-9)
    assert plan.num_iters > 0 and plan.residual <= 1e-9
    if gamma < 0.99:  # the naive loops need too many sweeps at 0.99
        _, V, _ = naive_soft_discounted(P, rn, gamma, iters=400)
        np.testing.assert_allclose(v, V, rtol=1e-9, atol=1e-9)


def test_discounted_max_iters_warns():
    mdp, _, r = tiny(9, discount=0.9)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        plan = birl.soft_value_iteration(mdp, r, max_iters=3)
    assert plan.num_iters == 3 and plan.residual > 1e-3
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        birl.value_iteration(mdp, r, max_iters=2)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        birl.occupancy(mdp, birl.soft_value_iteration(mdp, r), max_iters=2)


@pytest.mark.parametrize("gamma", [0.0, 0.7, 0.95])
def test_discounted_occupancy_and_policy_value_equal_linear_solve(gamma):
    mdp, P, r = tiny(10, discount=gamma, zero_frac=0.5)
    plan = birl.soft_value_iteration(mdp, r)
    pi, mu, rn = np_(plan.policy), np_(mdp.initial), np_(r)
    P_pi = np.einsum("sa,sat->st", pi, P)
    d = np.linalg.solve(np.eye(3) - gamma * P_pi.T, mu)  # discounted state visitation
    occ = birl.occupancy(mdp, plan)
    np.testing.assert_allclose(np_(occ), d[:, None] * pi, rtol=1e-9, atol=1e-12)
    assert occ.sum().item() == pytest.approx(1 / (1 - gamma), rel=1e-9)
    value = mu @ evaluate_discounted(P, rn, pi, gamma)
    assert birl.policy_value(mdp, plan, r).item() == pytest.approx(value, rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="per_time applies to finite-horizon"):
        birl.occupancy(mdp, plan, per_time=True)


# ---------------------------------------------------------------------------- gradients
def _plan_fn(mdp, hard, **kwargs):
    def f(reward, *terminal):
        kw = dict(kwargs, terminal_reward=terminal[0]) if terminal else kwargs
        if hard:
            plan = birl.value_iteration(mdp, reward, **kw)
            return plan.q, plan.v, plan.policy  # log_policy is -inf off the argmax
        plan = birl.soft_value_iteration(mdp, reward, **kw)
        return plan.q, plan.v, plan.log_policy
    return f


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("finite", [True, False], ids=["finite", "discounted"])
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 2)], ids=["state", "state_action"])
def test_gradcheck_reward(hard, finite, shape):
    kw = dict(horizon=3) if finite else dict(discount=0.7)
    mdp, _, _ = tiny(11, **kw)
    reward = torch.randn(shape, generator=torch.Generator().manual_seed(0)).requires_grad_()
    # discounted: a tight fixed point for finite differences, and the implicit (adjoint) backward
    # checked on random projections (fast_mode) since each backward solves a fixed point
    extra = {} if finite else dict(tol=1e-13)
    assert torch.autograd.gradcheck(_plan_fn(mdp, hard, **extra), (reward,),
                                    fast_mode=not finite)


@pytest.mark.parametrize("hard, tau", [(False, 1.0), (False, 2.0), (True, None)],
                         ids=["soft", "soft-tau2", "hard"])
def test_gradcheck_terminal_reward(hard, tau):
    mdp, _, _ = tiny(12, horizon=3)
    g = torch.Generator().manual_seed(1)
    reward = torch.randn(2, 3, 2, generator=g).requires_grad_()
    terminal = torch.randn(2, 3, generator=g).requires_grad_()
    kw = {} if hard else dict(temperature=tau)
    assert torch.autograd.gradcheck(_plan_fn(mdp, hard, **kw), (reward, terminal))


@pytest.mark.parametrize("finite", [True, False], ids=["finite", "discounted"])
def test_gradcheck_occupancy_and_policy_value(finite):
    mdp, _, _ = tiny(13, **(dict(horizon=3) if finite else dict(discount=0.6)))
    reward = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(2)).requires_grad_()

    def f(r):
        plan = birl.soft_value_iteration(mdp, r, tol=1e-13)
        occ = birl.occupancy(mdp, plan, tol=1e-13)
        return occ, birl.policy_value(mdp, plan, r, tol=1e-13)
    assert torch.autograd.gradcheck(f, (reward,))


@pytest.mark.parametrize("finite", [True, False], ids=["finite", "discounted"])
def test_second_derivatives_soft_raise(finite):
    """Hessians of the soft value (Laplace approximations, Newton-type MAP) need double backward,
    which the fused DP and the implicit fixed point do not implement: it must raise, never be
    silently wrong or zero."""
    mdp, _, _ = tiny(11, **(dict(horizon=3) if finite else dict(discount=0.6)))
    reward = torch.randn(3, 2, generator=torch.Generator().manual_seed(3))

    def value(r):
        return birl.soft_value_iteration(mdp, r, tol=1e-13).v.sum()

    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.functional.hessian(value, reward)
    r = reward.clone().requires_grad_()
    (g,) = torch.autograd.grad(value(r), r)  # first derivatives still work
    assert torch.isfinite(g).all()


# ---------------------------------------------------------------------------- properties
@st.composite
def small_problems(draw):
    """``(mdp, seed)``: random dense P with some zeros, S <= 4, A <= 3, horizon 1..5 or
    discount 0..0.95."""
    S, A = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    zero_frac = draw(st.sampled_from([0.0, 0.3, 0.7]))
    if draw(st.booleans()):
        time = dict(horizon=draw(st.integers(1, 5)))
    else:
        time = dict(discount=draw(st.floats(0.0, 0.95)))
    mdp, _, _ = tiny(seed, S=S, A=A, zero_frac=zero_frac, **time)
    return mdp, seed


def random_reward(seed, shape, scale=3.0):
    return torch.as_tensor(np.random.default_rng(seed).standard_normal(shape) * scale)


def total_mass(mdp):
    return mdp.horizon if mdp.finite_horizon else 1 / (1 - mdp.discount)


PROPERTY = settings(max_examples=25, deadline=None)


@PROPERTY
@given(small_problems(), st.booleans())
def test_property_policies_normalise_and_occupancy_mass(problem, hard):
    mdp, seed = problem
    r = random_reward(seed, (mdp.n_states, mdp.n_actions))
    plan = (birl.value_iteration if hard else birl.soft_value_iteration)(mdp, r)
    torch.testing.assert_close(plan.policy.sum(-1), torch.ones_like(plan.v))
    occ = birl.occupancy(mdp, plan)
    assert (occ >= 0).all()
    assert occ.sum().item() == pytest.approx(total_mass(mdp), rel=1e-9)
    if mdp.finite_horizon:
        per_t = birl.occupancy(mdp, plan, per_time=True).sum((-2, -1))
        torch.testing.assert_close(per_t, torch.ones(mdp.horizon))


@PROPERTY
@given(small_problems(), st.floats(-50, 50))
def test_property_constant_reward_shift(problem, c):
    """r + c leaves pi unchanged; V_t shifts by c * (T - t) (steps to go), or c / (1 - gamma)."""
    mdp, seed = problem
    r = random_reward(seed, (mdp.n_states, mdp.n_actions))
    base = birl.soft_value_iteration(mdp, r)
    shifted = birl.soft_value_iteration(mdp, r + c)
    if mdp.finite_horizon:
        T = mdp.horizon
        shift = c * torch.arange(T, 0, -1, dtype=r.dtype)[:, None]
        tol = dict(rtol=1e-10, atol=1e-10 * (1 + abs(c) * T))
    else:
        shift = c / (1 - mdp.discount)
        tol = dict(rtol=1e-8, atol=1e-8 * (1 + abs(shift)))
    torch.testing.assert_close(shifted.v, base.v + shift, **tol)
    torch.testing.assert_close(shifted.log_policy, base.log_policy, **tol)


@pytest.mark.parametrize("batch", BATCH_SHAPES, ids=str)
@PROPERTY
@given(problem=small_problems(), hard=st.booleans())
def test_property_batched_equals_per_item(batch, problem, hard):
    mdp, seed = problem
    S, A = mdp.n_states, mdp.n_actions
    r = random_reward(seed, batch + (S, A))
    plan_fn = birl.value_iteration if hard else birl.soft_value_iteration
    plan = plan_fn(mdp, r)
    occ = birl.occupancy(mdp, plan)
    value = birl.policy_value(mdp, plan, r)
    # discounted fixed points stop on the batch's worst residual: agree to the solver tolerance
    tol = dict(rtol=1e-8, atol=1e-8 * (1 + r.abs().max().item() * total_mass(mdp)))
    for idx in np.ndindex(*batch):
        one = plan_fn(mdp, r[idx])
        for name in ("q", "v", "policy"):
            torch.testing.assert_close(getattr(plan, name)[idx], getattr(one, name), **tol)
        occ_one = birl.occupancy(mdp, one)
        torch.testing.assert_close(occ[idx], occ_one, **tol)
        torch.testing.assert_close(value[idx], (occ_one * r[idx]).sum(), **tol)


@pytest.mark.parametrize("batch", BATCH_SHAPES, ids=str)
@PROPERTY
@given(problem=small_problems())
def test_property_state_reward_equals_expanded(batch, problem):
    mdp, seed = problem
    S, A = mdp.n_states, mdp.n_actions
    if A == S and batch:
        return  # a trailing (S, S) pair reads as (S, A): documented ambiguity
    r = random_reward(seed, batch + (S,))
    full = r.unsqueeze(-1).expand(*r.shape, A)
    for plan_fn in (birl.soft_value_iteration, birl.value_iteration):
        a, b = plan_fn(mdp, r), plan_fn(mdp, full)
        for name in ("q", "v", "log_policy"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name))
        torch.testing.assert_close(birl.policy_value(mdp, a, r), birl.policy_value(mdp, b, full))


# ---------------------------------------------------------------------------- shape contract
@pytest.mark.parametrize("batch", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("finite", [True, False], ids=["finite", "discounted"])
@pytest.mark.parametrize("state_reward", [False, True], ids=["SA", "S"])
def test_shape_contract(batch, finite, state_reward):
    T, S, A = 6, 4, 3
    mdp, _, _ = tiny(13, S=S, A=A, **(dict(horizon=T) if finite else dict(discount=0.9)))
    r = random_reward(0, batch + ((S,) if state_reward else (S, A)))
    lead = batch + ((T,) if finite else ())
    for plan in (birl.soft_value_iteration(mdp, r), birl.value_iteration(mdp, r),
                 birl.soft_value_iteration(mdp, r, temperature=0.5)):
        assert plan.q.shape == plan.log_policy.shape == plan.policy.shape == lead + (S, A)
        assert plan.v.shape == lead + (S,)
        assert plan.q.dtype == plan.v.dtype == plan.log_policy.dtype == torch.float64
    plan = birl.soft_value_iteration(mdp, r)
    assert birl.occupancy(mdp, plan).shape == batch + (S, A)
    assert birl.occupancy(mdp, plan.policy).shape == batch + (S, A)
    if finite:
        assert birl.occupancy(mdp, plan, per_time=True).shape == batch + (T, S, A)
    assert birl.policy_value(mdp, plan, r).shape == batch
    assert birl.feature_expectations(mdp, plan).shape == batch + (2,)
    assert broadcast_reward(mdp, r).shape == batch + (S, A)
    if finite:
        terminal = random_reward(1, batch + (S,))
        out = birl.soft_value_iteration(mdp, r, terminal_reward=terminal)
        assert out.v.shape == lead + (S,) and out.log_policy.shape == lead + (S, A)


def test_terminal_reward_broadcasts_with_reward_batch():
    """Leading dims are batch and broadcast (planning.py's shape contract): a batch of terminal
    rewards ``(5, S)`` with one reward ``(S, A)`` gives five plans."""
    T, S, A = 3, 3, 2
    mdp, _, r = tiny(14, horizon=T)
    terminal = random_reward(2, (5, S))
    for plan_fn in (birl.soft_value_iteration, birl.value_iteration):
        plan = plan_fn(mdp, r, terminal_reward=terminal)
        assert plan.v.shape == (5, T, S) and plan.log_policy.shape == (5, T, S, A)
        for i in range(5):
            one = plan_fn(mdp, r, terminal_reward=terminal[i])
            torch.testing.assert_close(plan.v[i], one.v)


# ---------------------------------------------------------------------------- scale and precision
def _check_large(mdp, r):
    plan = birl.soft_value_iteration(mdp, r)
    for t in (plan.q, plan.v, plan.log_policy):
        assert torch.isfinite(t).all()
    # |v| ~ 100 T here, so q - v carries float64 rounding of order 1e-16 * 100 T
    torch.testing.assert_close(plan.policy.sum(-1), torch.ones_like(plan.v), rtol=0, atol=1e-9)
    occ = birl.occupancy(mdp, plan)
    assert torch.isfinite(occ).all()
    assert occ.sum().item() == pytest.approx(mdp.horizon, rel=1e-9)
    hard = birl.value_iteration(mdp, r)
    assert torch.isfinite(hard.v).all() and (hard.v <= plan.v + 1e-6).all()


@pytest.mark.slow
def test_stress_large_mdp_long_horizon():
    """S = 1e4, T = 1000, rewards uniform in [-100, 100] (about 15 s on 2 cores)."""
    mdp = envs.gridworld(size=100, slip=0.1, horizon=1000, block=1)
    _check_large(mdp, torch.rand(10_000, 5, generator=torch.Generator().manual_seed(0)) * 200
                 - 100)


def test_stress_moderate_mdp():
    """S = 2500, T = 200, rewards uniform in [-100, 100]: the always-on stress test."""
    mdp = envs.gridworld(size=50, slip=0.1, horizon=200, block=1)
    _check_large(mdp, torch.rand(2500, 5, generator=torch.Generator().manual_seed(0)) * 200 - 100)


@pytest.mark.parametrize("finite", [True, False], ids=["finite", "discounted"])
def test_reward_magnitude_1e3(finite):
    mdp, _, r = tiny(15, **(dict(horizon=4) if finite else dict(discount=0.9)))
    r = r * 1e3
    soft, hard = birl.soft_value_iteration(mdp, r), birl.value_iteration(mdp, r)
    for t in (soft.q, soft.v, soft.log_policy, hard.q, hard.v):
        assert torch.isfinite(t).all()
    torch.testing.assert_close(soft.policy.sum(-1), torch.ones_like(soft.v))
    # action gaps are ~100s: the soft policy is the greedy one up to exp(-gap)
    torch.testing.assert_close(soft.policy, hard.policy, rtol=0, atol=1e-8)


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled:UserWarning")
@pytest.mark.parametrize("finite", [True, False], ids=["finite", "discounted"])
def test_gradients_finite_under_detect_anomaly(finite):
    mdp, _, r = tiny(16, **(dict(horizon=4) if finite else dict(discount=0.9)))
    G = random_reward(3, (4, 3, 2) if finite else (3, 2))
    for scale in (1.0, 1e3):
        for plan_fn in (birl.soft_value_iteration, birl.value_iteration):
            reward = (r * scale).requires_grad_()
            terminal = torch.zeros(3, requires_grad=True) if finite else None
            with torch.autograd.detect_anomaly():
                plan = plan_fn(mdp, reward, terminal_reward=terminal)
                lp = plan.log_policy.clamp(min=-1e6) if plan_fn is birl.value_iteration \
                    else plan.log_policy
                loss = (lp * G).sum() + plan.v.sum() + plan.q.sum()
                loss.backward()
            assert torch.isfinite(reward.grad).all()
            if finite:
                assert torch.isfinite(terminal.grad).all()


@pytest.mark.parametrize("finite", [True, False], ids=["finite", "discounted"])
def test_float32_agrees_with_float64(finite):
    """Gridworld with its true reward: float32 and float64 agree to 1e-4 relative on v and
    q and 1e-4 absolute on pi (float32 eps is 1.2e-7; T = 30 backups or a fixed point with
    tol 1e-5 leave a few 1e-6)."""
    mdp64 = envs.gridworld(size=8, slip=0.1, **(dict(horizon=30) if finite
                                                 else dict(discount=0.9)))
    mdp32 = mdp64.to(dtype=torch.float32)
    r64 = mdp64.reward[:, None] + 0.1 * random_reward(4, (64, 5))
    for plan_fn in (birl.soft_value_iteration, birl.value_iteration):
        p64, p32 = plan_fn(mdp64, r64), plan_fn(mdp32, r64.float())
        assert p32.v.dtype == p32.q.dtype == p32.log_policy.dtype == torch.float32
        torch.testing.assert_close(p32.v.double(), p64.v, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(p32.q.double(), p64.q, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(p32.policy.double(), p64.policy, rtol=0, atol=1e-4)
        o32, o64 = birl.occupancy(mdp32, p32), birl.occupancy(mdp64, p64)
        assert o32.dtype == torch.float32
        torch.testing.assert_close(o32.double(), o64, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- invalid input
@pytest.fixture
def finite_mdp():
    return tiny(17, horizon=3)[0]


@pytest.mark.parametrize("shape", [(), (4,), (3, 4), (4, 2), (2, 4, 2)], ids=str)
def test_reward_wrong_shape(finite_mdp, shape):
    msg = rf"reward must have shape \(\.\.\., 3, 2\) or \(\.\.\., 3\), got {re_shape(shape)}"
    for call in (lambda r: birl.soft_value_iteration(finite_mdp, r),
                 lambda r: birl.soft_value_iteration(finite_mdp, r, temperature=2.0),
                 lambda r: birl.value_iteration(finite_mdp, r),
                 lambda r: birl.policy_value(finite_mdp, torch.full((3, 3, 2), 0.5), r),
                 lambda r: broadcast_reward(finite_mdp, r)):
        with pytest.raises(ValueError, match=msg):
            call(torch.zeros(shape))


@pytest.mark.parametrize("tau", [0, -1.0, math.nan, math.inf, -math.inf])
def test_bad_temperature(finite_mdp, tau):
    with pytest.raises(ValueError, match=r"temperature is .*, expected a number > 0$"):
        birl.soft_value_iteration(finite_mdp, torch.zeros(3), temperature=tau)


@pytest.mark.parametrize("tau", ["1", None, [1.0], True])
def test_temperature_not_a_number(finite_mdp, tau):
    with pytest.raises(ValueError, match=rf"temperature is {re.escape(repr(tau))}, expected a "
                                         r"number > 0$"):
        birl.soft_value_iteration(finite_mdp, torch.zeros(3), temperature=tau)


def test_temperature_as_a_one_element_tensor_or_numpy_scalar(finite_mdp):
    reward = torch.randn(3, 2, dtype=finite_mdp.dtype)
    want = birl.soft_value_iteration(finite_mdp, reward, temperature=2.0).log_policy
    for tau in (torch.tensor(2.0), np.float32(2.0)):
        got = birl.soft_value_iteration(finite_mdp, reward, temperature=tau).log_policy
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("shape", [(), (4,), (3, 2), (2, 4)], ids=str)
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_terminal_reward_wrong_shape(finite_mdp, shape, tau):
    with pytest.raises(ValueError, match=rf"terminal_reward must have shape \(\.\.\., 3\), got "
                                         rf"{re_shape(shape)}"):
        birl.soft_value_iteration(finite_mdp, torch.zeros(3), temperature=tau,
                                  terminal_reward=torch.zeros(shape))
    if tau == 1.0:
        with pytest.raises(ValueError, match="terminal_reward must have shape"):
            birl.value_iteration(finite_mdp, torch.zeros(3), terminal_reward=torch.zeros(shape))


def test_terminal_reward_batch_mismatch_names_it(finite_mdp):
    """Batch dims that cannot broadcast: a ValueError naming terminal_reward, not a torch
    RuntimeError from inside the dynamic program."""
    with pytest.raises(ValueError, match="terminal_reward"):
        birl.soft_value_iteration(finite_mdp, torch.zeros(5, 3, 2),
                                  terminal_reward=torch.zeros(4, 3))


def test_terminal_reward_with_discounted_mdp():
    mdp = tiny(17, discount=0.9)[0]
    for call in (birl.soft_value_iteration, birl.value_iteration):
        with pytest.raises(ValueError, match="terminal_reward applies to finite-horizon MDPs "
                                             r"only \(this one is discounted, discount=0.9\)"):
            call(mdp, torch.zeros(3), terminal_reward=torch.zeros(3))


@pytest.mark.parametrize("shape", [(3, 2), (2, 3, 2), (4, 3, 2), (3, 3, 3), (3, 4, 2)], ids=str)
def test_occupancy_policy_wrong_shape_finite(finite_mdp, shape):
    for call in (birl.occupancy, birl.feature_expectations,
                 lambda m, p: birl.policy_value(m, p, torch.zeros(3))):
        with pytest.raises(ValueError, match=rf"policy must have shape \(\.\.\., 3, 3, 2\), "
                                             rf"got {re_shape(shape)}"):
            call(finite_mdp, torch.full(shape, 0.5))


@pytest.mark.parametrize("shape", [(3,), (2, 2), (3, 3), (4, 2)], ids=str)
def test_occupancy_policy_wrong_shape_discounted(shape):
    mdp = tiny(17, discount=0.9)[0]
    with pytest.raises(ValueError, match=rf"policy must have shape \(\.\.\., 3, 2\), "
                                         rf"got {re_shape(shape)}"):
        birl.occupancy(mdp, torch.full(shape, 0.5))


def test_occupancy_initial_wrong_shape(finite_mdp):
    with pytest.raises(ValueError, match=r"initial must have shape \(3,\)"):
        birl.occupancy(finite_mdp, torch.full((3, 3, 2), 0.5), initial=torch.full((4,), 0.25))


def test_plan_mismatched_mdp(finite_mdp):
    """A plan from another horizon is a wrong-shape policy."""
    other = finite_mdp.replace(horizon=5)
    plan = birl.soft_value_iteration(other, torch.zeros(3))
    with pytest.raises(ValueError, match=r"policy must have shape \(\.\.\., 3, 3, 2\)"):
        birl.occupancy(finite_mdp, plan)


NOT_MDPS = ["gridworld", None, np.zeros((3, 2, 3))]


@pytest.mark.parametrize("bad", NOT_MDPS, ids=["str", "None", "array"])
def test_mdp_not_tabular_plan(bad):
    for call in (lambda: birl.soft_value_iteration(bad, torch.zeros(3)),
                 lambda: birl.value_iteration(bad, torch.zeros(3))):
        with pytest.raises(TypeError, match="mdp must be a TabularMDP, got"):
            call()


@pytest.mark.parametrize("bad", NOT_MDPS, ids=["str", "None", "array"])
def test_mdp_not_tabular_with_temperature(bad):
    with pytest.raises(TypeError, match="mdp must be a TabularMDP, got"):
        birl.soft_value_iteration(bad, torch.zeros(3), temperature=2.0)


@pytest.mark.parametrize("bad", NOT_MDPS, ids=["str", "None", "array"])
def test_mdp_not_tabular_occupancy(bad):
    policy = torch.full((3, 3, 2), 0.5)
    for call in (lambda: birl.occupancy(bad, policy),
                 lambda: birl.policy_value(bad, policy, torch.zeros(3)),
                 lambda: birl.feature_expectations(bad, policy)):
        with pytest.raises(TypeError, match="mdp must be a TabularMDP, got"):
            call()


def test_feature_expectations_without_features():
    mdp = TabularMDP.from_dense(torch.full((2, 2, 2), 0.5), horizon=2)
    with pytest.raises(ValueError, match="this MDP has no features"):
        birl.feature_expectations(mdp, torch.full((2, 2, 2), 0.5))


def _not_policies(mdp, r):
    """What is not a policy, with the error it gets: log-probabilities, Q-values, scaled
    probabilities and a non-finite entry."""
    plan = birl.soft_value_iteration(mdp, r)
    nan = plan.policy.clone()
    nan[..., 1, :] = math.nan
    return [(plan.log_policy, r"policy\[.*\] is -.*, expected a probability >= 0"),
            (plan.q.abs() + 1, r"policy\[.*\] sums to .*, expected 1"),
            (plan.policy * 3, r"policy\[0(, 0)?\] sums to 3, expected 1"),
            (nan, r"policy\[.*1, 0\] is nan, expected a finite number")]


@pytest.mark.parametrize("finite", [True, False], ids=["finite", "discounted"])
def test_occupancy_refuses_what_is_not_a_policy(finite):
    """log_policy or Q-values passed as a policy were read as probabilities (negative visits,
    3x the mass, +-1e308 discounted): every entry taking a policy tensor checks its rows."""
    mdp, _, r = tiny(17, **(dict(horizon=3) if finite else dict(discount=0.9)))
    for policy, match in _not_policies(mdp, r):
        for call in (birl.occupancy, birl.feature_expectations,
                     lambda m, p: birl.policy_value(m, p, torch.zeros(3))):
            with pytest.raises(ValueError, match=match):
                call(mdp, policy)
    plan = birl.soft_value_iteration(mdp, r)  # its probabilities pass, in float32 too
    occ = birl.occupancy(mdp, plan)           # (checked in their own dtype)
    torch.testing.assert_close(birl.occupancy(mdp, plan.policy.float()), occ, atol=1e-5,
                               rtol=0)


def test_occupancy_refuses_an_initial_that_is_not_a_distribution(finite_mdp):
    policy = torch.full((3, 3, 2), 0.5)
    for initial, match in ((torch.ones(3), "initial sums to 3, expected 1"),
                           (torch.tensor([1.5, -0.5, 0.0]),
                            r"initial\[1\] is -0.5, expected a probability >= 0"),
                           (torch.tensor([math.nan, 0.5, 0.5]),
                            r"initial\[0\] is nan, expected a finite number")):
        with pytest.raises(ValueError, match=match):
            birl.occupancy(finite_mdp, policy, initial=initial)
    mass = birl.occupancy(finite_mdp, policy, initial=[0.0, 1.0, 0.0]).sum()
    assert mass.item() == pytest.approx(3.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("finite", [True, False], ids=["finite", "discounted"])
def test_planners_refuse_a_non_finite_reward(bad, finite):
    """A NaN or infinite reward gave NaN values (all of them) or, discounted, a warning: the
    public planners refuse it, naming the entry (-inf is no "forbidden action": refused too)."""
    mdp = tiny(17, **(dict(horizon=3) if finite else dict(discount=0.9)))[0]
    r = torch.zeros(3, 2)
    r[2, 1] = bad
    match = rf"reward\[2, 1\] is {bad}, expected a finite number"
    policy = birl.soft_value_iteration(mdp, torch.zeros(3)).policy
    for call in (lambda: birl.soft_value_iteration(mdp, r),
                 lambda: birl.soft_value_iteration(mdp, r, temperature=2.0),
                 lambda: birl.value_iteration(mdp, r),
                 lambda: birl.policy_value(mdp, policy, r)):
        with pytest.raises(ValueError, match=match):
            call()
    if finite:
        with pytest.raises(ValueError, match=rf"terminal_reward\[1\] is {bad}, expected a "
                                             "finite number"):
            birl.soft_value_iteration(mdp, torch.zeros(3),
                                      terminal_reward=torch.tensor([0.0, bad, 0.0]))


def test_planners_refuse_a_complex_reward(finite_mdp):
    """The imaginary part was dropped silently."""
    r = torch.zeros(3, dtype=torch.complex64)
    for call in (birl.soft_value_iteration, birl.value_iteration, broadcast_reward,
                 lambda m, x: birl.policy_value(m, torch.full((3, 3, 2), 0.5), x)):
        with pytest.raises(TypeError, match="reward must be real-valued, got dtype "
                                            "torch.complex64"):
            call(finite_mdp, r)


def test_unchecked_planner_keeps_the_non_finite_guard():
    """Inference plans with check=False, where a non-finite reward (a rejected proposal)
    gives non-finite values and, discounted, a warning instead of an error."""
    mdp = tiny(17, discount=0.9)[0]
    with pytest.warns(ConvergenceWarning, match="not finite after 1 iterations"):
        plan = birl.soft_value_iteration(mdp, torch.tensor([0.0, math.nan, 0.0]),
                                         solver="iterate", check=False)
    assert plan.v.isnan().all()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(tol=-1e-3), ValueError, r"tol is -0.001, expected a number > 0"),
    (dict(tol=0), ValueError, r"tol is 0, expected a number > 0"),
    (dict(tol=math.nan), ValueError, r"tol is nan, expected a number > 0"),
    (dict(tol="1e-3"), ValueError, r"tol is '1e-3', expected a number > 0"),
    (dict(max_iters=10.5), TypeError, r"max_iters must be an integer, got 10.5 \(float\)"),
    (dict(max_iters=0), ValueError, r"max_iters is 0, expected an integer >= 1"),
])
def test_planner_options_are_checked(kwargs, error, match):
    """A negative tol was accepted, a string one failed comparing with a float, and a float
    max_iters failed inside range()."""
    mdp, _, r = tiny(17, discount=0.9)
    plan = birl.soft_value_iteration(mdp, r)
    for call in (lambda: birl.soft_value_iteration(mdp, r, **kwargs),
                 lambda: birl.value_iteration(mdp, r, **kwargs),
                 lambda: birl.occupancy(mdp, plan, **kwargs),
                 lambda: birl.policy_value(mdp, plan, r, **kwargs)):
        with pytest.raises(error, match=match):
            call()
    if "tol" in kwargs:
        with pytest.raises(error, match=match):
            birl.planning.choose_solver(mdp, kwargs["tol"])


# ---------------------------------------------------------------------------- two kernels
@pytest.mark.parametrize("dense", [True, False], ids=["dense-P", "csr-P"])
@pytest.mark.parametrize("outputs", ["both", "v", "log_policy"])
def test_torch_kernel_equals_compiled_cpu_kernel(monkeypatch, dense, outputs):
    """The accelerator path (torch, batch-last) run on the CPU against the compiled CPU kernel:
    values, terminal values, and the gradients of each output alone and together."""
    from bayesirl.planning import bellman as planning

    # 6x6 = 36 states stays under the dense-operator limit; 24x24 = 576 states uses CSR
    mdp = envs.gridworld(size=6 if dense else 24, slip=0.2, horizon=7, dtype=torch.float64)
    S, A = mdp.n_states, mdp.n_actions
    r0 = random_reward(3, (2, 3, S, A))
    term0 = random_reward(4, (S,))
    G = random_reward(5, (2, 3, 7, S, A))
    results = []
    for compiled in (True, False):
        monkeypatch.setattr(planning, "_use_cpu_kernel", lambda x, c=compiled: c)
        r, term = r0.clone().requires_grad_(), term0.clone().requires_grad_()
        plan = birl.soft_value_iteration(mdp, r, terminal_reward=term)
        loss = {"both": (plan.log_policy * G).sum() + plan.v.square().sum(),
                "v": plan.v.square().sum(), "log_policy": (plan.log_policy * G).sum()}[outputs]
        loss.backward()
        results.append((plan.v.detach(), plan.log_policy.detach(), r.grad, term.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("outputs", ["both", "v", "q"])
def test_hard_torch_loop_equals_compiled_cpu_kernel(monkeypatch, outputs):
    """Hard backward induction (the Boltzmann likelihood's planner): the torch loop of backups
    (the accelerator path) against the compiled CPU kernel, values and gradients."""
    from bayesirl.planning import bellman as planning

    mdp = envs.gridworld(size=6, slip=0.2, horizon=6, dtype=torch.float64)
    S, A = mdp.n_states, mdp.n_actions
    r0, term0 = random_reward(3, (2, S, A)), random_reward(4, (S,))
    G = random_reward(5, (2, 6, S, A))
    results = []
    for compiled in (True, False):
        monkeypatch.setattr(planning, "_use_cpu_kernel", lambda x, c=compiled: c)
        r, term = r0.clone().requires_grad_(), term0.clone().requires_grad_()
        plan = birl.value_iteration(mdp, r, terminal_reward=term)
        loss = {"both": (plan.q * G).sum() + plan.v.square().sum(),
                "v": plan.v.square().sum(), "q": (plan.q * G).sum()}[outputs]
        loss.backward()
        results.append((plan.q.detach(), plan.v.detach(), plan.log_policy, r.grad, term.grad))
    assert results[0][3].abs().sum() > 0 and results[0][4].abs().sum() > 0
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_hard_compiled_gradient_splits_ties():
    """With every action tied (zero reward, symmetric dynamics) dL/dv reaches each action's
    reward in equal shares, as the tie-split greedy policy says."""
    mdp = TabularMDP.from_dense(torch.full((2, 3, 2), 0.5, dtype=torch.float64), horizon=1)
    r = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    birl.value_iteration(mdp, r).v.sum().backward()
    torch.testing.assert_close(r.grad, torch.full((2, 3), 1 / 3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("outputs", ["both", "v", "log_policy"])
def test_wide_batch_kernel_equals_narrow_kernel(monkeypatch, dtype, outputs):
    """From ``WIDE_BATCH`` reward rows on, the CPU kernels keep the batch innermost (tiles of
    states transposed in and out, a polynomial exp): in float64 the same values and gradients
    as the batch-first kernels, in float32 within float32 rounding of the float64 result, for a
    batch (11) and a state count (23 x 23) that fill neither SIMD registers nor tiles."""
    from bayesirl.planning import cpu_kernels as _cpu_dp

    S, A = 23 * 23, 5
    r0, term0 = 5 * random_reward(3, (11, S, A)), random_reward(4, (S,))
    G = random_reward(5, (11, 5, S, A))
    assert 11 >= _cpu_dp.WIDE_BATCH and S % _cpu_dp.TILE

    def run(wide, dt):
        monkeypatch.setattr(_cpu_dp, "WIDE_BATCH", _cpu_dp.WIDE_BATCH if wide else 10**9)
        mdp = envs.gridworld(size=23, slip=0.2, horizon=5, block=1, dtype=dt)
        r = r0.to(dt).requires_grad_()
        term = term0.to(dt).requires_grad_()
        plan = birl.soft_value_iteration(mdp, r, terminal_reward=term)
        loss = {"both": (plan.log_policy * G.to(dt)).sum() + plan.v.square().sum(),
                "v": plan.v.square().sum(),
                "log_policy": (plan.log_policy * G.to(dt)).sum()}[outputs]
        loss.backward()
        return [x.double() for x in (plan.v.detach(), plan.log_policy.detach(), r.grad,
                                     term.grad)]

    wide = run(True, dtype)
    if dtype == torch.float64:
        for a, b in zip(wide, run(False, dtype), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    else:
        # relative root-mean-square error against float64; measured 0.9e-6 for the gradient
        # (the batch-first kernel, with float64 exp and sums inside, 0.25e-6)
        exact = run(False, torch.float64)
        for a, x in zip(wide, exact, strict=True):
            assert (a - x).norm() <= 32 * torch.finfo(torch.float32).eps * x.norm()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
@pytest.mark.parametrize("rows, cols", [(8, 8), (16, 24), (11, 13), (3, 5), (1, 17)], ids=str)
@pytest.mark.parametrize("far", ["source", "destination"])
def test_register_transpose_of_strided_blocks(dtype, rows, cols, far):
    """``_transpose_strided`` (8x8 register blocks and scalar edges) equals numpy's transpose
    between strided windows of flat arrays, in both loop orders (the side with the larger
    stride walked row block by row block), writes nothing outside its window, and refuses a
    window that does not fit."""
    from bayesirl.planning.cpu_kernels import _transpose_strided

    rng = np.random.default_rng(rows * 100 + cols)
    src_stride, dst_stride, src_at, dst_at = cols + 3, rows + 5, 7, 2
    if far == "source":
        src_stride += dst_stride
    else:
        dst_stride += src_stride
    src = rng.standard_normal(src_at + rows * src_stride).astype(dtype)
    dst = np.full(dst_at + cols * dst_stride + 4, -1.0, dtype)
    _transpose_strided(src, src_at, src_stride, dst, dst_at, dst_stride, rows, cols)
    window = src[src_at:src_at + rows * src_stride].reshape(rows, src_stride)[:, :cols]
    got = dst[dst_at:dst_at + cols * dst_stride].reshape(cols, dst_stride)
    np.testing.assert_array_equal(got[:, :rows], window.T)
    untouched = np.ones(dst.shape, bool)
    untouched[dst_at:dst_at + cols * dst_stride] = False
    untouched[dst_at:dst_at + cols * dst_stride] = np.tile(np.arange(dst_stride) >= rows, cols)
    assert (dst[untouched] == -1).all()
    last = dst_at + (cols - 1) * dst_stride + rows  # one past the window's last element
    with pytest.raises(IndexError, match="out of bounds"):  # the window one element too late
        _transpose_strided(src, src_at, src_stride, dst, dst_at + dst.size - last + 1,
                           dst_stride, rows, cols)


def test_batch_split_over_threads_gives_identical_results(monkeypatch):
    """Rows of a batch are independent, so splitting them over threads changes no bit."""
    from bayesirl.planning import cpu_kernels as _cpu_dp

    big = _cpu_dp.MIN_THREAD_WORK
    assert _cpu_dp._batch_parts(20, 3, big) == [slice(0, 10), slice(10, 20)]  # >= 8 rows each
    assert _cpu_dp._batch_parts(15, 4, big) == [slice(0, 15)]
    assert _cpu_dp._batch_parts(64, 1, big) == [slice(0, 64)]
    assert _cpu_dp._batch_parts(64, 2, big // 64) == [slice(0, 64)]           # too little work
    monkeypatch.setattr(_cpu_dp, "MIN_THREAD_WORK", 1)
    mdp = envs.gridworld(size=9, slip=0.2, horizon=4, block=3, dtype=torch.float64)
    succ, prob = mdp.successors.numpy(), mdp.transition_probs.numpy()
    S, A = mdp.n_states, mdp.n_actions
    r = 3 * random_reward(1, (20, S, A)).numpy()
    v_end = random_reward(2, (20, S)).numpy()
    G = random_reward(3, (20, 4, S, A)).numpy()
    out = []
    for threads in (1, 3):
        lp, v, g_r = np.empty((20, 4, S, A)), np.empty((20, 4, S)), np.empty((20, S, A))
        _cpu_dp.soft_dp_forward(succ, prob, r, v_end, lp, v, threads=threads)
        g_v_end = _cpu_dp.soft_dp_backward(succ, prob, lp, v, G, g_r, threads=threads)
        out.append((lp, v, g_r, g_v_end))
    for a, b in zip(*out, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_ctrl_c_during_a_compiled_adjoint_raises_keyboard_interrupt(hard):
    """A raising SIGINT handler (the CLI's) runs while Numba boxes the array an adjoint
    returns; CPython then reports a SystemError caused by the KeyboardInterrupt, which
    inference does not read as Ctrl-C (a CI run lost its draws so). The entry points raise
    the KeyboardInterrupt itself. Each call computes for tens of milliseconds, so the signal
    lands inside one, not in the loop's Python between them."""
    import signal
    import threading

    from bayesirl.planning import cpu_kernels as _cpu_dp

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Python runs signal handlers in the main thread only")
    mdp = envs.gridworld(size=100, slip=0.2, horizon=100, dtype=torch.float64)
    succ, prob = mdp.successors.numpy(), mdp.transition_probs.numpy()
    S, A, T = mdp.n_states, mdp.n_actions, 100
    r, v_end = random_reward(1, (1, S, A)).numpy(), np.zeros((1, S))
    out, v, g_r = np.empty((1, T, S, A)), np.empty((1, T, S)), np.empty((1, S, A))
    G = random_reward(2, (1, T, S, A)).numpy()
    if hard:
        _cpu_dp.hard_dp_forward(succ, prob, r, v_end, out, v)
        adjoint = lambda: _cpu_dp.hard_dp_backward(succ, prob, out, v, None, G, g_r, 1e-9)  # noqa: E731
    else:
        _cpu_dp.soft_dp_forward(succ, prob, r, v_end, out, v)
        adjoint = lambda: _cpu_dp.soft_dp_backward(succ, prob, out, None, G, g_r)  # noqa: E731
    adjoint()  # compiled (or loaded from the cache) before the clock starts

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, handler)
    main = threading.main_thread().ident
    timer = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGINT))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            for _ in range(1000):
                adjoint()
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)


def _elementwise(fn):
    """A compiled ``out[i] = fn(x[i])`` for a Numba-only function such as ``fast_exp``."""
    import numba

    @numba.njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])

    return apply


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fast_exp_is_within_two_ulp_and_keeps_nan(dtype):
    from bayesirl.planning.cpu_kernels import fast_exp

    apply = _elementwise(fast_exp)

    tiny = np.log(np.finfo(dtype).tiny)               # below: subnormal results
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(tiny + 1, 0, 10**5), rng.uniform(-1, 0, 10**5),
                        [0.0, -0.5 * np.log(2), np.log(0.5)]]).astype(dtype)
    out = np.empty_like(x)
    apply(x, out)
    exact = np.exp(x.astype(np.longdouble))
    ulps = np.abs(out - exact) / np.spacing(exact.astype(dtype)).astype(np.longdouble)
    assert ulps.max() <= 2, float(ulps.max())
    special = np.array([np.nan, -np.inf, 2 * tiny], dtype)
    apply(special, out[:3])
    assert np.isnan(out[0]) and out[1] == 0 and out[2] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_log_is_within_one_ulp_and_keeps_special_values(dtype):
    from bayesirl.planning.cpu_kernels import fast_log

    apply = _elementwise(fast_log)

    info = np.finfo(dtype)
    rng = np.random.default_rng(0)
    wide = np.exp(rng.uniform(np.log(float(info.smallest_subnormal)), np.log(float(info.max)),
                              10**5))
    x = np.concatenate([rng.uniform(1, 64, 10**5), rng.uniform(0.5, 2, 10**5), wide,
                        [1.0, 2.0, 0.5, np.sqrt(2), info.tiny, info.max,
                         info.smallest_subnormal]]).astype(dtype)
    x = x[(x > 0) & np.isfinite(x)]
    out = np.empty_like(x)
    apply(x, out)
    exact = np.log(x.astype(np.longdouble))
    ulps = np.abs(out - exact) / np.spacing(np.abs(exact).astype(dtype)).astype(np.longdouble)
    assert ulps.max() <= 1, float(ulps.max())
    special = np.array([np.nan, np.inf, 0.0, -1.0, -np.inf], dtype)
    out = np.empty_like(special)
    apply(special, out)
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == -np.inf
    assert np.isnan(out[3:]).all()

# ---------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("finite", [True, False], ids=["finite", "discounted"])
def test_cuda_equals_cpu(dtype, finite):
    cpu = envs.gridworld(size=8, slip=0.1, dtype=dtype,
                         **(dict(horizon=30) if finite else dict(discount=0.9)))
    gpu = cpu.to("cuda")
    r = (cpu.reward[:, None] + 0.1 * random_reward(5, (2, 64, 5)).to(dtype)).requires_grad_()
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    G = random_reward(6, r.shape[:-2] + ((30,) if finite else ()) + (64, 5)).to(dtype)
    grads = []
    for mdp in (cpu, gpu):
        rr = r.detach().to(mdp.device).requires_grad_()
        plan = birl.soft_value_iteration(mdp, rr)
        assert plan.v.device.type == mdp.device.type and plan.v.dtype == dtype
        ((plan.log_policy * G.to(mdp.device)).sum() + plan.v.sum()).backward()
        grads.append((plan, birl.occupancy(mdp, plan), birl.value_iteration(mdp, rr), rr.grad))
    (p_cpu, o_cpu, h_cpu, g_cpu), (p_gpu, o_gpu, h_gpu, g_gpu) = grads
    for a, b in ((p_cpu.q, p_gpu.q), (p_cpu.v, p_gpu.v), (p_cpu.log_policy, p_gpu.log_policy),
                 (o_cpu, o_gpu), (h_cpu.v, h_gpu.v), (g_cpu, g_gpu)):
        torch.testing.assert_close(b.cpu(), a.detach(), **tol)
