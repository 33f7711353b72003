r"""Preference evidence: a Bradley-Terry (Davidson) likelihood on trajectory returns.

**Likelihood.** A trajectory's return under a reward is ``R = sum_t gamma^t r(s_t, a_t)`` (or
``r(s_t)`` for state-only trajectories and a state reward). A judge with rationality
``beta > 0`` prefers trajectory i to j with the Bradley-Terry probability
``exp(beta R_i) / (exp(beta R_i) + exp(beta R_j))`` (Bradley & Terry 1952; the likelihood of
T-REX and Bayesian REX, Brown et al. 2019, 2020). **Ties** follow Davidson (1970): with a tie
strength ``nu >= 0`` and ``x = beta R``,

    P(i > j) = e^{x_i} / Z,   P(j > i) = e^{x_j} / Z,   P(i ~ j) = nu e^{(x_i + x_j) / 2} / Z,
    Z = e^{x_i} + e^{x_j} + nu e^{(x_i + x_j) / 2},

so two trajectories of equal return are tied with probability ``nu / (2 + nu)`` and a tie
becomes unlikely as their returns separate; ``nu = 0`` is Bradley-Terry (ties impossible).
Each term is log-concave in the returns (``x - logsumexp`` of affine functions), so for a linear
reward with a log-concave prior the posterior is log-concave.

**Linear rewards need no planning.** When the reward is linear in one site, ``r = phi theta``,
the returns are ``F theta`` with ``F (M, d)`` the trajectories' feature sums, computed once:
the potential is one matrix product (Bayesian REX's observation), and a fused autograd node
(:class:`_BradleyTerryNormal`) evaluates it with its gradient for a Normal prior. Such a cheap
potential is bounded by a sampler's per-step overhead, not by the density: the targets here
accept a leading chain dim, so ``infer(..., chain_method="vectorized")`` advances many HMC
chains with one evaluation per leapfrog step.

**Model objects.** :class:`PreferenceModel` wraps a reward model for ``infer``: alone on
:class:`~bayesirl.core.preferences.Preferences`, or jointly with demonstrations (their soft or
Boltzmann likelihood, with infer's ``rationality``) in one posterior. :class:`PreferenceTarget`
builds a :class:`~bayesirl.posterior.preferences.PreferencePosterior` from its draws (the
posterior layer registers it, see :class:`~bayesirl.model.base_target.BaseTarget`).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from bayesirl._validation import check_number, has_positive_support
from bayesirl.core.demos import Demonstrations
from bayesirl.core.preferences import Preferences
from bayesirl.model.base_target import BaseTarget
from bayesirl.model.likelihood import check_likelihood, check_rationality, demo_log_likelihood
from bayesirl.model.rewards import RewardModel

__all__ = [
    "PreferenceModel",
    "PreferenceTarget",
    "outcome_log_probs",
    "pair_log_likelihood",
    "preference_log_likelihood",
    "trajectory_returns",
]


# ---------------------------------------------------------------------------- pure functions
def trajectory_returns(reward: torch.Tensor, preferences: Preferences, *, state_action: bool,
                       discount: float | None = None) -> torch.Tensor:
    """Returns ``(..., M)`` of the trajectories under a reward.

    ``R_m = sum_t gamma^t r(s_t, a_t)`` over the real steps of trajectory m (``gamma`` =
    ``discount``, default 1). ``reward`` is ``(..., S, A)`` when ``state_action`` (which needs
    actions), else a state reward ``(..., S)`` (any trajectories, state-only ones included).
    """
    if preferences.states is None:
        raise ValueError("these preferences hold feature sums, not states: their returns are "
                         "features @ theta of a linear reward")
    s, a = preferences.states, preferences.actions
    M, T = s.shape
    w = preferences.step_weights(discount, reward.dtype).to(reward.device)     # (M, T)
    if state_action:
        if a is None:
            raise ValueError("the reward is a state-action reward (..., S, A) but the "
                             "trajectories have no actions; use a state reward (..., S)")
        steps = reward.flatten(-2)[..., (s * reward.shape[-1] + a).reshape(-1)]
    else:
        steps = reward[..., s.reshape(-1)]
    return (steps.reshape(*steps.shape[:-1], M, T) * w).sum(-1)


def outcome_log_probs(returns: torch.Tensor, pairs: torch.Tensor, rationality=1.0,
                      tie_strength=0.0) -> torch.Tensor:
    """``(..., P, 3)``: log-probabilities of ``(i > j, j > i, i ~ j)`` for every pair.

    ``returns: (..., M)``; ``pairs: (P, 2)``; ``rationality`` beta and ``tie_strength`` nu are
    numbers or tensors broadcasting with the batch dims ``(...)`` (Davidson's model, see the
    module docstring; ``nu = 0`` gives ``-inf`` for a tie).
    """
    beta = torch.as_tensor(rationality, dtype=returns.dtype, device=returns.device)
    nu = torch.as_tensor(tie_strength, dtype=returns.dtype, device=returns.device)
    delta = beta[..., None] * (returns[..., pairs[:, 0]] - returns[..., pairs[:, 1]])
    log_nu = torch.log(nu)[..., None].expand_as(delta)
    zero = torch.zeros_like(delta)
    win = -torch.logsumexp(torch.stack([zero, -delta, log_nu - delta / 2]), 0)
    lose = -torch.logsumexp(torch.stack([zero, delta, log_nu + delta / 2]), 0)
    tie = log_nu - torch.logsumexp(torch.stack([delta / 2, -delta / 2, log_nu]), 0)
    return torch.stack([win, lose, tie], -1)


def pair_log_likelihood(delta: torch.Tensor, ties: torch.Tensor,
                        tie_strength=0.0) -> torch.Tensor:
    """``(..., P)`` log-probability of each observed comparison given
    ``delta = beta (R_i - R_j)`` ``(..., P)`` of its pair ``(i, j)``: ``log P(i > j)``, or
    ``log P(i ~ j)`` where ``ties`` ``(P,)``; Davidson's ``tie_strength`` nu as in
    :func:`outcome_log_probs`."""
    nu = torch.as_tensor(tie_strength, dtype=delta.dtype, device=delta.device)
    ties = ties.to(delta.device)
    if not bool(ties.any()) and nu.dim() == 0 and float(nu) == 0.0:
        return torch.nn.functional.logsigmoid(delta)  # Bradley-Terry
    log_nu = torch.log(nu)[..., None].expand_as(delta)
    win = -torch.logsumexp(torch.stack([torch.zeros_like(delta), -delta, log_nu - delta / 2]),
                           0)
    tie = log_nu - torch.logsumexp(torch.stack([delta / 2, -delta / 2, log_nu]), 0)
    return torch.where(ties, tie, win)


def preference_log_likelihood(returns: torch.Tensor, preferences: Preferences, rationality=1.0,
                              tie_strength=0.0) -> torch.Tensor:
    """Pointwise log-likelihood ``(..., P)`` of the observed comparisons given the returns
    ``(..., M)`` of the preferences' trajectories (one term per pair); ``rationality`` and
    ``tie_strength`` are numbers or tensors broadcasting with the batch dims ``(...)``."""
    pairs = preferences.pairs.to(returns.device)
    beta = torch.as_tensor(rationality, dtype=returns.dtype, device=returns.device)
    delta = beta[..., None] * (returns[..., pairs[:, 0]] - returns[..., pairs[:, 1]])
    return pair_log_likelihood(delta, preferences.ties, tie_strength)


class _BradleyTerryNormal(torch.autograd.Function):
    """``U(theta) = -log N(theta; loc, scale) + sum_k softplus(theta . y_k)``, ``(...)`` for
    ``theta (..., d)``, with ``y_k = -beta x_k`` the negated pair differences ``(P, d)``
    (``softplus(-delta) = -log sigmoid(delta)``), as one node: value and gradient
    ``(theta - loc) / scale^2 + sum_k sigmoid(theta . y_k) y_k`` in a few elementwise passes
    where autograd's graph would take a dozen."""

    @staticmethod
    def forward(ctx, theta, Y, loc, scale, log_norm):
        m = theta @ Y.T                                                  # -delta, (..., P)
        # softplus(m) = max(m, 0) + log(1 + exp(-|m|)); log rather than log1p (torch's float64
        # log1p is not vectorised): the absolute error stays below 1e-16
        nll = torch.clamp(m, min=0) + torch.log(1 + torch.exp(-m.abs()))
        z = (theta - loc) / scale
        ctx.save_for_backward(torch.sigmoid(m), z, Y, scale)
        return 0.5 * (z * z).sum(-1) + log_norm + nll.sum(-1)

    @staticmethod
    def backward(ctx, g):
        sig, z, Y, scale = ctx.saved_tensors
        return g[..., None] * (z / scale + sig @ Y), None, None, None, None


