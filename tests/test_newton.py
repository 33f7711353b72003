"""Newton-Kantorovich fixed points for discounts near 1 (bayesirl.planning.newton) and their
wiring into soft/hard value iteration and occupancy: agreement with plain iteration, gradients
(reward and transition probabilities) against finite differences, warm starts, the automatic
choice of solver, threads, and bad input."""

import math
import warnings

import numpy as np
import pytest
import torch

import bayesirl as birl
from bayesirl.planning import bellman, newton
from bayesirl.planning.bellman import ConvergenceWarning, choose_solver


def random_mdp(S=5, A=3, K=3, seed=0, discount=0.9):
    g = torch.Generator().manual_seed(seed)
    succ = torch.randint(0, S, (S, A, K), generator=g)
    probs = torch.rand(S, A, K, generator=g, dtype=torch.float64) + 0.05
    return birl.TabularMDP(successors=succ, transition_probs=probs / probs.sum(-1, keepdim=True),
                           initial=torch.full((S,), 1.0 / S, dtype=torch.float64),
                           discount=discount)


def bus_chain(S=90, discount=0.9999, p=(0.39, 0.6, 0.01)):
    """Rust's bus engine: mileage bins; keep moves up 0/1/2 bins, replace restarts from bin 0;
    the top bin is absorbing. Reward: -0.001 * 2.3 * x to keep, -10 to replace."""
    x = torch.arange(S)
    inc = torch.arange(len(p))
    succ = torch.stack([(x[:, None] + inc).clamp(max=S - 1),
                        inc.clamp(max=S - 1).expand(S, -1)], 1)
    probs = torch.tensor(p, dtype=torch.float64).expand(S, 2, -1)
    mdp = birl.TabularMDP(successors=succ, transition_probs=probs,
                          initial=torch.full((S,), 1.0 / S, dtype=torch.float64),
                          discount=discount)
    reward = torch.stack([-0.001 * 2.3 * x.double(), torch.full((S,), -10.0,
                                                                 dtype=torch.float64)], -1)
    return mdp, reward


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def softmax_probs(logits):
    return torch.softmax(logits, -1)


@pytest.fixture(autouse=True)
def _cold():
    bellman.clear_warm_starts()
    yield
    bellman.clear_warm_starts()


PLANNERS = {"soft": birl.soft_value_iteration, "hard": birl.value_iteration}


# ---------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("kind", ["soft", "hard"])
@pytest.mark.parametrize("mdp", [random_mdp(), birl.envs.gridworld(size=4, discount=0.9,
                                                                   dtype=torch.float64)],
                         ids=["random", "gridworld"])
def test_newton_agrees_with_plain_iteration_at_0_9(kind, mdp):
    plan_fn = PLANNERS[kind]
    r = rand(2, 3, mdp.n_states, mdp.n_actions)
    it = plan_fn(mdp, r, solver="iterate", tol=1e-14)
    nk = plan_fn(mdp, r, solver="newton")
    torch.testing.assert_close(nk.v, it.v, rtol=0, atol=1e-10)
    torch.testing.assert_close(nk.q, it.q, rtol=0, atol=1e-10)
    torch.testing.assert_close(nk.policy, it.policy, rtol=0, atol=1e-10)
    assert nk.v.shape == (2, 3, mdp.n_states)
    assert nk.q.shape == nk.log_policy.shape == (2, 3, mdp.n_states, mdp.n_actions)
    assert nk.num_iters < it.num_iters / 10 and nk.residual < 1e-12


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_dense_and_sparse_factors_agree(kind):
    mdp = birl.envs.gridworld(size=6, discount=0.99, dtype=torch.float64)
    r = rand(3, mdp.n_states, mdp.n_actions)
    backup = bellman.soft_backup if kind == "soft" else bellman._hard_backup
    args = (r, mdp.successors, mdp.transition_probs, 0.99, backup)
    dense = newton.newton_fixed_point(*args, dense=True)
    sparse = newton.newton_fixed_point(*args, dense=False)
    assert isinstance(dense.factor, newton.DenseFactor)
    assert isinstance(sparse.factor, newton.SparseFactor)
    assert dense.converged and sparse.converged

    def normwise(a, b):  # a backward-stable solve's error is bounded relative to |x|, not x_i
        return float((a - b).abs().max() / b.abs().max())

    # kappa(I - 0.99 P) is a few hundred: LAPACK's and SuperLU's answers may differ by
    # ~kappa * eps ~ 1e-13 of the largest entry, however small the entry (SciPy 1.17's SuperLU
    # differs from torch's LU by 1.9e-12 at an entry of 0.23, 8e-15 of the largest)
    assert normwise(dense.v, sparse.v) < 1e-13
    g = rand(3, mdp.n_states, seed=1)
    assert normwise(dense.factor.solve_transpose(g), sparse.factor.solve_transpose(g)) < 1e-12


