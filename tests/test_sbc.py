"""Simulation-based calibration (bayesirl.sbc): Talts et al. (2018) ranks of the true
parameters among posterior draws, plus the full-data log-likelihood rank of Modrak et al. (2023).

Tiers:
- grid-exact (default run): 1000 simulations with exact posterior draws by quadrature on a 1-d
  problem; checks that the simulator (rollouts of the model's expert) and the likelihood agree.
- broken likelihood (default run): a posterior that conditions on half of the demonstrations is
  calibrated for theta but fails the log-likelihood rank test, decisively.
- NUTS smoke (default run): 20 simulations, structure only.
- NUTS and SVI tiers (``-m slow``): 100 simulations each; both must pass (SVI's Normal guide
  is close to exact on this 1-d posterior of 10 demonstrations).

Each uniformity test has a stated false-alarm rate: the family-wise level ``alpha = 0.001``
(Bonferroni over the quantities), so a correct sampler fails a seeded run with probability
<= 0.001; the seeds are fixed, so these tests are deterministic.
"""

import concurrent.futures
import pickle
import time

import matplotlib.pyplot as plt
import numpy as np
import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
import bayesirl.sbc as sbc_module
from bayesirl.sbc import SBCResult, rank_uniformity, sbc
from bayesirl.testing import grid_posterior, tiny_chain_mdp

torch.set_num_threads(1)

# 1-d theta with a N(0, 1) prior: |theta| > 7 has prior mass 3e-12, and grid_posterior raises
# if the posterior mass in the boundary cells exceeds 1e-6, so fixed bounds are safe and skip
# the Laplace search (2x faster). 401 points: cell 0.035, about sd / 12 at 10 demos.
GRID = {"grid": 401, "bounds": [(-7.0, 7.0)]}


@pytest.fixture
def chain():
    mdp = tiny_chain_mdp(horizon=3, n_features=1)
    return mdp, birl.LinearReward(mdp.features)


def half_data_grid(mdp, demos, reward_model, *, likelihood, rationality, n_draws, seed, **kw):
    """A broken inference: the exact posterior given only the first half of the demos."""
    g = grid_posterior(mdp, demos[: demos.n // 2], reward_model, likelihood=likelihood,
                       rationality=rationality, **kw)
    return {"theta": g.sample(n_draws, torch.Generator().manual_seed(seed))}


# ---------------------------------------------------------------------------- rank statistics
def test_rank_uniformity_on_uniform_and_skewed_ranks():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 100, size=(2000, 2))
    p, counts, expected = rank_uniformity(uniform, 99)
    assert counts.shape == (2, 20) and expected.shape == (20,)
    assert np.allclose(expected, 100) and (counts.sum(1) == 2000).all()
    assert (p > 0.001).all()
    skewed = np.minimum(rng.integers(0, 100, size=2000), rng.integers(0, 100, size=2000))
    assert rank_uniformity(skewed, 99)[0][0] < 1e-10


def test_rank_uniformity_bins_and_errors():
    ranks = np.arange(10).repeat(3)
    p, counts, expected = rank_uniformity(ranks, 9, bins=3)  # 10 rank values in 3 bins: 4, 3, 3
    assert counts.tolist() == [[12, 9, 9]] and np.allclose(expected, [12, 9, 9])
    assert p[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"ranks must lie in \[0, 9\]"):
        rank_uniformity(np.array([10]), 9)
    with pytest.raises(ValueError, match="bins is 1"):
        rank_uniformity(ranks, 9, bins=1)


# ---------------------------------------------------------------------------- grid-exact tier
def test_grid_tier_1000_simulations_passes(chain):
    mdp, model = chain
    start, cpu = time.perf_counter(), time.process_time()
    result = sbc(mdp, model, 1000, n_demos=10, method="grid", infer_kwargs=GRID, seed=0,
                 progress=False)
    seconds = time.perf_counter() - start
    print(f"\ngrid tier: {result} in {seconds:.1f} s ({time.process_time() - cpu:.1f} s CPU)")
    assert isinstance(result, SBCResult)
    assert result.names == ("theta[0]", "loglik")
    assert result.ranks.shape == (1000, 2) and result.L == 99 and result.bins == 20
    assert (result.ranks >= 0).all() and (result.ranks <= 99).all()
    assert (result.p_values > 0.001 / 2).all(), result
    assert result.passed
    assert (result.thin == 1).all()  # independent draws: nothing to thin


def test_grid_tier_catches_likelihood_dropping_half_the_data(chain):
    """The Modrak et al. (2023) example: theta alone stays calibrated (the half-data posterior is
    a correct posterior), the data-dependent log-likelihood quantity fails decisively."""
    mdp, model = chain
    result = sbc(mdp, model, 400, n_demos=10, method=half_data_grid, infer_kwargs=GRID,
                 seed=0, progress=False)
    print(f"\nhalf-data posterior: {result}")
    assert not result.passed
    p_theta, p_loglik = result.p_values
    assert p_theta > 0.001 / 2, "theta ranks of a half-data posterior should stay uniform"
    assert p_loglik < 1e-8, result
    # the truth fits the full data better than draws from the wider posterior: high ranks
    assert np.mean(result.ranks[:, 1]) > 0.55 * result.L


