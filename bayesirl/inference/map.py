"""The maximum a posteriori point of a target (:func:`~bayesirl.inference.map.fit_map`), its
standard errors and the Laplace approximation around it (:func:`~bayesirl.inference.map.laplace`);
:func:`~bayesirl.inference.map.laplace_fit` puts them together as an econometric table (the mode
Newton-polished, each site's covariance, BHHH's standard errors, the log-likelihood's parts).

The MAP minimises the target's potential without the log-Jacobian (``jacobian=False``): the mode
of the density of the constrained parameters, the point Pyro's ``AutoDelta`` finds, searched in
unconstrained coordinates ``u`` so that no bounds are needed.

Standard errors. ``H``, the Hessian of that negative log posterior at the MAP in the flattened
unconstrained coordinates, is the posterior's curvature there; ``Sigma = H^-1`` is the covariance
of the Laplace approximation ``u ~ N(u_MAP, Sigma)``, and the delta method carries it to each
constrained parameter: ``Sigma_params = J Sigma J^T`` with ``J = d params / d u`` at the MAP, whose
diagonal's square roots are the standard errors in the parameters' own units. With an improper
flat prior (:func:`~bayesirl.model.rewards.is_improper`) the MAP is the maximum-likelihood
estimate and ``H`` the observed information, so these are the MLE's standard errors as an
econometrician reports them. ``H`` is exact for a target with a second-order potential
(:class:`~bayesirl.inference.target.SecondOrder`: the implicit function theorem on the Bellman
fixed point); otherwise it comes from autograd where the potential is twice
differentiable, else (the compiled dynamic programs are differentiable once) from central
differences of its autograd gradient, Richardson-extrapolated (error O(h^4), h = 1e-3 per unit
of the coordinate in float64, eps^(1/7) ~ 0.1 in float32, where the gradient's rounding would
swamp a smaller step); either way it is symmetrised, and a Hessian that is not positive definite
(a flat or unidentified direction, or a MAP on a saddle) has no Laplace approximation: the
coordinate it fails along is named. Neither has a MAP on the edge of a bounded prior's support
(a HalfNormal's 0, a Uniform's bound: the unconstrained coordinate runs off to infinity, where
the transform is flat and the delta method's standard errors shrink to nothing): the
coordinate is named instead.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.optimize
import torch

from bayesirl.core.flat import flattening
from bayesirl.model.dynamics_likelihood import FullLikelihoodTarget
from bayesirl.posterior.diagnostics import InferenceWarning

__all__ = ["MAX_COORDINATES", "Laplace", "LaplaceFit", "coordinate_names", "fit_map", "hessian",
           "laplace", "laplace_draws", "laplace_fit", "newton_map",
           "warn_without_standard_errors"]

_FD_STEP = 1e-3  # finite-difference step per unit of a coordinate's magnitude (at least 1)
# A Newton decrement below which the predicted decrease (half of it) is within the rounding of
# a potential summed over thousands of observations: the step is taken without a line search
_ROUNDING_DECREMENT = 1e-8
#: Coordinates up to which ``method="map"`` computes standard errors (a dense Hessian: up to
#: four gradients per coordinate where the potential is differentiable once).
MAX_COORDINATES = 512


def _second_order(target):
    """The target's exact second-order potential
    (:class:`~bayesirl.inference.target.SecondOrder`), or None."""
    from bayesirl.inference.target import SecondOrder

    return target.second_order if isinstance(target, SecondOrder) else None


def _shorter_step(step: float, decrement: float, value: float, trial: float) -> float:
    """The next step of a backtracking line search after ``step`` failed: the minimum of the
    quadratic through ``phi(0) = value``, ``phi'(0) = -decrement`` and ``phi(step) = trial``,
    kept within ``[step / 10, step / 2]`` (halving where ``trial`` is not finite). A
    Newton or BHHH step far from the mode can overshoot by orders of magnitude; halving would
    take one evaluation per factor of two back, the interpolation one or two in all."""
    if not math.isfinite(trial):
        return step / 2
    curvature = trial - value + decrement * step
    best = decrement * step * step / (2 * curvature) if curvature > 0 else step / 2
    return min(step / 2, max(step / 10, best))


def newton_map(second_order, theta0: torch.Tensor, max_iter: int = 100,
               tol: float = 1e-12) -> tuple[torch.Tensor, float, bool]:
    """Minimise a potential by Newton's method with its exact Hessian from ``theta0 (d,)``:
    ``second_order(theta, warm)`` returns a
    :class:`~bayesirl.model.likelihood_derivatives.SecondOrderValue` (value, gradient, Hessian,
    a positive semi-definite ``curvature``, a ``warm`` start for the next call).

    Each step is ``-H^-1 g``, or ``-curvature^-1 g`` where ``H`` is not positive definite (far
    from the mode, where a Newton step need not descend: BHHH's step, as in Rust's NFXP), with
    a backtracking (Armijo) line search; every trial's fixed point starts from the last
    accepted one. Stops when the Newton decrement ``g' H^-1 g`` (twice the predicted remaining
    decrease) is below ``tol``; a step whose decrement is below 1e-8 (a predicted decrease
    within the potential's rounding, where the line search would judge noise) is taken whole.
    Returns ``(theta, value, converged)``; not converged when ``max_iter`` run out, or the line
    search finds no decrease while the decrement is still above 1e-8 (the caller then polishes
    with a quasi-Newton method).
    """
    theta = theta0.detach().to(torch.float64).reshape(-1)
    at = second_order(theta)
    if not bool(torch.isfinite(at.value)):
        return theta, float(at.value), False
    for _ in range(max_iter):
        chol, info = torch.linalg.cholesky_ex(at.hessian)
        if int(info) != 0:
            chol, info = torch.linalg.cholesky_ex(at.curvature)
            if int(info) != 0:
                return theta, float(at.value), False
        p = torch.cholesky_solve(at.gradient.unsqueeze(-1), chol).squeeze(-1)
        decrement = float(at.gradient @ p)
        if decrement < tol:
            return theta, float(at.value), True
        step = 1.0
        while True:
            trial = theta - step * p
            try:
                cand = second_order(trial, at.warm)
                # within _ROUNDING_DECREMENT the predicted decrease is below the value's own
                # rounding: Armijo's test would reject on noise, and the full step is Newton's
                ok = bool(torch.isfinite(cand.value)) and (
                    decrement < _ROUNDING_DECREMENT
                    or float(cand.value) <= float(at.value) - 1e-4 * step * decrement)
            except FloatingPointError:  # no fixed point this far out: a shorter step
                cand, ok = None, False
            if ok:
                break
            step = _shorter_step(step, decrement, float(at.value),
                                 float(cand.value) if cand is not None else math.inf)
            if step < 1e-10:
                return theta, float(at.value), decrement < _ROUNDING_DECREMENT
        theta, at = trial, cand
    return theta, float(at.value), False


def fit_map(target, u0: dict[str, torch.Tensor], max_iter: int = 200,
            jacobian: bool = False, warn: bool = False) -> tuple[dict[str, torch.Tensor], float]:
    """Minimise ``target.potential(u, jacobian)`` over unconstrained ``u`` from ``u0``;
    ``jacobian=False`` is the MAP of AutoDelta. Returns ``(u, loss)``, ``u`` shaped like
    ``u0``. With ``warn`` (where the point is the answer, ``method="map"``, not a start for a
    sampler), an :class:`~bayesirl.posterior.diagnostics.InferenceWarning` when L-BFGS stops
    at ``max_iter`` with its gradient not yet small (:func:`_stopped_short`): the point
    returned is then not the MAP. The warning names the line that called ``infer()``.

    A target with an exact second-order potential
    (:class:`~bayesirl.inference.target.SecondOrder`; its unconstrained coordinates are its one
    site) takes Newton steps
    (:func:`newton_map`: about ten evaluations, each about one Bellman solve); otherwise, or
    to polish where Newton stops short, SciPy's L-BFGS-B on autograd gradients (no bounds:
    ``u`` is unconstrained). SciPy rather than ``torch.optim.LBFGS``: the first step of a
    torch optimizer imports ``torch._dynamo``, seconds in every fresh process.
    """
    second = None if jacobian else _second_order(target)
    if second is not None:
        (site, value), = u0.items()
        theta, loss, converged = newton_map(second, value, max_iter)
        u0 = {site: theta.to(value.dtype).reshape(value.shape)}
        if converged:
            return u0, loss
    flatten, unflatten = flattening(u0)

    def loss_and_grad(x):
        u = {k: v.clone().requires_grad_(True) for k, v in unflatten(x).items()}
        loss = target.potential(u, jacobian=jacobian)
        grads = torch.autograd.grad(loss, list(u.values()), allow_unused=True)
        grad = torch.cat([torch.zeros(v.numel(), dtype=v.dtype, device=v.device) if g is None
                          else g.reshape(-1) for v, g in zip(u.values(), grads, strict=True)]
                         ).to("cpu", torch.float64).numpy()
        return float(loss.detach()), grad

    x0 = flatten(u0).to("cpu", torch.float64).numpy()
    result = scipy.optimize.minimize(loss_and_grad, x0, jac=True, method="L-BFGS-B",
                                     options={"maxiter": max_iter, "gtol": 1e-9, "ftol": 1e-14})
    if warn and _stopped_short(result, max_iter):
        warnings.warn(InferenceWarning(
            f"the MAP search stopped at its cap of {max_iter} L-BFGS iterations with the "
            f"largest gradient of the negative log posterior {np.abs(result.jac).max():.3g} "
            "(unconstrained coordinates): the point returned, and any standard errors at it, "
            "is not the MAP; the posterior is badly conditioned in these coordinates (a "
            "value-space model: keep whiten=True), or use method='nuts'"), stacklevel=5)
    return unflatten(result.x), float(result.fun)


def _stopped_short(result, max_iter: int) -> bool:
    """Whether an L-BFGS-B ``result`` ran out of iterations before its tolerances were met:
    at the cap with the largest gradient above ``1e-6 (1 + |loss|)`` (its other stops, a
    tolerance met or a line search that rounding defeats, are at the optimum to the
    precision the potential allows)."""
    return (int(result.nit) >= max_iter
            and float(np.abs(result.jac).max()) > 1e-6 * (1.0 + abs(float(result.fun))))


def coordinate_names(u: dict[str, torch.Tensor]) -> list[str]:
    """Names of the flattened coordinates of ``u``: ``"theta[0]"``, ``"theta[1, 2]"`` for an
    ``(S, A)`` site, the bare site name for a scalar one."""
    names = []
    for site, value in u.items():
        if value.dim() == 0:
            names.append(site)
            continue
        for flat in range(value.numel()):
            idx = []
            for size in reversed(value.shape):
                flat, i = divmod(flat, size)
                idx.append(i)
            names.append(f"{site}[{', '.join(map(str, reversed(idx)))}]")
    return names


def hessian(f, x: torch.Tensor) -> tuple[torch.Tensor, str]:
    """``(H, how)``: the symmetric Hessian ``(d, d)`` of the scalar ``f`` at ``x: (d,)``, by
    autograd (``how = "autograd"``) where ``f`` is twice differentiable, else by
    Richardson-extrapolated central differences of its autograd gradient
    (``"finite differences of the gradient"``)."""
    x = x.detach()
    try:
        H = torch.autograd.functional.hessian(f, x, strict=True)
        how = "autograd"
    except RuntimeError:  # a node differentiable once (the compiled planners), or disconnected
        def grad(at):
            at = at.clone().requires_grad_(True)
            return torch.autograd.grad(f(at), at)[0].detach()

        def central(i, h):
            e = torch.zeros_like(x)
            e[i] = h
            return (grad(x + e) - grad(x - e)) / (2 * h)

        # the step balances truncation (O(h^4) after Richardson) against the gradient's
        # rounding (O(eps / h), the fixed point's tolerance included): 1e-3 in float64, but
        # in float32 (eps ~1e-7) a step of 1e-3 leaves the Hessian mostly rounding noise
        # (standard errors several times too small); eps^(1/7) ~ 0.1 there
        eps = torch.finfo(x.dtype).eps if x.is_floating_point() else 0.0
        step = _FD_STEP if eps <= torch.finfo(torch.float64).eps else max(_FD_STEP, eps ** (1 / 7))
        columns = []
        for i in range(x.numel()):
            h = step * max(1.0, abs(float(x[i])))
            columns.append((4 * central(i, h / 2) - central(i, h)) / 3)
        H = torch.stack(columns, 1)
        how = "finite differences of the gradient"
    return 0.5 * (H + H.T), how


@dataclass
class Laplace:
    """The Gaussian approximation of a posterior at its MAP (see the module doc): ``u`` the
    MAP (unconstrained, shaped like the target's sites), ``covariance`` ``(d, d)`` in the
    flattened unconstrained coordinates named ``coordinates``, ``standard_errors`` per
    constrained site (its shape, its units), and how the Hessian was found.
    ``standard_errors_bhhh``: for a maximum-likelihood fit (an improper flat prior) of a
    :class:`~bayesirl.inference.target.SecondOrder` target or one with
    :class:`~bayesirl.inference.target.HasObservationScores`, the standard errors from the
    inverse outer product of the observed steps' scores (BHHH), which econometric tables such
    as Rust's (1987) report; they equal the others only where the information-matrix equality
    holds in the sample."""

    u: dict[str, torch.Tensor]
    covariance: torch.Tensor
    coordinates: list[str]
    standard_errors: dict[str, torch.Tensor]
    hessian: str
    standard_errors_bhhh: dict[str, torch.Tensor] | None = None
    #: ``(d_c, d_c)`` the delta method's ``J Sigma J^T`` over the constrained parameters,
    #: flattened site by site in ``target.constrain``'s order
    params_covariance: torch.Tensor | None = None

    @property
    def extra(self) -> dict:
        """The posterior's ``extra`` entries: standard errors, covariance, coordinates, and
        ``standard_errors_bhhh`` where there are some."""
        out = {"standard_errors": self.standard_errors, "covariance": self.covariance,
               "coordinates": list(self.coordinates)}
        if self.standard_errors_bhhh is not None:
            out["standard_errors_bhhh"] = self.standard_errors_bhhh
        return out


def _observation_information(target, u) -> torch.Tensor | None:
    """BHHH's information ``sum_c w_c g_c g_c^T`` of a target with per-observation scores,
    else None."""
    from bayesirl.inference.target import HasObservationScores

    if not isinstance(target, HasObservationScores):
        return None
    scores, weights = target.observation_scores(u)
    return (scores * weights[:, None]).T @ scores


def _curvature(target, x: torch.Tensor, unflatten):
    """``(H, how, at)``: the Hessian ``(d, d)`` of the potential (no log-Jacobian) at the
    flattened unconstrained ``x``, how it was found, and the second-order evaluation ``at``
    it came from (:class:`~bayesirl.inference.target.SecondOrder`) or None."""
    second = _second_order(target)
    if second is not None:
        at = second(x)
        return (at.hessian.to(x.dtype),
                "analytic (implicit function theorem on the Bellman fixed point)", at)
    H, how = hessian(lambda v: target.potential(unflatten(v), jacobian=False), x)
    return H, how, None


#: An unconstrained posterior sd above which, with the constraining transform's derivative
#: below _EDGE_SLOPE, a coordinate's mode lies at the edge of its support (the transform's
#: image of u -> +-inf): its delta-method standard error (slope x sd) is an artefact there
_EDGE_SD, _EDGE_SLOPE = 1e3, 1e-3


def _at_the_edge(covariance: torch.Tensor, J: torch.Tensor) -> int | None:
    """The first unconstrained coordinate whose mode lies at the edge of a bounded support
    (a huge unconstrained sd where the transform is flat: a HalfNormal's ``theta -> 0``, a
    Uniform's bound), or None."""
    sd = covariance.diagonal().clamp(min=0).sqrt()
    slope = J.abs().amax(0) if J.numel() else torch.zeros_like(sd)
    edge = ((sd > _EDGE_SD) & (slope < _EDGE_SLOPE)).nonzero()
    return int(edge[0, 0]) if edge.numel() else None


def laplace(target, u_map: dict[str, torch.Tensor], bhhh: bool | None = None,
            curvature=None) -> Laplace:
    """The Laplace approximation of ``target`` at its MAP ``u_map`` (unconstrained), with
    standard errors by the delta method, and BHHH's where ``bhhh`` (default: for a
    maximum-likelihood fit, an improper flat prior) and the target gives per-observation
    scores; ``curvature``: :func:`_curvature` at ``u_map`` where the caller has it. Raises
    ValueError naming the coordinate along which the Hessian is not positive definite (the
    MAP is then no strict maximum)."""
    flatten, unflatten = flattening(u_map)
    x = flatten(u_map).detach()
    if bhhh is None:
        bhhh = getattr(target, "improper", False)
    H, how, at = curvature if curvature is not None else _curvature(target, x, unflatten)
    opg = None
    if bhhh:  # BHHH's information: the scores' outer product alone, whatever the prior
        opg = (at.derivatives.opg.to(x.dtype) if at is not None
               else _observation_information(target, unflatten(x)))
    names = coordinate_names(u_map)
    constrained = target.constrain(unflatten(x))
    c_flatten, c_unflatten = flattening(constrained)
    J = torch.autograd.functional.jacobian(
        lambda v: c_flatten(target.constrain(unflatten(v))), x)                 # (d_c, d)
    chol, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0 or not bool(torch.isfinite(H).all()):
        if bool(torch.isfinite(H).all()):
            # named in the parameters: a target sampled in whitened coordinates (a linear
            # reparametrisation, J its scale) would otherwise name its sampler's coordinate
            values, vectors = torch.linalg.eigh(H)
            smallest = f"{float(values[0]):.3g}"
            along = coordinate_names(constrained)[int((J @ vectors[:, 0]).abs().argmax())]
        else:
            smallest = "not finite"
            along = names[int((~torch.isfinite(H)).any(1).nonzero()[0, 0])]
        raise ValueError(f"the Hessian of the negative log posterior at the MAP is not positive "
                         f"definite (smallest eigenvalue {smallest} in the unconstrained "
                         f"coordinates, mostly along {along}): the posterior has no strict "
                         "maximum there (a flat or unidentified direction, or a MAP the "
                         "optimiser left short of a maximum), so no standard errors or Laplace "
                         "approximation; use a proper prior on it, or method='nuts'")
    covariance = torch.cholesky_inverse(chol)
    covariance = 0.5 * (covariance + covariance.T)
    edge = _at_the_edge(covariance, J)
    if edge is not None:
        at = int(J[:, edge].abs().argmax())  # the constrained entry it moves
        raise ValueError(f"the MAP is on the edge of the prior's support along {names[edge]} "
                         f"(at {coordinate_names(constrained)[at]} = "
                         f"{float(c_flatten(constrained)[at]):.6g}): the posterior is flat in "
                         "the unconstrained coordinate there, so standard errors or a Laplace "
                         "approximation at a bound are not meaningful; use method='nuts'")

    def standard_errors(cov):  # the delta method, per constrained site
        return c_unflatten(((J @ cov) * J).sum(-1).clamp(min=0).sqrt())

    se_bhhh = None
    if opg is not None:
        opg_chol, opg_info = torch.linalg.cholesky_ex(opg)
        if int(opg_info) == 0:
            se_bhhh = standard_errors(torch.cholesky_inverse(opg_chol))
    return Laplace(unflatten(x), covariance, names, standard_errors(covariance), how, se_bhhh,
                   J @ covariance @ J.T)


def laplace_draws(target, fit: Laplace, num_samples: int, seed: int) -> dict[str, torch.Tensor]:
    """``num_samples`` constrained draws ``{site: (num_samples, ...)}`` of the Laplace
    approximation: ``u ~ N(u_MAP, covariance)`` from a generator seeded with ``seed``, pushed
    through ``target.constrain``."""
    flatten, unflatten = flattening(fit.u)
    mean = flatten(fit.u)
    chol = torch.linalg.cholesky(fit.covariance)
    g = torch.Generator(device=mean.device).manual_seed(seed)
    z = torch.randn(num_samples, mean.numel(), generator=g, dtype=mean.dtype,
                    device=mean.device)
    return target.constrain(unflatten(mean + z @ chol.T))                      # (n, d)


def warn_without_standard_errors(error: ValueError) -> None:
    """After ``method="map"`` the MAP stands without standard errors; say why."""
    warnings.warn(InferenceWarning(f"no standard errors at the MAP: {error}"), stacklevel=5)


class LaplaceFit(NamedTuple):
    """The joint mode of a target and its Laplace approximation, as an econometric table
    reports them (:func:`laplace_fit`).

    Attributes:
        params: ``{site: tensor}`` the mode, in the parameters' own units.
        standard_errors: ``{site: tensor}`` square roots of the diagonal of ``covariance``.
        covariance: ``{site: (m, m)}`` each site's block of the delta-method covariance
            ``J H^{-1} J^T`` (``H`` the Hessian of the negative log density in unconstrained
            coordinates, ``J`` the Jacobian of the constraining transforms; ``m`` the site's
            number of entries; a simplex's block is singular along its sum).
        unconstrained_covariance: ``(n, n)`` ``H^{-1}`` over all unconstrained coordinates.
        opg_standard_errors: ``{site: tensor}`` the same from the inverse outer product of
            per-observation scores (BHHH), or None when not asked for or not available.
        log_likelihood: at the mode, the sum of ``target.log_likelihood``;
            ``log_likelihood_choice`` and ``log_likelihood_transition`` split it into the
            demonstrations' terms and a full-likelihood target's transitions term (0 for
            any other target).
        gradient_norm: sup-norm of the potential's gradient at the mode (unconstrained).
        seconds: wall time of the fit.
    """

    params: dict
    standard_errors: dict
    covariance: dict
    unconstrained_covariance: torch.Tensor
    opg_standard_errors: dict | None
    log_likelihood: float
    log_likelihood_choice: float
    log_likelihood_transition: float
    gradient_norm: float
    seconds: float


def laplace_fit(target, *, u0: dict[str, torch.Tensor] | None = None, max_iter: int = 500,
                opg: bool = True) -> LaplaceFit:
    """The joint MAP of ``target`` and its Laplace approximation, standard errors included.

    The mode in the parameters' own coordinates (with flat or uniform priors, the
    maximum-likelihood estimate) by :func:`fit_map`, polished by Newton steps on
    :func:`hessian` (at most 5) until the next step moves no coordinate by more than
    ``1e-9 (1 + max |x|)``, then :func:`laplace` there. L-BFGS stops at a tolerance on the
    gradient or the change in the potential, and where exactly depends on SciPy's release; a
    table's estimates and standard errors want the mode to the last printed digit whatever
    the release. (A rule on the Newton decrement ``g^T H^-1 g`` instead measures the
    potential, and leaves the parameters up to ``sqrt(decrement / curvature)`` off the mode.)

    Args:
        target: a target with ``potential``, ``constrain``, ``init_unconstrained`` and
            ``log_likelihood``, e.g. a
            :class:`~bayesirl.model.dynamics_likelihood.FullLikelihoodTarget` (whose
            ``log_likelihood``'s last term is the transitions').
        u0: unconstrained start (default ``target.init_unconstrained()``).
        max_iter: L-BFGS iterations.
        opg: also BHHH's standard errors (needs ``target.observation_scores``; a full
            likelihood's choices and counted transitions enter as separate observations: the
            first stage's counts do not say which month each increment belongs to, Rust's
            BHHH pairs each month's choice with its increment, which on his group 4 moves
            theta_11's s.e. in the fourth digit).

    Returns:
        A :class:`LaplaceFit`. Raises ValueError where the Hessian at the mode is not
        positive definite (:func:`laplace`).
    """
    start = time.perf_counter()
    u0 = {k: v.detach() for k, v in (u0 or target.init_unconstrained()).items()}
    u, _ = fit_map(target, u0, max_iter)
    flatten, unflatten = flattening(u)
    x = flatten(u).detach()

    def gradient(v):
        v = v.clone().requires_grad_(True)
        return torch.autograd.grad(target.potential(unflatten(v), jacobian=False), v)[0].detach()

    curvature = None  # the Hessian at x, where the polish has formed it
    for _ in range(5):  # Newton polish: quadratic from where L-BFGS stops
        grad = gradient(x)
        curvature = _curvature(target, x, unflatten)
        delta = torch.linalg.solve(curvature[0], grad)
        if float(delta.abs().max()) <= 1e-9 * (1.0 + float(x.abs().max())):
            break
        x = x - delta
        curvature = None
    if curvature is None:  # five steps taken: x moved after the last gradient
        grad = gradient(x)
    fit = laplace(target, unflatten(x), bhhh=opg, curvature=curvature)
    params = {k: v.detach() for k, v in target.constrain(unflatten(x)).items()}
    offsets = np.cumsum([0] + [v.numel() for v in params.values()])
    blocks = {k: fit.params_covariance[offsets[i]:offsets[i + 1], offsets[i]:offsets[i + 1]]
              for i, k in enumerate(params)}
    with torch.no_grad():
        ll = target.log_likelihood(params)
    # a full likelihood's last term is its transitions'; any other target's are all choices
    transition = (float(ll[..., -1]) if isinstance(target, FullLikelihoodTarget) else 0.0)
    return LaplaceFit(params, fit.standard_errors, blocks, fit.covariance,
                      fit.standard_errors_bhhh if opg else None, float(ll.sum()),
                      float(ll.sum()) - transition, transition,
                      float(grad.abs().max()), time.perf_counter() - start)
