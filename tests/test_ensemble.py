"""ChEES-HMC chains in lockstep (bayesirl.inference.ensemble) and infer(chain_method=...).

Statistical checks scale their tolerance with the Monte Carlo standard error (ArviZ's MCSE of
the ensemble's draws): |estimate - truth| / MCSE < 4 for every moment, Bonferroni over the
moments keeping a correct sampler's false-alarm rate near 1e-3 per test; the seeds are fixed,
so the tests are deterministic.
"""

import concurrent.futures
import math
import multiprocessing
import sys
import warnings

import arviz as az
import numpy as np
import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
from bayesirl.inference import ensemble
from bayesirl.inference.ensemble import (
    AUTO_MIN_CHAINS,
    EnsembleOptions,
    _Metric,
    _trajectory,
    _value_and_grad,
    chees_hmc,
    halton,
    run_vectorized,
    use_vectorized,
    warmup_windows,
)
from bayesirl.inference.facade import UnusedOptionWarning
from bayesirl.inference.target import build_target
from bayesirl.posterior.diagnostics import InferenceWarning
from bayesirl.testing import tiny_chain_mdp


def gaussian(d, seed=0, spread=1.0):
    """``(mean, cov, U)``: a correlated Gaussian with scales from 10^-spread to 10^spread."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-spread, spread, d)
    a = torch.randn(d, d, generator=g)
    corr = a @ a.T + d * torch.eye(d)
    corr = corr / corr.diagonal().sqrt()[:, None] / corr.diagonal().sqrt()[None]
    cov = scales[:, None] * corr * scales[None]
    mean = torch.randn(d, generator=g) * scales
    prec = torch.linalg.inv(cov)

    def U(q):
        x = q - mean
        return 0.5 * ((x @ prec) * x).sum(-1)

    return mean, cov, U


def within_mcse(draws, mean, cov, z=4.0):
    """Every first and second moment of ``draws: (C, n, d)`` within ``z`` MCSE of the truth."""
    x = draws.numpy()
    m, c = mean.numpy(), cov.numpy()
    d = x.shape[-1]
    worst = []
    for i in range(d):
        mc = float(np.ravel(az.mcse(x[..., i]))[0])
        worst.append(("mean", i, abs(x[..., i].mean() - m[i]) / mc))
        for j in range(i, d):
            prod = (x[..., i] - m[i]) * (x[..., j] - m[j])
            mc = float(np.ravel(az.mcse(prod))[0])
            worst.append(("cov", (i, j), abs(prod.mean() - c[i, j]) / mc))
    bad = [w for w in worst if not w[2] < z]
    assert not bad, f"moments beyond {z} MCSE: {bad}"
    return max(w[2] for w in worst)


# ---------------------------------------------------------------------------- pieces
def test_halton_points_fill_the_unit_interval_evenly():
    assert [halton(n) for n in range(1, 8)] == [0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]
    points = sorted(halton(n) for n in range(1, 2**6))
    assert np.allclose(np.diff(points), 2.0**-6)
    assert halton(5, base=3) == pytest.approx(2 / 3 + 1 / 9)


@pytest.mark.parametrize("warmup", [20, 100, 150, 300, 1000, 5000])
def test_warmup_windows_double_and_leave_both_buffers(warmup):
    first, ends = warmup_windows(warmup)
    assert ends and 0 < first < ends[0] < warmup
    sizes = np.diff([first] + ends)
    assert (sizes[1:-1] == 2 * sizes[:-2]).all()  # doubling, the last one stretched
    assert warmup - ends[-1] == (50 if warmup >= 150 else int(0.1 * warmup))
    assert first == (75 if warmup >= 150 else int(0.15 * warmup))


def test_short_warmup_adapts_no_mass_matrix():
    assert warmup_windows(19) == (19, [])
    assert warmup_windows(0) == (0, [])


@pytest.mark.parametrize("dense", [False, True])
def test_leapfrog_keeps_energy_and_runs_back_to_its_start(dense):
    """Velocity Verlet under either metric: small energy error, time-reversible."""
    mean, cov, U = gaussian(4, spread=0.5)
    inv_mass = cov if dense else cov.diagonal()
    metric = _Metric(inv_mass)
    g = torch.Generator().manual_seed(1)
    q0 = mean + torch.randn(5, 4, generator=g) @ torch.linalg.cholesky(cov).T
    p0 = metric.momentum(torch.randn(5, 4, generator=g))
    u0, g0 = _value_and_grad(U, q0)
    q1, p1, u1, g1, bad = _trajectory(lambda q: _value_and_grad(U, q), q0, p0, u0, g0, 0.05,
                                      metric, 40)
    assert not bad.any()
    h0, h1 = u0 + metric.kinetic(p0), u1 + metric.kinetic(p1)
    assert (h1 - h0).abs().max() < 1e-2
    q2, p2, *_ = _trajectory(lambda q: _value_and_grad(U, q), q1, -p1, u1, g1, 0.05, metric, 40)
    assert torch.allclose(q2, q0, atol=1e-10) and torch.allclose(-p2, p0, atol=1e-10)


@pytest.mark.parametrize("dense", [True, False], ids=["dense", "diagonal"])
def test_momentum_has_the_mass_matrix_as_covariance_and_whitening_unit_scale(dense):
    """Both maps are linear, ``x -> x @ B`` with ``B`` the map of the identity's rows, so the
    covariances they give are exact: ``B^T B`` for standard normal noise (the momentum's: the
    mass matrix, the inverse of the metric's covariance) and ``B^T cov B`` for a draw of
    covariance ``cov`` (the whitened one: the identity)."""
    _, cov, _ = gaussian(3)
    if not dense:
        cov = cov.diagonal().clone()
    metric = _Metric(cov)
    full = cov if dense else torch.diag(cov)
    eye = torch.eye(3, dtype=full.dtype)
    momentum, whiten = metric.momentum(eye), metric.whiten(eye)
    torch.testing.assert_close(momentum.T @ momentum, torch.linalg.inv(full), rtol=1e-10,
                               atol=1e-12)
    torch.testing.assert_close(whiten.T @ full @ whiten, eye, rtol=1e-10, atol=1e-12)
    noise = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=full.dtype)
    torch.testing.assert_close(metric.momentum(noise), noise @ momentum)  # linear, as assumed
    torch.testing.assert_close(metric.whiten(noise), noise @ whiten)


def test_a_chain_whose_potential_stops_being_finite_stops_at_its_start():
    def U(q):  # a wall at q = 1 for the first coordinate
        return torch.where(q[:, 0] < 1.0, 0.5 * (q * q).sum(-1), torch.inf)

    metric = _Metric(torch.ones(2))
    q0 = torch.tensor([[0.0, 0.0], [0.9, 0.0]])
    p0 = torch.tensor([[0.1, 0.0], [1.0, 0.0]])
    u0, g0 = _value_and_grad(U, q0)
    q, p, u, g, bad = _trajectory(lambda x: _value_and_grad(U, x), q0, p0, u0, g0, 0.2, metric,
                                  5)
    assert bad.tolist() == [False, True]
    assert torch.equal(q[1], q0[1]) and u[1] == u0[1]
    assert q[0, 0] > 0.05  # the other chain moved on


# ---------------------------------------------------------------------------- the sampler
def test_chees_recovers_a_gaussians_mean_and_covariance_within_mcse():
    mean, cov, U = gaussian(3)
    init = mean + torch.randn(16, 3, generator=torch.Generator().manual_seed(2))
    run = chees_hmc(U, init, 150, 150, seed=0, progress=False)
    assert run.draws.shape == (16, 150, 3)
    within_mcse(run.draws, mean, cov)
    assert set(run.stats) == {"acceptance_rate", "step_size", "n_steps", "diverging", "energy",
                              "lp"}
    assert all(v.shape == (16, 150) for v in run.stats.values())
    assert not run.stats["diverging"].any()
    assert run.inv_mass.shape == (3,) and run.trajectory_length >= run.step_size
    # the adapted inverse mass is the posterior's variance
    assert torch.allclose(run.inv_mass, cov.diagonal(), rtol=0.3)


@pytest.mark.slow
@pytest.mark.parametrize("dense", [False, True])
def test_chees_recovers_a_badly_scaled_gaussian_within_mcse(dense):
    """Ten coordinates with scales from 0.01 to 100 and correlations: the windowed mass
    matrix whitens them; efficiency per gradient is that of a well-tuned HMC."""
    mean, cov, U = gaussian(10, seed=3, spread=2.0)
    init = mean + torch.randn(64, 10, generator=torch.Generator().manual_seed(4))
    run = chees_hmc(U, init, 500, 500, seed=1, progress=False, dense_mass=dense)
    z = within_mcse(run.draws, mean, cov)
    ess = min(float(az.ess(run.draws[..., i].numpy())) for i in range(10))
    steps = float(run.stats["n_steps"][0].double().mean())
    print(f"\ndense={dense}: worst |error|/MCSE {z:.2f}; min ESS {ess:.0f} of "
          f"{64 * 500} draws; {steps:.1f} leapfrog steps per draw; step size "
          f"{run.step_size:.3g}, trajectory length {run.trajectory_length:.3g}")
    assert ess > 0.1 * 64 * 500


def test_same_seed_same_draws_other_seed_other_draws():
    mean, _, U = gaussian(2)
    init = mean + torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    a = chees_hmc(U, init, 10, 30, seed=5, progress=False)
    b = chees_hmc(U, init, 10, 30, seed=5, progress=False)
    c = chees_hmc(U, init, 10, 30, seed=6, progress=False)
    assert torch.equal(a.draws, b.draws) and not torch.equal(a.draws, c.draws)


def interrupted_after(U, calls: int):
    """``U`` that raises KeyboardInterrupt (Ctrl-C) once it has been called ``calls`` times."""
    count = 0

    def potential(q):
        nonlocal count
        count += 1
        if count > calls:
            raise KeyboardInterrupt
        return U(q)

    return potential


def test_an_interrupt_while_sampling_keeps_the_draws_made():
    mean, _, U = gaussian(2)
    init = mean + torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    run = chees_hmc(interrupted_after(U, 400), init, 10_000, 20, seed=0, progress=False)
    assert run.interrupted and 0 < run.draws.shape[1] < 10_000
    assert all(v.shape == (4, run.draws.shape[1]) for v in run.stats.values())
    with pytest.raises(KeyboardInterrupt, match="before any draw"):
        chees_hmc(interrupted_after(U, 5), init, 10, 100, seed=0, progress=False)


def test_a_ctrl_c_at_any_line_leaves_as_many_stats_as_draws():
    """A Ctrl-C lands between any two lines (bytecodes) of the loop: raised in turn at every
    line chees_hmc runs (a trace function raising in the traced frame), the run either ends
    with KeyboardInterrupt or returns every statistic as long as its draws. Recording a draw,
    then its statistics one by one, once left the draws one longer (or no stats to stack)."""
    code = chees_hmc.__code__
    init = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))

    def run(at):
        """The run interrupted at its ``at``-th line (never: None) and how many lines ran."""
        lines = 0

        def local(frame, event, arg):
            nonlocal lines
            if event == "line":
                lines += 1
                if lines == at:
                    raise KeyboardInterrupt
            return local

        previous = sys.gettrace()
        sys.settrace(lambda frame, event, arg: local if frame.f_code is code else None)
        try:
            return chees_hmc(lambda q: 0.5 * (q * q).sum(-1), init, 2, 0, progress=False), lines
        except KeyboardInterrupt:
            return None, lines
        finally:
            sys.settrace(previous)

    _, total = run(None)
    returned = 0
    for at in range(1, total + 1):
        out, _ = run(at)
        if out is not None:
            returned += 1
            assert out.interrupted
            n = out.draws.shape[1]
            assert {k: v.shape for k, v in out.stats.items()} == {
                k: (3, n) for k in out.stats}, f"interrupted at line {at} of {total}"
    assert returned > 10  # most lines after the first draw return the draws made


@pytest.mark.parametrize("kwargs, match", [
    ({"init": torch.zeros(1, 2)}, r"init has shape \(1, 2\), expected \(chains, d\)"),
    ({"init": torch.zeros(4)}, r"init has shape \(4,\)"),
    ({"num_samples": 0}, "num_samples is 0"),
    ({"warmup": -1}, "warmup is -1"),
    ({"max_leapfrog_steps": 0}, "max_leapfrog_steps is 0"),
    ({"target_accept": 1.0}, "target_accept is 1.0"),
    ({"learning_rate": True}, "learning_rate is True"),
])
def test_bad_sampler_arguments(kwargs, match):
    args = {"potential_fn": lambda q: (q * q).sum(-1), "init": torch.zeros(4, 2),
            "num_samples": 5, "warmup": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        chees_hmc(args.pop("potential_fn"), args.pop("init"), args.pop("num_samples"),
                  args.pop("warmup"), progress=False, **args)


def test_a_potential_that_does_not_batch_is_refused():
    with pytest.raises(ValueError, match=r"returned shape \(\) for 4 chains, expected \(4,\)"):
        chees_hmc(lambda q: (q * q).sum(), torch.zeros(4, 2), 5, 5, progress=False)


def test_a_potential_not_finite_at_the_start_is_refused():
    def U(q):
        return torch.where(q[:, 0] > 0, torch.inf, (q * q).sum(-1))

    init = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    with pytest.raises(ValueError, match=r"not finite at init\[1\]"):
        chees_hmc(U, init, 5, 5, progress=False)


# ---------------------------------------------------------------------------- on a target
@pytest.fixture
def tiny():
    mdp = tiny_chain_mdp(horizon=3, n_features=2)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=20, seed=0)
    return mdp, demos, birl.LinearReward(mdp.features)


def test_run_vectorized_gives_constrained_draws_per_chain(tiny):
    mdp, demos, model = tiny
    target = build_target(mdp, demos, model, "soft", dist.LogNormal(0.0, 0.5))
    run = run_vectorized(target, EnsembleOptions(6, 20, 30, seed=0, progress=False))
    assert run.params["theta"].shape == (6, 20, 2)
    assert run.params["rationality"].shape == (6, 20) and (run.params["rationality"] > 0).all()
    assert run.settings["chain_method"] == "vectorized"
    assert run.settings["dense_mass"] is True
    assert not run.incomplete


def test_use_vectorized_picks_it_from_eight_chains_in_reward_space(tiny):
    mdp, demos, model = tiny
    target = build_target(mdp, demos, model, "soft", 1.0)
    assert AUTO_MIN_CHAINS == 8
    assert use_vectorized(None, target, "nuts", "auto", 8)
    assert not use_vectorized(None, target, "nuts", "auto", 7)
    assert not use_vectorized(None, target, "svi", "auto", 64)
    assert not use_vectorized("independent", target, "nuts", "auto", 64)
    assert use_vectorized("vectorized", target, "hmc", "reward", 2)
    # a tabular reward on a discounted MDP moves in value space by default: not picked
    disc = tiny_chain_mdp(discount=0.9)
    tab = build_target(disc, birl.rollouts(disc, birl.soft_value_iteration(disc, disc.reward),
                                           n=5, seed=0, length=4),
                       birl.TabularReward(3), "soft", 1.0)
    assert not use_vectorized(None, tab, "nuts", "auto", 64)
    assert use_vectorized(None, tab, "nuts", "reward", 64)
    assert use_vectorized("vectorized", tab, "nuts", "auto", 64)


def test_use_vectorized_says_why_it_does_not_apply(tiny):
    mdp, demos, model = tiny
    target = build_target(mdp, demos, model, "soft", 1.0)
    with pytest.raises(ValueError, match="chain_method is 'lockstep'"):
        use_vectorized("lockstep", target, "nuts", "auto", 8)
    with pytest.raises(ValueError, match="method is 'svi', expected 'nuts' or 'hmc'"):
        use_vectorized("vectorized", target, "svi", "auto", 8)
    with pytest.raises(ValueError, match="num_chains is 1, expected >= 2"):
        use_vectorized("vectorized", target, "nuts", "auto", 1)
    with pytest.raises(ValueError, match="space='value' does not apply"):
        use_vectorized("vectorized", target, "nuts", "value", 8)

    class OneAtATime:  # an InferenceTarget that does not declare chain_batched
        pass

    with pytest.raises(ValueError, match="OneAtATime target's potential takes one chain"):
        use_vectorized("vectorized", OneAtATime(), "nuts", "reward", 8)
    assert not use_vectorized(None, OneAtATime(), "nuts", "reward", 64)

    class Declared:
        chain_batched = True

    assert use_vectorized(None, Declared(), "nuts", "reward", 64)
    assert math.isclose(ensemble.TARGET_ACCEPT, 0.651)


# ---------------------------------------------------------------------------- through infer()
def quiet_infer(*args, **kwargs):
    """infer() with the convergence warnings of short runs silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        return birl.infer(*args, progress=False, **kwargs)


def test_infer_runs_eight_chains_vectorized_in_this_process(tiny):
    mdp, demos, model = tiny
    post = quiet_infer(mdp, demos, model, num_samples=25, warmup=40, num_chains=8, seed=1)
    assert not multiprocessing.active_children()
    assert post.settings["chain_method"] == "vectorized"
    assert post.settings["sampler"] == "chees-hmc" and post.settings["space"] == "reward"
    assert post.params["theta"].shape == (8, 25, 2)
    idata = post.to_arviz()
    assert idata.posterior.sizes["chain"] == 8 and idata.posterior.sizes["draw"] == 25
    stats = idata.sample_stats
    for name in ("acceptance_rate", "step_size", "n_steps", "diverging", "energy", "lp"):
        assert stats[name].shape == (8, 25), name
    assert ((stats["acceptance_rate"] >= 0) & (stats["acceptance_rate"] <= 1)).all()
    assert (stats["step_size"] == post.settings["step_size"]).all()
    rhat = az.rhat(idata, var_names=["theta"])["theta"].values
    assert rhat.shape == (2,) and np.isfinite(rhat).all()
    assert idata.log_likelihood["actions"].shape == (8, 25, demos.n)
    again = quiet_infer(mdp, demos, model, num_samples=25, warmup=40, num_chains=8, seed=1)
    assert torch.equal(again.params["theta"], post.params["theta"])


def test_infer_keeps_independent_chains_below_eight_or_when_asked(tiny):
    mdp, demos, model = tiny
    post = quiet_infer(mdp, demos, model, num_samples=10, warmup=10, num_chains=2,
                       parallel=False)
    assert "chain_method" not in post.settings
    target = build_target(mdp, demos, model, "soft", 1.0)
    assert not use_vectorized(None, target, "nuts", "auto", 64, parallel=True)
    assert not use_vectorized(None, target, "nuts", "auto", 64, max_workers=2)
    assert use_vectorized(None, target, "nuts", "auto", 64, parallel=False)
    with pytest.raises(ValueError, match="max_workers=2 was given"):
        use_vectorized("vectorized", target, "nuts", "auto", 64, max_workers=2)
    with pytest.raises(ValueError, match="an executor was given"):
        use_vectorized("vectorized", target, "nuts", "auto", 64,
                       executor=concurrent.futures.ProcessPoolExecutor)


@pytest.mark.parametrize("kwargs, match", [
    ({"chain_method": "lockstep"}, "chain_method is 'lockstep'"),
    ({"chain_method": "vectorized", "method": "svi"}, "method is 'svi'"),
    ({"chain_method": "vectorized", "num_chains": 1}, "num_chains is 1"),
    ({"chain_method": "vectorized", "parallel": True}, "parallel=True was given"),
])
def test_infer_refuses_vectorized_chains_where_they_do_not_apply(tiny, kwargs, match):
    mdp, demos, model = tiny
    with pytest.raises(ValueError, match=match):
        birl.infer(mdp, demos, model, num_samples=5, progress=False, **kwargs)


@pytest.mark.slow
def test_vectorized_chains_agree_with_nuts_on_a_tiny_mdp(tiny):
    """64 ChEES-HMC chains and 4 long NUTS chains on the same posterior (2 weights and a
    rationality with a LogNormal prior): means within 4 combined MCSE, sds within 10%."""
    mdp, demos, model = tiny
    kw = dict(rationality=dist.LogNormal(0.0, 0.5), seed=0)
    ens = quiet_infer(mdp, demos, model, num_samples=200, warmup=300, num_chains=64,
                      chain_method="vectorized", **kw)
    nuts = quiet_infer(mdp, demos, model, num_samples=2000, warmup=500, num_chains=4,
                       chain_method="independent", parallel=False, **kw)
    a, b = ens.to_arviz().posterior, nuts.to_arviz().posterior
    for name in ("theta", "rationality"):
        ma, mb = a[name].mean(("chain", "draw")), b[name].mean(("chain", "draw"))
        se = np.sqrt(az.mcse(a, var_names=[name])[name] ** 2
                     + az.mcse(b, var_names=[name])[name] ** 2)
        z = np.abs((ma - mb) / se).values
        sd_ratio = (a[name].std(("chain", "draw")) / b[name].std(("chain", "draw"))).values
        print(f"\n{name}: vectorized {ma.values}, NUTS {mb.values}, |z| {z}, sd ratio "
              f"{sd_ratio}")
        assert (z < 4).all() and (np.abs(sd_ratio - 1) < 0.1).all()
    rhat = az.rhat(a)
    assert all(float(rhat[k].max()) < 1.01 for k in ("theta", "rationality"))


def test_a_large_batch_runs_on_every_core_and_the_thread_count_is_restored(tiny):
    mdp, demos, model = tiny
    target = build_target(mdp, demos, model, "soft", 1.0)
    assert ensemble.batch_threads(target, 8) is None  # a small sweep: the caller's threads
    assert ensemble.batch_threads(target, 2**20) == ensemble.executors.usable_cores()
    assert ensemble.batch_threads(object(), 2**20) is None
    before = torch.get_num_threads()
    run = run_vectorized(target, EnsembleOptions(4, 5, 5, progress=False, threads=2))
    assert run.settings["threads"] == 2 and torch.get_num_threads() == before


def test_a_large_batch_inside_a_one_thread_job_keeps_its_one_thread(tiny, monkeypatch):
    """run_jobs places one job per core on one torch thread; an ensemble run by such a job
    (infer() called from it) samples on that thread instead of taking every core in every job,
    and the job's thread count is given back after it."""
    mdp, demos, model = tiny
    target = build_target(mdp, demos, model, "soft", 1.0)
    monkeypatch.setattr(ensemble.executors, "usable_cores", lambda: 4)
    monkeypatch.setattr(ensemble, "THREADED_SWEEP", 0)  # every batch is large
    seen, potential = [], target.potential
    monkeypatch.setattr(target, "potential",
                        lambda u: (seen.append(torch.get_num_threads()), potential(u))[1])

    def job(_):
        run = run_vectorized(target, EnsembleOptions(4, 3, 3, progress=False, map_init=False))
        return run.settings["threads"], torch.get_num_threads()

    before = torch.get_num_threads()
    assert ensemble.executors._in_worker(job, None) == (1, 1)
    assert set(seen) == {1} and torch.get_num_threads() == before
    assert not ensemble.executors.one_thread_job()
    assert ensemble.batch_threads(target, 8) == 4  # outside a job: every usable core


@pytest.mark.parametrize("kwargs, names", [
    ({"method": "nuts", "target_accept": 0.99, "max_tree_depth": 2},
     ["target_accept=0.99", "max_tree_depth=2"]),
    ({"method": "hmc", "num_steps": 3}, ["num_steps=3"]),
    ({"method": "nuts", "target_accept": 0.9, "chain_method": "vectorized"},
     ["target_accept=0.9"]),
])
def test_options_the_vectorized_chains_ignore_warn_naming_them(tiny, kwargs, names):
    mdp, demos, model = tiny
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        post = birl.infer(mdp, demos, model, num_samples=10, warmup=10, num_chains=8,
                          progress=False, seed=0, **kwargs)
    assert post.settings["chain_method"] == "vectorized"
    message = " ".join(str(w.message) for w in record
                       if isinstance(w.message, UnusedOptionWarning))
    assert "vectorized ChEES-HMC" in message
    assert all(name in message for name in names), message
    assert "chain_method='independent'" in message
    with warnings.catch_warnings():  # independent chains use them: no warning
        warnings.simplefilter("error", UnusedOptionWarning)
        assert not use_vectorized("independent", build_target(mdp, demos, model, "soft", 1.0),
                                  "nuts", "auto", 8)
