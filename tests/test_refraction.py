"""NUTS across jumps (bayesirl.inference.refraction): the refracting drift conserves kinetic energy
plus
the jump, reflects when the momentum cannot pay, is reversible and volume-preserving, and
NUTS built on it samples a density with a jump exactly. Value space's use of it:
tests/test_value_space.py and tests/oracles/test_exact.py."""

import math

import arviz as az
import numpy as np
import pyro
import pytest
import torch

from bayesirl.inference.refraction import ArgmaxRegions, RefractiveNUTS


class _Heights:
    """The jump term ``sum_s height[s, region[s]]``: ``height (S, A)``, one value per option
    of each group."""

    def __init__(self, height):
        self.height = np.asarray(height, dtype=float)

    def value(self, region):
        return float(self.height[np.arange(len(region)), region].sum())

    def change(self, region, s, a):
        def commit():
            new = region.copy()
            new[s] = a
            return new
        return float(self.height[s, a] - self.height[s, region[s]]), commit


def _half_plane(height, n=2):
    K = np.zeros((1, 2, n))
    K[0, 1, 0] = 1.0
    # the jump term height * [w0 > 0]: one group, option 1 scoring w0
    return ArgmaxRegions(np.zeros((1, 2)), K, np.ones((1, 2), dtype=bool),
                         _Heights([[0.0, height]]))


def _energy(regions, w, p, minv):
    kinetic = 0.5 * p @ (minv * p if minv.ndim == 1 else minv @ p)
    return kinetic + regions.jump.value(regions.region(w))


def test_refraction_pays_the_jump_from_the_normal_momentum():
    regions = _half_plane(1.0)
    w, p, minv = np.array([-1.0, 0.3]), np.array([2.0, 0.5]), np.ones(2)
    w1, p1, refracted, reflected = regions.drift(w, p, 1.0, minv)
    assert (refracted, reflected) == (1, 0)
    # the boundary w0 = 0 is reached at t = 0.5; the normal speed drops from 2 to sqrt(2)
    np.testing.assert_allclose(p1, [math.sqrt(2.0), 0.5])
    np.testing.assert_allclose(w1, [0.5 * math.sqrt(2.0), 0.8])
    assert math.isclose(_energy(regions, w1, p1, minv), _energy(regions, w, p, minv))


def test_reflection_when_the_momentum_cannot_pay():
    regions = _half_plane(3.0)  # 3 > 2^2 / 2
    w, p, minv = np.array([-1.0, 0.3]), np.array([2.0, 0.5]), np.ones(2)
    w1, p1, refracted, reflected = regions.drift(w, p, 1.0, minv)
    assert (refracted, reflected) == (0, 1)
    np.testing.assert_allclose(p1, [-2.0, 0.5])
    np.testing.assert_allclose(w1, [-1.0, 0.8])
    assert regions.region(w1)[0] == 0


def _dense_minv():
    return np.array([[1.5, 0.4], [0.4, 0.7]])


@pytest.mark.parametrize("height", [0.6, 5.0, -0.8], ids=["refract", "reflect", "down"])
def test_drift_is_reversible_and_conserves_energy(height):
    """Drift forward, flip the momentum, drift again: back at the start. A negative time
    runs the drift backwards. A dense inverse mass measures the normal in its metric; a jump
    down (height -0.8) speeds the normal momentum up."""
    regions, minv = _half_plane(height), _dense_minv()
    w, p = np.array([-0.7, 0.2]), np.array([1.3, -0.4])
    w1, p1, refracted, reflected = regions.drift(w, p, 1.2, minv)
    assert refracted + reflected == 1
    assert math.isclose(_energy(regions, w1, p1, minv), _energy(regions, w, p, minv))
    w2, p2, *_ = regions.drift(w1, -p1, 1.2, minv)
    np.testing.assert_allclose(w2, w, atol=1e-12)
    np.testing.assert_allclose(-p2, p, atol=1e-12)
    w3, p3, *_ = regions.drift(w1, p1, -1.2, minv)
    np.testing.assert_allclose(w3, w, atol=1e-12)
    np.testing.assert_allclose(p3, p, atol=1e-12)


@pytest.mark.parametrize("height", [0.6, 5.0, -0.8], ids=["refract", "reflect", "down"])
def test_drift_preserves_volume(height):
    """|det| of the finite-difference Jacobian of (w, p) -> drift(w, p, t) is 1."""
    regions, minv = _half_plane(height), _dense_minv()
    x0 = np.array([-0.7, 0.2, 1.3, -0.4])

    def flow(x):
        w, p, *_ = regions.drift(x[:2], x[2:], 1.2, minv)
        return np.concatenate([w, p])

    eps = 1e-6
    jac = np.stack([(flow(x0 + eps * e) - flow(x0 - eps * e)) / (2 * eps)
                    for e in np.eye(4)], 1)
    assert abs(abs(np.linalg.det(jac)) - 1.0) < 1e-6


