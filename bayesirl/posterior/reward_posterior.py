"""RewardPosterior: draws of reward parameters and rewards, with ArviZ and netCDF round trips.

Draws are kept per chain, ``(chains, draws, ...)``; the user-facing accessors flatten the chains:
``post.samples["theta"]`` is ``(chains * draws, d)`` and ``post.reward()`` is
``(chains * draws, S, A)``. Rewards are stored alongside the parameters, so a loaded posterior
(or one built with :meth:`RewardPosterior.from_draws` from any sampler's output) supports every
reward-level tool without the reward model.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from bayesirl._validation import SEED_MAX, as_tensor, check_int, check_seed
from bayesirl.core.demos import Demonstrations, rollouts
from bayesirl.core.mdp import TabularMDP
from bayesirl.model.likelihood import (
    action_log_probs,
    check_likelihood,
    check_rationality,
    demo_log_likelihood,
)
from bayesirl.planning.bellman import _check_mdp, broadcast_reward
from bayesirl.planning.buffers import DRAWS_PER_PLAN
from bayesirl.posterior.arviz_io import (
    az,
    check_var_names,
    from_groups,
    load_netcdf,
    read_fit_extras,
    write_fit_extras,
)
from bayesirl.posterior.bands import equal_tailed_interval
from bayesirl.posterior.diagnostics import check_convergence
from bayesirl.posterior.files import atomic_write

__all__ = ["RewardPosterior", "expert_model", "require_draws"]

_FORMAT = "bayesirl.RewardPosterior/1"
#: attributes of the posterior group that every saved posterior has
_ATTRS = ("bayesirl_format", "method", "settings", "incomplete", "mdp_fingerprint",
          "param_dims", "param_coords")


def require_draws(n: int, what: str, at_least: int = 2, *, method: str | None = None,
                  per_chain: bool = False) -> None:
    """The one rule for tools that need posterior draws, not one point: raise a ValueError
    naming ``what`` when there are fewer than ``at_least`` draws (``n``; draws per chain with
    ``per_chain``). A spread, a quantile, a trace or an information gain over one draw (a MAP
    fit) would be zero or meaningless, not an answer. ``method`` names what made the draws."""
    if n >= at_least:
        return
    unit = "draws per chain" if per_chain else "posterior draws"
    got = f"the method={method!r} posterior has {n}" if method else f"got {n}"
    hint = ("; a MAP fit is one point estimate: use method='laplace', 'svi' or 'nuts' for draws"
            if method == "map" else "")
    raise ValueError(f"{what} needs at least {at_least} {unit}, {got}{hint}")


def expert_model(posterior) -> tuple[str, torch.Tensor | None]:
    """The expert a posterior was inferred under, for the tools that score or plan with its
    own expert (the decision tools' action probabilities, the held-out log-likelihood): its
    likelihood, ``"soft"`` or ``"boltzmann"`` (``settings["likelihood"]``; ``"soft"`` where it
    records none), and its rationality as a detached tensor, ``(D,)`` draws when inferred or
    the fixed value ``()``, None where it has none (then the expert's is 1). Rewards given as
    a bare tensor record neither: ``("soft", None)``."""
    settings = getattr(posterior, "settings", None) or {}
    beta = getattr(posterior, "rationality", None)
    return (settings.get("likelihood", "soft"),
            None if beta is None else torch.as_tensor(beta).detach())


def _chunked(fn, x, *rest):
    """Apply ``fn`` over the leading dim of ``x`` (and ``rest``) in chunks of
    :data:`~bayesirl.planning.buffers.DRAWS_PER_PLAN` reward draws; concatenate."""
    n = DRAWS_PER_PLAN
    outs = [fn(x[i:i + n], *(r[i:i + n] for r in rest)) for i in range(0, x.shape[0], n)]
    return torch.cat(outs)


class ChainDraws:
    """The per-chain draw accessors that every posterior of rewards shares.

    A subclass stores ``params``, a dict of site draws ``(chains, draws, ...)``, and
    ``rewards``, reward draws ``(chains, draws, *event)`` (``event`` is ``(S, A)`` for a tabular
    posterior, ``(M,)`` rewards at the data's transitions for a continuous one). Draws stay per
    chain so that diagnostics see the chains; these accessors flatten them, in chain-major
    order, for every tool that only wants draws.
    """

    params: dict[str, torch.Tensor]
    rewards: torch.Tensor

    @property
    def num_chains(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_draws(self) -> int:
        """Draws per chain."""
        return self.rewards.shape[1]

    @property
    def samples(self) -> dict[str, torch.Tensor]:
        """Parameter draws with chains flattened: ``(chains * draws, ...)`` per site."""
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.params.items()}

    def reward(self) -> torch.Tensor:
        """Reward draws with chains flattened, ``(chains * draws, *event)``: ``(chains * draws,
        S, A)`` for a tabular posterior, ``(chains * draws, M)`` for a continuous one."""
        return self.rewards.reshape(-1, *self.rewards.shape[2:])

    def mean_reward(self) -> torch.Tensor:
        """Posterior mean reward, ``event``-shaped: ``(S, A)`` or ``(M,)``."""
        return self.reward().mean(0)

    def require_draws(self, what: str, at_least: int = 2) -> None:
        """Raise a ValueError naming ``what`` (a tool that needs a spread of draws) when this
        posterior has fewer than ``at_least`` draws, e.g. a MAP fit (:func:`require_draws`)."""
        require_draws(self.num_chains * self.num_draws, what, at_least,
                      method=getattr(self, "method", None))


class RewardPosterior(ChainDraws):
    """Posterior draws over rewards.

    Attributes:
        mdp: the MDP (None for a loaded posterior given no ``mdp``).
        rewards: ``(chains, draws, S, A)`` reward draws.
        params: dict of parameter draws ``(chains, draws, ...)`` per site.
        log_lik: ``(chains, draws, N)`` pointwise log-likelihood, or None.
        demos: the demonstrations conditioned on, or None.
        method, settings: how the draws were made; ``incomplete`` marks an interrupted run.
        extra: what a method adds: ``"elbo"`` (SVI, a list per step); for MAP and Laplace,
            ``"standard_errors"`` (site -> tensor of the site's shape, in the parameter's own
            units), ``"covariance"`` ``(d, d)`` of the unconstrained coordinates and
            ``"coordinates"`` (their ``d`` names). These survive :meth:`save` and :meth:`load`.
    """

    def __init__(self, mdp, rewards, params=None, log_lik=None, demos=None, method="draws",
                 settings=None, sample_stats=None, extra=None, incomplete=False, dims=None,
                 coords=None, fingerprint=None):
        self.mdp = mdp
        self.rewards = rewards
        self.params = dict(params or {})
        self.log_lik = log_lik
        self.demos = demos
        self.method = method
        self.settings = dict(settings or {})
        self.sample_stats = dict(sample_stats or {})
        self.extra = dict(extra or {})
        self.incomplete = bool(incomplete)
        self.dims = dict(dims or {})
        self.coords = dict(coords or {})
        self.fingerprint = fingerprint or (mdp.fingerprint() if mdp is not None else None)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(cls, target, params, method, settings, sample_stats=None, extra=None,
                    incomplete=False):
        """Build from parameter draws ``(chains, draws, ...)`` of an inference ``Target``."""
        mdp = target.mdp
        C, D = next(iter(params.values())).shape[:2]
        flat = {k: v.reshape(C * D, *v.shape[2:]) for k, v in params.items()}
        names = list(flat)
        with torch.no_grad():
            def reward_of(*vals):
                params = dict(zip(names, vals, strict=True))
                return broadcast_reward(mdp, target.reward_model.reward(params))

            def loglik_of(*vals):
                return target.log_likelihood(dict(zip(names, vals, strict=True)))

            vals = [flat[k] for k in names]
            rewards = _chunked(reward_of, *vals)
            log_lik = _chunked(loglik_of, *vals)
        dims = dict(target.reward_model.dims)
        if "rationality" in params:
            dims["rationality"] = ()
        return cls(mdp, rewards.reshape(C, D, *rewards.shape[1:]), params,
                   log_lik.reshape(C, D, -1), target.demos, method, settings, sample_stats,
                   extra, incomplete, dims, target.reward_model.coords(mdp))

    @classmethod
    def from_draws(cls, mdp: TabularMDP, reward_draws, demos: Demonstrations | None = None,
                   likelihood: str = "soft", rationality: float = 1.0) -> RewardPosterior:
        """A posterior from explicit reward draws ``(draws, S)`` or ``(draws, S, A)``.

        Any sampler's output works; with ``demos`` the pointwise log-likelihood is computed
        (under ``likelihood`` and ``rationality``, a fixed number > 0) so LOO and predictive
        checks apply.
        """
        _check_mdp(mdp)
        if demos is not None and not isinstance(demos, Demonstrations):
            raise TypeError(f"demos must be Demonstrations or None, got {type(demos).__name__}")
        likelihood = check_likelihood(likelihood)
        checked = check_rationality(rationality)
        if isinstance(checked, torch.distributions.Distribution):
            raise TypeError("rationality must be a number > 0 here (reward draws carry no "
                            f"rationality draws), got {type(rationality).__name__}")
        rationality = checked  # a float (np.float32(2.0) too): settings keep its repr
        r = as_tensor("reward_draws", reward_draws, mdp.dtype, mdp.device)
        S, A = mdp.n_states, mdp.n_actions
        if r.dim() not in (2, 3) or r.shape[1] != S or (r.dim() == 3 and r.shape[2] != A) or (
                r.shape[0] < 1):
            raise ValueError(f"reward_draws must have shape (draws, {S}) or (draws, {S}, {A}), "
                             f"got {tuple(r.shape)}")
        if not torch.isfinite(r).all():
            raise ValueError("reward_draws contains non-finite values")
        if r.dim() == 2:  # (draws, S): explicit, as broadcast_reward reads (S, S) as (S, A)
            r = r.unsqueeze(-1).expand(-1, S, A)
        rewards = r.unsqueeze(0)
        log_lik = None
        if demos is not None:
            demos.validate(mdp)
            log_lik = _chunked(lambda x: demo_log_likelihood(mdp, demos, x, likelihood,
                                                             rationality), rewards[0])[None]
        return cls(mdp, rewards, log_lik=log_lik, demos=demos,
                   settings={"likelihood": likelihood, "rationality": repr(rationality)})

    # ------------------------------------------------------------------ accessors
    def credible_interval(self, prob: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Equal-tailed ``prob`` interval of the reward: ``(lower, upper)``, each ``(S, A)``
        (:func:`~bayesirl.posterior.bands.equal_tailed_interval` over the draws); a ValueError
        for a posterior of one draw (a MAP fit), whose interval would have width 0."""
        self.require_draws("credible_interval()")
        return equal_tailed_interval(self.reward(), prob)

    def _need_mdp(self, what):
        if self.mdp is None:
            raise ValueError(f"{what} needs the MDP: load with RewardPosterior.load(path, mdp)")
        return self.mdp

    @property
    def rationality(self) -> torch.Tensor:
        """The expert's rationality beta per draw, ``(chains * draws,)``, aligned with
        :meth:`reward`: the inferred draws (``samples["rationality"]``) when the likelihood had
        a prior on it, otherwise the fixed value of the run repeated."""
        if "rationality" in self.params:
            return self.params["rationality"].reshape(-1)
        return torch.full((self.reward().shape[0],), float(self.settings.get("rationality",
                                                                             "1.0")),
                          dtype=self.rewards.dtype, device=self.rewards.device)

    def policy(self) -> torch.Tensor:
        """Posterior-averaged expert policy ``E[pi | demos]``: ``(T, S, A)`` or ``(S, A)``."""
        mdp = self._need_mdp("policy()")
        likelihood = self.settings.get("likelihood", "soft")
        with torch.no_grad():
            probs = _chunked(lambda r, b: action_log_probs(mdp, r, likelihood, b).exp(),
                             self.reward(), self.rationality)
        return probs.mean(0)

    def predictive(self, n: int, seed: int = 0, length: int | None = None) -> Demonstrations:
        """``n`` posterior-predictive demonstrations: each from the expert policy of a random
        posterior draw (drawn with ``seed``, an integer in ``[0, 2**32)`` as ``infer`` takes;
        demonstration ``j`` is rolled out with the seed ``seed * 100_003 + j``, which stays far
        below the ``2**64`` a ``torch.Generator`` takes)."""
        mdp = self._need_mdp("predictive()")
        n = check_int("n", n)
        seed = check_seed("seed", seed, SEED_MAX)
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(self.reward().shape[0], (n,), generator=g)
        likelihood = self.settings.get("likelihood", "soft")
        trajs = []
        for j, i in enumerate(idx.tolist()):
            with torch.no_grad():
                pi = action_log_probs(mdp, self.reward()[i], likelihood,
                                      self.rationality[i]).exp()
            d = rollouts(mdp, pi, 1, seed=seed * 100_003 + j, length=length)
            trajs.append(d)
        return _concat(trajs)

    # ------------------------------------------------------------------ ArviZ
    def to_arviz(self):
        """ArviZ data: ``arviz.InferenceData`` on ArviZ 0.x, ``xarray.DataTree`` on ArviZ >= 1.0
        (the same groups, variables, dims and coords either way; both go to any ``az.*``).

        Groups: posterior (the parameter sites and ``reward``, dims ``(chain, draw, ...)``
        named like ``feature``, ``state``, ``action``, with coords), sample_stats (MCMC only),
        log_likelihood (site ``actions``, one value per demonstration: ``(chain, draw, demo)``,
        for ``az.loo`` and ``az.compare``), observed_data (the demonstrations), constant_data
        (the standard errors ``standard_error_<site>`` and the ``covariance`` of a MAP or
        Laplace fit, when :attr:`extra` has them) and the settings as attributes of the
        posterior group."""
        coords = self._all_coords()
        posterior = {k: v.detach().cpu().numpy() for k, v in self.params.items()}
        posterior["reward"] = self.rewards.detach().cpu().numpy()
        post_dims = {k: list(v) for k, v in self.dims.items()}
        post_dims["reward"] = ["state", "action"]
        groups = {"posterior": posterior}
        dims = {"posterior": post_dims}
        if self.log_lik is not None:
            groups["log_likelihood"] = {"actions": self.log_lik.detach().cpu().numpy()}
            dims["log_likelihood"] = {"actions": ["demo"]}
        if self.sample_stats:
            groups["sample_stats"] = {k: v.cpu().numpy() for k, v in self.sample_stats.items()}
        if self.demos is not None:  # "actions" is (demo, step) here, (demo,) in log_likelihood
            observed = {k: getattr(self.demos, k).cpu().numpy()
                        for k in ("states", "actions", "mask")}
            dims["observed_data"] = {k: ["demo", "step"] for k in observed}
            if self.demos.final_states is not None:
                observed["final_states"] = self.demos.final_states.cpu().numpy()
                dims["observed_data"]["final_states"] = ["demo"]
            groups["observed_data"] = observed
        attrs = {"bayesirl_format": _FORMAT, "method": self.method,
                 "settings": json.dumps(self.settings), "incomplete": int(self.incomplete),
                 "mdp_fingerprint": self.fingerprint or "",
                 "param_dims": json.dumps(self.dims),
                 "param_coords": json.dumps(self.coords)}
        if "elbo" in self.extra:
            attrs["elbo"] = np.asarray(self.extra["elbo"], dtype=float)
        constant, constant_dims, constant_coords = write_fit_extras(self.extra, self.dims)
        for name, (values, value_dims) in self._constant_data().items():
            constant[name], constant_dims[name] = values, value_dims
        if constant:
            groups["constant_data"] = constant
            dims["constant_data"] = constant_dims
            coords.update(constant_coords)
        return from_groups(groups, coords=coords, dims=dims, attrs={"posterior": attrs})

    def _all_coords(self) -> dict[str, list]:
        """Coordinate values of every named dim: states and actions (the MDP's names, else
        indices) and the reward model's (e.g. ``feature``)."""
        S, A = self.rewards.shape[-2:]
        mdp = self.mdp
        return {"state": list(mdp.state_names) if mdp is not None and mdp.state_names
                else list(range(S)),
                "action": list(mdp.action_names) if mdp is not None and mdp.action_names
                else list(range(A)),
                **self.coords}

    def summary(self, var_names=None, **kwargs):
        """A table of the parameters (default: every site but ``reward``), one row a scalar
        component named as ArviZ names it (``theta[cell(0,1)]``).

        Several draws: ArviZ's summary (``az.summary``; keyword arguments go there), with the
        convergence columns (R-hat, ESS) only from two chains on, as R-hat needs two.
        ``var_names`` must name sites of the posterior or ``reward`` (a ValueError lists
        them; ``"~name"`` leaves one out, as in ArviZ). A point
        estimate (MAP, or any single draw): columns ``estimate`` and, where :attr:`extra` has
        ``standard_errors``, ``se``, the standard error in the parameter's units: no sd of a
        single draw, so no NaN columns and no ArviZ warnings.
        """
        point = self.num_chains * self.num_draws == 1
        names = var_names if var_names is not None else (list(self.params) or ["reward"])
        if var_names is not None and (point or kwargs.get("filter_vars") is None):
            names = check_var_names(var_names, [*self.params, "reward"])
        if point:
            return self._point_summary(names)
        if self.num_chains < 2:
            kwargs.setdefault("kind", "stats")
        return az.summary(self.to_arviz(), var_names=names, **kwargs)

    def _point_summary(self, names):
        import pandas as pd

        coords = self._all_coords()
        errors = self.extra.get("standard_errors") or {}
        rows, estimates, ses = [], [], []
        for name in names:
            if name == "reward":
                value, dims = self.rewards[0, 0], ("state", "action")
            else:  # a name of self.params (summary checked var_names)
                value, dims = self.params[name][0, 0], self.dims.get(name, ())
            value = value.detach().cpu().double().numpy()
            se = errors.get(name)
            se = None if se is None else torch.as_tensor(se).detach().cpu().double().numpy()
            if se is not None and se.shape != value.shape:
                raise ValueError(f"extra['standard_errors'][{name!r}] has shape {se.shape}, "
                                 f"expected the site's shape {value.shape}")
            dims = list(dims)[:value.ndim] + [None] * (value.ndim - len(dims))
            for idx in np.ndindex(*value.shape):
                labels = [str(coords[d][i]) if d in coords and i < len(coords[d]) else str(i)
                          for d, i in zip(dims, idx, strict=True)]
                rows.append(f"{name}[{', '.join(labels)}]" if idx else name)
                estimates.append(float(value[idx]))
                ses.append(float(se[idx]) if se is not None else None)
        table = {"estimate": estimates}
        if any(s is not None for s in ses):
            table["se"] = ses
        return pd.DataFrame(table, index=rows)

    def check_convergence(self, strict: bool = False) -> list[str]:
        """Warn (or raise with ``strict``) on R-hat > 1.01, bulk ESS < 400, divergences and
        E-BFMI < 0.3. Returns the problems found."""
        names = list(self.params) or ["reward"]
        return check_convergence(self.to_arviz(), names, strict=strict)

    # ------------------------------------------------------------------ files
    def save(self, path) -> None:
        """Write a netCDF file atomically: a temporary file beside ``path`` (with the
        permissions the umask gives new files), flushed to disk and renamed into place
        (:func:`~bayesirl.posterior.files.atomic_write`)."""
        data = self.to_arviz()
        atomic_write(path, lambda tmp: data.to_netcdf(tmp))

    @classmethod
    def load(cls, path, mdp: TabularMDP | None = None) -> RewardPosterior:
        """Read a posterior written by :meth:`save`; with ``mdp``, check it is the same MDP."""
        if mdp is not None:
            _check_mdp(mdp)
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no posterior file at {path}")
        try:
            idata = load_netcdf(path)
        except Exception as e:  # h5py/netCDF raise many types for a truncated or foreign file
            raise ValueError(f"{path} is not a readable netCDF posterior file ({e})") from e
        post = getattr(idata, "posterior", None)
        if post is None or post.attrs.get("bayesirl_format") != _FORMAT or "reward" not in post:
            raise ValueError(f"{path} is not a bayesirl posterior (expected attribute "
                             f"bayesirl_format={_FORMAT!r} and a 'reward' variable)")
        attrs = post.attrs
        missing = [a for a in _ATTRS if a not in attrs]
        if missing:
            raise ValueError(f"{path} is missing the attribute(s) {', '.join(missing)} of its "
                             "posterior group, expected a file written by RewardPosterior.save")
        try:
            settings, dims, coords = (json.loads(attrs[a]) for a in (
                "settings", "param_dims", "param_coords"))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: an attribute of settings, param_dims, param_coords is "
                             f"not JSON ({e})") from None
        if mdp is not None and attrs["mdp_fingerprint"] and (
                mdp.fingerprint() != attrs["mdp_fingerprint"]):
            raise ValueError(f"{path} was made on a different MDP (fingerprint "
                             f"{attrs['mdp_fingerprint']}, this MDP {mdp.fingerprint()})")
        dtype = mdp.dtype if mdp is not None else torch.float64

        def tensor(x):
            return torch.as_tensor(np.asarray(x)).to(dtype)

        rewards = tensor(post["reward"].values)
        params = {k: tensor(post[k].values) for k in post.data_vars if k != "reward"}
        for name, values in [("reward", rewards), *params.items()]:
            _check_finite(path, name, values)
        log_lik = None
        if hasattr(idata, "log_likelihood"):
            log_lik = tensor(idata.log_likelihood["actions"].values)
        demos = None
        if hasattr(idata, "observed_data"):
            obs = idata.observed_data
            final = obs["final_states"].values if "final_states" in obs else None
            demos = Demonstrations(torch.as_tensor(obs["states"].values),
                                   torch.as_tensor(obs["actions"].values),
                                   torch.as_tensor(obs["mask"].values),
                                   None if final is None else torch.as_tensor(final))
        stats = {}
        if hasattr(idata, "sample_stats"):
            stats = {k: torch.as_tensor(idata.sample_stats[k].values)
                     for k in idata.sample_stats.data_vars}
        extra = {"elbo": list(np.atleast_1d(attrs["elbo"]))} if "elbo" in attrs else {}
        constant = getattr(idata, "constant_data", None)
        if constant is not None:
            extra.update(read_fit_extras(constant, tensor))
        return cls(mdp, rewards, params, log_lik, demos, attrs["method"], settings, stats, extra,
                   bool(attrs["incomplete"]), {k: tuple(v) for k, v in dims.items()}, coords,
                   attrs["mdp_fingerprint"] or None, **cls._from_constant_data(constant))

    def _constant_data(self) -> dict:
        """A subclass's own ``constant_data`` variables, ``{name: (array, dims)}``, which
        :meth:`to_arviz` writes and :meth:`_from_constant_data` reads back (none here)."""
        return {}

    @classmethod
    def _from_constant_data(cls, group) -> dict:
        """Keyword arguments of ``cls`` read from a saved ``constant_data`` group (None when
        the file has none): the inverse of :meth:`_constant_data`."""
        return {}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}{tuple(v.shape[2:])}" for k, v in self.params.items())
        flag = ", incomplete" if self.incomplete else ""
        return (f"RewardPosterior(method={self.method!r}, chains={self.num_chains}, "
                f"draws={self.num_draws}, params=[{params}]{flag})")


def _check_finite(path, name: str, values: torch.Tensor) -> None:
    """Refuse a file whose draws of ``name`` ``(chains, draws, ...)`` are not all finite,
    naming the first bad draw (flattened over chains, as :meth:`RewardPosterior.reward`)."""
    bad = ~torch.isfinite(values.reshape(values.shape[0] * values.shape[1], -1)).all(-1)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        chain, draw = divmod(i, values.shape[1])
        raise ValueError(f"{path}: {name} draw {i} (chain {chain}, draw {draw}) is not finite "
                         f"({int(bad.sum())} of {bad.numel()} draws are not), expected finite "
                         "draws")


def _concat(parts: list[Demonstrations]) -> Demonstrations:
    """Stack single demonstrations of possibly different lengths into one padded set."""
    T = max(p.max_length for p in parts)

    def pad(x):
        return torch.nn.functional.pad(x, (0, T - x.shape[1]))

    final = None if any(p.final_states is None for p in parts) else torch.cat(
        [p.final_states for p in parts])
    return Demonstrations(torch.cat([pad(p.states) for p in parts]),
                          torch.cat([pad(p.actions) for p in parts]),
                          torch.cat([pad(p.mask) for p in parts]), final)
