"""The Q-function class of the value-space model for continuous states: ``Q_w(s, .)``.

A :class:`QFunction` is an MLP (``hidden=()``: linear) with flat weights ``w: (P,)`` on features
``phi(s)`` of the observation, or that network's first-order expansion in its weights at a point
(``linearised_at``); a :class:`FeatureMap` is the standard feature map: the standardised
observation with a constant, optional random Fourier features, optionally crossed with the
observation's two-valued coordinates. Both are pure functions of their weights and describe
themselves as JSON (``spec`` / ``from_spec``), which is how a posterior file keeps them. The
model that puts a prior on ``w`` and reads rewards off the soft Bellman equation is
:mod:`bayesirl.model.q_value`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from bayesirl._validation import as_tensor, check_int, check_number

__all__ = ["FeatureMap", "QFunction"]


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureMap:
    """``phi(s) = [1, z, sqrt(2 / F) cos(z Omega^T + b)]`` with ``z = (s - loc) / scale``,
    crossed, when ``flags`` is not empty, with the flags: ``[phi0, c_1 phi0, ..., c_K phi0]``
    where ``phi0`` is the part before and ``c_k = 1[s_{flags[k]} > thresholds[k]]``.

    A flag is an observation coordinate that takes two values (a leg's ground contact, a
    gear). An expert whose behaviour switches with it (LunarLander's heuristic stops steering
    once both legs touch down) needs a Q-function whose slope in the other coordinates changes
    with it; crossing gives a Q linear in the parameters, so NUTS samples it as well as the
    plain linear class, while an MLP's posterior defeats NUTS (every draw at the maximum tree
    depth). The price: a flag's block is learnt only from the steps where the flag is on, so
    the modes share less; an apprentice whose errors keep it out of a mode (a lander hovering
    above the ground, never touching down) gains nothing from that mode's block and loses
    what the shared weights learnt there.

    Attributes:
        loc, scale: ``(obs_dim,)`` standardisation (fitted to the data by :meth:`fit`).
        frequencies: ``(F, obs_dim)`` random Fourier frequencies ``Omega`` (``F`` may be 0);
            ``phases``: ``(F,)`` ``b``. With ``Omega ~ N(0, 1 / lengthscale^2)`` and
            ``b ~ U(0, 2 pi)`` the Fourier part approximates an RBF kernel on ``z``
            (Rahimi & Recht 2007).
        flags: ``(K,)`` indices of the flag coordinates (K may be 0); thresholds: ``(K,)``
            the midpoints of each flag's two values.
    """

    loc: torch.Tensor
    scale: torch.Tensor
    frequencies: torch.Tensor
    phases: torch.Tensor
    flags: tuple[int, ...] = ()
    thresholds: torch.Tensor | None = None

    @classmethod
    def fit(cls, obs, n_fourier: int = 0, lengthscale: float = 1.0, seed: int = 0,
            cross_flags: bool = False) -> FeatureMap:
        """Standardise to ``obs: (M, obs_dim)`` (a zero spread becomes 1), draw ``n_fourier``
        frequencies from a generator seeded ``seed`` and, with ``cross_flags``, cross the
        features with every coordinate that takes exactly two values in ``obs``."""
        obs = as_tensor("obs", obs)
        n_fourier = check_int("n_fourier", n_fourier, low=0)
        lengthscale = check_number("lengthscale", lengthscale, 0.0, low_open=True)
        loc = obs.mean(0)
        scale = obs.std(0) if obs.shape[0] > 1 else torch.ones_like(loc)
        scale = torch.where(scale > 1e-8 * (1 + loc.abs()), scale, torch.ones_like(scale))
        g = torch.Generator().manual_seed(check_int("seed", seed, low=0))
        freq = torch.randn(n_fourier, obs.shape[1], generator=g, dtype=torch.float64)
        phases = 2 * math.pi * torch.rand(n_fourier, generator=g, dtype=torch.float64)
        flags, thresholds = (), None
        if cross_flags:
            values = [torch.unique(obs[:, j]) for j in range(obs.shape[1])]
            flags = tuple(j for j, v in enumerate(values) if v.numel() == 2)
            if not flags:
                raise ValueError("cross_flags: no observation coordinate takes exactly two "
                                 "values in the data, so there is no flag to cross with")
            thresholds = torch.stack([values[j].mean() for j in flags])
        return cls(loc, scale, (freq / lengthscale).to(obs.dtype), phases.to(obs.dtype),
                   flags, thresholds)

    @property
    def n_features(self) -> int:
        return (1 + self.loc.shape[0] + self.frequencies.shape[0]) * (1 + len(self.flags))

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        """``(..., obs_dim) -> (..., n_features)``."""
        z = (obs - self.loc.to(obs)) / self.scale.to(obs)
        parts = [torch.ones_like(z[..., :1]), z]
        n_fourier = self.frequencies.shape[0]
        if n_fourier:
            parts.append(math.sqrt(2.0 / n_fourier)
                         * torch.cos(z @ self.frequencies.to(z).T + self.phases.to(z)))
        phi = torch.cat(parts, -1)
        if not self.flags:
            return phi
        on = (obs[..., list(self.flags)] > self.thresholds.to(obs)).to(obs)  # (..., K)
        return torch.cat([phi, (on[..., :, None] * phi[..., None, :]).flatten(-2)], -1)

    def spec(self) -> dict:
        """A JSON-able description (:meth:`from_spec` rebuilds it)."""
        spec = {"kind": "standardised", "loc": self.loc.tolist(),
                "scale": self.scale.tolist(), "frequencies": self.frequencies.tolist(),
                "phases": self.phases.tolist()}
        if self.flags:
            spec.update(flags=list(self.flags), thresholds=self.thresholds.tolist())
        return spec

    @classmethod
    def from_spec(cls, spec: dict, dtype=None) -> FeatureMap:
        dtype = dtype or torch.get_default_dtype()
        d = len(spec["loc"])
        flags = tuple(int(j) for j in spec.get("flags", ()))
        thresholds = torch.tensor(spec["thresholds"], dtype=dtype) if flags else None
        return cls(torch.tensor(spec["loc"], dtype=dtype), torch.tensor(spec["scale"], dtype=dtype),
                   torch.tensor(spec["frequencies"], dtype=dtype).reshape(-1, d),
                   torch.tensor(spec["phases"], dtype=dtype), flags, thresholds)


def check_skip(skip_scale, hidden: tuple[int, ...]) -> float | None:
    """``skip_scale`` checked: None, or a number > 0 beside hidden layers (beside
    ``hidden=()`` a linear term would be a second copy of the linear class)."""
    if skip_scale is None:
        return None
    skip_scale = check_number("skip_scale", skip_scale, 0.0, low_open=True)
    if not hidden:
        raise ValueError("skip_scale adds a linear term beside an MLP: it needs hidden layers "
                         "(a Q with hidden=() is already linear in the features)")
    return skip_scale


@dataclasses.dataclass(frozen=True, eq=False)
class QFunction:
    """``Q_w(s, .)``: an MLP with flat weights ``w: (P,)`` on features ``phi(s): (F,)``.

    Layer sizes ``[F, *hidden, A]``, tanh between layers. The first layer has no bias (the
    features carry a constant); later layers do. With ``skip_scale`` set, a term linear in the
    features is added to the network's output, ``Q = MLP(phi(s)) + phi(s) W_s``: a linear
    class beside the network, so that what is linear in the features need not be carried by
    saturating tanh units. Weights are laid out layer by layer, each ``W_l: (n_in, n_out)``
    row-major then ``b_l: (n_out,)``, then ``W_s: (F, A)`` row-major when ``skip_scale`` is
    set, and last, when ``level_scale`` is set, one level ``L`` added to every action's Q.
    ``hidden=()`` is linear in the features: ``Q = phi(s) W (+ L)``.

    With ``linearised_at = w0`` set, ``Q`` is the network's first-order Taylor expansion in its
    weights around ``w0``, ``Q_w = Q_w0 + J_w0 (w - w0)`` with ``J_w0 = dQ/dw`` at ``w0`` (the
    linearised or "GLM" network of Immer, Korzepa & Bauer 2021): the same function at ``w0``,
    the same gradient there, and linear in ``w``. A posterior over it moves ``Q`` only along
    the network's tangent space at ``w0``, so the weight directions the data leave free (where
    ``J`` is flat) leave ``Q`` as it is, where moving along them in the network itself can carry
    ``Q`` anywhere (:class:`~bayesirl.model.q_value.QValueModel` ``linearise``).

    Attributes:
        features: a :class:`FeatureMap` or any callable ``(M, obs_dim) -> (M, F)``.
        n_features: F; n_actions: A; hidden: the hidden widths.
        weight_scale: prior scale; ``w ~ N(0, weight_scale / sqrt(n_in))`` per weight (with
            ``fan_in``; ``N(0, weight_scale)`` without) and ``N(0, weight_scale)`` per bias.
        level_scale: prior scale of the level ``L ~ N(0, level_scale)`` shared by all
            actions, or None for no level. Adding ``L`` to every Q leaves the policy as it is
            and moves every reward by ``(1 - gamma) L``: the actions leave the rewards' level
            free, and a value is of the order of ``reward / (1 - gamma)``, so a prior on the
            level as narrow as a weight's would fix it. Apart from it each action keeps its
            own weight-sized offset: one never taken is pushed down by the likelihood as far
            as that prior lets it, not by ``level_scale``.
        linearised_at: ``(P,)`` weights the network is linearised around, or None for the
            network itself.
        skip_scale: prior scale of the linear term ``W_s`` beside an MLP (``/ sqrt(F)`` with
            ``fan_in``), or None for none. Only for an MLP: beside ``hidden=()`` it would be a
            second copy of the linear class.
        fan_in: divide each weight's prior scale by the square root of its layer's fan-in
            (a Bayesian network's usual prior, whose units stay in tanh's linear range); off,
            every weight has the layer's scale itself, so a unit's input grows with the
            fan-in and a small network makes sharp switches. Either way a fit starts from the
            fan-in scaled draw (:meth:`start`).
    """

    features: Callable
    n_features: int
    n_actions: int
    hidden: tuple[int, ...] = ()
    weight_scale: float = 1.0
    level_scale: float | None = None
    linearised_at: torch.Tensor | None = None
    skip_scale: float | None = None
    fan_in: bool = True

    def __post_init__(self):
        check_skip(self.skip_scale, self.hidden)

    @property
    def layers(self) -> list[tuple[int, int, bool]]:
        """``(n_in, n_out, has_bias)`` per layer."""
        sizes = [self.n_features, *self.hidden, self.n_actions]
        return [(a, b, i > 0) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:],
                                                              strict=True))]

    @property
    def _slices(self) -> list[tuple[int, int, slice, slice | None]]:
        """``(n_in, n_out, weights, bias)`` per layer: where its ``(n_in, n_out)`` matrix
        (row-major) and its bias (None for the first layer) sit in ``w``. The one layout the
        network and its linearisation read."""
        out, start = [], 0
        for n_in, n_out, bias in self.layers:
            stop = start + n_in * n_out
            out.append((n_in, n_out, slice(start, stop),
                        slice(stop, stop + n_out) if bias else None))
            start = stop + (n_out if bias else 0)
        return out

    @property
    def linear_in_weights(self) -> bool:
        """Whether ``Q_w`` is affine in ``w`` (no hidden layer, or linearised): then the mean
        of ``Q_w`` over draws of ``w`` is ``Q`` at the draws' mean, one evaluation instead of
        one per draw."""
        return not self.hidden or self.linearised_at is not None

    @property
    def _n_network(self) -> int:
        """The network's weights and biases: where the skip term (or the level) starts."""
        return sum(a * b + (b if bias else 0) for a, b, bias in self.layers)

    @property
    def _skip(self) -> slice | None:
        """Where ``W_s: (F, A)`` (row-major) sits in ``w``, or None without a skip term."""
        if self.skip_scale is None:
            return None
        return slice(self._n_network, self._n_network + self.n_features * self.n_actions)

    @property
    def n_params(self) -> int:
        return (self._n_network
                + (self.skip_scale is not None) * self.n_features * self.n_actions
                + (self.level_scale is not None))

    def prior_scale(self, dtype=None, device=None) -> torch.Tensor:
        """``(P,)`` prior standard deviation of each weight."""
        scale = self._scales(self.fan_in, with_skip=True)
        return scale.to(dtype=dtype or torch.get_default_dtype(), device=device)

    def _scales(self, fan_in: bool, with_skip: bool) -> torch.Tensor:
        """``(P,)`` per-weight scales, divided by the fan-in's root or not; the skip term's
        at its scale, or 0 with ``with_skip=False``."""
        parts = []
        for n_in, n_out, bias in self.layers:
            parts.append(torch.full((n_in * n_out,), self.weight_scale
                                    / (math.sqrt(n_in) if fan_in else 1.0)))
            if bias:
                parts.append(torch.full((n_out,), float(self.weight_scale)))
        if self.skip_scale is not None:
            F = self.n_features
            parts.append(torch.full((F * self.n_actions,), self.skip_scale
                                    / (math.sqrt(F) if fan_in else 1.0) if with_skip else 0.0))
        if self.level_scale is not None:
            parts.append(torch.full((1,), float(self.level_scale)))
        return torch.cat(parts)

    def start(self, seed: int, dtype=None, device=None) -> torch.Tensor:
        """``(P,)`` where a fit of ``w`` starts: 0 for a linear Q; for an MLP a draw from the
        fan-in scaled prior (generator seeded ``seed``; the prior itself when ``fan_in``),
        since at 0 every hidden unit is the same and the gradient of every weight but the
        biases vanishes, with the skip term at 0. The draw is fan-in scaled whatever the
        prior, so that a prior without it does not start every unit saturated."""
        dtype = dtype or torch.get_default_dtype()
        if self.linearised_at is not None:  # the expansion's centre, where it is exact
            return self.linearised_at.to(dtype=dtype, device=device).clone()
        scale = self._scales(fan_in=True, with_skip=False).to(dtype=dtype, device=device)
        if not self.hidden:
            return torch.zeros_like(scale)
        g = torch.Generator().manual_seed(seed)
        return torch.randn(scale.shape, generator=g, dtype=torch.float64).to(scale) * scale

    def apply(self, w: torch.Tensor, feats: torch.Tensor, primal: tuple | None = None
              ) -> torch.Tensor:
        """``w: (..., P)``, ``feats: (M, F)`` -> ``(..., M, A)``: the network, or its
        linearisation when ``linearised_at`` is set (``primal``: :meth:`primal` of these
        ``feats``, when the caller keeps it)."""
        if self.linearised_at is not None:
            return self._tangent(w, primal if primal is not None else self.primal(feats))
        return self._forward(w, feats)[0]

    def _forward(self, w: torch.Tensor, feats: torch.Tensor, record: bool = False):
        """The network, ``w: (..., P)``, ``feats: (M, F)`` -> ``((..., M, A), inputs,
        slopes)``; with ``record``, each layer's input and each hidden layer's
        ``1 - tanh(z)^2`` (for :meth:`primal`), else two empty lists."""
        h, inputs, slopes = feats, [], []
        layers = self._slices
        for i, (n_in, n_out, weights, bias) in enumerate(layers):
            if record:
                inputs.append(h)
            h = h @ w[..., weights].reshape(*w.shape[:-1], n_in, n_out)
            if bias is not None:
                h = h + w[..., None, bias]
            if i < len(layers) - 1:
                h = torch.tanh(h)
                if record:
                    slopes.append(1 - h.square())
        if self.skip_scale is not None:
            h = h + self._linear_term(w, feats)
        if self.level_scale is not None:
            h = h + w[..., None, -1:]
        return h, inputs, slopes

    def _linear_term(self, w: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """``phi W_s``: ``w: (..., P)``, ``feats: (M, F)`` -> ``(..., M, A)``."""
        return feats @ w[..., self._skip].reshape(*w.shape[:-1], self.n_features,
                                                  self.n_actions)

    @torch.no_grad()
    def primal(self, feats: torch.Tensor) -> tuple | None:
        """What the linearisation needs of the network at ``linearised_at = w0`` on
        ``feats: (M, F)``, which does not depend on ``w``: ``(q0 (M, A), inputs, slopes)``
        with ``inputs[l]: (M, n_in)`` each layer's input and ``slopes[l]: (M, n_out)`` the
        derivative ``1 - tanh(z_l)^2`` of each hidden layer's activation; None for the network
        itself, which needs nothing. A caller that evaluates many ``w`` on the same features
        (a target's density, a posterior's draws) computes it once and passes it to
        :meth:`apply`."""
        if self.linearised_at is None:
            return None
        return self._forward(self.linearised_at.to(feats), feats, record=True)

    def _tangent(self, w: torch.Tensor, primal: tuple) -> torch.Tensor:
        """``Q_w0 + J_w0 (w - w0)``, ``w: (..., P)`` -> ``(..., M, A)``, from the network's
        :meth:`primal` at ``w0`` by forward-mode differentiation written out layer by layer:
        only the directional derivatives ``dh`` along ``w - w0`` carry the batch
        (``d tanh(z) = (1 - tanh(z)^2) dz``)."""
        q0, inputs, slopes = primal
        w0 = self.linearised_at.to(dtype=w.dtype, device=w.device)
        d = w - w0
        batch = d.shape[:-1]
        dh = None     # the features do not depend on w: dh starts at 0
        layers = self._slices
        for i, (n_in, n_out, weights, bias) in enumerate(layers):
            dz = inputs[i] @ d[..., weights].reshape(*batch, n_in, n_out)
            if dh is not None:
                dz = dz + dh @ w0[weights].reshape(n_in, n_out)
            if bias is not None:
                dz = dz + d[..., None, bias]
            dh = slopes[i] * dz if i < len(layers) - 1 else dz
        if self.skip_scale is not None:  # linear in w already: its own tangent
            dh = dh + self._linear_term(d, inputs[0])
        if self.level_scale is not None:
            dh = dh + d[..., None, -1:]
        return q0 + dh

    def __call__(self, w: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """``Q_w(s, .)``: ``w: (..., P)``, ``obs: (M, obs_dim)`` -> ``(..., M, A)``."""
        return self.apply(w, self.features(obs.to(w.dtype)))

    def spec(self) -> dict | None:
        """A JSON-able description of the class, or None when the features are a user's
        callable. ``linearised_at`` is a weight vector, not part of the class: the posterior
        file keeps it beside the draws."""
        if not isinstance(self.features, FeatureMap):
            return None
        return {"features": self.features.spec(), "n_features": self.n_features,
                "n_actions": self.n_actions, "hidden": list(self.hidden),
                "weight_scale": self.weight_scale, "level_scale": self.level_scale,
                "skip_scale": self.skip_scale, "fan_in": self.fan_in}

    @classmethod
    def from_spec(cls, spec: dict, dtype=None) -> QFunction:
        """The inverse of :meth:`spec` (a spec written before ``skip_scale`` and ``fan_in``
        existed reads as neither set: no skip term, fan-in scaled)."""
        return cls(FeatureMap.from_spec(spec["features"], dtype), int(spec["n_features"]),
                   int(spec["n_actions"]), tuple(int(h) for h in spec["hidden"]),
                   float(spec["weight_scale"]), spec.get("level_scale"),
                   skip_scale=spec.get("skip_scale"), fan_in=bool(spec.get("fan_in", True)))
