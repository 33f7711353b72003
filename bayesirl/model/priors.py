r"""Priors in a model's own units: a flat prior for maximum likelihood, weakly informative ones.

A prior is a statement in the units of the parameters it sits on. ``LinearReward``'s default
``Normal(0, 1)`` says every reward weight is within about 2 units of zero, which suits
standardised features and rewards of order one; it does not suit a model whose parameters are
measured in other units. Rust's (1987) bus engine model is the example: reward
``-0.001 theta_11 x`` for keeping an engine with ``x`` bins of mileage and ``-RC`` for replacing
it. On his group 4 at a discount of 0.975 the maximum-likelihood estimates are
``theta_11 = 3.80, RC = 8.99`` with standard errors about 0.8 and 1.0, strongly correlated (0.94).
``Normal(0, 1)`` puts the MLE's RC nine prior standard deviations from the prior's centre, and
4 292 bus-months with 33 replacements do not outweigh that: the MAP moves to
``theta_11 = 1.56, RC = 6.09``, a different model of the bus manager, and posterior intervals
inherit the bias. Nothing in the data is wrong; the prior spoke loudly in the wrong units.

Choosing a scale, in order of preference:

1. **Units.** Ask what magnitudes are plausible in the parameter's own units: RC is the cost of
   a replacement in units of the logit scale (the extreme-value shocks' scale, 1), so values
   from about 1 to 30 are plausible and ``weakly_informative(50.)`` is weak. The scale should
   exceed the largest plausible magnitude several times over.
2. **Check the pull.** With an estimate and its covariance in hand (``infer(method="map")``
   under :func:`flat`), :func:`prior_influence` gives the shift of the MAP that a Normal prior
   causes, in standard errors, under a Gaussian approximation of the likelihood. A weakly
   informative prior moves no parameter by more than about 0.1 standard errors; the
   approximation holds where the shift is small, exactly where it is needed.
3. **Flat.** :func:`flat` is improper (no normalisable density): the posterior is the
   normalised likelihood, the MAP is the maximum-likelihood estimate, and the Laplace
   approximation's covariance is the inverse observed information. It is proper only when the
   likelihood identifies every parameter; ``LinearReward`` refuses it for features with a
   direction the policy cannot see, and SBC, prior-predictive checks and evidence computations
   need a proper prior.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import constraints

__all__ = ["flat", "prior_influence", "weakly_informative"]


def flat() -> dist.ImproperUniform:
    """The improper flat prior on the real line: ``log p(theta) = 0`` everywhere.

    MLE-equivalent: the posterior is proportional to the likelihood, so ``infer(method="map")``
    returns the maximum-likelihood estimate and NUTS samples the normalised likelihood. Scalar;
    reward models expand it to their sites' shapes. The posterior is proper only when the data
    identify every parameter (see the module docstring).
    """
    return dist.ImproperUniform(constraints.real, (), ())


def _positive_scales(name: str, value) -> torch.Tensor:
    """``value`` (a number or a sequence) as a 0-d or 1-d float tensor of finite values > 0."""
    if isinstance(value, bool) or isinstance(value, str):
        raise TypeError(f"{name} must be a number or a sequence of numbers, got {value!r}")
    try:
        t = torch.as_tensor(value, dtype=torch.get_default_dtype())
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a number or a sequence of numbers, got "
                        f"{type(value).__name__}") from e
    if t.dim() > 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a number or a 1-d sequence, got shape {tuple(t.shape)}")
    bad = ~(torch.isfinite(t) & (t > 0))
    if bad.any():
        i = int(bad.nonzero()[0, 0]) if t.dim() else None
        where = f"{name}[{i}]" if i is not None else name
        raise ValueError(f"{where} is {t.reshape(-1)[i or 0].item()!r}, expected a finite "
                         "number > 0 in the parameters' units")
    return t


def weakly_informative(scale, loc=0.0) -> dist.Normal:
    """A Normal prior with standard deviation ``scale`` in the parameters' own units.

    Args:
        scale: a number (every weight) or one per weight, ``(d,)``; each finite and > 0.
            Choose it several times larger than the largest plausible magnitude of the
            parameter (module docstring); check with :func:`prior_influence`.
        loc: the prior's centre, a number or ``(d,)`` (default 0).

    Returns:
        ``Normal(loc, scale)``, batch shape ``()`` or ``(d,)``, ready for
        ``LinearReward(features, prior=...)``.
    """
    s = _positive_scales("scale", scale)
    if isinstance(loc, bool) or isinstance(loc, str):
        raise TypeError(f"loc must be a number or a sequence of numbers, got {loc!r}")
    try:
        m = torch.as_tensor(loc, dtype=s.dtype)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"loc must be a number or a sequence of numbers, got "
                        f"{type(loc).__name__}") from e
    if m.dim() > 1 or not torch.isfinite(m).all():
        raise ValueError(f"loc is {loc!r}, expected a finite number or a 1-d sequence")
    if s.dim() and m.dim() and s.shape != m.shape:
        raise ValueError(f"loc has {m.numel()} entries but scale has {s.numel()}")
    m, s = torch.broadcast_tensors(m, s)
    return dist.Normal(m, s)


def prior_influence(estimate, covariance, scale, loc=0.0) -> torch.Tensor:
    r"""Shift of the MAP from the MLE that a Normal prior causes, in standard errors.

    Under a Gaussian approximation of the likelihood (MLE ``theta_hat``, covariance ``C``, the
    inverse observed information) and a prior ``Normal(loc, diag(scale^2))``, the MAP is
    ``(C^-1 + D^-1)^-1 (C^-1 theta_hat + D^-1 loc)``; this returns
    ``(MAP - theta_hat) / sqrt(diag C)``, one entry per parameter. Shifts of order 0.1 or less
    mean the prior is weak for these data. The approximation is local: large shifts come out
    wrong (Rust's group 4 at 0.975 under ``Normal(0, 1)`` is such a case), so read it as a
    check that a prior is weak, not as a correction.

    Args:
        estimate: ``(d,)`` maximum-likelihood estimate.
        covariance: ``(d, d)`` its covariance, symmetric positive definite.
        scale, loc: the Normal prior's standard deviations and centre (numbers or ``(d,)``).

    Returns:
        ``(d,)`` float64 tensor of shifts in standard errors (signed).
    """
    theta = torch.as_tensor(estimate, dtype=torch.float64)
    if theta.dim() != 1 or not torch.isfinite(theta).all():
        raise ValueError(f"estimate must be a finite 1-d vector, got shape {tuple(theta.shape)}")
    d = theta.shape[0]
    cov = torch.as_tensor(covariance, dtype=torch.float64)
    if tuple(cov.shape) != (d, d):
        raise ValueError(f"covariance must have shape ({d}, {d}) like estimate, got "
                         f"{tuple(cov.shape)}")
    if not torch.isfinite(cov).all() or not torch.allclose(cov, cov.T, rtol=1e-8, atol=0.0):
        raise ValueError("covariance must be finite and symmetric")
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info):
        raise ValueError("covariance is not positive definite")
    prior = weakly_informative(scale, loc)
    s = prior.scale.to(torch.float64).expand(d)
    m = prior.loc.to(torch.float64).expand(d)
    precision = torch.cholesky_inverse(chol)
    posterior_precision = precision + torch.diag(s ** -2)
    map_ = torch.linalg.solve(posterior_precision, precision @ theta + m / s ** 2)
    return (map_ - theta) / cov.diagonal().sqrt()
