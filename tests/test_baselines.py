"""Tests of bayesirl.baselines: projection, max margin, MaxEnt, MCE and deep MaxEnt IRL.

Every baseline must recover a reward whose optimal policy is nearly as good as the truth's on a
small gridworld (EVD below 10% of the EVD of random rewards). Beyond that, each algorithm's own
guarantee is checked: MCE matches the experts' feature expectations; MaxEnt's dynamic program
matches brute-force enumeration of paths, equals MCE on deterministic dynamics and differs under
stochastic dynamics; the projection method's distance never increases; the max-margin solution
satisfies its constraints for every policy.
"""

import itertools
import math

import numpy as np
import pytest
import torch

import bayesirl as birl
from bayesirl import envs
from bayesirl.baselines import (
    IRLResult,
    deep_maxent_irl,
    max_margin_irl,
    maxent_irl,
    mce_irl,
    projection_irl,
)
from bayesirl.baselines.max_margin import solve_margin_lp
from bayesirl.baselines.maxent import path_dual
from bayesirl.core.mdp import TabularMDP
from bayesirl.metrics import expected_value_difference, held_out_log_likelihood

ALGORITHMS = {
    "projection": lambda mdp, demos: projection_irl(mdp, demos, max_iters=30),
    "max_margin": max_margin_irl,
    "maxent": maxent_irl,
    "mce": mce_irl,
    "deep_maxent": lambda mdp, demos: deep_maxent_irl(mdp, demos, max_iters=60, lr=0.05),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # these MDPs are tiny


def problem(slip, n=100, seed=0):
    """A 6x6 gridworld (2x2 macro-cell features, d = 9), horizon 15, soft-optimal demos."""
    mdp = envs.gridworld(size=6, slip=slip, horizon=15, block=2, seed=seed, dtype=torch.float64)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=n, seed=seed)
    rand = torch.randn(10, mdp.n_states, generator=torch.Generator().manual_seed(seed + 1),
                       dtype=torch.float64)
    random_evd = float(expected_value_difference(mdp, mdp.reward, rand).mean())
    return mdp, demos, random_evd


@pytest.fixture(scope="module")
def stochastic():
    return problem(slip=0.1)


@pytest.fixture(scope="module")
def deterministic():
    return problem(slip=0.0)


