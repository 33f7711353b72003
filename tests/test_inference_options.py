"""infer()'s options (bayesirl.inference.facade): flags are bools, options the chosen method does
not use warn, and small problems run this process's work on one thread, restored after."""

import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch

import bayesirl as birl
from bayesirl.inference import facade
from bayesirl.inference.facade import UnusedOptionWarning
from bayesirl.posterior.diagnostics import InferenceWarning
from bayesirl.testing import simulate_demos, tiny_chain_mdp


@pytest.fixture
def problem():
    mdp = tiny_chain_mdp()
    return mdp, simulate_demos(mdp, mdp.reward, 10, seed=0), birl.LinearReward(mdp.features)


@pytest.mark.parametrize("name,value", [
    ("parallel", "no"), ("parallel", 0), ("dense_mass", "yes"), ("dense_mass", 1),
    ("progress", "false"), ("strict", 1), ("map_init", None)])
def test_flags_take_bools_only(problem, name, value):
    mdp, demos, model = problem
    with pytest.raises(TypeError, match=f"{name} is {value!r}, expected True, False"):
        birl.infer(mdp, demos, model, method="map", **{name: value})


def test_numpy_bools_are_bools(problem):
    mdp, demos, model = problem
    post = birl.infer(mdp, demos, model, method="map", progress=np.bool_(False))
    assert post.method == "map"


@pytest.mark.parametrize("method,kwargs,named", [
    ("nuts", {"steps": 5, "guide": "normal", "lr": 0.1, "subsample_size": 3},
     "steps=5, lr=0.1, guide='normal', subsample_size=3"),
    ("hmc", {"max_tree_depth": 4}, "max_tree_depth=4"),
    ("nuts", {"num_steps": 4}, "num_steps=4"),
    ("svi", {"num_chains": 4, "warmup": 3, "dense_mass": True}, "warmup=3, num_chains=4, "
                                                                  "dense_mass=True"),
    ("map", {"num_chains": 4, "num_samples": 10, "map_init": False},
     "num_samples=10, num_chains=4, map_init=False"),
])
def test_options_the_method_does_not_use_warn(problem, method, kwargs, named):
    mdp, demos, model = problem
    fast = {"nuts": {"num_samples": 5, "warmup": 5, "num_chains": 1},
            "hmc": {"num_samples": 5, "warmup": 5, "num_chains": 1},
            "svi": {"steps": 5}, "map": {}}[method]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        birl.infer(mdp, demos, model, method, progress=False, **{**fast, **kwargs})
    unused = [str(w.message) for w in record if w.category is UnusedOptionWarning]
    assert len(unused) == 1, [str(w.message) for w in record]
    assert unused[0].startswith(f"method={method!r} does not use ")
    for part in named.split(", "):
        assert part in unused[0], unused[0]
    assert issubclass(UnusedOptionWarning, InferenceWarning)


def test_options_at_their_defaults_do_not_warn(problem):
    mdp, demos, model = problem
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        birl.infer(mdp, demos, model, "map", steps=2000, guide="mvn", num_chains=2,
                   parallel=None, dense_mass=None, space="auto", progress=False)


class _Recording(birl.LinearReward):
    """Records the torch threads each reward is computed with."""

    seen = []

    def reward(self, params):
        self.seen.append(torch.get_num_threads())
        return super().reward(params)


@pytest.mark.parametrize("method", ["map", "nuts", "svi"])
def test_a_small_problem_runs_on_one_thread_and_gives_the_threads_back(problem, method,
                                                                       monkeypatch):
    """Two threads before; every reward of the run on one; two after. A problem above the
    size limit keeps its threads."""
    mdp, demos, _ = problem
    model = _Recording(mdp.features, prior=dist.Laplace(0.0, 1.0))  # the generic potential
    kw = {"map": {}, "nuts": dict(num_samples=3, warmup=3, num_chains=1),
          "svi": dict(steps=3, num_samples=2)}[method]
    torch.set_num_threads(2)
    try:
        _Recording.seen = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InferenceWarning)
            birl.infer(mdp, demos, model, method, progress=False, **kw)
        assert _Recording.seen and set(_Recording.seen) == {1}
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(facade, "_SMALL", 0)
        _Recording.seen = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InferenceWarning)
            birl.infer(mdp, demos, model, method, progress=False, **kw)
        assert set(_Recording.seen) == {2}
    finally:
        torch.set_num_threads(1)
