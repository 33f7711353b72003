"""Deep maximum entropy IRL (Wulfmeier, Ondruska and Posner 2016)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from bayesirl._validation import check_int, check_number, positive_ints
from bayesirl.baselines import _common
from bayesirl.baselines.result import IRLResult

__all__ = ["deep_maxent_irl"]


def _mlp(n_in, hidden, dtype, device):
    layers, width = [], n_in
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ELU()]
        width = h
    layers.append(torch.nn.Linear(width, 1))
    return torch.nn.Sequential(*layers).to(dtype=dtype, device=device)


def deep_maxent_irl(mdp, demos, *, hidden=(32, 32), lr: float = 1e-2,
                    weight_decay: float = 0.0, max_iters: int = 200, tol: float = 1e-6,
                    initial: str = "empirical", seed: int = 0,
                    progress: bool = False) -> IRLResult:
    """Deep MaxEnt IRL: a neural reward ``r(s) = f_psi(phi(s))`` trained by maximum entropy
    visitation matching.

    Each iteration solves the soft (causal) MDP for the current reward
    (:func:`~bayesirl.soft_value_iteration`), computes the expected visitation ``E[mu] (S, A)``
    from ``initial`` and backpropagates ``dL/dr = E[mu] - mu_D`` (expected minus empirical
    (discounted) visitation, per demonstration) into the network with ``reward.backward(grad)``;
    Adam takes the step. ``L`` is the maximum causal entropy dual
    ``E_{s_0}[V(s_0)] - <mu_D, r>``, recorded in ``history["loss"]``.

    The network is an MLP (ELU activations) on the MDP's features: state features ``(S, d)``
    give a state reward ``(S,)`` (Wulfmeier et al.), state-action features ``(S, A, d)`` a
    state-action reward. Initialisation draws from a private generator seeded with ``seed``
    (the global torch RNG is left as it was).

    Args:
        mdp: a :class:`~bayesirl.TabularMDP` with features; finite horizon or discounted.
        demos: :class:`~bayesirl.Demonstrations`, validated against ``mdp``.
        hidden: widths of the hidden layers (integers >= 1).
        lr: Adam's learning rate.
        weight_decay: Adam's L2 weight decay >= 0 on the network's parameters.
        max_iters: Adam steps.
        tol: stop early when the visitation difference's sup-norm is at most ``tol``.
        initial: ``"empirical"`` or ``"mdp"`` start distribution (see
            :func:`~bayesirl.baselines.mce_irl`).
        seed: seed of the initialisation, an integer >= 0 (Python or NumPy).
        progress: show a tqdm bar.

    Returns:
        :class:`IRLResult` with ``reward (S, A)`` (detached), ``theta=None``, history ``loss``
        and ``grad_norm`` (``|E[mu] - mu_D|_2``); info ``network`` (the trained module,
        mapping ``(..., d)`` features to ``(..., 1)``), ``converged``.
    """
    mdp, demos = _common.check_problem(mdp, demos)
    widths = positive_ints(hidden)
    if widths is None:
        raise ValueError(f"hidden is {hidden!r}, expected a sequence of positive ints")
    lr = check_number("lr", lr, 0.0, low_open=True)
    weight_decay = check_number("weight_decay", weight_decay, 0.0)
    max_iters = check_int("max_iters", max_iters)
    tol = check_number("tol", tol, 0.0, low_open=True)
    seed = check_int("seed", seed, 0)
    counts = _common.expert_counts(mdp, demos)
    start = _common.start_distribution(mdp, demos, initial)
    phi = mdp.features
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _mlp(phi.shape[-1], widths, mdp.dtype, mdp.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    history = {"loss": [], "grad_norm": []}

    def reward_of():
        r = net(phi).squeeze(-1)                                 # (S,) or (S, A)
        return r if r.dim() == 2 else r[:, None].expand(-1, mdp.n_actions)

    converged = False
    for _ in tqdm(range(max_iters), desc="deep MaxEnt IRL", disable=not progress, leave=False):
        opt.zero_grad()
        r = reward_of()
        loss, occ = _common.soft_dual(mdp, r.detach(), counts, start)
        grad = occ - counts
        history["loss"].append(loss)
        history["grad_norm"].append(float(grad.norm()))
        if grad.abs().max() <= tol:
            converged = True
            break
        r.backward(grad)
        opt.step()
    with torch.no_grad():
        reward = reward_of().clone()
    return IRLResult(reward, None, history, {"network": net, "converged": converged})
