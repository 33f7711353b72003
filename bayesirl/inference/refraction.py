r"""NUTS on a potential that jumps across linear boundaries: reflection and refraction.

Some targets are smooth except for a term that is constant on each *region* of a partition
of the space and jumps between regions. Plain leapfrog steps straight across a jump, so the
energy error does not shrink with the step size, and NUTS's step-size adaptation collapses.
Mohasel Afshar & Domke (2015, "Reflection, refraction, and Hamiltonian Monte Carlo") integrate
the jump exactly instead: the position drift stops where it meets a boundary, and the momentum
component normal to the boundary, measured in the kinetic metric, pays for the jump
(*refraction*, the normal speed shrinks from ``p_n`` to ``sqrt(p_n^2 - 2 dU)``) or, when it
cannot, bounces back (*reflection*, ``p_n -> -p_n``). The drift stays reversible and
volume-preserving and conserves ``K + U_jump``, so the jump costs NUTS no accepted energy error.

Here regions come from groups of affine scores: ``G(w) = g0 + K w`` with ``g0: (S, A)`` and
``K: (S, A, n)``; the region of ``w`` is the argmax of each group, ``(S,)`` (the greedy
policy of value space, :mod:`bayesirl.inference.value_space`). Boundaries are where two scores of a
group tie, hyperplanes in ``w``, so the time of the next crossing along a straight drift is
exact. The jump term is an object with ``value(region) -> float`` and ``change(region, s, a)
-> (delta, commit)``: ``delta`` the change of the potential if group ``s`` switches to
``a``, ``commit()`` the new region.
"""

from __future__ import annotations

import math

import numpy as np
import threadpoolctl
import torch
from pyro.ops.integrator import potential_grad

from bayesirl.inference.pyro_nuts import IntegratorNUTS

__all__ = ["ArgmaxRegions", "RefractiveNUTS"]

_MAX_CROSSINGS = 100_000  # per drift; a drift through more boundaries is a bug, not a posterior
_GRAM_MAX = 2048  # options (S A) up to which a drift keeps K M^-1 K^T: (S A)^2 floats, 32 MiB