def test_bus_chain_at_0_9999_satisfies_the_soft_bellman_equation():
    """At gamma = 0.9999 plain iteration would need ~230 000 sweeps; Newton takes a few dozen
    steps at most and lands on the fixed point (checked in NumPy) to rounding."""
    mdp, r = bus_chain()
    plan = birl.soft_value_iteration(mdp, r)
    assert plan.num_iters < 50
    P, v = mdp.transition_matrix().numpy(), plan.v.numpy()
    q = r.numpy() + 0.9999 * P @ v
    scale = np.abs(v).max()
    np.testing.assert_allclose(v, np.logaddexp.reduce(q, -1), rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(plan.log_policy.numpy(), q - v[:, None], rtol=0,
                               atol=1e-12 * scale)


def test_bus_chain_at_0_9999_equals_a_40_digit_solution():
    """Against the fixed point in 40-digit arithmetic (mpmath; Newton steps from the float64
    answer): the error is within the documented rounding floor, 8 eps / (1 - gamma) relative.
    A float64 LU solve of the policy evaluation would be off by ~1e-10 relative (its condition
    number is 1 / (1 - gamma)): Newton's steps solve for corrections, not for v itself."""
    mpmath = pytest.importorskip("mpmath")
    S, gamma = 30, 0.9999
    mdp, r = bus_chain(S=S, discount=gamma)
    plan = birl.soft_value_iteration(mdp, r)
    with mpmath.workdps(40):
        g = mpmath.mpf(gamma)
        P = mpmath.matrix(mdp.transition_matrix().reshape(S * 2, S).tolist())
        rm = mpmath.matrix(r.reshape(-1).tolist())
        v = mpmath.matrix(plan.v.tolist())
        for _ in range(3):
            q = rm + g * (P * v)
            V = mpmath.matrix([mpmath.log(mpmath.exp(q[2 * s]) + mpmath.exp(q[2 * s + 1]))
                               for s in range(S)])
            M = mpmath.eye(S)
            for s in range(S):
                for a in range(2):
                    w = g * mpmath.exp(q[2 * s + a] - V[s])
                    for t in range(S):
                        M[s, t] -= w * P[2 * s + a, t]
            v = v + mpmath.lu_solve(M, V - v)
        exact = np.array([float(x) for x in v])
    scale = np.abs(exact).max()
    assert np.abs(plan.v.numpy() - exact).max() <= newton.rounding_floor(gamma) * scale


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_gridworld_at_0_999_converges_without_warning(kind):
    mdp = birl.envs.gridworld(size=8, discount=0.999, dtype=torch.float64)
    r = mdp.reward
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        plan = PLANNERS[kind](mdp, r)
    assert plan.residual < 1e-10
    q = r[:, None] + 0.999 * mdp.expected_next(plan.v)
    v = torch.logsumexp(q, -1) if kind == "soft" else q.amax(-1)
    assert (v - plan.v).abs().max().item() < 1e-10


def test_float32_mdp_is_solved_in_float64_and_returned_in_float32():
    mdp, r = bus_chain(discount=0.999)
    mdp32, r32 = mdp.to(dtype=torch.float32), r.float()
    p32 = birl.soft_value_iteration(mdp32, r32, warm_start=False)
    # the same problem (float32-rounded rewards and probabilities) in float64
    p64 = birl.soft_value_iteration(mdp32.to(dtype=torch.float64), r32.double())
    assert p32.v.dtype == p32.q.dtype == p32.log_policy.dtype == torch.float32
    assert choose_solver(mdp32) == "newton"
    # the float32 answer is the float64 one rounded (to a few ulps of |v| ~ 1.3e2): float32
    # iteration could not resolve the tolerance 1e-5 * |v| that 1 / (1 - gamma) amplifies
    eps32 = torch.finfo(torch.float32).eps
    scale = p64.v.abs().max().item()
    assert (p32.v.double() - p64.v).abs().max().item() <= 8 * eps32 * scale
    assert (p32.policy.double() - p64.policy).abs().max().item() <= 8 * eps32 * scale


@pytest.mark.parametrize("batch", [(), (5,), (2, 4), (0,)], ids=str)
@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_shapes_and_batch_rows_equal_single_solves(batch, kind):
    mdp = random_mdp(discount=0.995)
    r = rand(*batch, mdp.n_states, mdp.n_actions, seed=3) * 3
    plan = PLANNERS[kind](mdp, r, solver="newton", warm_start=False)
    assert plan.v.shape == batch + (5,) and plan.q.shape == batch + (5, 3)
    assert plan.log_policy.shape == batch + (5, 3)
    for idx in np.ndindex(*batch):
        one = PLANNERS[kind](mdp, r[idx], solver="newton", warm_start=False)
        torch.testing.assert_close(plan.v[idx], one.v, rtol=1e-12, atol=1e-12)


def test_temperature_goes_through_newton():
    mdp, r = bus_chain(discount=0.999)
    hot = birl.soft_value_iteration(mdp, r, temperature=2.0)
    scaled = birl.soft_value_iteration(mdp, r / 2.0)
    torch.testing.assert_close(hot.v, 2.0 * scaled.v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hot.log_policy, scaled.log_policy, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_gradcheck_reward(kind):
    mdp = random_mdp(S=4, A=2, seed=1, discount=0.95)
    reward = rand(2, 4, 2, seed=2).requires_grad_()

    def f(r):
        plan = PLANNERS[kind](mdp, r, solver="newton", warm_start=False)
        return plan.q, plan.v, plan.policy if kind == "hard" else plan.log_policy
    assert torch.autograd.gradcheck(f, (reward,))


@pytest.mark.parametrize("solver", ["newton", "iterate"])
@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_gradcheck_transition_probabilities(kind, solver):
    """dV/dP by the adjoint, through a softmax parametrisation of the probabilities (so that
    finite differences stay on the simplex), against finite differences."""
    mdp = random_mdp(S=4, A=2, K=3, seed=4, discount=0.9)
    logits = rand(4, 2, 3, seed=5).requires_grad_()
    reward = rand(4, 2, seed=6)

    def f(z):
        m = mdp.with_probabilities(softmax_probs(z))
        plan = PLANNERS[kind](m, reward, solver=solver, tol=1e-14, warm_start=False)
        return plan.q, plan.v
    assert torch.autograd.gradcheck(f, (logits,))


def test_probability_gradient_flows_through_a_batch_of_rewards():
    mdp = random_mdp(S=4, A=2, K=3, seed=7, discount=0.99)
    logits = rand(4, 2, 3, seed=8).requires_grad_()
    rewards = rand(3, 4, 2, seed=9)

    def f(z):
        plan = birl.soft_value_iteration(mdp.with_probabilities(softmax_probs(z)), rewards,
                                         warm_start=False)
        return plan.log_policy
    assert torch.autograd.gradcheck(f, (logits,))


def test_bus_likelihood_gradient_at_0_9999_matches_finite_differences():
    """The bus chain's choice log-likelihood in (cost, RC): gradient by the Newton adjoint
    against central differences of the (converged) likelihood."""
    mdp, _ = bus_chain()
    x = torch.arange(90, dtype=torch.float64)
    counts = torch.stack([200 - x, 1 + x / 10], -1)  # observed keep / replace counts

    def loglik(theta):
        r = torch.stack([-0.001 * theta[0] * x, -theta[1].expand(90)], -1)
        return (birl.soft_value_iteration(mdp, r).log_policy * counts).sum()
    theta = torch.tensor([2.3, 10.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(loglik(theta), theta)
    h = 1e-5
    with torch.no_grad():
        fd = torch.stack([(loglik(theta + h * e) - loglik(theta - h * e)) / (2 * h)
                          for e in torch.eye(2, dtype=torch.float64)])
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-6)


def test_gradcheck_occupancy_by_one_solve():
    mdp = random_mdp(S=4, A=2, seed=10, discount=0.95)
    reward = rand(2, 4, 2, seed=11).requires_grad_()

    def f(r):
        plan = birl.soft_value_iteration(mdp, r, solver="newton", warm_start=False)
        return birl.occupancy(mdp, plan, solver="newton")
    assert torch.autograd.gradcheck(f, (reward,))


def test_occupancy_solve_agrees_with_iteration_and_sums_to_the_horizon():
    mdp = random_mdp(S=6, A=3, seed=12, discount=0.99)
    plan = birl.soft_value_iteration(mdp, rand(2, 6, 3, seed=13))
    it = birl.occupancy(mdp, plan, solver="iterate", tol=1e-14)
    nk = birl.occupancy(mdp, plan, solver="newton")
    torch.testing.assert_close(nk, it, rtol=1e-11, atol=1e-11)
    mdp, r = bus_chain()
    occ = birl.occupancy(mdp, birl.soft_value_iteration(mdp, r))
    torch.testing.assert_close(occ.sum(), torch.tensor(1e4, dtype=torch.float64), rtol=1e-10,
                               atol=0)


def test_probabilities_that_require_grad_are_refused_where_not_differentiated():
    logits = rand(5, 3, 3, seed=14).requires_grad_()
    finite = random_mdp().replace(horizon=4).with_probabilities(softmax_probs(logits))
    with pytest.raises(ValueError, match="transition_probs requires grad.*horizon 4"):
        birl.soft_value_iteration(finite, rand(5, 3))
    with torch.no_grad():
        birl.soft_value_iteration(finite, rand(5, 3))
    mdp = random_mdp().with_probabilities(softmax_probs(logits))
    plan = birl.soft_value_iteration(mdp, rand(5, 3))
    with pytest.raises(ValueError, match="occupancy does not differentiate"):
        birl.occupancy(mdp, plan)


def test_with_probabilities_keeps_successors_and_detaches_its_operators():
    mdp = random_mdp()
    logits = rand(5, 3, 3, seed=15).requires_grad_()
    copy = mdp.with_probabilities(softmax_probs(logits))
    assert copy.successors is mdp.successors and copy.transition_probs.requires_grad
    v = rand(5, seed=16)
    assert not copy.expected_next(v).requires_grad
    torch.testing.assert_close(copy.expected_next(v),
                               (v[copy.successors] * softmax_probs(logits).detach()).sum(-1))
    assert all(op.grad_fn is None and not op.requires_grad for op in copy._operators)
    for seed in range(2):  # repeated evaluations, as in a posterior over the probabilities
        m = mdp.with_probabilities(softmax_probs(logits))
        birl.soft_value_iteration(m, rand(5, 3, seed=seed)).v.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().max() > 0


# ---------------------------------------------------------------------------- warm starts
def test_warm_start_gives_the_cold_answer_in_fewer_steps():
    mdp, r = bus_chain()
    birl.soft_value_iteration(mdp, r)
    warm = birl.soft_value_iteration(mdp, r * 1.01)
    cold = birl.soft_value_iteration(mdp, r * 1.01, warm_start=False)
    scale = cold.v.abs().max().item()
    torch.testing.assert_close(warm.v, cold.v, rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(warm.log_policy, cold.log_policy, rtol=0, atol=1e-10)
    assert warm.num_iters < cold.num_iters


def test_batch_shapes_with_the_same_number_of_rows_share_a_warm_start():
    """A MAP evaluates ``(1, S, A)`` rewards and then its per-demonstration likelihood at an
    ``(S, A)`` one: the second starts from the first's solution, not cold."""
    mdp, r = bus_chain()
    cold = birl.soft_value_iteration(mdp, r, warm_start=False)
    birl.soft_value_iteration(mdp, r[None])
    warm = birl.soft_value_iteration(mdp, r)
    assert warm.num_iters <= 2 < cold.num_iters
    torch.testing.assert_close(warm.v, cold.v, rtol=0, atol=1e-12 * cold.v.abs().max().item())


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_a_stale_warm_start_still_converges_to_the_right_answer(kind):
    """The cache holds the solution for a very different reward (other sign, 100x larger):
    Newton must still land on the fixed point of the new reward."""
    mdp = birl.envs.gridworld(size=4, discount=0.999, dtype=torch.float64)
    r = rand(mdp.n_states, mdp.n_actions, seed=17)
    PLANNERS[kind](mdp, -100 * r)
    warm = PLANNERS[kind](mdp, r)
    cold = PLANNERS[kind](mdp, r, warm_start=False)
    scale = cold.v.abs().max().item()
    torch.testing.assert_close(warm.v, cold.v, rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(warm.policy, cold.policy, rtol=0, atol=1e-10)


def test_warm_starts_are_kept_per_structure_and_forgotten_on_clear():
    cache = newton.WarmStarts(max_structures=2, max_tags=2)
    a, b, c = (torch.zeros(1, dtype=torch.long) for _ in range(3))
    cache.put(a, "x", torch.ones(2))
    cache.put(a, "y", torch.ones(2))
    cache.put(a, "z", torch.ones(2))
    assert cache.get(a, "x") is None and cache.get(a, "z") is not None  # oldest tag dropped
    cache.put(b, "x", torch.ones(2))
    cache.put(c, "x", torch.ones(2))
    assert cache.get(a, "z") is None and cache.get(c, "x") is not None  # oldest structure
    cache.put(c, "nan", torch.tensor([math.nan]))
    assert cache.get(c, "nan") is None                                   # never non-finite
    del c
    assert len(cache) == 1
    cache.clear()
    assert cache.get(b, "x") is None


# ---------------------------------------------------------------------------- the choice
def test_auto_picks_newton_near_one_and_iteration_at_small_discounts():
    mdp = random_mdp()
    assert choose_solver(mdp.replace(discount=0.0)) == "iterate"
    assert choose_solver(mdp.replace(discount=0.5)) == "iterate"
    assert choose_solver(mdp.replace(discount=0.9)) == "iterate"
    assert choose_solver(mdp.replace(discount=0.99)) == "newton"
    assert choose_solver(mdp.replace(discount=0.999)) == "newton"
    # the rule is on the sweeps iteration needs, log(tol) / log(gamma) >= NEWTON_MIN_SWEEPS
    gamma = math.exp(math.log(1e-10) / bellman.NEWTON_MIN_SWEEPS)
    assert choose_solver(mdp.replace(discount=gamma * 0.9999)) == "iterate"
    assert choose_solver(mdp.replace(discount=gamma * 1.0001)) == "newton"
    assert choose_solver(mdp.replace(discount=0.97), tol=1e-5) == "iterate"
    assert choose_solver(mdp.replace(discount=0.97).to(dtype=torch.float32)) == "iterate"
    assert choose_solver(mdp.replace(discount=0.97)) == "newton"  # float64: tol 1e-10
    assert choose_solver(mdp.replace(discount=0.5), solver="newton") == "newton"
    assert choose_solver(mdp.replace(discount=0.999), solver="iterate") == "iterate"


def test_auto_keeps_iterating_where_factors_would_fill_in():
    """Thousands of states with random successors: an LU of I - gamma P_pi fills in, and
    Newton pays only where iteration needs many more sweeps."""
    mdp = random_mdp(S=2048, A=4, K=4, seed=18)
    assert newton.factorization_cost(mdp.successors, mdp.transition_probs)[1]  # dense
    assert choose_solver(mdp.replace(discount=0.98)) == "iterate"
    assert choose_solver(mdp.replace(discount=0.9999)) == "newton"
    grid = birl.envs.gridworld(size=48, discount=0.98)  # local moves: a sparse LU is cheap
    assert not newton.factorization_cost(grid.successors, grid.transition_probs)[1]
    assert choose_solver(grid) == "newton"


def test_plans_record_which_solver_ran(monkeypatch):
    calls = []
    real = newton.newton_fixed_point
    monkeypatch.setattr(newton, "newton_fixed_point",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    mdp = random_mdp()
    birl.soft_value_iteration(mdp.replace(discount=0.9), rand(5, 3))
    assert calls == []
    birl.soft_value_iteration(mdp.replace(discount=0.999), rand(5, 3))
    assert calls == [1]


# ---------------------------------------------------------------------------- threads
def test_small_solves_run_on_one_thread_and_restore_the_setting(monkeypatch):
    seen = []
    real = newton.newton_fixed_point

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return real(*a, **k)
    monkeypatch.setattr(newton, "newton_fixed_point", spy)
    mdp, r = bus_chain()
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        plan = birl.soft_value_iteration(mdp, r.requires_grad_())
        assert torch.get_num_threads() == 2
        birl.soft_value_iteration(mdp, r, threads=2)
        plan.v.sum().backward()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
    assert seen == [1, 2]


def test_thread_context_nests_and_restores():
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with bellman.torch_threads(1):
            assert torch.get_num_threads() == 1
            with bellman.torch_threads(1):
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with bellman.torch_threads(None):
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), bellman.torch_threads(1):
            raise RuntimeError
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------------------- convergence
@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_newton_out_of_iterations_warns(kind):
    mdp, r = bus_chain(discount=0.999)
    with pytest.warns(ConvergenceWarning, match=r"Newton-Kantorovich did not converge: "
                                                  r"residual .* after 2 iterations"):
        plan = PLANNERS[kind](mdp, r, max_iters=2, warm_start=False)
    assert plan.num_iters == 2 and plan.residual > 1e-6


def test_non_finite_reward_warns_instead_of_looping():
    mdp, r = bus_chain(discount=0.999)
    r = r.clone()
    r[3, 0] = math.nan
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        plan = birl.soft_value_iteration(mdp, r, check=False)
    assert plan.num_iters < 30


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("fn", [birl.soft_value_iteration, birl.value_iteration])
def test_bad_solver_names_raise(fn):
    mdp, r = bus_chain()
    with pytest.raises(ValueError, match=r"solver is 'fast', expected one of \('auto', "
                                         r"'iterate', 'newton'\)"):
        fn(mdp, r, solver="fast")
    with pytest.raises(TypeError, match="solver must be a string"):
        fn(mdp, r, solver=1)
    with pytest.raises(ValueError, match="solver='newton' applies to discounted MDPs only"):
        fn(mdp.replace(horizon=3), r, solver="newton")
    with pytest.raises(ValueError, match="solver is 'fast'"):
        birl.occupancy(mdp, birl.soft_value_iteration(mdp, r), solver="fast")


@pytest.mark.parametrize("threads, error", [(0, ValueError), (-1, ValueError),
                                            (1.5, TypeError), (True, TypeError)])
def test_bad_threads_raise(threads, error):
    mdp, r = bus_chain()
    with pytest.raises(error, match="threads"):
        birl.soft_value_iteration(mdp, r, threads=threads)


def test_bad_probabilities_raise_naming_the_entry():
    mdp = random_mdp()
    good = mdp.transition_probs
    with pytest.raises(ValueError, match=r"prob must have shape \(5, 3, 3\) like successors, "
                                         r"got \(5, 3, 2\)"):
        mdp.with_probabilities(good[..., :2])
    bad = good.clone()
    bad[2, 1, 0] = -0.1
    with pytest.raises(ValueError, match=r"prob\[2, 1, 0\] is -0.1, expected a probability"):
        mdp.with_probabilities(bad)
    bad = good.clone()
    bad[3, 2] *= 0.9
    with pytest.raises(ValueError, match=r"prob\[3, 2\] sums to 0.9, expected 1"):
        mdp.with_probabilities(bad)
    bad = good.clone()
    bad[0, 0, 1] = math.nan
    with pytest.raises(ValueError, match=r"prob\[0, 0, 1\] is nan"):
        mdp.with_probabilities(bad)
    with pytest.raises(TypeError, match="prob must be an array of numbers"):
        mdp.with_probabilities("uniform")


def test_value_iteration_stops_at_once_on_a_non_finite_reward():
    """Plain iteration at gamma = 0.9999 would sweep 10^5 times on a NaN; it stops at the first
    non-finite update and says why."""
    mdp, reward = bus_chain(S=10, discount=0.9999)
    reward = reward.clone()
    reward[3, 0] = float("nan")
    with pytest.warns(ConvergenceWarning, match="not finite after 1 iterations"):
        plan = birl.soft_value_iteration(mdp, reward, solver="iterate", max_iters=200_000,
                                         check=False)
    assert plan.num_iters == 1