def test_sbc_is_reproducible_and_leaves_global_rng(chain):
    mdp, model = chain
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = sbc(mdp, model, 12, n_demos=5, method="grid", infer_kwargs=GRID, n_draws=19, seed=3,
            progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    b = sbc(mdp, model, 12, n_demos=5, method="grid", infer_kwargs=GRID, n_draws=19, seed=3,
            progress=False)
    c = sbc(mdp, model, 12, n_demos=5, method="grid", infer_kwargs=GRID, n_draws=19, seed=4,
            progress=False)
    assert np.array_equal(a.ranks, b.ranks) and not np.array_equal(a.ranks, c.ranks)


def test_mdp_factory_varies_the_mdp_and_rationality_prior(chain):
    _, model = chain
    seen = []

    def factory(rng):
        slip = float(rng.uniform(0.05, 0.4))
        seen.append(slip)
        return tiny_chain_mdp(horizon=2, n_features=1, slip=slip)

    result = sbc(factory, model, 10, n_demos=4, method="grid", n_draws=9,
                 rationality=dist.LogNormal(0.0, 0.5), infer_kwargs={"grid": 41},
                 progress=False)
    assert len(set(seen)) == 10
    assert result.names == ("theta[0]", "rationality", "loglik")
    assert result.ranks.shape == (10, 3) and (result.ranks <= 9).all()


def test_plot_draws_rank_histograms(chain):
    mdp, model = chain
    result = sbc(mdp, model, 40, n_demos=5, method="grid", infer_kwargs=GRID, n_draws=19,
                 progress=False)
    axes = result.plot()
    assert axes.shape == (1, 2)
    assert "theta[0]" in axes[0, 0].get_title() and "loglik" in axes[0, 1].get_title()
    assert len(axes[0, 0].patches) == result.bins
    with pytest.raises(ValueError, match="ax has 1 axes, expected 2"):
        result.plot(ax=axes[0, 0])
    plt.close("all")


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"n_sims": 0}, ValueError, "n_sims is 0"),
    ({"n_draws": -1}, ValueError, "n_draws is -1"),
    ({"thin": 0}, ValueError, "thin is 0"),
    ({"method": "mcmc"}, ValueError, "method is 'mcmc'"),
    ({"likelihood": "hard"}, ValueError, "likelihood is 'hard'"),
    ({"alpha": 2.0}, ValueError, "alpha is 2.0"),
    ({"mdp_factory": "gridworld"}, TypeError, "mdp_factory must be"),
    ({"mdp_factory": lambda rng: None}, TypeError, "mdp_factory returned NoneType"),
    ({"reward_model": "linear"}, TypeError, "reward_model must be"),
])
def test_bad_arguments(chain, kwargs, exc, match):
    mdp, model = chain
    args = {"mdp_factory": mdp, "reward_model": model, "n_sims": 2, "method": "grid",
            "progress": False, **kwargs}
    with pytest.raises(exc, match=match):
        sbc(args.pop("mdp_factory"), args.pop("reward_model"), args.pop("n_sims"), **args)


def test_improper_prior_is_refused(chain):
    mdp, _ = chain
    model = birl.LinearReward(mdp.features, prior=dist.ImproperUniform(
        dist.constraints.real, (), ()))
    with pytest.raises(ValueError, match="prior of 'theta' is improper"):
        sbc(mdp, model, 2, method="grid", progress=False)


# ---------------------------------------------------------------------------- NUTS and SVI
NUTS_SMOKE = {"warmup": 30, "num_samples": 30}


def test_nuts_smoke(chain):
    """20 simulations: ranks in range and the result's structure (too few for uniformity)."""
    mdp, model = chain
    start, cpu = time.perf_counter(), time.process_time()
    result = sbc(mdp, model, 20, n_demos=10, method="nuts", n_draws=9,
                 infer_kwargs=NUTS_SMOKE, seed=0, progress=False)
    seconds = time.perf_counter() - start
    print(f"\nNUTS smoke: {result} in {seconds:.1f} s ({time.process_time() - cpu:.1f} s CPU); "
          f"thin {result.thin.tolist()}")
    assert result.ranks.shape == (20, 2) and result.ranks.dtype.kind == "i"
    assert (result.ranks >= 0).all() and (result.ranks <= 9).all()
    assert result.p_values.shape == (2,) and np.isfinite(result.p_values).all()
    assert result.counts.sum(1).tolist() == [20, 20]
    assert (result.thin >= 1).all() and np.isfinite(result.ess).all()
    assert result.n_warned == 20  # one 30-draw chain always misses ESS >= 400: recorded


