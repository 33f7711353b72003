"""Maximum causal entropy IRL (Ziebart, Bagnell and Dey 2010; Ziebart 2010, ch. 6 and 9)."""

from __future__ import annotations

from bayesirl.baselines import _common
from bayesirl.baselines.result import IRLResult

__all__ = ["mce_irl"]


def mce_irl(mdp, demos, *, l2: float = 0.0, initial: str = "empirical", method: str = "lbfgs",
            max_iters: int = 500, tol: float = 1e-6, lr: float = 0.05,
            progress: bool = False) -> IRLResult:
    """Maximum causal entropy IRL: the linear reward whose soft-optimal policy matches the
    experts' feature expectations.

    The Lagrangian derivation maximises the causal entropy ``H(A^T || S^T)`` of the policy
    subject to matching the empirical feature counts ``mu_E = (1/N) sum_i sum_t gamma^t
    phi(s_t^i, a_t^i)``. Its dual is convex in the multipliers,

        L(theta) = E_{s_0 ~ mu_0}[V_theta(s_0)] - theta . mu_E  (+ l2 / 2 |theta|^2),

    where ``V_theta`` is the soft value (:func:`bayesirl.soft_value_iteration`) of the reward
    ``r(s, a) = phi(s, a) . theta``; its gradient is expected minus empirical feature counts,
    ``mu(theta) - mu_E + l2 theta``, with ``mu(theta)`` from the soft policy's occupancy. At the
    optimum with ``l2 = 0`` the soft policy matches ``mu_E`` (to ``tol``, sup-norm). With
    ``l2 > 0`` the result is the MAP estimate under the prior ``theta ~ N(0, I / l2)``.

    Sign convention: the derivation (Ziebart 2010) writes costs, ``r = -theta_cost^T phi``;
    bayesirl's ``theta`` are reward weights, ``r = phi . theta``, so ``theta = -theta_cost``.

    Finite horizon: time-indexed soft policy over ``mdp.horizon`` steps; every demonstration
    must have exactly that many steps. Discounted: stationary soft policy and discounted counts,
    each demonstration's rescaled to the mass ``1 / (1 - gamma)`` of an infinite discounted
    occupancy (its observed discounted distribution stands in for the unobserved tail).

    Args:
        mdp: a :class:`~bayesirl.TabularMDP` with state ``(S, d)`` or state-action ``(S, A, d)``
            features.
        demos: :class:`~bayesirl.Demonstrations`, validated against ``mdp``.
        l2: L2 penalty >= 0 on ``theta`` (a Gaussian prior).
        initial: start distribution of the expected counts: ``"empirical"`` (the demonstrations'
            first states; the dual is then the demonstrations' conditional log-likelihood on
            deterministic dynamics) or ``"mdp"`` (``mdp.initial``).
        method: ``"lbfgs"`` (scipy L-BFGS-B with the analytic gradient) or ``"adam"``.
        max_iters: optimiser iterations. A ConvergenceWarning reports stopping above ``tol``;
            the usual cause is an unbounded dual (features the demonstrations never visit,
            ``|theta| -> inf``), cured by ``l2 > 0``.
        tol: stop when the gradient's sup-norm is at most ``tol``.
        lr: Adam's learning rate (``method="adam"`` only).
        progress: show a tqdm bar.

    Returns:
        :class:`IRLResult` with ``reward (S, A)``, ``theta (d,)``, history ``loss``,
        ``grad_norm``, ``feature_distance`` (``|mu(theta) - mu_E|_2``) per iteration, and info
        ``converged``, ``iterations``, ``message``, ``grad``, ``expert_features`` ``(d,)``.
    """
    return fit(mdp, demos, _common.soft_dual, "MCE IRL", l2=l2, initial=initial, method=method,
               max_iters=max_iters, tol=tol, lr=lr, progress=progress)


def fit(mdp, demos, dual, desc, *, l2, initial, method, max_iters, tol, lr, progress):
    """Validate, then minimise ``dual`` over linear rewards (shared with MaxEnt IRL)."""
    mdp, demos = _common.check_problem(mdp, demos)
    l2 = _common.check_number("l2", l2, strict=False)
    _common.check_choice("method", method, ("lbfgs", "adam"))
    max_iters = _common.check_number("max_iters", max_iters, integer=True)
    tol = _common.check_number("tol", tol)
    lr = _common.check_number("lr", lr)
    counts = _common.expert_counts(mdp, demos)
    start = _common.start_distribution(mdp, demos, initial)
    theta, history, info = _common.fit_linear(
        mdp, counts, start, dual, l2=l2, method=method, max_iters=max_iters, tol=tol, lr=lr,
        progress=progress, desc=desc)
    info["expert_features"] = _common.expert_features(mdp, counts)
    return IRLResult(_common.linear_reward(mdp, theta), theta, history, info)
