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
"""

from __future__ import annotations

import json
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import biject_to

from bayesirl._validation import as_tensor, check_choice, check_int, check_names
from bayesirl.core.demos import Demonstrations
from bayesirl.core.experts import ExpertDemonstrations
from bayesirl.model.likelihood import check_likelihood, check_rationality, demo_log_likelihood
from bayesirl.model.preferences import arviz_data, check_convergence, guarded_log_likelihood
from bayesirl.model.rewards import _check_prior
from bayesirl.planning.bellman import soft_value_iteration

__all__ = [
    "POOLING",
    "ExpertPosterior",
    "HierarchicalPosterior",
    "HierarchicalReward",
    "HierarchicalTarget",
    "expert_log_likelihood",
    "loo_compare",
    "sample_rollouts",
    "simulate_experts",
]

POOLING = ("partial", "none", "complete")
RATIONALITY = ("shared", "expert")
_CHUNK = 64  # posterior draws planned at once


def _check_positive_prior(name: str, prior, shape):
    if not isinstance(prior, torch.distributions.Distribution):
        raise TypeError(f"{name} must be a torch distribution on the positive reals (e.g. "
                        f"dist.HalfNormal(1.)), got {type(prior).__name__}")
    if prior.support.check(torch.tensor(-1.0)) or not prior.support.check(torch.tensor(1.0)):
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
        feature_names, expert_names: ArviZ coordinates (default ``f0..``, ``e0..``).

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
        names = self.feature_names
        if names is None and mdp is not None and mdp.feature_names is not None and (
                mdp.features is not None and mdp.features.shape == self.features.shape):
            names = list(mdp.feature_names)
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


class HierarchicalTarget:
    """The unnormalised posterior of a :class:`HierarchicalReward` given demonstrations keyed
    by expert, in the protocol ``infer`` samples. Parameters may carry leading batch dims
    (chains): ``potential`` of ``{site: (C, *shape)}`` is ``(C,)`` from one planner call over
    ``(C, E)`` rewards."""

    #: the potential accepts a leading chain dim (infer's vectorized chains may batch it)
    chain_batched = True

    def __init__(self, model: HierarchicalReward, mdp, data: ExpertDemonstrations, likelihood,
                 rationality):
        self.model, self.reward_model, self.mdp, self.data = model, model, mdp, data
        self.likelihood, self.rationality = likelihood, rationality
        priors = model.priors()
        if isinstance(rationality, torch.distributions.Distribution):
            priors["rationality"] = rationality
        self.priors = priors
        self.transforms = {k: biject_to(p.support) for k, p in priors.items()}
        self.dtype, self.device = mdp.dtype, mdp.device

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

    def log_prior(self, params) -> torch.Tensor:
        return sum(p.log_prob(params[k]) for k, p in self.priors.items())

    def constrain(self, u):
        return {k: self.transforms[k](v) for k, v in u.items()}

    def unconstrain(self, params):
        return {k: self.transforms[k].inv(v) for k, v in params.items()}

    def potential(self, u, jacobian: bool = True) -> torch.Tensor:
        """Minus the log density at unconstrained ``u`` (``(...)`` for batch dims ``(...)``),
        with the log-Jacobian of the positive sites' transforms when ``jacobian``."""
        params = self.constrain(u)
        logp = self.log_prior(params) + self.log_likelihood(params).sum(-1)
        if jacobian:
            for k, t in self.transforms.items():
                ladj = t.log_abs_det_jacobian(u[k], params[k])
                extra = self.priors[k].event_dim - t.domain.event_dim
                logp = logp + (ladj.sum(tuple(range(-extra, 0))) if extra else ladj)
        return -logp

    def init_unconstrained(self):
        return {k: torch.zeros(p.batch_shape + p.event_shape, dtype=self.dtype,
                               device=self.device) for k, p in self.priors.items()}

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

    def make_posterior(self, params, *, method: str, log_lik=None, sample_stats=None,
                       settings=None, num_chains: int = 1) -> HierarchicalPosterior:
        """A :class:`HierarchicalPosterior` from constrained draws ``{site: (draws, *shape)}``
        (chains flattened into ``num_chains`` equal blocks)."""
        C = check_int("num_chains", num_chains)
        n = next(iter(params.values())).shape[0]
        if n % C:
            raise ValueError(f"num_chains is {C} but there are {n} draws, not a multiple")
        D = n // C
        if log_lik is None:
            with torch.no_grad():
                log_lik = torch.cat([self.log_likelihood({k: v[i:i + _CHUNK]
                                                          for k, v in params.items()})
                                     for i in range(0, n, _CHUNK)])
        chained = {k: v.reshape(C, D, *v.shape[1:]) for k, v in params.items()}
        stats = {k: torch.as_tensor(v).reshape(C, D) for k, v in (sample_stats or {}).items()}
        return HierarchicalPosterior(self, chained, log_lik.reshape(C, D, -1), method,
                                     settings, stats)


