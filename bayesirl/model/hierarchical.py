r"""Hierarchical reward models: many experts, each with a reward drawn from a population.

Expert ``e`` (of E) has linear reward weights ``theta_e`` (``d`` features) and rationality
``beta_e``. Three ways to tie the experts together, one model class (:class:`HierarchicalReward`,
``pooling=``), so the three fits have the same pointwise log-likelihood (one term per
demonstration) and compare by LOO:

- ``"partial"`` (hierarchical, non-centred): ``theta_e = mu + tau * z_e`` with
  ``mu ~ prior`` (``(d,)``), ``tau ~ scale_prior`` (``(d,)``, positive) and ``z_e ~ N(0, I)``.
  Sampling ``z`` instead of ``theta`` removes the funnel between ``tau`` and the ``theta_e``
  (Papaspiliopoulos, Roberts & Skold 2007; Betancourt & Girolami 2015) that makes the centred
  form hard for HMC when the data per expert are few;
- ``"none"`` (separate fits): ``theta_e ~ prior`` independently;
- ``"complete"`` (pooled): one ``theta ~ prior`` for every expert.

Rationality: ``"shared"``, one ``beta`` for all (infer's ``rationality``: a number, or a prior
giving site ``rationality``); or ``"expert"``, ``beta_e = beta * exp(sigma w_e)`` with
``sigma ~ rationality_scale_prior`` and ``w_e ~ N(0, 1)`` (non-centred again; ``beta`` is then
the population's median rationality). With a soft likelihood and a linear reward only
``beta_e theta_e`` reaches the data, so per-expert rationalities are identified through the
shared ``mu``: experts who agree on what is good but differ in how reliably they act on it.
That identification is weak with few demonstrations per expert: as ``beta_e -> 0`` an expert's
data become noise that any ``theta_e`` explains, a funnel in ``(sigma, w_e, z_e)`` where HMC
diverges; check the diagnostics, or keep the rationality shared (the weights then absorb
each expert's scale, and the population's additive spread models it only roughly).

**Batched planner.** The likelihood stacks the E rewards ``(..., E, S, A)`` and plans them in one
call (leading dims: posterior draws or chains, then experts); each demonstration reads the row of
its own expert. Demonstrations come as :class:`~bayesirl.core.experts.ExpertDemonstrations`.
:class:`HierarchicalTarget` builds a
:class:`~bayesirl.posterior.hierarchical.HierarchicalPosterior` from its draws (the posterior
layer registers it, see :class:`~bayesirl.model.base_target.BaseTarget`).
"""

from __future__ import annotations

import inspect
import warnings

import pyro
import pyro.distributions as dist
import torch

from bayesirl._validation import (
    as_tensor,
    check_choice,
    check_finite,
    check_int,
    check_names,
    check_number,
    has_positive_support,
)
from bayesirl.core.demos import Demonstrations
from bayesirl.core.experts import ExpertDemonstrations
from bayesirl.model.base_target import BaseTarget
from bayesirl.model.likelihood import check_likelihood, check_rationality, demo_log_likelihood
from bayesirl.model.preferences import guarded_log_likelihood
from bayesirl.model.rewards import _check_prior
from bayesirl.planning.bellman import soft_value_iteration

__all__ = [
    "POOLING",
    "HierarchicalReward",
    "HierarchicalTarget",
    "expert_log_likelihood",
    "loo_compare",
    "sample_rollouts",
    "simulate_experts",
]

POOLING = ("partial", "none", "complete")
RATIONALITY = ("shared", "expert")


def _check_positive_prior(name: str, prior, shape):
    if not isinstance(prior, torch.distributions.Distribution):
        raise TypeError(f"{name} must be a torch distribution on the positive reals (e.g. "
                        f"dist.HalfNormal(1.)), got {type(prior).__name__}")
    if not has_positive_support(prior):
        raise ValueError(f"{name} must live on the positive reals, got support {prior.support}")
    return _check_prior(name, prior, shape)


