"""Max-margin IRL by constraint generation: Abbeel and Ng (2004) with the loss-scaled margins of
maximum margin planning (Ratliff, Bagnell and Zinkevich 2006), solved as linear programs."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.optimize
import torch
from tqdm.auto import tqdm

from bayesirl._validation import check_choice, check_int, check_number
from bayesirl.baselines import _common
from bayesirl.baselines.result import IRLResult
from bayesirl.planning.bellman import ConvergenceWarning, occupancy

__all__ = ["max_margin_irl"]


def solve_margin_lp(deltas: np.ndarray, losses: np.ndarray, C: float):
    """``min_{w, xi} |w|_1 + C xi  s.t.  w . deltas[j] >= losses[j] - xi,  xi >= 0``.

    ``deltas: (n, d)`` rows ``mu_E - mu_j``, ``losses: (n,)``. Written with ``w = w+ - w-``
    (``w+, w- >= 0``) as a linear program for HiGHS. Returns ``(w (d,), xi)``.
    """
    n, d = deltas.shape
    c = np.concatenate([np.ones(2 * d), [C]])
    A_ub = np.hstack([-deltas, deltas, -np.ones((n, 1))])
    res = scipy.optimize.linprog(c, A_ub=A_ub, b_ub=-losses, bounds=(0, None), method="highs")
    if res.status != 0:  # pragma: no cover - the LP is always feasible and bounded
        raise RuntimeError(f"the max-margin LP failed: {res.message}")
    return res.x[:d] - res.x[d:2 * d], float(res.x[-1])


def max_margin_irl(mdp, demos, *, C: float = 1.0, margin: str = "loss", tol: float = 1e-6,
                   max_iters: int = 100, initial: str = "empirical",
                   progress: bool = False) -> IRLResult:
    """Max-margin IRL: a linear reward under which the experts beat every policy by a margin.

    With ``mu_E`` the experts' feature expectations and ``mu_j`` those of policies ``pi_j``, solve
    the L1-regularised program (one shared slack, as in 1-slack structural SVMs)::

        min_{w, xi >= 0}  |w|_1 + C xi   s.t.   w . (mu_E - mu_j) >= L_j - xi   for all j,

    a linear program (HiGHS via :func:`scipy.optimize.linprog`); the L1 norm favours sparse
    rewards. The slack ``xi`` admits suboptimal experts, which no reward makes strictly best.
    Constraint generation: start with no policy; after each LP add the most violated constraint,
    ``argmax_pi w . mu_pi + L(pi)``: the optimal (hard) policy for ``phi . w + l``; stop when it
    is violated by at most ``tol``. The solution then satisfies the constraints of *all*
    policies to ``tol``.

    Margins (``margin``):

    - ``"loss"`` (default, Ratliff et al. 2006): ``L(pi) = <occupancy(pi), l>`` with the
      per-visit loss ``l(s, a) = 1 - c_E(s, a) / max c_E`` in ``[0, 1]``, ``c_E`` the experts'
      mean visit counts: policies that go where experts do not must lose by more. This keeps
      ``w`` informative for soft-optimal experts.
    - ``"unit"`` (Abbeel and Ng 2004 style): ``L = 1``; with experts that some policy matches,
      the optimum is ``w = 0``.

    Args:
        mdp: a :class:`~bayesirl.TabularMDP` with features ``(S, d)`` or ``(S, A, d)``.
        demos: :class:`~bayesirl.Demonstrations`, validated against ``mdp``.
        C: slack penalty > 0 (larger: larger margins, larger ``w``).
        margin: ``"loss"`` or ``"unit"``.
        tol: constraint violation accepted at termination.
        max_iters: most constraints to add (a ConvergenceWarning reports running out).
        initial: start distribution of the policies' feature expectations ``mu_j`` and
            losses, as in :func:`~bayesirl.baselines.mce_irl`: ``"empirical"`` (the
            demonstrations' first states, where ``mu_E`` starts; default) or ``"mdp"``
            (``mdp.initial``, for demonstrations whose starts are too few to stand for it).
            With ``"mdp"`` and demonstrations that start elsewhere, ``mu_E - mu_j`` mixes
            the reward's effect with the difference of starts.
        progress: show a tqdm bar.

    Returns:
        :class:`IRLResult` with ``theta = w``, history ``violation`` (of the constraint added
        next), ``slack`` and ``objective`` per LP; info ``deltas`` ``(n, d)`` (rows
        ``mu_E - mu_j``), ``losses`` ``(n,)``, ``slack`` (the final ``xi``), ``policies``,
        ``loss_vector`` ``(S, A)`` (``l``, zeros for ``"unit"``), ``converged``.
    """
    mdp, demos = _common.check_problem(mdp, demos)
    C = check_number("C", C, 0.0, low_open=True)
    check_choice("margin", margin, ("loss", "unit"))
    tol = check_number("tol", tol, 0.0, low_open=True)
    max_iters = check_int("max_iters", max_iters)
    start = _common.start_distribution(mdp, demos, initial)
    counts = _common.expert_counts(mdp, demos)
    mu_e = _common.expert_features(mdp, counts)
    loss = 1 - counts / counts.max() if margin == "loss" else torch.zeros_like(counts)
    d = mu_e.shape[0]
    w, xi = np.zeros(d), 0.0
    deltas, losses, policies = np.zeros((0, d)), np.zeros(0), []
    history = {"violation": [], "slack": [], "objective": []}
    converged = False
    for _ in tqdm(range(max_iters), desc="max-margin IRL", disable=not progress, leave=False):
        theta = torch.as_tensor(w, dtype=mdp.dtype, device=mdp.device)
        plan, mu = _common.greedy(mdp, _common.linear_reward(mdp, theta) + loss, start)
        L = float((occupancy(mdp, plan, initial=start) * loss).sum()) if margin == "loss" else 1.0
        delta = (mu_e - mu).cpu().double().numpy()
        violation = L - xi - float(w @ delta)
        history["violation"].append(violation)
        if violation <= tol:
            converged = True
            break
        deltas, losses = np.vstack([deltas, delta]), np.append(losses, L)
        policies.append(plan.policy)
        w, xi = solve_margin_lp(deltas, losses, C)
        history["slack"].append(xi)
        history["objective"].append(float(np.abs(w).sum() + C * xi))
    if not converged:
        warnings.warn(f"max-margin IRL stopped after max_iters={max_iters} constraints with a "
                      f"violation of {history['violation'][-1]:.3g} > tol={tol:g}; raise max_iters",
                      ConvergenceWarning, stacklevel=2)
    theta = torch.as_tensor(w, dtype=mdp.dtype, device=mdp.device)
    info = {"deltas": torch.as_tensor(deltas), "losses": torch.as_tensor(losses), "slack": xi,
            "C": C, "policies": policies, "loss_vector": loss, "converged": converged,
            "expert_features": mu_e}
    return IRLResult(_common.linear_reward(mdp, theta), theta, history, info)
