"""ContinuousPosterior: draws of a soft Q-function's weights and the rewards they imply.

What :class:`~bayesirl.model.q_value.QValueTarget` returns from ``infer()``. Draws are kept per
chain, ``(chains, draws, ...)``; accessors flatten the chains:

- ``post.samples["w"]``: ``(chains * draws, P)`` Q-network weights;
- ``post.reward()``: ``(chains * draws, M)`` rewards at the M observed transitions,
  ``r = Q_w(s, a) - gamma (1 - terminal) V_w(s')``;
- ``post.reward_at(obs, actions, next_obs)``: rewards at any transitions. Without ``next_obs``:
  under a ``"state"``/``"state_action"`` reward prior, the reward function drawn given each
  draw's rewards at the data (:meth:`ContinuousPosterior.reward_function`); under ``"iid"``,
  the successor from a one-step model of the data (:meth:`ContinuousPosterior.one_step`);
- ``post.reward_band(...)``: posterior mean and equal-tailed credible band;
- ``post.policy(kind)``: the apprentice, acting on the posterior mean Q (``"mean"``), the
  posterior predictive ``E[pi_w]`` (``"predictive"``) or one draw per episode (``"thompson"``);
- ``post.to_arviz()`` (posterior ``w`` and ``reward``, per-trajectory ``log_likelihood``,
  sample_stats, the trajectories as observed_data), ``save``/``load`` (netCDF, no pickle),
  ``check_convergence``, ``min_ess``. A linearised MLP (``QValueModel(linearise=True)``)
  keeps its linearisation point in the file beside the draws.

A posterior fitted with AVRIL's amortised guide also carries the reward encoder
``q(r | s, a)``: :meth:`ContinuousPosterior.encoder_reward`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from bayesirl._validation import (
    as_tensor,
    check_bool,
    check_choice,
    check_int,
)
from bayesirl.core.knn_dynamics import knn_dynamics
from bayesirl.core.trajectories import Trajectories
from bayesirl.model.q_function import QFunction
from bayesirl.model.q_value import (
    QValueTarget,
    RewardPrior,
    distinct_transitions,
    encoder_rewards,
    theta_draws,
    value_space_terms,
)
from bayesirl.posterior.arviz_io import (
    az,
    from_groups,
    load_netcdf,
    read_fit_extras,
    write_fit_extras,
)
from bayesirl.posterior.bands import equal_tailed_interval
from bayesirl.posterior.diagnostics import check_convergence
from bayesirl.posterior.files import atomic_write
from bayesirl.posterior.reward_posterior import ChainDraws

__all__ = ["ContinuousPosterior", "PosteriorPolicy", "RewardBand", "credible_band"]

_FORMAT = "bayesirl.ContinuousPosterior/1"
_CHUNK = 256  # draws evaluated at once
POLICIES = ("mean", "predictive", "thompson")


class RewardBand(NamedTuple):
    """Posterior mean and equal-tailed credible band of rewards, each ``(M,)``."""

    mean: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor


def _chunked(fn, w: torch.Tensor):
    """``fn`` over the leading dim of ``w`` in chunks, concatenated; where ``fn`` returns a
    tuple of tensors (a NamedTuple), each field is concatenated, and a None field stays
    None."""
    with torch.no_grad():
        parts = [fn(w[i:i + _CHUNK]) for i in range(0, w.shape[0], _CHUNK)]
    if parts and isinstance(parts[0], tuple):
        fields = (None if f[0] is None else torch.cat(f) for f in zip(*parts, strict=True))
        return type(parts[0])(*fields)
    return torch.cat(parts)


class ContinuousPosterior(ChainDraws):
    """Posterior draws of a value-space model on continuous observations.

    Attributes:
        q_function: the :class:`.QFunction` (features fitted to data).
        data: the :class:`~bayesirl.core.trajectories.Trajectories` conditioned on.
        params: ``{"w": (chains, draws, P)}``.
        rewards: ``(chains, draws, M)`` rewards at the data's transitions (row-major order of
            ``data.transitions()``).
        log_lik: ``(chains, draws, N)`` per-trajectory log-likelihood, or None.
        discount, likelihood, rationality: the model's gamma, V rule and beta.
        method, settings, sample_stats, extra: how the draws were made.
        encoder: the amortised reward encoder (AVRIL's guide), or None.
        reward_prior: the model's :class:`~bayesirl.model.q_value.RewardPrior`, or None.
        theta_mean, theta_chol: for a ``"state"``/``"state_action"`` prior, ``(chains,
            draws, F)`` means of the reward function's weights ``theta`` given each draw's
            rewards, and the ``(F, F)`` Cholesky factor ``C`` of their common precision
            (``theta | w ~ N(theta_mean, (C C^T)^-1)``). Kept from the target, because with
            dynamics the prior also covers the actions not taken, whose rewards need the
            successors; when not given they are computed from the rewards at the data.
    """

    def __init__(self, q_function: QFunction, data: Trajectories, params, rewards,
                 log_lik=None, *, discount: float, likelihood: str, rationality: float,
                 method: str = "draws", settings=None, sample_stats=None, extra=None,
                 encoder=None, incomplete: bool = False,
                 reward_prior: RewardPrior | None = None, theta_mean=None, theta_chol=None):
        self.q_function, self.data = q_function, data
        self.params = dict(params)
        self.rewards, self.log_lik = rewards, log_lik
        self.discount, self.likelihood = float(discount), likelihood
        self.rationality = float(rationality)
        self.method = method
        self.settings = dict(settings or {})
        self.sample_stats = dict(sample_stats or {})
        self.extra = dict(extra or {})
        self.encoder = encoder
        self.incomplete = bool(incomplete)
        self.reward_prior = reward_prior
        if (theta_mean is None) != (theta_chol is None):
            raise ValueError("theta_mean and theta_chol go together: give both or neither")
        if theta_mean is None and reward_prior is not None and reward_prior.kind != "iid":
            tr = data.transitions()
            rows = distinct_transitions(tr.obs, tr.actions, tr.next_obs, tr.terminals)
            at_data = reward_prior.at(tr.obs[rows], tr.actions[rows])
            theta_mean = _chunked(at_data.theta_mean,
                                  rewards.reshape(-1, rewards.shape[-1])[:, rows])
            theta_mean, theta_chol = theta_mean.reshape(*rewards.shape[:-1], -1), at_data.chol
        self.theta_mean, self.theta_chol = theta_mean, theta_chol

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_target(cls, target: QValueTarget, params, *, method: str, log_lik=None,
                    sample_stats=None, settings=None, num_chains: int = 1, extra=None,
                    incomplete: bool = False) -> ContinuousPosterior:
        """From constrained draws ``{"w": (draws, P)}`` of ``target`` (chains flattened into
        ``num_chains`` equal blocks); rewards and, when not given, the log-likelihood are
        computed here."""
        num_chains = check_int("num_chains", num_chains)
        w = as_tensor("params['w']", params["w"]).detach()
        if w.dim() == 3:  # already (chains, draws, P)
            num_chains = w.shape[0]
            w = w.reshape(-1, w.shape[-1])
        if w.dim() != 2 or w.shape[1] != target.n_params:
            raise ValueError(f"params['w'] must have shape (draws, {target.n_params}), got "
                             f"{tuple(w.shape)}")
        if w.shape[0] % num_chains:
            raise ValueError(f"{w.shape[0]} draws do not split into {num_chains} equal chains")
        C = num_chains
        # rewards, log-likelihood and theta | w from one evaluation of Q per draw
        rewards, own_log_lik, theta_mean = _chunked(target.draw_terms, w)
        theta_chol = None
        if theta_mean is not None:
            theta_mean = theta_mean.reshape(C, -1, theta_mean.shape[-1])
            theta_chol = target.data_reward_prior.chol
        log_lik = own_log_lik if log_lik is None else log_lik
        log_lik = as_tensor("log_lik", log_lik).reshape(C, -1, target.data.n)
        stats = {}
        for k, v in dict(sample_stats or {}).items():
            v = torch.as_tensor(np.asarray(v))
            stats[k] = v.reshape(C, -1) if v.numel() == w.shape[0] else v
        settings = dict(settings or {})
        m = target.model
        settings.setdefault("model", {"hidden": list(m.hidden), "n_fourier": m.n_fourier,
                                      "cross_flags": m.cross_flags,
                                      "linearise": m.linearise,
                                      "weight_scale": m.weight_scale,
                                      "level_scale": m.level_scale,
                                      "skip_scale": m.skip_scale, "fan_in": m.fan_in,
                                      "reward_loc": m.reward_loc,
                                      "reward_scale": m.reward_scale})
        return cls(target.q_function, target.data, {"w": w.reshape(C, -1, w.shape[1])},
                   rewards.reshape(C, -1, rewards.shape[-1]), log_lik,
                   discount=target.discount, likelihood=target.likelihood,
                   rationality=target.rationality, method=method, settings=settings,
                   sample_stats=stats, extra=extra, encoder=target.encoder,
                   incomplete=incomplete, reward_prior=target.reward_prior,
                   theta_mean=theta_mean, theta_chol=theta_chol)

    # ------------------------------------------------------------------ draws
    # num_chains, num_draws, samples ({"w": (chains * draws, P)}), reward() ((chains * draws, M)
    # at the data's transitions) and mean_reward() ((M,)) come from ChainDraws.
    def credible_interval(self, prob: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Equal-tailed ``prob`` interval of the rewards at the data, ``(lower, upper)``;
        needs at least two draws (a MAP's interval would have width 0)."""
        self.require_draws("credible_interval()")
        band = credible_band(self.reward(), prob)
        return band.lower, band.upper

    # ------------------------------------------------------------------ anywhere
    def q_values(self, obs) -> torch.Tensor:
        """``(draws, M, A)`` Q-values at ``obs: (M, obs_dim)``."""
        obs = self.data.query_obs("obs", obs)
        feats = self.q_function.features(obs)
        primal = self.q_function.primal(feats)
        return _chunked(lambda w: self.q_function.apply(w, feats, primal), self.samples["w"])

    def one_step(self, obs, actions, neighbours: int = 5):
        """The one-step model of the data at ``(obs (M, obs_dim), actions (M,))``:
        ``(next_obs (M, obs_dim), p_terminal (M,))`` (see
        :func:`~bayesirl.core.knn_dynamics.knn_dynamics`). A plug-in estimate of the successor:
        reward bands built on it count the posterior's uncertainty, not this model's error.
        The model checks ``obs`` and ``actions`` against the data."""
        return knn_dynamics(self.data, neighbours)(obs, actions)

    def reward_function(self, obs, actions=None, seed: int = 0) -> torch.Tensor:
        """``(draws, M)`` draws of the reward function ``loc + psi(s[, a]) theta`` at any
        ``obs: (M, obs_dim)`` (``actions: (M,)`` for a ``"state_action"`` prior): for each
        draw of ``w``, ``theta`` is drawn from its Gaussian conditional given that draw's
        rewards at the data (generator seeded ``seed``). Needs a ``"state"`` or
        ``"state_action"`` reward prior."""
        if self.reward_prior is None or self.reward_prior.kind == "iid":
            raise ValueError("reward_function needs a reward_prior='state' or 'state_action' "
                             "model; this posterior's is "
                             f"{None if self.reward_prior is None else self.reward_prior.kind!r}")
        obs = self.data.query_obs("obs", obs)
        prior = self.reward_prior
        if prior.kind == "state_action":
            if actions is None:
                raise ValueError("a 'state_action' reward function needs actions")
            a = self.data.query_actions(actions, obs.shape[0])
        else:
            a = torch.zeros(obs.shape[0], dtype=torch.long, device=obs.device)
        g = torch.Generator().manual_seed(check_int("seed", seed, low=0))
        mean = self.theta_mean.reshape(-1, self.theta_mean.shape[-1])
        theta = _chunked(lambda m: theta_draws(m, self.theta_chol, g), mean)
        return prior.loc + theta @ prior.design(obs, a).T

    def reward_at(self, obs, actions, next_obs=None, terminals=None, *,
                  method: str = "auto", neighbours: int = 5, seed: int = 0) -> torch.Tensor:
        """``(draws, M)`` rewards of transitions ``(obs (M, obs_dim), actions (M,), next_obs)``.

        With ``next_obs`` (and optionally ``terminals``: booleans or chances of termination
        in [0, 1], default none) this is exactly the model's
        ``r = Q_w(s, a) - gamma (1 - terminal) V_w(s')``, a chance weighting ``V_w(s')`` by
        ``1 - chance``. Without it, ``method``:
        ``"function"``: :meth:`reward_function` (a ``"state"``/``"state_action"`` prior);
        ``"one_step"``: the successor and the chance of termination from :meth:`one_step`,
        ``r = Q_w(s, a) - gamma (1 - p_terminal) V_w(s_hat')``; ``"auto"``: the first where
        the prior has a reward function, else the second.
        """
        check_choice("method", method, ("auto", "function", "one_step"))
        obs = self.data.query_obs("obs", obs)
        M = obs.shape[0]
        a = self.data.query_actions(actions, M)
        if next_obs is None:
            if terminals is not None:
                raise ValueError("terminals given without next_obs")
            structured = self.reward_prior is not None and self.reward_prior.kind != "iid"
            if method == "function" or (method == "auto" and structured):
                return self.reward_function(obs, a, seed)
            next_obs, keep = self.one_step(obs, a, neighbours)
            keep = 1.0 - keep
        else:
            next_obs = self.data.query_obs("next_obs", next_obs)
            if next_obs.shape[0] != M:
                raise ValueError(f"next_obs has {next_obs.shape[0]} rows for {M} observations")
            keep = (1.0 if terminals is None
                    else 1.0 - self.data.query_terminals("terminals", terminals, M))
        feats = self.q_function.features(torch.cat([obs, next_obs]))
        idx = torch.arange(M, device=obs.device)
        no_term = torch.zeros(M, dtype=torch.bool, device=obs.device)
        primal = self.q_function.primal(feats)

        def rewards(w):
            q = self.q_function.apply(w, feats, primal)
            _, r = value_space_terms(q, idx, a, idx + M, no_term, self.rationality,
                                     self.discount * keep, self.likelihood)
            return r

        return _chunked(rewards, self.samples["w"])

    def reward_band(self, obs, actions, next_obs=None, terminals=None, *, prob: float = 0.9,
                    method: str = "auto", neighbours: int = 5, seed: int = 0) -> RewardBand:
        """Posterior mean and equal-tailed ``prob`` band of :meth:`reward_at`."""
        return credible_band(self.reward_at(obs, actions, next_obs, terminals, method=method,
                                    neighbours=neighbours, seed=seed), prob)

    def encoder_reward(self, obs, actions) -> RewardBand:
        """AVRIL's amortised ``q(r | s, a)`` at ``(obs, actions)``: mean and a 90% band
        (``mean -/+ 1.645 sd``). Only for a posterior fitted with the ``"avril"`` guide."""
        if self.encoder is None:
            raise ValueError("this posterior has no reward encoder: fit it with "
                             "infer(..., method='svi', guide='avril')")
        obs = self.data.query_obs("obs", obs)
        a = self.data.query_actions(actions, obs.shape[0])
        with torch.no_grad():
            mean, sd = encoder_rewards(self.encoder, self.q_function.features(obs), a,
                                       self.data.n_actions)
        return RewardBand(mean, mean - 1.645 * sd, mean + 1.645 * sd)

    # ------------------------------------------------------------------ policies
    def action_probs(self, obs, kind: str = "predictive") -> torch.Tensor:
        """``(M, A)`` action probabilities at ``obs``: ``"predictive"`` averages
        ``softmax(beta Q_w)`` over the draws; ``"mean"`` is ``softmax(beta E[Q_w])``."""
        check_choice("kind", kind, ("mean", "predictive"))
        q = self.q_values(obs)
        if kind == "mean":
            return torch.softmax(self.rationality * q.mean(0), -1)
        return torch.softmax(self.rationality * q, -1).mean(0)

    def policy(self, kind: str = "mean", greedy: bool = True, seed: int = 0
               ) -> PosteriorPolicy:
        """The apprentice: a callable ``obs -> action`` (see :class:`PosteriorPolicy`)."""
        return PosteriorPolicy(self, kind, greedy, seed)

    # ------------------------------------------------------------------ ArviZ
    def to_arviz(self):
        """ArviZ data (``InferenceData`` on ArviZ 0.x, ``DataTree`` on 1.x).

        Groups: posterior (``w`` ``(chain, draw, weight)``, ``reward``
        ``(chain, draw, transition)``, and for a structured reward prior ``theta_mean``
        ``(chain, draw, reward_weight)``), log_likelihood (``actions``, one value per
        trajectory, ``(chain, draw, trajectory)``, for ``az.loo``), sample_stats (MCMC),
        observed_data (the trajectories, ``(trajectory, step[, obs_dim])``), constant_data
        (a MAP's or Laplace fit's standard errors and covariance; ``theta_chol``); the model
        and settings are attributes of the posterior group."""
        d = self.data
        groups = {"posterior": {"w": _np(self.params["w"]), "reward": _np(self.rewards)}}
        dims = {"posterior": {"w": ["weight"], "reward": ["transition"]}}
        if self.log_lik is not None:
            groups["log_likelihood"] = {"actions": _np(self.log_lik)}
            dims["log_likelihood"] = {"actions": ["trajectory"]}
        if self.sample_stats:
            groups["sample_stats"] = {k: _np(v) for k, v in self.sample_stats.items()}
        observed = {"obs": _np(d.obs), "next_obs": _np(d.next_obs), "actions": _np(d.actions),
                    "terminals": _np(d.terminals).astype(np.int8),
                    "mask": _np(d.mask).astype(np.int8)}
        obs_dims = {k: ["trajectory", "step"] for k in ("actions", "terminals", "mask")}
        obs_dims.update({k: ["trajectory", "step", "obs_dim"] for k in ("obs", "next_obs")})
        if d.rewards is not None:
            observed["env_rewards"] = _np(d.rewards)
            obs_dims["env_rewards"] = ["trajectory", "step"]
        groups["observed_data"] = observed
        dims["observed_data"] = obs_dims
        attrs = {"bayesirl_format": _FORMAT, "method": self.method,
                 "settings": json.dumps(self.settings, default=str),
                 "incomplete": int(self.incomplete), "discount": self.discount,
                 "likelihood": self.likelihood, "rationality": self.rationality,
                 "n_actions": d.n_actions,
                 "q_function": json.dumps(self.q_function.spec()),
                 "reward_prior": json.dumps(None if self.reward_prior is None
                                            else self.reward_prior.spec())}
        if self.encoder is not None:
            attrs["encoder"] = json.dumps({k: v.tolist() for k, v in
                                           self.encoder.state_dict().items()})
        if "elbo" in self.extra:
            attrs["elbo"] = np.asarray(self.extra["elbo"], dtype=float)
        if self.q_function.linearised_at is not None:
            attrs["linearised_at"] = _np(self.q_function.linearised_at).astype(float)
        coords = {"trajectory": list(range(d.n)), "transition": list(range(self.rewards.shape[-1])),
                  "weight": list(range(self.params["w"].shape[-1]))}
        constant, constant_dims, constant_coords = write_fit_extras(self.extra,
                                                                    {"w": ["weight"]})
        if self.theta_mean is not None:  # theta | w, which the dynamics (not saved) gave
            groups["posterior"]["theta_mean"] = _np(self.theta_mean)
            dims["posterior"]["theta_mean"] = ["reward_weight"]
            constant["theta_chol"] = _np(self.theta_chol)
            constant_dims["theta_chol"] = ["reward_weight", "reward_weight_bis"]
            F = self.theta_chol.shape[0]
            coords.update(reward_weight=list(range(F)), reward_weight_bis=list(range(F)))
        if constant:
            groups["constant_data"] = constant
            dims["constant_data"] = constant_dims
            coords.update(constant_coords)
        return from_groups(groups, coords=coords, dims=dims, attrs={"posterior": attrs})

    def summary(self, var_names=("w",), **kwargs):
        """ArviZ summary table (default: the weights)."""
        return az.summary(self.to_arviz(), var_names=list(var_names), **kwargs)

    def min_ess(self, var_name: str = "reward") -> float:
        """The smallest bulk ESS over the components of ``var_name`` (``"reward"``: the
        rewards at the data; ``"w"``)."""
        check_choice("var_name", var_name, ("reward", "w"))
        x = self.rewards if var_name == "reward" else self.params["w"]
        ess = az.ess(az.convert_to_dataset({var_name: _np(x)}), method="bulk")
        return float(np.nanmin(ess[var_name].values))

    def check_convergence(self, strict: bool = False) -> list[str]:
        """Warn (or raise with ``strict``) on R-hat > 1.01, bulk ESS < 400, divergences and
        E-BFMI < 0.3, over the rewards at the data. Returns the problems found."""
        return check_convergence(self.to_arviz(), ["reward"], strict=strict)

    # ------------------------------------------------------------------ files
    def save(self, path) -> None:
        """Write a netCDF file atomically
        (:func:`~bayesirl.posterior.files.atomic_write`: the file gets the umask's
        permissions, as any other output)."""
        data = self.to_arviz()
        atomic_write(path, lambda tmp: data.to_netcdf(tmp))

    @classmethod
    def load(cls, path, features: Callable | None = None,
             reward_features: Callable | None = None) -> ContinuousPosterior:
        """Read a posterior written by :meth:`save`. A model with a user's feature map (not
        saved) needs it again as ``features`` (the Q-function's) or ``reward_features``."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no posterior file at {path}")
        try:
            idata = load_netcdf(path)
        except Exception as e:  # h5py/netCDF raise many types for a foreign file
            raise ValueError(f"{path} is not a readable netCDF posterior file ({e})") from e
        post = getattr(idata, "posterior", None)
        if post is None or post.attrs.get("bayesirl_format") != _FORMAT:
            raise ValueError(f"{path} is not a bayesirl continuous posterior (expected "
                             f"attribute bayesirl_format={_FORMAT!r})")
        attrs = post.attrs
        dtype = torch.as_tensor(post["w"].values[..., :0]).dtype  # the fitted data's, as saved

        def tensor(x, dt=dtype):
            return torch.as_tensor(np.asarray(x)).to(dt)

        ob = idata.observed_data
        data = Trajectories(tensor(ob["obs"].values), tensor(ob["actions"].values, torch.long),
                            tensor(ob["next_obs"].values), tensor(ob["terminals"].values,
                                                                 torch.bool),
                            tensor(ob["mask"].values, torch.bool), int(attrs["n_actions"]),
                            tensor(ob["env_rewards"].values) if "env_rewards" in ob else None)
        spec = json.loads(attrs["q_function"])
        if spec is None:
            if features is None:
                raise ValueError(f"{path} was fitted with a user's feature map, which is not "
                                 "saved: pass it again as load(path, features=...)")
            settings = json.loads(attrs["settings"])
            hidden = tuple(settings.get("model", {}).get("hidden", ()))
            n_features = features(data.transitions().obs[:1]).shape[1]
            model = settings.get("model", {})
            q_function = QFunction(features, n_features, data.n_actions, hidden,
                                   float(model.get("weight_scale", 1.0)),
                                   model.get("level_scale"), skip_scale=model.get("skip_scale"),
                                   fan_in=bool(model.get("fan_in", True)))
        else:
            q_function = QFunction.from_spec(spec, dtype)
        n_saved = post["w"].shape[-1]
        if q_function.n_params != n_saved:
            raise ValueError(f"{path} holds {n_saved} weights, but its Q-function with these "
                             f"features has {q_function.n_params} "
                             f"({q_function.n_features} features): pass the feature map it "
                             "was fitted with")
        if "linearised_at" in attrs:
            q_function = dataclasses.replace(
                q_function, linearised_at=tensor(np.atleast_1d(attrs["linearised_at"])))
        encoder = None
        if "encoder" in attrs:
            state = {k: torch.tensor(v, dtype=dtype) for k, v in
                     json.loads(attrs["encoder"]).items()}
            F, A = q_function.n_features, data.n_actions
            encoder = torch.nn.Sequential(torch.nn.Linear(F, 64), torch.nn.Tanh(),
                                          torch.nn.Linear(64, 2 * A)).to(dtype)
            encoder.load_state_dict(state)
        log_lik = (tensor(idata.log_likelihood["actions"].values)
                   if hasattr(idata, "log_likelihood") else None)
        stats = ({k: torch.as_tensor(idata.sample_stats[k].values)
                  for k in idata.sample_stats.data_vars}
                 if hasattr(idata, "sample_stats") else {})
        extra = {"elbo": list(np.atleast_1d(attrs["elbo"]))} if "elbo" in attrs else {}
        if hasattr(idata, "constant_data"):
            extra.update(read_fit_extras(idata.constant_data, tensor))
        prior_spec = json.loads(attrs.get("reward_prior", "null"))
        theta = ({"theta_mean": tensor(post["theta_mean"].values),
                  "theta_chol": tensor(idata.constant_data["theta_chol"].values)}
                 if "theta_mean" in post else {})
        return cls(q_function, data, {"w": tensor(post["w"].values)},
                   tensor(post["reward"].values), log_lik, discount=float(attrs["discount"]),
                   likelihood=str(attrs["likelihood"]), rationality=float(attrs["rationality"]),
                   method=str(attrs["method"]), settings=json.loads(attrs["settings"]),
                   sample_stats=stats, extra=extra, encoder=encoder,
                   incomplete=bool(attrs["incomplete"]),
                   reward_prior=None if prior_spec is None
                   else RewardPrior.from_spec(prior_spec, dtype, reward_features), **theta)

    def __repr__(self) -> str:
        flag = ", incomplete" if self.incomplete else ""
        return (f"ContinuousPosterior(method={self.method!r}, chains={self.num_chains}, "
                f"draws={self.num_draws}, weights={self.params['w'].shape[-1]}, "
                f"transitions={self.rewards.shape[-1]}{flag})")


class PosteriorPolicy:
    """An apprentice policy from a :class:`ContinuousPosterior`: ``policy(obs) -> action``.

    ``kind``: ``"mean"`` acts on the posterior mean ``E[Q_w(s, .)]``; ``"predictive"`` on the
    posterior predictive ``E[softmax(beta Q_w(s, .))]``; ``"thompson"`` on one draw of ``w``,
    redrawn at each :meth:`reset` (``rollout`` calls it at every episode start). ``greedy``
    takes the best action; otherwise actions are sampled (``softmax(beta Q)`` for ``"mean"``
    and ``"thompson"``) from a generator seeded ``seed`` (and reseeded by :meth:`reset`).
    """

    def __init__(self, posterior: ContinuousPosterior, kind: str = "mean", greedy: bool = True,
                 seed: int = 0):
        self.posterior = posterior
        self.kind = check_choice("kind", kind, POLICIES)
        self.greedy = check_bool("greedy", greedy)
        self._rng = np.random.default_rng(check_int("seed", seed, low=0))
        w = posterior.samples["w"]
        linear = kind == "mean" and posterior.q_function.linear_in_weights
        self._w = w.mean(0, keepdim=True) if linear else w  # E[Q_w] = Q_E[w]
        self._draw = None
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        """Start an episode: reseed (when ``seed`` is given) and, for Thompson sampling, draw
        the episode's weights."""
        if seed is not None:
            self._rng = np.random.default_rng(check_int("seed", seed, low=0))
        if self.kind == "thompson":
            self._draw = self._w[int(self._rng.integers(self._w.shape[0]))][None]

    def probs(self, obs) -> np.ndarray:
        """``(A,)`` action probabilities at one observation."""
        q = self._q(obs)
        beta = self.posterior.rationality
        if self.kind == "predictive":
            return _np(torch.softmax(beta * q, -1).mean(0))
        return _np(torch.softmax(beta * q.mean(0), -1))

    def _q(self, obs) -> torch.Tensor:
        post = self.posterior
        x = post.data.query_obs("obs", obs)
        if x.shape[0] != 1:
            raise ValueError(f"a policy acts on one observation at a time, got {x.shape[0]}; "
                             "use action_probs for many")
        w = self._draw if self.kind == "thompson" else self._w
        with torch.no_grad():
            return post.q_function.apply(w, post.q_function.features(x))[:, 0]  # (draws, A)

    def __call__(self, obs) -> int:
        if self.greedy and self.kind != "predictive":
            return int(self._q(obs).mean(0).argmax())
        p = self.probs(obs)
        if self.greedy:
            return int(p.argmax())
        return int(self._rng.choice(len(p), p=p / p.sum()))


def credible_band(draws: torch.Tensor, prob: float) -> RewardBand:
    """Mean and equal-tailed ``prob`` band over the draws of ``draws: (draws, M)``; the band
    is :func:`~bayesirl.posterior.bands.equal_tailed_interval`."""
    lo, hi = equal_tailed_interval(draws, prob)
    return RewardBand(draws.mean(0), lo, hi)


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


QValueTarget.posterior_class = ContinuousPosterior  # the target builds this from its draws