def expert_log_likelihood(mdp, data: ExpertDemonstrations, reward: torch.Tensor,
                          likelihood: str = "soft", rationality=1.0) -> torch.Tensor:
    """Pointwise log-likelihood ``(..., N)``: demonstration n under its own expert's reward.

    ``reward``: ``(..., E, S)`` or ``(..., E, S, A)``, the E experts' rewards (leading dims
    batch, e.g. posterior draws); ``rationality``: a number or ``(..., E)``. One batched
    planner call over ``(..., E)``; each demonstration then takes its expert's row.
    """
    S, A, E = mdp.n_states, mdp.n_actions, data.n_experts
    r = torch.as_tensor(reward, dtype=mdp.dtype, device=mdp.device)
    if r.dim() >= 3 and tuple(r.shape[-3:]) == (E, S, A):
        pass
    elif r.dim() >= 2 and tuple(r.shape[-2:]) == (E, S):
        r = r.unsqueeze(-1).expand(*r.shape, A)
    else:
        raise ValueError(f"reward must have shape (..., {E}, {S}) or (..., {E}, {S}, {A}) "
                         f"(one reward per expert), got {tuple(r.shape)}")
    ll = demo_log_likelihood(mdp, data.demos, r, likelihood, rationality)   # (..., E, N)
    index = data.expert.to(ll.device).expand(*ll.shape[:-2], 1, data.n)
    return ll.gather(-2, index).squeeze(-2)


