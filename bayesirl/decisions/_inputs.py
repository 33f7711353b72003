"""Input handling shared by the decision tools: reward draws, weights, probabilities, policies.

Everything here validates at the boundary (the public functions call it once) and returns plain
tensors that the rest of :mod:`bayesirl.decisions` trusts.
"""

from __future__ import annotations

import torch

from bayesirl._validation import as_tensor, check_distribution_rows, is_posterior
from bayesirl.core.mdp import TabularMDP
from bayesirl.model.likelihood import action_log_probs
from bayesirl.planning.bellman import Plan
from bayesirl.planning.buffers import DRAWS_PER_PLAN
from bayesirl.posterior.reward_posterior import expert_model


def _transitions(mdp: TabularMDP) -> tuple[torch.Tensor, torch.Tensor]:
    """The transitions as sorted keys ``(s * A + a) * S + s'`` with their probabilities
    (float64, CPU), zero entries dropped and duplicates summed: independent of the successor
    order and padding of the sparse layout."""
    S, A, _ = mdp.successors.shape
    keys = (torch.arange(S * A).reshape(S, A, 1) * S + mdp.successors.cpu()).reshape(-1)
    keys, inverse = torch.unique(keys, return_inverse=True)
    probs = torch.zeros(len(keys), dtype=torch.float64).index_add_(
        0, inverse, mdp.transition_probs.detach().cpu().double().reshape(-1))
    keep = probs > 0
    return keys[keep], probs[keep]


def same_dynamics(a: TabularMDP, b: TabularMDP, atol: float = 1e-6) -> bool:
    """Same states, actions and transition probabilities (to ``atol``, so a float32 copy
    matches), whatever the sparse layout; initial distribution, time and features may differ."""
    if a.successors is b.successors and a.transition_probs is b.transition_probs:
        return True
    if (a.n_states, a.n_actions) != (b.n_states, b.n_actions):
        return False
    (ka, pa), (kb, pb) = _transitions(a), _transitions(b)
    return torch.equal(ka, kb) and bool(((pa - pb).abs() <= atol).all())


def check_posterior_mdp(mdp: TabularMDP, posterior,
                        instead: str = "pass posterior.reward() to use the reward draws with "
                                       "other dynamics") -> None:
    """Raise a ValueError naming both MDPs when a posterior was inferred on other dynamics.

    Decisions may change what is a deployment choice (initial distribution, horizon or
    discount, features); the states, actions and transitions must be the posterior's, since
    its reward draws and rationality describe the expert of that world. Posteriors without an
    MDP (loaded without one) are checked on the shape of their reward draws only. ``instead``
    ends the message: how to use the draws with other dynamics deliberately.
    """
    other = getattr(posterior, "mdp", None)
    if other is None or other is mdp or same_dynamics(mdp, other):
        return
    if other.n_states != mdp.n_states:
        why = f"their numbers of states differ ({other.n_states} vs {mdp.n_states})"
    elif other.n_actions != mdp.n_actions:
        why = f"their numbers of actions differ ({other.n_actions} vs {mdp.n_actions})"
    else:
        why = "their transition probabilities differ"
    raise ValueError(f"posterior was inferred on {other!r} (fingerprint {other.fingerprint()}) "
                     f"but mdp is {mdp!r} (fingerprint {mdp.fingerprint()}): {why}; expected "
                     "the posterior's MDP (its initial distribution, horizon or discount may "
                     f"differ), or {instead}")


