"""Reference nested fixed point (NFXP) maximum-likelihood estimator for Rust's bus engine model.

A self-contained implementation (NumPy + SciPy, no bayesirl imports) of the estimator of
J. Rust, "Optimal replacement of GMC bus engines: an empirical model of Harold Zurcher",
Econometrica 55(5), 1987, and of his NFXP documentation manual (2000), used as the speed and
accuracy anchor for bayesirl's MAP estimates on the same data.

Model
-----
State ``x in {0, ..., S-1}``: mileage accumulated since the last engine replacement, in bins of
5 000 miles (``S = 90``).  Decision ``d = 0`` keeps the engine, ``d = 1`` replaces it.  Utilities,
with i.i.d. type-1 extreme-value shocks added to each::

    u(x, 0) = -0.001 * theta11 * x          u(x, 1) = -RC      (= -RC - c(0), c(0) = 0)

Mileage moves up by ``j = 0, ..., J-1`` bins with probability ``p_j`` (``J = 3``,
``p = (theta30, theta31, 1 - theta30 - theta31)``), from bin 0 after a replacement; the top bin is
absorbing (increments that would pass ``S - 1`` pile on it).  ``Pi`` is the ``(S, S)`` keep
transition matrix, ``Pi[x, min(x + j, S - 1)] += p_j``.  The expected value function
``EV(x) = E[V(x') | x, keep]`` (``EV(x, replace) = EV(0)``) is the unique fixed point of::

    T(EV) = Pi @ V,   V(y) = log(exp(v0(y)) + exp(v1)),
    v0(y) = u(y, 0) + beta EV(y),   v1 = -RC + beta EV(0),

and the choice probabilities are logit: ``P(replace | x) = 1 / (1 + exp(v0(x) - v1))``.

Estimation (Rust 1987, section 6)
---------------------------------
Stage 1: ``p`` by maximum likelihood from the observed mileage increments (frequencies).
Stage 2: ``(theta11, RC)`` maximise the partial (choice) log-likelihood given ``p``; every
evaluation solves ``EV = T(EV)`` by Rust's polyalgorithm (contraction steps, then
Newton-Kantorovich steps).  Stage 3 (``full=True``): ``(theta11, RC, p0, ..., p_{J-2})`` maximise
the full log-likelihood (choices + increments) from the stage 1-2 values.  Gradients and the
observed Hessian are analytic (implicit function theorem, reusing the factored ``I - T'(EV)``
of the last Newton-Kantorovich step).  The outer loop takes Newton steps (BHHH steps where the
Hessian is not negative definite, or throughout with ``method="bhhh"``, Rust's own choice) with
a backtracking line search.  Standard errors come from both the inverse outer product of the
per-observation scores (BHHH; Rust's published standard errors are of this kind) and the
inverse observed information.

Data conventions (``/work/shared/data/rust1987/README.md``): one row per bus-month, the
transition of a row is from its state (bin 0 after a replacement) to the next row's state of the
same bus; the last month of each bus has none.  Rust's own data step (and ruspy's) codes the
month after a replacement as an increment of 1 whatever the new bin, and keeps the increment
into each bus's first retained month from the dropped month before it: counts 1 682 / 2 555 / 55
against this CSV's 1 685 / 2 515 / 55, which moves the stage-2 estimates slightly.
Pass Rust's ``p`` to :func:`fit_nfxp` to reproduce his stage 2; a :class:`Panel` built with his
increments (into month t, paired with the choice of month t) reproduces his stage 3.

``python benchmarks/nfxp.py [--quick]`` fits group 4 at the four discount factors and prints
estimates, standard errors, log-likelihoods and median fit times beside Rust's published values.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.special

DATA = pathlib.Path("/work/shared/data/rust1987/group4.csv")
N_STATES = 90
COST_SCALE = 0.001  # c(x) = COST_SCALE * theta11 * x

# Rust (1987), Tables VIII and IX, group 4 (4 292 bus-months), fixed point dimension 90.
PUBLISHED_GROUP4 = {
    0.9999: dict(theta11=2.2930, se_theta11=0.639, RC=10.0750, se_RC=1.582,
                 loglik_choice=-163.584, loglik_full=-3304.155),
    0.0: dict(theta11=71.5133, se_theta11=13.778, RC=7.6358, se_RC=0.7197,
              loglik_choice=-165.458, loglik_full=-3306.028),
}
PUBLISHED_P_GROUP4 = (0.3919, 0.5953)  # theta30, theta31 (Table IX)


# --------------------------------------------------------------------------------------------
# Data


class Panel(NamedTuple):
    """A bus-month panel, rows sorted by bus then period; all arrays have shape ``(N,)``.

    ``bus``: bus index; ``state``: mileage bin ``x_t``; ``decision``: 1 if the engine was replaced
    in month t; ``increment``: ``x_{t+1} - x_t`` (``x_{t+1} - 0`` after a replacement), the
    mileage increment out of month t, ``-1`` for the last month of each bus (no next state).
    """

    bus: np.ndarray
    state: np.ndarray
    decision: np.ndarray
    increment: np.ndarray


def load_panel(path=DATA) -> Panel:
    """Read a CSV with integer columns ``bus, period, state, decision`` into a :class:`Panel`.

    Rows are sorted by ``(bus, period)``; periods of a bus must be consecutive.  The increment of
    a row is the next row's state minus the row's state, or minus 0 if the row replaced.
    """
    with open(path) as f:
        columns = [c.strip() for c in f.readline().split(",")]
    order = [columns.index(c) for c in ("bus", "period", "state", "decision")]
    raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)[:, order]
    raw = raw[np.lexsort((raw[:, 1], raw[:, 0]))]
    bus, period, state, decision = raw.T
    if not np.isin(decision, (0, 1)).all() or state.min() < 0:
        raise ValueError("decision must be 0/1 and state >= 0")
    same_bus = bus[1:] == bus[:-1]
    if (same_bus & (period[1:] != period[:-1] + 1)).any():
        raise ValueError("periods of a bus must be consecutive")
    increment = np.full(len(bus), -1, dtype=np.int64)
    start = np.where(decision[:-1] == 1, 0, state[:-1])
    increment[:-1] = np.where(same_bus, state[1:] - start, -1)
    if (same_bus & (increment[:-1] < 0)).any():
        raise ValueError("negative mileage increment")
    return Panel(bus, state, decision, increment)


class Transitions(NamedTuple):
    """First-stage estimate of the mileage process.

    ``p``: ``(J,)`` increment probabilities; ``counts``: ``(J,)`` observed increments;
    ``se``: ``(J,)`` standard errors ``sqrt(p (1 - p) / n)``; ``loglik``: ``sum counts * log p``.
    """

    p: np.ndarray
    counts: np.ndarray
    se: np.ndarray
    loglik: float


def estimate_transitions(increment, n_increments: int = 3) -> Transitions:
    """Stage 1 MLE of the increment distribution: the observed frequencies.

    ``increment``: ``(N,)`` integers, ``-1`` (no next state) are skipped; the others must lie in
    ``[0, n_increments)``.
    """
    inc = np.asarray(increment)
    inc = inc[inc >= 0]
    if inc.size == 0 or inc.max() >= n_increments:
        raise ValueError(f"increments must lie in [0, {n_increments}) and not all be missing")
    counts = np.bincount(inc, minlength=n_increments)
    p = counts / counts.sum()
    loglik = float(np.sum(counts[counts > 0] * np.log(p[counts > 0])))
    return Transitions(p, counts, np.sqrt(p * (1 - p) / counts.sum()), loglik)


# --------------------------------------------------------------------------------------------
# Inner loop: the fixed point EV = T(EV)


def _apply_pi(y: np.ndarray, p) -> np.ndarray:
    """``Pi @ y`` for the banded keep transition: ``sum_j p_j y[min(x + j, S - 1)]``.

    ``y``: ``(S,)`` or ``(S, K)``; returns the same shape.
    """
    n_inc = len(p)
    pad = np.concatenate([y, np.repeat(y[-1:], n_inc - 1, axis=0)])
    out = p[0] * y
    for j in range(1, n_inc):
        out = out + p[j] * pad[j:j + len(y)]
    return out


def _shift(y: np.ndarray, j: int) -> np.ndarray:
    """``y[min(x + j, S - 1)]`` for ``x = 0, ..., S-1`` (``y``: ``(S,)`` or ``(S, K)``)."""
    if j == 0:
        return y
    return np.concatenate([y[j:], np.repeat(y[-1:], j, axis=0)])


@functools.lru_cache(maxsize=64)
def _keep_band(p: tuple, n_states: int) -> np.ndarray:
    """``Pi`` in LAPACK upper-band storage, ``(J, S)``: ``band[J-1 - k, y] = Pi[y - k, y]``.

    ``Pi`` is upper triangular with ``J - 1`` superdiagonals (mileage never decreases on keep;
    the pile on the top bin stays inside the band).  Read-only, cached by ``(p, S)``.
    """
    n_inc = len(p)
    dense = _apply_pi(np.eye(n_states), np.asarray(p))
    band = np.zeros((n_inc, n_states))
    for k in range(n_inc):
        band[n_inc - 1 - k, k:] = np.diagonal(dense, offset=k)
    band.setflags(write=False)
    return band


_dtbtrs = scipy.linalg.lapack.dtbtrs


class NKSystem:
    """Factored ``I - T'(EV)`` for Newton-Kantorovich steps and implicit-function derivatives.

    ``T'(EV) = beta Pi (diag(P_keep) + P_replace e_0^T)``, so ``I - T' = B - u e_0^T`` with
    ``B = I - beta Pi diag(P_keep)`` upper triangular and banded (``J - 1`` superdiagonals) and
    ``u = beta Pi P_replace`` (replacement restarts from bin 0).  :meth:`solve` applies
    Sherman-Morrison: ``(B - u e_0^T)^{-1} r = B^{-1} r + B^{-1} u (B^{-1} r)_0 / (1 - (B^{-1}
    u)_0)``, with banded triangular solves (LAPACK ``dtbtrs``, ``O(S J)``).  The denominator is of
    order ``1 - beta``: the near-singular direction of ``I - T'`` is the level of ``EV``, which
    the choice probabilities do not depend on.  ``dense=True`` factors the dense ``(S, S)``
    matrix by LU (``getrf``) instead, for comparison.
    """

    def __init__(self, p_keep, p, beta, n_states, dense: bool = False):
        self.dense = dense
        if dense:
            pi = _apply_pi(np.eye(n_states), np.asarray(p))
            jac = pi * (beta * p_keep)
            jac[:, 0] += beta * (pi @ (1.0 - p_keep))
            self._lu = scipy.linalg.lu_factor(np.eye(n_states) - jac, check_finite=False)
            return
        self._ab = -beta * _keep_band(tuple(p), n_states) * p_keep  # B in band storage
        self._ab[-1] += 1.0
        self._binv_u = self._tri_solve(beta * _apply_pi(1.0 - p_keep, p))
        self._denom = 1.0 - self._binv_u[0]

    def _tri_solve(self, rhs):
        out, info = _dtbtrs(self._ab, rhs, uplo="U")
        if info != 0:
            raise np.linalg.LinAlgError(f"dtbtrs failed (info={info})")
        return out

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``(I - T')^{-1} rhs`` for ``rhs`` of shape ``(S,)`` or ``(S, K)``."""
        if self.dense:
            return scipy.linalg.lu_solve(self._lu, rhs, check_finite=False)
        y = self._tri_solve(rhs)
        corr = y[0] / self._denom
        return y + (np.multiply.outer(self._binv_u, corr) if y.ndim > 1 else self._binv_u * corr)