@pytest.fixture(scope="module")
def fitted(stochastic):
    """Each algorithm's result on the stochastic gridworld, computed once."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = ALGORITHMS[name](*stochastic[:2])
        return cache[name]
    return get


def expected_features(mdp, reward, initial):
    plan = birl.soft_value_iteration(mdp, reward)
    return birl.feature_expectations(mdp, plan, initial=initial)


# ---------------------------------------------------------------------------- every baseline
@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_evd_below_a_tenth_of_random(name, stochastic, fitted):
    mdp, _, random_evd = stochastic
    res = fitted(name)
    assert isinstance(res, IRLResult)
    assert res.reward.shape == (mdp.n_states, mdp.n_actions)
    assert res.theta is None if name == "deep_maxent" else res.theta.shape == (mdp.n_features,)
    assert all(isinstance(v, list) and v for v in res.history.values())
    evd = float(expected_value_difference(mdp, mdp.reward, res.reward))
    assert 0 <= evd < 0.1 * random_evd, (evd, random_evd)


# ---------------------------------------------------------------------------- MCE
def test_mce_matches_expert_features(stochastic):
    mdp, demos, _ = stochastic
    mu_e = demos.feature_expectations(mdp)
    res = mce_irl(mdp, demos, l2=0.0)
    assert res.info["converged"] and torch.allclose(res.info["expert_features"], mu_e)
    mu = expected_features(mdp, res.reward, demos.empirical_initial(mdp.n_states))
    assert (mu - mu_e).abs().max() < 1e-3
    assert res.history["feature_distance"][-1] < 1e-3
    res = mce_irl(mdp, demos, initial="mdp", l2=0.0)
    assert (expected_features(mdp, res.reward, None) - mu_e).abs().max() < 1e-3


def test_mce_state_action_features_and_map(stochastic):
    mdp, demos, _ = stochastic
    phi = torch.cat([mdp.state_action_features(), torch.eye(mdp.n_actions).expand(
        mdp.n_states, -1, -1)], -1)                                        # (S, A, 9 + 5)
    sa = mdp.replace(features=phi, feature_names=None)
    res = mce_irl(sa, demos, l2=0.0)
    mu = expected_features(sa, res.reward, demos.empirical_initial(sa.n_states))
    assert (mu - demos.feature_expectations(sa)).abs().max() < 1e-3
    # with l2 > 0 the penalised dual is stationary: mu - mu_E + l2 theta = 0 (the MAP under
    # N(0, I / (N l2)) only on deterministic dynamics: test_mce_map_only_on_deterministic...)
    res = mce_irl(sa, demos, l2=0.5)
    mu = expected_features(sa, res.reward, demos.empirical_initial(sa.n_states))
    assert (mu - demos.feature_expectations(sa) + 0.5 * res.theta).abs().max() < 1e-5
    assert res.theta.norm() < mce_irl(sa, demos, l2=0.05).theta.norm()


def test_mce_dual_is_the_log_likelihood_on_deterministic_dynamics(deterministic):
    mdp, demos, _ = deterministic
    res = mce_irl(mdp, demos, l2=0.0)
    nll = -held_out_log_likelihood(mdp, res.reward, demos).mean()
    assert res.history["loss"][-1] == pytest.approx(float(nll), abs=1e-9)
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(res.history["loss"]))


def test_mce_discounted():
    mdp = envs.gridworld(size=4, slip=0.1, discount=0.7, block=2, seed=3, dtype=torch.float64)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=60, seed=3,
                          length=30)
    res = mce_irl(mdp, demos, initial="mdp", l2=0.0)
    mu = expected_features(mdp, res.reward, None)
    assert (mu - res.info["expert_features"]).abs().max() < 1e-3
    # discounted counts are rescaled to mass 1 / (1 - gamma) per demonstration
    assert float(res.info["expert_features"].sum()) == pytest.approx(1 / 0.3)


def test_mce_adam_agrees_with_lbfgs():
    mdp = envs.gridworld(size=4, slip=0.1, horizon=8, block=2, seed=3, dtype=torch.float64)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=60, seed=3)
    res = mce_irl(mdp, demos, l2=0.0)
    adam = mce_irl(mdp, demos, l2=0.0, method="adam", lr=0.2, max_iters=400, tol=1e-4)
    assert adam.info["converged"] and adam.info["iterations"] < 400
    # one-hot cell features and l2 = 0: theta is identified up to a constant
    assert torch.allclose(adam.theta - adam.theta.mean(), res.theta - res.theta.mean(), atol=1e-2)


def test_unbounded_dual_warns_and_l2_cures_it():
    """Tabular features of states no demonstration visits: the MLE does not exist."""
    mdp = envs.gridworld(size=4, slip=0.0, horizon=4, block=1, seed=0, dtype=torch.float64)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=3, seed=0)
    assert (demos.feature_expectations(mdp) == 0).any()
    with pytest.warns(birl.planning.ConvergenceWarning, match=r"raise l2 \(now 0\)"):
        res = mce_irl(mdp, demos, l2=0.0, max_iters=15)
    assert not res.info["converged"]
    assert mce_irl(mdp, demos, l2=0.1).info["converged"]


@pytest.mark.parametrize("algorithm", [mce_irl, maxent_irl])
def test_default_l2_converges_on_unvisited_block_features(algorithm):
    """8x8 gridworld, one-hot 2x2 block features, 20 demos leave a block unvisited: with l2 = 0
    the weights drift to |theta| ~ 1e29 without converging; the default l2 converges (no
    warning: warnings are errors in this suite) to the stationary point of the penalised dual,
    with the constant direction of one-hot features pinned at mean 0."""
    mdp = envs.gridworld(size=8, slip=0.1, horizon=30, block=2, seed=0, dtype=torch.float64)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=20, seed=0)
    mu_e = demos.feature_expectations(mdp)
    assert (mu_e == 0).any()
    res = algorithm(mdp, demos)
    assert res.info["converged"] and res.info["iterations"] < 100
    assert res.history["grad_norm"][-1] < 1e-5 and res.theta.abs().max() < 10
    assert abs(float(res.theta.mean())) < 1e-6
    if algorithm is mce_irl:
        mu = expected_features(mdp, res.reward, demos.empirical_initial(mdp.n_states))
        assert (mu - mu_e + 0.01 * res.theta).abs().max() < 1e-5


# ---------------------------------------------------------------------------- MaxEnt
def test_maxent_dynamic_program_matches_brute_force():
    """log Z and expected visits of P(tau) ∝ exp(r(tau)) prod P, by enumerating all paths."""
    rng = np.random.default_rng(0)
    S, A, T = 3, 2, 3
    P = rng.dirichlet(np.ones(S), size=(S, A))
    mdp = TabularMDP.from_dense(torch.as_tensor(P), horizon=T)
    r = torch.as_tensor(rng.standard_normal((S, A)))
    start = torch.as_tensor(rng.dirichlet(np.ones(S)))
    counts = torch.as_tensor(rng.random((S, A)))
    loss, occ = path_dual(mdp, r, counts, start)
    want_loss, want_occ = -float((counts * r).sum()), torch.zeros(S, A)
    for s0 in range(S):
        paths = []
        for acts in itertools.product(range(A), repeat=T):
            for nxt in itertools.product(range(S), repeat=T - 1):
                states = (s0,) + nxt
                w = math.exp(sum(r[s, a] for s, a in zip(states, acts, strict=True)))
                w *= math.prod(P[s, a, s2] for s, a, s2 in zip(states, acts, nxt, strict=False))
                paths.append((w, states, acts))
        Z = sum(w for w, _, _ in paths)
        want_loss += float(start[s0]) * math.log(Z)
        for w, states, acts in paths:
            for s, a in zip(states, acts, strict=True):
                want_occ[s, a] += float(start[s0]) * w / Z
    assert loss == pytest.approx(want_loss, abs=1e-12)
    assert torch.allclose(occ, want_occ, atol=1e-12)


def test_maxent_equals_mce_on_deterministic_dynamics(deterministic):
    mdp, demos, _ = deterministic
    a, b = maxent_irl(mdp, demos), mce_irl(mdp, demos)
    assert (a.theta - b.theta).abs().max() < 1e-4
    assert (a.reward - b.reward).abs().max() < 1e-4


def test_maxent_differs_from_mce_under_stochastic_dynamics(stochastic, fitted):
    mdp, demos, _ = stochastic
    a, b = fitted("maxent"), fitted("mce")
    assert a.info["converged"] and b.info["converged"]
    assert (a.theta - b.theta).abs().max() > 0.05
    # MaxEnt matches the features of its own path model, not of the causal soft policy
    s0 = demos.empirical_initial(mdp.n_states)
    mu_e = demos.feature_expectations(mdp)
    assert (expected_features(mdp, a.reward, s0) - mu_e).abs().max() > 0.05


def test_maxent_on_discounted_mdp_uses_a_horizon():
    mdp = envs.gridworld(size=4, slip=0.0, discount=0.9, block=2, seed=1, dtype=torch.float64)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=40, seed=1,
                          length=12)
    res = maxent_irl(mdp, demos)
    short = maxent_irl(mdp, demos, horizon=8)
    assert res.info["converged"] and short.info["converged"]
    assert float(res.info["expert_features"].sum()) == pytest.approx(12)
    assert float(short.info["expert_features"].sum()) == pytest.approx(8)
    with pytest.raises(ValueError, match="expected at least horizon=13 steps"):
        maxent_irl(mdp, demos, horizon=13)


def test_mce_map_only_on_deterministic_dynamics():
    """With l2 = 1/N, MCE's estimate is the MAP under N(0, I) of the demonstrations' causal
    log-likelihood (held_out_log_likelihood) on deterministic dynamics, and not under slip."""
    gaps = {}
    for slip in (0.0, 0.1):
        mdp = envs.gridworld(size=6, slip=slip, horizon=12, block=(3, 2), seed=0,
                             dtype=torch.float64)
        demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=20, seed=0)
        phi = mdp.state_action_features()

        def log_post(theta, mdp=mdp, demos=demos, phi=phi):
            return float(held_out_log_likelihood(mdp, phi @ theta, demos).sum()
                         - theta @ theta / 2)
        theta, h = mce_irl(mdp, demos, l2=1 / demos.n).theta, 1e-5
        grad = [(log_post(theta + h * e) - log_post(theta - h * e)) / (2 * h)
                for e in torch.eye(len(theta))]
        gaps[slip] = max(abs(g) for g in grad)  # 0 up to N * tol and differencing error
    assert gaps[0.0] < 1e-4 and gaps[0.1] > 1e-1, gaps


@pytest.mark.parametrize("algorithm", [mce_irl, maxent_irl])
def test_float32_converges_to_the_float64_answer(algorithm):
    """The README problem in float32 (its default dtype): the solve runs in float64, so L-BFGS
    converges (no ConvergenceWarning, an error here) to float64's theta; in float32 it stopped
    on round-off with the gradient at 4e-3 and warned."""
    out = {}
    for dtype in (torch.float32, torch.float64):
        mdp = envs.gridworld(size=8, slip=0.1, horizon=30, block=(4, 2), seed=0, dtype=dtype)
        demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=20, seed=0)
        out[dtype] = algorithm(mdp, demos, l2=1 / demos.n)
        assert out[dtype].info["converged"]
        assert out[dtype].theta.dtype == out[dtype].reward.dtype == dtype
        assert out[dtype].info["grad"].dtype == dtype
    torch.testing.assert_close(out[torch.float32].theta.double(), out[torch.float64].theta,
                               rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------- start states
def logged_starts():
    """Demonstrations that all start in state 0 of a 6x6 gridworld whose mdp.initial is
    uniform (logged data), and the same MDP with the demonstrations' start as its initial."""
    mdp = envs.gridworld(size=6, slip=0.1, horizon=12, block=2, seed=2, dtype=torch.float64)
    demos = birl.rollouts(mdp, birl.value_iteration(mdp, mdp.reward), n=50, seed=0, initial=0)
    return mdp, demos, mdp.replace(initial=demos.empirical_initial(mdp.n_states))