class HierarchicalReward:
    """Per-expert linear rewards ``r_e = phi . theta_e`` tied by a population (see the module
    docstring).

    Args:
        features: ``(S, d)`` state features or ``(S, A, d)``.
        n_experts: E.
        pooling: ``"partial"`` (hierarchical), ``"none"`` (separate) or ``"complete"`` (pooled).
        prior: univariate prior of each weight: of ``mu`` (partial) or of ``theta`` (none,
            complete). Default ``Normal(0, 1)``.
        scale_prior: prior of each population scale ``tau`` (partial), positive. Default
            ``HalfNormal(1)``.
        rationality: ``"shared"`` or ``"expert"``.
        rationality_scale_prior: prior of ``sigma``, the spread of ``log beta_e`` ("expert").
            Default ``HalfNormal(0.5)``.
        feature_names, expert_names: ArviZ coordinates (default the MDP's feature names when
            ``features`` are the MDP's own, else ``f0..``; ``e0..``).

    ``infer(mdp, expert_demos, model, ...)`` takes ``ExpertDemonstrations`` with
    ``n_experts == E``.
    """

    def __init__(self, features, n_experts: int, *, pooling: str = "partial", prior=None,
                 scale_prior=None, rationality: str = "shared", rationality_scale_prior=None,
                 feature_names=None, expert_names=None):
        phi = as_tensor("features", features)
        if phi.dim() not in (2, 3) or phi.shape[-1] < 1:
            raise ValueError(f"features must have shape (S, d) or (S, A, d), got "
                             f"{tuple(phi.shape)}")
        if not torch.isfinite(phi).all():
            raise ValueError("features contains non-finite values")
        self.features = phi
        self.n_experts = E = check_int("n_experts", n_experts)
        self.pooling = check_choice("pooling", pooling, POOLING)
        self.rationality_mode = check_choice("rationality", rationality, RATIONALITY)
        d = phi.shape[-1]
        self.n_features = d
        prior = dist.Normal(0.0, 1.0) if prior is None else prior
        sites = {}
        if self.pooling == "partial":
            sites["mu"] = _check_prior("prior", prior, (d,))
            sites["tau"] = _check_positive_prior(
                "scale_prior", dist.HalfNormal(1.0) if scale_prior is None else scale_prior,
                (d,))
            sites["z"] = _check_prior("z", dist.Normal(0.0, 1.0), (E, d))
        else:
            if scale_prior is not None:
                raise ValueError(f"scale_prior applies to pooling='partial', not "
                                 f"{self.pooling!r}")
            sites["theta"] = _check_prior("prior", prior,
                                          (E, d) if self.pooling == "none" else (d,))
        if self.rationality_mode == "expert":
            sites["rationality_scale"] = _check_positive_prior(
                "rationality_scale_prior",
                dist.HalfNormal(0.5) if rationality_scale_prior is None
                else rationality_scale_prior, ())
            sites["rationality_z"] = _check_prior("rationality_z", dist.Normal(0.0, 1.0), (E,))
        elif rationality_scale_prior is not None:
            raise ValueError("rationality_scale_prior applies to rationality='expert'")
        self._priors = sites
        self.feature_names = (None if feature_names is None
                              else list(check_names("feature_names", feature_names, d)))
        self.expert_names = (None if expert_names is None
                             else list(check_names("expert_names", expert_names, E)))
        theta_dims = ("feature",) if self.pooling == "complete" else ("expert", "feature")
        self.dims = {"mu": ("feature",), "tau": ("feature",), "z": ("expert", "feature"),
                     "theta": theta_dims, "rationality": (), "rationality_scale": (),
                     "rationality_z": ("expert",), "expert_rationality": ("expert",)}

    def priors(self) -> dict[str, dist.Distribution]:
        """The model's sites and their priors (without infer's rationality)."""
        return dict(self._priors)

    def expert_theta(self, params) -> torch.Tensor:
        """``(..., E, d)`` every expert's weights (the non-centred map for partial pooling)."""
        if self.pooling == "partial":
            return params["mu"].unsqueeze(-2) + params["tau"].unsqueeze(-2) * params["z"]
        theta = params["theta"]
        if self.pooling == "complete":
            return theta.unsqueeze(-2).expand(*theta.shape[:-1], self.n_experts, theta.shape[-1])
        return theta

    def reward(self, params) -> torch.Tensor:
        """``(..., E, S)`` or ``(..., E, S, A)``: every expert's reward."""
        theta = self.expert_theta(params)
        phi = self.features.to(theta)
        return torch.einsum("...ed,sd->...es" if phi.dim() == 2 else "...ed,sad->...esa",
                            theta, phi)

    def expert_rationality(self, params, base=1.0) -> torch.Tensor:
        """``(..., E)``: ``beta_e``, from ``base`` (infer's rationality or its draws)."""
        batch = self.batch_shape(params)
        like = next(iter(params.values()))
        beta = torch.as_tensor(params.get("rationality", base), dtype=like.dtype,
                               device=like.device)
        if self.rationality_mode == "shared":
            return beta.unsqueeze(-1).expand(*batch, self.n_experts)
        sigma = params["rationality_scale"]
        return beta.unsqueeze(-1) * torch.exp(sigma.unsqueeze(-1) * params["rationality_z"])

    def batch_shape(self, params) -> torch.Size:
        """The leading (batch) dims of ``params``, e.g. ``(draws,)``."""
        site = "mu" if self.pooling == "partial" else "theta"
        event = 1 if self.pooling != "none" else 2
        return params[site].shape[:-event]

    def population_theta(self, params, z) -> torch.Tensor:
        """Weights of new members of the population, ``mu + tau * z`` for ``z (..., d)``
        (broadcasting with the draws' batch dims); ``theta`` itself when pooled. A ValueError
        for separate fits, which have no population."""
        if self.pooling == "partial":
            return params["mu"] + params["tau"] * z
        if self.pooling == "complete":
            return params["theta"].expand(z.shape[:-1] + params["theta"].shape[-1:])
        raise ValueError("pooling='none' (separate fits) has no population: a new member's "
                         "reward is undefined; use pooling='partial'")

    def coords(self, mdp=None) -> dict[str, list]:
        """``feature`` and ``expert`` coordinates: the names given, else the MDP's feature
        names when the features are the MDP's own (equal values, not just an equal shape:
        other features of the same count would get wrong names), else ``f0..``, ``e0..``."""
        names = self.feature_names
        if names is None and mdp is not None and mdp.feature_names is not None and (
                mdp.features is not None and mdp.features.shape == self.features.shape
                and torch.equal(mdp.features, self.features.to(mdp.features))):
            names = list(mdp.feature_names)  # the MDP's own features: use its names
        return {"feature": names or [f"f{i}" for i in range(self.n_features)],
                "expert": self.expert_names or [f"e{e}" for e in range(self.n_experts)]}

    def check(self, mdp) -> None:
        S, A = mdp.n_states, mdp.n_actions
        if self.features.shape[0] != S or (self.features.dim() == 3
                                           and self.features.shape[1] != A):
            raise ValueError(f"HierarchicalReward features have shape "
                             f"{tuple(self.features.shape)}, but the MDP has S={S} states and "
                             f"A={A} actions")

    def build_target(self, mdp, data, *, likelihood: str = "soft",
                     rationality=1.0) -> HierarchicalTarget:
        """The posterior target of ``data`` (:class:`ExpertDemonstrations`) in ``mdp``."""
        if mdp is None:
            raise ValueError("mdp is None, but a hierarchical reward's likelihood plans in the "
                             "MDP; pass the MDP")
        if not isinstance(data, ExpertDemonstrations):
            raise TypeError(f"data must be ExpertDemonstrations (demonstrations keyed by "
                            f"expert), got {type(data).__name__}")
        if data.n_experts != self.n_experts:
            raise ValueError(f"data has n_experts={data.n_experts} but the model has "
                             f"n_experts={self.n_experts}")
        self.check(mdp)
        if data.device != mdp.device:
            raise ValueError(f"demos are on {data.device} but the MDP is on {mdp.device}; "
                             "move one with .to(device)")
        data.validate(mdp)
        return HierarchicalTarget(self, mdp, data, check_likelihood(likelihood),
                                  check_rationality(rationality))