def _bellman(ev, cost, rc, p, beta):
    """One application of ``T``: returns ``(T(EV), V, P(keep))``, each ``(S,)``.

    ``V = max(v0, v1) + log1p(exp(-|v0 - v1|))``: the log-sum is recentred on the larger value,
    so nothing overflows however large ``|EV| ~ 1 / (1 - beta)`` grows.
    """
    v0 = beta * ev - cost
    v1 = beta * ev[0] - rc
    diff = v0 - v1
    value = np.maximum(v0, v1) + np.log1p(np.exp(-np.abs(diff)))
    return _apply_pi(value, p), value, scipy.special.expit(diff)


@dataclass
class FixedPoint:
    """Solution of ``EV = T(EV)``.

    ``ev``, ``value`` (``V``), ``p_keep``: ``(S,)`` at the returned ``ev``; ``system``: the
    factored ``I - T'(ev)`` (:class:`NKSystem`), for implicit-function derivatives;
    ``residual``: ``max |T(ev) - ev|``; ``n_contraction``, ``n_newton``: steps taken.
    """

    ev: np.ndarray
    value: np.ndarray
    p_keep: np.ndarray
    system: NKSystem
    residual: float
    n_contraction: int
    n_newton: int


def solve_ev(theta, p, beta: float, S: int = N_STATES, ev0=None, *, tol: float = 1e-13,
             ctol: float = 1e-2, rtol: float = 2e-2, min_contraction: int = 4,
             max_contraction: int = 20, max_newton: int = 20, max_switch: int = 5,
             dense: bool = False) -> FixedPoint:
    """Solve ``EV = T(EV)`` by Rust's polyalgorithm.

    ``theta = (theta11, RC)``; ``p``: ``(J,)`` increment probabilities; ``ev0``: ``(S,)`` start
    (zeros if None; pass the previous solution to warm-start).

    Contraction steps ``EV <- T(EV)`` run until (after at least ``min_contraction``) the sup-norm
    change falls below ``ctol`` or the ratio of successive changes is within ``rtol`` of
    ``beta`` (the contraction has reached its asymptotic rate); then Newton-Kantorovich steps
    ``EV <- EV - (I - T'(EV))^{-1} (EV - T(EV))`` run until ``max |T(EV) - EV| <= tol * max(1,
    max |EV|)``.  A Newton step that increases the residual by more than half is discarded and
    the algorithm returns to contraction steps, except in the last of ``max_switch`` rounds:
    ``T`` is monotone and convex in ``EV``, so from any start the Newton iterates after the first
    lie below the fixed point and increase to it.  The tolerance is relative because ``|EV|``
    grows like ``1 / (1 - beta)`` and its floating-point spacing sets the attainable absolute
    residual (about 2e-13 at ``|EV| ~ 1e3``); choice probabilities depend on differences of
    ``EV`` only.
    """
    theta11, rc = float(theta[0]), float(theta[1])
    p = np.asarray(p, dtype=float)
    cost = COST_SCALE * theta11 * np.arange(S, dtype=float)
    ev = np.zeros(S) if ev0 is None else np.array(ev0, dtype=float)
    n_con = n_nk = 0
    change = np.inf
    for round_ in range(max_switch):
        for j in range(max_contraction):
            new, _, _ = _bellman(ev, cost, rc, p, beta)
            new_change = float(np.max(np.abs(new - ev)))
            ratio = new_change / change if change > 0 else 0.0
            ev, change = new, new_change
            n_con += 1
            if j + 1 >= min_contraction and (change < ctol or abs(ratio - beta) < rtol):
                break
        t_ev, value, p_keep = _bellman(ev, cost, rc, p, beta)
        residual = float(np.max(np.abs(t_ev - ev)))
        for _ in range(max_newton):
            if residual <= tol * max(1.0, float(np.max(np.abs(ev)))):
                return FixedPoint(ev, value, p_keep, NKSystem(p_keep, p, beta, S, dense),
                                  residual, n_con, n_nk)
            trial = ev - NKSystem(p_keep, p, beta, S, dense).solve(ev - t_ev)
            t_trial, v_trial, pk_trial = _bellman(trial, cost, rc, p, beta)
            res_trial = float(np.max(np.abs(t_trial - trial)))
            n_nk += 1
            if res_trial > 1.5 * residual and round_ < max_switch - 1:
                # Newton diverging from here: back to contraction steps from T(ev).
                ev, change = t_ev, residual
                break
            floor = 4 * tol * max(1.0, float(np.max(np.abs(trial))))
            if residual <= res_trial <= floor:  # stalled at the rounding floor
                return FixedPoint(trial, v_trial, pk_trial,
                                  NKSystem(pk_trial, p, beta, S, dense), res_trial, n_con, n_nk)
            ev, t_ev, value, p_keep, residual = trial, t_trial, v_trial, pk_trial, res_trial
        else:
            break
    raise RuntimeError(f"fixed point did not converge: residual {residual:.3g}")


