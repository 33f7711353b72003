"""Many chains in lockstep in one process: ChEES-HMC on a potential batched over chains.

NUTS builds a tree of a different depth in every chain, so its chains cannot share a planner
call; HMC with one trajectory length for all chains can. ChEES-HMC (Hoffman, Radul & Sountsov
2021, "An adaptive-MCMC scheme for setting trajectory lengths in Hamiltonian Monte Carlo",
AISTATS) adapts that length from the ensemble itself, so ``C`` chains advance together and each
leapfrog step is ONE call of the target's potential on ``u: {site: (C, *shape)}`` returning
``(C,)``: for a reward-space :class:`~bayesirl.inference.target.Target`, one batched soft value
iteration forward and backward for all chains.

One iteration, all chains at once (positions ``q: (C, d)``, an inverse mass ``M^-1``, diagonal
``(d,)`` or dense ``(d, d)``):

- momenta ``p ~ N(0, M)``; a trajectory of ``L = ceil(h_n T / eps)`` velocity Verlet
  steps, ``T`` the adapted trajectory length and ``h_n`` in ``(0, 1)`` the ``n``-th point of the
  base-2 Halton sequence (jitter: a fixed length resonates with some periods of the target; the
  quasi-random sequence covers ``(0, 1)`` more evenly than uniform draws), shared by all chains;
- a Metropolis correction per chain (``min(1, exp(H0 - H1))``); a chain whose energy error
  exceeds :data:`MAX_ENERGY_ERROR` or whose potential or gradient stops being finite diverges:
  it stops moving for the rest of the trajectory and keeps its position.

Warmup, from the ensemble's statistics:

- step size: dual averaging (Hoffman & Gelman 2014) of ``target_accept`` minus the *harmonic*
  mean of the non-divergent chains' acceptance probabilities (the harmonic mean is small when a
  few chains are stuck, which a mean would hide), target 0.651 (Beskos et al. 2013's optimum
  for HMC); after warmup the dual average of the last adaptation window.
- trajectory length: gradient ascent of the ChEES criterion
  ``E[(|z' - E z|^2 - |z - E z|^2)^2] / 4`` in log ``T`` (the change of the centred squared
  norm over one transition; maximising it decorrelates second moments, which a maximal
  expected squared jump does not: that favours anti-correlated proposals). Its gradient per
  chain is ``h_n T (|z'-zbar'|^2 - |z-zbar|^2) (z'-zbar') . dz'/dt``, averaged with the chains'
  acceptance probabilities as weights, the centres the ensemble's means; computed in the
  coordinates whitened by the mass matrix (``z = L^-1 q``, ``M^-1 = L L^T``), so every
  parameter weighs alike. Adam with no momentum (each step moves log T by about the learning
  rate), steps clipped to +-0.35, ``T`` at most ``max_leapfrog_steps * eps``; after warmup the
  geometric mean of ``T`` over the terminal buffer (at least ``eps``).
- mass matrix: windows as Stan's (an initial buffer, doubling windows, a terminal buffer); at
  the end of each window the inverse mass is the variance (diagonal) or covariance (dense) of
  the positions the chains visited in it (pooled over chains and iterations, shrunk towards
  1e-3 as Stan does), after which the step size is searched again, its dual averaging restarts
  and ``T`` is rescaled by how much the slow coordinates' time scale changed (climbing from
  where it was would leave it at a later, lower local maximum of the criterion).

Everything random comes from one ``torch.Generator`` seeded with ``seed``, so a run is a pure
function of its inputs and the same in any process (bit for bit, given the potential is).

:func:`chees_hmc` is the sampler on a flat potential ``(C, d) -> (C,)``; :func:`run_vectorized`
runs it on an inference target for ``infer(..., chain_method="vectorized")``, and
:func:`use_vectorized` is the rule that picks it.

When ``infer()`` picks it (``chain_method=None``): with at least :data:`AUTO_MIN_CHAINS` chains
of NUTS/HMC on a target whose potential batches over chains (:func:`batch_refusal` is None: a
reward-space :class:`~bayesirl.inference.target.Target`, or a target declaring
:class:`ChainBatched`), when the chains would move in reward space (``space="reward"``, or
``"auto"`` where value space does not apply) and no ``parallel=True``, ``executor`` or
``max_workers`` asks for independent chains. From 8 rows on the planner's compiled kernel runs
with the batch innermost (SIMD over chains), and one process needs no ``if __name__ ==
"__main__":`` guard, spawns nothing and holds one copy of the problem: a script asking for many
chains runs them without processes. (Fewer chains stay independent NUTS chains, whose
processes start without re-running an unguarded script: :mod:`bayesirl.inference.executors`.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from bayesirl.core.flat import flattening
from bayesirl.inference import executors
from bayesirl.inference.map import fit_map
from bayesirl.inference.target import Refracting, Rewhitening, Target

__all__ = ["AUTO_MIN_CHAINS", "CHAIN_METHODS", "DENSE_MAX_PARAMS", "MAX_ENERGY_ERROR",
           "TARGET_ACCEPT", "THREADED_SWEEP", "batch_threads",
           "ChainBatched", "EnsembleDraws", "EnsembleOptions", "EnsembleRun", "batch_refusal",
           "chees_hmc", "halton", "run_vectorized", "use_vectorized", "warmup_windows"]

#: ``chain_method`` values of ``infer()``: None picks (see the module doc); "vectorized" runs
#: this module's ensemble; "independent" runs independent NUTS/HMC chains (processes or one
#: after another, as ``parallel`` says).
CHAIN_METHODS = (None, "vectorized", "independent")
#: The fewest chains for which ``chain_method=None`` picks the vectorized ensemble.
AUTO_MIN_CHAINS = 8
#: Harmonic-mean acceptance the step size is adapted to (Beskos et al. 2013's optimum for HMC).
TARGET_ACCEPT = 0.651
#: Up to this many parameters the ensemble adapts a dense mass matrix by default.
DENSE_MAX_PARAMS = 50
#: An energy error above this (in nats) is a divergence, as in Stan and Pyro.
MAX_ENERGY_ERROR = 1000.0
_CLIP_LOG_T = 0.35
_ADAM_BETA2 = 0.95


@runtime_checkable
class ChainBatched(Protocol):
    """A target (other than the reward-space :class:`~bayesirl.inference.target.Target`, which
    batches by construction) declaring that its ``potential(u)`` accepts ``u`` with a leading
    chain dim ``{site: (C, *shape)}`` and returns ``(C,)``: set ``chain_batched = True``."""

    chain_batched: bool


# ---------------------------------------------------------------------------- small pieces
def halton(n: int, base: int = 2) -> float:
    """The ``n``-th point (``n >= 1``) of the van der Corput sequence in ``base``: the digits
    of ``n`` mirrored around the radix point; points 1..2^k fill ``(0, 1)`` evenly."""
    x, f = 0.0, 1.0 / base
    while n > 0:
        n, digit = divmod(n, base)
        x += digit * f
        f /= base
    return x


def warmup_windows(warmup: int) -> tuple[int, list[int]]:
    """``(first, window_ends)``: Stan's adaptation schedule for ``warmup`` iterations.

    An initial buffer (75 iterations, or 15% of a short warmup) adapts the step size and
    trajectory length only; the first slow window starts at iteration ``first``; windows of 25,
    50, 100, ... iterations (the last stretched to the terminal buffer) each end with a new mass
    matrix after iteration ``window_ends[i] - 1``; a terminal buffer (50 iterations, or 10%)
    adapts the step size and trajectory length to the final mass matrix, from
    ``window_ends[-1]`` on. No windows (``window_ends`` empty, ``first == warmup``) when
    ``warmup < 20``."""
    if warmup < 20:
        return warmup, []
    init, term, base = 75, 50, 25
    if init + term + base > warmup:
        init, term = int(0.15 * warmup), int(0.1 * warmup)
        base = warmup - init - term
    ends, start, size = [], init, base
    last = warmup - term
    while start < last:
        end = start + size
        if end + 2 * size > last:  # the next window would not fit: stretch this one
            end = last
        ends.append(end)
        start, size = end, 2 * size
    return init, ends


class _DualAveraging:
    """Nesterov's dual averaging of log step size (Hoffman & Gelman 2014, Algorithm 5), with
    their constants: ``gamma`` 0.05, ``t0`` 10, ``kappa`` 0.75, centred on ``log(10 eps0)``."""

    def __init__(self, step_size: float):
        self.mu = math.log(10 * step_size)
        self.t, self.h_bar, self.log_eps_bar = 0, 0.0, math.log(step_size)
        self.log_eps = math.log(step_size)

    def update(self, statistic: float) -> float:
        """One step on ``statistic = target - acceptance``; returns the next step size."""
        self.t += 1
        t = self.t
        self.h_bar += (statistic - self.h_bar) / (t + 10.0)
        self.log_eps = self.mu - math.sqrt(t) / 0.05 * self.h_bar
        w = t ** -0.75
        self.log_eps_bar = w * self.log_eps + (1 - w) * self.log_eps_bar
        return math.exp(self.log_eps)

    @property
    def final(self) -> float:
        return math.exp(self.log_eps_bar)


# ---------------------------------------------------------------------------- the sampler
class EnsembleRun(NamedTuple):
    """What :func:`chees_hmc` returns.

    ``draws (C, n, d)``; ``stats {name: (C, n)}``: ``acceptance_rate``, ``step_size``,
    ``n_steps`` (leapfrog steps of the iteration), ``diverging``, ``energy`` (the Hamiltonian
    after the momentum refresh, for E-BFMI), ``lp`` (minus the potential at the draw);
    the adapted ``step_size``, ``trajectory_length`` and ``inv_mass`` (``(d,)``, or ``(d, d)``
    when dense); ``gradients``: the
    batched potential-and-gradient calls made (each for all ``C`` chains); ``interrupted``: the
    run stopped early (``n`` is then the draws made)."""

    draws: torch.Tensor
    stats: dict[str, torch.Tensor]
    step_size: float
    trajectory_length: float
    inv_mass: torch.Tensor
    gradients: int
    interrupted: bool


def _value_and_grad(potential_fn: Callable, q: torch.Tensor):
    """``(U (C,), dU/dq (C, d))``, detached; the rows are independent chains, so the gradient
    of the sum is each chain's gradient."""
    q = q.detach().requires_grad_(True)
    with torch.enable_grad():
        u = potential_fn(q)
        if u.shape != q.shape[:1]:
            raise ValueError(f"the potential returned shape {tuple(u.shape)} for "
                             f"{q.shape[0]} chains, expected ({q.shape[0]},): the target's "
                             "potential must batch over a leading chain dim")
        (g,) = torch.autograd.grad(u.sum(), q)
    return u.detach(), g


