r"""Posterior predictive checks of demonstrations (Gelman, Meng & Stern 1996).

Each of ``n_sims`` replicated datasets comes from one posterior draw (drawn with replacement):
the expert policy of that draw (soft or Boltzmann, rationality as in the posterior) is rolled
out once per observed demonstration, from that demonstration's start state and for its length,
so replicates differ from the data only in what the reward explains (the actions and, through
them, the states visited). A statistic ``T`` (a vector of k components) is computed on the
observed and on every replicated dataset.

p-values are mid-p posterior predictive p-values: ``p+ = P(T_rep > T_obs) + P(T_rep = T_obs) / 2``
over the replicates (ties split, as counts tie often); ``"two-sided"`` reports
``min(1, 2 min(p+, 1 - p+))``, ``"greater"`` reports ``p+`` (small when the data have more of
the statistic than the model predicts) and ``"less"`` ``1 - p+``. The omnibus p-value compares the
discrepancy ``X = sum_j (T_j - m_j)^2 / v_j``, with ``m, v`` the replicates' mean and variance,
of the data with that of every replicate (one-sided, mid-p); a component on which all replicates
agree and the data differ counts as infinitely discrepant.

Posterior predictive p-values use the data twice and are conservative (concentrated towards
1/2 for statistics the reward pins down, e.g. feature counts under a linear reward); a small
one is evidence of misfit, a large one is weak evidence of fit.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from bayesirl._validation import check_int, check_seed, is_posterior
from bayesirl.core.demos import Demonstrations
from bayesirl.core.mdp import TabularMDP, check_mdp
from bayesirl.decisions._inputs import expert_probs, reward_draws

__all__ = ["STATISTICS", "PredictiveCheck", "posterior_predictive_check"]

STATISTICS = ("state_visitation", "action_frequency", "feature_counts")
_ALTERNATIVES = ("two-sided", "greater", "less")


class PredictiveCheck(NamedTuple):
    """Result of :func:`posterior_predictive_check`.

    Attributes:
        observed: ``(k,)`` the statistic of the demonstrations.
        replicated: ``(n_sims, k)`` the statistic of every replicated dataset.
        p_values: ``(k,)`` per-component posterior predictive p-values.
        omnibus_p: p-value of the chi-square-like discrepancy over all components.
        ax: the matplotlib Axes drawn on, or None.
    """

    observed: torch.Tensor
    replicated: torch.Tensor
    p_values: torch.Tensor
    omnibus_p: float
    ax: object


def _simulate(mdp, pi, demos, g):
    """Replicates ``(states, actions)`` of shape ``(B, N, L)`` under policies ``pi (B, ...)``,
    each demonstration restarted from its observed start state; plus the final states
    ``(B, N)``: the state after each demonstration's own last step (its length, not the padded
    ``L``: the steps past it are simulated alongside but masked)."""
    B, (N, L) = pi.shape[0], demos.states.shape
    s = demos.states[:, 0].to(mdp.device).expand(B, N)
    b = torch.arange(B, device=mdp.device)[:, None]
    states = torch.empty(B, N, L, dtype=torch.long, device=mdp.device)
    actions = torch.empty_like(states)
    for t in range(L):
        probs = pi[b, t, s] if mdp.finite_horizon else pi[b, s]                  # (B, N, A)
        a = torch.multinomial(probs.reshape(B * N, -1), 1, generator=g).view(B, N)
        k = torch.multinomial(mdp.transition_probs[s, a].reshape(B * N, -1), 1,
                              generator=g).view(B, N, 1)
        states[..., t], actions[..., t] = s, a
        s = mdp.successors[s, a].gather(-1, k).squeeze(-1)
    after = torch.cat([states[..., 1:], s[..., None]], -1)      # the state after step t
    last = (demos.lengths.to(mdp.device) - 1).expand(B, N)[..., None]
    return states, actions, after.gather(-1, last).squeeze(-1)


def _builtin(name, mdp, states, actions, mask):
    """The statistic ``(B, k)`` of datasets ``states, actions: (B, N, L)`` with ``mask (N, L)``."""
    S, A = mdp.n_states, mdp.n_actions
    B, N, L = states.shape
    w = mask.to(mdp.dtype).expand(B, N, L)
    if name == "state_visitation":
        idx, size = states, S
    elif name == "action_frequency":
        idx, size = actions, A
    else:
        gamma = 1.0 if mdp.discount is None else mdp.discount
        w = w * gamma ** torch.arange(L, dtype=mdp.dtype, device=mdp.device)
        idx, size = states * A + actions, S * A
    flat = (torch.arange(B, device=mdp.device)[:, None, None] * size + idx).reshape(-1)
    counts = torch.zeros(B * size, dtype=mdp.dtype, device=mdp.device)
    counts = counts.index_add_(0, flat, w.reshape(-1)).view(B, size)
    if name != "feature_counts":
        return counts
    phi = mdp.state_action_features().reshape(S * A, -1)
    return counts @ phi / N


def _as_statistic(statistic, value, k=None) -> torch.Tensor:
    """A callable statistic's result ``value`` as ``(k,)`` floats; ``k`` (the length on the
    observed demonstrations) is checked on the replicates. What is not real numbers raises a
    TypeError naming the statistic."""
    name = f"the callable {getattr(statistic, '__name__', type(statistic).__name__)}"
    try:
        t = torch.as_tensor(value).detach()
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"statistic returned {type(value).__name__} {value!r:.60} ({name}), "
                        "expected a tensor of real numbers (k,)") from e
    if not (t.dtype.is_floating_point or t.dtype in (torch.int8, torch.int16, torch.int32,
                                                      torch.int64, torch.uint8, torch.bool)):
        raise TypeError(f"statistic returned a tensor of dtype {t.dtype} ({name}), expected "
                        "real numbers")
    t = t.reshape(-1).to(torch.get_default_dtype())
    if (k is not None and t.numel() != k) or not torch.isfinite(t).all():
        want = "finite numbers" if k is None else (
            f"{k} finite numbers (the same length as on the observed demonstrations)")
        raise ValueError(f"statistic returned {tuple(t.shape)} values ({name}), expected {want}")
    return t


def _mid_p(rep, obs) -> torch.Tensor:
    """``P(rep > obs) + P(rep == obs) / 2`` over the leading dim of ``rep``."""
    return (rep > obs).to(rep.dtype).mean(0) + 0.5 * (rep == obs).to(rep.dtype).mean(0)


def _discrepancy(x, m, v):
    same = x == m
    term = torch.where(v > 0, (x - m) ** 2 / v.clamp(min=1e-300),
                       torch.where(same, torch.zeros_like(x), torch.full_like(x, torch.inf)))
    return term.sum(-1)


def _plot(ax, check, labels):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.3 * check.observed.numel()), 3.0))
    rep = check.replicated.cpu()
    lo, q1, med, q3, hi = torch.quantile(
        rep, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=rep.dtype), dim=0)
    x = torch.arange(rep.shape[1])
    ax.vlines(x, lo, hi, color="0.6", lw=1, label="replicated 90%")
    ax.vlines(x, q1, q3, color="0.3", lw=3, label="replicated 50%")
    ax.plot(x, med, "_", color="0.1", ms=8)
    bad = check.p_values.cpu() < 0.05
    ax.plot(x[~bad], check.observed.cpu()[~bad], "o", color="C0", ms=4, label="observed")
    ax.plot(x[bad], check.observed.cpu()[bad], "o", color="C3", ms=4, label="observed, p < 0.05")
    if labels is not None and len(labels) <= 40:
        ax.set_xticks(x.tolist(), labels, rotation=90, fontsize=7)
    ax.set_title(f"posterior predictive check (omnibus p = {check.omnibus_p:.3g})")
    ax.legend(fontsize=7)
    return ax


def posterior_predictive_check(mdp: TabularMDP, posterior, demos: Demonstrations | None = None,
                               statistic="state_visitation", n_sims: int = 200, seed: int = 0,
                               ax=None, plot: bool = False,
                               alternative: str = "two-sided") -> PredictiveCheck:
    """Compare a statistic of the demonstrations with its posterior predictive distribution.

    Args:
        mdp: the MDP.
        posterior: a :class:`~bayesirl.RewardPosterior` or reward draws ``(D, S)`` /
            ``(D, S, A)`` (then the soft expert with rationality 1).
        demos: the observed :class:`~bayesirl.Demonstrations` (default ``posterior.demos``).
        statistic: ``"state_visitation"`` (visits per state, ``(S,)``), ``"action_frequency"``
            (``(A,)``), ``"feature_counts"`` (mean per demonstration of
            ``sum_t gamma^t phi(s_t, a_t)``, ``(d,)``), or a callable
            ``Demonstrations -> (k,)`` tensor of real numbers (a replicate's
            ``final_states`` are the states after each demonstration's own last step).
        n_sims: number of replicated datasets (>= 1).
        seed: an integer >= 0; seeds the choice of draws and the rollouts.
        ax, plot: draw observed values against replicated 50% / 90% intervals per component on
            ``ax`` (a new figure when ``plot=True`` and no ``ax``).
        alternative: ``"two-sided"``, ``"greater"`` or ``"less"`` (module docstring).

    Returns:
        :class:`PredictiveCheck` ``(observed, replicated, p_values, omnibus_p, ax)``.
    """
    mdp = check_mdp(mdp)
    if demos is None:
        demos = getattr(posterior, "demos", None) if is_posterior(posterior) else None
        if demos is None:
            raise ValueError("demos is None and the posterior has no demos, expected "
                             "Demonstrations")
    if not isinstance(demos, Demonstrations):
        raise TypeError(f"demos must be Demonstrations, got {type(demos).__name__}")
    demos.validate(mdp)
    if not (callable(statistic) or statistic in STATISTICS):
        raise ValueError(f"statistic is {statistic!r}, expected one of {STATISTICS} or a "
                         "callable Demonstrations -> tensor")
    if statistic == "feature_counts" and mdp.features is None:
        raise ValueError("statistic='feature_counts' needs an MDP with features")
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative is {alternative!r}, expected one of {_ALTERNATIVES}")
    n_sims = check_int("n_sims", n_sims)
    seed = check_seed("seed", seed)
    R, p = reward_draws(mdp, posterior)
    g = torch.Generator(device=mdp.device).manual_seed(seed)
    idx = torch.multinomial(p, n_sims, replacement=True, generator=g)
    uniq, inverse = idx.unique(return_inverse=True)
    pi = expert_probs(mdp, posterior, R, uniq)[inverse]
    states, actions, final = _simulate(mdp, pi, demos, g)
    mask = demos.mask.to(mdp.device)
    if callable(statistic):
        observed = _as_statistic(statistic, statistic(demos))
        replicated = torch.stack([_as_statistic(statistic, statistic(Demonstrations(
            states[b], actions[b], mask, final[b])), observed.numel()) for b in range(n_sims)])
    else:
        observed = _builtin(statistic, mdp, demos.states.to(mdp.device)[None],
                            demos.actions.to(mdp.device)[None], mask)[0]
        replicated = _builtin(statistic, mdp, states, actions, mask)
    upper = _mid_p(replicated, observed)
    p_values = {"greater": upper, "less": 1 - upper,
                "two-sided": (2 * torch.minimum(upper, 1 - upper)).clamp(max=1)}[alternative]
    m = replicated.mean(0)
    v = replicated.var(0) if n_sims > 1 else torch.zeros_like(observed)
    omnibus = float(_mid_p(_discrepancy(replicated, m, v), _discrepancy(observed, m, v)))
    check = PredictiveCheck(observed, replicated, p_values, omnibus, None)
    if ax is not None or plot:
        labels = {"state_visitation": mdp.state_names, "action_frequency": mdp.action_names,
                  "feature_counts": mdp.feature_names}.get(statistic) if isinstance(
                      statistic, str) else None
        check = check._replace(ax=_plot(ax, check, labels))
    return check