class ExpertPosterior:
    """One expert's marginal posterior, in the shape the decision tools take
    (``reward()``, ``rationality``, ``mdp``, ``settings``, ``demos``)."""

    def __init__(self, parent: HierarchicalPosterior, e: int):
        self.parent, self.expert = parent, e
        self.mdp = parent.mdp
        self.settings = parent.settings
        counts = parent.data.counts
        self.demos = parent.data.of(e) if int(counts[e]) else None

    def reward(self) -> torch.Tensor:
        """``(draws, S, A)``."""
        return self.parent.reward()[:, self.expert]

    @property
    def rationality(self) -> torch.Tensor:
        return self.parent.expert_rationality[:, self.expert]

    @property
    def samples(self) -> dict[str, torch.Tensor]:
        return {"theta": self.parent.theta[:, self.expert]}

    def __repr__(self) -> str:
        return f"ExpertPosterior(expert={self.expert}, draws={self.reward().shape[0]})"


class HierarchicalPosterior:
    """Draws of a hierarchical (or pooled, or separate) reward model.

    Attributes:
        target: the :class:`HierarchicalTarget` (model, MDP, data).
        params: ``{site: (chains, draws, *shape)}`` constrained draws.
        log_lik: ``(chains, draws, N)`` pointwise log-likelihood (one term per demonstration).
        method, settings, sample_stats: how the draws were made.

    Derived, with chains flattened: :attr:`theta` ``(draws, E, d)``,
    :attr:`expert_rationality` ``(draws, E)``, :meth:`reward` ``(draws, E, S, A)``; one
    expert's posterior for the decision tools with :meth:`expert`; the population's predictive
    weights and rewards for a new member with :meth:`predictive_theta` and
    :meth:`predictive_reward`.
    """

    def __init__(self, target, params, log_lik, method="draws", settings=None,
                 sample_stats=None):
        self.target, self.params, self.log_lik = target, dict(params), log_lik
        self.method = method
        self.settings = {"likelihood": target.likelihood,
                         "rationality": repr(target.rationality), **dict(settings or {})}
        self.sample_stats = dict(sample_stats or {})
        self.extra: dict = {}       # what infer() records beside the draws (ELBO trace, ...)
        self.incomplete = False     # set by infer() when the run was interrupted
        self._rewards = None

    # ------------------------------------------------------------------ accessors
    @property
    def model(self) -> HierarchicalReward:
        return self.target.model

    @property
    def mdp(self):
        return self.target.mdp

    @property
    def data(self) -> ExpertDemonstrations:
        return self.target.data

    @property
    def demos(self):
        return self.target.data.demos

    @property
    def num_chains(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.params.values())).shape[1]

    @property
    def samples(self) -> dict[str, torch.Tensor]:
        """Site draws with chains flattened, ``(chains * draws, ...)``, plus the derived
        ``theta`` ``(draws, E, d)`` and ``expert_rationality`` ``(draws, E)``."""
        out = {k: v.reshape(-1, *v.shape[2:]) for k, v in self.params.items()}
        out["theta"] = self.theta
        out["expert_rationality"] = self.expert_rationality
        return out

    def _flat_sites(self):
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.params.items()}

    @property
    def theta(self) -> torch.Tensor:
        """``(draws, E, d)`` every expert's weights."""
        return self.model.expert_theta(self._flat_sites())

    @property
    def expert_rationality(self) -> torch.Tensor:
        """``(draws, E)`` every expert's rationality."""
        return self.target.beta(self._flat_sites())

    def reward(self, expert: int | None = None) -> torch.Tensor:
        """``(draws, E, S, A)`` reward draws of every expert, or ``(draws, S, A)`` of one."""
        if self._rewards is None:
            mdp = self.mdp
            with torch.no_grad():
                r = self.model.reward(self._flat_sites())
            if r.dim() == 3:  # (draws, E, S): a state reward, broadcast over actions
                r = r.unsqueeze(-1).expand(*r.shape, mdp.n_actions)
            self._rewards = r
        if expert is None:
            return self._rewards
        return self._rewards[:, check_int("expert", expert, 0, self.model.n_experts - 1)]

    @property
    def rationality(self) -> torch.Tensor:
        """``(draws, E)``, the same as :attr:`expert_rationality`."""
        return self.expert_rationality

    def expert(self, e: int) -> ExpertPosterior:
        """Expert ``e``'s posterior, for :func:`~bayesirl.decisions.robust_policy` and the
        other decision tools."""
        return ExpertPosterior(self, check_int("e", e, 0, self.model.n_experts - 1))

    def population(self) -> dict[str, torch.Tensor]:
        """The population's draws: ``mu`` and ``tau`` ``(draws, d)`` (partial pooling), or
        the pooled ``theta`` (complete pooling)."""
        s = self._flat_sites()
        if self.model.pooling == "partial":
            return {"mu": s["mu"], "tau": s["tau"]}
        if self.model.pooling == "complete":
            return {"theta": s["theta"]}
        raise ValueError("pooling='none' (separate fits) has no population")

    def predictive_theta(self, n: int = 1, seed: int = 0) -> torch.Tensor:
        """``(draws * n, d)`` weights of a new member of the population:
        ``mu + tau * z`` with ``z ~ N(0, I)``, ``n`` per posterior draw (drawn with ``seed``).
        This integrates over the posterior of ``mu`` and ``tau``: the population's predictive
        distribution."""
        n = check_int("n", n)
        s = self._flat_sites()
        D, d = self.theta.shape[0], self.model.n_features
        g = torch.Generator().manual_seed(check_int("seed", seed, 0))
        z = torch.randn(D, n, d, generator=g, dtype=self.target.dtype).to(self.target.device)
        rep = {k: v.unsqueeze(1) for k, v in s.items()}
        return self.model.population_theta(rep, z).reshape(D * n, d)

    def predictive_reward(self, n: int = 1, seed: int = 0) -> torch.Tensor:
        """``(draws * n, S, A)`` rewards of a new member (see :meth:`predictive_theta`)."""
        theta = self.predictive_theta(n, seed)
        phi = self.model.features.to(theta)
        if phi.dim() == 2:
            r = theta @ phi.T
            return r.unsqueeze(-1).expand(*r.shape, self.mdp.n_actions)
        return torch.einsum("nd,sad->nsa", theta, phi)

    # ------------------------------------------------------------------ ArviZ
    def to_arviz(self, rewards: bool = True):
        """ArviZ data with an ``expert`` dim.

        Groups: posterior (the sites, ``theta (chain, draw, expert, feature)``,
        ``expert_rationality (chain, draw, expert)`` and, with ``rewards``,
        ``reward (chain, draw, expert, state, action)``), log_likelihood (``actions``, one value
        per demonstration: ``(chain, draw, demo)``, for ``az.loo``/``az.compare``),
        sample_stats, observed_data (the demonstrations and their ``expert``)."""
        C, D = self.num_chains, self.num_draws
        mdp, model = self.mdp, self.model
        coords = {**model.coords(mdp), "expert": self.data.names
                  if self.data.expert_names else model.coords(mdp)["expert"],
                  "state": list(mdp.state_names) if mdp.state_names
                  else list(range(mdp.n_states)),
                  "action": list(mdp.action_names) if mdp.action_names
                  else list(range(mdp.n_actions))}

        def chains(x):
            return x.detach().cpu().numpy().reshape(C, D, *x.shape[1:])

        posterior = {k: v.detach().cpu().numpy() for k, v in self.params.items()}
        dims = {k: list(model.dims.get(k, ())) for k in posterior}
        if model.pooling == "partial":  # theta = mu + tau z, derived
            posterior["theta"] = chains(self.theta)
            dims["theta"] = ["expert", "feature"]
        posterior["expert_rationality"] = chains(self.expert_rationality)
        dims["expert_rationality"] = ["expert"]
        if rewards:
            posterior["reward"] = chains(self.reward())
            dims["reward"] = ["expert", "state", "action"]
        groups = {"posterior": posterior,
                  "log_likelihood": {"actions": self.log_lik.detach().cpu().numpy()}}
        all_dims = {"posterior": dims, "log_likelihood": {"actions": ["demo"]}}
        if self.sample_stats:
            groups["sample_stats"] = {k: v.cpu().numpy() for k, v in self.sample_stats.items()}
        demos = self.demos
        observed = {k: getattr(demos, k).cpu().numpy() for k in ("states", "actions", "mask")}
        all_dims["observed_data"] = {k: ["demo", "step"] for k in observed}
        observed["expert"] = self.data.expert.cpu().numpy()
        all_dims["observed_data"]["expert"] = ["demo"]
        groups["observed_data"] = observed
        attrs = {"method": self.method, "pooling": model.pooling,
                 "rationality_mode": model.rationality_mode,
                 "settings": json.dumps(self.settings, default=str)}
        return arviz_data(groups, coords=coords, dims=all_dims, attrs={"posterior": attrs})

    def summary(self, var_names=None, **kwargs):
        """ArviZ summary of the sites (default every site, and ``theta``)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import arviz as az
        names = var_names or (list(self.params) + (["theta"] if "theta" not in self.params
                                                   else []))
        return az.summary(self.to_arviz(rewards=False), var_names=names, **kwargs)

    def check_convergence(self, strict: bool = False) -> list[str]:
        """Warn (or raise with ``strict``) on R-hat > 1.01, bulk ESS < 400 and divergences."""
        return check_convergence(self.to_arviz(rewards=False), list(self.params), strict=strict)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}{tuple(v.shape[2:])}" for k, v in self.params.items())
        return (f"HierarchicalPosterior(pooling={self.model.pooling!r}, method={self.method!r}, "
                f"chains={self.num_chains}, draws={self.num_draws}, params=[{params}])")


def loo_compare(posteriors: dict, **kwargs):
    """``arviz.compare`` of fits to the same demonstrations by PSIS-LOO (e.g. pooled, separate
    and hierarchical), from each posterior's pointwise log-likelihood (``actions``, one term
    per demonstration). ``posteriors``: ``{name: posterior}`` with ``to_arviz()``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    if not isinstance(posteriors, dict) or len(posteriors) < 2:
        raise ValueError("posteriors must be a dict of at least two named posteriors")
    n = {name: int(p.log_lik.shape[-1]) for name, p in posteriors.items()}
    if len(set(n.values())) != 1:
        raise ValueError(f"the posteriors have different numbers of pointwise terms {n}; "
                         "compare fits to the same demonstrations")
    data = {}
    for name, p in posteriors.items():
        idata = p.to_arviz(rewards=False) if isinstance(p, HierarchicalPosterior) else (
            p.to_arviz())
        data[name] = idata
    with warnings.catch_warnings():  # ArviZ 0.23's compare() on pandas >= 3.1, not ours
        warnings.filterwarnings("ignore", "The inplace keyword in DataFrame.sort_values")
        return az.compare(data, var_name="actions", **kwargs)


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
    z = torch.randn(E, d, generator=g, dtype=mdp.dtype, device=mdp.device)
    theta = (torch.as_tensor(mean, dtype=mdp.dtype, device=mdp.device)
             + torch.as_tensor(scale, dtype=mdp.dtype, device=mdp.device) * z)
    beta = torch.as_tensor(rationality, dtype=mdp.dtype, device=mdp.device).expand(E)
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