def _energy_ok(u, g):
    return torch.isfinite(u) & torch.isfinite(g).all(-1)


class _Metric:
    """The kinetic energy ``p^T Minv p / 2`` of an inverse mass ``Minv``: diagonal ``(d,)`` or
    dense ``(d, d) = L L^T``. Positions whitened by it, ``z = L^{-1} q``, have unit scale."""

    def __init__(self, inv_mass: torch.Tensor):
        self.inv_mass = inv_mass
        self.dense = inv_mass.dim() == 2
        self.root = torch.linalg.cholesky(inv_mass) if self.dense else inv_mass.sqrt()

    def momentum(self, noise):
        """``p ~ N(0, Minv^{-1})`` from standard normal ``noise (C, d)``."""
        if self.dense:
            return torch.linalg.solve_triangular(self.root.T, noise.T, upper=True).T
        return noise / self.root

    def velocity(self, p):
        return p @ self.inv_mass if self.dense else p * self.inv_mass

    def kinetic(self, p):
        return 0.5 * (p * self.velocity(p)).sum(-1)

    def whiten(self, q):
        if self.dense:
            return torch.linalg.solve_triangular(self.root, q.T, upper=False).T
        return q / self.root

    def whitened_velocity(self, p):
        """``dz/dt = L^{-1} Minv p = L^T p``."""
        return p @ self.root if self.dense else p * self.root

    def variances(self):
        return self.inv_mass.diagonal() if self.dense else self.inv_mass


