"""Exact posteriors by quadrature over a 1-d or 2-d parameter (:func:`grid_posterior`).

An inference method for tiny problems: the unnormalised posterior is evaluated on a grid that is
uniform in unconstrained coordinates, normalised, and summarised (moments, marginal intervals,
the mode, the log evidence) or sampled exactly. It is the reference that simulation-based
calibration and the tests compare samplers against, and an ``sbc`` method of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import biject_to, constraints

from bayesirl.core.demos import Demonstrations
from bayesirl.core.mdp import TabularMDP
from bayesirl.model.likelihood import check_likelihood, check_rationality, demo_log_likelihood
from bayesirl.model.rewards import LinearReward, RewardModel, _check_prior

__all__ = ["GRID_POINTS", "GridPosterior", "grid_posterior"]

GRID_POINTS = {1: 801, 2: 121}


@dataclass(frozen=True, eq=False)
class GridPosterior:
    """The exact posterior over a 1-d or 2-d parameter vector, tabulated on a grid.

    The grid is uniform in *unconstrained* coordinates ``u`` (identity for real-valued sites,
    ``log`` for positive ones such as the rationality); each grid point is the centre of a cell
    and the density is integrated by the midpoint rule, which for a smooth density that vanishes
    at the edges is accurate to far below the cell width (exponentially in ``sd / cell``).

    Attributes:
        names: ``d`` labels of the coordinates, e.g. ``("theta[0]", "theta[1]")`` or
            ``("theta[0]", "rationality")``; reward-model sites first, in ``priors()`` order.
        axes: ``d`` tensors ``(n_i,)``: the grid along each unconstrained coordinate.
        cell: ``(d,)`` cell widths in unconstrained coordinates (the grid resolution).
        points: ``(M, d)`` grid points in constrained coordinates, ``M = prod n_i``, in
            row-major order of ``axes`` (the last coordinate varies fastest).
        weights: ``(M,)`` normalised posterior probabilities of the cells (sum to 1).
        log_density: ``(M,)`` unnormalised log density of ``u`` (prior, likelihood and
            log-Jacobian), whose normalised exponent is ``weights / prod(cell)``.
        mean, sd: ``(d,)`` posterior mean and standard deviation (constrained coordinates).
        cov: ``(d, d)`` posterior covariance.
        mode: ``(d,)`` grid point of highest posterior density of the constrained parameters
            (no Jacobian: what ``infer(method="map")`` maximises), exact to within ``cell``.
        log_evidence: ``log p(demos)`` (meaningless for an improper prior).
        edge_mass: posterior mass of the cells on the boundary of the grid.
    """

    names: tuple[str, ...]
    axes: tuple[torch.Tensor, ...]
    cell: torch.Tensor
    points: torch.Tensor
    weights: torch.Tensor
    log_density: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor
    sd: torch.Tensor
    mode: torch.Tensor
    log_evidence: float
    edge_mass: float
    _unconstrained: torch.Tensor
    _transforms: tuple

    @property
    def dim(self) -> int:
        return len(self.axes)

    def marginal(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginal of coordinate ``i``: ``(values (n_i,), probabilities (n_i,))`` of its cells,
        values in constrained coordinates."""
        return self._transforms[i](self.axes[i]), self._marginal_weights(i)

    def _marginal_weights(self, i: int) -> torch.Tensor:
        w = self.weights.reshape(tuple(len(a) for a in self.axes))
        others = tuple(j for j in range(self.dim) if j != i)
        return w.sum(others) if others else w  # sum(()) would reduce every dim

    def interval(self, prob: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Equal-tailed marginal credible intervals ``(lower (d,), upper (d,))``.

        The marginal density is taken constant within each cell (as :meth:`sample` draws), so
        the quantiles are exact for that piecewise-constant density.
        """
        if not 0 < prob < 1:
            raise ValueError(f"prob is {prob!r}, expected a number in (0, 1)")
        lo, hi = [], []
        for i in range(self.dim):
            w = self._marginal_weights(i)
            edges = torch.cat([self.axes[i][:1] - self.cell[i] / 2,
                               self.axes[i] + self.cell[i] / 2])
            cdf = torch.cat([w.new_zeros(1), w.cumsum(0)])
            bounds = []
            for q in ((1 - prob) / 2, (1 + prob) / 2):
                k = int(torch.searchsorted(cdf, torch.tensor(q, dtype=cdf.dtype)).clamp(1, len(w)))
                frac = (q - cdf[k - 1]) / (cdf[k] - cdf[k - 1]).clamp(min=1e-300)
                bounds.append(self._transforms[i](edges[k - 1] + frac * self.cell[i]))
            lo.append(bounds[0])
            hi.append(bounds[1])
        return torch.stack(lo), torch.stack(hi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` independent draws ``(n, d)`` (constrained coordinates): a cell drawn with
        probability ``weights``, then a uniform point inside it (in unconstrained coordinates).

        The draws follow the piecewise-constant density of the grid, which is what simulation-
        based calibration needs from a reference posterior. Randomness comes from ``generator``
        only (default: a fresh ``torch.Generator`` seeded 0).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n is {n!r}, expected an integer >= 1")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        idx = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=g)
        u = self._unconstrained.cpu()[idx]
        u = u + (torch.rand(n, self.dim, generator=g, dtype=u.dtype) - 0.5) * self.cell.cpu()
        return torch.stack([self._transforms[i](u[:, i]) for i in range(self.dim)],
                           -1).to(self.points.device)

    def __repr__(self) -> str:
        n = "x".join(str(len(a)) for a in self.axes)
        return (f"GridPosterior(names={self.names}, grid={n}, mean={self.mean.tolist()}, "
                f"sd={self.sd.tolist()}, edge_mass={self.edge_mass:.1e})")


class _Sites:
    """The coordinates of a grid: scalar slices of the model's sites, and their transforms."""

    def __init__(self, reward_model: RewardModel, prior, rationality):
        priors = dict(reward_model.priors())
        if prior is not None:
            if len(priors) != 1:
                raise ValueError(f"prior overrides a single site, but the reward model has "
                                 f"sites {tuple(priors)}")
            (name, old), = priors.items()
            shape = tuple(old.batch_shape + old.event_shape)
            if isinstance(prior, torch.distributions.Distribution) and (
                    prior.event_shape == torch.Size(shape) and len(shape) > 0):
                priors[name] = prior  # a multivariate prior over the whole site
            else:
                priors[name] = _check_prior("prior", prior, shape)
        if isinstance(rationality, torch.distributions.Distribution):
            priors["rationality"] = rationality
        self.priors = priors
        self.shapes = {k: tuple(p.batch_shape + p.event_shape) for k, p in priors.items()}
        self.names = []
        self.transforms = []
        for k, shape in self.shapes.items():
            support = priors[k].support
            while isinstance(support, constraints.independent):
                support = support.base_constraint
            t = biject_to(support)
            if t.event_dim > 0:
                raise ValueError(f"site {k!r} has support {support}, expected an elementwise "
                                 "one (real, positive, interval) for the grid")
            size = math.prod(shape)
            self.names += [k if not shape else f"{k}[{i}]" for i in range(size)]
            self.transforms += [t] * size
        if len(self.names) not in (1, 2):
            raise ValueError(f"grid_posterior needs 1 or 2 scalar parameters, got "
                             f"{len(self.names)}: {self.names}; fix the others or use MCMC")

    def split(self, u: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """Unconstrained ``(M, d)`` -> constrained params ``{site: (M, *shape)}`` and the
        log-Jacobian ``(M,)``."""
        params, logdet, j = {}, u.new_zeros(u.shape[0]), 0
        for k, shape in self.shapes.items():
            size = math.prod(shape)
            uk = u[:, j:j + size]
            t = self.transforms[j]
            xk = t(uk)
            logdet = logdet + t.log_abs_det_jacobian(uk, xk).reshape(u.shape[0], -1).sum(-1)
            params[k] = xk.reshape(u.shape[0], *shape)
            j += size
        return params, logdet

    def log_prior(self, params) -> torch.Tensor:
        total = 0.0
        for k, p in self.priors.items():
            lp = p.log_prob(params[k])
            total = total + lp.reshape(lp.shape[0], -1).sum(-1)
        return total


def grid_posterior(mdp: TabularMDP, demos: Demonstrations, reward_model_or_features,
                   prior=None, likelihood: str = "soft", rationality=1.0,
                   grid: int | None = None, bounds=None, max_edge_mass: float = 1e-6,
                   chunk: int = 4096) -> GridPosterior:
    """The exact posterior over a 1-d or 2-d parameter by quadrature on a grid.

    The unnormalised log posterior ``log p(params) + sum_i log p(demo_i | params)`` (the
    density :func:`bayesirl.infer` samples) is evaluated at every grid point at once (batched
    :func:`~bayesirl.model.demo_log_likelihood`, in chunks of ``chunk`` points), plus the
    log-Jacobian to unconstrained coordinates, and normalised.

    Args:
        mdp, demos: the problem.
        reward_model_or_features: a reward model whose sites hold 1 or 2 scalars in all (e.g.
            ``LinearReward`` with d = 1 or 2), or features ``(S, d)`` / ``(S, A, d)`` for a
            ``LinearReward``.
        prior: overrides the prior of the (single) reward site: a univariate torch distribution
            applied to each coordinate, or one with ``event_shape (d,)``. Default: the model's
            (``Normal(0, 1)`` for features).
        likelihood: ``"soft"`` or ``"boltzmann"``.
        rationality: a float, or a prior on the positive reals, which then is a coordinate of
            the grid (named ``"rationality"``, gridded in ``log beta``).
        grid: points per axis (default 801 in 1-d, 121 in 2-d).
        bounds: ``d`` pairs ``(low, high)`` of the grid in unconstrained coordinates. Default:
            the Laplace approximation at the mode, +-9 sd per axis, widened until the boundary
            cells carry at most ``max_edge_mass`` and narrowed when a posterior sd spans fewer
            than 4 cells.
        max_edge_mass: the largest posterior mass allowed in the boundary cells; more raises
            ``ValueError`` (the grid would cut off the posterior).

    Returns:
        :class:`GridPosterior`. Resolution: ``cell = (high - low) / (grid - 1)`` per axis,
        about ``sd / 6.7`` in 2-d and ``sd / 44`` in 1-d with the default bounds.
    """
    if isinstance(reward_model_or_features, RewardModel):
        model = reward_model_or_features
    else:
        model = LinearReward(reward_model_or_features)
    model.check(mdp)
    demos.validate(mdp)
    likelihood = check_likelihood(likelihood)
    rationality = check_rationality(rationality)
    sites = _Sites(model, prior, rationality)
    d = len(sites.names)
    n = GRID_POINTS[d] if grid is None else grid
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(f"grid is {grid!r}, expected an integer >= 3 (points per axis)")
    dtype, device = mdp.dtype, mdp.device

    def log_density(u, jacobian=True):
        out = []
        with torch.no_grad():
            for i in range(0, u.shape[0], chunk):
                params, logdet = sites.split(u[i:i + chunk])
                reward = model.reward({k: v for k, v in params.items() if k != "rationality"})
                beta = params.get("rationality", rationality)
                ll = demo_log_likelihood(mdp, demos, reward, likelihood, beta).sum(-1)
                lp = sites.log_prior(params) + ll
                out.append(lp + logdet if jacobian else lp)
        return torch.cat(out)

    def evaluate(lo, hi):
        axes = tuple(torch.linspace(float(a), float(b), n, dtype=dtype, device=device)
                     for a, b in zip(lo, hi, strict=True))
        u = torch.cartesian_prod(*axes).reshape(-1, d)
        return axes, u, log_density(u)

    def edge(weights):
        w = weights.reshape((n,) * d)
        return max(float(w.sum() - w[(slice(1, -1),) * d].sum()), 0.0)

    explicit = bounds is not None
    if explicit:
        lo, hi = _check_bounds(bounds, d)
    else:
        centre, scale = _laplace(lambda u: log_density(u), d, dtype, device)
        lo, hi = centre - 9 * scale, centre + 9 * scale
    for _ in range(12):
        axes, u, logp = evaluate(lo, hi)
        if not torch.isfinite(logp).any():
            raise ValueError("the log posterior is -inf or nan at every grid point; check the "
                             "bounds and the prior's support")
        logp = torch.nan_to_num(logp, nan=-math.inf)
        weights = torch.softmax(logp, 0)
        mass = edge(weights)
        if explicit:
            break
        cell = (hi - lo) / (n - 1)
        w = weights.reshape((n,) * d)
        grow = torch.zeros(d, 2, dtype=torch.bool)
        for i in range(d):
            wi = w.movedim(i, 0)
            grow[i, 0] = float(wi[0].sum()) > max_edge_mass / (2 * d)
            grow[i, 1] = float(wi[-1].sum()) > max_edge_mass / (2 * d)
        if grow.any():
            width = hi - lo
            lo = torch.where(grow[:, 0].to(device), lo - width, lo)
            hi = torch.where(grow[:, 1].to(device), hi + width, hi)
            continue
        mean = weights @ u
        sd = (weights @ (u - mean) ** 2).sqrt()
        coarse = sd < 4 * cell  # the box is over twice as wide as needed: narrow it
        if bool(coarse.any()):
            lo = torch.where(coarse, mean - 9 * sd, lo)
            hi = torch.where(coarse, mean + 9 * sd, hi)
            continue
        break
    if mass > max_edge_mass:
        raise ValueError(f"the boundary cells of the grid carry posterior mass {mass:.2e} "
                         f"(> max_edge_mass={max_edge_mass:g}); widen bounds (now "
                         f"{[(float(a[0]), float(a[-1])) for a in axes]})")
    cell = torch.stack([a[1] - a[0] for a in axes])  # of the last grid evaluated
    x = torch.stack([sites.transforms[i](u[:, i]) for i in range(d)], -1)
    mean = weights @ x
    cov = (weights[:, None] * (x - mean)).T @ (x - mean)
    log_joint = log_density(u, jacobian=False)
    mode = x[int(torch.nan_to_num(log_joint, nan=-math.inf).argmax())]
    log_evidence = float(torch.logsumexp(logp, 0) + cell.log().sum())
    return GridPosterior(tuple(sites.names), axes, cell, x, weights, logp, mean, cov,
                         cov.diagonal().sqrt(), mode, log_evidence, mass, u,
                         tuple(sites.transforms))


def _check_bounds(bounds, d):
    b = torch.as_tensor(bounds, dtype=torch.float64)
    if tuple(b.shape) != (d, 2) or not torch.isfinite(b).all() or (b[:, 1] <= b[:, 0]).any():
        raise ValueError(f"bounds is {bounds!r}, expected {d} finite pairs (low, high) with "
                         "low < high")
    return b[:, 0], b[:, 1]


def _laplace(log_density, d, dtype, device):
    """Centre and per-axis scale of a Gaussian fit at the mode of ``log_density`` (of
    unconstrained ``(M, d)`` points); falls back to a unit scale where the curvature is not
    negative."""
    u = torch.zeros(1, d, dtype=dtype, device=device)
    # coarse search first: the mode of a 1-d or 2-d density over a wide box
    axes = [torch.linspace(-20, 20, 81, dtype=dtype, device=device)] * d
    pts = torch.cartesian_prod(*axes).reshape(-1, d)
    lp = torch.nan_to_num(log_density(pts), nan=-math.inf)
    if torch.isfinite(lp).any():
        u = pts[int(lp.argmax())][None].clone()
    h = 1e-3
    for _ in range(50):  # Newton steps with finite differences (cheap in 1-d and 2-d)
        eye = torch.eye(d, dtype=dtype, device=device) * h
        shifts = [torch.zeros(d, dtype=dtype, device=device)]
        for i in range(d):
            shifts += [eye[i], -eye[i]]
            for j in range(i + 1, d):
                shifts += [eye[i] + eye[j], eye[i] - eye[j], -eye[i] + eye[j], -eye[i] - eye[j]]
        f = log_density(u + torch.stack(shifts))
        grad = torch.zeros(d, dtype=dtype, device=device)
        hess = torch.zeros(d, d, dtype=dtype, device=device)
        k = 1
        for i in range(d):
            grad[i] = (f[k] - f[k + 1]) / (2 * h)
            hess[i, i] = (f[k] + f[k + 1] - 2 * f[0]) / h**2
            k += 2
            for j in range(i + 1, d):
                hess[i, j] = hess[j, i] = (f[k] - f[k + 1] - f[k + 2] + f[k + 3]) / (4 * h * h)
                k += 4
        if not torch.isfinite(hess).all() or not bool(
                (torch.linalg.eigvalsh(-hess) > 0).all()):
            break
        step = torch.linalg.solve(-hess, grad)
        step = step.clamp(-2.0, 2.0)
        u = u + step
        if float(step.abs().max()) < 1e-8:
            break
    try:
        cov = torch.linalg.inv(-hess)
        scale = cov.diagonal().sqrt()
        if not (torch.isfinite(scale).all() and (scale > 0).all()):
            raise RuntimeError
    except RuntimeError:
        scale = torch.ones(d, dtype=dtype, device=device)
    return u[0], scale
