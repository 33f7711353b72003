r"""Guided cost learning: sample-based maximum entropy IRL for unknown dynamics.

Finn, Levine & Abbeel, "Guided cost learning: deep inverse optimal control via policy
optimization", ICML 2016. The MaxEnt model p(tau) ∝ p_dyn(tau) exp(R_theta(tau)) has the
partition function Z = E_q[exp(R_theta(tau)) / q(tau)] for any sampler q; with q the learner's
own policy pi the dynamics cancel, so the algorithm touches the environment only through
``reset``/``step`` and never reads a transition table. This is the path MaxEnt model of
Ziebart et al. (2008); under stochastic dynamics it differs from the maximum causal entropy model
of :func:`bayesirl.soft_value_iteration` (they agree for deterministic dynamics).
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from bayesirl._validation import check_int, check_number
from bayesirl.baselines.result import IRLResult
from bayesirl.core import envs
from bayesirl.core.demos import Demonstrations
from bayesirl.core.mdp import TabularMDP

__all__ = ["guided_cost_learning"]


def _as_sampler(env, horizon):
    """An :class:`EnvSampler` for ``env``; a TabularMDP is wrapped, its tables never read."""
    if isinstance(env, envs.EnvSampler):
        return env
    try:
        return envs.sampler(env, horizon)
    except TypeError as e:
        raise ValueError(f"env must be a TabularMDP, an EnvSampler, or a Gymnasium env (or id) "
                         f"with Discrete observation and action spaces: {e}") from e


def _visit_counts(states, actions, mask, S, A, dtype):
    """``(M, S * A)`` visits of each ``(s, a)`` by each of M padded ``(M, T)`` trajectories."""
    out = torch.zeros(states.shape[0], S * A, dtype=dtype)
    return out.scatter_add_(1, states * A + actions, mask.to(dtype))


def _log_ratios(reward, log_policy, counts, log_demo=None, n_demos=0):
    """``(M,)`` unnormalised log importance ratios ``R(tau_j) - log q(tau_j)``.

    ``reward, log_policy: (S, A)``; ``counts: (M, S * A)`` from :func:`_visit_counts`, the last
    ``n_demos`` rows being demonstrations. ``q`` is the sampler ``pi = exp(log_policy)`` or, with
    ``n_demos``, the mixture ``(m pi(tau) + n_demos q_demo(tau)) / M`` of the ``m = M - n_demos``
    samples and the demonstrations, ``q_demo`` the stationary policy ``exp(log_demo): (S, A)``.
    Dynamics terms cancel; the self-normalised weights are ``softmax`` of the ratios.
    """
    log_q = counts @ log_policy.reshape(-1)
    if n_demos:
        m = counts.shape[0] - n_demos
        log_q = torch.logaddexp(log_q + math.log(m), counts @ log_demo.reshape(-1)
                                + math.log(n_demos)) - math.log(m + n_demos)
    return counts @ reward.reshape(-1) - log_q


def _rollouts(sampler, log_policy, n, T, rng, seed):
    """``n`` episodes of ``T`` steps under ``pi = exp(log_policy): (S, A)``.

    An episode the environment ends early stays in its last state (absorbing, as in
    :func:`bayesirl.core.envs.from_gymnasium`) while actions are still drawn from pi. Returns numpy
    ``states, actions, next_states: (n, T)`` and the environment returns ``(n,)``.
    """
    pi = log_policy.exp().cpu().numpy()
    cdf = np.cumsum(pi / pi.sum(1, keepdims=True), 1).tolist()
    last = pi.shape[1] - 1
    u = rng.random((n, T)).tolist()
    states, actions, nxt = ([[0] * T for _ in range(n)] for _ in range(3))
    returns = [0.0] * n
    for i in range(n):
        s, done = sampler.reset(seed=seed if i == 0 else None), False
        si, ai, ni = states[i], actions[i], nxt[i]
        for t in range(T):
            a = min(bisect.bisect_right(cdf[s], u[i][t]), last)
            si[t], ai[t] = s, a
            if not done:
                s, r, done = sampler.step(a)
                returns[i] += r
            ni[t] = s
    return (*(np.array(x, dtype=np.int64) for x in (states, actions, nxt)), np.array(returns))


def _soft_q(q, reward, sa, s2, weight, n_sa, gamma, lr, sweeps):
    """``sweeps`` soft Q-iteration steps on the replay, ``q += lr * (target - q)``.

    Target ``r(s, a) + gamma * mean_{s' in replay(s, a)} logsumexp_a' q(s', a')``; a pair never
    tried is scored as if it stayed in place, ``r(s, a) + gamma * V(s)``.
    """
    S, A = q.shape
    tried = n_sa > 0
    for _ in range(sweeps):
        v = torch.logsumexp(q, 1)
        ev = torch.zeros(S * A, dtype=q.dtype).index_add_(0, sa, weight * v[s2])
        ev = torch.where(tried, ev / n_sa.clamp(min=1), v.repeat_interleave(A)).view(S, A)
        q = q + lr * (reward + gamma * ev - q)
    return q


class _Replay:
    """Counts of the observed transitions ``(s, a, s')``, keyed ``(s * A + a) * S + s'``."""

    def __init__(self, S, A):
        self.S, self.A = S, A
        self.keys, self.counts = np.zeros(0, np.int64), np.zeros(0)

    def add(self, states, actions, nxt):
        keys = np.concatenate([self.keys, ((states * self.A + actions) * self.S + nxt).ravel()])
        weights = np.concatenate([self.counts, np.ones(keys.size - self.keys.size)])
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.counts = np.bincount(inverse.ravel(), weights=weights)

    def tensors(self, dtype):
        """``sa, s', counts`` of the distinct transitions and ``n_sa: (S * A,)`` (counts in
        ``dtype``)."""
        sa, s2 = np.divmod(self.keys, self.S)
        c = torch.as_tensor(self.counts, dtype=dtype)
        sa = torch.as_tensor(sa)
        return sa, torch.as_tensor(s2), c, torch.zeros(self.S * self.A, dtype=dtype).index_add_(
            0, sa, c)


def _check_demos(demos, S, A, horizon):
    if not isinstance(demos, Demonstrations):
        raise TypeError(f"demos must be a Demonstrations, got {type(demos).__name__}")
    for name, t, n in (("states", demos.states, S), ("actions", demos.actions, A)):
        if (t >= n).any():
            i, k = (int(x) for x in (t >= n).nonzero()[0])
            raise ValueError(f"demos.{name}[{i}, {k}] is {t[i, k].item()}, expected an index in "
                             f"[0, {n}) for the environment's n_{name}")
    final = demos.final_states
    if final is not None and (final >= S).any():
        i = int((final >= S).nonzero()[0, 0])
        raise ValueError(f"demos.final_states[{i}] is {final[i].item()}, expected a state "
                         f"index in [0, {S})")
    if horizon is not None and demos.max_length > horizon:
        raise ValueError(f"demos have length {demos.max_length}, expected at most "
                         f"horizon={horizon}")


def _features(features, S, A, dtype):
    """``(S * A, d)`` flattened state-action features in ``dtype``, or None for one-hot
    ``(s, a)``."""
    if features is None:
        return None
    phi = torch.as_tensor(features, dtype=dtype)
    if phi.dim() == 2 and phi.shape[0] == S:
        phi = phi.unsqueeze(1).expand(S, A, phi.shape[1])
    if phi.dim() != 3 or tuple(phi.shape[:2]) != (S, A) or phi.shape[2] < 1:
        raise ValueError(f"features must have shape ({S}, {A}, d) or ({S}, d), "
                         f"got {tuple(phi.shape)}")
    if not torch.isfinite(phi).all():
        raise ValueError("features must be finite")
    return phi.reshape(S * A, -1)


def guided_cost_learning(env, demos: Demonstrations, *, features=None, horizon=None,
                         n_iters=200, n_samples=64, lr=0.05, policy_lr=1.0, policy_sweeps=5,
                         discount=None, mix_demos=True, l2=0.0, seed=0,
                         progress=False) -> IRLResult:
    r"""Guided cost learning (Finn, Levine & Abbeel, ICML 2016) with a linear reward.

    Sample-based MaxEnt IRL for *unknown* dynamics: the environment is only sampled through
    ``reset``/``step`` (a TabularMDP is wrapped with :func:`bayesirl.core.envs.sampler`; its tables
    are never read). The reward is ``r_theta(s, a) = phi(s, a) . theta`` (bayesirl's reward
    weights; the paper learns a cost, ``c = -r``). Each iteration:

    1. sample ``n_samples`` episodes of ``horizon`` steps from the tabular soft policy
       ``pi = softmax(Q): (S, A)``; an episode the environment ends early stays in its last
       state (absorbing, as :func:`bayesirl.core.envs.from_gymnasium` models terminal states; so
       does any ``done`` of a given EnvSampler, e.g. at its own horizon);
    2. weight the background set, the samples plus (``mix_demos``, as in the paper) the
       demonstrations: ``w_j ∝ exp(R_theta(tau_j)) / q(tau_j)``, self-normalised in log space.
       ``q`` is the balance-heuristic mixture ``(m pi + N q_demo) / (m + N)``, ``q_demo`` a
       Laplace-smoothed behaviour-cloning policy of the demonstrations, the paper's "rough
       density estimate" of them (with ``q = pi`` for the demonstrations as well, one of them
       soon takes all the weight and the ESS collapses to 1); without ``mix_demos``, ``q = pi``;
    3. one Adam step on the IOC loss
       ``-mean_demos R_theta(tau) + log mean_j exp(R_theta(tau_j)) / q(tau_j) + l2 |theta|^2``,
       whose gradient is ``-mean_demos grad R + sum_j w_j grad R(tau_j)`` (plus the penalty);
    4. improve the policy from data only (soft Q-learning): ``policy_sweeps`` sweeps of step
       ``policy_lr`` over a replay of every transition ``(s, a, s')`` seen so far (samples and
       demonstrations), target ``r_theta(s, a) + discount * mean_{s'} logsumexp Q(s', .)``.
       Terminal states being absorbing, every target bootstraps; an ``(s, a)`` never tried is
       scored as if it stayed in ``s``.

    Args:
        env: Gymnasium env with Discrete spaces, its id, an :class:`~bayesirl.core.envs.EnvSampler`,
            or a :class:`~bayesirl.TabularMDP`.
        demos: expert :class:`~bayesirl.core.demos.Demonstrations` ``(N, T)``; a demonstration
            shorter than the horizon contributes only its own steps.
        features: ``(S, A, d)`` or ``(S, d)``; default one-hot ``(s, a)`` (``d = S * A``).
        horizon: steps per sampled episode, at least ``demos.max_length`` (the default).
        n_iters, n_samples: iterations, and episodes sampled per iteration.
        lr: Adam step size on theta. policy_lr, policy_sweeps: soft Q-iteration step in (0, 1]
            and sweeps per iteration. discount: of the soft Q-iteration, default
            ``1 - 1 / horizon``.
        mix_demos: add the demonstrations to the background samples.
        l2: weight of the ``|theta|^2`` penalty.
        seed: seeds the numpy Generator of the actions and the first environment reset (no
            global random state; theta starts at 0, so no torch generator is needed).
        progress: show a tqdm bar over iterations.

    Computation is on the CPU, in ``env.dtype`` for a :class:`~bayesirl.TabularMDP` (as every
    other baseline follows ``mdp.dtype``) and in torch's default dtype for other
    environments, which have none.

    Returns:
        :class:`~bayesirl.baselines.result.IRLResult`: ``reward: (S, A)``, ``theta: (d,)``,
        ``history`` with per-iteration ``"loss"``, ``"ess"`` (``1 / sum_j w_j^2``, out of
        ``n_samples (+ N)``), ``"sample_return"`` (mean environment return of the sampled
        episodes: the success rate on FrozenLake) and ``"demo_log_prob"`` (mean log-probability
        of the demonstrations' actions under the sampler); ``info`` with ``"policy": (S, A)`` the
        final sampler, ``"discount"``, ``"horizon"``.
    """
    n_iters = check_int("n_iters", n_iters)
    n_samples = check_int("n_samples", n_samples)
    lr = check_number("lr", lr, 0.0, low_open=True)
    policy_lr = check_number("policy_lr", policy_lr, 0.0, 1.0, low_open=True)
    policy_sweeps = check_int("policy_sweeps", policy_sweeps)
    l2 = check_number("l2", l2, 0.0)
    if horizon is not None:
        horizon = check_int("horizon", horizon)
    sampler = _as_sampler(env, horizon)
    S, A = sampler.n_states, sampler.n_actions
    _check_demos(demos, S, A, horizon)
    demos = demos.to("cpu")
    T = demos.max_length if horizon is None else horizon
    gamma = 1 - 1 / T if discount is None else check_number(
        "discount", discount, 0.0, 1.0, high_open=True)
    # an MDP's dtype, read off its initial distribution (same dtype): the tables stay unread
    dtype = env.initial.dtype if isinstance(env, TabularMDP) else torch.get_default_dtype()
    phi = _features(features, S, A, dtype)
    rng = np.random.default_rng(seed)
    env_seed = int(rng.integers(2**31))

    replay = _Replay(S, A)
    keep = demos.mask[:, 1:]  # step t + 1 observed: the transition of step t is
    replay.add(demos.states[:, :-1][keep].numpy(), demos.actions[:, :-1][keep].numpy(),
               demos.states[:, 1:][keep].numpy())
    if demos.final_states is not None:
        rows, last = torch.arange(demos.n), demos.lengths - 1
        replay.add(demos.states[rows, last].numpy(), demos.actions[rows, last].numpy(),
                   demos.final_states.numpy())
    demo_counts = _visit_counts(demos.states, demos.actions, demos.mask, S, A, dtype)
    demo_sa = demo_counts.sum(0).view(S, A)
    log_demo = torch.log((demo_sa + 1) / (demo_sa.sum(1, keepdim=True) + A))
    n_mix = demos.n if mix_demos else 0

    theta = torch.zeros(S * A if phi is None else phi.shape[1], dtype=dtype, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    q = torch.zeros(S, A, dtype=dtype)
    history = {"loss": [], "ess": [], "sample_return": [], "demo_log_prob": []}

    def reward_of(th):
        return (th if phi is None else phi @ th).view(S, A)

    for it in tqdm(range(n_iters), desc="guided cost learning", disable=not progress):
        log_pi = torch.log_softmax(q, 1)
        s, a, s2, returns = _rollouts(sampler, log_pi, n_samples, T, rng,
                                      env_seed if it == 0 else None)
        replay.add(s, a, s2)
        counts = _visit_counts(torch.as_tensor(s), torch.as_tensor(a),
                               torch.ones(s.shape, dtype=torch.bool), S, A, dtype)
        if n_mix:
            counts = torch.cat([counts, demo_counts])
        r = reward_of(theta)
        z = _log_ratios(r, log_pi, counts, log_demo, n_mix)
        loss = (-(demo_counts @ r.reshape(-1)).mean() + torch.logsumexp(z, 0)
                - math.log(len(z)) + l2 * theta.square().sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            log_w = torch.log_softmax(z, 0)
            q = _soft_q(q, reward_of(theta), *replay.tensors(dtype), gamma, policy_lr,
                        policy_sweeps)
        history["loss"].append(loss.item())
        history["ess"].append(1.0 / log_w.mul(2).exp().sum().item())
        history["sample_return"].append(float(returns.mean()))
        history["demo_log_prob"].append((demo_counts @ log_pi.reshape(-1)).mean().item())

    theta = theta.detach()
    return IRLResult(reward=reward_of(theta).clone(), theta=theta, history=history,
                     info={"policy": torch.softmax(q, 1), "discount": gamma, "horizon": T})