def _trajectory(vg, q0, p0, u0, g0, eps, metric, n_steps):
    """``n_steps`` velocity Verlet steps of every chain from ``(q0, p0)``. Returns the end
    ``(q, p, u, g)`` and which chains diverged mid-way (non-finite potential or gradient):
    those stop at their start, with the start's potential and gradient."""
    q, u, g = q0, u0, g0
    p = p0 - 0.5 * eps * g0
    active = torch.ones(q0.shape[0], dtype=torch.bool, device=q0.device)
    for i in range(n_steps):
        q = torch.where(active[:, None], q + eps * metric.velocity(p), q)
        u, g = vg(q)
        bad = active & ~_energy_ok(u, g)
        if bad.any():
            active = active & ~bad
            q = torch.where(bad[:, None], q0, q)
            u = torch.where(bad, u0, u)
            g = torch.where(bad[:, None], g0, g)
        step = eps if i < n_steps - 1 else 0.5 * eps
        p = torch.where(active[:, None], p - step * g, p)
    return q, p, u, g, ~active


def _harmonic_mean(accept, diverging) -> float:
    ok = ~diverging
    if not ok.any():
        return 0.0
    a = accept[ok]
    if (a <= 0).any():
        return 0.0
    return float(1.0 / (1.0 / a).mean())