# --------------------------------------------------------------------------------------------
# Likelihood, scores and observed information


@dataclass
class _Cells:
    """The panel collapsed to distinct ``(state, decision, increment)`` cells (``C`` of them).

    ``x``, ``d``, ``j``, ``n``: ``(C,)``; ``j = -1`` where no increment is observed.
    ``n_keep``, ``n_repl``: ``(S,)`` choice counts per state.
    """

    x: np.ndarray
    d: np.ndarray
    j: np.ndarray
    n: np.ndarray
    n_keep: np.ndarray
    n_repl: np.ndarray

    @classmethod
    def from_panel(cls, data: Panel, n_states: int, n_inc: int) -> _Cells:
        state, decision, inc = (np.asarray(a) for a in (data.state, data.decision, data.increment))
        if state.max() >= n_states:
            raise ValueError(f"state {state.max()} outside [0, {n_states})")
        if inc.max() >= n_inc:
            raise ValueError(f"increment {inc.max()} outside [0, {n_inc})")
        code = (state * 2 + decision) * (n_inc + 1) + (inc + 1)
        codes, n = np.unique(code, return_counts=True)
        j = codes % (n_inc + 1) - 1
        xd = codes // (n_inc + 1)
        x, d = xd // 2, xd % 2
        n_keep = np.bincount(x[d == 0], weights=n[d == 0], minlength=n_states)
        n_repl = np.bincount(x[d == 1], weights=n[d == 1], minlength=n_states)
        return cls(x, d, j, n.astype(float), n_keep, n_repl)


