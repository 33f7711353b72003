"""Maximum causal entropy IRL (Ziebart, Bagnell and Dey 2010; Ziebart 2010, ch. 6 and 9)."""

from __future__ import annotations

from bayesirl._validation import check_choice, check_int, check_number
from bayesirl.baselines import _common
from bayesirl.baselines.result import IRLResult

__all__ = ["mce_irl"]

#: Default L2 penalty of MCE and MaxEnt IRL; see :func:`mce_irl` for why it is not 0.
DEFAULT_L2 = 1e-2


def mce_irl(mdp, demos, *, l2: float = DEFAULT_L2, initial: str = "empirical",
            method: str = "lbfgs", max_iters: int = 500, tol: float = 1e-6, lr: float = 0.05,
            progress: bool = False) -> IRLResult:
    """Maximum causal entropy IRL: the linear reward whose soft-optimal policy matches the
    experts' feature expectations.

    The Lagrangian derivation maximises the causal entropy ``H(A^T || S^T)`` of the policy
    subject to matching the empirical feature counts ``mu_E = (1/N) sum_i sum_t gamma^t
    phi(s_t^i, a_t^i)``. Its dual is convex in the multipliers::

        L(theta) = E_{s_0 ~ mu_0}[V_theta(s_0)] - theta . mu_E  (+ l2 / 2 |theta|^2),

    where ``V_theta`` is the soft value (:func:`bayesirl.soft_value_iteration`) of the reward
    ``r(s, a) = phi(s, a) . theta``; its gradient is expected minus empirical feature counts,
    ``mu(theta) - mu_E + l2 theta``, with ``mu(theta)`` from the soft policy's occupancy. At the
    optimum with ``l2 = 0`` the soft policy matches ``mu_E`` (to ``tol``, sup-norm). With
    ``l2 > 0`` the soft policy matches ``mu_E - l2 theta``.

    Likelihood reading: on *deterministic* dynamics, finite horizon, with ``initial=
    "empirical"``, ``L`` is the mean negative causal log-likelihood of the demonstrations,
    ``-(1/N) sum_i sum_t log pi_t(a_t^i | s_t^i)`` (the soft Bellman terms telescope along
    each path), so the estimate is the maximum-likelihood one and, with ``l2 > 0``, the MAP
    under the prior ``theta ~ N(0, I / (N l2))`` (``l2 = 1 / N``: ``N(0, I)``). Under
    stochastic dynamics the terms ``E[V_{t+1}(s')] - V_{t+1}(s_{t+1})`` depend on ``theta``
    and do not cancel (likewise for the rescaled discounted counts or ``initial="mdp"``):
    the result is then the feature-matching (maximum causal entropy) estimate with an L2
    penalty, not that MAP (on the README problem with slip 0.1, a different ``theta`` with a
    lower log posterior). :func:`bayesirl.infer` with ``method="map"`` gives the MAP.

    Why the default ``l2 = 0.01`` and not 0: with indicator (one-hot) features the maximiser of
    the unpenalised dual often does not exist. A feature the demonstrations never switch on
    (a cell or block no demonstration visits) has ``mu_E = 0``, which only ``theta -> -inf``
    attains, and the weights drift without bound (on an 8x8 gridworld with 2x2 block features,
    horizon 30, 20 demonstrations: ``|theta| ~ 1e29`` and no convergence with ``l2 = 0``).
    One-hot features also sum to a constant, so adding ``c`` to every weight leaves the policy
    unchanged; any ``l2 > 0`` picks the smallest-norm solution (weights of mean 0). A penalty
    as large as 0.01 keeps L-BFGS's iterations few where smaller ones take many, at no cost
    in EVD on the gridworlds compared (``benchmarks/RESULTS.md``, "Figures behind design
    choices"); its bias is a feature mismatch ``|mu - mu_E|_2 = l2 |theta|_2``. Pass
    ``l2=0`` for exact feature matching (the classic MCE estimate) when every feature is
    visited.

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
        l2: L2 penalty >= 0 on ``theta`` (a Gaussian prior); default 0.01 (above), 0 for the
            unpenalised estimate.
        initial: start distribution of the expected counts: ``"empirical"`` (the demonstrations'
            first states; the dual is then the demonstrations' conditional log-likelihood on
            deterministic dynamics) or ``"mdp"`` (``mdp.initial``).
        method: ``"lbfgs"`` (scipy L-BFGS-B with the analytic gradient) or ``"adam"``.
        max_iters: optimiser iterations. A ConvergenceWarning reports stopping above ``tol``;
            the usual cause with ``l2 = 0`` is an unbounded dual (features the demonstrations
            never visit, ``|theta| -> inf``), cured by ``l2 > 0``.
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
    l2 = check_number("l2", l2, 0.0)
    check_choice("method", method, ("lbfgs", "adam"))
    max_iters = check_int("max_iters", max_iters)
    tol = check_number("tol", tol, 0.0, low_open=True)
    lr = check_number("lr", lr, 0.0, low_open=True)
    counts = _common.expert_counts(mdp, demos)
    start = _common.start_distribution(mdp, demos, initial)
    theta, history, info = _common.fit_linear(
        mdp, counts, start, dual, l2=l2, method=method, max_iters=max_iters, tol=tol, lr=lr,
        progress=progress, desc=desc)
    info["expert_features"] = _common.expert_features(mdp, counts)
    return IRLResult(_common.linear_reward(mdp, theta), theta, history, info)