def test_projection_and_max_margin_start_where_the_demonstrations_do():
    """Like mce_irl, initial="empirical" (the default) compares the policies' feature counts
    from the demonstrations' start with the experts'; from mdp.initial a gap remains that no
    reward closes."""
    mdp, demos, mdp0 = logged_starts()
    res = projection_irl(mdp, demos, max_iters=50)
    assert torch.equal(res.theta, projection_irl(mdp0, demos, max_iters=50,
                                                 initial="mdp").theta)
    assert res.history["distance"][-1] < 0.02
    assert projection_irl(mdp, demos, max_iters=50, initial="mdp").history["distance"][-1] > 1
    mm = max_margin_irl(mdp, demos)
    assert torch.equal(mm.theta, max_margin_irl(mdp0, demos, initial="mdp").theta)
    assert mm.info["slack"] < max_margin_irl(mdp, demos, initial="mdp").info["slack"] - 1
    for evd in (expected_value_difference(mdp0, mdp.reward, r.reward) for r in (res, mm)):
        assert float(evd) < 1e-3


# ---------------------------------------------------------------------------- projection
def test_projection_distance_decreases_monotonically(stochastic, fitted):
    mdp, demos, _ = stochastic
    res = fitted("projection")
    dist = res.history["distance"]
    assert len(dist) == 31 and all(b <= a + 1e-12 for a, b in itertools.pairwise(dist))
    assert dist[-1] < 0.2 * dist[0]
    info = res.info
    lam, mus = info["mixture_weights"], info["feature_expectations"]
    assert len(info["policies"]) == len(lam) == mus.shape[0] == 31
    assert (lam >= 0).all() and float(lam.sum()) == pytest.approx(1.0)
    mix_dist = float((lam @ mus - demos.feature_expectations(mdp)).norm())
    assert mix_dist == pytest.approx(info["mixture_distance"]) and mix_dist <= dist[-1] + 1e-9
    assert torch.allclose(info["policies"][0], torch.full_like(info["policies"][0], 0.2))
    # theta is the w of the mixture's main policy, which is optimal for the returned reward
    main = info["main"]
    assert main > 0 and float(lam[main]) == float(lam.max())
    assert torch.equal(res.theta, info["weights"][main])
    assert float(res.theta.norm()) == pytest.approx(1.0)
    assert torch.equal(birl.value_iteration(mdp, res.reward).policy, info["policies"][main])