@dataclass
class _Model:
    """Fixed inputs of the likelihood: cells, discount, dimensions and the stage-1 ``p``."""

    cells: _Cells
    beta: float
    n_states: int
    p_fixed: np.ndarray  # (J,), used when the p are not parameters
    full: bool
    dense: bool = False  # dense LU of I - T' instead of banded + Sherman-Morrison

    @property
    def n_inc(self) -> int:
        return len(self.p_fixed)

    def split(self, params):
        """``params`` -> ``(theta11, RC, p)``; ``p`` from params when ``full``."""
        if not self.full:
            return params[0], params[1], self.p_fixed
        head = np.asarray(params[2:], dtype=float)
        return params[0], params[1], np.append(head, 1.0 - head.sum())

    def feasible(self, params) -> bool:
        return not self.full or bool(np.all(self.split(params)[2] > 0))


def _evaluate(model: _Model, params, ev0=None, order: int = 2, fp=None):
    """Log-likelihood at ``params`` and, by ``order``, its derivatives.

    ``ev0``: warm start for the fixed point; ``fp``: a :class:`FixedPoint` already solved at
    ``params`` (then neither is used).

    Returns a dict with ``ll`` (maximised objective), ``ll_choice``, ``ll_trans`` (0 when not
    ``full``), ``ev`` (``(S,)``), ``fp`` (:class:`FixedPoint`) and, for ``order >= 1``, ``grad``
    (``(K,)``) and ``opg`` (``(K, K)``, outer product of per-observation scores); for
    ``order >= 2`` also ``hess`` (``(K, K)``, analytic).  ``K = 2`` (``theta11, RC``) or
    ``K = 1 + J`` when ``full`` (``theta11, RC, p_0, ..., p_{J-2}``, ``p_{J-1} = 1 - sum``).
    """
    theta11, rc, p = model.split(params)
    beta, n_states, cells = model.beta, model.n_states, model.cells
    if fp is None:
        fp = solve_ev((theta11, rc), p, beta, n_states, ev0, dense=model.dense)
    ev = fp.ev
    grid = np.arange(n_states, dtype=float)
    # z(x) = v1 - v0(x): the replace-minus-keep value difference; P(replace | x) = expit(z).
    z = -rc + COST_SCALE * theta11 * grid + beta * (ev[0] - ev)
    p_repl = scipy.special.expit(z)
    p_keep = 1.0 - p_repl
    ll_choice = float(-(cells.n_repl @ np.logaddexp(0.0, -z)) - cells.n_keep @ np.logaddexp(0.0, z))
    ll_trans = 0.0
    has_inc = cells.j >= 0
    if model.full:
        ll_trans = float(cells.n[has_inc] @ np.log(p[cells.j[has_inc]]))
    out = dict(ll=ll_choice + ll_trans, ll_choice=ll_choice, ll_trans=ll_trans, ev=ev, fp=fp)
    if order < 1:
        return out

    n_par = 2 + (model.n_inc - 1 if model.full else 0)
    # Direct partial derivatives of the utilities: du0 (S, K), du1 (K,).
    du0 = np.zeros((n_states, n_par))
    du0[:, 0] = -COST_SCALE * grid
    du1 = np.zeros(n_par)
    du1[1] = -1.0
    value = fp.value
    last = model.n_inc - 1

    def dpi(k: int, y):
        """``(dPi / dp_k) @ y`` for the p parameter ``k`` (``p_{J-1} = 1 - sum`` absorbs it)."""
        return _shift(y, k) - _shift(y, last)

    # dT/dtheta (S, K) and dEV/dtheta = (I - T')^{-1} dT/dtheta (implicit function theorem).
    dt = _apply_pi(p_keep[:, None] * du0 + p_repl[:, None] * du1, p)
    for k in range(n_par - 2):
        dt[:, 2 + k] += dpi(k, value)
    dev = fp.system.solve(dt)
    dz = du1 - du0 + beta * (dev[0] - dev)  # (S, K)

    # Per-cell scores: choice (d - P_repl(x)) dz(x) plus, when full, dlog p_j / dp_k.
    scores = (cells.d - p_repl[cells.x])[:, None] * dz[cells.x]
    if model.full:
        for k in range(n_par - 2):
            scores[:, 2 + k] += np.where(cells.j == k, 1.0 / p[k], 0.0)
            scores[:, 2 + k] -= np.where(cells.j == last, 1.0 / p[last], 0.0)
    out["grad"] = cells.n @ scores
    out["opg"] = (scores * cells.n[:, None]).T @ scores
    if order < 2:
        return out

    # Second derivatives of EV: (I - T') d2EV_ab = Pi (P_keep P_repl dz_a dz_b)
    #                                            + dPi_a dV_b + dPi_b dV_a.
    dvalue = (p_keep[:, None] * (du0 + beta * dev) + p_repl[:, None] * (du1 + beta * dev[0]))
    w = p_keep * p_repl
    pairs = [(a, b) for a in range(n_par) for b in range(a, n_par)]
    rhs = _apply_pi(np.stack([w * dz[:, a] * dz[:, b] for a, b in pairs], axis=1), p)
    for col, (a, b) in enumerate(pairs):
        if a >= 2:
            rhs[:, col] += dpi(a - 2, dvalue[:, b])
        if b >= 2:
            rhs[:, col] += dpi(b - 2, dvalue[:, a])
    d2ev = fp.system.solve(rhs)
    d2z = beta * (d2ev[0] - d2ev)  # (S, pairs)
    n_tot = cells.n_keep + cells.n_repl
    resid = cells.n_repl - n_tot * p_repl  # sum over observations at x of (d - P_repl(x))
    hess = np.empty((n_par, n_par))
    for col, (a, b) in enumerate(pairs):
        hess[a, b] = hess[b, a] = -(n_tot * w) @ (dz[:, a] * dz[:, b]) + resid @ d2z[:, col]
    if model.full:
        m = np.bincount(cells.j[has_inc], weights=cells.n[has_inc], minlength=model.n_inc)
        hess[2:, 2:] -= np.diag(m[:last] / p[:last] ** 2) + m[last] / p[last] ** 2
    out["hess"] = hess
    return out


