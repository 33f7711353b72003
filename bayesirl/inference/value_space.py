r"""MCMC in value space: tabular rewards on discounted MDPs (ValueWalk's idea).

Sampling a tabular reward ``r`` on a discounted MDP means solving a Bellman fixed point (and
its adjoint) at every gradient. Bajgar et al. (2024, "Walking the Values in Bayesian Inverse
Reinforcement Learning") sample the values instead: the Bellman equation maps values to rewards
in one step, with no planning. With ``gamma`` the discount,
``E V (s, a) = sum_s' P(s'|s, a) V(s')`` and ``beta`` the rationality:

- soft likelihood (the DP plans on ``beta r``), state reward ``V: (S,)``:
  ``r = (V - logsumexp_a gamma E V) / beta``, ``log pi = log_softmax(gamma E V)``;
  state-action reward ``Q: (S, A)``: ``r = (Q - gamma E logsumexp_a Q) / beta``,
  ``log pi = log_softmax(Q)``;
- Boltzmann likelihood (``pi ∝ exp(beta Q*)``, hard ``Q*``), state reward ``V``:
  ``r = V - gamma max_a E V``, ``log pi = log_softmax(beta gamma E V)``; state-action reward
  ``Q``: ``r = Q - gamma E max_a Q``, ``log pi = log_softmax(beta Q)``.

Each map is a bijection (one Bellman fixed point per reward) whose Jacobian determinant is
``det(I - gamma P_pi)`` (over ``beta^n`` for the soft maps): ``P_pi (S, S)`` moves states
along the expert's soft policy, or along the greedy policy for Boltzmann; ``n`` counts the
parameters, and the ``(SA, SA)`` determinant of the state-action map equals the ``(S, S)`` one
by Sylvester's identity. The density sampled is ``p(r(V)) |det dr/dV| p(demos | V)``, the
reward posterior carried to value space.

Under Boltzmann the log-determinant is constant while the greedy policy is and jumps where it
changes, by amounts comparable to the posterior's own spread, so it cannot be dropped. The
greedy policy changes on hyperplanes in ``V``, so
:class:`~bayesirl.inference.refraction.RefractiveNUTS` integrates the jumps exactly (reflection
and refraction); plain NUTS's step-size adaptation collapses on them, as a jump's energy error
does not shrink with the step. The jump of one state's action is a rank-one change of
``I - gamma P_pi``: the matrix determinant lemma gives it and Sherman-Morrison updates the
inverse, O(S^2) per crossing.

The sampler works on whitened coordinates ``w``, ``V = V0 + L w``: ``V0`` holds the values of
the starting reward (the MAP) and ``L L^T`` inverts the Gauss-Newton precision at ``V0``,
``J^T diag(1 / Var prior) J + Jz^T W Jz`` (``J = dr/dV``; ``z`` the softmax's logits, linear
in ``V``; ``W`` the demonstrated states' softmax covariances, times their visit counts). The
prior correlates neighbouring values strongly, which a diagonal mass matrix could not undo.
Far from the MAP that curvature can be wrong (the Boltzmann posterior is not Gaussian), so
each chain re-whitens during its warmup on its own draws (:meth:`ValueSpaceTarget.rewhitened`,
:func:`bayesirl.inference.mcmc.run_chain`).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import numpy as np
import torch

from bayesirl.inference.map import fit_map
from bayesirl.inference.refraction import ArgmaxRegions
from bayesirl.model.fused import _log_normaliser, _normal, _Potential
from bayesirl.model.rewards import TabularReward
from bayesirl.planning.bellman import _numpy, soft_value_iteration, value_iteration

__all__ = ["ValueSpaceTarget"]

_MAX_STATES = 2048  # a dense (S, S) log-determinant per gradient
_REFRESH = 128       # Sherman-Morrison updates before an inverse is recomputed from scratch
_CACHED_POLICIES = 32


def ineligible(target, method: str = "nuts") -> str | None:
    """Why ``target`` cannot be sampled in value space by ``method`` ("nuts" or "hmc"), or
    None when it can."""
    mdp = target.mdp
    if not isinstance(target.reward_model, TabularReward):
        return (f"the reward model is {type(target.reward_model).__name__}; value space needs "
                "a TabularReward (one parameter per state or state-action pair)")
    if mdp.finite_horizon:
        return ("the MDP is finite-horizon; value space needs a discounted MDP (one value per "
                "state, not per time step)")
    if target.likelihood == "boltzmann" and method != "nuts":
        return ("the likelihood is Boltzmann: the Jacobian determinant det(I - gamma P_pi) "
                "jumps wherever the greedy action changes, which only method='nuts' "
                "integrates across (by refraction), not method='hmc'")
    if isinstance(target.rationality, torch.distributions.Distribution):
        return "the rationality has a prior; value space needs a fixed rationality"
    prior = target.priors["theta"]
    if prior.support is not torch.distributions.constraints.real and not (
            isinstance(prior.support, torch.distributions.constraints.independent)
            and prior.support.base_constraint is torch.distributions.constraints.real):
        return (f"the prior's support is {prior.support}; the Bellman map from values reaches "
                "every real reward, so value space needs a prior on the real line")
    try:
        variance = prior.variance
    except NotImplementedError:
        variance = None
    if variance is None or not torch.isfinite(variance).all():
        return "the prior has no finite variance, which the whitening of value space needs"
    if mdp.n_states > _MAX_STATES:
        return (f"the MDP has {mdp.n_states} states; value space takes a dense log-determinant "
                f"of (S, S) at every gradient, kept to S <= {_MAX_STATES}")
    return None


def _ledoit_wolf(x: torch.Tensor) -> torch.Tensor:
    """Ledoit & Wolf's (2004) covariance of the rows of ``x: (m, n)``: the sample covariance
    shrunk toward ``mu I`` (``mu`` its mean variance) by the weight that minimises the
    estimated Frobenius risk. Returns ``(n, n)``."""
    m, n = x.shape
    xc = x - x.mean(0)
    sample = xc.T @ xc / m
    mu = sample.diagonal().mean()
    d2 = (sample - mu * torch.eye(n, dtype=x.dtype, device=x.device)).square().sum()
    # the mean over draws of ||x_k x_k^T - sample||_F^2, without forming the (m, n, n) terms
    b2 = ((xc.square().sum(1).square().sum() - m * sample.square().sum()) / m ** 2).clamp(
        max=float(d2))
    weight = float(b2 / d2) if float(d2) > 0 else 1.0
    return weight * mu * torch.eye(n, dtype=x.dtype, device=x.device) + (1 - weight) * sample


def _policy_matrix(mdp, pi: torch.Tensor) -> torch.Tensor:
    """``P_pi[s, s'] = sum_a pi(a | s) P(s' | s, a)``: ``pi (S, A) -> (S, S)``, dense."""
    S = mdp.n_states
    rows = torch.arange(S, device=pi.device)[:, None, None] * S
    weights = pi[..., None] * mdp.transition_probs
    out = torch.zeros(S * S, dtype=pi.dtype, device=pi.device)
    out = out.scatter_add(0, (rows + mdp.successors).reshape(-1), weights.reshape(-1))
    return out.reshape(S, S)


class _GreedyLogDet:
    """The jump term ``-log |det(I - gamma P_pi)|`` of the Boltzmann value-space potential,
    for deterministic policies ``pi: (S,)`` (the regions of
    :class:`~bayesirl.inference.refraction.ArgmaxRegions`), with the inverse of ``I - gamma P_pi``
    cached per policy. Switching state ``s`` to action ``a`` changes row ``s`` by
    ``u = -gamma (P(.|s, a) - P(.|s, pi(s)))``: the determinant by the factor
    ``1 + u^T M^-1 e_s`` and the inverse by Sherman-Morrison; an inverse updated
    :data:`_REFRESH` times is recomputed from scratch instead."""

    def __init__(self, mdp):
        self.mdp = mdp
        # copies, not views: pickling for a chain's process moves the tensors' storage
        self.succ = np.array(mdp.successors.cpu().numpy())
        self.prob = np.array(mdp.transition_probs.detach().cpu().numpy(), dtype=np.float64)
        self.gamma = float(mdp.discount)
        self._cache = OrderedDict()  # policy bytes -> (log det, inverse, updates)

    def _entry(self, policy: np.ndarray):
        key = policy.tobytes()
        entry = self._cache.get(key)
        if entry is None:
            S = len(policy)
            pi = np.zeros((S, self.prob.shape[1]))
            pi[np.arange(S), policy] = 1.0
            pm = _policy_matrix(self.mdp, torch.as_tensor(pi, device=self.mdp.device)
                                .to(self.mdp.transition_probs.dtype))
            m = np.eye(S) - self.gamma * pm.cpu().double().numpy()
            entry = (np.linalg.slogdet(m)[1], np.linalg.inv(m), 0)
            self._store(key, entry)
        return entry

    def _store(self, key, entry):
        self._cache[key] = entry
        self._cache.move_to_end(key)
        if len(self._cache) > _CACHED_POLICIES:
            self._cache.popitem(last=False)

    def value(self, policy: np.ndarray) -> float:
        return -float(self._entry(policy)[0])

    def change(self, policy: np.ndarray, s: int, a: int):
        logdet, inv, updates = self._entry(policy)
        new, old = (self.succ[s, a], self.prob[s, a]), (self.succ[s, policy[s]],
                                                        self.prob[s, policy[s]])
        ratio = 1.0 - self.gamma * (new[1] @ inv[new[0], s] - old[1] @ inv[old[0], s])

        def commit():
            switched = policy.copy()
            switched[s] = a
            if updates + 1 < _REFRESH:
                u_inv = -self.gamma * (new[1] @ inv[new[0]] - old[1] @ inv[old[0]])
                self._store(switched.tobytes(), (logdet + math.log(abs(ratio)),
                                                 inv - np.outer(inv[:, s], u_inv / ratio),
                                                 updates + 1))
            return switched

        return -math.log(abs(ratio)), commit


class ValueSpaceTarget:
    """The posterior of a :class:`~bayesirl.inference.target.Target` with a tabular reward and a
    discounted MDP, in whitened value coordinates ``w: (n,)`` (see the module doc).

    Implements :class:`~bayesirl.inference.target.InferenceTarget` (``constrain`` maps
    ``u["w"]: (..., n)`` to the reward target's ``{"theta": (..., S) or (..., S, A)}``, whose
    log-likelihood and posterior are the reward target's),
    :class:`~bayesirl.inference.target.Rewhitening` and
    :class:`~bayesirl.inference.target.Refracting`: ``regions`` is None for the soft
    likelihood; for Boltzmann, the greedy policy's regions that
    :class:`~bayesirl.inference.refraction.RefractiveNUTS` refracts at. ``theta0`` is the reward
    the sampler starts at (the MAP: :meth:`at_map`); check :func:`ineligible` first.
    """

    def __init__(self, target, theta0: torch.Tensor):
        self.reward_target = target
        self.mdp = target.mdp
        self.prior = target.priors["theta"]
        self.shape = tuple(target.reward_model.shape)
        self.state_only = len(self.shape) == 1
        self.beta = float(target.rationality)
        self.gamma = float(self.mdp.discount)
        self.boltzmann = target.likelihood == "boltzmann"
        self.counts = target.demos.counts(self.mdp.n_states, self.mdp.n_actions,
                                          dtype=self.mdp.dtype)        # demonstrated (s, a)
        self.v0 = self._values_of(theta0.detach())
        self.chol = self._whitening()
        self.regions = self._regions() if self.boltzmann else None
        self.fused = self._fused()

    @classmethod
    def at_map(cls, target, map_init: bool = True) -> ValueSpaceTarget:
        """The value-space target of ``target`` whitened at its MAP, found in value space (the
        potential without its Jacobian is the reward posterior's density at the reward of
        ``w``: no planning per gradient); ``map_init=False``: at the prior's centre."""
        sampled = cls(target, target.constrain(target.init_unconstrained())["theta"])
        if map_init:  # the MAP found in value space, whitened there again
            u, _ = fit_map(sampled, sampled.init_unconstrained(), jacobian=False)
            sampled = cls(target, sampled.constrain(u)["theta"])
        return sampled

    # ------------------------------------------------------------ values <-> rewards
    def _values_of(self, theta):
        """The parameters ``V (S,)`` or ``Q (S, A)`` whose Bellman map gives ``theta``."""
        plan = (value_iteration(self.mdp, theta, check=False) if self.boltzmann  # soft: beta r
                else soft_value_iteration(self.mdp, self.beta * theta, check=False))
        return (plan.v if self.state_only else plan.q).detach()

    def _bellman(self, p):
        """``(reward, logits)`` of parameters ``p: (..., S)`` or ``(..., S, A)``: the reward
        of :attr:`shape` and the logits ``(..., S, A)`` whose softmax is the expert's
        policy."""
        backup = ((lambda q: q.max(-1).values) if self.boltzmann
                  else (lambda q: torch.logsumexp(q, -1)))
        if self.state_only:
            future = self.gamma * self.mdp.expected_next(p)                 # (..., S, A)
            if self.boltzmann:
                return p - backup(future), self.beta * future
            return (p - backup(future)) / self.beta, future
        reward = p - self.gamma * self.mdp.expected_next(backup(p))
        return (reward, self.beta * p) if self.boltzmann else (reward / self.beta, p)

    def _regions(self) -> ArgmaxRegions:
        """The greedy policy's regions in ``w``: its scores are ``E V`` (state reward) or
        ``Q``, affine in ``w``. Actions whose transitions copy a lower-numbered action's score
        the same by construction, so they are left out."""
        if self.state_only:
            g0 = self.mdp.expected_next(self.v0).cpu().double()                  # (S, A)
            K = self.mdp.expected_next(self.chol.T).cpu().double().permute(1, 2, 0)
            P = self.mdp.transition_matrix().cpu()                              # (S, A, S)
            # equal up to rounding: 0.9 = 1 - 0.1 and 0.8 + 0.1 differ in the last bit
            same = ((P[:, :, None] - P[:, None]).abs() <= 1e-12).all(-1)          # (S, A, A)
            copies = same.tril(-1).any(-1)                                      # (S, A)
            valid = ~copies
        else:
            g0 = self.v0.cpu().double()
            K = self.chol.detach().cpu().double().reshape(*self.shape, -1)
            valid = torch.ones(self.shape, dtype=torch.bool)
        return ArgmaxRegions(g0.numpy(), K.numpy(), valid.numpy(), _GreedyLogDet(self.mdp))

    def _fused(self) -> _FusedBoltzmann | None:
        """The Boltzmann potential in NumPy (:class:`_FusedBoltzmann`), or None where the
        potential stays on the autograd path: the soft likelihood (plain NUTS), a prior other
        than Normal, an MDP off the CPU."""
        normal = _normal(self.prior)
        if not self.boltzmann or normal is None or self.v0.device.type != "cpu":
            return None
        return _FusedBoltzmann(self, *normal)

    def _log_det(self, pi):
        """``log |det d reward / d p|`` where the expert's policy is ``pi: (S, A)``."""
        eye = torch.eye(self.mdp.n_states, dtype=pi.dtype, device=pi.device)
        logdet = torch.linalg.slogdet(eye - self.gamma * _policy_matrix(self.mdp, pi))[1]
        return logdet - math.prod(self.shape) * math.log(self.beta)

    def _whitening(self):
        """Cholesky factor ``L (n, n)`` of the inverse Gauss-Newton precision at ``v0``."""
        p0 = self.v0.reshape(-1)
        n = p0.numel()

        def reward(p):
            return self._bellman(p.reshape(self.v0.shape))[0].reshape(-1)

        def logits(p):
            return self._bellman(p.reshape(self.v0.shape))[1].reshape(-1)

        jr = torch.autograd.functional.jacobian(reward, p0)                  # (n, n)
        jz = torch.autograd.functional.jacobian(logits, p0)                 # (S A, n)
        var = self.prior.variance.expand(self.shape).reshape(-1)
        pi = torch.softmax(logits(p0).reshape(self.counts.shape), -1)
        c = self.counts.sum(-1, keepdim=True)
        A = pi.shape[-1]
        w = c[..., None] * (torch.diag_embed(pi) - pi[..., :, None] * pi[..., None, :])
        jz = jz.reshape(-1, A, n)                                           # (S, A, n)
        precision = jr.T @ (jr / var[:, None]) + torch.einsum("san,sab,sbm->nm", jz, w, jz)
        precision = 0.5 * (precision + precision.T)
        cov = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        return torch.linalg.cholesky(0.5 * (cov + cov.T))

    def rewhitened(self, w: torch.Tensor) -> ValueSpaceTarget:
        """The same posterior whitened by draws ``w: (m, n)`` instead of the Gauss-Newton
        approximation at the MAP: centred at their mean, ``L`` the Cholesky factor of their
        covariance shrunk toward a multiple of the identity (Ledoit-Wolf, in ``w``; ``m``
        draws of ``n`` coordinates estimate a covariance badly when ``m`` is not much larger
        than ``n``, and the shrinkage weighs that). Far from the MAP the Gauss-Newton
        curvature misjudges the posterior, whose draws may then have variances far from 1 in
        the MAP's whitened coordinates."""
        mean, cov = w.mean(0), _ledoit_wolf(w)
        new = copy.copy(self)
        new.v0 = self.params_of(mean)
        new.chol = self.chol @ torch.linalg.cholesky(cov)
        new.regions = new._regions() if self.boltzmann else None
        new.fused = new._fused()
        return new

    def whiten(self, params: torch.Tensor) -> torch.Tensor:
        """Whitened coordinates ``(..., n)`` of values ``params: (..., S)`` or
        ``(..., S, A)``: the inverse of :meth:`params_of`."""
        p = (params - self.v0).reshape(*params.shape[:params.dim() - self.v0.dim()], -1, 1)
        return torch.linalg.solve_triangular(self.chol, p, upper=False).squeeze(-1)

    # ------------------------------------------------------------ what MCMC uses
    def params_of(self, w):
        """Values ``(..., S)`` or ``(..., S, A)`` of whitened coordinates ``w: (..., n)``."""
        p = self.v0.reshape(-1) + w @ self.chol.T
        return p.reshape(*w.shape[:-1], *self.v0.shape)

    def constrain(self, u):
        return {"theta": self._bellman(self.params_of(u["w"]))[0]}

    def init_unconstrained(self):
        return {"w": torch.zeros(self.chol.shape[0], dtype=self.v0.dtype,
                                 device=self.v0.device)}

    def potential(self, u, jacobian: bool = True) -> torch.Tensor:
        """``-log`` of the value-space density at ``u["w"]: (n,)``, up to the constant
        ``log det L``. Under Boltzmann the log-determinant is the region's constant.
        ``jacobian=False`` leaves it out: the reward posterior's density at the reward of
        ``w``, whose maximum in ``w`` is the MAP reward (no planning per gradient)."""
        w = u["w"]
        if jacobian and self.fused is not None and w.dim() == 1 and w.dtype == self.v0.dtype:
            return _Potential.apply(w, self.fused, torch.is_grad_enabled() and w.requires_grad)
        reward, logits = self._bellman(self.params_of(w))
        log_pi = torch.log_softmax(logits, -1)
        value = -(self.prior.log_prob(reward).sum() + (self.counts * log_pi).sum())
        if not jacobian:
            return value
        if self.boltzmann:
            region = self.regions.region(w.detach().cpu().double().numpy())
            return value + self.regions.jump.value(region)
        return value - self._log_det(log_pi.exp())

    def log_likelihood(self, params) -> torch.Tensor:
        """``(..., N)``: the reward target's, at reward parameters ``params``."""
        return self.reward_target.log_likelihood(params)

    def make_posterior(self, params, **kwargs):
        """The reward target's posterior of reward draws ``params`` (see
        :meth:`~bayesirl.inference.target.Target.make_posterior`)."""
        return self.reward_target.make_posterior(params, **kwargs)


class _FusedBoltzmann:
    """The Boltzmann value-space potential with a Normal prior as one autograd node
    (:class:`~bayesirl.model.fused._Potential`): :meth:`value_and_grad` in NumPy on copies of
    the arrays it needs (copies: pickling for a chain's process moves tensor storage)."""

    def __init__(self, target: ValueSpaceTarget, loc, scale):
        counts = _numpy(target.counts).copy()
        self.regions, self.state_only = target.regions, target.state_only
        self.gamma, self.beta = target.gamma, target.beta
        self.loc, self.inv_var, self.log_norm = loc, 1.0 / scale ** 2, _log_normaliser(scale)
        self.v0, self.chol = _numpy(target.v0).copy(), _numpy(target.chol).copy()
        self.succ = _numpy(target.mdp.successors).copy()
        self.prob = _numpy(target.mdp.transition_probs.to(target.v0.dtype)).copy()
        self.counts, self.visits = counts, counts.sum(-1, keepdims=True)

    def value_and_grad(self, w: np.ndarray, grad: bool):
        """The Boltzmann potential at ``w: (n,)`` and its gradient ``(n,)`` (None without
        ``grad``) in NumPy, in the region :attr:`regions` assigns ``w``: there the reward is
        linear in the values, so with ``a*`` the greedy action, ``r = p - gamma E p[a*]``
        (state reward) or ``Q - gamma E Q[., a*]``, and
        ``dU/dp = (r - mu) / sigma^2`` pulled back through that linear map
        ``+ beta (n_s pi - counts)`` pushed through the logits. Equals
        :meth:`ValueSpaceTarget.potential` and its autograd gradient (tests/test_value_space.py)
        at a fraction of the cost."""
        gamma, beta = self.gamma, self.beta
        succ, prob = self.succ, self.prob
        S = succ.shape[0]
        rows = np.arange(S)
        region = self.regions.region(w)                                    # (S,)
        p = self.v0 + (self.chol @ w).reshape(self.v0.shape)

        def push(x):  # E^T x: (S, A) -> (S,), mass moved to next states
            return np.bincount(succ.reshape(-1), (prob * x[..., None]).reshape(-1), S)

        if self.state_only:
            ev = (prob * p[succ]).sum(-1)                                  # (S, A)
            reward, logits = p - gamma * ev[rows, region], beta * gamma * ev
        else:
            best = p[rows, region]                                         # (S,)
            reward, logits = p - gamma * (prob * best[succ]).sum(-1), beta * p
        z = logits - logits.max(-1, keepdims=True)
        log_pi = z - np.log(np.exp(z).sum(-1, keepdims=True))
        err = reward - self.loc
        value = (0.5 * float((err * err * self.inv_var).sum()) + self.log_norm
                 - float((self.counts * log_pi).sum()) + self.regions.jump.value(region))
        if not grad:
            return value, None
        d_reward = err * self.inv_var
        d_logits = self.visits * np.exp(log_pi) - self.counts             # (S, A)
        if self.state_only:
            d_ev = beta * gamma * d_logits
            d_ev[rows, region] -= gamma * d_reward
            d_p = d_reward + push(d_ev)
        else:
            d_p = d_reward + beta * d_logits
            d_p[rows, region] -= gamma * push(d_reward)
        return value, self.chol.T @ d_p.reshape(-1)
