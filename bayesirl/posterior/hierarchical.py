"""HierarchicalPosterior: draws of a :class:`~bayesirl.model.hierarchical.HierarchicalReward`
(hierarchical, pooled or separate experts), and one expert's marginal (:class:`ExpertPosterior`).

What :class:`~bayesirl.model.hierarchical.HierarchicalTarget` builds from its draws (importing
this module registers the class there). Draws are kept per chain, ``(chains, draws, ...)``; the
accessors flatten the chains and add an ``expert`` dim: ``theta (draws, E, d)``,
``expert_rationality (draws, E)``, ``reward() (draws, E, S, A)``. The pointwise log-likelihood
has one term per demonstration, so fits of the same demonstrations compare by LOO
(:func:`~bayesirl.model.hierarchical.loo_compare`); its ArviZ data and convergence checks are
:mod:`bayesirl.posterior.arviz_io`'s and :mod:`bayesirl.posterior.diagnostics`'.
"""

from __future__ import annotations

import json

import torch

from bayesirl._validation import check_int
from bayesirl.core.experts import ExpertDemonstrations
from bayesirl.model.hierarchical import HierarchicalReward, HierarchicalTarget
from bayesirl.planning.buffers import DRAWS_PER_PLAN
from bayesirl.posterior.arviz_io import az, from_groups
from bayesirl.posterior.diagnostics import check_convergence
from bayesirl.posterior.target_draws import TargetDraws, per_chain

__all__ = ["ExpertPosterior", "HierarchicalPosterior"]


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


class HierarchicalPosterior(TargetDraws):
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

    @classmethod
    def from_target(cls, target, params, *, method: str, log_lik=None, sample_stats=None,
                    settings=None, num_chains: int = 1) -> HierarchicalPosterior:
        """From constrained draws ``{site: (draws, *shape)}`` of ``target`` (chains flattened
        into ``num_chains`` equal blocks); the pointwise log-likelihood ``(draws, N)`` is
        computed, :data:`~bayesirl.planning.buffers.DRAWS_PER_PLAN` draws per planner call,
        when ``log_lik`` is None."""
        chained = per_chain(params, num_chains)
        C, D = next(iter(chained.values())).shape[:2]
        n = C * D
        if log_lik is None:
            with torch.no_grad():
                log_lik = torch.cat([target.log_likelihood({k: v[i:i + DRAWS_PER_PLAN]
                                                            for k, v in params.items()})
                                     for i in range(0, n, DRAWS_PER_PLAN)])
        stats = {k: torch.as_tensor(v).reshape(C, D) for k, v in (sample_stats or {}).items()}
        return cls(target, chained, log_lik.reshape(C, D, -1), method, settings, stats)

    # ------------------------------------------------------------------ accessors
    @property
    def model(self) -> HierarchicalReward:
        return self.target.model

    @property
    def data(self) -> ExpertDemonstrations:
        return self.target.data

    @property
    def samples(self) -> dict[str, torch.Tensor]:
        """Site draws with chains flattened, ``(chains * draws, ...)``, plus the derived
        ``theta`` ``(draws, E, d)`` and ``expert_rationality`` ``(draws, E)``."""
        out = self.flat_params()
        out["theta"] = self.theta
        out["expert_rationality"] = self.expert_rationality
        return out

    @property
    def theta(self) -> torch.Tensor:
        """``(draws, E, d)`` every expert's weights."""
        return self.model.expert_theta(self.flat_params())

    @property
    def expert_rationality(self) -> torch.Tensor:
        """``(draws, E)`` every expert's rationality."""
        return self.target.beta(self.flat_params())

    def reward(self, expert: int | None = None) -> torch.Tensor:
        """``(draws, E, S, A)`` reward draws of every expert, or ``(draws, S, A)`` of one."""
        if self._rewards is None:
            mdp = self.mdp
            with torch.no_grad():
                r = self.model.reward(self.flat_params())
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
        s = self.flat_params()
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
        s = self.flat_params()
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
        return from_groups(groups, coords=coords, dims=all_dims, attrs={"posterior": attrs})

    def summary(self, var_names=None, **kwargs):
        """ArviZ summary of the sites (default every site, and ``theta``)."""
        names = var_names or (list(self.params) + (["theta"] if "theta" not in self.params
                                                   else []))
        return az.summary(self.to_arviz(rewards=False), var_names=names, **kwargs)

    def check_convergence(self, strict: bool = False) -> list[str]:
        """:func:`bayesirl.posterior.diagnostics.check_convergence` of the sites: an
        InferenceWarning (a ConvergenceError with ``strict``) on R-hat > 1.01, bulk ESS < 400,
        divergences, E-BFMI < 0.3 or a chain that did not move."""
        return check_convergence(self.to_arviz(rewards=False), list(self.params), strict=strict)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}{tuple(v.shape[2:])}" for k, v in self.params.items())
        return (f"HierarchicalPosterior(pooling={self.model.pooling!r}, method={self.method!r}, "
                f"chains={self.num_chains}, draws={self.num_draws}, params=[{params}])")


HierarchicalTarget.posterior_class = HierarchicalPosterior  # the target builds this from draws
