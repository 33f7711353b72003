"""Reward models: priors over reward parameters and the map from parameters to rewards.

A reward model is a prior ``p(params)`` plus a deterministic map ``params -> reward``:

- :meth:`RewardModel.priors` gives one independent torch distribution per named site;
- :meth:`RewardModel.reward` maps a dict of parameter values with any leading batch shape
  ``(...)`` to a reward ``(..., S)`` (state reward) or ``(..., S, A)``;
- calling the model inside a Pyro model samples every site and returns the reward.

Because the priors are independent and the map is pure, inference can evaluate the joint density
without tracing the Pyro model (see :mod:`bayesirl.inference`), and a posterior can recompute
rewards from saved draws. Each model names the dims of its sites (``dims``) for ArviZ.
"""

from __future__ import annotations

import inspect
import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch.distributions import constraints

from bayesirl._validation import as_tensor, check_int, check_names, positive_ints

__all__ = ["GPReward", "LinearReward", "NeuralReward", "RewardModel", "TabularReward"]


def _check_prior(name: str, prior, shape: tuple[int, ...]) -> dist.Distribution:
    """Expand a scalar (or matching) torch distribution to ``shape`` as one event."""
    if not isinstance(prior, torch.distributions.Distribution):
        raise TypeError(f"{name} must be a torch distribution (e.g. dist.Normal(0., 1.)), "
                        f"got {type(prior).__name__}")
    if prior.event_shape != ():
        raise ValueError(f"{name} must be a univariate distribution (event_shape ()), got "
                         f"event_shape {tuple(prior.event_shape)}")
    batch = tuple(prior.batch_shape)
    if batch not in ((), shape) and batch != shape[-len(batch):]:
        raise ValueError(f"{name} has batch_shape {batch}, expected () or {shape}")
    for attr in ("loc", "scale", "rate", "concentration"):
        value = getattr(prior, attr, None)
        if isinstance(value, torch.Tensor) and not torch.isfinite(value).all():
            raise ValueError(f"{name}.{attr} is {value.tolist()}, expected finite values")
    try:
        supports = prior.arg_constraints
    except NotImplementedError:  # a custom distribution that declares none
        supports = {}
    for attr, support in supports.items():  # validate_args=False skips these checks
        value = getattr(prior, attr, None)
        if (isinstance(value, torch.Tensor) and not constraints.is_dependent(support)
                and not support.check(value).all()):
            want = "> 0" if support is constraints.positive else f"in {support}"
            raise ValueError(f"{name}.{attr} is {value.tolist()}, expected values {want}")
    if not isinstance(prior, TorchDistributionMixin):
        prior = _wrap(prior, name)
    return prior.expand(shape).to_event(len(shape)) if shape else prior


def _wrap(prior: torch.distributions.Distribution, name: str = "prior") -> dist.Distribution:
    """The Pyro distribution of the same class name and density as the plain torch
    distribution ``prior`` (Pyro's ``expand``/``to_event``, ``event_dim``): built from the
    parameters it holds and, where the Pyro constructor needs others, the torch one's
    attributes of those names (``HalfNormal.scale``, ``LogNormal.loc``: properties of a
    transformed distribution); its density is checked at a draw. TypeError naming ``name``
    and saying to use pyro.distributions where there is no such conversion."""
    kind = type(prior).__name__
    advice = (f"; pass {name} as a pyro.distributions distribution (e.g. "
              f"pyro.distributions.{kind}(...) in place of torch.distributions.{kind})")
    cls = getattr(dist, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, TorchDistributionMixin)):
        raise TypeError(f"{name} is a plain torch {kind} with no Pyro counterpart{advice}")
    try:
        params = {k: v for k, v in prior.__dict__.items() if k in prior.arg_constraints}
        for p in inspect.signature(cls.__init__).parameters.values():
            if (p.name not in params and p.name != "self" and p.default is p.empty
                    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)):
                params[p.name] = getattr(prior, p.name)
        wrapped = cls(**params)
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # the caller's RNG untouched
            x = prior.sample()
            same = (wrapped.batch_shape == prior.batch_shape
                    and wrapped.event_shape == prior.event_shape
                    and torch.allclose(wrapped.log_prob(x), prior.log_prob(x), equal_nan=True))
    except (AttributeError, TypeError, ValueError, NotImplementedError) as e:
        raise TypeError(f"{name} is a plain torch {kind} that could not be converted to "
                        f"pyro.distributions.{kind} ({e}){advice}") from None
    if not same:
        raise TypeError(f"{name} is a plain torch {kind} whose pyro.distributions.{kind} "
                        f"counterpart, built from its parameters, has another density{advice}")
    return wrapped