# --------------------------------------------------------------------------------------------
# Outer loop


@dataclass
class NFXPResult:
    """Result of :func:`fit_nfxp`.

    ``params``: ``(K,)`` estimates named by ``names`` (``theta11, RC`` then, when ``full``,
    ``p0, ..., p{J-2}``); ``p``: ``(J,)`` increment probabilities used (stage 1, or estimated
    when ``full``).  ``se_bhhh`` / ``se_hessian``: ``(K,)`` square roots of the diagonals of
    ``cov_bhhh = OPG^{-1}`` (outer product of per-bus-month scores) and ``cov_hessian =
    (-H)^{-1}`` (observed information).  ``loglik``: the maximised objective (``loglik_choice``
    for the partial likelihood, ``loglik_choice + loglik_transition`` when ``full``);
    ``loglik_transition``: of the panel's increments at ``p``.  ``iterations``: outer steps;
    ``evaluations``: fixed points solved; ``n_contraction`` / ``n_newton``: inner steps in
    total; ``newton_decrement``: ``g' (-H)^{-1} g`` (BHHH: ``g' OPG^{-1} g``) at the end;
    ``ev``: ``(S,)`` fixed point at the estimates; ``seconds``: wall time of the whole fit
    (stage 1 included).
    """

    names: tuple
    params: np.ndarray
    p: np.ndarray
    se_bhhh: np.ndarray
    se_hessian: np.ndarray
    cov_bhhh: np.ndarray
    cov_hessian: np.ndarray
    loglik: float
    loglik_choice: float
    loglik_transition: float
    beta: float
    full: bool
    iterations: int
    evaluations: int
    n_contraction: int
    n_newton: int
    converged: bool
    newton_decrement: float
    seconds: float
    ev: np.ndarray = field(repr=False)

    @property
    def theta11(self) -> float:
        return float(self.params[0])

    @property
    def RC(self) -> float:
        return float(self.params[1])


