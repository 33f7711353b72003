"""The one module that reaches into Pyro's private NUTS/HMC internals.

Pyro's NUTS hard-wires its integrator (velocity Verlet inside ``NUTS._build_basetree``) and keeps
what happened in an iteration (divergences, the last potential energy, the momentum it drew) in
private attributes. Two things need them:

- :class:`IntegratorNUTS`: NUTS whose base tree takes one step of an integrator that a subclass
  supplies (:meth:`IntegratorNUTS.leapfrog`); refraction
  (:mod:`bayesirl.inference.refraction`) is such an integrator. Pyro's tree building, step-size
  and mass-matrix adaptation and multinomial sampling are used unchanged.
- :class:`Recorder`: per-draw sample stats (energy for E-BFMI, leapfrog steps, tree depth,
  divergence, step size, the integrator's own counters).

Every private symbol used here is listed in :data:`PRIVATE_SYMBOLS` with the form it must have;
tests/test_inference_pyro_internals.py checks each against the installed Pyro, so a Pyro release
outside :data:`TESTED_PYRO` that moves one fails loudly instead of sampling wrongly.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions.util import scalar_like
from pyro.infer.mcmc import NUTS
from pyro.infer.mcmc.nuts import _TreeInfo

__all__ = ["PRIVATE_SYMBOLS", "TESTED_PYRO", "IntegratorNUTS", "Recorder"]

#: The pyro-ppl versions this module was written against (pyproject.toml pins the same).
TESTED_PYRO = ">=1.9,<1.10"

#: ``name -> (kind, form)``: each private Pyro symbol this module uses. ``kind`` is
#: ``"namedtuple"`` (form: its fields), ``"method"`` (form: its parameter names) or
#: ``"attribute"`` (form: the type of its value on an HMC/NUTS kernel after ``setup``).
PRIVATE_SYMBOLS = {
    "pyro.infer.mcmc.nuts._TreeInfo": (
        "namedtuple", ("z_left", "r_left", "r_left_unscaled", "z_left_grads", "z_right",
                       "r_right", "r_right_unscaled", "z_right_grads", "z_proposal",
                       "z_proposal_pe", "z_proposal_grads", "r_sum", "weight", "turning",
                       "diverging", "sum_accept_probs", "num_proposals")),
    "NUTS._build_basetree": (
        "method", ("self", "z", "r", "z_grads", "log_slice", "direction", "energy_current")),
    "HMC._sample_r": ("method", ("self", "name")),
    "HMC._kinetic_energy": ("method", ("self", "r_unscaled")),
    "HMC._divergences": ("attribute", list),
    "HMC._potential_energy_last": ("attribute", torch.Tensor),
    "HMC._max_sliced_energy": ("attribute", (int, float)),
}


class IntegratorNUTS(NUTS):
    """Pyro's NUTS with the base tree's leapfrog step delegated to :meth:`leapfrog`.

    A subclass implements ``leapfrog(z, r, z_grads, step_size) -> (z, r, z_grads,
    potential_energy)`` (dicts of site tensors, a negative ``step_size`` integrating backwards)
    and may report its own per-kernel counters through :meth:`counters`, which
    :class:`Recorder` turns into per-draw sample stats. Multinomial sampling only.
    """

    def __init__(self, potential_fn, **kwargs):
        super().__init__(potential_fn=potential_fn, **kwargs)
        if not self.use_multinomial_sampling:
            raise ValueError(f"{type(self).__name__} builds trees with multinomial sampling "
                             "only")

    def leapfrog(self, z, r, z_grads, step_size):
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        """Running totals the integrator keeps (e.g. boundary crossings); none by default."""
        return {}

    def _build_basetree(self, z, r, z_grads, log_slice, direction, energy_current):
        # Pyro's NUTS._build_basetree (multinomial sampling) with self.leapfrog for
        # velocity_verlet
        step_size = self.step_size if direction == 1 else -self.step_size
        z_new, r_new, z_grads, potential_energy = self.leapfrog(z, r, z_grads, step_size)
        r_new_unscaled = self.mass_matrix_adapter.unscale(r_new)
        energy_new = potential_energy + self._kinetic_energy(r_new_unscaled)
        if torch.isnan(energy_new):
            energy_new = scalar_like(energy_new, float("inf"))
        sliced_energy = energy_new + log_slice
        diverging = sliced_energy > self._max_sliced_energy
        accept_prob = (energy_current - energy_new).exp().clamp(max=1.0)
        return _TreeInfo(z_new, r_new, r_new_unscaled, z_grads, z_new, r_new, r_new_unscaled,
                         z_grads, z_new, potential_energy, z_grads, r_new_unscaled,
                         -sliced_energy, False, diverging, accept_prob, 1)


class Recorder:
    """Wraps a Pyro HMC/NUTS kernel to record per-draw sample stats.

    :meth:`step` returns the kernel's next draw and a dict of floats: the Hamiltonian after
    momentum resampling (``energy``, for E-BFMI), ``lp`` (minus the potential), the step size,
    whether the iteration diverged, for NUTS the number of leapfrog steps and the tree depth, and
    for an :class:`IntegratorNUTS` the increments of its :meth:`~IntegratorNUTS.counters` (for
    refraction ``n_refracted`` and ``n_reflected``: many reflections mean walls of the jump term
    that the momentum could not pay to cross).
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.n_leapfrog = 0
        self.r_unscaled = None
        sample_r = kernel._sample_r

        def _sample_r(name):
            r, r_unscaled = sample_r(name)
            self.r_unscaled = r_unscaled
            return r, r_unscaled

        kernel._sample_r = _sample_r
        if isinstance(kernel, NUTS):
            build = kernel._build_basetree

            def _build_basetree(*args, **kwargs):
                self.n_leapfrog += 1
                return build(*args, **kwargs)

            kernel._build_basetree = _build_basetree

    def step(self, params):
        kernel = self.kernel
        n_div = len(kernel._divergences)
        self.n_leapfrog = 0
        pe_before = kernel._potential_energy_last
        counted = isinstance(kernel, IntegratorNUTS)
        before = kernel.counters() if counted else None
        params = kernel.sample(params)
        stats = {"step_size": float(kernel.step_size),
                 "diverging": len(kernel._divergences) > n_div}
        if counted:
            stats.update({k: v - before[k] for k, v in kernel.counters().items()})
        if self.r_unscaled is not None and pe_before is not None:
            stats["energy"] = float(pe_before + kernel._kinetic_energy(self.r_unscaled))
        stats["lp"] = -float(kernel._potential_energy_last)
        if isinstance(kernel, NUTS):
            stats["n_steps"] = self.n_leapfrog
            stats["tree_depth"] = int(math.floor(math.log2(max(self.n_leapfrog, 1)))) + 1
        return params, stats

