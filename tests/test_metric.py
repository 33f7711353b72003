"""Tests of the Laplace initial metric for NUTS/HMC (bayesirl._metric) and of how infer uses it."""

import pytest
import torch

import bayesirl as birl
from bayesirl import _metric
from bayesirl.diagnostics import InferenceWarning
from bayesirl.infer import _run_chain
from bayesirl.testing import simulate_demos, tiny_chain_mdp

torch.set_default_dtype(torch.float64)


def gaussian_potential(precision: torch.Tensor, names_sizes):
    """A batched quadratic potential ``x^T H x / 2`` over sites laid out in sorted name order."""
    names = sorted(names_sizes)

    def potential(u):
        x = torch.cat([u[k].reshape(*u[k].shape[:u[k].dim() - 1], -1) for k in names], -1)
        return 0.5 * torch.einsum("...i,ij,...j->...", x, precision, x)

    return potential


def random_spd(d, seed, log_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    lam = torch.logspace(-log_scale, log_scale, d)
    return (q * lam) @ q.T


@pytest.mark.parametrize("dense", [True, False])
def test_laplace_metric_is_inverse_hessian_of_a_gaussian(dense):
    H = random_spd(5, seed=0)
    u = {"b": torch.zeros(3), "a": torch.zeros(2)}
    inv = _metric.laplace_inverse_mass(gaussian_potential(H, {"a": 2, "b": 3}), u, 1, dense)
    cov = torch.linalg.inv(H)
    expected = cov if dense else cov.diagonal()
    torch.testing.assert_close(inv, expected, rtol=1e-5, atol=1e-8)


def test_laplace_metric_flattens_sites_in_sorted_order():
    H = torch.diag(torch.tensor([4.0, 1.0, 1.0, 0.25]))   # a: 4.0; b: 1.0, 1.0, 0.25
    u = {"b": torch.zeros(3), "a": torch.zeros(1)}
    inv = _metric.laplace_inverse_mass(gaussian_potential(H, {"a": 1, "b": 3}), u, 1, False)
    torch.testing.assert_close(inv, torch.tensor([0.25, 1.0, 1.0, 4.0]))


def test_laplace_metric_gives_unit_variance_to_non_positive_curvature():
    H = torch.diag(torch.tensor([2.0, -3.0, 0.0]))
    inv = _metric.laplace_inverse_mass(gaussian_potential(H, {"a": 3}), {"a": torch.zeros(3)},
                                       1, False)
    torch.testing.assert_close(inv, torch.tensor([0.5, 1.0, 1.0]))


def test_laplace_metric_gives_up_beyond_max_params_and_on_non_finite_curvature(monkeypatch):
    H = torch.eye(4)
    u = {"a": torch.zeros(4)}
    monkeypatch.setattr(_metric, "MAX_PARAMS", 3)
    assert _metric.laplace_inverse_mass(gaussian_potential(H, {"a": 4}), u, 1, True) is None
    monkeypatch.undo()
    nan_potential = lambda u: u["a"].sum(-1) * float("nan")  # noqa: E731
    assert _metric.laplace_inverse_mass(nan_potential, u, 1, True) is None


def test_laplace_metric_chunks_the_batch_without_changing_the_result(monkeypatch):
    H = random_spd(6, seed=1)
    u = {"a": torch.zeros(6)}
    whole = _metric.laplace_inverse_mass(gaussian_potential(H, {"a": 6}), u, 1, True)
    monkeypatch.setattr(_metric, "_CHUNK_ELEMENTS", 5)   # 5 perturbed points per chunk of 12
    chunked = _metric.laplace_inverse_mass(gaussian_potential(H, {"a": 6}), u, 1, True)
    torch.testing.assert_close(chunked, whole)


class _Quadratic:
    """The minimal target ``_run_chain`` needs: a potential and the identity constraint."""

    def __init__(self, precision, sizes):
        self.potential = gaussian_potential(precision, sizes)

    @staticmethod
    def constrain(u):
        return u


@pytest.mark.parametrize("dense", [True, False])
def test_nuts_samples_with_the_metric_it_is_given(dense):
    """Scales 1e-2 and 1e2 in two sites: with the exact metric (in the sorted site order the
    kernel flattens by) NUTS needs a handful of leapfrog steps per draw; with the identity it
    needs hundreds, and with the sites swapped the step size collapses."""
    sds = torch.tensor([1e-2, 1e2, 1.0])       # a: (1,), b: (2,)
    H = torch.diag(sds**-2)
    target = _Quadratic(H, {"a": 1, "b": 2})
    init = {"b": torch.zeros(2), "a": torch.zeros(1)}
    metric = sds**2 if not dense else torch.diag(sds**2)

    def steps(inverse_mass):
        _, stats, _ = _run_chain(target, "nuts", 0, 1, 30, 0, 0, False, init,
                                 {"full_mass": dense, "max_tree_depth": 10}, inverse_mass)
        return sum(s["n_steps"] for s in stats) / len(stats)

    good = steps(metric)
    assert good < 8
    assert steps(None) > 50
    swapped = sds[[1, 0, 2]] ** 2
    assert steps(swapped if not dense else torch.diag(swapped)) > 50


def test_infer_records_which_initial_metric_it_used():
    mdp = tiny_chain_mdp()
    demos = simulate_demos(mdp, mdp.reward, 10, seed=0)
    kw = {"method": "nuts", "num_samples": 20, "warmup": 20, "progress": False,
          "strict": False}
    with pytest.warns(InferenceWarning):
        post = birl.infer(mdp, demos, birl.LinearReward(mdp.features), **kw)
    assert post.settings["initial_metric"] == "laplace"
    with pytest.warns(InferenceWarning):
        post = birl.infer(mdp, demos, birl.LinearReward(mdp.features), map_init=False, **kw)
    assert post.settings["initial_metric"] == "identity"