def fit_nfxp(data: Panel, beta: float, p=None, full: bool = False, *, x0=None,
             method: str = "newton", linear_solver: str = "banded", S: int = N_STATES,
             n_increments: int = 3, tol: float = 1e-12, max_iter: int = 200) -> NFXPResult:
    """Maximum-likelihood NFXP estimate of ``(theta11, RC)`` (and ``p`` when ``full``).

    ``data``: a :class:`Panel`; ``beta``: discount factor in ``[0, 1)``; ``p``: ``(J,)``
    increment probabilities for the partial likelihood (the stage-1 MLE from ``data`` if None);
    ``full``: after stage 2, maximise the full likelihood over ``(theta11, RC, p_0, ...,
    p_{J-2})`` (Rust's stage 3), starting from the stage-2 estimates and ``p``.
    ``x0``: start ``(theta11, RC)``, default ``(0, 0)`` (both choices equally likely).
    ``method``: ``"newton"`` (analytic Hessian; a BHHH step where it is not negative definite)
    or ``"bhhh"`` (BHHH steps throughout, as in Rust's GAUSS code).  Each step is followed by a
    backtracking line search on the log-likelihood; the fit stops when the Newton decrement
    ``g' (-H)^{-1} g`` (BHHH: ``g' OPG^{-1} g``) falls below ``tol``.  ``linear_solver``:
    ``"banded"`` (default, fastest) or ``"dense"`` (LU), see :class:`NKSystem`.
    """
    if method not in ("newton", "bhhh"):
        raise ValueError("method must be 'newton' or 'bhhh'")
    if linear_solver not in ("banded", "dense"):
        raise ValueError("linear_solver must be 'banded' or 'dense'")
    if not 0.0 <= beta < 1.0:
        raise ValueError("beta must lie in [0, 1)")
    t0 = time.perf_counter()
    stage1 = estimate_transitions(data.increment, n_increments)
    p_used = stage1.p if p is None else np.asarray(p, dtype=float)
    if len(p_used) != n_increments or np.any(p_used <= 0) or abs(p_used.sum() - 1) > 1e-9:
        raise ValueError("p must be a positive probability vector of length n_increments")
    cells = _Cells.from_panel(data, S, n_increments)
    start = np.array([0.0, 0.0] if x0 is None else x0, dtype=float)

    dense = linear_solver == "dense"
    model = _Model(cells, float(beta), S, p_used, full=False, dense=dense)
    counters = dict(iterations=0, evaluations=0, n_contraction=0, n_newton=0)
    params, ev, at, decrement, converged = _maximise(model, start, None, method, tol, max_iter,
                                                     counters)
    if full:
        model = _Model(cells, float(beta), S, p_used, full=True, dense=dense)
        start = np.concatenate([params, p_used[:-1]])
        params, ev, at, decrement, converged = _maximise(model, start, ev, method, tol,
                                                         max_iter, counters)
    seconds = time.perf_counter() - t0

    cov_bhhh = np.linalg.inv(at["opg"])
    cov_hess = np.linalg.inv(-at["hess"])
    names = ("theta11", "RC") + tuple(f"p{k}" for k in range(n_increments - 1) if full)
    ll_trans = at["ll_trans"] if full else float(
        stage1.counts @ np.log(np.where(stage1.counts > 0, p_used, 1.0)))
    return NFXPResult(
        names=names, params=params, p=model.split(params)[2],
        se_bhhh=np.sqrt(np.diag(cov_bhhh)), se_hessian=np.sqrt(np.diag(cov_hess)),
        cov_bhhh=cov_bhhh, cov_hessian=cov_hess,
        loglik=at["ll"], loglik_choice=at["ll_choice"], loglik_transition=ll_trans,
        beta=float(beta), full=full, converged=converged, newton_decrement=decrement,
        seconds=seconds, ev=ev, **counters)


