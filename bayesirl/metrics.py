"""How good is a learned reward? Expected value difference, EPIC distance, held-out likelihood.

Each metric takes a point reward ``(S,)`` / ``(S, A)``, a batch of rewards ``(..., S, A)``
(e.g. posterior draws), or a posterior object whose ``.reward()`` returns ``(draws, S, A)``
(:class:`~bayesirl.RewardPosterior`); batched inputs give batched outputs. Trailing dims decide:
``(S, A)`` is a state-action reward, otherwise a trailing ``(S,)`` is a state reward.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bayesirl._validation import (
    as_tensor,
    check_choice,
    check_finite,
    check_number,
    first_bad,
    fmt_index,
    is_posterior,
)
from bayesirl.core.demos import Demonstrations
from bayesirl.core.mdp import TabularMDP
from bayesirl.model.likelihood import action_log_probs, check_likelihood
from bayesirl.planning.bellman import policy_value, soft_value_iteration, value_iteration
from bayesirl.posterior.reward_posterior import expert_model

__all__ = ["epic_distance", "expected_value_difference", "held_out_log_likelihood"]

#: A canonical reward counts as constant (zero up to shaping) in :func:`epic_distance` when its
#: standard deviation is at most ``EPIC_ZERO_STD * sqrt(S) * eps * max|R|``, ``eps`` the machine
#: epsilon of the MDP's dtype. Canonicalising a pure shaping reward leaves a rounding residue
#: that grows with the number of states summed over, of order ``sqrt(S) eps max|R|``; the
#: factor 64 leaves a wide margin above it (``benchmarks/RESULTS.md``, "Figures behind design
#: choices").
EPIC_ZERO_STD = 64.0


def _rewards(mdp, value, name, transitions=False):
    """``(reward, kind)``: ``value`` as ``(..., S, A)`` (kind "sa") or, with ``transitions``,
    ``(..., S, A, S)`` (kind "sas"); posterior objects are replaced by ``value.reward()``."""
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")
    if is_posterior(value):
        value = value.reward()
    try:
        r = torch.as_tensor(value, dtype=mdp.dtype, device=mdp.device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a tensor of rewards or a posterior with .reward(), "
                        f"got {type(value).__name__}") from e
    S, A = mdp.n_states, mdp.n_actions
    if transitions and r.dim() >= 3 and tuple(r.shape[-3:]) == (S, A, S):
        kind = "sas"
    elif r.dim() >= 2 and tuple(r.shape[-2:]) == (S, A):
        kind = "sa"
    elif r.dim() >= 1 and r.shape[-1] == S:
        kind = "s"
    else:
        extra = f", (..., {S}, {A}, {S})" if transitions else ""
        raise ValueError(f"{name} must have shape (..., {S}, {A}) or (..., {S}){extra}, "
                         f"got {tuple(r.shape)}")
    bad = ~torch.isfinite(r)
    if bad.any():
        idx = list(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name}{idx} is {r[tuple(idx)].item()}, expected a finite number")
    if kind == "s":
        r, kind = r.unsqueeze(-1).expand(*r.shape, A), "sa"
    return r, kind


def expected_value_difference(mdp: TabularMDP, true_reward, reward, soft: bool = False):
    """Expected value difference (Levine, Popović and Koltun 2011).

    ``EVD = V^{pi*}(true) - V^{pi_r}(true)``: the expected return under ``true_reward`` (from
    ``mdp.initial``; discounted or summed over the horizon) of the optimal policy for
    ``true_reward`` minus that of the optimal policy for ``reward``. Policies come from
    :func:`~bayesirl.value_iteration` (ties split uniformly), so EVD >= 0 up to round-off and is
    0 for ``reward = true_reward``; it is invariant to anything that leaves the optimal policy
    unchanged (rescaling, potential shaping).

    Args:
        mdp: the MDP.
        true_reward: ``(S,)`` or ``(S, A)`` the ground truth (``None``: ``mdp.reward``).
        reward: a point reward ``(S,)``/``(S, A)``, a batch ``(..., S, A)``, or a posterior with
            ``.reward() -> (draws, S, A)``.
        soft: compare soft-optimal (:func:`~bayesirl.soft_value_iteration`) policies instead;
            then EVD can be negative (a scaled-up reward acts more greedily).

    Returns:
        ``()`` for a point reward, ``(...)`` / ``(draws,)`` for batches and posteriors.
    """
    if true_reward is None:
        if getattr(mdp, "reward", None) is None:
            raise ValueError("true_reward is None and mdp.reward is None, expected a reward")
        true_reward = mdp.reward
    true, _ = _rewards(mdp, true_reward, "true_reward")
    if true.dim() != 2:
        raise ValueError(f"true_reward must be one reward ({mdp.n_states},) or "
                         f"({mdp.n_states}, {mdp.n_actions}), got {tuple(true.shape)}")
    r, _ = _rewards(mdp, reward, "reward")
    plan = soft_value_iteration if soft else value_iteration
    with torch.no_grad():
        best = policy_value(mdp, plan(mdp, true), true)
        return best - policy_value(mdp, plan(mdp, r), true)


def _canonical_parts(mdp, R, kind, gamma, ds, da, coverage):
    """The canonical reward on the coverage points, as independent additive parts
    ``[(values (..., n), weights (n,))]`` (their sum is ``C(R)`` at a random point)."""
    u = (torch.einsum("...sat,a,t->...s", R, da, ds) if kind == "sas"
         else torch.einsum("...sa,a->...s", R, da))           # u(x) = E[R(x, A, S')]
    shift = -u - gamma * (u @ ds)[..., None]                   # -u(s) - gamma E[R(S, A, S')]
    w_sa = ds[:, None] * da
    if coverage == "transitions":
        succ = mdp.successors
        r_k = (R.gather(-1, succ.expand(R.shape[:-3] + succ.shape)) if kind == "sas"
               else R[..., None])
        c = r_k + gamma * u[..., succ] + shift[..., None, None]
        return [(c.flatten(-3), (w_sa[..., None] * mdp.transition_probs).flatten())]
    if kind == "sas":
        c = R + gamma * u[..., None, None, :] + shift[..., None, None]
        return [(c.flatten(-3), (w_sa[..., None] * ds).flatten())]
    return [((R + shift[..., None]).flatten(-2), w_sa.flatten()), (gamma * u, ds)]


def _moments(parts1, parts2):
    cov = var1 = var2 = 0.0
    for (c1, w), (c2, _) in zip(parts1, parts2, strict=True):
        d1 = c1 - (c1 * w).sum(-1, keepdim=True)
        d2 = c2 - (c2 * w).sum(-1, keepdim=True)
        cov = cov + (w * d1 * d2).sum(-1)
        var1, var2 = var1 + (w * d1 * d1).sum(-1), var2 + (w * d2 * d2).sum(-1)
    return cov, var1, var2


def _distribution(name, value, n, like):
    if value is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    p = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if tuple(p.shape) != (n,) or not torch.isfinite(p).all() or (p < 0).any() or abs(
            p.sum().item() - 1) > 1e-6:
        raise ValueError(f"{name} must be a probability vector of shape ({n},), got "
                         f"{p.tolist() if p.numel() <= 10 else tuple(p.shape)}")
    return p


def epic_distance(mdp: TabularMDP, r1, r2, discount: float | None = None,
                  coverage: str = "transitions", state_dist=None, action_dist=None):
    """Equivalent-Policy Invariant Comparison (EPIC) pseudometric (Gleave et al. 2021).

    Each reward is canonicalised to remove potential shaping,
    ``C(R)(s, a, s') = R(s, a, s') + E[gamma R(s', A, S') - R(s, A, S') - gamma R(S, A, S')]``
    with ``S, S' ~ state_dist`` and ``A ~ action_dist`` independent (uniform by default); the
    distance is the Pearson distance ``sqrt((1 - rho) / 2)`` of ``C(R1)`` and ``C(R2)`` over
    transitions ``(s, a, s')`` drawn from the coverage distribution:

    - ``"transitions"`` (default): ``s ~ state_dist``, ``a ~ action_dist``, ``s' ~ P(.|s, a)``,
      the transitions the MDP can produce (cost ``S * A * K`` per reward);
    - ``"uniform"``: ``s, s' ~ state_dist`` and ``a ~ action_dist`` independently, all triples.

    It lies in ``[0, 1]`` and is 0 when ``R2`` is a positive rescaling of ``R1`` plus potential
    shaping, ``c (R1(s, a, s') + gamma Phi(s') - Phi(s))`` with ``c > 0`` (plus a constant).
    bayesirl rewards ``r(s, a)`` are read as ``R(s, a, s') = r(s, a)``; a shaped reward depends
    on ``s'`` and is passed as ``(..., S, A, S)``. (A reward shaped only in expectation,
    ``r + gamma E[Phi(s')] - Phi(s)``, is not equivalent in this sense under stochastic
    dynamics.) A canonical reward with zero variance is the zero reward up to shaping: the
    distance between two such is 0, and ``nan`` against a non-constant one. "Zero" allows for
    rounding: a standard deviation of at most ``64 sqrt(S) eps max|R|`` over the coverage
    (``eps = torch.finfo(mdp.dtype).eps``; ``bayesirl.metrics.EPIC_ZERO_STD``), so that a
    pure shaping reward is recognised in float32 as in float64.

    Args:
        mdp: the MDP (successors for the coverage, discount).
        r1, r2: ``(..., S)``, ``(..., S, A)`` or ``(..., S, A, S)`` rewards, or posteriors with
            ``.reward()``; leading dims broadcast (e.g. ``r1`` the truth, ``r2`` draws).
        discount: gamma of the shaping; default ``mdp.discount``, or 1 for a finite horizon.
        coverage: ``"transitions"`` or ``"uniform"``.
        state_dist, action_dist: ``(S,)`` and ``(A,)`` distributions (default uniform).

    Returns:
        ``(...)`` distances: the broadcast leading shape of ``r1`` and ``r2``.
    """
    R1, k1 = _rewards(mdp, r1, "r1", transitions=True)
    R2, k2 = _rewards(mdp, r2, "r2", transitions=True)
    lead1, lead2 = (R.shape[:-3 if k == "sas" else -2] for R, k in ((R1, k1), (R2, k2)))
    try:
        torch.broadcast_shapes(lead1, lead2)
    except RuntimeError:
        raise ValueError(f"r1 has shape {tuple(R1.shape)} and r2 {tuple(R2.shape)}: their "
                         f"leading (batch) dims {tuple(lead1)} and {tuple(lead2)} do not "
                         "broadcast") from None
    check_choice("coverage", coverage, ("transitions", "uniform"))
    gamma = ((1.0 if mdp.finite_horizon else mdp.discount) if discount is None
             else check_number("discount", discount, 0.0, 1.0))
    ds = _distribution("state_dist", state_dist, mdp.n_states, R1)
    da = _distribution("action_dist", action_dist, mdp.n_actions, R1)
    if coverage == "uniform" and k1 != k2:  # both dense, so that the parts line up
        R1, k1 = (R1 if k1 == "sas" else R1[..., None].expand(*R1.shape, mdp.n_states)), "sas"
        R2, k2 = (R2 if k2 == "sas" else R2[..., None].expand(*R2.shape, mdp.n_states)), "sas"
    with torch.no_grad():
        parts1 = _canonical_parts(mdp, R1, k1, gamma, ds, da, coverage)
        parts2 = _canonical_parts(mdp, R2, k2, gamma, ds, da, coverage)
        cov, var1, var2 = _moments(parts1, parts2)
        zero = EPIC_ZERO_STD * math.sqrt(mdp.n_states) * torch.finfo(R1.dtype).eps
        tiny1 = var1 <= (zero * R1.abs().flatten(-3 if k1 == "sas" else -2).amax(-1)) ** 2
        tiny2 = var2 <= (zero * R2.abs().flatten(-3 if k2 == "sas" else -2).amax(-1)) ** 2
        rho = cov / (var1 * var2).sqrt()
        dist = ((1 - rho).clamp(min=0) / 2).sqrt()
        dist = torch.where(tiny1 | tiny2, torch.full_like(dist, math.nan), dist)
        return torch.where(tiny1 & tiny2, torch.zeros_like(dist), dist)


def held_out_log_likelihood(mdp: TabularMDP, posterior_or_reward, demos: Demonstrations,
                            rationality=None, likelihood: str | None = None) -> torch.Tensor:
    """Log-likelihood ``(N,)`` of each held-out demonstration under the expert's policy.

    For a point reward ``r``: ``sum_t log pi_t(a_t | s_t)`` per demonstration, ``pi`` the
    expert policy of ``r`` (by default the soft, maximum causal entropy, policy of
    ``rationality * r``). For a batch of rewards or a posterior (draws ``r_k``): the log
    posterior-predictive probability of each demonstration,
    ``log (1/K) sum_k prod_t pi_t^{(k)}(a_t | s_t)`` (a log-mean-exp over draws). Dynamics terms
    do not depend on the reward and are left out. Take ``.mean()`` for the mean per demo.

    Args:
        mdp: the MDP.
        posterior_or_reward: ``(S,)``/``(S, A)``, a batch ``(..., S, A)`` or a posterior.
        demos: held-out :class:`~bayesirl.Demonstrations` (validated against ``mdp``); padding
            columns past the longest demonstration (even past a finite horizon) are ignored.
        rationality: beta > 0, the expert's inverse temperature: a number, or a tensor ``(...)``
            of one per reward of the batch (e.g. per draw). Default: a posterior's own,
            per draw (``posterior.rationality``: its inferred draws, or its fixed value), and
            1 for rewards given as tensors.
        likelihood: ``"soft"`` or ``"boltzmann"`` (``pi ∝ exp(beta Q*)``). Default: a
            posterior's own (``posterior.settings["likelihood"]``), else ``"soft"``.

    An explicit ``rationality`` or ``likelihood`` is used even where the posterior says
    otherwise: it scores the posterior's rewards under another expert model on purpose (a
    posterior inferred with rationality 5 scores its own draws with 5 by default).
    """
    r, _ = _rewards(mdp, posterior_or_reward, "posterior_or_reward")
    if not isinstance(demos, Demonstrations):
        raise TypeError(f"demos must be Demonstrations, got {type(demos).__name__}")
    demos.validate(mdp)
    own_likelihood, own_beta = expert_model(posterior_or_reward)
    likelihood = check_likelihood(own_likelihood if likelihood is None else likelihood)
    batch = r.shape[:-2]
    if rationality is None:
        beta = torch.ones(()) if own_beta is None else own_beta
        # one per draw: aligned with the leading dims of posterior.reward()
        beta = beta.reshape(tuple(beta.shape) + (1,) * (len(batch) - beta.dim()))
    elif isinstance(rationality, (torch.Tensor, np.ndarray, list, tuple)):
        beta = as_tensor("rationality", rationality)
        check_finite("rationality", beta)
        if (beta <= 0).any():
            idx = first_bad(beta <= 0)
            raise ValueError(f"rationality{fmt_index(idx)} is {beta[idx].item()}, expected a "
                             "number > 0")
    else:
        beta = torch.tensor(check_number("rationality", rationality, 0.0, low_open=True))
    beta = beta.to(dtype=r.dtype, device=r.device)
    try:
        if torch.broadcast_shapes(beta.shape, batch) != batch:
            raise RuntimeError
    except RuntimeError:
        raise ValueError(f"rationality has shape {tuple(beta.shape)}, expected a number or "
                         f"one per reward: a shape that broadcasts to {tuple(batch)}") from None
    T = int(demos.lengths.max()) if demos.n else 0  # all-padding columns: not steps
    s, a, m = (x[:, :T].to(mdp.device) for x in (demos.states, demos.actions, demos.mask))
    with torch.no_grad():
        lp = action_log_probs(mdp, r, likelihood, beta)
        step = lp[..., torch.arange(s.shape[1], device=mdp.device), s, a] if (
            mdp.finite_horizon) else lp[..., s, a]                     # (..., N, T)
        ll = torch.where(m, step, torch.zeros_like(step)).sum(-1)      # (..., N)
        if r.dim() == 2:
            return ll
        ll = ll.reshape(-1, ll.shape[-1])
        return torch.logsumexp(ll, 0) - math.log(ll.shape[0])