def test_projection_never_returns_the_zero_reward_of_the_uniform_start():
    """Near-random experts (soft policy of 0.3 * reward): the uniform pi_0 carries most of the
    mixture, yet the returned reward is a learned w_j (unit norm), not the start's w_0 = 0."""
    mdp = envs.gridworld(size=6, slip=0.1, horizon=15, block=2, seed=0, dtype=torch.float64)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, 0.3 * mdp.reward), n=50, seed=0)
    res = projection_irl(mdp, demos, max_iters=10)
    lam = res.info["mixture_weights"]
    assert int(lam.argmax()) == 0                       # pi_0 wins the mixture here
    main = res.info["main"]
    assert main > 0 and float(lam[main]) == float(lam[1:].max())
    assert float(res.theta.norm()) == pytest.approx(1.0)
    assert torch.equal(birl.value_iteration(mdp, res.reward).policy, res.info["policies"][main])
    zero_evd = expected_value_difference(mdp, mdp.reward, torch.zeros_like(mdp.reward))
    assert float(expected_value_difference(mdp, mdp.reward, res.reward)) < 0.1 * float(zero_evd)
    # the experts indistinguishable from pi_0 (within eps): nothing to learn, theta = 0
    same = projection_irl(mdp, demos, eps=1e6)
    assert same.info["main"] == 0 and not same.theta.any()