class ArgmaxRegions:
    """The partition of ``w: (n,)`` by the argmax of each group of ``G(w) = g0 + K w``.

    ``g0: (S, A)``, ``K: (S, A, n)`` (numpy, float64); ``valid: (S, A)`` bool marks the options
    that count (an option equal to another by construction, e.g. an action whose transitions
    copy a lower-numbered action's, must be left out: its ties are not boundaries). ``jump``
    is the region-wise term of the potential (see the module doc).
    """

    def __init__(self, g0: np.ndarray, K: np.ndarray, valid: np.ndarray, jump):
        # copies: a numpy view of a torch tensor dangles once pickling for a chain's process
        # moves the tensor's storage to shared memory
        self.S, self.A, self.n = K.shape
        self.g0 = np.array(g0, dtype=np.float64).reshape(-1)
        self.K = np.array(K, dtype=np.float64).reshape(self.S * self.A, self.n)
        self.valid = np.array(valid, dtype=bool)
        self.invalid = ~self.valid
        self.jump = jump
        self._rows = np.arange(self.S)
        self._gram_of = self._gram = None
        self._end = None  # (w, scores, region) where the last drift ended

    def scores(self, w: np.ndarray) -> np.ndarray:
        g = (self.g0 + self.K @ w).reshape(self.S, self.A)
        g[self.invalid] = -np.inf
        return g

    def _scores_and_region(self, w: np.ndarray):
        """Scores ``(S, A)`` and region ``(S,)`` at ``w``, those the last drift carried to its
        end when it ended at ``w`` (the next potential and the next drift start there)."""
        if self._end is not None and np.array_equal(self._end[0], w):
            return self._end[1], self._end[2]
        g = self.scores(w)
        return g, g.argmax(-1)

    def region(self, w: np.ndarray) -> np.ndarray:
        """``(S,)`` argmax of each group at ``w``."""
        return self._scores_and_region(w)[1].copy()

    def gram(self, inverse_mass: np.ndarray) -> np.ndarray | None:
        """``K M^-1 K^T: (S A, S A)``, the scores' velocities per unit of each score's
        gradient as momentum, kept while the inverse mass stays the same (the adaptation
        changes it a few times per warmup); None beyond :data:`_GRAM_MAX` options."""
        if self.S * self.A > _GRAM_MAX:
            return None
        if self._gram_of is None or not np.array_equal(self._gram_of, inverse_mass):
            # one BLAS thread: a threaded product sums in another order, and chains in
            # processes (one thread) must draw what sequential chains draw, bit for bit
            with threadpoolctl.threadpool_limits(1, user_api="blas"):
                km = self.K * inverse_mass if inverse_mass.ndim == 1 else self.K @ inverse_mass
                self._gram, self._gram_of = km @ self.K.T, inverse_mass.copy()
        return self._gram

    def drift(self, w: np.ndarray, p: np.ndarray, t: float, inverse_mass: np.ndarray):
        """Move ``w`` along the velocity ``M^-1 p`` for time ``t`` (negative: backwards),
        refracting or reflecting ``p`` at each boundary. ``inverse_mass``: ``(n,)`` diagonal
        or ``(n, n)``. Returns ``(w, p, n_refracted, n_reflected)``."""
        def times_minv(x):
            return inverse_mass * x if inverse_mass.ndim == 1 else inverse_mass @ x

        sign = 1.0 if t >= 0 else -1.0
        p, left = sign * p, abs(t)            # a backward drift is a forward one with -p
        rows, S, A = self._rows, self.S, self.A
        gram = self.gram(inverse_mass)
        g, region = self._scores_and_region(w)
        v = times_minv(p)
        dg = (self.K @ v).reshape(S, A)       # d G / d time
        skip = None                           # the boundary the drift stands on
        refracted = reflected = 0
        for _ in range(_MAX_CROSSINGS):
            gap = np.maximum(g[rows, region][:, None] - g, 0.0)
            closing = dg - dg[rows, region][:, None]
            ok = (closing > 0) & self.valid      # False at region: closing is exactly 0
            if skip is not None:
                ok[skip] = False
            times = np.divide(gap, closing, out=np.full((S, A), np.inf), where=ok)
            k = int(times.argmin())
            tk = float(times.flat[k])
            if tk >= left:
                w = w + left * v
                self._end = (w, g + left * dg, region)
                return w.copy(), sign * p, refracted, reflected
            s, a = divmod(k, A)
            w, g, left = w + tk * v, g + tk * dg, left - tk
            delta, commit = self.jump.change(region, s, a)
            i, j = s * A + a, s * A + int(region[s])
            normal = self.K[i] - self.K[j]
            m_normal = times_minv(normal)
            if gram is None:
                scale = math.sqrt(float(normal @ m_normal))
            else:
                scale = math.sqrt(float(gram[i, i] + gram[j, j] - 2.0 * gram[i, j]))
            speed = float(v @ normal) / scale     # > 0: the drift moves into option a
            if speed * speed > 2.0 * delta:
                new_speed = math.sqrt(speed * speed - 2.0 * delta)
                skip = (s, int(region[s]))
                region = commit()
                refracted += 1
            else:
                new_speed = -speed
                skip = (s, a)
                reflected += 1
            step = (new_speed - speed) / scale
            p, v = p + step * normal, v + step * m_normal
            # d G / d time moves by K M^-1 normal: rows of the (symmetric) Gram matrix
            dg = dg + step * (self.K @ m_normal if gram is None
                              else gram[i] - gram[j]).reshape(S, A)
        raise RuntimeError(f"a drift crossed more than {_MAX_CROSSINGS} region boundaries")


class RefractiveNUTS(IntegratorNUTS):
    """Pyro's NUTS with a leapfrog whose drift reflects and refracts at the boundaries of
    ``regions`` (:class:`ArgmaxRegions`); ``potential_fn`` must include ``regions.jump``'s
    value at the region of its argument and be smooth within each region. The tree building,
    adaptation and multinomial sampling are Pyro's (through
    :class:`~bayesirl.inference.pyro_nuts.IntegratorNUTS`). One unconstrained site,
    ``"w": (n,)``. :meth:`counters` reports the crossings that refracted and reflected.
    """

    def __init__(self, potential_fn, regions: ArgmaxRegions, **kwargs):
        super().__init__(potential_fn, **kwargs)
        self.regions = regions
        self.n_refracted = self.n_reflected = 0

    def counters(self) -> dict[str, int]:
        return {"n_refracted": self.n_refracted, "n_reflected": self.n_reflected}

    def leapfrog(self, z, r, z_grads, step_size):
        """One velocity-Verlet step whose drift goes through :meth:`ArgmaxRegions.drift`."""
        w, p = z["w"], r["w"] - 0.5 * step_size * z_grads["w"]
        inverse_mass = self.inverse_mass_matrix[("w",)]
        w_new, p_new, refracted, reflected = self.regions.drift(
            w.detach().cpu().double().numpy(), p.detach().cpu().double().numpy(), step_size,
            inverse_mass.detach().cpu().double().numpy())
        self.n_refracted += refracted
        self.n_reflected += reflected
        z_new = {"w": torch.as_tensor(w_new).to(w)}
        z_grads, potential_energy = potential_grad(self.potential_fn, z_new)
        r_new = {"w": torch.as_tensor(p_new).to(p) - 0.5 * step_size * z_grads["w"]}
        return z_new, r_new, z_grads, potential_energy