def test_left_out_options_never_make_boundaries():
    """A copy of option 1 that is left out (valid False) is ignored, ties and all."""
    K = np.zeros((1, 3, 2))
    K[0, 1, 0] = K[0, 2, 0] = 1.0
    valid = np.array([[True, True, False]])
    regions = ArgmaxRegions(np.zeros((1, 3)), K, valid, _Heights([[0.0, 0.5, 1.0]]))
    w1, p1, refracted, reflected = regions.drift(np.array([-1.0, 0.0]), np.array([2.0, 0.0]),
                                                 1.0, np.ones(2))
    assert (refracted, reflected) == (1, 0)
    assert regions.region(w1)[0] == 1


@pytest.mark.parametrize("dense", [False, True], ids=["diagonal", "dense"])
def test_drift_with_and_without_the_gram_matrix_agree(dense, monkeypatch):
    """Many groups, many crossings (refractions and reflections): the drift that updates the
    scores' velocities from the cached K M^-1 K^T equals the one that multiplies by K."""
    import bayesirl.inference.refraction as refraction
    rng = np.random.default_rng(3)
    S, A, n = 30, 4, 12
    K = rng.standard_normal((S, A, n))
    valid = np.ones((S, A), dtype=bool)
    valid[::7, 3] = False
    regions = ArgmaxRegions(rng.standard_normal((S, A)), K, valid,
                            _Heights(0.3 * rng.standard_normal((S, A))))
    root = rng.standard_normal((n, n)) / n ** 0.5 + np.eye(n)
    minv = root @ root.T if dense else rng.uniform(0.5, 2.0, n)
    moves = [(rng.standard_normal(n), rng.standard_normal(n)) for _ in range(20)]
    fast = [regions.drift(w, p, 0.7, minv) for w, p in moves]
    monkeypatch.setattr(refraction, "_GRAM_MAX", 0)
    assert regions.gram(minv) is None
    slow = [regions.drift(w, p, 0.7, minv) for w, p in moves]
    assert sum(f[2] for f in fast) > 100 and sum(f[3] for f in fast) > 10
    w_end = fast[-1][0]  # the region where a drift ended is the argmax there
    np.testing.assert_array_equal(regions.region(w_end), regions.scores(w_end).argmax(-1))
    for f, s in zip(fast, slow, strict=True):
        np.testing.assert_allclose(f[0], s[0], rtol=0, atol=1e-10)
        np.testing.assert_allclose(f[1], s[1], rtol=0, atol=1e-10)
        assert f[2:] == s[2:]


def test_nuts_samples_a_density_with_a_jump():
    """Standard normal in 2-d times exp(-1.5) on w0 > 0: P(w0 > 0) = e^-1.5 / (1 + e^-1.5)
    = 0.182. Plain NUTS's step-size adaptation has no small step that makes a jump's energy
    error small; the refracting kernel's draws match within 4 MCSE."""
    height = 1.5
    regions = _half_plane(height)

    def potential(u):
        w = u["w"]
        return 0.5 * (w ** 2).sum() + regions.jump.value(regions.region(w.detach().numpy()))

    pyro.set_rng_seed(0)
    kernel = RefractiveNUTS(potential, regions)
    mcmc = pyro.infer.MCMC(kernel, num_samples=2000, warmup_steps=300, disable_progbar=True,
                           initial_params={"w": torch.zeros(2, dtype=torch.float64)})
    mcmc.run()
    w0 = mcmc.get_samples()["w"][:, 0].numpy()
    above = (w0 > 0).astype(float)
    exact = math.exp(-height) / (1 + math.exp(-height))
    mcse = float(np.ravel(az.mcse(above[None]))[0])
    assert kernel.n_refracted > 0 and kernel.n_reflected > 0
    print(f"P(w0 > 0) = {above.mean():.4f}, exact {exact:.4f}, MCSE {mcse:.4f}")
    assert abs(above.mean() - exact) < 4 * mcse, (above.mean(), exact, mcse)
    # the half-normal's mean on each side: E[w0 | w0 < 0] = -sqrt(2 / pi)
    below = w0[w0 < 0]
    assert abs(below.mean() + math.sqrt(2 / math.pi)) < 0.1


def test_refractive_nuts_needs_multinomial_sampling():
    with pytest.raises(ValueError, match="multinomial"):
        RefractiveNUTS(lambda u: u["w"].sum(), _half_plane(1.0),
                       use_multinomial_sampling=False)
