"""What inference works on: the :class:`~bayesirl.inference.target.InferenceTarget` protocol and
the reward-space :class:`~bayesirl.inference.target.Target`.

A *target* is an unnormalised posterior over named parameters in unconstrained coordinates
``u`` (a dict of tensors, as Pyro's kernels want). ``infer()`` runs NUTS/HMC and MAP (and the
Laplace approximation at the MAP) on any object with the methods of :class:`InferenceTarget`,
and SVI on one that also has a Pyro model (:class:`HasPyroModel`). The other capabilities a
sampler can use are declared as protocols of their own, so ``infer()`` dispatches on what a
target is, not on attributes it happens to have:

- :class:`Refracting`: a potential with jumps on the boundaries of ``regions``
  (:class:`~bayesirl.inference.refraction.ArgmaxRegions`); NUTS refracts there. A chain starts
  from a deep copy of such a target, so the regions' path-dependent caches start empty in every
  chain wherever it runs.
- :class:`Rewhitening`: whitened coordinates ``w`` that a chain may re-estimate from its own
  warmup draws (:meth:`Rewhitening.rewhitened`); see :mod:`bayesirl.inference.mcmc`.
- :class:`HasPyroModel` and :class:`HasGuide`: a Pyro model with the same density (SVI), and
  a guide of the target's own (e.g. amortised).
- :class:`SecondOrder`: an exact gradient and Hessian of the MAP objective (a linear reward
  with the soft likelihood on a discounted MDP), for Newton steps and the Laplace
  approximation.
- :class:`HasObservationScores`: per-observation scores, whose outer products give a
  maximum-likelihood fit BHHH standard errors beside the inverse Hessian's.
- :class:`Fingerprinted`: named digests of what the target was built from, which SVI
  checkpoints carry so that a run never resumes from a fit to something else.

A model object other than a :class:`~bayesirl.model.rewards.RewardModel` enters ``infer()``
through :class:`TargetBuilder`: ``model.build_target(mdp, data, likelihood=...,
rationality=...)`` (``mdp`` may be None for models that need no MDP).

The posterior object that ``make_posterior`` returns must have an ``extra`` dict and a settable
``incomplete`` flag (``infer()`` records the ELBO trace, standard errors and interruptions
there) and ``check_convergence(strict=...)``, which ``infer()`` calls after MCMC;
:class:`~bayesirl.RewardPosterior` has all three.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from bayesirl.core.demos import Demonstrations
from bayesirl.core.mdp import TabularMDP
from bayesirl.model.base_target import BaseTarget
from bayesirl.model.fused import LinearNormalPotential
from bayesirl.model.likelihood import demo_log_likelihood, irl_model
from bayesirl.model.likelihood_derivatives import SoftSecondOrder
from bayesirl.model.rewards import RewardModel
from bayesirl.posterior.reward_posterior import RewardPosterior

__all__ = ["Fingerprinted", "HasGuide", "HasObservationScores", "HasPyroModel",
           "InferenceTarget", "Refracting",
           "Rewhitening", "SecondOrder", "Target", "TargetBuilder", "build_target", "digest"]


@runtime_checkable
class InferenceTarget(Protocol):
    """What NUTS, HMC, MAP and Laplace need of a target (see the module doc).

    - ``init_unconstrained()``: a starting point, ``{site: Tensor}`` in unconstrained
      coordinates; its shapes are the sites' shapes.
    - ``potential(u, jacobian=True)``: a 0-d tensor, minus the log density at ``u`` (up to a
      constant), with the log-Jacobian of the map to constrained values when ``jacobian``
      (without it, its minimum is the MAP of the constrained parameters); differentiable in
      ``u``.
    - ``constrain(u)``: constrained values of ``u``, with any leading batch dims.
    - ``log_likelihood(params)``: ``(..., N)`` pointwise log-likelihood over the N observation
      units, for constrained ``params`` with leading batch dims ``(...)``.
    - ``make_posterior(params, *, method, log_lik, sample_stats, settings, num_chains)``: the
      posterior object of constrained draws ``params: {site: (draws, *shape)}`` (chains
      flattened, ``num_chains`` of equal length); ``log_lik`` is ``(draws, N)`` or None (the
      target computes it); ``sample_stats`` are ``{name: (chains, draws_per_chain)}``.
    """

    def init_unconstrained(self) -> dict[str, torch.Tensor]: ...

    def potential(self, u: dict[str, torch.Tensor], jacobian: bool = True) -> torch.Tensor: ...

    def constrain(self, u: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def log_likelihood(self, params: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def make_posterior(self, params: dict[str, torch.Tensor], *, method: str,
                       log_lik: torch.Tensor | None, sample_stats: dict, settings: dict,
                       num_chains: int) -> Any: ...


@runtime_checkable
class Refracting(Protocol):
    """A target whose potential jumps on the boundaries of ``regions`` (None: it does not);
    NUTS on it is :class:`~bayesirl.inference.refraction.RefractiveNUTS`. Its one site is
    ``"w": (n,)``."""

    regions: Any


@runtime_checkable
class Rewhitening(Protocol):
    """A target in whitened coordinates ``u["w"]: (n,)`` of parameters ``p``.

    ``params_of(w)`` maps whitened coordinates to ``p``, ``whiten(p)`` back, and
    ``rewhitened(w_draws: (m, n))`` returns the same posterior whitened by those draws. Its
    coordinates being whitened already, NUTS adapts a diagonal mass matrix on it by default.
    """

    def params_of(self, w: torch.Tensor) -> torch.Tensor: ...

    def whiten(self, params: torch.Tensor) -> torch.Tensor: ...

    def rewhitened(self, w: torch.Tensor) -> Rewhitening: ...


@runtime_checkable
class SecondOrder(Protocol):
    """A target whose MAP objective (the potential without Jacobian) has an exact Hessian:
    ``second_order(theta: (d,), warm=None)`` returns a
    :class:`~bayesirl.model.likelihood_derivatives.SecondOrderValue` at its one site's value
    (None: it has none). MAP takes Newton steps on it and the Laplace approximation uses its
    Hessian (:mod:`bayesirl.inference.map`)."""

    second_order: Any


@runtime_checkable
class HasObservationScores(Protocol):
    """A target with per-observation scores: ``observation_scores(u)`` returns
    ``(scores (C, n), weights (C,))``, the gradients in the flattened unconstrained coordinates
    of the log-likelihood of each distinct observation and how often it was observed, whose
    weighted outer products are BHHH's estimate of the information."""

    def observation_scores(self, u: dict[str, torch.Tensor]
                           ) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class HasPyroModel(Protocol):
    """A target with a Pyro model of the same density (``pyro_model(subsample_size)``
    returns a callable without arguments), which SVI fits a guide to."""

    def pyro_model(self, subsample_size: int | None = None): ...


