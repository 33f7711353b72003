r"""Two exact solvers of the BROIL linear program (see :mod:`bayesirl.decisions.robust`).

Both maximise ``lam * p.psi + (1 - lam) * (sigma - p.z / (1 - alpha))`` subject to
``z_i >= sigma - psi_i``, ``z >= 0``, ``psi_i = R_i . x - b_i``, ``x`` the (summed) occupancy
measure of some policy, and return the optimal per-step occupancy ``(T, S, A)`` / ``(S, A)``.

- :func:`solve_lp`: the whole program as one sparse LP over the occupancy ``u`` with the Bellman
  flow constraints (HiGHS through ``scipy.optimize.linprog``). A reward matrix of low rank
  (``R = U V^T``, e.g. a linear reward in d features) enters as ``y = V^T x`` so that each draw's
  row holds ``r`` entries instead of ``S * A``.
- :func:`solve_columns`: Dantzig-Wolfe column generation over policies. The occupancy polytope
  is the convex hull of deterministic policies' occupancies, so a restricted master LP mixes the
  policies found so far; its duals ``q`` (on the CVaR rows) price a new policy, the optimal
  policy of the mixed reward ``sum_i (lam p_i + q_i) R_i`` (one value iteration). It stops when
  no policy has positive reduced cost (then the master optimum is the LP optimum, since the
  reduced cost bounds the gap). Finite-horizon flow LPs are badly degenerate for the simplex
  (thousands of iterations for T = 30 on a 9 x 9 grid); column generation needs tens of value
  iterations and tiny master LPs there.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linprog

from bayesirl.core.mdp import TabularMDP
from bayesirl.planning.bellman import ConvergenceWarning, occupancy, value_iteration

HIGHS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


def _linprog(*args, **kwargs):
    res = linprog(*args, method="highs", options=HIGHS, **kwargs)
    if res.status != 0:
        raise RuntimeError(f"the BROIL linear program failed: {res.message}")
    return res


def flow_constraints(mdp: TabularMDP):
    """``(A_eq, b_eq)``: sparse Bellman flow constraints on the flattened occupancy ``u``.

    Discounted: ``sum_a u(s, a) - gamma sum_{s', a'} P(s | s', a') u(s', a') = mu(s)``.
    Finite horizon, ``u = (u_0, .., u_{T-1})``: ``sum_a u_0(s, a) = mu(s)`` and
    ``sum_a u_t(s, a) - sum_{s', a'} P(s | s', a') u_{t-1}(s', a') = 0``.
    """
    S, A, K = mdp.transition_probs.shape
    succ = mdp.successors.cpu().numpy().reshape(-1)
    probs = mdp.transition_probs.detach().cpu().double().numpy().reshape(-1)
    cols = np.repeat(np.arange(S * A), K)
    push = sp.csr_matrix((probs, (succ, cols)), shape=(S, S * A))   # P(s | s', a') as (s, s'a')
    visits = sp.kron(sp.identity(S), np.ones((1, A)), format="csr")  # sum_a u(s, a)
    mu = mdp.initial.detach().cpu().double().numpy()
    if not mdp.finite_horizon:
        return (visits - mdp.discount * push).tocsr(), mu
    T = mdp.horizon
    A_eq = sp.kron(sp.identity(T), visits) - sp.kron(sp.eye(T, k=-1), push)
    return A_eq.tocsr(), np.concatenate([mu, np.zeros((T - 1) * S)])


def _cvar_rows(G, lam, alpha, pn, bn):
    """The CVaR part of an LP over ``[w, sigma, z]`` whose draw returns are ``G @ w``:
    ``z_i >= sigma - (G w)_i + b_i`` as ``(A_ub, b_ub)``, and the costs of ``sigma, z``."""
    D = len(pn)
    A_ub = sp.hstack([sp.csr_matrix(-G), np.ones((D, 1)), -sp.identity(D)], format="csr")
    return A_ub, -bn, np.concatenate([[-(1 - lam)], (1 - lam) / (1 - alpha) * pn])


def _low_rank(Rt: torch.Tensor):
    """``(G, Vt)`` with ``R = G Vt`` and ``r`` rows in ``Vt`` when ``R: (D, S * A)`` has rank
    ``r`` small enough to save entries, else ``(R, None)``."""
    D, SA = Rt.shape
    U, sv, Vt = torch.linalg.svd(Rt, full_matrices=False)
    r = int((sv > 1e-12 * max(float(sv[0]), 1e-300)).sum())
    if r * (D + SA) < D * SA // 2:
        return (U[:, :r] * sv[:r]).numpy(), Vt[:r].numpy()
    return Rt.numpy(), None


def solve_lp(mdp: TabularMDP, R: torch.Tensor, p, b, alpha: float, lam: float) -> torch.Tensor:
    """The BROIL program as one LP, passed to HiGHS in its dual ("value") form.

    With values ``V`` (one per flow constraint), the mixed reward ``rho = R^T q`` and CVaR weights
    ``q`` (the risk envelope ``0 <= q_i <= (1 - lam) p_i / (1 - alpha)``, ``sum q = 1 - lam``):

        min  mu . V_0 - q . b   s.t.   V_t(s) - E[V_{t+1} | s, a] >= lam rbar(s, a) + rho(s, a),

    i.e. the optimal value of the worst mixed reward in the envelope. The occupancy ``u`` is the
    vector of multipliers of the Bellman rows (HiGHS reports them exactly); the dual simplex on
    this form needs several times fewer iterations than on the occupancy form for long horizons.
    A low-rank ``R = G Vt`` adds ``w = G^T q`` and ``rho = Vt^T w`` instead of the dense
    ``R^T q``.
    """
    A_eq, mu = flow_constraints(mdp)                    # (n_v, n_u): n_u = T * S * A rows below
    n_v, n_u = A_eq.shape
    SA = mdp.n_states * mdp.n_actions
    T = mdp.horizon if mdp.finite_horizon else 1
    Rt = R.detach().cpu().double().reshape(len(p), SA)
    pt = p.detach().cpu().double()
    rbar = np.tile((pt @ Rt).numpy(), T)
    if lam == 1:
        res = _linprog(mu, A_ub=-A_eq.T, b_ub=-rbar, bounds=(None, None))
    else:
        D = len(pt)
        G, Vt = _low_rank(Rt)
        r = 0 if Vt is None else Vt.shape[0]
        tile = sp.vstack([sp.identity(SA)] * T)
        # columns [V (n_v), rho (SA), w (r), q (D)]
        A_ub = sp.hstack([-A_eq.T, tile, sp.csr_matrix((n_u, r + D))], format="csr")
        if Vt is None:                                   # rho - R^T q = 0
            rows = [sp.hstack([sp.csr_matrix((SA, n_v)), sp.identity(SA), sp.csr_matrix(-G.T)])]
        else:                                            # rho - Vt^T w = 0, w - G^T q = 0
            rows = [sp.hstack([sp.csr_matrix((SA, n_v)), sp.identity(SA), sp.csr_matrix(-Vt.T),
                               sp.csr_matrix((SA, D))]),
                    sp.hstack([sp.csr_matrix((r, n_v + SA)), sp.identity(r),
                               sp.csr_matrix(-G.T)])]
        rows.append(sp.hstack([sp.csr_matrix((1, n_v + SA + r)), np.ones((1, D))]))
        c = np.concatenate([mu, np.zeros(SA + r), -b.detach().cpu().double().numpy()])
        cap = (1 - lam) / (1 - alpha) * pt.numpy()
        res = _linprog(c, A_ub=A_ub, b_ub=-lam * rbar, A_eq=sp.vstack(rows, format="csr"),
                       b_eq=np.concatenate([np.zeros(SA + r), [1 - lam]]),
                       bounds=[(None, None)] * (n_v + SA + r) + [(0, x) for x in cap])
    shape = (mdp.horizon, mdp.n_states, mdp.n_actions) if mdp.finite_horizon else (
        mdp.n_states, mdp.n_actions)
    u = torch.as_tensor(-res.ineqlin.marginals, dtype=mdp.dtype, device=mdp.device)
    return u.reshape(shape).clamp(min=0)


def _column(mdp, reward):
    """The optimal (hard) policy of ``reward`` and its summed occupancy ``(S, A)``."""
    plan = value_iteration(mdp, reward)
    return plan.policy, occupancy(mdp, plan)


def solve_columns(mdp: TabularMDP, R: torch.Tensor, p, b, alpha: float, lam: float,
                  tol: float = 1e-10, max_iters: int = 1000) -> torch.Tensor:
    """Dantzig-Wolfe column generation; stops when the best reduced cost is at most
    ``tol * max(1, max|R| * mass)`` (or the priced policy is already a column)."""
    D = R.shape[0]
    pn, bn = p.cpu().double().numpy(), b.cpu().double().numpy()
    with torch.no_grad():
        policy, x = _column(mdp, torch.einsum("d,dsa->sa", p, R))
        policies, G = [policy], [torch.einsum("dsa,sa->d", R, x).cpu().double().numpy()]
        scale = max(1.0, float(R.abs().max()) * float(x.sum()))
        for _ in range(max_iters):
            Gm = np.stack(G, 1)                                  # (D, m): returns of columns
            m = Gm.shape[1]
            A_ub, b_ub, c_tail = _cvar_rows(Gm, lam, alpha, pn, bn)
            A_eq = np.concatenate([np.ones((1, m)), np.zeros((1, D + 1))], 1)  # sum w = 1
            res = _linprog(np.concatenate([-lam * (pn @ Gm), c_tail]), A_ub=A_ub, b_ub=b_ub,
                           A_eq=A_eq, b_eq=[1.0],
                           bounds=[(0, None)] * m + [(None, None)] + [(0, None)] * D)
            q = torch.as_tensor(lam * pn - res.ineqlin.marginals, dtype=R.dtype,
                                device=R.device)
            policy, x = _column(mdp, torch.einsum("d,dsa->sa", q, R))
            g = torch.einsum("dsa,sa->d", R, x).cpu().double().numpy()
            gain = float(q.cpu().double().numpy() @ g) + res.eqlin.marginals[0]
            if gain <= tol * scale or np.abs(Gm - g[:, None]).max(0).min() <= 1e-12 * scale:
                break
            policies.append(policy)
            G.append(g)
        else:
            warnings.warn(f"BROIL column generation stopped after {max_iters} policies with "
                          f"reduced cost {gain:.3g} (tolerance {tol * scale:.3g}); the policy "
                          "is feasible but may be suboptimal", ConvergenceWarning, stacklevel=3)
        w = res.x[:m]
        u = 0.0
        for k in np.flatnonzero(w > 0):
            u = u + float(w[k]) * occupancy(mdp, policies[k], per_time=mdp.finite_horizon)
    return u