# ---------------------------------------------------------------------------- max margin
@pytest.mark.parametrize("margin", ["loss", "unit"])
def test_max_margin_constraints_hold_at_the_solution(margin, stochastic, fitted):
    mdp, _, _ = stochastic
    res = fitted("max_margin") if margin == "loss" else max_margin_irl(*stochastic[:2],
                                                                       margin="unit")
    info = res.info
    w, deltas, losses, xi = res.theta.numpy(), info["deltas"].numpy(), info["losses"].numpy(), \
        info["slack"]
    assert info["converged"] and xi >= 0
    assert (deltas @ w >= losses - xi - 1e-7).all()
    # the LP solution is optimal: re-solving the final working set gives the same objective
    w2, xi2 = solve_margin_lp(deltas, losses, info["C"])
    assert np.abs(w2).sum() + info["C"] * xi2 == pytest.approx(np.abs(w).sum() + info["C"] * xi,
                                                               abs=1e-7)
    # no policy violates its constraint: check the loss-augmented best response from scratch
    # (from the demonstrations' start, initial="empirical")
    loss, start = info["loss_vector"], stochastic[1].empirical_initial(mdp.n_states)
    plan = birl.value_iteration(mdp, res.reward + loss)
    L = float((birl.occupancy(mdp, plan, initial=start) * loss).sum()) if margin == "loss" \
        else 1.0
    mu = birl.feature_expectations(mdp, plan, initial=start)
    assert float(res.theta @ (info["expert_features"] - mu)) >= L - xi - 1e-6


def test_max_margin_warns_when_out_of_iterations(deterministic):
    with pytest.warns(birl.planning.ConvergenceWarning, match="raise max_iters"):
        res = max_margin_irl(*deterministic[:2], max_iters=1)
    assert not res.info["converged"]


# ---------------------------------------------------------------------------- deep MaxEnt
def test_deep_maxent_seeded_and_state_action(stochastic):
    mdp, demos, _ = stochastic
    a, b = (deep_maxent_irl(mdp, demos, max_iters=3, seed=5) for _ in range(2))
    c = deep_maxent_irl(mdp, demos, max_iters=3, seed=6)
    assert torch.equal(a.reward, b.reward) and not torch.equal(a.reward, c.reward)
    # NumPy integers are integers (they were refused as "seed is np.int64(5), expected an int")
    d = deep_maxent_irl(mdp, demos, max_iters=3, seed=np.int64(5), hidden=np.array([32, 32]))
    assert torch.equal(a.reward, d.reward)
    assert (a.reward == a.reward[:, :1]).all()  # a state reward, broadcast over actions
    phi = torch.cat([mdp.state_action_features(), torch.eye(mdp.n_actions).expand(
        mdp.n_states, -1, -1)], -1)
    sa = deep_maxent_irl(mdp.replace(features=phi, feature_names=None), demos, max_iters=3,
                         hidden=(8,), weight_decay=1e-3)
    assert not (sa.reward == sa.reward[:, :1]).all()
    assert sa.info["network"](phi).shape == (mdp.n_states, mdp.n_actions, 1)


