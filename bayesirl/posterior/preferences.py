"""PreferencePosterior: draws of a :class:`~bayesirl.model.preferences.PreferenceModel`'s
parameters given preferences between trajectories (and demonstrations).

What :class:`~bayesirl.model.preferences.PreferenceTarget` builds from its draws (importing this
module registers the class there). Draws are kept per chain, ``(chains, draws, ...)``; the
accessors flatten the chains. The pointwise log-likelihood has one term per demonstration, then
one per pair, so ``az.loo`` leaves out one observation at a time; its ArviZ data and convergence
checks are :mod:`bayesirl.posterior.arviz_io`'s and :mod:`bayesirl.posterior.diagnostics`'.
"""

from __future__ import annotations

import json

import torch

from bayesirl.core.preferences import Preferences
from bayesirl.model.preferences import PreferenceTarget, outcome_log_probs
from bayesirl.planning.bellman import broadcast_reward
from bayesirl.posterior.arviz_io import az, from_groups
from bayesirl.posterior.diagnostics import check_convergence
from bayesirl.posterior.target_draws import TargetDraws, per_chain

__all__ = ["PreferencePosterior"]

#: Draws whose log-likelihoods (or rewards) are evaluated in one batched call when a posterior
#: is built or asked for its rewards: the preference terms are a matrix product per draw, so
#: a chunk is cheap, and the demonstrations' planner (for a joint posterior) sees a batch of
#: this many rewards.
DRAWS_PER_EVALUATION = 256


