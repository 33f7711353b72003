"""Nothing lost: exact SVI resume from checkpoints, interrupted MCMC keeps its draws, seeds."""

import importlib
import warnings

import pytest
import torch

import bayesirl as birl
from bayesirl.posterior.diagnostics import InferenceWarning

svi_module = importlib.import_module("bayesirl.inference.svi")
pyro_nuts = importlib.import_module("bayesirl.inference.pyro_nuts")


@pytest.fixture
def problem():
    mdp = birl.envs.gridworld(size=4, slip=0.1, horizon=5, block=2, seed=0)
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, mdp.reward), n=10, seed=0)
    return mdp, demos, birl.LinearReward(mdp.features)


def test_svi_resumes_to_the_uninterrupted_result(problem, tmp_path, monkeypatch):
    """A run interrupted after step 25 resumes from its step-20 checkpoint and ends exactly
    where the uninterrupted run does (optimiser moments, decayed step size, RNG and all)."""
    mdp, demos, model = problem
    kw = dict(method="svi", steps=40, num_samples=10, progress=False, seed=3)
    full = birl.infer(mdp, demos, model, **kw)
    ck = tmp_path / "svi.ckpt"
    step, calls = svi_module.SVI.step, []

    def interrupted_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 25:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(svi_module.SVI, "step", interrupted_step)
        cut = birl.infer(mdp, demos, model, **kw, checkpoint=ck, checkpoint_every=10)
    assert cut.incomplete and len(cut.extra["elbo"]) == 25 and ck.exists()
    resumed = birl.infer(mdp, demos, model, **kw, checkpoint=ck, checkpoint_every=10)
    assert resumed.extra["elbo"] == full.extra["elbo"]
    assert torch.equal(resumed.samples["theta"], full.samples["theta"])


def test_svi_rejects_a_foreign_checkpoint(problem, tmp_path):
    mdp, demos, model = problem
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.ckpt"):
        birl.infer(mdp, demos, model, method="svi", steps=5, num_samples=2, progress=False,
                   checkpoint=bad)


def test_svi_checkpoint_every_validated(problem, tmp_path):
    mdp, demos, model = problem
    with pytest.raises(ValueError, match="checkpoint_every is 0"):
        birl.infer(mdp, demos, model, method="svi", steps=5, progress=False,
                   checkpoint=tmp_path / "c", checkpoint_every=0)


def test_interrupted_mcmc_returns_draws_marked_incomplete(problem, monkeypatch):
    mdp, demos, model = problem
    step = pyro_nuts.Recorder.step
    calls = {"n": 0}

    def interrupting(self, params):
        calls["n"] += 1
        if calls["n"] > 30:  # 20 warmup + 10 draws, then Ctrl-C
            raise KeyboardInterrupt
        return step(self, params)

    monkeypatch.setattr(pyro_nuts.Recorder, "step", interrupting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        post = birl.infer(mdp, demos, model, method="nuts", num_samples=50, warmup=20,
                          num_chains=2, progress=False)
    assert post.incomplete and post.num_chains == 1 and post.num_draws == 10
    assert "incomplete" in repr(post)


def test_interrupt_before_any_draw_raises(problem, monkeypatch):
    mdp, demos, model = problem

    def interrupting(self, params):
        raise KeyboardInterrupt

    monkeypatch.setattr(pyro_nuts.Recorder, "step", interrupting)
    with pytest.raises(KeyboardInterrupt):
        birl.infer(mdp, demos, model, method="nuts", num_samples=5, warmup=5, progress=False)


def test_seeded_nuts_reproduces(problem):
    mdp, demos, model = problem
    kw = dict(method="nuts", num_samples=15, warmup=15, num_chains=2, seed=7, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        a = birl.infer(mdp, demos, model, **kw)
        b = birl.infer(mdp, demos, model, **kw)
    assert torch.equal(a.samples["theta"], b.samples["theta"])


def test_parallel_chains_equal_sequential_chains(problem):
    """Chains in spawned processes draw exactly what the same chains draw one after another."""
    mdp, demos, model = problem
    kw = dict(method="nuts", num_samples=10, warmup=10, num_chains=2, seed=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        seq = birl.infer(mdp, demos, model, parallel=False, **kw)
        par = birl.infer(mdp, demos, model, parallel=True, **kw)
    assert torch.equal(seq.samples["theta"], par.samples["theta"])