class HierarchicalTarget(BaseTarget):
    """The unnormalised posterior of a :class:`HierarchicalReward` given demonstrations keyed
    by expert, in the protocol ``infer`` samples. Parameters may carry leading batch dims
    (chains): ``potential`` of ``{site: (C, *shape)}`` is ``(C,)`` from one planner call over
    ``(C, E)`` rewards. Priors, transforms and the potential are
    :class:`~bayesirl.model.base_target.BaseTarget`'s."""

    #: the potential accepts a leading chain dim (infer's vectorized chains may batch it)
    chain_batched = True
    jacobian_by_site = True  # see BaseTarget.jacobian_by_site

    def __init__(self, model: HierarchicalReward, mdp, data: ExpertDemonstrations, likelihood,
                 rationality):
        self.model, self.reward_model, self.mdp, self.data = model, model, mdp, data
        self.likelihood, self.rationality = likelihood, rationality
        priors = model.priors()
        if isinstance(rationality, torch.distributions.Distribution):
            priors["rationality"] = rationality
        super().__init__(priors, mdp.dtype, mdp.device)

    @property
    def demos(self):
        return self.data.demos

    @property
    def n_units(self) -> int:
        return self.data.n

    def beta(self, params) -> torch.Tensor:
        """``(..., E)`` per-expert rationality."""
        return self.model.expert_rationality(params, self.rationality)

    def log_likelihood(self, params) -> torch.Tensor:
        """``(..., N)`` per demonstration, under its own expert's reward (``-inf`` for a
        parameter value whose rewards overflow, see :func:`guarded_log_likelihood`)."""
        reward = self.model.reward(params)                              # (..., E, S[, A])
        beta = self.beta(params)
        event = reward.dim() - beta.dim() + 1     # the expert dim and the reward's own dims
        return guarded_log_likelihood(
            lambda r: expert_log_likelihood(self.mdp, self.data, r, self.likelihood, beta),
            reward, event)

    def pyro_model(self, subsample_size: int | None = None):
        """A Pyro model (no arguments) of the same density, for SVI: the sites, then one
        factor per demonstration in ``plate("demo")`` (minibatches of ``subsample_size``)."""

        def model():
            params = {k: pyro.sample(k, p) for k, p in self.priors.items()}
            with pyro.plate("demo", self.data.n, subsample_size=subsample_size) as idx:
                data = self.data if subsample_size is None else self.data[idx]
                pyro.factor("actions", expert_log_likelihood(
                    self.mdp, data, self.model.reward(params), self.likelihood,
                    self.beta(params)))
            return params

        return model


