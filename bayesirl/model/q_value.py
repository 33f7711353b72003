r"""The value-space model for continuous states: a posterior over a soft Q-function.

With continuous observations there is no transition table to plan in. Following ValueWalk
(Bajgar, Abate, Liu & Quinn 2024, "Walking the values in Bayesian inverse reinforcement
learning"), the unknown is a Q-function ``Q_w(s, a)`` with parameters ``w`` and the reward is
what the soft Bellman equation implies on each observed transition ``(s, a, s')``:

    r_w(s, a, s') = Q_w(s, a) - gamma * (1 - terminal) * V_w(s'),
    V_w(s) = logsumexp_a(beta Q_w(s, a)) / beta   (likelihood "soft"),
    V_w(s) = max_a Q_w(s, a)                      (likelihood "boltzmann"),

and the expert acts by ``pi_w(a | s) = softmax(beta Q_w(s, .))``. Terminal convention: after a
terminal transition (the episode *terminated*) no value follows, ``V(s') = 0``; after a
time-limit truncation the next state keeps its value. For stochastic dynamics the single observed
``s'`` stands in for ``E[V(s')]`` (exact for deterministic dynamics).

The unnormalised posterior over ``w`` is

    p(w | D) ∝ N(w; 0, diag(sigma_w^2)) * p_r(r_w(s_1, a_1, s'_1), ..., r_w(s_M, a_M, s'_M))
               * prod_i pi_w(a_i | s_i),

a Normal prior on the weights (``weight_scale / sqrt(fan_in)`` per weight, as for a Bayesian
MLP) and a prior on the rewards at the data (:class:`RewardPrior`), each distinct
transition's once (:func:`distinct_transitions`: a reward function has one value at a point
visited twice); the pointwise log-likelihood is per trajectory. ValueWalk's reward prior is
independent per transition (``"iid"``). Rewards are identified by the actions only up to
potential shaping ``c(s) - gamma c(s')`` (Ng, Harada & Russell 1999), which an independent prior
resolves toward small rewards, not toward the true ones. The ``"state"`` prior says instead
that the reward is a function of the state: ``r_i = loc + psi(s_i) theta + eps_i`` with
``theta ~ N(0, scale^2 I)`` and ``eps_i ~ N(0, noise^2)`` (``noise`` covers a single sampled
``s'`` and any dependence on the action), integrated over ``theta`` exactly; shaping terms
that differ between the actions taken at nearby states are then improbable, and ``theta | r``
gives the reward at any state (``"state_action"``: ``psi(s) ⊗ onehot(a)``).

``Q_w`` is an MLP (``hidden`` widths; ``()`` is linear) on features of the observation: the
standardised observation with a constant, plus optionally random Fourier features, crossed
optionally with the observation's two-valued coordinates (``cross_flags``: a contact flag that
switches the expert's behaviour), or any feature map given. An MLP's posterior over its weights
is far from Gaussian (NUTS runs into its tree-depth cap on it); ``linearise=True`` replaces the
network by its first-order expansion in the weights at the MAP, a model linear in ``w`` on the
network's tangent features that every method samples as easily as a linear class
(:class:`.QFunction`, :meth:`QValueTarget.linearised`).

:meth:`QValueModel.build_target` makes the :class:`QValueTarget` that ``infer()`` samples:
NUTS/HMC over ``w`` (ValueWalk's sampler) in coordinates whitened at the MAP by the Laplace
approximation's covariance, so a near-Gaussian posterior needs no mass-matrix adaptation; SVI on
:meth:`QValueTarget.pyro_model`, with an autoguide or AVRIL's amortised reward guide
(:meth:`QValueTarget.guide` ``("avril")``; Chan & van der Schaar 2021, "Scalable Bayesian inverse
reinforcement learning"), which learns ``q(r | s, a)`` at any state. For that guide the rewards
become latent sites, ``r_i ~ N(mu_r, sqrt(sigma_r^2 - tau^2))`` with the Bellman residual
``r_w(s_i, a_i, s'_i) ~ N(r_i, tau)``: integrating ``r_i`` out gives back the density above
exactly, so both forms are one model.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import scipy.optimize
import torch
from pyro.distributions import constraints
from pyro.infer import autoguide

from bayesirl._validation import (
    ArgumentTypeError,
    as_tensor,
    check_bool,
    check_finite,
    check_int,
    check_number,
    positive_ints,
)
from bayesirl.core.trajectories import Trajectories
from bayesirl.model.likelihood import check_likelihood, check_rationality
from bayesirl.model.q_function import FeatureMap, QFunction, check_skip

__all__ = ["GUIDES", "REWARD_PRIORS", "DrawTerms", "QValueModel", "covariance_tril",
           "distinct_transitions", "QValueTarget", "RewardPrior", "theta_draws",
           "value_space_terms"]

GUIDES = ("normal", "mvn", "lowrank", "avril")


# ---------------------------------------------------------------------------- pure kernels
def value_space_terms(q: torch.Tensor, s_idx: torch.Tensor, actions: torch.Tensor,
                      next_idx: torch.Tensor, terminals: torch.Tensor, rationality: float,
                      discount: float, likelihood: str = "soft"):
    """Log-probabilities of the observed actions and the implied rewards at the data.

    Args:
        q: ``(..., K, A)`` Q-values at K distinct states.
        s_idx, next_idx: ``(M,)`` long rows of ``q`` holding each transition's s and s'.
        actions: ``(M,)`` long; terminals: ``(M,)`` bool (``V(s') = 0`` there).
        rationality: beta > 0; discount: gamma in [0, 1).
        likelihood: ``"soft"`` (``V = logsumexp(beta Q) / beta``) or ``"boltzmann"``
            (``V = max Q``); the policy is ``softmax(beta Q)`` in both.

    Returns:
        ``(log_pi, reward)``, both ``(..., M)``: ``log pi(a_i | s_i)`` and
        ``r_i = Q(s_i, a_i) - gamma (1 - terminal_i) V(s'_i)``.
    """
    z = rationality * q
    lse = torch.logsumexp(z, -1)  # (..., K)
    q_sa = q[..., s_idx, actions]
    log_pi = rationality * q_sa - lse[..., s_idx]
    v = lse / rationality if likelihood == "soft" else q.amax(-1)
    v_next = v[..., next_idx].masked_fill(terminals, 0.0)
    return log_pi, q_sa - discount * v_next


def _segment_sum(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """``(..., M) -> (..., n)``: sums of ``x`` over the entries with each ``index``."""
    out = x.new_zeros(*x.shape[:-1], n)
    return out.index_add(-1, index, x)


def distinct_transitions(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
                         terminals: torch.Tensor) -> torch.Tensor:
    """``(U,)`` ascending indices of the first occurrence of each distinct transition
    ``(obs, action, next_obs, terminal)``, for ``obs, next_obs: (R, obs_dim)``,
    ``actions: (R,)`` and ``terminals: (R,)`` (flags or chances of termination): every
    quantity a transition's implied reward depends on.

    The reward prior is a prior on a reward *function*; at a point the data visit twice it
    has one value, so its density there counts once (a prior term per visit would count a
    state visited n times as n independent observations of the reward, and make the prior
    grow with the data)."""
    keys = torch.cat([obs, actions[:, None].to(obs.dtype), next_obs,
                      terminals[:, None].to(obs.dtype)], 1)
    distinct, inverse = torch.unique(keys, dim=0, return_inverse=True)
    R = keys.shape[0]
    first = torch.full((distinct.shape[0],), R, dtype=torch.long, device=keys.device)
    first = first.scatter_reduce(0, inverse, torch.arange(R, device=keys.device), "amin")
    return first.sort().values


# ---------------------------------------------------------------------------- reward prior
REWARD_PRIORS = ("iid", "state", "state_action")


@dataclasses.dataclass(frozen=True, eq=False)
class RewardPrior:
    """The prior on the rewards at the data, ``r: (..., M)``.

    ``kind="iid"``: ``r_i ~ N(loc, scale)`` independently. ``"state"`` and ``"state_action"``:
    ``r = loc + Psi theta + eps``, ``theta ~ N(0, scale^2 I_F)``, ``eps ~ N(0, noise^2 I_M)``,
    with ``Psi = psi(s)`` or ``psi(s) ⊗ onehot(a)``: marginally
    ``r ~ N(loc, noise^2 I + scale^2 Psi Psi^T)``, evaluated in ``O(M F)`` through the
    posterior of ``theta`` given ``r`` (:class:`_DataRewardPrior`).

    Attributes:
        features: ``psi``, a :class:`.FeatureMap` or a callable ``(M, obs_dim) -> (M, F)``
            (None for ``"iid"``).
        n_actions: A (for ``"state_action"``).
    """

    kind: str
    loc: float
    scale: float
    noise: float
    features: Callable | None
    n_actions: int

    def design(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``Psi``: ``(M, F)`` for ``obs: (M, obs_dim)``, ``actions: (M,)``."""
        psi = self.features(obs)
        if self.kind == "state":
            return psi
        onehot = torch.nn.functional.one_hot(actions, self.n_actions).to(psi)
        return (psi[:, :, None] * onehot[:, None, :]).reshape(psi.shape[0], -1)

    def at(self, obs: torch.Tensor, actions: torch.Tensor) -> _DataRewardPrior:
        """The prior at the data's transitions, its factorisation precomputed."""
        return _DataRewardPrior(self, None if self.kind == "iid" else self.design(obs, actions))

    def spec(self) -> dict:
        """A JSON-able description; a user's feature map is recorded as ``"custom"``."""
        feats = (self.features.spec() if isinstance(self.features, FeatureMap)
                 else None if self.features is None else "custom")
        return {"kind": self.kind, "loc": self.loc, "scale": self.scale, "noise": self.noise,
                "n_actions": self.n_actions, "features": feats}

    @classmethod
    def from_spec(cls, spec: dict, dtype=None, features: Callable | None = None
                  ) -> RewardPrior:
        """Rebuild from :meth:`spec`; a ``"custom"`` feature map must be given again."""
        feats = spec.get("features")
        if feats == "custom":
            if features is None:
                raise ValueError("the reward prior used a user's feature map, which is not "
                                 "saved: pass it again (reward_features=...)")
            feats = features
        elif feats is not None:
            feats = FeatureMap.from_spec(feats, dtype)
        return cls(spec["kind"], float(spec["loc"]), float(spec["scale"]), float(spec["noise"]),
                   feats, int(spec["n_actions"]))


class _DataRewardPrior:
    """:class:`RewardPrior` at fixed transitions: ``log_prob(r)`` and ``theta | r``.

    With ``A = I / scale^2 + Psi^T Psi / noise^2 = C C^T`` (Cholesky), the posterior of
    ``theta`` given ``r`` is ``N(theta_r, A^-1)``, ``theta_r = A^-1 Psi^T r / noise^2``;
    ``r^T K^-1 r = |r - Psi theta_r|^2 / noise^2 + |theta_r|^2 / scale^2`` (the minimum over
    ``theta`` of the same sum) and ``log det K = 2 M log noise + 2 F log scale + 2 log det C``.
    The quadratic form is a sum of two non-negative terms, not Woodbury's difference
    ``|r|^2 / noise^2 - |C^-1 Psi^T r|^2 / noise^4``: with a small ``noise`` that difference
    cancels almost all of its terms, and in float32 its rounding (tenths of a nat to nats at
    a few thousand rewards) swamped NUTS's energy errors, shrinking its step size to nothing.
    (Rewards relative to ``loc`` throughout.)
    """

    def __init__(self, prior: RewardPrior, design: torch.Tensor | None):
        self.prior, self.design = prior, design
        if design is not None:
            M, F = design.shape
            A = (torch.eye(F, dtype=design.dtype, device=design.device) / prior.scale ** 2
                 + design.T @ design / prior.noise ** 2)
            self.chol = torch.linalg.cholesky(A)
            self.log_det = float(2 * M * math.log(prior.noise) + 2 * F * math.log(prior.scale)
                                 + 2 * torch.log(torch.diagonal(self.chol)).sum())

    def log_prob(self, r: torch.Tensor) -> torch.Tensor:
        """``(...)`` log density of rewards ``r: (..., M)``."""
        p = self.prior
        x = r - p.loc
        M = r.shape[-1]
        if self.design is None:
            return (-0.5 * (x / p.scale).square().sum(-1)
                    - M * (math.log(p.scale) + 0.5 * math.log(2 * math.pi)))
        theta = self.theta_mean(r)
        resid = x - theta @ self.design.T
        quad = resid.square().sum(-1) / p.noise ** 2 + theta.square().sum(-1) / p.scale ** 2
        return -0.5 * (quad + self.log_det + M * math.log(2 * math.pi))

    def theta_mean(self, r: torch.Tensor) -> torch.Tensor:
        """``(..., F)`` posterior mean of ``theta`` given rewards ``r: (..., M)``,
        ``A^-1 Psi^T (r - loc) / noise^2``; its covariance ``A^-1`` does not depend on ``r``
        (:func:`theta_draws` draws from it)."""
        p = self.prior
        if self.design is None:
            raise ValueError("the 'iid' reward prior has no reward function; use "
                             "reward_prior='state' (or 'state_action')")
        b = ((r - p.loc) @ self.design / p.noise ** 2).unsqueeze(-1)
        return torch.cholesky_solve(b, self.chol).squeeze(-1)

    def theta_given(self, r: torch.Tensor, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        """Draws ``(..., F)`` of ``theta | r`` for rewards ``r: (..., M)``, one per row."""
        return theta_draws(self.theta_mean(r), self.chol, generator)


def theta_draws(mean: torch.Tensor, chol: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws ``(..., F)`` of ``N(mean, (C C^T)^-1)``, one per row of ``mean: (..., F)``, for the
    Cholesky factor ``chol = C: (F, F)`` of the precision: ``mean + C^-T z``."""
    z = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
    return mean + torch.linalg.solve_triangular(chol.T, z.unsqueeze(-1),
                                                upper=True).squeeze(-1)


class DrawTerms(NamedTuple):
    """What a posterior keeps of each draw of ``w: (..., P)``
    (:meth:`QValueTarget.draw_terms`)."""

    reward: torch.Tensor  # (..., M) rewards at the data's transitions
    log_lik: torch.Tensor  # (..., N) per-trajectory log-likelihood of the actions
    theta_mean: torch.Tensor | None  # (..., F), or None under an "iid" reward prior


# ---------------------------------------------------------------------------- the model
class QValueModel:
    """The value-space reward model for continuous observations (see the module docstring).

    Args:
        hidden: hidden widths of the Q-network; ``()`` (default) is linear in the features.
            A network's posterior has many modes of nearly equal density whose greedy
            policies can differ markedly (benchmarks/RESULTS.md, "Which mode the MAP finds");
            which one the MAP (and so ``linearise``) reaches depends on ``seed`` and, through
            the order of floating-point sums, on torch's thread count. Compare a few seeds
            before trusting one network's posterior.
        features: ``None`` (the standardised observation and a constant, plus ``n_fourier``
            random Fourier features of lengthscale ``lengthscale`` drawn with ``seed``) or a
            callable ``obs (M, obs_dim) -> (M, F)`` of given features.
        cross_flags: cross those features with every observation coordinate that takes
            exactly two values in the data (a contact flag; :class:`.FeatureMap`), for an
            expert whose behaviour switches with it; an error when there is none.
        weight_scale: prior scale of the weights (``/ sqrt(fan_in)`` with ``fan_in``).
        skip_scale: for an MLP, add a term linear in the features beside the network, its
            weights' prior scale this (:class:`.QFunction`); None (default) for none.
        fan_in: divide each weight's prior scale by the root of its layer's fan-in (default);
            False gives every weight of a layer the scale itself (:class:`.QFunction`).
        level_scale: prior scale of ``Q``'s level shared by the actions (see
            :class:`.QFunction`); default ``reward_scale / (1 - discount)``, a value's scale.
        reward_prior: ``"iid"`` (ValueWalk's), ``"state"`` or ``"state_action"``
            (:class:`RewardPrior`).
        reward_loc, reward_scale: the rewards' prior mean, and a scale: ``"iid"``: of each
            reward; otherwise of each reward-function weight ``theta`` (the rewards are
            ``reward_loc + Psi theta + noise``, :class:`RewardPrior`).
        reward_noise: ``"state"``/``"state_action"``: the spread of the rewards at the data
            around the reward function.
        reward_fourier, reward_lengthscale: random Fourier features of the reward function
            (beside the standardised observation and a constant).
        reward_features: instead, a callable ``obs (M, obs_dim) -> (M, F)`` of given reward
            features.
        dynamics: ``dynamics(obs (M, obs_dim), actions (M,)) -> (next_obs, terminals)``, the
            successor of any state and action (a simulator, known physics, or a model fitted
            to the data such as :func:`.knn_dynamics`). With it the reward prior covers every
            action at each observed state, not only the action taken: the Bellman equation
            then ties ``Q(s, a')`` of actions never taken to the reward prior too, without
            which a flexible ``Q`` explains any behaviour with any reward there. Its
            ``terminals`` are booleans or chances of termination in [0, 1]; a chance ``p``
            weighs ``V(s')`` by ``1 - p``.
        discount: gamma in [0, 1).
        bellman_noise: tau of the latent-reward form used by the amortised (AVRIL) guide, in
            (0, reward_scale); default ``0.1 * reward_scale``.
        whiten: sample in coordinates whitened at the MAP (the Laplace covariance); the
            posterior is the same, NUTS needs far fewer steps.
        linearise: for an MLP (``hidden`` not empty), replace the network by its first-order
            Taylor expansion in the weights at the MAP (:class:`.QFunction` ``linearised_at``;
            :meth:`QValueTarget.linearised`). ``Q`` is then linear in ``w``, as in a linear
            class, but on the network's tangent features: the MAP and the Q-function there
            are the network's, and every method samples the linearised model's posterior
            (``"laplace"`` is the linearised Laplace approximation; ``"nuts"`` samples it
            exactly). The network's own posterior is far from Gaussian, NUTS runs into its
            tree-depth cap on it and draws of its Laplace approximation move ``Q`` far from the
            data; the linearised posterior is near-Gaussian and keeps ``Q`` where the data put
            it. It is a different model, not an approximation of the network's posterior
            that improves with more draws.

    ``infer(None, trajectories, QValueModel(...), method=...)`` returns a
    :class:`~bayesirl.posterior.continuous.ContinuousPosterior`.
    """

    def __init__(self, hidden=(), features: Callable | None = None, n_fourier: int = 0,
                 lengthscale: float = 1.0, seed: int = 0, cross_flags: bool = False,
                 weight_scale: float = 1.0, level_scale: float | None = None,
                 reward_loc: float = 0.0, reward_scale: float = 1.0, discount: float = 0.99,
                 bellman_noise: float | None = None, whiten: bool = True,
                 reward_prior: str = "iid", reward_noise: float = 0.1,
                 reward_fourier: int = 0, reward_lengthscale: float = 1.0,
                 dynamics: Callable | None = None, reward_features: Callable | None = None,
                 linearise: bool = False, skip_scale: float | None = None,
                 fan_in: bool = True):
        widths = positive_ints(hidden)
        if widths is None:
            raise ValueError(f"hidden is {hidden!r}, expected a sequence of widths >= 1 (or "
                             "() for a Q linear in the features)")
        if features is not None and not callable(features):
            raise ArgumentTypeError(f"features must be None or a callable obs -> features, "
                                    f"got {type(features).__name__}")
        self.hidden = widths
        self.features = features
        self.n_fourier = check_int("n_fourier", n_fourier, low=0)
        self.lengthscale = check_number("lengthscale", lengthscale, 0.0, low_open=True)
        self.seed = check_int("seed", seed, low=0)
        check_bool("cross_flags", cross_flags)
        if cross_flags and features is not None:
            raise ValueError("cross_flags crosses the default features; with features= given, "
                             "cross them in that callable")
        self.cross_flags = cross_flags
        self.weight_scale = check_number("weight_scale", weight_scale, 0.0, low_open=True)
        self.reward_loc = check_number("reward_loc", reward_loc)
        self.reward_scale = check_number("reward_scale", reward_scale, 0.0, low_open=True)
        self.discount = check_number("discount", discount, 0.0, 1.0, high_open=True)
        if level_scale is None:
            level_scale = self.reward_scale / (1 - self.discount)
        self.level_scale = check_number("level_scale", level_scale, 0.0, low_open=True)
        if bellman_noise is None:
            bellman_noise = 0.1 * self.reward_scale
        self.bellman_noise = check_number("bellman_noise", bellman_noise, 0.0,
                                          self.reward_scale, low_open=True, high_open=True)
        check_bool("whiten", whiten)
        self.whiten = whiten
        check_bool("linearise", linearise)
        if linearise and not widths:
            raise ValueError("linearise=True needs hidden layers: a Q with hidden=() is "
                             "already linear in its weights")
        self.linearise = linearise
        self.skip_scale = check_skip(skip_scale, widths)
        check_bool("fan_in", fan_in)
        self.fan_in = fan_in
        if reward_prior not in REWARD_PRIORS:
            raise ValueError(f"reward_prior is {reward_prior!r}, expected one of "
                             f"{REWARD_PRIORS}")
        self.reward_prior = reward_prior
        self.reward_noise = check_number("reward_noise", reward_noise, 0.0, low_open=True)
        self.reward_fourier = check_int("reward_fourier", reward_fourier, low=0)
        self.reward_lengthscale = check_number("reward_lengthscale", reward_lengthscale, 0.0,
                                               low_open=True)
        if dynamics is not None and not callable(dynamics):
            raise ArgumentTypeError(f"dynamics must be None or a callable (obs, actions) -> "
                                    f"(next_obs, terminals), got {type(dynamics).__name__}")
        self.dynamics = dynamics
        if reward_features is not None and not callable(reward_features):
            raise ArgumentTypeError(f"reward_features must be None or a callable obs -> "
                                    f"features, got {type(reward_features).__name__}")
        self.reward_features = reward_features
        ignored = [name for name, given, used in (
            ("n_fourier", n_fourier != 0, features is None),
            ("reward_features", reward_features is not None, reward_prior != "iid"),
            ("reward_fourier", reward_fourier != 0, reward_prior != "iid"
             and reward_features is None)) if given and not used]
        if ignored:  # a setting that would change nothing is a mistake to report
            raise ValueError(f"{', '.join(ignored)} would be ignored: n_fourier is for the "
                             "default features (not features=), reward_features and "
                             "reward_fourier for a 'state' or 'state_action' reward_prior "
                             "(reward_fourier without reward_features)")

    def __repr__(self) -> str:
        return (f"QValueModel(hidden={self.hidden}, n_fourier={self.n_fourier}, "
                f"cross_flags={self.cross_flags}, linearise={self.linearise}, "
                f"weight_scale={self.weight_scale}, skip_scale={self.skip_scale}, "
                f"fan_in={self.fan_in}, reward_scale={self.reward_scale}, "
                f"discount={self.discount})")

    def q_function(self, data: Trajectories) -> QFunction:
        """The Q-function, its features fitted to (standardised on) ``data``'s observations."""
        tr = data.transitions()
        if self.features is None:
            fmap = FeatureMap.fit(tr.obs, self.n_fourier, self.lengthscale, self.seed,
                                  self.cross_flags)
            n_features = fmap.n_features
        else:
            fmap = self.features
            probe = fmap(tr.obs[:2])
            if not isinstance(probe, torch.Tensor) or probe.dim() != 2 or probe.shape[0] != min(
                    2, tr.obs.shape[0]):
                raise ValueError("features(obs) must return a (M, F) tensor for obs (M, "
                                 f"obs_dim); got {type(probe).__name__} "
                                 f"{tuple(getattr(probe, 'shape', ()))}")
            n_features = probe.shape[1]
        return QFunction(fmap, n_features, data.n_actions, self.hidden, self.weight_scale,
                         self.level_scale, skip_scale=self.skip_scale, fan_in=self.fan_in)

    def reward_prior_of(self, data: Trajectories) -> RewardPrior:
        """The :class:`RewardPrior`, its features fitted to ``data``'s observations."""
        feats = None
        if self.reward_prior != "iid" and self.reward_features is not None:
            feats = self.reward_features
        elif self.reward_prior != "iid":
            feats = FeatureMap.fit(data.transitions().obs, self.reward_fourier,
                                   self.reward_lengthscale, self.seed + 1)
        return RewardPrior(self.reward_prior, self.reward_loc, self.reward_scale,
                           self.reward_noise, feats, data.n_actions)

    def build_target(self, mdp, data, *, likelihood: str = "soft", rationality=1.0
                     ) -> QValueTarget:
        """The posterior target of ``data`` (:class:`~bayesirl.core.trajectories.Trajectories`);
        ``mdp`` must be None (the model needs no transition table)."""
        if mdp is not None:
            raise ValueError("mdp must be None for a QValueModel: it reads each step's next "
                             f"observation from the data, got {type(mdp).__name__}")
        if not isinstance(data, Trajectories):
            raise ArgumentTypeError(f"data must be Trajectories (bayesirl.core.trajectories), "
                                    f"got {type(data).__name__}")
        likelihood = check_likelihood(likelihood)
        beta = check_rationality(rationality)
        if not isinstance(beta, float):
            raise ArgumentTypeError("rationality must be a number > 0 for a QValueModel (the "
                                    "scale of Q is already free), got a distribution")
        target = QValueTarget(self, data, likelihood, beta)
        return target.linearised() if self.linearise else target


# ---------------------------------------------------------------------------- the target
def covariance_tril(H: torch.Tensor, floor: float) -> torch.Tensor:
    """The lower-triangular ``L (P, P)`` with ``L L^T = (H_+)^-1``, ``H_+`` the symmetric
    ``H (P, P)`` with its eigenvalues raised to at least ``floor > 0``.

    Formed from ``B = Lambda^-1/2 V^T`` (``cov = B^T B``) by a QR decomposition, never by a
    Cholesky of ``cov`` itself: with eigenvalues over more than ~16 decades (a Hessian whose
    data pin some directions hard and leave others to the floor), the rounded ``cov`` is not
    numerically positive definite and its Cholesky fails."""
    evals, evecs = torch.linalg.eigh(0.5 * (H + H.T))
    root = evecs * evals.clamp(min=floor).rsqrt()                      # cov = root @ root.T
    R = torch.linalg.qr(root.T, mode="r").R                           # root.T = Q R
    return R.T * torch.sign(torch.diagonal(R)).where(torch.diagonal(R) != 0,
                                                      torch.ones((), dtype=R.dtype))


class QValueTarget:
    """The posterior over the Q-network weights ``w`` of :class:`QValueModel`, for ``infer``.

    Sampled coordinates are whitened, ``u = {"w": (P,)}`` with weights
    ``params_of(u["w"]) = center + L u["w"]``: ``center`` the MAP and ``L L^T`` the inverse
    Hessian of the negative log density there (eigenvalues floored), so the posterior of ``u``
    is close to ``N(0, I)`` when the Laplace approximation is good (without whitening
    ``L = I``, ``center = 0``). Constrained parameters are the weights, ``{"w": (P,)}``. As a
    :class:`~bayesirl.inference.target.Rewhitening` target, a chain may re-whiten it on its
    own warmup draws (:meth:`rewhitened`), which matters where the posterior is far from
    Gaussian (an MLP's).

    Distinct states (every s and s' of the data, duplicates merged) are evaluated once: ``K``
    rows of features, indexed by ``s_idx`` and ``next_idx``.
    """

    posterior_class = None  # ContinuousPosterior registers itself here (posterior layer)

    def __init__(self, model: QValueModel, data: Trajectories, likelihood: str,
                 rationality: float):
        self.model, self.data = model, data
        self.likelihood, self.rationality = likelihood, float(rationality)
        self.discount = model.discount
        q_function = model.q_function(data)
        tr = data.transitions()
        self.transitions = tr
        M, A = tr.obs.shape[0], data.n_actions
        succ, term = tr.next_obs[:, None, :], tr.terminals[:, None]
        if model.dynamics is not None:  # every action's successor; the taken one as observed
            succ, term = _all_successors(model.dynamics, data, tr, A)
        states, inverse = torch.unique(torch.cat([tr.obs, succ.reshape(-1, tr.obs.shape[1])]),
                                       dim=0, return_inverse=True)
        self.states = states
        self.s_idx = inverse[:M]
        self.succ_idx = inverse[M:].reshape(succ.shape[:2])
        # every action's discount on V(s'), (M * A,): a chance of termination p weighs it by
        # 1 - p; made once here, not at each density evaluation
        self.succ_discount = self.discount * (1.0 - term.reshape(-1).to(states.dtype))
        taken = (tr.actions if model.dynamics is not None
                 else torch.zeros_like(tr.actions))[:, None]
        self.next_idx = self.succ_idx.gather(1, taken).squeeze(1)
        # the rows the reward prior covers, each distinct transition once
        # (distinct_transitions): with dynamics every action's (M * A, row-major), else the
        # observed ones
        if model.dynamics is not None:
            every = torch.arange(A, device=tr.obs.device).repeat(M)
            obs_rows = tr.obs.repeat_interleave(A, 0)
            self.prior_rows = distinct_transitions(obs_rows, every, succ.reshape(M * A, -1),
                                                   term.reshape(-1))
            self.prior_s = self.s_idx.repeat_interleave(A)[self.prior_rows]
            self.prior_actions = every[self.prior_rows]
            self.prior_next = self.succ_idx.reshape(-1)[self.prior_rows]
            self.prior_discount = self.succ_discount[self.prior_rows]
            prior_obs = obs_rows[self.prior_rows]
        else:
            self.prior_rows = distinct_transitions(tr.obs, tr.actions, tr.next_obs,
                                                   tr.terminals)
            prior_obs = tr.obs[self.prior_rows]
            self.prior_actions = tr.actions[self.prior_rows]
        with torch.no_grad():
            self.feats = q_function.features(states)
        self._set_q_function(q_function)
        self.prior_scale = q_function.prior_scale(states.dtype, states.device)
        self.reward_prior = model.reward_prior_of(data)
        self.data_reward_prior = self.reward_prior.at(prior_obs, self.prior_actions)
        self._log_norm_w = float(-torch.log(self.prior_scale).sum()
                                 - 0.5 * self.prior_scale.numel() * math.log(2 * math.pi))
        P = q_function.n_params
        self.center = torch.zeros(P, dtype=states.dtype, device=states.device)
        self.scale_tril = torch.eye(P, dtype=states.dtype, device=states.device)
        self.log_det = 0.0
        self._subsample_size = None
        self._latent_rewards = False
        self.encoder = None
        if model.whiten:
            self._whiten()

    def _set_q_function(self, q_function: QFunction) -> None:
        """The one place ``q_function`` is set, with what follows from it on the fixed
        ``feats``: a linearised network's primal (:meth:`.QFunction.primal`, None for the
        network itself), so that swapping the Q-function cannot leave a stale one."""
        self.q_function = q_function
        self._primal = q_function.primal(self.feats)

    # ------------------------------------------------------------------ density
    @property
    def n_params(self) -> int:
        return self.q_function.n_params

    def q(self, w: torch.Tensor) -> torch.Tensor:
        """``(..., K, A)`` Q-values at the distinct states for weights ``w: (..., P)``."""
        return self.q_function.apply(w, self.feats, self._primal)

    def terms(self, w: torch.Tensor):
        """``(log_pi, reward)`` at the data, each ``(..., M)``, for weights ``w: (..., P)``."""
        return self._terms(self.q(w))[:2]

    def _terms(self, q: torch.Tensor):
        """``(log_pi (..., M), reward (..., M), prior_rewards (..., U))`` from Q-values
        ``q: (..., K, A)`` at the distinct states: the rewards the reward prior covers, at
        the rows ``prior_rows`` (every action's where the model has dynamics; each distinct
        transition once, :func:`distinct_transitions`)."""
        tr = self.transitions
        log_pi, r = value_space_terms(q, self.s_idx, tr.actions, self.next_idx, tr.terminals,
                                      self.rationality, self.discount, self.likelihood)
        if self.model.dynamics is None:
            return log_pi, r, r[..., self.prior_rows]
        _, r_all = value_space_terms(q, self.prior_s, self.prior_actions, self.prior_next,
                                     torch.zeros_like(self.prior_actions, dtype=torch.bool),
                                     self.rationality, self.prior_discount.to(q.dtype),
                                     self.likelihood)
        return log_pi, r, r_all

    def rewards(self, params) -> torch.Tensor:
        """``(..., M)`` rewards at the data."""
        return self.terms(params["w"])[1]

    def theta_mean(self, w: torch.Tensor) -> torch.Tensor:
        """``(..., F)``: for a ``"state"``/``"state_action"`` reward prior, the mean of the
        reward function's weights ``theta`` given the rewards of ``w: (..., P)`` that the
        prior covers (every action's where the model has dynamics, so only the target can
        compute it); its covariance is ``(C C^T)^-1`` for ``C =``
        ``self.data_reward_prior.chol``."""
        return self.data_reward_prior.theta_mean(self._terms(self.q(w))[2])

    def draw_terms(self, w: torch.Tensor) -> DrawTerms:
        """:class:`DrawTerms` of weights ``w: (..., P)``: the rewards (:meth:`rewards`), the
        per-trajectory log-likelihood (:meth:`log_likelihood`) and, for a
        ``"state"``/``"state_action"`` reward prior, theta's conditional mean
        (:meth:`theta_mean`), all from one evaluation of Q at the distinct states, the
        costly step, where the three methods would evaluate it once each."""
        log_pi, r, r_prior = self._terms(self.q(w))
        theta = (None if self.reward_prior.kind == "iid"
                 else self.data_reward_prior.theta_mean(r_prior))
        return DrawTerms(r, _segment_sum(log_pi, self.transitions.trajectory, self.data.n),
                         theta)

    def log_joint(self, w: torch.Tensor) -> torch.Tensor:
        """``(...)``: log prior of ``w`` + log prior of its rewards + log-likelihood."""
        log_pi, _, r_prior = self._terms(self.q(w))
        lp = self._log_norm_w - 0.5 * (w / self.prior_scale).square().sum(-1)
        return lp + self.data_reward_prior.log_prob(r_prior) + log_pi.sum(-1)

    def log_likelihood(self, params) -> torch.Tensor:
        """``(..., N)`` per-trajectory log-likelihood of the actions."""
        log_pi = self.terms(params["w"])[0]
        return _segment_sum(log_pi, self.transitions.trajectory, self.data.n)

    def params_of(self, u: torch.Tensor) -> torch.Tensor:
        """Weights ``(..., P)`` of whitened coordinates ``u: (..., P)``."""
        return self.center + u @ self.scale_tril.T

    def whiten(self, w: torch.Tensor) -> torch.Tensor:
        """Whitened coordinates ``(..., P)`` of weights ``w: (..., P)``."""
        delta = (w - self.center).unsqueeze(-1)
        L = self.scale_tril.expand(*delta.shape[:-2], *self.scale_tril.shape)
        return torch.linalg.solve_triangular(L, delta, upper=False).squeeze(-1)

    def rewhitened(self, u: torch.Tensor) -> QValueTarget:
        """The same posterior whitened by draws ``u: (m, P)`` of the current coordinates:
        centred at their mean, scaled by their covariance shrunk toward a multiple of the
        identity (Ledoit & Wolf 2004: ``m`` draws estimate a ``P x P`` covariance badly unless
        ``m >> P``)."""
        new = copy.copy(self)
        new.center = self.params_of(u.mean(0))
        new.scale_tril = self.scale_tril @ torch.linalg.cholesky(_ledoit_wolf(u))
        new.log_det = float(torch.log(torch.diagonal(new.scale_tril)).sum())
        return new

    def constrain(self, u):
        return {"w": self.params_of(u["w"])}

    def unconstrain(self, params):
        return {"w": self.whiten(params["w"])}

    def potential(self, u, jacobian: bool = True) -> torch.Tensor:
        """Minus the log density of the whitened ``u`` (with the constant ``log |det L|``
        when ``jacobian``)."""
        lp = self.log_joint(self.params_of(u["w"]))
        return -(lp + self.log_det) if jacobian else -lp

    def init_unconstrained(self):
        """The MAP when whitened (``u = 0``), else ``w = 0``."""
        return {"w": torch.zeros_like(self.center)}

    # ------------------------------------------------------------------ whitening
    def map_estimate(self, w0: torch.Tensor | None = None, max_iter: int = 2000
                     ) -> torch.Tensor:
        """``(P,)`` the MAP of ``w`` (L-BFGS-B from ``w0``; default :meth:`.QFunction.start`
        seeded with the model's ``seed``)."""
        like = self.center
        if w0 is None:
            w0 = self.q_function.start(self.model.seed, like.dtype, like.device)
        x0 = w0.detach().cpu().double().numpy()

        def f(x):
            w = torch.as_tensor(x, dtype=like.dtype, device=like.device).requires_grad_(True)
            loss = -self.log_joint(w)
            (g,) = torch.autograd.grad(loss, w)
            return float(loss.detach()), g.detach().cpu().double().numpy()

        res = scipy.optimize.minimize(f, x0, jac=True, method="L-BFGS-B",
                                      options={"maxiter": max_iter, "gtol": 1e-8,
                                               "ftol": 1e-13})
        return torch.as_tensor(res.x, dtype=like.dtype, device=like.device)

    def _curvature_floor(self) -> float:
        """The least curvature the whitening and the Newton polish grant a direction: a
        thousandth of the weakest prior's, so that directions the data leave flat keep a
        finite scale."""
        return float(self.prior_scale.pow(-2).min()) * 1e-3

    def _newton_polish(self, w: torch.Tensor, H: torch.Tensor, max_steps: int = 20
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Saddle-free Newton steps from where L-BFGS stopped, to the mode of the posterior
        (:meth:`_mode`; :meth:`linearised` to the linearised model's). Its curvatures span many
        orders of magnitude (the data pin some directions, the prior alone others), and L-BFGS
        can stall short of the mode, on a shoulder where the Hessian is not positive definite or
        at its iteration cap, which leaves the whitening, the MAP and its Laplace approximation
        off. Each step divides the gradient by the absolute eigenvalues of the Hessian (floored
        as the whitening floors them): a descent direction even along negative curvature, where
        Newton's step is not; halved until the density rises. Stops at a gradient below
        ``1e-9 (1 + |log density|)``. ``H``: the Hessian at ``w``, which the caller has; returns
        the polished ``w`` and the Hessian there."""
        floor = self._curvature_floor()

        def loss_and_grad(x):
            x = x.detach().requires_grad_(True)
            loss = -self.log_joint(x)
            (g,) = torch.autograd.grad(loss, x)
            return float(loss.detach()), g.detach()

        loss, g = loss_and_grad(w)
        for _ in range(max_steps):
            if float(g.abs().max()) < 1e-9 * (1.0 + abs(loss)):
                break
            evals, evecs = torch.linalg.eigh(H)
            step = evecs @ ((evecs.T @ g) / evals.abs().clamp(min=floor))
            t = 1.0
            while t > 1e-6:
                trial, g_trial = loss_and_grad(w - t * step)
                if trial <= loss:
                    break
                t /= 2
            else:  # no decrease along the step: as far as the rounding allows
                break
            w, loss, g = (w - t * step).detach(), trial, g_trial
            H = self.hessian(w)
        return w, H

    def hessian(self, w: torch.Tensor) -> torch.Tensor:
        """``(P, P)`` Hessian of ``-log_joint`` at ``w``."""
        return torch.autograd.functional.hessian(lambda x: -self.log_joint(x), w,
                                                 vectorize=True)

    def _mode(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w (P,), H (P, P))``: the MAP and the Hessian of ``-log_joint`` there. L-BFGS, then
        saddle-free Newton steps from where it stopped (none when its gradient is already
        below the polish's tolerance). L-BFGS stops short of the mode on a shoulder (an MLP's
        Hessian there is not positive definite) and at its iteration cap on a posterior whose
        curvatures span many orders of magnitude (many random features), with a positive
        definite Hessian; either way the whitening would centre off the mode that
        :meth:`init_unconstrained` promises."""
        w = self.map_estimate()
        w, H = self._newton_polish(w, self.hessian(w))
        return w.detach(), H

    def _whiten_at(self, w: torch.Tensor, H: torch.Tensor) -> None:
        L = covariance_tril(H, self._curvature_floor())
        self.center, self.scale_tril = w.detach(), L
        self.log_det = float(torch.log(torch.diagonal(L)).sum())

    def _whiten(self):
        self._whiten_at(*self._mode())

    def linearised(self) -> QValueTarget:
        """This posterior with the MLP ``Q_w`` replaced by its linearisation at the MAP
        ``w*``, ``Q_w* + J_w* (w - w*)`` (:class:`.QFunction` ``linearised_at``), whitened at
        the linearised model's own mode (:class:`QValueModel` ``linearise``).

        Invariant: the linearised model has the network's value and gradient at ``w*``, so
        its log density has the same gradient there, zero at the MAP: ``w*`` is its mode too
        (Newton steps take up what L-BFGS's tolerance left). Its Hessian keeps the
        likelihood's curvature in ``Q`` and drops the network's own second derivatives, the
        terms that make the network's Hessian indefinite away from the mode."""
        if self.q_function.linearised_at is not None:
            return self
        if not self.q_function.hidden:
            raise ValueError("only an MLP Q-function (hidden layers) can be linearised")
        if self.model.whiten:
            w = self.center
        else:
            w, _ = self._mode()
        new = copy.copy(self)
        new._set_q_function(dataclasses.replace(self.q_function,
                                                linearised_at=w.detach().clone()))
        if self.model.whiten:
            new._whiten_at(*new._newton_polish(w, new.hessian(w)))
        return new

    # ------------------------------------------------------------------ SVI
    def _padded(self):
        """Per-trajectory padded views ``(N, T)`` of the transition indices, and the mask of
        the steps whose reward the prior covers (``prior_rows`` without dynamics: a step
        that repeats an earlier transition exactly is left out, :func:`distinct_transitions`)."""
        d = self.data
        N, T = d.n, d.max_length
        tr = self.transitions
        s_pad = torch.zeros(N, T, dtype=torch.long, device=d.device)
        n_pad = torch.zeros_like(s_pad)
        s_pad[tr.trajectory, tr.step] = self.s_idx
        n_pad[tr.trajectory, tr.step] = self.next_idx
        prior_pad = torch.zeros(N, T, dtype=torch.bool, device=d.device)
        if self.model.dynamics is None:
            rows = self.prior_rows
            prior_pad[tr.trajectory[rows], tr.step[rows]] = True
        return s_pad, n_pad, prior_pad

    def pyro_model(self, subsample_size: int | None = None):
        """A Pyro model of the same posterior, for SVI: site ``"w"`` ``(P,)``; per trajectory,
        in ``pyro.plate("demo", N, subsample_size=...)``, the reward prior and the actions
        (``"actions"``: masked ``Categorical`` sequences, so the pointwise log-likelihood
        exists). With the amortised guide (:meth:`guide` ``("avril")``) the rewards are the
        latent site ``"rewards"`` ``(N, T)`` and the Bellman residual is observed around them
        (the module docstring shows the density is the same). A ``"state"`` or
        ``"state_action"`` reward prior couples all transitions: it is one factor over all
        of them, outside the plate (exact under subsampling, not cheaper)."""
        self._subsample_size = subsample_size
        s_pad, n_pad, prior_pad = self._padded()
        d, m = self.data, self.model
        prior_scale = self.prior_scale

        def model():
            w = pyro.sample("w", dist.Normal(torch.zeros_like(prior_scale), prior_scale)
                            .to_event(1))
            q = self.q(w)  # (K, A)
            iid = self.reward_prior.kind == "iid" and m.dynamics is None
            if not iid:
                pyro.factor("reward_prior", self.data_reward_prior.log_prob(self._terms(q)[2]))
            with pyro.plate("demo", d.n, subsample_size=subsample_size) as idx:
                s, nxt = s_pad[idx], n_pad[idx]
                mask, acts, covered = d.mask[idx], d.actions[idx], prior_pad[idx]
                log_pi, r = value_space_terms(q, s.reshape(-1), acts.reshape(-1),
                                              nxt.reshape(-1), d.terminals[idx].reshape(-1),
                                              self.rationality, self.discount, self.likelihood)
                r = r.reshape(s.shape)
                if self._latent_rewards:
                    tau = m.bellman_noise
                    spread = math.sqrt(m.reward_scale ** 2 - tau ** 2)
                    latent = pyro.sample("rewards", dist.Normal(
                        torch.full_like(r, m.reward_loc), spread).mask(covered).to_event(1))
                    pyro.factor("bellman", dist.Normal(latent, tau).log_prob(r)
                                .masked_fill(~covered, 0.0).sum(-1))
                elif iid:
                    pyro.factor("reward_prior_iid", dist.Normal(m.reward_loc, m.reward_scale)
                                .log_prob(r).masked_fill(~covered, 0.0).sum(-1))
                logits = self.rationality * q[s]
                pyro.sample("actions", dist.Categorical(logits=logits).mask(mask).to_event(1),
                            obs=acts)
            return w

        return model

    def guide(self, name: str):
        """A guide for :meth:`pyro_model`: ``"normal"``, ``"mvn"`` or ``"lowrank"`` (Pyro's
        autoguides on ``w``, started at the MAP) or ``"avril"``, AVRIL's: a mean-field Normal
        on ``w`` and an amortised reward encoder ``q(r | s, a) = N(mu_phi(s)_a,
        sigma_phi(s)_a)`` (a tanh MLP of the features, hidden width 64), which evaluates the
        reward posterior at any state. ``"avril"`` switches :meth:`pyro_model` to its
        latent-reward form (the same density over ``w``). Calling the guide returns
        ``{"w": draw}``.

        AVRIL's ``q(w)`` is far narrower than the posterior: ``q`` factorises ``w`` from the
        latent rewards, which the Bellman residual ties to ``w`` within ``bellman_noise``, so
        ``q(w)`` takes about ``w``'s spread given the rewards. Read the reward posterior from
        the encoder (``encoder_reward``), or use ``"mvn"`` or NUTS for ``w``'s
        (``benchmarks/RESULTS.md``, "The continuous posterior against references")."""
        if name not in GUIDES:
            raise ValueError(f"guide is {name!r}, expected one of {GUIDES}")
        if name != "avril":
            self._latent_rewards = False
            self.encoder = None  # an earlier "avril" guide's, which this one does not fit
            auto = {"normal": autoguide.AutoNormal, "mvn": autoguide.AutoMultivariateNormal,
                    "lowrank": autoguide.AutoLowRankMultivariateNormal}[name]
            return auto(self.pyro_model(self._subsample_size),
                        init_loc_fn=autoguide.init_to_value(values={"w": self.center}))
        if self.reward_prior.kind != "iid" or self.model.dynamics is not None:
            raise ValueError("guide='avril' needs reward_prior='iid' and no dynamics (its "
                             "encoder is a per-transition posterior)")
        self._latent_rewards = True
        F, A = self.q_function.n_features, self.q_function.n_actions
        self.encoder = torch.nn.Sequential(torch.nn.Linear(F, 64), torch.nn.Tanh(),
                                           torch.nn.Linear(64, 2 * A)).to(self.feats.dtype)
        return _AvrilGuide(self)

    # ------------------------------------------------------------------ posterior
    def make_posterior(self, params, *, method: str, log_lik=None, sample_stats=None,
                       settings=None, num_chains: int = 1, extra=None):
        """A :class:`~bayesirl.posterior.continuous.ContinuousPosterior` from constrained
        draws ``{"w": (draws, P)}`` (chains flattened, ``num_chains`` equal blocks)."""
        if self.posterior_class is None:
            raise RuntimeError("no posterior class registered: import "
                               "bayesirl.posterior.continuous")
        return self.posterior_class.from_target(self, params, method=method, log_lik=log_lik,
                                                sample_stats=sample_stats, settings=settings,
                                                num_chains=num_chains, extra=extra)


def _all_successors(dynamics, data, tr, n_actions):
    """``(next (M, A, obs_dim), terminals (M, A))``: ``dynamics`` for every action, the
    observed successor for the action taken; ``terminals`` are chances of termination in
    [0, 1] (:meth:`~bayesirl.core.trajectories.Trajectories.query_terminals`), the observed
    flag for the action taken."""
    M = tr.obs.shape[0]
    nxt, term = [], []
    for a in range(n_actions):
        acts = torch.full((M,), a, dtype=torch.long, device=tr.obs.device)
        n_a, t_a = dynamics(tr.obs, acts)
        n_a = as_tensor("dynamics' next_obs", n_a, dtype=tr.obs.dtype, device=tr.obs.device)
        if n_a.shape != tr.obs.shape:
            raise ValueError(f"dynamics returned next_obs of shape {tuple(n_a.shape)} for obs "
                             f"of shape {tuple(tr.obs.shape)}")
        check_finite("dynamics' next_obs", n_a)  # V there enters the gradients, terminal or not
        t_a = data.query_terminals("dynamics' terminals", t_a, M)
        taken = tr.actions == a
        nxt.append(torch.where(taken[:, None], tr.next_obs, n_a))
        term.append(torch.where(taken, tr.terminals.to(t_a.dtype), t_a))
    return torch.stack(nxt, 1), torch.stack(term, 1)


class _AvrilGuide:
    """AVRIL's guide (see :meth:`QValueTarget.guide`): a callable without arguments, as Pyro
    wants, reading the target's minibatch size at call time."""

    def __init__(self, target: QValueTarget):
        self.target = target
        self.s_pad, _, self.covered = target._padded()
        self.init_scale = (torch.diagonal(target.scale_tril).clamp(max=1.0) * 0.1).detach()

    def __call__(self):
        t = self.target
        d, A = t.data, t.q_function.n_actions
        loc = pyro.param("w_loc", t.center.detach().clone())
        scale = pyro.param("w_scale", self.init_scale.clone(), constraint=constraints.positive)
        w = pyro.sample("w", dist.Normal(loc, scale).to_event(1))
        net = pyro.module("reward_encoder", t.encoder)
        with pyro.plate("demo", d.n, subsample_size=t._subsample_size) as idx:
            mean, sd = encoder_rewards(net, t.feats[self.s_pad[idx]], d.actions[idx], A)
            # the model's latent rewards: the steps the reward prior covers
            pyro.sample("rewards", dist.Normal(mean, sd).mask(self.covered[idx]).to_event(1))
        return {"w": w}


def _ledoit_wolf(x: torch.Tensor) -> torch.Tensor:
    """Ledoit & Wolf's (2004) covariance of the rows of ``x: (m, n)``: the sample covariance
    shrunk toward ``mu I`` (``mu`` its mean variance) by the weight minimising the estimated
    Frobenius risk. ``(n, n)``."""
    m, n = x.shape
    xc = x - x.mean(0)
    sample = xc.T @ xc / m
    mu = sample.diagonal().mean()
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    d2 = (sample - mu * eye).square().sum()
    b2 = ((xc.square().sum(1).square().sum() - m * sample.square().sum()) / m ** 2).clamp(
        max=float(d2))
    weight = float(b2 / d2) if float(d2) > 0 else 1.0
    return weight * mu * eye + (1 - weight) * sample


def encoder_rewards(net, feats: torch.Tensor, actions: torch.Tensor, n_actions: int):
    """The amortised reward posterior at ``(s, a)``: ``net(feats): (..., 2A)`` -> mean and
    standard deviation ``(...)`` of the reward of ``actions (...)``."""
    out = net(feats)
    idx = actions.unsqueeze(-1)
    mean = out[..., :n_actions].gather(-1, idx).squeeze(-1)
    sd = torch.nn.functional.softplus(out[..., n_actions:].gather(-1, idx).squeeze(-1)) + 1e-4
    return mean, sd