def _maximise(model: _Model, params, ev, method, tol, max_iter, counters):
    """Newton / BHHH ascent with backtracking; returns ``(params, ev, evaluation, decrement,
    converged)``, the evaluation (``order=2``) taken at the returned ``params``."""

    def evaluate(x, ev0, order, fp=None):
        out = _evaluate(model, x, ev0, order, fp)
        if fp is None:
            counters["evaluations"] += 1
            counters["n_contraction"] += out["fp"].n_contraction
            counters["n_newton"] += out["fp"].n_newton
        return out

    at = evaluate(params, ev, 2)
    decrement = np.inf
    for _ in range(max_iter):
        grad = at["grad"]
        direction = None
        if method == "newton":
            try:
                chol = scipy.linalg.cho_factor(-at["hess"])
                direction = scipy.linalg.cho_solve(chol, grad)
            except np.linalg.LinAlgError:
                direction = None
        if direction is None:
            direction = np.linalg.solve(at["opg"], grad)
        decrement = float(grad @ direction)
        if decrement < tol:
            return params, at["ev"], at, decrement, True
        counters["iterations"] += 1
        step = 1.0
        while True:
            trial = params + step * direction
            if model.feasible(trial):
                try:
                    cand = evaluate(trial, at["ev"], 0)
                except RuntimeError:  # inner loop failed far from the optimum: shorter step
                    cand = None
                if cand is not None and cand["ll"] >= at["ll"] + 1e-4 * step * decrement:
                    break
            step *= 0.5
            if step < 1e-12:
                # No ascent at the precision of the log-likelihood: converged if the remaining
                # predicted gain is negligible.
                return params, at["ev"], at, decrement, decrement < 1e-8
        params = trial
        at = evaluate(params, None, 2, fp=cand["fp"])
    return params, at["ev"], at, decrement, False


