"""Apprenticeship learning by the projection method (Abbeel and Ng 2004, section 3.1)."""

from __future__ import annotations

import numpy as np
import scipy.optimize
import torch
from tqdm.auto import tqdm

from bayesirl._validation import check_int, check_number
from bayesirl.baselines import _common
from bayesirl.baselines.result import IRLResult

__all__ = ["projection_irl"]


def _mixture_weights(mus: torch.Tensor, mu_e: torch.Tensor, start: np.ndarray) -> np.ndarray:
    """Weights ``lam`` on the simplex minimising ``|mu_E - lam @ mus|_2``, never worse than the
    feasible ``start``: non-negative least squares (:func:`scipy.optimize.nnls`) with the
    constraint ``sum(lam) = 1`` as a heavily weighted extra row, then renormalised."""
    M, target = mus.cpu().double().numpy(), mu_e.cpu().double().numpy()
    scale = max(1.0, float(np.abs(M).max()))
    M, target = M / scale, target / scale
    rho = 1e4
    lam, _ = scipy.optimize.nnls(np.vstack([M.T, np.full(len(M), rho)]),
                                 np.append(target, rho), maxiter=50 * len(M))
    if lam.sum() <= 0:
        return start
    lam = lam / lam.sum()

    def dist(x):
        return float(np.linalg.norm(x @ M - target))
    return lam if dist(lam) <= dist(start) else start


