"""MCMC in value space (bayesirl.inference.value_space): the Bellman map from values to rewards
inverts
planning, the density is the reward posterior times the map's Jacobian (soft and Boltzmann),
and infer() picks value space only where it is exact. Its draws against quadrature:
tests/oracles/test_exact.py; the refracting NUTS kernel: tests/test_refraction.py."""

import importlib
import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
from bayesirl.inference.target import Target
from bayesirl.inference.value_space import ValueSpaceTarget, ineligible
from bayesirl.posterior.diagnostics import InferenceWarning

LIKELIHOODS = ["soft", "boltzmann"]


def _problem(n_actions=None, beta=2.0, likelihood="soft"):
    mdp = birl.envs.gridworld(size=4, slip=0.2, block=2, seed=3, discount=0.8,
                              dtype=torch.float64)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, 2 * mdp.reward), n=6, seed=1,
                          length=8)
    model = birl.TabularReward(mdp.n_states, n_actions and mdp.n_actions,
                               prior=dist.Normal(0.5, 3.0))
    return Target(mdp, demos, model, likelihood, beta)


def _start(target):
    g = torch.Generator().manual_seed(1)
    shape = target.reward_model.shape
    return torch.randn(shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("n_actions", [None, True], ids=["state", "state-action"])
def test_bellman_map_inverts_planning(n_actions, likelihood):
    """Rewards of random values, planned again (soft or hard value iteration), give those
    values back; the start values give the start reward back."""
    target = _problem(n_actions, likelihood=likelihood)
    theta0 = _start(target)
    vs = ValueSpaceTarget(target, theta0)
    assert torch.allclose(vs.constrain(vs.init_unconstrained())["theta"], theta0, atol=1e-8)
    w = torch.randn(3, vs.chol.shape[0], generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    theta = vs.constrain({"w": w})["theta"]                                 # (3, ...)
    assert theta.shape == (3, *target.reward_model.shape)
    for i in range(3):
        assert torch.allclose(vs._values_of(theta[i]), vs.params_of(w[i]), atol=1e-8)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("n_actions", [None, True], ids=["state", "state-action"])
def test_density_is_reward_posterior_times_jacobian(n_actions, likelihood):
    """-potential(w) = log p(r) + log p(demos | r) + log |det dr/dV| (+ a constant in w),
    with the reward-space density from Target and the Jacobian from autograd (under
    Boltzmann the potential takes it from the cached greedy-policy inverse instead)."""
    target = _problem(n_actions, beta=2.0, likelihood=likelihood)
    vs = ValueSpaceTarget(target, _start(target))
    gen = torch.Generator().manual_seed(3)
    values = []
    for _ in range(3):
        w = 0.7 * torch.randn(vs.chol.shape[0], generator=gen, dtype=torch.float64)
        p = vs.params_of(w).reshape(-1)
        theta = vs.constrain({"w": w})["theta"]
        reward_space = -target.potential({"theta": theta}, jacobian=False)
        jac = torch.autograd.functional.jacobian(
            lambda q: vs._bellman(q.reshape(vs.v0.shape))[0].reshape(-1), p)
        log_det = torch.linalg.slogdet(jac)[1]
        values.append(float(-vs.potential({"w": w}) - reward_space - log_det))
    np.testing.assert_allclose(values, values[0], atol=1e-8)  # constant: -log det L


def test_whitening_makes_the_gauss_newton_precision_the_identity():
    target = _problem()
    vs = ValueSpaceTarget(target, _start(target))
    w = vs.init_unconstrained()["w"].requires_grad_()
    hess = torch.autograd.functional.hessian(lambda x: vs.potential({"w": x}), w)
    # the exact Hessian adds curvature the Gauss-Newton form leaves out (the log-sum-exp in
    # the reward, the log-determinant): close to the identity, not equal
    eig = torch.linalg.eigvalsh(hess)
    assert 0.3 < float(eig.min()) and float(eig.max()) < 3.0, eig


def test_greedy_log_det_updates_match_fresh_determinants():
    """The jump of switching one state's action (matrix determinant lemma) and the
    Sherman-Morrison-updated inverses, over a walk of 2.5 x _REFRESH switches (past two
    refreshes), agree with slogdet of I - gamma P_pi computed afresh."""
    from bayesirl.inference.value_space import _REFRESH, _GreedyLogDet, _policy_matrix
    mdp = _problem().mdp
    jump = _GreedyLogDet(mdp)
    gen = np.random.default_rng(0)
    S, A = mdp.n_states, mdp.n_actions

    def fresh(policy):
        pi = torch.nn.functional.one_hot(torch.as_tensor(policy), A).double()
        eye = torch.eye(S, dtype=torch.float64)
        return -float(torch.linalg.slogdet(eye - mdp.discount * _policy_matrix(mdp, pi))[1])

    policy = gen.integers(0, A, S)
    for _ in range(5 * _REFRESH // 2):
        s, a = int(gen.integers(S)), int(gen.integers(A))
        delta, commit = jump.change(policy, s, a)
        before = jump.value(policy)
        policy = commit()
        np.testing.assert_allclose(before + delta, fresh(policy), atol=1e-9)
        np.testing.assert_allclose(jump.value(policy), fresh(policy), atol=1e-9)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("n_actions", [None, True], ids=["state", "state-action"])
def test_value_space_map_is_the_reward_map(n_actions, likelihood):
    """Without the Jacobian the value-space potential is the reward posterior's at the reward
    of w (any w), so its minimiser, found with no planning per gradient, is the reward-space
    MAP (soft: smooth, to 1e-4; Boltzmann: L-BFGS stops at a kink of the max, to 1e-3 in the
    objective)."""
    from bayesirl.inference.map import fit_map as _fit_map
    target = _problem(n_actions, likelihood=likelihood)
    vs = ValueSpaceTarget(target, torch.zeros(target.reward_model.shape, dtype=torch.float64))
    gen = torch.Generator().manual_seed(6)
    for _ in range(3):
        w = torch.randn(vs.chol.shape[0], generator=gen, dtype=torch.float64)
        torch.testing.assert_close(vs.potential({"w": w}, jacobian=False),
                                   target.potential(vs.constrain({"w": w}), jacobian=False))
    u, loss = _fit_map(vs, vs.init_unconstrained(), jacobian=False)
    theta, reward_loss = _fit_map(target, target.init_unconstrained())
    if likelihood == "soft":
        torch.testing.assert_close(vs.constrain(u)["theta"], theta["theta"], rtol=0,
                                   atol=1e-4)
    assert abs(loss - reward_loss) < 1e-3 * abs(reward_loss)


@pytest.mark.parametrize("n_actions", [None, True], ids=["state", "state-action"])
def test_fused_boltzmann_potential_equals_autograd(n_actions):
    """The NumPy potential and gradient (Boltzmann, Normal prior) equal the autograd path's
    at points spread over many greedy policies; a Laplace prior stays on autograd."""
    import copy
    target = _problem(n_actions, likelihood="boltzmann")
    vs = ValueSpaceTarget(target, _start(target))
    assert vs.fused is not None
    plain = copy.copy(vs)
    plain.fused = None
    gen = torch.Generator().manual_seed(8)
    policies = set()
    for _ in range(6):
        w = 2.0 * torch.randn(vs.chol.shape[0], generator=gen, dtype=torch.float64)
        policies.add(vs.regions.region(w.numpy()).tobytes())
        values, grads = [], []
        for t in (vs, plain):
            x = w.clone().requires_grad_()
            u = t.potential({"w": x})
            values.append(u)
            grads.append(torch.autograd.grad(u, x)[0])
        torch.testing.assert_close(values[0], values[1], rtol=0, atol=1e-9)
        torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-9)
    assert len(policies) == 6
    laplace = Target(target.mdp, target.demos, birl.TabularReward(
        target.mdp.n_states, n_actions and target.mdp.n_actions, prior=dist.Laplace(0.0, 3.0)),
        "boltzmann", 2.0)
    assert ValueSpaceTarget(laplace, _start(target)).fused is None
    assert ValueSpaceTarget(_problem(n_actions), _start(target)).fused is None  # soft


def test_ledoit_wolf_beats_the_sample_covariance_with_few_draws():
    """40 draws in 30 dimensions: the shrunk estimate is positive definite and nearer the true
    covariance (Frobenius) than the singular-ish sample covariance; 20000 draws in 3
    dimensions: hardly shrunk at all."""
    from bayesirl.inference.value_space import _ledoit_wolf
    gen = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.5, 2.0, 30, dtype=torch.float64)
    mix = torch.linalg.qr(torch.randn(30, 30, generator=gen, dtype=torch.float64))[0]
    root = mix * scale
    true = root @ root.T
    x = torch.randn(40, 30, generator=gen, dtype=torch.float64) @ root.T
    xc = x - x.mean(0)
    sample = xc.T @ xc / 40
    shrunk = _ledoit_wolf(x)
    assert float(torch.linalg.eigvalsh(shrunk).min()) > 0.05
    assert torch.dist(shrunk, true) < 0.7 * torch.dist(sample, true)
    x = torch.randn(20000, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2., 3.])
    xc = x - x.mean(0)
    torch.testing.assert_close(_ledoit_wolf(x), xc.T @ xc / 20000, rtol=0, atol=2e-3)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_rewhitened_is_the_same_posterior(likelihood):
    """Re-whitening by draws changes coordinates only: whiten inverts params_of, the
    potential at the same values moves by one constant (log det of the change of L), and
    the Boltzmann regions at the same values are the same greedy policy."""
    target = _problem(likelihood=likelihood)
    vs = ValueSpaceTarget(target, _start(target))
    gen = torch.Generator().manual_seed(4)
    n = vs.chol.shape[0]
    mix = torch.randn(n, n, generator=gen, dtype=torch.float64) / n ** 0.5
    pilot = 1.0 + torch.randn(60, n, generator=gen, dtype=torch.float64) @ (torch.eye(n) + mix)
    new = vs.rewhitened(pilot)
    torch.testing.assert_close(new.v0, vs.params_of(pilot.mean(0)))
    shifts = []
    for _ in range(4):
        w = torch.randn(n, generator=gen, dtype=torch.float64)
        p = vs.params_of(w)
        w_new = new.whiten(p)
        torch.testing.assert_close(new.params_of(w_new), p)
        torch.testing.assert_close(vs.whiten(p), w)
        shifts.append(float(new.potential({"w": w_new}) - vs.potential({"w": w})))
        if vs.boltzmann:
            np.testing.assert_array_equal(new.regions.region(w_new.numpy()),
                                          vs.regions.region(w.numpy()))
    log_det_change = float(torch.linalg.slogdet(torch.linalg.solve(vs.chol, new.chol))[1])
    np.testing.assert_allclose(shifts, shifts[0], atol=1e-8)
    assert abs(log_det_change) > 1  # the pilot's covariance is not the old whitening's
    torch.testing.assert_close(vs.whiten(vs.params_of(pilot[:3])), pilot[:3])


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_value_space_warmup_rewhitens_once_per_chain(method, monkeypatch):
    """A chain with warmup >= MIN_PILOT re-whitens after two thirds of its warmup, on the
    second third's draws, and adapts no mass matrix after; one with less warmup never
    re-whitens; Ctrl-C during that pilot returns nothing."""
    mcmc_module = importlib.import_module("bayesirl.inference.mcmc")
    pyro_nuts = importlib.import_module("bayesirl.inference.pyro_nuts")
    target = _problem()
    mdp, demos, model = target.mdp, target.demos, target.reward_model
    pilots = []
    rewhitened = ValueSpaceTarget.rewhitened

    def recording(self, w):
        pilots.append(w.shape)
        return rewhitened(self, w)

    kernels = []
    make_kernel = mcmc_module._kernel

    def recording_kernel(target, method, options, params, warmup):
        kernels.append((warmup, options.get("adapt_mass_matrix", True)))
        return make_kernel(target, method, options, params, warmup)

    monkeypatch.setattr(ValueSpaceTarget, "rewhitened", recording)
    monkeypatch.setattr(mcmc_module, "_kernel", recording_kernel)
    kw = dict(rationality=2.0, num_samples=5, num_chains=2, parallel=False, method=method,
              num_steps=3)
    post = _run(mdp, demos, model, warmup=mcmc_module.MIN_PILOT, **kw)
    n = mdp.n_states
    pilot = 2 * mcmc_module.MIN_PILOT // 3
    assert pilots == [(pilot - pilot // 2, n)] * 2
    assert kernels == [(pilot, True), (mcmc_module.MIN_PILOT - pilot, False)] * 2
    assert post.samples["theta"].shape == (10, n)
    pilots.clear()
    _run(mdp, demos, model, warmup=mcmc_module.MIN_PILOT - 1, **kw)
    assert pilots == []
    step = pyro_nuts.Recorder.step
    calls = {"n": 0}

    def interrupting(self, params):
        calls["n"] += 1
        if calls["n"] > 10:  # inside the pilot
            raise KeyboardInterrupt
        return step(self, params)

    monkeypatch.setattr(pyro_nuts.Recorder, "step", interrupting)
    with pytest.raises(KeyboardInterrupt, match="before any draw"):
        _run(mdp, demos, model, warmup=mcmc_module.MIN_PILOT, **kw)


@pytest.mark.parametrize("n_actions", [None, True], ids=["state", "state-action"])
def test_boltzmann_regions_are_the_greedy_policy(n_actions):
    """The region of w is a greedy action of the values at w, in every state; actions whose
    transitions copy another's are left out of the state-reward regions."""
    target = _problem(n_actions, likelihood="boltzmann")
    vs = ValueSpaceTarget(target, _start(target))
    gen = torch.Generator().manual_seed(5)
    for _ in range(5):
        w = torch.randn(vs.chol.shape[0], generator=gen, dtype=torch.float64)
        p = vs.params_of(w)
        scores = vs.mdp.expected_next(p) if n_actions is None else p
        region = torch.as_tensor(vs.regions.region(w.numpy()))
        chosen = scores.gather(-1, region[:, None])[:, 0]
        torch.testing.assert_close(chosen, scores.max(-1).values, rtol=0, atol=1e-12)
    if n_actions is None:
        P = vs.mdp.transition_matrix()
        left_out = torch.as_tensor(vs.regions.invalid)
        assert left_out.any()  # the 4x4 gridworld's walls make some moves copies
        for s in range(vs.mdp.n_states):
            for a in range(vs.mdp.n_actions):  # copies up to rounding: 1 - 0.1 vs 0.8 + 0.1
                copy = any(torch.allclose(P[s, a], P[s, b], rtol=0, atol=1e-12)
                           for b in range(a))
                assert bool(left_out[s, a]) == copy, (s, a)


def test_ineligible_names_the_reason():
    target = _problem()
    assert ineligible(target) is None
    mdp, demos = target.mdp, target.demos
    model = target.reward_model
    assert ineligible(Target(mdp, demos, model, "boltzmann", 1.0)) is None
    finite = birl.envs.gridworld(size=4, slip=0.2, block=2, seed=3, horizon=5)
    assert "only method='nuts'" in ineligible(Target(mdp, demos, model, "boltzmann", 1.0),
                                              "hmc")
    assert ineligible(target, "hmc") is None
    cases = {
        "finite-horizon": Target(finite, demos, model, "soft", 1.0),
        "LinearReward": Target(mdp, demos, birl.LinearReward(mdp.features), "soft", 1.0),
        "rationality has a prior": Target(mdp, demos, model, "soft", dist.LogNormal(0., 1.)),
        "no finite variance": Target(mdp, demos, birl.TabularReward(
            mdp.n_states, prior=dist.Cauchy(0.0, 1.0)), "soft", 1.0),
        "support": Target(mdp, demos, birl.TabularReward(
            mdp.n_states, prior=dist.HalfNormal(1.0)), "soft", 1.0),
    }
    for phrase, t in cases.items():
        assert phrase in ineligible(t), (phrase, ineligible(t))


def test_ineligible_beyond_the_dense_log_determinant(monkeypatch):
    from bayesirl.inference import value_space as _value_space
    monkeypatch.setattr(_value_space, "_MAX_STATES", 15)
    assert "the MDP has 16 states" in ineligible(_problem())


def _run(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        return birl.infer(*args, progress=False, **kwargs)


def test_infer_space_option():
    target = _problem()
    mdp, demos, model = target.mdp, target.demos, target.reward_model
    auto = _run(mdp, demos, model, num_samples=20, warmup=20, num_chains=1, rationality=2.0)
    assert auto.settings["space"] == "value"
    assert auto.samples["theta"].shape == (20, mdp.n_states)
    assert torch.isfinite(auto.log_lik).all()
    # reward space plans a discounted fixed point per gradient: a few draws, no MAP fit
    kw = dict(num_samples=2, warmup=2, num_chains=1, map_init=False)
    assert _run(mdp, demos, model, space="reward", **kw).settings["space"] == "reward"
    boltzmann = _run(mdp, demos, model, likelihood="boltzmann", num_samples=20, warmup=20,
                     num_chains=1)
    assert boltzmann.settings["space"] == "value"
    assert torch.isfinite(boltzmann.log_lik).all()
    # the refracting kernel's crossings per draw, beside the tree's leapfrog steps
    crossed = boltzmann.sample_stats["n_refracted"] + boltzmann.sample_stats["n_reflected"]
    assert crossed.shape == (1, 20) and int(crossed.sum()) > 0
    assert "n_refracted" in boltzmann.to_arviz().sample_stats
    assert "n_refracted" not in auto.sample_stats
    hmc = _run(mdp, demos, model, likelihood="boltzmann", method="hmc", num_steps=2, **kw)
    assert hmc.settings["space"] == "reward"
    with pytest.raises(ValueError, match="space='value' does not apply: the likelihood is "
                                         "Boltzmann"):
        _run(mdp, demos, model, likelihood="boltzmann", method="hmc", space="value", **kw)
    with pytest.raises(ValueError, match="space is 'values', expected one of"):
        _run(mdp, demos, model, space="values", **kw)


def test_boltzmann_parallel_chains_equal_sequential_chains():
    """The refracting kernel's numpy copies survive the pickling that sends the target to a
    chain's process (which moves tensor storage to shared memory, leaving numpy views of it
    dangling): spawned chains draw exactly what sequential ones draw."""
    target = _problem(likelihood="boltzmann")
    kw = dict(likelihood="boltzmann", num_samples=10, warmup=10, num_chains=2, seed=1)
    seq = _run(target.mdp, target.demos, target.reward_model, parallel=False, **kw)
    par = _run(target.mdp, target.demos, target.reward_model, parallel=True, **kw)
    assert seq.settings["space"] == "value"
    assert torch.equal(seq.samples["theta"], par.samples["theta"])