# --------------------------------------------------------------------------------------------
# Benchmark


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(quick: bool = False) -> None:
    """Fit Rust's group 4 at beta = 0.9999, 0.99, 0.975 and 0; print estimates beside Rust's.

    Rows per discount: stage 2 (partial likelihood) with ``p`` estimated from the CSV, stage 3
    (full likelihood) on the CSV, stage 2 with Rust's Table IX ``p``, and the published values.
    Times are medians of repeated complete fits (``time.perf_counter``), one thread.
    ``quick``: discounts 0.9999 and 0 only, fewer repeats.
    """
    data = load_panel(DATA)
    stage1 = estimate_transitions(data.increment)
    repeats = 3 if quick else 15
    p_rust = np.array([*PUBLISHED_P_GROUP4, 1 - sum(PUBLISHED_P_GROUP4)])
    print(f"Rust (1987) group 4: {len(data.bus)} bus-months, {len(np.unique(data.bus))} buses, "
          f"{int(data.decision.sum())} replacements, S = {N_STATES}; stage 1 from the CSV: "
          f"increments {stage1.counts.tolist()}, p = {np.array2string(stage1.p, precision=4)}"
          f" (Rust's Table IX: {PUBLISHED_P_GROUP4[0]}, {PUBLISHED_P_GROUP4[1]})")
    header = (f"{'beta':>6} {'fit':<15} {'theta11':>8} {'se BHHH':>8} {'se Hess':>8} {'RC':>8}"
              f" {'se BHHH':>8} {'se Hess':>8} {'LL choice':>10} {'LL full':>10} {'iter':>4}"
              f" {'median s':>9}")
    print(header)
    print("-" * len(header))
    fits = (("stage 2, p CSV", dict()), ("stage 3, CSV", dict(full=True)),
            ("stage 2, p Rust", dict(p=p_rust)))
    for beta in ((0.9999, 0.0) if quick else (0.9999, 0.99, 0.975, 0.0)):
        for label, kwargs in fits:
            def fit(beta=beta, kwargs=kwargs):
                return fit_nfxp(data, beta, **kwargs)

            res = fit()
            secs = _median_seconds(fit, repeats)
            print(f"{beta:>6} {label:<15} {res.theta11:8.4f} {res.se_bhhh[0]:8.3f}"
                  f" {res.se_hessian[0]:8.3f} {res.RC:8.4f} {res.se_bhhh[1]:8.3f}"
                  f" {res.se_hessian[1]:8.3f} {res.loglik_choice:10.3f}"
                  f" {res.loglik_choice + res.loglik_transition:10.3f} {res.iterations:4d}"
                  f" {secs:9.4f}")
        pub = PUBLISHED_GROUP4.get(beta)
        if pub:
            print(f"{beta:>6} {'Rust (1987)':<15} {pub['theta11']:8.4f} {pub['se_theta11']:8.3f}"
                  f" {'':>8} {pub['RC']:8.4f} {pub['se_RC']:8.3f} {'':>8}"
                  f" {pub['loglik_choice']:10.3f} {pub['loglik_full']:10.3f}")
    print("se BHHH: inverse outer product of per-bus-month scores (Rust's published s.e. are of "
          "this kind); se Hess: inverse observed information.  LL full = choice + transition "
          "log-likelihood; the CSV codes transitions after a replacement from bin 0 and lacks "
          "the month before its first row, so its transition counts and p differ from Rust's "
          "(1682 / 2555 / 55).")

    beta = 0.9999
    print(f"\nouter / inner algorithm variants, stage 2 on the CSV, beta = {beta}:")
    for label, kwargs in (("Newton, banded I - T' (default)", dict()),
                          ("BHHH, banded I - T'", dict(method="bhhh")),
                          ("Newton, dense LU of I - T'", dict(linear_solver="dense"))):
        res = fit_nfxp(data, beta, **kwargs)
        secs = _median_seconds(lambda kwargs=kwargs: fit_nfxp(data, beta, **kwargs), repeats)
        print(f"  {label:<32} theta11 {res.theta11:.6f}  RC {res.RC:.6f}  outer {res.iterations:3d}"
              f"  evaluations {res.evaluations:3d}  contraction {res.n_contraction:4d}"
              f"  NK {res.n_newton:3d}  median {secs * 1e3:6.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two discounts, fewer repeats")
    main(parser.parse_args().quick)