def reward_draws(mdp: TabularMDP, posterior, weights=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R (D, S, A), p (D,))`` from a posterior or a draws tensor ``(D, S)`` / ``(D, S, A)``.

    A posterior must belong to ``mdp`` (:func:`check_posterior_mdp`). ``weights`` (``(D,)``,
    non-negative, any positive sum) are normalised; default uniform.
    """
    if is_posterior(posterior):
        check_posterior_mdp(mdp, posterior)
    r = posterior.reward() if is_posterior(posterior) else posterior
    try:
        r = torch.as_tensor(r, dtype=mdp.dtype, device=mdp.device).detach()
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError("posterior must be a RewardPosterior or a tensor of reward draws, got "
                        f"{type(posterior).__name__}") from e
    S, A = mdp.n_states, mdp.n_actions
    if r.dim() not in (2, 3) or r.shape[0] < 1 or r.shape[1] != S or (
            r.dim() == 3 and r.shape[2] != A):
        raise ValueError(f"posterior reward draws must have shape (draws, {S}) or "
                         f"(draws, {S}, {A}), got {tuple(r.shape)}")
    if not torch.isfinite(r).all():
        idx = tuple(int(i) for i in (~torch.isfinite(r)).nonzero()[0])
        raise ValueError(f"posterior reward draws{list(idx)} is {r[idx].item()}, "
                         "expected a finite number")
    if r.dim() == 2:
        r = r.unsqueeze(-1).expand(-1, -1, A)
    D = r.shape[0]
    if weights is None:
        return r, torch.full((D,), 1.0 / D, dtype=r.dtype, device=r.device)
    w = torch.as_tensor(weights, dtype=r.dtype, device=r.device).detach()
    if tuple(w.shape) != (D,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        shown = w.tolist() if w.numel() <= 6 else f"shape {tuple(w.shape)}"
        raise ValueError(f"weights is {shown}, expected {D} non-negative finite numbers (one per "
                         "draw) with a positive sum")
    return r, w / w.sum()


def expert_probs(mdp: TabularMDP, posterior, R: torch.Tensor, index=None) -> torch.Tensor:
    """The expert's action probabilities under the draws ``R[index]`` (default all):
    ``(D, T, S, A)`` or ``(D, S, A)``.

    A posterior's likelihood (``"soft"`` or ``"boltzmann"``) and rationality draws
    (``posterior.rationality``) are used; a bare tensor of draws means the soft (maximum causal
    entropy) expert with rationality 1.
    """
    likelihood, beta = "soft", torch.ones(R.shape[0], dtype=R.dtype, device=R.device)
    if is_posterior(posterior):
        likelihood, own = expert_model(posterior)
        if own is not None:
            beta = own.reshape(-1).to(R)
    if index is not None:
        R, beta = R[index], beta[index]
    return draw_log_probs(mdp, R, likelihood, beta).exp_()


def draw_log_probs(mdp: TabularMDP, R: torch.Tensor, likelihood: str,
                   beta: torch.Tensor) -> torch.Tensor:
    """The expert's action log-probabilities under each reward draw, without gradients:
    ``(D, ..., T, S, A)`` (finite horizon) or ``(D, ..., S, A)`` for reward draws
    ``R: (D, ..., S, A)`` and rationalities ``beta: (D, ...)`` (``...`` e.g. the experts of a
    hierarchical posterior).

    Planned :data:`~bayesirl.planning.buffers.DRAWS_PER_PLAN` draws at a time, so that a large
    posterior never holds every draw's planner intermediates at once.
    """
    n = DRAWS_PER_PLAN
    with torch.no_grad():
        return torch.cat([action_log_probs(mdp, R[i:i + n], likelihood, beta[i:i + n])
                          for i in range(0, R.shape[0], n)])


def policy_probs(mdp: TabularMDP, policy, name: str = "policy") -> torch.Tensor:
    """One policy's probabilities ``(T, S, A)`` or ``(S, A)`` from a :class:`Plan` or a tensor
    whose rows are distributions (:func:`~bayesirl._validation.check_distribution_rows`, in the
    tensor's own dtype), returned in ``mdp``'s dtype (rows renormalised after a cast)."""
    probs = policy.policy if isinstance(policy, Plan) else policy
    try:
        probs = as_tensor(name, probs, device=mdp.device).detach()
    except TypeError as e:
        raise TypeError(f"{name} must be a Plan or a tensor of action probabilities, got "
                        f"{type(policy).__name__} ({e})") from e
    S, A = mdp.n_states, mdp.n_actions
    want = (mdp.horizon, S, A) if mdp.finite_horizon else (S, A)
    if tuple(probs.shape) != want:
        raise ValueError(f"{name} must have shape {want} (one policy), got {tuple(probs.shape)}")
    check_distribution_rows(name, probs)
    if probs.dtype == mdp.dtype:
        return probs
    probs = probs.to(mdp.dtype)  # rows within the rounding of their own dtype: now exact
    return probs / probs.sum(-1, keepdim=True)