@runtime_checkable
class HasGuide(Protocol):
    """A target with guides of its own: ``guide(name)`` returns a Pyro guide for its Pyro
    model, or raises ValueError naming the guides it has."""

    def guide(self, name: str): ...


@runtime_checkable
class Fingerprinted(Protocol):
    """A target that names what it was built from: ``fingerprint()`` returns
    ``{what: digest}`` (e.g. ``{"MDP": ..., "demonstrations": ...}``), compared entry by entry
    when an SVI checkpoint is resumed."""

    def fingerprint(self) -> dict[str, str]: ...


@runtime_checkable
class TargetBuilder(Protocol):
    """A model other than a :class:`~bayesirl.model.rewards.RewardModel`: it builds its own
    target, validating ``mdp`` (possibly None) and ``data`` there."""

    def build_target(self, mdp, data, *, likelihood, rationality) -> InferenceTarget: ...


def build_target(mdp, data, model, likelihood: str, rationality) -> InferenceTarget:
    """The target of ``model`` given the problem: the reward-space :class:`Target` for a
    :class:`~bayesirl.model.rewards.RewardModel` (``mdp`` a TabularMDP, ``data``
    Demonstrations, validated against each other), else ``model.build_target(...)``."""
    if isinstance(model, RewardModel):
        if not isinstance(mdp, TabularMDP):
            raise TypeError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")
        if not isinstance(data, Demonstrations):
            raise TypeError(f"demos must be Demonstrations, got {type(data).__name__}")
        if data.device != mdp.device:
            raise ValueError(f"demos are on {data.device} but the MDP is on {mdp.device}; "
                             "move one with .to(device)")
        data.validate(mdp)
        model.check(mdp)
        return Target(mdp, data, model, likelihood, rationality)
    if not isinstance(model, TargetBuilder):
        raise TypeError("reward_model must be a bayesirl reward model (LinearReward, "
                        "TabularReward, GPReward, NeuralReward) or a model with "
                        "build_target(mdp, data, *, likelihood, rationality), got "
                        f"{type(model).__name__}")
    target = model.build_target(mdp, data, likelihood=likelihood, rationality=rationality)
    if not isinstance(target, InferenceTarget):
        raise TypeError(f"{type(model).__name__}.build_target returned a "
                        f"{type(target).__name__}, expected an object with init_unconstrained, "
                        "potential, constrain, log_likelihood and make_posterior "
                        "(bayesirl.inference.target.InferenceTarget)")
    return target