def loo_compare(posteriors: dict, **kwargs):
    """``arviz.compare`` of fits to the same demonstrations by PSIS-LOO (e.g. pooled, separate
    and hierarchical), from each posterior's pointwise log-likelihood (``actions``, one term
    per demonstration). ``posteriors``: ``{name: posterior}`` with ``to_arviz()``. A
    ValueError naming the posterior that has no such terms (no ``log_lik``, or only a
    preference posterior's ``preference`` terms)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    if not isinstance(posteriors, dict) or len(posteriors) < 2:
        raise ValueError("posteriors must be a dict of at least two named posteriors")
    data = {name: _loo_data(name, p) for name, p in posteriors.items()}
    n = {name: int(d.log_likelihood["actions"].shape[-1]) for name, d in data.items()}
    if len(set(n.values())) != 1:
        raise ValueError(f"the posteriors have different numbers of pointwise terms {n}; "
                         "compare fits to the same demonstrations")
    with warnings.catch_warnings():  # ArviZ 0.23's compare() on pandas >= 3.1, not ours
        warnings.filterwarnings("ignore", "The inplace keyword in DataFrame.sort_values")
        return az.compare(data, var_name="actions", **kwargs)


def _loo_data(name, posterior):
    """ArviZ data of ``posterior`` (``posteriors[name]``) for LOO, which reads only its
    pointwise log-likelihood ``actions``: a posterior whose ``to_arviz`` can leave the reward
    draws out (``rewards=False``, a
    :class:`~bayesirl.posterior.hierarchical.HierarchicalPosterior`'s) does. A ValueError
    naming the posterior when it has no such terms."""
    what = f"posterior {name!r} ({type(posterior).__name__})"
    if getattr(posterior, "log_lik", None) is None:
        raise ValueError(f"{what} has no pointwise log-likelihood (log_lik is None), which LOO "
                         "needs; rebuild it with one (a PreferencePosterior of very many draws "
                         "leaves it out: from_target(..., pointwise=True))")
    if "rewards" in inspect.signature(posterior.to_arviz).parameters:
        data = posterior.to_arviz(rewards=False)
    else:
        data = posterior.to_arviz()
    terms = list(data.log_likelihood.data_vars) if hasattr(data, "log_likelihood") else []
    if "actions" not in terms:
        raise ValueError(f"{what} has no pointwise log-likelihood of demonstrations ('actions'; "
                         f"its terms: {terms}): loo_compare compares fits to the same "
                         "demonstrations, and a fit to preferences alone has none")
    return data


def sample_rollouts(mdp, policy: torch.Tensor, n: int, length: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor,
                                                          torch.Tensor]:
    """``n`` trajectories of ``length`` steps from each of B policies at once.

    ``policy``: ``(B, T, S, A)`` (finite horizon, ``T >= length``) or ``(B, S, A)`` action
    probabilities; start states from ``mdp.initial``. One loop over the steps advances all
    ``B * n`` trajectories; randomness from ``generator`` only. Returns ``states, actions:
    (B, n, length)`` and the ``final`` states reached ``(B, n)``.
    """
    B, S = policy.shape[0], mdp.n_states
    s = torch.multinomial(mdp.initial.expand(B * n, S), 1, replacement=True,
                          generator=generator).squeeze(-1)
    b = torch.arange(B, device=policy.device).repeat_interleave(n)
    states, actions = [], []
    for t in range(length):
        row = policy[b, t, s] if policy.dim() == 4 else policy[b, s]
        a = torch.multinomial(row, 1, generator=generator).squeeze(-1)
        states.append(s)
        actions.append(a)
        k = torch.multinomial(mdp.transition_probs[s, a], 1, generator=generator).squeeze(-1)
        s = mdp.successors[s, a, k]
    return (torch.stack(states, -1).reshape(B, n, length),
            torch.stack(actions, -1).reshape(B, n, length), s.reshape(B, n))


def simulate_experts(mdp, features, demos_per_expert: int, *, mean, scale, n_experts: int,
                     rationality=1.0, length: int | None = None,
                     seed: int = 0) -> tuple[ExpertDemonstrations, torch.Tensor]:
    """Experts from a population and their demonstrations, for studies and tests.

    ``theta_e = mean + scale * z_e`` with ``z_e ~ N(0, I)`` (``mean``, ``scale``: numbers or
    ``(d,)``); expert e acts soft-optimally for ``beta_e (phi . theta_e)`` with
    ``rationality`` a number or ``(E,)``, and demonstrates ``demos_per_expert`` trajectories of
    ``length`` steps (default the horizon; required when discounted). One batched soft value
    iteration and one batched rollout over the experts; everything random from ``seed``.

    Returns ``(ExpertDemonstrations, theta (E, d))``.
    """
    E = check_int("n_experts", n_experts)
    n = check_int("demos_per_expert", demos_per_expert)
    if length is None:
        if not mdp.finite_horizon:
            raise ValueError("length is required for a discounted MDP (it has no horizon)")
        length = mdp.horizon
    length = check_int("length", length, 1, mdp.horizon if mdp.finite_horizon else None)
    phi = as_tensor("features", features, dtype=mdp.dtype, device=mdp.device)
    d = phi.shape[-1]
    g = torch.Generator(device=mdp.device).manual_seed(check_int("seed", seed, 0))

    def per(name, value, n, what, positive=False):  # a number or (n,), checked by name
        t = as_tensor(name, value, dtype=mdp.dtype, device=mdp.device)
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != n):
            raise ValueError(f"{name} must be a number or have shape ({n},) (one per {what}), "
                             f"got shape {tuple(t.shape)}")
        if t.dim() == 0:
            check_number(name, float(t))
        check_finite(name, t)
        if positive and not (t > 0).all():
            raise ValueError(f"{name} must be > 0, got {t.min().item()}")
        return t

    mean, scale = per("mean", mean, d, "feature"), per("scale", scale, d, "feature")
    z = torch.randn(E, d, generator=g, dtype=mdp.dtype, device=mdp.device)
    theta = mean + scale * z
    beta = per("rationality", rationality, E, "expert", positive=True).expand(E)
    reward = torch.einsum("ed,sd->es" if phi.dim() == 2 else "ed,sad->esa", theta, phi)
    if phi.dim() == 2:
        reward = reward.unsqueeze(-1).expand(*reward.shape, mdp.n_actions)
    with torch.no_grad():
        policy = soft_value_iteration(mdp, beta[:, None, None] * reward).log_policy.exp()
    states, actions, final = sample_rollouts(mdp, policy, n, length, g)
    demos = Demonstrations(states.reshape(E * n, length), actions.reshape(E * n, length),
                           torch.ones(E * n, length, dtype=torch.bool, device=mdp.device),
                           final.reshape(E * n))
    expert = torch.arange(E, device=mdp.device).repeat_interleave(n)
    return ExpertDemonstrations(demos, expert, E), theta