REWARD_BOUND = 1e12
"""Rewards beyond this magnitude get log-likelihood -inf without planning (see
:func:`guarded_log_likelihood`)."""


def guarded_log_likelihood(log_lik, reward: torch.Tensor, event_dims: int) -> torch.Tensor:
    """``log_lik(reward)`` where every batch row of ``reward`` (its trailing ``event_dims``
    dims form a row) is finite and within :data:`REWARD_BOUND`, and ``-inf`` elsewhere.

    A sampler's trajectory can overshoot to astronomically large parameters before its energy
    error stops it; planning such a reward overflows to NaN, and a discounted planner then runs
    to its iteration limit. Those rows are planned as zeros instead, and their ``-inf``
    makes the sampler reject the point. ``log_lik`` maps ``reward`` to ``(..., N)``.
    """
    flat = reward.flatten(-event_dims) if event_dims > 1 else reward
    ok = (torch.isfinite(flat) & (flat.abs() <= REWARD_BOUND)).all(-1)
    if bool(ok.all()):
        return log_lik(reward)
    shape = ok.shape + (1,) * event_dims
    ll = log_lik(torch.where(ok.reshape(shape), reward, 0.0))
    while ok.dim() < ll.dim():
        ok = ok.unsqueeze(-1)
    return torch.where(ok, ll, -math.inf)


