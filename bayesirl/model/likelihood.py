r"""The Bayesian IRL model: reward parameters -> planner -> likelihood of observed actions.

**Soft likelihood (optimality variables).** Attach to every step a binary variable ``O_t`` with
``p(O_t = 1 | s_t, a_t) = exp(beta r(s_t, a_t))``. Conditioning the trajectory distribution
``p(tau) = mu(s_1) prod_t P(s_{t+1} | s_t, a_t)`` (uniform action prior) on ``O_{1:T} = 1`` and
computing the posterior over actions by backward messages gives

    pi_t(a | s) = exp(Q_t(s, a) - V_t(s)),  V_t(s) = log sum_a exp Q_t(s, a),
    Q_t(s, a) = beta r(s, a) + E_{s' ~ P(. | s, a)} V_{t+1}(s'),

the maximum causal entropy policy (Ziebart et al. 2010; Levine 2018). With ``E[V]`` rather than
``log E[exp V]`` this requires the dynamics not to be controlled by the posterior (the
"causal" variant), which is what a soft value iteration computes. The log-likelihood of
demonstrations is ``sum_i sum_t log pi_t(a_t^i | s_t^i)``; the dynamics terms do not depend on
the reward and drop out.

**Boltzmann likelihood.** ``pi(a | s) ∝ exp(beta Q*(s, a))`` with the optimal (hard) ``Q*``, as
in classic Bayesian IRL (Ramachandran & Amir 2007).

The rationality ``beta`` is a fixed positive float or a prior, inferred jointly with the reward.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin

from bayesirl._validation import check_number, has_positive_support
from bayesirl.core.demos import Demonstrations
from bayesirl.core.mdp import TabularMDP
from bayesirl.model.likelihood_kernels import DemoLogLikelihood
from bayesirl.planning.bellman import (
    _use_cpu_kernel,
    broadcast_reward,
    soft_value_iteration,
    value_iteration,
)

__all__ = ["LIKELIHOODS", "action_log_probs", "demo_log_likelihood", "irl_model",
           "step_log_probs"]

LIKELIHOODS = ("soft", "boltzmann")


def check_likelihood(likelihood) -> str:
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood is {likelihood!r}, expected one of {LIKELIHOODS}")
    return likelihood


def check_rationality(rationality):
    """A positive finite float (a Python or NumPy number or a 0-d real tensor, returned as a
    float), or a distribution on the positive reals."""
    if isinstance(rationality, torch.distributions.Distribution):
        if rationality.event_shape != () or rationality.batch_shape != ():
            raise ValueError("rationality prior must be a scalar distribution, got batch_shape "
                             f"{tuple(rationality.batch_shape)} and event_shape "
                             f"{tuple(rationality.event_shape)}")
        if not has_positive_support(rationality):
            raise ValueError(f"rationality prior must live on the positive reals, got support "
                             f"{rationality.support}")
        if not isinstance(rationality, TorchDistributionMixin):  # Pyro's, for SVI's guides
            from bayesirl.model.rewards import _wrap

            rationality = _wrap(rationality, "rationality")
        return rationality
    value = rationality
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype != torch.bool:
        value = value.item()
    try:
        return check_number("rationality", value, 0.0, low_open=True)
    except ValueError:
        raise ValueError(f"rationality is {rationality!r}, expected a number > 0 or a prior "
                         "distribution (e.g. dist.LogNormal(0., 1.))") from None


def action_log_probs(mdp: TabularMDP, reward: torch.Tensor, likelihood: str = "soft",
                     rationality=1.0) -> torch.Tensor:
    """The expert's ``log pi(a | s)`` under a reward.

    Args:
        reward: ``(..., S, A)`` or ``(..., S)``.
        likelihood: ``"soft"`` (maximum causal entropy) or ``"boltzmann"`` (``exp(beta Q*)``).
        rationality: beta, a float or a tensor broadcasting with the batch dims ``(...)``.

    Returns:
        ``(..., T, S, A)`` (finite horizon) or ``(..., S, A)`` (discounted).
    """
    r = broadcast_reward(mdp, reward)
    beta = torch.as_tensor(rationality, dtype=r.dtype, device=r.device)
    if likelihood == "soft":
        return soft_value_iteration(mdp, beta[..., None, None] * r, check=False).log_policy
    q = value_iteration(mdp, r, check=False).q
    beta = beta[..., None, None, None] if mdp.finite_horizon else beta[..., None, None]
    return torch.log_softmax(beta * q, -1)


def step_log_probs(mdp, demos, log_policy):
    """``log pi_t(a_t | s_t)`` per step: ``(..., N, T)``, zero on padding, for ``log_policy``
    ``(..., T, S, A)`` (finite horizon) or ``(..., S, A)`` (discounted); any per-state-action
    quantity gathers alike (the likelihood's derivatives gather ``d log pi`` with it)."""
    S, A = mdp.n_states, mdp.n_actions
    idx = demos.states * A + demos.actions
    if mdp.finite_horizon:
        t = torch.arange(demos.max_length, device=idx.device)
        idx = idx + t * (S * A)
        flat = log_policy.flatten(-3)
    else:
        flat = log_policy.flatten(-2)
    lp = flat[..., idx.reshape(-1)].reshape(*flat.shape[:-1], *idx.shape)
    return lp.masked_fill(~demos.mask, 0.0)


def demo_log_likelihood(mdp: TabularMDP, demos: Demonstrations, reward: torch.Tensor,
                        likelihood: str = "soft", rationality=1.0) -> torch.Tensor:
    """Pointwise log-likelihood ``(..., N)``: one term per demonstration, batched over rewards.

    ``reward: (..., S, A)`` or ``(..., S)``; ``rationality`` a float or a ``(...)`` tensor.
    """
    r = broadcast_reward(mdp, reward)
    if not (mdp.finite_horizon and _use_cpu_kernel(r)):
        log_policy = action_log_probs(mdp, reward, likelihood, rationality)
        return step_log_probs(mdp, demos, log_policy).sum(-1)
    beta = torch.as_tensor(rationality, dtype=r.dtype, device=r.device)
    batch = torch.broadcast_shapes(r.shape[:-2], beta.shape)
    S, A = r.shape[-2:]
    boltzmann = likelihood == "boltzmann"
    if not boltzmann:  # the soft DP plans on beta r directly
        r, beta = beta[..., None, None] * r, torch.ones((), dtype=r.dtype)
    r = r.expand(*batch, S, A).reshape(-1, S, A)
    ll = DemoLogLikelihood.apply(r, beta.expand(batch).reshape(-1), mdp, demos, boltzmann)
    return ll.reshape(*batch, demos.n)


def irl_model(mdp: TabularMDP, demos: Demonstrations, reward_model, likelihood: str = "soft",
              rationality=1.0, subsample_size: int | None = None) -> torch.Tensor:
    """Pyro model of the demonstrations given a reward model with a prior.

    Samples the reward parameters (sites of ``reward_model``), optionally the rationality
    (site ``"rationality"``), plans, and observes every demonstration's actions at site
    ``"actions"`` inside ``pyro.plate("demo", N, subsample_size=...)``: one masked sequence of
    ``Categorical`` actions per demonstration, so the pointwise log-likelihood exists and SVI
    can subsample demonstrations.

    Returns the reward ``(S,)`` or ``(S, A)``.
    """
    reward = reward_model()
    beta = rationality
    if isinstance(rationality, torch.distributions.Distribution):
        beta = pyro.sample("rationality", rationality)
    log_policy = action_log_probs(mdp, reward, likelihood, beta)
    with pyro.plate("demo", demos.n, subsample_size=subsample_size) as idx:
        sub = demos[idx] if subsample_size is not None else demos
        steps = torch.arange(sub.max_length, device=sub.states.device)
        logits = (log_policy[steps, sub.states] if mdp.finite_horizon
                  else log_policy[sub.states])
        pyro.sample("actions", dist.Categorical(logits=logits).mask(sub.mask).to_event(1),
                    obs=sub.actions)
    return reward