class Target(BaseTarget):
    """The unnormalised posterior over named reward parameters (and the rationality).

    ``log_prior(params)`` and ``log_likelihood(params)`` accept parameters with any leading
    batch shape; ``potential(u)`` takes unconstrained values (a dict, as Pyro's kernels want)
    and includes the log-Jacobian of the transforms to each prior's support (the plumbing of
    :class:`~bayesirl.model.base_target.BaseTarget`). Implements :class:`InferenceTarget`,
    :class:`HasPyroModel` (:func:`~bayesirl.irl_model`), :class:`Fingerprinted` and, where it
    applies, :class:`SecondOrder`.
    """

    def __init__(self, mdp, demos, reward_model, likelihood, rationality):
        self.mdp, self.demos, self.reward_model = mdp, demos, reward_model
        self.likelihood, self.rationality = likelihood, rationality
        priors = dict(reward_model.priors())
        if isinstance(rationality, torch.distributions.Distribution):
            priors["rationality"] = rationality
        super().__init__(priors, mdp.dtype, mdp.device)
        self.fused = LinearNormalPotential.of(self)
        self.second_order = SoftSecondOrder.of(self)

    def beta(self, params):
        return params.get("rationality", self.rationality)

    def log_likelihood(self, params) -> torch.Tensor:
        """``(..., N)`` per-demonstration log-likelihood."""
        reward = self.reward_model.reward(params)
        return demo_log_likelihood(self.mdp, self.demos, reward, self.likelihood,
                                   self.beta(params))

    def fused_potential(self, u):
        """A linear reward with a Normal prior: one fused node (None where it does not
        apply)."""
        return None if self.fused is None else self.fused(u)

    def pyro_model(self, subsample_size: int | None = None):
        """:func:`~bayesirl.irl_model` of this target (the same density), with minibatches of
        ``subsample_size`` demonstrations."""
        def model():
            return irl_model(self.mdp, self.demos, self.reward_model, self.likelihood,
                             self.rationality, subsample_size)
        return model

    def make_posterior(self, params, *, method, log_lik, sample_stats, settings, num_chains):
        """A :class:`~bayesirl.RewardPosterior` of draws ``params: {site: (draws, ...)}``
        (``num_chains`` chains of equal length, flattened); its rewards and pointwise
        log-likelihood are recomputed from the draws (``log_lik`` is not used). Raises
        FloatingPointError where a draw's reward or log-likelihood is not finite."""
        per_chain = {k: v.reshape(num_chains, v.shape[0] // num_chains, *v.shape[1:])
                     for k, v in params.items()}
        post = RewardPosterior.from_params(self, per_chain, method=method, settings=settings,
                                           sample_stats=sample_stats)
        for name, value in (("reward", post.rewards), ("log-likelihood", post.log_lik)):
            if not torch.isfinite(value).all():
                raise FloatingPointError(f"inference produced non-finite {name} values at some "
                                         "draws; the posterior is not usable")
        return post

    def fingerprint(self) -> dict[str, str]:
        """Digests of the MDP, the demonstrations, the reward model (its class and
        everything but the prior), the priors, the likelihood and the rationality."""
        state = self.reward_model.__getstate__()
        model = {k: v for k, v in state.items() if not _holds_prior(v)}
        return {"MDP": self.mdp.fingerprint(),
                "demonstrations": digest((self.demos.states, self.demos.actions,
                                          self.demos.mask, self.demos.final_states)),
                "reward model": f"{type(self.reward_model).__name__} {digest(model)}",
                "prior": digest(self.priors),
                "likelihood": self.likelihood,
                "rationality": digest(self.rationality),
                "dtype": str(self.mdp.dtype)}


def _holds_prior(value) -> bool:
    """A distribution, or a dict of them (a reward model's priors)."""
    if isinstance(value, dict):
        return any(isinstance(v, torch.distributions.Distribution) for v in value.values())
    return isinstance(value, torch.distributions.Distribution)


def digest(obj) -> str:
    """A 16-hex-digit digest of ``obj``'s content: tensors and arrays by dtype, shape and
    values; numbers, strings and None by value; dicts, lists and tuples item by item;
    distributions and other objects by class name and their attributes (private ones too), so
    two equal models digest equally in any process."""
    h = hashlib.sha256()
    _feed(h, obj, 0)
    return h.hexdigest()[:16]


def _feed(h, obj, depth: int) -> None:
    if depth > 20:  # a cycle or a deep object graph: its class is all that is compared
        h.update(f"<{type(obj).__qualname__}>".encode())
        return
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        h.update(f"tensor{t.dtype}{tuple(t.shape)}".encode())
        flat = t.reshape(-1).clone(memory_format=torch.contiguous_format)  # stride 1, even
        h.update(flat.view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # expanded
    elif isinstance(obj, np.ndarray):
        h.update(f"array{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif obj is None or isinstance(obj, (bool, int, str, torch.dtype, torch.Size)):
        h.update(f"{type(obj).__name__}:{obj!r}".encode())
    elif isinstance(obj, float):
        h.update(("nan" if math.isnan(obj) else repr(obj)).encode())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k], depth + 1)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__}[".encode())
        for x in obj:
            _feed(h, x, depth + 1)
        h.update(b"]")
    elif isinstance(obj, torch.nn.Module):
        h.update(type(obj).__qualname__.encode())
        _feed(h, obj.state_dict(), depth + 1)
    elif isinstance(getattr(obj, "__dict__", None), dict):
        h.update(type(obj).__qualname__.encode())
        state = obj.__getstate__()  # what pickling keeps: caches a class drops stay out
        _feed(h, state if isinstance(state, dict) else vars(obj), depth + 1)
    else:
        h.update(f"{type(obj).__qualname__}:{obj!r}".encode())