def _find_step_size(vg, q, u, g, metric, eps, generator) -> float:
    """Double or halve ``eps`` until one leapfrog step's mean acceptance over the chains
    crosses 0.5 (as Stan and Pyro start their dual averaging), at most 50 times."""
    direction = 0
    for _ in range(50):
        p = torch.randn(q.shape, generator=generator, dtype=q.dtype, device=q.device)
        p = metric.momentum(p)
        q1, p1, u1, g1, bad = _trajectory(vg, q, p, u, g, eps, metric, 1)
        delta = (u + metric.kinetic(p)) - (u1 + metric.kinetic(p1))
        accept = torch.where(bad | torch.isnan(delta), torch.zeros_like(delta),
                             delta.clamp(max=0).exp())
        up = float(accept.mean()) > 0.5
        d = 1 if up else -1
        if direction and d != direction:
            break
        direction = d
        eps = eps * 2.0 if up else eps / 2.0
        if not 1e-10 < eps < 1e7:
            break
    return eps


def chees_hmc(potential_fn: Callable[[torch.Tensor], torch.Tensor], init: torch.Tensor,
              num_samples: int, warmup: int, *, seed: int = 0,
              target_accept: float = TARGET_ACCEPT, max_leapfrog_steps: int = 1000,
              learning_rate: float = 0.05, adapt_mass: bool = True, dense_mass: bool = False,
              progress: bool = True,
              desc: str = "chees-hmc") -> EnsembleRun:
    """ChEES-HMC (see the module doc) of ``C`` chains in lockstep.

    Args:
        potential_fn: ``q (C, d) -> U (C,)``, minus the log density of each row, differentiable
            (rows independent: one row's value must not depend on another's).
        init: ``(C, d)`` starting positions, ``C >= 2`` (the adaptation uses the ensemble's
            means and variances).
        num_samples, warmup: iterations kept and adaptation iterations before them.
        seed: seeds the momenta, the Metropolis draws and the step-size search.
        target_accept: harmonic-mean acceptance the step size is adapted to, in ``(0, 1)``.
        max_leapfrog_steps: the longest trajectory in steps.
        learning_rate: Adam's step in log trajectory length.
        adapt_mass: adapt the mass matrix in windows (else the identity).
        dense_mass: adapt a dense inverse mass matrix (the positions' covariance) instead of a
            diagonal one (their variances): correlated parameters need it (one-hot features,
            whose sum the soft likelihood cannot see), and ``C`` chains give ``C`` draws per
            iteration to estimate it from.
        progress: a tqdm bar; ``desc`` its label.

    Returns:
        :class:`EnsembleRun`. Ctrl-C (or a stop requested by the process running the job,
        :func:`~bayesirl.inference.executors.stop_requested`) during sampling returns the draws
        made so far with ``interrupted`` set; during warmup it raises KeyboardInterrupt.
    """
    if not isinstance(init, torch.Tensor) or init.dim() != 2 or init.shape[0] < 2:
        shape = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
        raise ValueError(f"init has shape {shape}, expected (chains, d) with chains >= 2")
    for name, value, low in (("num_samples", num_samples, 1), ("warmup", warmup, 0),
                             ("max_leapfrog_steps", max_leapfrog_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} is {value!r}, expected an integer >= {low}")
    for name, value in (("target_accept", target_accept), ("learning_rate", learning_rate)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"{name} is {value!r}, expected a number in (0, 1)")
    C, d = init.shape
    generator = torch.Generator(device=init.device).manual_seed(int(seed))
    dtype, device = init.dtype, init.device

    def vg(q):
        return _value_and_grad(potential_fn, q)

    calls = 0

    def counted(q):
        nonlocal calls
        calls += 1
        return vg(q)

    q = init.detach().clone()
    u, g = counted(q)
    if not _energy_ok(u, g).all():
        bad = int((~_energy_ok(u, g)).nonzero()[0, 0])
        raise ValueError(f"the potential or its gradient is not finite at init[{bad}]")
    metric = _Metric(torch.ones(d, dtype=dtype, device=device))
    eps = _find_step_size(counted, q, u, g, metric, 1.0, generator)
    log_t = math.log(eps)
    adam_v, adam_k = 0.0, 0
    da = _DualAveraging(eps)
    first, ends = warmup_windows(warmup) if adapt_mass else (warmup, [])
    # T's final value averages log T from here on (the mass matrix final)
    terminal = ends[-1] if ends else warmup - max(1, warmup // 5)
    window: list[torch.Tensor] = []
    log_t_sum, log_t_n = 0.0, 0
    # one (draw, stats) record per kept iteration, appended whole: a Ctrl-C between two
    # bytecodes keeps both or neither, so the draws and every statistic keep one length
    kept: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
    interrupted = False
    bar = tqdm(total=warmup + num_samples, desc=f"{desc} ({C} chains)", disable=not progress,
               leave=False)
    try:
        for it in range(warmup + num_samples):
            if executors.stop_requested():
                raise KeyboardInterrupt
            adapting = it < warmup
            t_len = math.exp(log_t)
            h = halton(it + 1)
            n_steps = max(1, min(max_leapfrog_steps, math.ceil(h * t_len / eps)))
            p0 = torch.randn((C, d), generator=generator, dtype=dtype, device=device)
            p0 = metric.momentum(p0)
            h0 = u + metric.kinetic(p0)
            q1, p1, u1, g1, bad = _trajectory(counted, q, p0, u, g, eps, metric, n_steps)
            h1 = u1 + metric.kinetic(p1)
            delta = h0 - h1
            diverging = bad | ~torch.isfinite(delta) | (-delta > MAX_ENERGY_ERROR)
            accept_prob = torch.where(diverging, torch.zeros_like(delta),
                                      delta.clamp(max=0).exp())
            uniform = torch.rand(C, generator=generator, dtype=dtype, device=device)
            accepted = uniform < accept_prob
            if adapting:
                # ChEES gradient in log T from the proposals, before the Metropolis choice
                z0 = metric.whiten(q)
                z1 = torch.where(diverging[:, None], z0, metric.whiten(q1))
                dz1 = torch.where(diverging[:, None], torch.zeros_like(p1),
                                  metric.whitened_velocity(p1))
                ok = ~diverging
                if ok.sum() >= 2:
                    c0 = z0 - z0[ok].mean(0)
                    c1 = z1 - z1[ok].mean(0)
                    change = (c1 * c1).sum(-1) - (c0 * c0).sum(-1)
                    per_chain = h * t_len * change * (c1 * dz1).sum(-1)
                    w = torch.where(ok, accept_prob, torch.zeros_like(accept_prob))
                    grad = float((w * per_chain).sum() / (w.sum() + 1e-20))
                    if math.isfinite(grad):
                        adam_k += 1
                        adam_v = _ADAM_BETA2 * adam_v + (1 - _ADAM_BETA2) * grad * grad
                        v_hat = adam_v / (1 - _ADAM_BETA2 ** adam_k)
                        step = learning_rate * grad / (math.sqrt(v_hat) + 1e-20)
                        log_t += max(-_CLIP_LOG_T, min(_CLIP_LOG_T, step))
                eps = da.update(target_accept - _harmonic_mean(accept_prob, diverging))
            q = torch.where(accepted[:, None], q1, q)
            u = torch.where(accepted, u1, u)
            g = torch.where(accepted[:, None], g1, g)
            if adapting:
                if ends and it >= first:
                    window.append(q)
                if ends and it + 1 == ends[0]:
                    ends.pop(0)
                    new = _Metric(_window_estimate(torch.stack(window), dense_mass))
                    log_t += _time_rescaling(metric.variances(), new.variances())
                    metric, window = new, []
                    eps = _find_step_size(counted, q, u, g, metric, eps, generator)
                    da = _DualAveraging(eps)
                if it >= terminal:
                    log_t_sum, log_t_n = log_t_sum + log_t, log_t_n + 1
                log_t = min(log_t, math.log(max_leapfrog_steps * eps))
                if it + 1 == warmup:
                    eps = da.final
                    if log_t_n:
                        log_t = log_t_sum / log_t_n
                    log_t = min(max(log_t, math.log(eps)), math.log(max_leapfrog_steps * eps))
            else:
                row = {name: value.detach().cpu() for name, value in (
                    ("acceptance_rate", accept_prob),
                    ("step_size", torch.full((C,), eps, dtype=dtype)),
                    ("n_steps", torch.full((C,), n_steps)),
                    ("diverging", diverging), ("energy", h0), ("lp", -u))}
                kept.append((q, row))
            bar.update()
            if it % 10 == 0:
                bar.set_postfix(step_size=f"{eps:.2g}", steps=n_steps)
    except KeyboardInterrupt:
        if not kept:
            raise KeyboardInterrupt("inference interrupted before any draw was made") from None
        interrupted = True
    finally:
        bar.close()
    draws = torch.stack([q for q, _ in kept], 1)
    out_stats = {k: torch.stack([row[k] for _, row in kept], 1) for k in kept[0][1]}
    return EnsembleRun(draws, out_stats, eps, math.exp(log_t), metric.inv_mass, calls,
                       interrupted)


def _time_rescaling(old: torch.Tensor, new: torch.Tensor) -> float:
    """The change of log trajectory length that keeps a trajectory's angle in the slow modes
    when the inverse mass goes from ``old`` to ``new``: a coordinate of variance ``s2`` moves
    at frequency ``sqrt(m / s2)``, so its time scale changes by ``sqrt(old / new)``; averaged
    in logs with the ChEES criterion's weights, the squared whitened variances
    ``(new / old)^2`` (``new`` estimating ``s2``)."""
    w = (new / old) ** 2
    return float((w * 0.5 * torch.log(old / new)).sum() / w.sum())


def _window_estimate(window: torch.Tensor, dense: bool) -> torch.Tensor:
    """The inverse mass from the positions ``window: (iterations, C, d)`` pooled: their
    variances ``(d,)``, or with ``dense`` their covariance ``(d, d)``, shrunk towards 1e-3 (times
    the identity) with weight ``5 / (n + 5)``, ``n`` the pooled draws (Stan's regularisation)."""
    x = window.reshape(-1, window.shape[-1])
    n = x.shape[0]
    w = n / (n + 5.0)
    if dense:
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        cov = torch.cov(x.T).reshape(x.shape[-1], x.shape[-1]) if n > 1 else eye
        return w * cov + 1e-3 * (1 - w) * eye
    var = x.var(0) if n > 1 else torch.ones_like(x[0])
    return w * var + 1e-3 * (1 - w)


# ---------------------------------------------------------------------------- on a target
def batch_refusal(target) -> str | None:
    """Why ``target``'s potential cannot take all chains at once, or None when it can: a
    reward-space :class:`~bayesirl.inference.target.Target` (its prior and likelihood take
    any leading batch shape; its fused one-chain potential steps aside for a batch) or a
    :class:`ChainBatched` target with ``chain_batched = True``."""
    if isinstance(target, (Refracting, Rewhitening)) and not isinstance(target, Target):
        return (f"a {type(target).__name__} target moves each chain in coordinates of its own "
                "(value space: whitened per chain, refracting at the greedy policy's jumps)")
    if isinstance(target, Target):
        return None
    if isinstance(target, ChainBatched) and target.chain_batched is True:
        return None
    return (f"a {type(target).__name__} target's potential takes one chain at a time (a target "
            "whose potential(u) takes u = {site: (C, *shape)} and returns (C,) declares "
            "chain_batched = True)")


def _reward_space_only(target, method: str, space: str) -> bool:
    """Whether the chains would move in reward space: ``space="reward"``, or ``"auto"`` where
    value space does not apply."""
    from bayesirl.inference.value_space import ineligible

    if space == "reward" or not isinstance(target, Target):
        return True
    return space == "auto" and ineligible(target, method) is not None


def use_vectorized(chain_method, target, method: str, space: str, num_chains: int, *,
                   parallel: bool | None = None, executor=None,
                   max_workers: int | None = None) -> bool:
    """Whether ``infer()`` runs its chains as this module's ensemble (see the module doc for
    the rule of ``chain_method=None``; ``parallel=True``, an ``executor`` or ``max_workers``
    ask for independent chains, so the rule then says no). ``chain_method="vectorized"``
    where it cannot apply raises a ValueError saying why."""
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"chain_method is {chain_method!r}, expected one of {CHAIN_METHODS}")
    if chain_method == "independent":
        return False
    independent = next((f"{name}={value!r}" if name != "executor" else "an executor"
                        for name, value in (("parallel", parallel), ("executor", executor),
                                            ("max_workers", max_workers))
                        if value is not None and value is not False), None)
    why = batch_refusal(target)
    if chain_method is None:
        return (method in ("nuts", "hmc") and num_chains >= AUTO_MIN_CHAINS and why is None
                and independent is None and _reward_space_only(target, method, space))
    if independent is not None:
        raise ValueError(f"chain_method='vectorized' runs every chain in this process, but "
                         f"{independent} was given, which places independent chains; leave "
                         "it unset, or use chain_method='independent'")
    if method not in ("nuts", "hmc"):
        raise ValueError(f"chain_method='vectorized' runs MCMC chains; method is {method!r}, "
                         "expected 'nuts' or 'hmc'")
    if num_chains < 2:
        raise ValueError(f"num_chains is {num_chains}, expected >= 2 with "
                         "chain_method='vectorized' (its adaptation uses the ensemble's means "
                         "and variances)")
    if space == "value":
        raise ValueError("space='value' does not apply with chain_method='vectorized': value "
                         "space moves each chain in whitened coordinates of its own; use "
                         "space='reward' or chain_method='independent'")
    if why is not None:
        raise ValueError(f"chain_method='vectorized' does not apply: {why}; use "
                         "chain_method='independent'")
    return True


@dataclass(frozen=True)
class EnsembleOptions:
    """Settings of :func:`run_vectorized`: ``num_chains`` chains of ``warmup`` + ``num_samples``
    iterations from the MAP (``map_init``) or the target's init, each jittered by
    ``init_jitter`` standard normals; ``dense_mass`` None: dense for at most
    :data:`DENSE_MAX_PARAMS` parameters (as ``infer()``'s NUTS); ``threads`` the torch threads
    while sampling (None: :func:`batch_threads`); see :func:`chees_hmc` for the rest."""

    num_chains: int
    num_samples: int
    warmup: int
    seed: int = 0
    progress: bool = True
    map_init: bool = True
    target_accept: float = TARGET_ACCEPT
    max_leapfrog_steps: int = 1000
    init_jitter: float = 0.1
    dense_mass: bool | None = None
    threads: int | None = None


class EnsembleDraws(NamedTuple):
    """``params {site: (C, n, *shape)}`` constrained, ``sample_stats {name: (C, n)}`` (see
    :class:`EnsembleRun`), ``incomplete`` when interrupted, and ``settings`` to record (the
    adapted step size and trajectory length, the sampler's name, its gradient calls)."""

    params: dict[str, torch.Tensor]
    sample_stats: dict[str, torch.Tensor]
    incomplete: bool
    settings: dict


#: State-action-successor-steps of one batched Bellman sweep (all chains) from which the ensemble
#: runs on every usable core: ``infer()`` plans a small MDP on one thread, but the chains'
#: batch is the work here, and the planner splits a large batch over threads.
THREADED_SWEEP = 2 ** 20


def batch_threads(target, num_chains: int) -> int | None:
    """The torch threads for ``num_chains`` chains on ``target``: every usable core when one
    sweep of the batched planner, ``num_chains * S * A * K * T``, exceeds
    :data:`THREADED_SWEEP`; None (keep the caller's) otherwise, for a target without an MDP,
    and inside a job of :func:`~bayesirl.inference.executors.run_jobs` (one job per core on
    one thread: every core in each would oversubscribe the machine)."""
    mdp = getattr(target, "mdp", None)
    if mdp is None or not hasattr(mdp, "successors") or executors.one_thread_job():
        return None
    sweep = num_chains * mdp.n_states * mdp.n_actions * mdp.successors.shape[-1] * (
        mdp.horizon if mdp.finite_horizon else 1)
    return executors.usable_cores() if sweep > THREADED_SWEEP else None


def _seeds(seed: int) -> tuple[int, int]:
    """Two independent 63-bit seeds from ``seed``: the starting jitter's and the sampler's."""
    import numpy as np

    a, b = np.random.SeedSequence([int(seed), 22]).generate_state(2, dtype=np.uint64)
    return int(a >> np.uint64(1)), int(b >> np.uint64(1))


def run_vectorized(target, options: EnsembleOptions) -> EnsembleDraws:
    """``options.num_chains`` ChEES-HMC chains in lockstep on ``target`` (an inference target
    whose potential batches over chains: :func:`batch_refusal`), in its unconstrained
    coordinates, from the MAP jittered per chain. A pure function of ``target`` and
    ``options``: the same draws wherever it runs."""
    why = batch_refusal(target)
    if why is not None:
        raise ValueError(f"chain_method='vectorized' does not apply: {why}")
    o = options
    start = target.init_unconstrained()
    if o.map_init:
        start, _ = fit_map(target, start)
    flatten, unflatten = flattening(start)  # (*lead, d) <-> {site: (*lead, *shape)}
    ref = next(iter(start.values()))

    def potential(q):
        return target.potential(unflatten(q))

    jitter_seed, sampler_seed = _seeds(o.seed)
    g = torch.Generator(device=ref.device).manual_seed(jitter_seed)
    q0 = flatten(start).detach()
    noise = torch.randn((o.num_chains, q0.numel()), generator=g, dtype=ref.dtype,
                        device=ref.device)
    t0 = time.perf_counter()
    dense = q0.numel() <= DENSE_MAX_PARAMS if o.dense_mass is None else bool(o.dense_mass)
    threads = o.threads if o.threads is not None else batch_threads(target, o.num_chains)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        run = chees_hmc(potential, q0 + o.init_jitter * noise, o.num_samples, o.warmup,
                        seed=sampler_seed, target_accept=o.target_accept, dense_mass=dense,
                        max_leapfrog_steps=o.max_leapfrog_steps, progress=o.progress,
                        desc="vectorized chees-hmc")
    finally:
        torch.set_num_threads(previous)
    with torch.no_grad():
        params = target.constrain(unflatten(run.draws))
    settings = {"chain_method": "vectorized", "sampler": "chees-hmc",
                "step_size": run.step_size, "trajectory_length": run.trajectory_length,
                "target_accept": o.target_accept, "max_leapfrog_steps": o.max_leapfrog_steps,
                "dense_mass": dense, "threads": threads or previous,
                "gradient_calls": run.gradients, "sampling_seconds": time.perf_counter() - t0}
    return EnsembleDraws(params, run.stats, run.interrupted, settings)
