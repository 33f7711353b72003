"""Pieces shared by the point-estimate baselines (private).

- input checks at entry (:func:`check_problem`, :func:`check_number`, :func:`check_choice`);
- expert statistics: per-demonstration (discounted) state-action counts ``(S, A)`` and the start
  distribution ``(S,)``;
- the planning oracle :func:`greedy` (hard optimal policy and its feature expectations);
- the maximum causal entropy dual :func:`soft_dual` and the optimiser :func:`fit_linear` shared by
  MCE and MaxEnt IRL (they differ only in the dual's backward pass), which solves in float64
  (:func:`in_float64`).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.optimize
import torch
from tqdm.auto import tqdm

from bayesirl._validation import check_choice
from bayesirl.core.demos import Demonstrations
from bayesirl.core.mdp import TabularMDP
from bayesirl.planning.bellman import (
    ConvergenceWarning,
    feature_expectations,
    occupancy,
    soft_value_iteration,
    value_iteration,
)


# ---------------------------------------------------------------------------- input checks
def check_problem(mdp, demos) -> tuple[TabularMDP, Demonstrations]:
    """Validate ``mdp`` (a TabularMDP with features) and ``demos`` against it.

    A finite-horizon MDP needs every demonstration to have exactly ``mdp.horizon`` steps: the
    baselines compare the experts' total feature counts with those of full-horizon policies.
    """
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp must be a TabularMDP, got {type(mdp).__name__}")
    if mdp.features is None:
        raise ValueError("mdp has no features, expected features (S, d) or (S, A, d): the "
                         "baselines fit rewards of the features")
    if not isinstance(demos, Demonstrations):
        raise TypeError(f"demos must be Demonstrations, got {type(demos).__name__}")
    demos.validate(mdp)
    if mdp.finite_horizon:
        short = demos.lengths != mdp.horizon
        if short.any():
            i = int(short.nonzero()[0, 0])
            raise ValueError(f"demos: demonstration {i} has length {int(demos.lengths[i])}, "
                             f"expected the MDP's horizon {mdp.horizon} (feature matching "
                             "compares full-horizon feature counts)")
    return mdp, demos


# ---------------------------------------------------------------------------- expert statistics
def expert_counts(mdp: TabularMDP, demos: Demonstrations) -> torch.Tensor:
    """``(S, A)`` mean over demonstrations of ``sum_t gamma^t [s_t = s, a_t = a]``.

    Finite horizon: plain counts (gamma = 1), equal to ``demos.counts(S, A) / N``. Discounted:
    each demonstration's discounted counts are rescaled to the mass ``1 / (1 - gamma)`` of an
    infinite discounted occupancy, i.e. its discounted state-action distribution stands in for
    the unobserved tail. Without this, features that sum to a constant (one-hot cells) could
    never be matched and the MCE dual would be unbounded below.
    """
    S, A = mdp.n_states, mdp.n_actions
    w = demos.mask.to(device=mdp.device, dtype=mdp.dtype)
    if not mdp.finite_horizon:
        t = torch.arange(demos.max_length, device=mdp.device, dtype=mdp.dtype)
        w = w * mdp.discount ** t
        w = w / (w.sum(1, keepdim=True) * (1 - mdp.discount))
    flat = (demos.states * A + demos.actions).to(mdp.device).reshape(-1)
    out = torch.zeros(S * A, dtype=mdp.dtype, device=mdp.device).index_add_(0, flat, w.reshape(-1))
    return out.reshape(S, A) / demos.n


def expert_features(mdp: TabularMDP, counts: torch.Tensor) -> torch.Tensor:
    """``(d,)`` the experts' feature expectations ``mu_E = <counts, phi>``."""
    return torch.einsum("sa,sad->d", counts, mdp.state_action_features())


def start_distribution(mdp: TabularMDP, demos: Demonstrations, initial: str) -> torch.Tensor:
    """``(S,)`` start distribution of the policies' expected feature counts: the
    demonstrations' first states (``"empirical"``) or ``mdp.initial`` (``"mdp"``).

    The experts' counts always start where the demonstrations do, so ``"empirical"`` compares
    like with like; ``"mdp"`` is for demonstrations whose starts are a sample of
    ``mdp.initial`` and too few to estimate it."""
    check_choice("initial", initial, ("empirical", "mdp"))
    if initial == "mdp":
        return mdp.initial
    return demos.empirical_initial(mdp.n_states).to(device=mdp.device, dtype=mdp.dtype)


def linear_reward(mdp: TabularMDP, theta: torch.Tensor) -> torch.Tensor:
    """``r(s, a) = phi(s, a) . theta``, shape ``(S, A)``."""
    return mdp.state_action_features() @ theta


# ---------------------------------------------------------------------------- planning oracles
def greedy(mdp: TabularMDP, reward: torch.Tensor, start: torch.Tensor):
    """``(plan, mu)``: the hard optimal plan for ``reward (S, A)`` and its feature expectations
    ``(d,)`` from the start distribution ``start (S,)`` (:func:`start_distribution`).

    Ties split uniformly, so the zero reward gives the uniform random policy.
    """
    plan = value_iteration(mdp, reward.detach())
    return plan, feature_expectations(mdp, plan, initial=start)