# ---------------------------------------------------------------------------- the model
def _check_positive(name: str, value, allow_zero: bool = False):
    """A number > 0 (>= 0 with ``allow_zero``) or a scalar prior on the positive reals."""
    if isinstance(value, torch.distributions.Distribution):
        if value.event_shape != () or value.batch_shape != ():
            raise ValueError(f"{name} prior must be a scalar distribution, got batch_shape "
                             f"{tuple(value.batch_shape)}, event_shape "
                             f"{tuple(value.event_shape)}")
        if not has_positive_support(value):
            raise ValueError(f"{name} prior must live on the positive reals, got support "
                             f"{value.support}")
        return value
    return check_number(name, value, 0.0, low_open=not allow_zero)


class PreferenceModel:
    """A reward model observed through preferences (and optionally demonstrations).

    Args:
        reward_model: a :class:`~bayesirl.model.rewards.RewardModel` with its prior. When its
            reward is linear in one site (``LinearReward``; ``TabularReward`` of a state
            reward) the returns are feature sums times the weights: no planning, no MDP.
            Preferences given as feature sums need such a model with ``d`` weights.
        rationality: the judge's beta > 0 (a number), or a prior on it (site
            ``"preference_rationality"``). With a linear reward and a fixed beta only
            ``beta theta`` is identified; the prior on theta sets the scale.
        tie_strength: Davidson's nu >= 0 (a number) or a prior on it (site
            ``"tie_strength"``). Default: 0 (Bradley-Terry) when the preferences have no tie,
            1 when they do (a tie at equal returns as likely as either win).
        discount: gamma of the returns (default 1: plain sums over the steps).

    ``infer(mdp, data, model, ...)`` takes ``data`` as :class:`Preferences`, or a pair
    ``(Demonstrations, Preferences)`` for the joint posterior; ``mdp`` may be None for
    preferences alone.
    """

    def __init__(self, reward_model: RewardModel, *, rationality=1.0, tie_strength=None,
                 discount: float | None = None):
        if not isinstance(reward_model, RewardModel):
            raise TypeError(f"reward_model must be a bayesirl RewardModel (e.g. LinearReward), "
                            f"got {type(reward_model).__name__}")
        self.reward_model = reward_model
        self.rationality = _check_positive("rationality", rationality)
        self.tie_strength = (None if tie_strength is None
                             else _check_positive("tie_strength", tie_strength, allow_zero=True))
        self.discount = None if discount is None else check_number("discount", discount, 0, 1)

    def build_target(self, mdp, data, *, likelihood: str = "soft",
                     rationality=1.0) -> PreferenceTarget:
        """The posterior target of ``data`` (see the class docstring); ``likelihood`` and
        ``rationality`` are the demonstrations' (ignored without demonstrations)."""
        if isinstance(data, Preferences):
            demos, prefs = None, data
        elif isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(
                data[0], Demonstrations) and isinstance(data[1], Preferences):
            demos, prefs = data
        else:
            raise TypeError("data must be Preferences or a pair (Demonstrations, Preferences), "
                            f"got {type(data).__name__}")
        if demos is not None and mdp is None:
            raise ValueError("mdp is None but data has demonstrations: their likelihood "
                             "plans in the MDP; pass the MDP")
        if mdp is not None:
            self.reward_model.check(mdp)
            prefs.validate(mdp)
            if demos is not None:
                if demos.device != mdp.device:
                    raise ValueError(f"demos are on {demos.device} but the MDP is on "
                                     f"{mdp.device}; move one with .to(device)")
                demos.validate(mdp)
        return PreferenceTarget(self, prefs, mdp=mdp, demos=demos,
                                likelihood=check_likelihood(likelihood),
                                rationality=check_rationality(rationality))