# ---------------------------------------------------------------------------- bad inputs
BAD_OPTIONS = [
    (mce_irl, {"l2": -1.0}, "l2 is -1.0"),
    (mce_irl, {"method": "newton"}, "method is 'newton'"),
    (mce_irl, {"initial": "uniform"}, "initial is 'uniform'"),
    (mce_irl, {"max_iters": 0}, "max_iters is 0"),
    (mce_irl, {"tol": math.nan}, "tol is nan"),
    (maxent_irl, {"horizon": 0}, "horizon is 0"),
    (maxent_irl, {"lr": -0.1}, "lr is -0.1"),
    (projection_irl, {"eps": 0}, "eps is 0"),
    (projection_irl, {"max_iters": 2.5}, "max_iters must be an integer, got 2.5"),
    (max_margin_irl, {"C": 0}, "C is 0"),
    (max_margin_irl, {"margin": "hinge"}, "margin is 'hinge'"),
    (deep_maxent_irl, {"hidden": (0,)}, r"hidden is \(0,\)"),
    (deep_maxent_irl, {"weight_decay": -1.0}, "weight_decay is -1.0"),
    (deep_maxent_irl, {"seed": None}, "seed must be an integer, got None"),
    (deep_maxent_irl, {"seed": -1}, "seed is -1, expected an integer >= 0"),
    (projection_irl, {"initial": "uniform"}, "initial is 'uniform'"),
    (max_margin_irl, {"initial": "uniform"}, "initial is 'uniform'"),
]


@pytest.mark.parametrize("algorithm, options, message", BAD_OPTIONS)
def test_bad_options(algorithm, options, message, deterministic):
    mdp, demos, _ = deterministic
    with pytest.raises(ValueError, match=message):
        algorithm(mdp, demos, **options)


@pytest.mark.parametrize("algorithm", [projection_irl, max_margin_irl, maxent_irl, mce_irl,
                                       deep_maxent_irl])
def test_bad_problems(algorithm, deterministic):
    mdp, demos, _ = deterministic
    with pytest.raises(ValueError, match="mdp has no features"):
        algorithm(mdp.replace(features=None, feature_names=None), demos)
    out = birl.Demonstrations.from_arrays(torch.full((2, 15), 40), torch.zeros(2, 15))
    with pytest.raises(ValueError, match=r"states\[0, 0\] is 40"):
        algorithm(mdp, out)
    bad_action = birl.Demonstrations.from_arrays(torch.zeros(2, 15), torch.full((2, 15), 7))
    with pytest.raises(ValueError, match=r"actions\[0, 0\] is 7"):
        algorithm(mdp, bad_action)
    short = birl.Demonstrations.from_arrays(torch.zeros(2, 15), torch.zeros(2, 15),
                                            lengths=torch.tensor([15, 9]))
    with pytest.raises(ValueError, match="demos: demonstration 1 has length 9"):
        algorithm(mdp, short)
    with pytest.raises(TypeError, match="demos must be Demonstrations"):
        algorithm(mdp, [(0, 1)])
    with pytest.raises(TypeError, match="mdp must be a TabularMDP"):
        algorithm("gridworld", demos)


@pytest.mark.parametrize("shape", [(36, 0), (36, 5, 0)])
def test_zero_width_features_are_refused_at_construction(shape, deterministic):
    """d = 0 features reached the baselines, which failed inside torch or NumPy (or returned a
    zero reward): the MDP refuses them, naming features and d >= 1."""
    mdp = deterministic[0]
    with pytest.raises(ValueError, match=rf"features has shape \({shape[0]}, .*0\), expected "
                                         "d >= 1 features"):
        mdp.replace(features=torch.zeros(shape), feature_names=None)


def test_irl_result_defaults():
    res = IRLResult(torch.zeros(2, 1), None, {"loss": [1.0]})
    assert res.info == {} and res._fields == ("reward", "theta", "history", "info")
    with pytest.raises(TypeError):
        res.info["x"] = 1