def soft_dual(mdp: TabularMDP, reward, counts, start):
    """The maximum causal entropy dual ``L(r) = E_start[V(s_0)] - <counts, r>``.

    ``V`` is the soft (causal) value of ``reward (S, A)``. Returns ``(L, occupancy (S, A))``; the
    gradient of ``L`` in ``r`` is ``occupancy - counts`` (expected minus empirical visitation).
    """
    with torch.no_grad():
        plan = soft_value_iteration(mdp, reward)
        v0 = plan.v[0] if mdp.finite_horizon else plan.v
        occ = occupancy(mdp, plan, initial=start)
        return float(start @ v0 - (counts * reward).sum()), occ


# ---------------------------------------------------------------------------- optimiser
def in_float64(mdp: TabularMDP) -> TabularMDP:
    """``mdp`` with its floating tensors in float64 (itself if already float64).

    The probability rows (``transition_probs``, ``initial``) are renormalised after the cast: a
    float32 MDP is valid when they sum to 1 within float32's tolerance, which float64's
    validation would refuse."""
    if mdp.dtype == torch.float64:
        return mdp
    p, p0 = mdp.transition_probs.to(torch.float64), mdp.initial.to(torch.float64)
    return mdp.replace(transition_probs=p / p.sum(-1, keepdim=True), initial=p0 / p0.sum())


def fit_linear(mdp, counts, start, dual, *, l2, method, max_iters, tol, lr, progress, desc):
    """Minimise ``dual(phi . theta) + l2 / 2 |theta|^2`` over ``theta (d,)`` from 0.

    ``dual(mdp, reward, counts, start) -> (loss, occupancy)``; the gradient in ``theta`` is
    ``mu(theta) - mu_E + l2 theta`` with ``mu = <occupancy, phi>``, ``mu_E = <counts, phi>``.
    ``method`` is ``"lbfgs"`` (scipy L-BFGS-B, analytic gradient) or ``"adam"``; both stop when
    the gradient's sup-norm is at most ``tol``. Returns ``(theta, history, info)``, ``theta``
    and ``info["grad"]`` in ``mdp.dtype``.

    The solve runs in float64 whatever ``mdp.dtype`` (``mdp``, ``counts`` and ``start`` are
    cast): in float32 the dual's round-off is larger than the decreases L-BFGS sees near the
    optimum, so it stopped early, short of ``tol``, and warned as if the dual were unbounded.
    A float32 and a float64 MDP thus give the same ``theta`` to float32 precision.
    """
    dtype = mdp.dtype
    mdp = in_float64(mdp)
    counts, start = (x.to(device=mdp.device, dtype=mdp.dtype) for x in (counts, start))
    phi = mdp.state_action_features()
    mu_e = expert_features(mdp, counts)
    history = {"loss": [], "grad_norm": [], "feature_distance": []}

    def evaluate(theta):
        loss, occ = dual(mdp, phi @ theta, counts, start)
        diff = torch.einsum("sa,sad->d", occ, phi) - mu_e
        grad = diff + l2 * theta
        return loss + 0.5 * l2 * float(theta @ theta), grad, float(diff.norm())

    def record(point):
        loss, grad, dist = point
        history["loss"].append(loss)
        history["grad_norm"].append(float(grad.norm()))
        history["feature_distance"].append(dist)
        bar.update()

    theta = torch.zeros(phi.shape[-1], dtype=mdp.dtype, device=mdp.device)
    bar = tqdm(total=max_iters, desc=desc, disable=not progress, leave=False)
    point = evaluate(theta)
    record(point)
    with bar:
        if method == "lbfgs":
            cache = {}

            def fun(x):
                t = torch.as_tensor(x, dtype=mdp.dtype, device=mdp.device)
                cache["x"], cache["point"] = x.copy(), evaluate(t)
                return cache["point"][0], cache["point"][1].cpu().numpy()

            def callback(xk):
                same = "x" in cache and np.array_equal(cache["x"], xk)
                t = torch.as_tensor(xk, dtype=mdp.dtype, device=mdp.device)
                record(cache["point"] if same else evaluate(t))

            res = scipy.optimize.minimize(
                fun, theta.cpu().numpy(), jac=True, method="L-BFGS-B", callback=callback,
                options={"maxiter": max_iters, "gtol": tol, "ftol": 0.0, "maxcor": 20})
            theta = torch.as_tensor(res.x, dtype=mdp.dtype, device=mdp.device)
            point, iters, message = evaluate(theta), int(res.nit), str(res.message)
        else:
            param = theta.clone().requires_grad_(True)
            opt = torch.optim.Adam([param], lr=lr)
            iters = 0
            while point[1].abs().max() > tol and iters < max_iters:
                param.grad = point[1].clone()
                opt.step()
                iters += 1
                point = evaluate(param.detach())
                record(point)
            theta, message = param.detach(), "adam"
    sup = float(point[1].abs().max())
    converged = sup <= tol
    if not converged:
        warnings.warn(
            f"{desc} did not converge: gradient sup-norm {sup:.3g} > tol={tol:g} after {iters} "
            f"iterations ({message}), |theta|_inf = {float(theta.abs().max()):.3g}. A large "
            "|theta| means the experts' feature expectations lie on the boundary of what "
            "policies achieve (e.g. features the demonstrations never visit), where with l2 = 0 "
            f"no maximiser exists: raise l2 (now {l2:g}). Otherwise raise max_iters or tol.",
            ConvergenceWarning, stacklevel=3)
    return theta.to(dtype), history, {"converged": converged, "iterations": iters,
                                      "message": message, "grad": point[1].to(dtype)}