def test_explicit_thin_needs_enough_draws(chain):
    mdp, model = chain

    def iid(mdp, demos, reward_model, *, n_draws, seed, **kw):
        return {"theta": torch.randn(50, 1, generator=torch.Generator().manual_seed(seed))}

    result = sbc(mdp, model, 3, n_demos=2, method=iid, n_draws=9, thin=5, progress=False)
    assert (result.thin == 5).all()
    with pytest.raises(ValueError, match="thin=10 leaves 5 of 50 draws"):
        sbc(mdp, model, 1, n_demos=2, method=iid, n_draws=9, thin=10, progress=False)


@pytest.mark.slow
def test_nuts_tier_100_simulations_passes(chain):
    mdp, model = chain
    start, cpu = time.perf_counter(), time.process_time()
    result = sbc(mdp, model, 100, n_demos=10, method="nuts", n_draws=9,
                 infer_kwargs={"warmup": 100, "num_samples": 100}, seed=0, progress=False)
    seconds = time.perf_counter() - start
    print(f"\nNUTS tier: {result} in {seconds:.0f} s ({time.process_time() - cpu:.0f} s CPU); "
          f"counts {result.counts.tolist()}; "
          f"median thin {np.median(result.thin)}, min ESS {np.min(result.ess):.1f}, "
          f"under-thinned {result.n_under_thinned}")
    assert result.bins == 10
    assert result.passed, result


@pytest.mark.slow
def test_svi_tier_100_simulations_passes(chain):
    mdp, model = chain
    start, cpu = time.perf_counter(), time.process_time()
    result = sbc(mdp, model, 100, n_demos=10, method="svi", n_draws=19,
                 infer_kwargs={"guide": "normal", "steps": 300, "lr": 0.05}, seed=0,
                 progress=False)
    seconds = time.perf_counter() - start
    print(f"\nSVI tier: {result} in {seconds:.0f} s "
          f"({time.process_time() - cpu:.0f} s CPU); "
          f"counts {result.counts.tolist()}")
    assert result.ranks.shape == (100, 2)
    assert result.passed, result


# ---------------------------------------------------------------------------- executors
class PicklingExecutor(concurrent.futures.Executor):
    """Runs each task when its result is asked for, after a pickle round trip (what a process
    pool or a Dask worker does to it); futures complete in reverse order of submission."""

    def __init__(self):
        self.ran = 0

    def submit(self, fn, *args, **kwargs):
        fn, args, kwargs = pickle.loads(pickle.dumps((fn, args, kwargs)))
        future = concurrent.futures.Future()
        self.pending = getattr(self, "pending", []) + [(future, fn, args, kwargs)]
        return future

    def run_all(self):
        for future, fn, args, kwargs in reversed(self.pending):
            future.set_result(fn(*args, **kwargs))
            self.ran += 1
        self.pending = []


def test_an_executor_gives_the_ranks_of_a_sequential_run(chain, monkeypatch):
    """Simulations are pure seeded tasks: pickled, run in any order, the same ranks."""
    mdp, model = chain
    kw = dict(n_demos=5, method="nuts", n_draws=9, infer_kwargs={"warmup": 20, "num_samples": 20},
              seed=1, progress=False)
    sequential = sbc(mdp, model, 4, **kw)
    executor = PicklingExecutor()
    real_as_completed = sbc_module.as_completed

    def as_completed(futures):
        executor.run_all()
        return real_as_completed(futures)

    monkeypatch.setattr(sbc_module, "as_completed", as_completed)
    remote = sbc(mdp, model, 4, executor=executor, **kw)
    assert executor.ran == 4
    assert np.array_equal(remote.ranks, sequential.ranks)
    assert np.array_equal(remote.thin, sequential.thin)
    assert remote.n_warned == sequential.n_warned


def test_executor_arguments_are_checked(chain):
    mdp, model = chain
    args = dict(n_demos=2, method="grid", infer_kwargs=GRID, n_draws=9, progress=False)
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        sbc(mdp, model, 2, executor="dask", **args)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with pytest.raises(ValueError, match="executor is a ThreadPoolExecutor"):
            sbc(mdp, model, 2, executor=pool, **args)
    with pytest.raises(TypeError, match="must be picklable"):
        sbc(lambda rng: mdp, model, 2, executor=PicklingExecutor(), **args)


def test_a_simulation_runs_as_a_one_thread_job_and_restores_the_threads(monkeypatch):
    """Inside, the vectorized ensemble must not raise torch's threads to every core (it asks
    executors.one_thread_job()); outside, the caller's count comes back."""
    from bayesirl import sbc as sbc_module
    from bayesirl.inference import executors

    seen = {}

    def fake(sim):
        seen.update(threads=torch.get_num_threads(), marked=executors.one_thread_job())
        return "ran"

    monkeypatch.setattr(sbc_module, "_simulate_here", fake)
    before = torch.get_num_threads()
    assert sbc_module._simulate(None) == "ran"
    assert seen == {"threads": 1, "marked": True}
    assert torch.get_num_threads() == before and not executors.one_thread_job()