def projection_irl(mdp, demos, *, eps: float = 1e-3, max_iters: int = 100,
                   initial: str = "empirical", progress: bool = False) -> IRLResult:
    """Apprenticeship learning via inverse RL, projection method (Abbeel and Ng 2004).

    With ``mu_E`` the experts' (discounted) feature expectations ``(d,)`` and ``pi_0`` the
    uniform policy (optimal for the zero reward), ``mu_bar_0 = mu(pi_0)``; then for i = 1, 2, ...:

    1. ``w_i = mu_E - mu_bar_{i-1}``, ``t_i = |w_i|_2``; stop if ``t_i <= eps``;
    2. ``pi_i`` = the optimal (hard, :func:`~bayesirl.value_iteration`) policy for
       ``r = phi . w_i``, ``mu_i = mu(pi_i)``;
    3. ``mu_bar_i`` = the orthogonal projection of ``mu_E`` onto the segment
       ``[mu_bar_{i-1}, mu_i]``.

    ``mu_bar_i`` stays a convex combination of the ``mu_j``, and ``|mu_E - mu_bar_i|`` never
    increases (``history["distance"]``, one entry per ``mu_bar``, starting with ``mu_bar_0``).
    The method's output is a *mixture* of the policies ``pi_j``: ``info`` has the policies, the
    mixture weights (least squares over the simplex, a small QP; kept only if at least as
    close as the weights that produce ``mu_bar``) and the distance they achieve. The guarantee
    of the method is for that mixture policy; Abbeel and Ng leave the choice of a single policy
    (hence reward) to the user. As a single reward (for :class:`IRLResult`), ``theta`` is the
    unit-norm ``w_j``, ``j >= 1``, of the found policy with the largest mixture weight (ties:
    the one closest to ``mu_E``), so that ``pi_j``, the mixture's main found component, is
    optimal for the returned reward. ``pi_0`` is left out: its ``w_0 = 0`` is the start, not a
    reward the method produced, and returning it gave a constant reward whenever the experts
    look nearly uniform (``pi_0`` then carries most of the mixture). ``theta`` is 0 only if
    ``|mu_E - mu(pi_0)|_2 <= eps`` (nothing to learn). The last ``w_n`` is not returned: the
    ``w_i`` alternate in direction, so the last one is often a correction, not the reward; of
    the candidates compared (this one, the ``w_j`` of the found policy closest to ``mu_E``,
    the last, ``pi_0`` allowed), this one recovers the reward best (``benchmarks/RESULTS.md``,
    "Figures behind design choices").

    Finite-horizon MDPs use time-indexed policies; discounted MDPs stationary ones (the
    demonstrations' discounted counts rescaled to mass ``1 / (1 - gamma)``, as in
    :func:`~bayesirl.baselines.mce_irl`). The policies' ``mu(pi)`` start from ``initial``, by
    default where the demonstrations start, as ``mu_E`` does: from ``mdp.initial`` instead, a
    start the demonstrations never use leaves a gap in feature expectations that no reward
    closes.

    Args:
        mdp: a :class:`~bayesirl.TabularMDP` with features ``(S, d)`` or ``(S, A, d)``.
        demos: :class:`~bayesirl.Demonstrations`, validated against ``mdp``.
        eps: stop when ``|mu_E - mu_bar|_2 <= eps`` (feature-expectation units).
        max_iters: most policies to add.
        initial: start distribution of the policies' feature expectations, as in
            :func:`~bayesirl.baselines.mce_irl`: ``"empirical"`` (the demonstrations' first
            states, default) or ``"mdp"`` (``mdp.initial``, for demonstrations whose starts
            are too few to stand for it).
        progress: show a tqdm bar.

    Returns:
        :class:`IRLResult`; history ``distance``; info ``policies`` (list of action
        probabilities ``(T, S, A)`` or ``(S, A)``), ``weights`` (list of the ``w_i``),
        ``feature_expectations`` ``(n, d)``, ``mixture_weights`` ``(n,)``, ``mixture_distance``,
        ``main`` (index of the policy behind ``theta``; 0 only when nothing was learned),
        ``closest`` (index of the policy closest to ``mu_E``, ``pi_0`` included),
        ``converged``.
    """
    mdp, demos = _common.check_problem(mdp, demos)
    eps = check_number("eps", eps, 0.0, low_open=True)
    max_iters = check_int("max_iters", max_iters)
    start = _common.start_distribution(mdp, demos, initial)
    mu_e = _common.expert_features(mdp, _common.expert_counts(mdp, demos))
    d = mu_e.shape[0]
    plan, mu = _common.greedy(mdp, mu_e.new_zeros(mdp.n_states, mdp.n_actions), start)
    policies, weights, mus = [plan.policy], [mu_e.new_zeros(d)], [mu]
    lam = np.ones(1)  # mixture weights producing mu_bar
    mu_bar = mu
    history = {"distance": [float((mu_e - mu_bar).norm())]}
    for _ in tqdm(range(max_iters), desc="projection IRL", disable=not progress, leave=False):
        w = mu_e - mu_bar
        if w.norm() <= eps:
            break
        plan, mu = _common.greedy(mdp, _common.linear_reward(mdp, w), start)
        policies.append(plan.policy)
        weights.append(w / w.norm())
        mus.append(mu)
        step = mu - mu_bar
        denom = float(step @ step)
        alpha = 0.0 if denom == 0 else min(max(float(step @ w) / denom, 0.0), 1.0)
        mu_bar = mu_bar + alpha * step
        lam = np.append((1 - alpha) * lam, alpha)
        history["distance"].append(float((mu_e - mu_bar).norm()))
    mus_t = torch.stack(mus)
    lam = _mixture_weights(mus_t, mu_e, lam)
    mix = torch.as_tensor(lam, dtype=mu_e.dtype, device=mu_e.device)
    dist = (mus_t - mu_e).norm(dim=1)
    # the main *found* component: pi_0's w_0 = 0 is the start, not a learned reward
    main = max(range(1, len(mus)), key=lambda j: (float(mix[j]), -float(dist[j])), default=0)
    theta = weights[main]
    info = {"policies": policies, "weights": weights, "feature_expectations": mus_t,
            "mixture_weights": mix, "mixture_distance": float((mu_e - mix @ mus_t).norm()),
            "main": main, "closest": int(dist.argmin()),
            "converged": history["distance"][-1] <= eps,
            "expert_features": mu_e}
    return IRLResult(_common.linear_reward(mdp, theta), theta, history, info)