def is_improper(prior: dist.Distribution) -> bool:
    """True for a prior with no normalisable density (``dist.ImproperUniform``)."""
    base = prior
    while isinstance(base, (dist.Independent, dist.ExpandedDistribution)):
        base = base.base_dist
    return isinstance(base, dist.ImproperUniform)


def _unidentified(direction: str, remedy: str) -> ValueError:
    """The error for an improper prior along a direction of the parameters that the likelihood
    cannot see (the soft and Boltzmann policies ignore it): the posterior would be improper."""
    return ValueError(f"prior is improper but {direction}: the likelihood cannot identify it, "
                      f"so the posterior is improper; {remedy}")


class RewardModel:
    """Base class: independent priors on named sites, a pure map to rewards."""

    #: ArviZ dims of each site (after the sample dims), e.g. ``{"theta": ("feature",)}``.
    dims: dict[str, tuple[str, ...]] = {}

    def priors(self) -> dict[str, dist.Distribution]:
        raise NotImplementedError

    def reward(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def coords(self, mdp=None) -> dict[str, list]:
        """Coordinates of the dims in :attr:`dims` (other than state/action); ``mdp`` may
        supply names the model lacks."""
        return {}

    def check(self, mdp) -> None:
        """Raise ValueError when this model does not fit ``mdp`` (called by ``infer``)."""

    def linear_map(self):
        """``(site, phi)`` when the reward is linear in one site, ``reward == phi @ theta``
        with ``phi: (S, d)`` or ``(S, A, d)`` (``phi`` None: ``reward == theta``); None
        otherwise. MCMC then computes the potential's gradient by hand (``bayesirl.model.fused``).
        """
        return None

    def __call__(self) -> torch.Tensor:
        return self.reward({name: pyro.sample(name, prior)
                            for name, prior in self.priors().items()})


def _features(name, features) -> torch.Tensor:
    phi = as_tensor(name, features)  # TypeError for strings, ragged lists, complex values
    if phi.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (S, d) or (S, A, d), got {tuple(phi.shape)}")
    if not torch.isfinite(phi).all():
        raise ValueError(f"{name} contains non-finite values")
    return phi


class LinearReward(RewardModel):
    r"""Linear reward ``r = phi . theta`` with a prior on the weights.

    ``theta`` are *reward* weights: larger ``phi . theta`` is better. The maximum causal entropy
    derivation (Ziebart et al. 2010) writes a cost ``r = -theta^T phi``; flip the sign to compare.

    Args:
        features: ``(S, d)`` state features (a state reward ``(S,)``) or ``(S, A, d)``.
        prior: a univariate torch distribution, applied to each of the d weights (or with
            batch shape ``(d,)``); ``dist.Laplace`` for sparsity. Default ``Normal(0, 1)``.
        feature_names: d names for ArviZ coordinates (default the MDP's, else ``f0..``).

    Site ``theta: (d,)``, dims ``("feature",)``.
    """

    dims = {"theta": ("feature",)}

    def __init__(self, features, prior=None, feature_names=None):
        self.features = _features("features", features)
        d = self.features.shape[-1]
        self.prior = _check_prior("prior", dist.Normal(0.0, 1.0) if prior is None else prior,
                                  (d,))
        self.feature_names = (None if feature_names is None
                              else list(check_names("feature_names", feature_names, d)))

    def priors(self):
        return {"theta": self.prior}

    def reward(self, params):
        theta = params["theta"]
        phi = self.features.to(theta)
        return torch.einsum("...d,sd->...s" if phi.dim() == 2 else "...d,sad->...sa", theta, phi)

    def linear_map(self):
        return "theta", self.features

    def coords(self, mdp=None):
        names = self.feature_names
        if names is None and mdp is not None and mdp.feature_names is not None and (
                mdp.features.shape == self.features.shape
                and torch.equal(mdp.features, self.features.to(mdp.features))):
            names = list(mdp.feature_names)  # the MDP's own features: use its names
        return {"feature": names or [f"f{i}" for i in range(self.features.shape[-1])]}

    def check(self, mdp):
        S, A = mdp.n_states, mdp.n_actions
        if self.features.shape[0] != S or (self.features.dim() == 3
                                           and self.features.shape[1] != A):
            raise ValueError(f"LinearReward features have shape {tuple(self.features.shape)}, "
                             f"but the MDP has S={S} states and A={A} actions")
        if is_improper(self.prior):
            centred = self.features.reshape(-1, self.features.shape[-1])
            centred = centred - centred.mean(0)
            rank = int(torch.linalg.matrix_rank(centred))
            if rank < centred.shape[1]:
                raise _unidentified(
                    "the features have a direction u with phi . u constant over states and "
                    f"actions (centred rank {rank} < {centred.shape[1]})",
                    "use a proper prior or drop the constant direction")


class TabularReward(RewardModel):
    """One reward parameter per state (``n_actions=None``) or per state-action pair.

    Site ``theta: (S,)`` dims ``("state",)``, or ``(S, A)`` dims ``("state", "action")``.
    """

    def __init__(self, n_states: int, n_actions: int | None = None, prior=None):
        n_states = check_int("n_states", n_states)
        n_actions = None if n_actions is None else check_int("n_actions", n_actions)
        self.shape = (n_states,) if n_actions is None else (n_states, n_actions)
        self.prior = _check_prior("prior", dist.Normal(0.0, 1.0) if prior is None else prior,
                                  self.shape)
        self.dims = {"theta": ("state",) if n_actions is None else ("state", "action")}

    def priors(self):
        return {"theta": self.prior}

    def reward(self, params):
        return params["theta"]

    def linear_map(self):
        return "theta", None

    def check(self, mdp):
        want = (mdp.n_states,) if len(self.shape) == 1 else (mdp.n_states, mdp.n_actions)
        if self.shape != want:
            raise ValueError(f"TabularReward has shape {self.shape}, but the MDP needs {want}")
        if is_improper(self.prior):  # a constant added to every reward leaves policies alone
            raise _unidentified(
                f"theta {self.shape} has the direction (1, ..., 1): adding a constant to every "
                "reward leaves the expert's policy unchanged", "use a proper prior "
                "(e.g. dist.Normal(0., 1.))")


class GPReward(RewardModel):
    r"""Gaussian-process prior over state rewards (the idea of GPIRL, Levine et al. 2011).

    ``r = L z`` with ``z ~ N(0, I)`` and ``L L^T = K + jitter I``, the RBF kernel
    ``K_ij = variance * exp(-|x_i - x_j|^2 / (2 lengthscale^2))`` on state coordinates or
    features ``x: (S, D)``. The whitened parameterisation keeps NUTS well conditioned.

    With both hyperparameters fixed, ``L`` is factored once, in float64, at construction
    (a ValueError names ``jitter`` if ``K + jitter I`` is not positive definite) and cast, once
    per dtype and device, to the dtype and device of ``z`` on use; with a prior on either
    hyperparameter it is refactored for each draw's values. :meth:`predict` carries a reward
    to new inputs (transfer to another world).

    Args:
        coords: ``(S, D)`` inputs of the kernel (grid coordinates or state features); constants.
        lengthscale, variance: positive floats (fixed) or priors on positive reals.
        jitter: a finite number >= 0 added to the kernel diagonal; 0 only when no two rows of
            ``coords`` are equal (``K`` is then singular).

    Sites: ``z: (S,)`` dims ``("state",)``; ``lengthscale``, ``variance`` when given priors.
    """

    def __init__(self, coords, lengthscale=1.0, variance=1.0, jitter: float = 1e-6):
        self.x = _features("coords", coords)
        if self.x.dim() != 2:
            raise ValueError(f"coords must have shape (S, D), got {tuple(self.x.shape)}")
        self.hyper = {}
        for name, value in (("lengthscale", lengthscale), ("variance", variance)):
            if isinstance(value, torch.distributions.Distribution):
                if value.support.check(torch.tensor(-1.0)) or not value.support.check(
                        torch.tensor(1.0)):
                    raise ValueError(f"{name} prior must have positive support, got "
                                     f"{value.support}")
                self.hyper[name] = _check_prior(name, value, ())
            elif not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} is {value!r}, expected a number > 0 or a prior")
        if not (isinstance(jitter, (int, float)) and not isinstance(jitter, bool)
                and math.isfinite(jitter) and jitter >= 0):
            raise ValueError(f"jitter is {jitter!r}, expected a finite number >= 0 (added to "
                             "the kernel diagonal, e.g. 1e-6)")
        if jitter == 0:
            _, which, counts = torch.unique(self.x, dim=0, return_inverse=True,
                                            return_counts=True)
            if (counts > 1).any():
                i, j = (which == int((counts > 1).nonzero()[0, 0])).nonzero()[:2, 0].tolist()
                raise ValueError(f"jitter is {jitter!r} but coords rows {i} and {j} are equal, "
                                 "so the kernel matrix is singular: expected jitter > 0 "
                                 "(e.g. 1e-6)")
        self.lengthscale, self.variance, self.jitter = lengthscale, variance, float(jitter)
        S = self.x.shape[0]
        self.dims = {"z": ("state",), **{k: () for k in self.hyper}}
        self._z_prior = dist.Normal(torch.zeros(S), 1.0).to_event(1)
        self._fixed = None if self.hyper else self._fixed_factor()
        self._cast = {}  # (dtype, device) -> self._fixed there

    def __getstate__(self):
        return {**self.__dict__, "_cast": {}}  # per-device copies: rebuilt on first use

    def priors(self):
        return {"z": self._z_prior, **self.hyper}

    @staticmethod
    def _rbf(x1, x2, lengthscale, variance):
        """``(..., n1, n2)`` kernel between ``x1 (n1, D)`` and ``x2 (n2, D)``; the
        hyperparameters are numbers or tensors of batch shape ``(...)``."""
        ls = torch.as_tensor(lengthscale, dtype=x1.dtype, device=x1.device)[..., None, None]
        var = torch.as_tensor(variance, dtype=x1.dtype, device=x1.device)[..., None, None]
        d2 = (x1.unsqueeze(-2) - x2.unsqueeze(-3)).pow(2).sum(-1)
        return var * torch.exp(-0.5 * d2 / ls**2)

    def _covariance(self, lengthscale, variance, like):
        """``K + jitter I`` ``(..., S, S)`` in the dtype and device of ``like``."""
        x = self.x.to(like)
        return self._rbf(x, x, lengthscale, variance) + self.jitter * torch.eye(
            x.shape[0], dtype=like.dtype, device=like.device)

    def _chol(self, lengthscale, variance, like):
        return torch.linalg.cholesky(self._covariance(lengthscale, variance, like))

    def _fixed_factor(self):
        L, info = torch.linalg.cholesky_ex(
            self._covariance(self.lengthscale, self.variance, self.x.detach().double()))
        if info:
            raise ValueError(
                f"jitter is {self.jitter!r}, too small: K + jitter I is not positive definite "
                f"(Cholesky fails at row {int(info) - 1}; lengthscale {self.lengthscale!r}, "
                f"variance {self.variance!r}); expected a larger jitter, e.g. 1e-6 * variance")
        return L.detach()  # coords are constants: no graph kept across calls

    def _factor(self, params, like):
        """``L`` for ``params`` in the dtype and device of ``like``: the cached factor when the
        hyperparameters are fixed (and not overridden in ``params``), else computed."""
        if self._fixed is not None and not {"lengthscale", "variance"} & params.keys():
            key = (like.dtype, like.device)
            if key not in self._cast:
                self._cast[key] = self._fixed.to(dtype=like.dtype, device=like.device)
            return self._cast[key]
        return self._chol(params.get("lengthscale", self.lengthscale),
                          params.get("variance", self.variance), like)

    def reward(self, params):
        z = params["z"]
        return (self._factor(params, z) @ z.unsqueeze(-1)).squeeze(-1)

    def linear_map(self):
        return None if self._fixed is None else ("z", self._fixed)  # r = L z

    def predict(self, params, new_coords) -> torch.Tensor:
        """The GP's conditional mean reward at new inputs, ``(..., S_new)``.

        Given the whitened values ``z`` (the reward ``f = L z`` at the training inputs ``x``),
        the mean at ``new_coords`` ``(S_new, D)`` is ``K(x_new, x) (K + jitter I)^-1 f =
        K(x_new, x) L^-T z``: a learned reward carried to another world whose states have
        inputs ``new_coords``. Batched like :meth:`reward` over the leading dims of
        ``params`` (posterior draws, each with its own hyperparameters when they have priors);
        average over draws for the posterior mean. At the training inputs it gives
        ``f - jitter L^-T z``, the reward up to the jitter.
        """
        x_new = _features("new_coords", new_coords)
        if x_new.dim() != 2 or x_new.shape[1] != self.x.shape[1]:
            raise ValueError(f"new_coords must have shape (S_new, {self.x.shape[1]}) like "
                             f"coords, got {tuple(x_new.shape)}")
        z = params["z"]
        alpha = torch.linalg.solve_triangular(self._factor(params, z).mT, z.unsqueeze(-1),
                                              upper=True)                  # (..., S, 1)
        k = self._rbf(x_new.to(z), self.x.to(z), params.get("lengthscale", self.lengthscale),
                      params.get("variance", self.variance))              # (..., S_new, S)
        return (k @ alpha).squeeze(-1)

    def check(self, mdp):
        if self.x.shape[0] != mdp.n_states:
            raise ValueError(f"GPReward coords have {self.x.shape[0]} rows, but the MDP has "
                             f"{mdp.n_states} states")