class PreferencePosterior(TargetDraws):
    """Draws of a :class:`PreferenceModel`'s parameters given preferences (and demonstrations).

    Attributes:
        target: the :class:`PreferenceTarget` (model, data, MDP or None).
        params: ``{site: (chains, draws, *shape)}`` constrained draws.
        log_lik: ``(chains, draws, N + P)`` pointwise log-likelihood (demonstrations, then
            pairs), or None when it was not computed (very many draws).
        method, settings, sample_stats: how the draws were made.

    :meth:`reward` gives reward draws (``(draws, S, A)`` with an MDP, else the reward model's
    own shape), so the decision tools take this posterior like a ``RewardPosterior``.
    """

    def __init__(self, target, params, log_lik=None, method="draws", settings=None,
                 sample_stats=None):
        self.target, self.params, self.log_lik = target, dict(params), log_lik
        self.method, self.settings = method, dict(settings or {})
        self.sample_stats = dict(sample_stats or {})
        self.settings.setdefault("likelihood", target.likelihood)
        self.settings.setdefault("rationality", repr(target.rationality))
        self.extra: dict = {}       # what infer() records beside the draws (ELBO trace, ...)
        self.incomplete = False     # set by infer() when the run was interrupted
        self._rewards = None

    @classmethod
    def from_target(cls, target, params, *, method, log_lik=None, sample_stats=None,
                    settings=None, num_chains=1, pointwise: bool | None = None):
        """From draws ``(draws, ...)``, the chains flattened into ``num_chains`` equal blocks;
        computes the pointwise log-likelihood when
        ``log_lik`` is None and ``pointwise`` (default: when draws x units <= 2e7)."""
        params = per_chain(params, num_chains)
        C, D = next(iter(params.values())).shape[:2]
        if log_lik is not None:
            log_lik = log_lik.reshape(C, D, -1)
        elif pointwise or (pointwise is None and C * D * target.n_units <= 2e7):
            flat = {k: v.reshape(C * D, *v.shape[2:]) for k, v in params.items()}
            step = DRAWS_PER_EVALUATION
            with torch.no_grad():
                log_lik = torch.cat([target.log_likelihood({k: v[i:i + step]
                                                            for k, v in flat.items()})
                                     for i in range(0, C * D, step)]).reshape(C, D, -1)
        if sample_stats:
            sample_stats = {k: torch.as_tensor(v).reshape(C, D) for k, v in sample_stats.items()}
        return cls(target, params, log_lik, method, settings, sample_stats)

    # ------------------------------------------------------------------ accessors
    @property
    def preferences(self) -> Preferences:
        return self.target.preferences

    @property
    def samples(self) -> dict[str, torch.Tensor]:
        """Parameter draws with chains flattened: ``(chains * draws, ...)``."""
        return self.flat_params()

    def reward(self) -> torch.Tensor:
        """Reward draws ``(chains * draws, S, A)`` with an MDP, else the reward model's shape
        ``(chains * draws, S)`` or ``(chains * draws, S, A)``."""
        if self._rewards is None:
            rm = self.target.reward_model
            flat = {k: v for k, v in self.samples.items() if k in rm.priors()}
            with torch.no_grad():
                parts = []
                for i in range(0, next(iter(flat.values())).shape[0], DRAWS_PER_EVALUATION):
                    r = rm.reward({k: v[i:i + DRAWS_PER_EVALUATION] for k, v in flat.items()})
                    parts.append(r if self.mdp is None else broadcast_reward(self.mdp, r))
            self._rewards = torch.cat(parts)
        return self._rewards

    def mean_reward(self) -> torch.Tensor:
        return self.reward().mean(0)

    @property
    def rationality(self) -> torch.Tensor:
        """The demonstrator's rationality per draw ``(chains * draws,)`` (the decision tools'
        expert model): the inferred draws, or the fixed value repeated."""
        n = self.num_chains * self.num_draws
        if "rationality" in self.params:
            return self.params["rationality"].reshape(-1)
        beta = self.target.rationality
        value = 1.0 if isinstance(beta, torch.distributions.Distribution) else float(beta)
        return torch.full((n,), value, dtype=self.target.dtype)

    def returns(self, preferences: Preferences | None = None) -> torch.Tensor:
        """``(draws, M)`` returns of the trajectories of ``preferences`` (default the data's)
        under every draw."""
        with torch.no_grad():
            return self.target.returns(self.samples, preferences)

    def outcome_probs(self, preferences: Preferences | None = None) -> torch.Tensor:
        """``(draws, P, 3)`` probabilities of ``(i > j, j > i, tie)`` for the pairs of
        ``preferences`` (default the data's) under every draw."""
        prefs = self.preferences if preferences is None else preferences
        s = self.samples  # a site with a prior has draws; a fixed value is a number
        beta = s.get("preference_rationality", self.target.model.rationality)
        nu = s.get("tie_strength", self.target.tie_strength)
        with torch.no_grad():
            return outcome_log_probs(self.returns(prefs), prefs.pairs, beta, nu).exp()

    # ------------------------------------------------------------------ ArviZ
    def to_arviz(self):
        """ArviZ data: posterior (the sites, dims from the reward model, e.g. ``feature``),
        log_likelihood (``preference`` per pair; ``actions`` per demonstration when there are
        demonstrations), sample_stats, observed_data (the pairs and ties)."""
        rm = self.target.reward_model
        mdp = self.mdp
        coords = dict(rm.coords(mdp)) if mdp is not None else {}
        if "feature" in sum(map(list, rm.dims.values()), []) and "feature" not in coords:
            coords = {"feature": list(rm.coords(None).get("feature", []))}
        posterior = {k: v.detach().cpu().numpy() for k, v in self.params.items()}
        dims = {"posterior": {k: list(rm.dims.get(k, ())) for k in posterior}}
        groups = {"posterior": posterior}
        if self.log_lik is not None:
            ll = self.log_lik.detach().cpu().numpy()
            n_demo = 0 if self.demos is None else self.demos.n
            groups["log_likelihood"] = {"preference": ll[..., n_demo:]}
            dims["log_likelihood"] = {"preference": ["pair"]}
            if n_demo:
                groups["log_likelihood"]["actions"] = ll[..., :n_demo]
                dims["log_likelihood"]["actions"] = ["demo"]
        if self.sample_stats:
            groups["sample_stats"] = {k: v.cpu().numpy() for k, v in self.sample_stats.items()}
        prefs = self.preferences
        groups["observed_data"] = {"pairs": prefs.pairs.cpu().numpy(),
                                   "ties": prefs.ties.cpu().numpy()}
        dims["observed_data"] = {"pairs": ["pair", "side"], "ties": ["pair"]}
        attrs = {"method": self.method, "settings": json.dumps(self.settings, default=str)}
        return from_groups(groups, coords=coords, dims=dims, attrs={"posterior": attrs})

    def summary(self, var_names=None, **kwargs):
        """ArviZ summary table of the sites."""
        return az.summary(self.to_arviz(), var_names=var_names or list(self.params), **kwargs)

    def check_convergence(self, strict: bool = False) -> list[str]:
        """:func:`bayesirl.posterior.diagnostics.check_convergence` of the sites: an
        InferenceWarning (a ConvergenceError with ``strict``) on R-hat > 1.01, bulk ESS < 400,
        divergences, E-BFMI < 0.3 or a chain that did not move."""
        return check_convergence(self.to_arviz(), list(self.params), strict=strict)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}{tuple(v.shape[2:])}" for k, v in self.params.items())
        return (f"PreferencePosterior(method={self.method!r}, chains={self.num_chains}, "
                f"draws={self.num_draws}, params=[{params}], pairs="
                f"{self.preferences.n_pairs}, demos={0 if self.demos is None else self.demos.n})")


PreferenceTarget.posterior_class = PreferencePosterior  # the target builds this from its draws