def _linear_returns_matrix(reward_model, prefs: Preferences, discount):
    """``(site, F (M, d))`` when the returns are ``F @ params[site]``, else None."""
    linear = reward_model.linear_map()
    if linear is None:
        return None
    site, phi = linear
    shape = tuple(reward_model.priors()[site].batch_shape + reward_model.priors()[site].event_shape)
    if prefs.features is not None:
        if len(shape) != 1 or shape[0] != prefs.features.shape[1]:
            raise ValueError(f"the preferences hold feature sums with d={prefs.features.shape[1]}"
                             f" but the reward model's site {site!r} has shape {shape}")
        return site, prefs.features
    if phi is None:  # a tabular reward: its own values are the weights of state indicators
        if len(shape) != 1:
            return None  # a state-action table: the generic path gathers it
        phi = torch.eye(shape[0], dtype=torch.get_default_dtype())
    if phi.dim() == 3 and prefs.actions is None:
        raise ValueError("the reward model has state-action features (S, A, d) but the "
                         "preferences' trajectories have no actions; use state features")
    return site, prefs.feature_sums(phi, discount)


class PreferenceTarget(BaseTarget):
    """The unnormalised posterior of a :class:`PreferenceModel` given preferences (and
    demonstrations), in the protocol ``infer`` samples.

    Every method accepts parameters with leading batch dims (chains, draws): ``potential`` of
    ``u = {site: (C, *shape)}`` is ``(C,)``, so many chains advance in one evaluation
    (``infer(..., chain_method="vectorized")``). Pointwise log-likelihood: the N demonstrations
    first, then the P pairs. Priors, transforms and the potential are
    :class:`~bayesirl.model.base_target.BaseTarget`'s; with a linear reward, a Normal prior and
    nothing but preferences, the potential is the fused :class:`_BradleyTerryNormal`.
    """

    #: the potential accepts a leading chain dim (infer's vectorized chains may batch it)
    chain_batched = True
    jacobian_by_site = True  # see BaseTarget.jacobian_by_site

    def __init__(self, model: PreferenceModel, preferences: Preferences, *, mdp=None,
                 demos=None, likelihood="soft", rationality=1.0):
        self.model, self.preferences, self.mdp, self.demos = model, preferences, mdp, demos
        self.reward_model = model.reward_model
        self.likelihood, self.rationality = likelihood, rationality
        self.discount = model.discount
        nu = model.tie_strength
        if nu is None:
            nu = 1.0 if preferences.has_ties else 0.0
        if preferences.has_ties and not isinstance(nu, torch.distributions.Distribution) and (
                nu == 0):
            k = int(preferences.ties.nonzero()[0, 0])
            raise ValueError(f"tie_strength is 0 (Bradley-Terry: ties impossible) but pair {k} "
                             "is a tie; give tie_strength > 0 or a prior on it")
        self.tie_strength = nu
        priors = dict(self.reward_model.priors())
        if demos is not None and isinstance(rationality, torch.distributions.Distribution):
            priors["rationality"] = rationality
        if isinstance(model.rationality, torch.distributions.Distribution):
            priors["preference_rationality"] = model.rationality
        if isinstance(nu, torch.distributions.Distribution):
            priors["tie_strength"] = nu
        # without an MDP the data's float dtype: the feature sums', else the reward features'
        given = preferences.features if preferences.features is not None else getattr(
            self.reward_model, "features", None)
        super().__init__(priors, mdp.dtype if mdp is not None else given.dtype
                         if isinstance(given, torch.Tensor) else torch.get_default_dtype(),
                         mdp.device if mdp is not None else preferences.device)
        linear = _linear_returns_matrix(self.reward_model, preferences, self.discount)
        if linear is None and preferences.features is not None:
            raise ValueError(f"the preferences hold feature sums, which give returns only for a "
                             f"reward linear in one site (e.g. LinearReward), not for "
                             f"{type(self.reward_model).__name__}; give states instead")
        self.linear_site = None if linear is None else linear[0]
        self.F = None if linear is None else linear[1].to(self.device, self.dtype)
        pairs = preferences.pairs.to(self.device)
        # the feature differences of the pairs, (P, d): delta = beta theta . x_k
        self.X = None if self.F is None else self.F[pairs[:, 0]] - self.F[pairs[:, 1]]
        # the reward model's output for one parameter value: (S,) or (S, A)
        self.reward_shape = tuple(self.reward_model.reward(self._zeros()).shape)
        self.state_action = len(self.reward_shape) == 2
        self.check_preferences(preferences)
        self.fused = self._fused()

    def _fused(self):
        """``(-beta X, loc, scale, log_norm)`` when the potential is :class:`_BradleyTerryNormal`
        (a linear reward with a Normal prior, fixed rationality, no tie, no demonstrations)."""
        if (self.X is None or self.demos is not None or set(self.priors) != {self.linear_site}
                or self.preferences.has_ties or self.tie_strength != 0):
            return None
        prior = self.priors[self.linear_site]
        base = prior.base_dist if isinstance(prior, torch.distributions.Independent) else prior
        while isinstance(base, dist.ExpandedDistribution):
            base = base.base_dist
        if type(base) not in (dist.Normal, torch.distributions.Normal):
            return None
        d = self.X.shape[1]
        loc = base.loc.to(self.dtype).expand(d).to(self.device)
        scale = base.scale.to(self.dtype).expand(d).to(self.device)
        log_norm = float(scale.log().sum() + 0.5 * d * math.log(2 * math.pi))
        return -float(self.model.rationality) * self.X, loc, scale, log_norm

    def _zeros(self):
        return {k: self.transforms[k](torch.zeros(p.batch_shape + p.event_shape,
                                                  dtype=self.dtype, device=self.device))
                for k, p in self.priors.items()}

    # ------------------------------------------------------------------ densities
    @property
    def n_units(self) -> int:
        """N demonstrations plus P pairs."""
        return (0 if self.demos is None else self.demos.n) + self.preferences.n_pairs

    def check_preferences(self, preferences: Preferences) -> Preferences:
        """``preferences`` if its states and actions index the reward model's table, else an
        error naming the first that does not (with an MDP too, which ``validate`` checks
        against, a reward table can be smaller or larger than the MDP's)."""
        S = self.reward_shape[0]
        return preferences.check_indices(S, self.reward_shape[1] if self.state_action
                                         else None, "the reward's")

    def returns(self, params, preferences: Preferences | None = None) -> torch.Tensor:
        """``(..., M)`` returns of the trajectories of ``preferences`` (default the data's)."""
        prefs = (self.preferences if preferences is None
                 else self.check_preferences(preferences))
        if prefs is self.preferences and self.F is not None:
            return params[self.linear_site] @ self.F.T
        linear = _linear_returns_matrix(self.reward_model, prefs, self.discount)
        if linear is not None:
            return params[linear[0]] @ linear[1].to(params[linear[0]]).T
        reward = self.reward_model.reward({k: v for k, v in params.items()
                                           if k in self.reward_model.priors()})
        return trajectory_returns(reward, prefs, state_action=self.state_action,
                                  discount=self.discount)

    def preference_rationality(self, params):
        return params.get("preference_rationality", self.model.rationality)

    def tie(self, params):
        return params.get("tie_strength", self.tie_strength)

    def pair_deltas(self, params) -> torch.Tensor:
        """``(..., P)``: ``beta (R_i - R_j)`` of every observed pair."""
        beta = torch.as_tensor(self.preference_rationality(params), dtype=self.dtype,
                               device=self.device)
        if self.X is not None:
            return beta[..., None] * (params[self.linear_site] @ self.X.T)
        R, pairs = self.returns(params), self.preferences.pairs.to(self.device)
        return beta[..., None] * (R[..., pairs[:, 0]] - R[..., pairs[:, 1]])

    def log_likelihood(self, params) -> torch.Tensor:
        """``(..., N + P)``: per demonstration, then per pair."""
        ll = pair_log_likelihood(self.pair_deltas(params), self.preferences.ties,
                                 self.tie(params))
        if self.demos is None:
            return ll
        reward = self.reward_model.reward({k: v for k, v in params.items()
                                           if k in self.reward_model.priors()})
        beta = params.get("rationality", self.rationality)
        demo_ll = guarded_log_likelihood(
            lambda r: demo_log_likelihood(self.mdp, self.demos, r, self.likelihood, beta),
            reward, 2 if self.state_action else 1)
        return torch.cat([demo_ll, ll.expand(*demo_ll.shape[:-1], ll.shape[-1])], -1)

    def fused_potential(self, u):
        """:class:`_BradleyTerryNormal` where it applies (see :meth:`_fused`), else None."""
        if self.fused is None:
            return None
        Y, loc, scale, log_norm = self.fused
        return _BradleyTerryNormal.apply(u[self.linear_site], Y, loc, scale, log_norm)

    def pyro_model(self, subsample_size: int | None = None):
        """A Pyro model (no arguments) of the same density, for SVI: the sites, then a factor
        per pair in ``plate("pair")`` (minibatches of ``subsample_size`` pairs) and per
        demonstration in ``plate("demo")``."""

        def model():
            params = {k: pyro.sample(k, p) for k, p in self.priors.items()}
            with pyro.plate("pair", self.preferences.n_pairs,
                            subsample_size=subsample_size) as idx:
                ll = pair_log_likelihood(self.pair_deltas(params), self.preferences.ties,
                                         self.tie(params))
                pyro.factor("preferences", ll if subsample_size is None else ll[..., idx])
            if self.demos is not None:
                reward = self.reward_model.reward({k: v for k, v in params.items()
                                                   if k in self.reward_model.priors()})
                with pyro.plate("demo", self.demos.n):
                    pyro.factor("actions", demo_log_likelihood(
                        self.mdp, self.demos, reward, self.likelihood,
                        params.get("rationality", self.rationality)))
            return params

        return model