class NeuralReward(RewardModel):
    """Bayesian neural network reward on state features: ``phi (S, d) -> r (S,)``.

    A tanh MLP with independent ``Normal(0, prior_scale / sqrt(fan_in))`` priors on every weight
    and ``Normal(0, prior_scale)`` on biases. Sites ``w0, b0, w1, b1, ...``.

    Args:
        features: ``(S, d)`` state features.
        hidden: widths of the hidden layers.
        prior_scale: positive float.
    """

    def __init__(self, features, hidden=(32, 32), prior_scale: float = 1.0):
        self.features = _features("features", features)
        if self.features.dim() != 2:
            raise ValueError("NeuralReward takes state features (S, d), got "
                             f"{tuple(self.features.shape)}")
        if not (isinstance(prior_scale, (int, float)) and math.isfinite(prior_scale)
                and prior_scale > 0):
            raise ValueError(f"prior_scale is {prior_scale!r}, expected a number > 0")
        widths = positive_ints(hidden)
        if widths is None:
            raise ValueError(f"hidden is {hidden!r}, expected positive widths: a sequence of "
                             "ints >= 1, e.g. (32, 32)")
        widths = [self.features.shape[1], *widths, 1]
        self._priors = {}
        self.dims = {}
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            self._priors[f"w{i}"] = _check_prior(
                f"w{i}", dist.Normal(0.0, prior_scale / math.sqrt(n_in)), (n_in, n_out))
            self._priors[f"b{i}"] = _check_prior(f"b{i}", dist.Normal(0.0, prior_scale),
                                                 (n_out,))
            self.dims[f"w{i}"] = (f"w{i}_in", f"w{i}_out")
            self.dims[f"b{i}"] = (f"b{i}_out",)
        self.n_layers = len(widths) - 1

    def priors(self):
        return dict(self._priors)

    def reward(self, params):
        h = self.features.to(params["w0"])
        for i in range(self.n_layers):
            h = h @ params[f"w{i}"] + params[f"b{i}"].unsqueeze(-2)
            if i < self.n_layers - 1:
                h = torch.tanh(h)
        return h.squeeze(-1)

    def check(self, mdp):
        if self.features.shape[0] != mdp.n_states:
            raise ValueError(f"NeuralReward features have {self.features.shape[0]} rows, but "
                             f"the MDP has {mdp.n_states} states")
