"""Expert demonstrations: padded state/action index arrays with a mask, rollouts, npz files.

A :class:`Demonstrations` holds N trajectories padded to a common length T:

- ``states``: ``(N, T)`` long state indices s_t;
- ``actions``: ``(N, T)`` long action indices a_t (the decision taken in s_t);
- ``mask``: ``(N, T)`` bool, True on real steps; each row's True entries are a prefix (length >= 1);
- ``final_states``: ``(N,)`` long or None, the state reached after the last decision.

Steps are numbered from 0, like tensor indices. It is validated once, at construction
(:meth:`Demonstrations.validate` adds the checks that need an MDP); downstream code trusts it.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from bayesirl._validation import (
    as_tensor,
    check_distribution_rows,
    check_indices,
    check_int,
    check_number,
    check_seed,
    first_bad,
    integer_scalar,
    select_rows,
)
from bayesirl.core.mdp import TabularMDP, check_mdp

__all__ = ["Demonstrations", "rollouts"]

_FORMAT = "bayesirl.Demonstrations/1"
_REQUIRED = ("states", "actions", "mask")


def _as_mask(value, device) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if t.dtype != torch.bool:
        if t.dtype.is_complex or not ((t == 0) | (t == 1)).all():
            raise TypeError(f"mask must be boolean (or 0/1), got dtype {t.dtype}")
        t = t != 0
    return t.to(device)


def check_prefix_mask(mask: torch.Tensor, unit: str) -> None:
    """``mask: (N, T)`` bool marks each row's real steps: a prefix of True entries, of length
    >= 1. The one home of that rule for padded batches of sequences (demonstrations, the
    trajectories of preferences); ``unit`` names a row in the message ("demonstration 2 has
    length 0")."""
    if mask.shape[1] == 0 or not mask[:, 0].all():
        i = 0 if mask.shape[1] == 0 else first_bad(~mask[:, 0])[0]
        raise ValueError(f"mask[{i}] has no True entry: {unit} {i} has length 0, "
                         "expected length >= 1")
    gap = mask[:, 1:] & ~mask[:, :-1]
    if gap.any():
        i, t = first_bad(gap)
        raise ValueError(f"mask[{i}, {t + 1}] is True after mask[{i}, {t}] is False, "
                         "expected each row's True entries to form a prefix")


def _check_range(name: str, t: torch.Tensor, n: int, what: str) -> None:
    """Raise naming demonstration i and step t when an ``(N, T)`` index array has ``t >= n``."""
    bad = t >= n
    if bad.any():
        i, s = first_bad(bad)
        raise ValueError(f"demonstration {i}, step {s}: {name}[{i}, {s}] is {t[i, s].item()}, "
                         f"expected {what} index in [0, {n})")



@dataclass(frozen=True, eq=False)
class Demonstrations:
    """N demonstrations padded to length T, validated at construction.

    Args:
        states: ``(N, T)`` integer state indices (whole-number floats are accepted).
        actions: ``(N, T)`` integer action indices.
        mask: ``(N, T)`` bool, True on real steps; each row is a prefix of True of length >= 1.
        final_states: ``(N,)`` state reached after each demonstration's last decision, or None.
            Needed only for terminal rewards and to check the last transition.

    Padding entries (``mask`` False) of ``states`` and ``actions`` are set to 0.
    """

    states: torch.Tensor
    actions: torch.Tensor
    mask: torch.Tensor
    final_states: torch.Tensor | None = None

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise fields once, here
        states = as_tensor("states", self.states, integer=True)
        device = states.device
        actions = as_tensor("actions", self.actions, device=device, integer=True)
        mask = _as_mask(self.mask, device)
        if states.dim() != 2:
            raise ValueError(f"states must have shape (N, T), got {tuple(states.shape)}")
        for name, t in (("actions", actions), ("mask", mask)):
            if t.shape != states.shape:
                raise ValueError(f"{name} must have shape {tuple(states.shape)} like states, "
                                 f"got {tuple(t.shape)}")
        if states.shape[0] == 0:
            raise ValueError("demonstrations are empty (N == 0), expected at least one")
        check_prefix_mask(mask, "demonstration")
        for name, t in (("states", states), ("actions", actions)):
            check_indices(name, t, where=mask)
        set_(self, "states", states.masked_fill(~mask, 0))
        set_(self, "actions", actions.masked_fill(~mask, 0))
        set_(self, "mask", mask)
        if self.final_states is not None:
            final = as_tensor("final_states", self.final_states, device=device, integer=True)
            if tuple(final.shape) != (states.shape[0],):
                raise ValueError(f"final_states must have shape ({states.shape[0]},), one per "
                                 f"demonstration, got {tuple(final.shape)}")
            check_indices("final_states", final)
            set_(self, "final_states", final)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, states, actions, lengths=None, final_states=None) -> Demonstrations:
        """From ``states, actions: (N, T)`` int arrays and ``lengths: (N,)`` (default: all T)."""
        states = as_tensor("states", states, integer=True)
        if lengths is None:
            mask = torch.ones(states.shape, dtype=torch.bool, device=states.device)
        else:
            if states.dim() != 2:
                raise ValueError(f"states must have shape (N, T), got {tuple(states.shape)}")
            N, T = states.shape
            lengths = as_tensor("lengths", lengths, device=states.device, integer=True)
            if tuple(lengths.shape) != (N,):
                raise ValueError(f"lengths must have shape ({N},), got {tuple(lengths.shape)}")
            bad = (lengths < 1) | (lengths > T)
            if bad.any():
                i = first_bad(bad)[0]
                raise ValueError(f"lengths[{i}] is {lengths[i].item()}, "
                                 f"expected an integer in [1, {T}]")
            mask = torch.arange(T, device=states.device) < lengths[:, None]
        return cls(states, actions, mask, final_states)

    @classmethod
    def from_trajectories(cls, trajectories) -> Demonstrations:
        """From a list of ``(states_seq, actions_seq)`` pairs of lengths L+1 (or L) and L.

        A states sequence one longer than its actions carries the final state; either every
        trajectory does so or none does.
        """
        trajectories = list(trajectories)
        if not trajectories:
            raise ValueError("demonstrations are empty (no trajectories), expected at least one")
        pairs, finals = [], []
        for i, pair in enumerate(trajectories):
            if len(pair) != 2:
                raise ValueError(f"trajectories[{i}] must be a (states, actions) pair")
            s = as_tensor(f"trajectories[{i}] states", pair[0], integer=True).reshape(-1)
            a = as_tensor(f"trajectories[{i}] actions", pair[1], integer=True).reshape(-1)
            if len(a) == 0 or len(s) not in (len(a), len(a) + 1):
                raise ValueError(f"trajectories[{i}] has {len(s)} states and {len(a)} actions, "
                                 "expected L >= 1 actions and L or L + 1 states")
            finals.append(len(s) > len(a))
            pairs.append((s, a))
        if any(finals) and not all(finals):
            i = finals.index(not finals[0])
            raise ValueError(f"trajectories[{i}] {'has' if finals[i] else 'lacks'} a final state "
                             f"but trajectories[0] {'has' if finals[0] else 'lacks'} one, "
                             "expected all or none to have len(states) == len(actions) + 1")
        N, T = len(pairs), max(len(a) for _, a in pairs)
        states = torch.zeros(N, T, dtype=torch.long)
        actions = torch.zeros(N, T, dtype=torch.long)
        lengths = torch.tensor([len(a) for _, a in pairs])
        for i, (s, a) in enumerate(pairs):
            states[i, :len(a)], actions[i, :len(a)] = s[:len(a)], a
        final = torch.stack([s[-1] for s, _ in pairs]) if finals[0] else None
        return cls.from_arrays(states, actions, lengths, final)

    # ------------------------------------------------------------------ sizes
    @property
    def n(self) -> int:
        """Number of demonstrations N."""
        return self.states.shape[0]

    @property
    def max_length(self) -> int:
        """Padded length T."""
        return self.states.shape[1]

    @property
    def lengths(self) -> torch.Tensor:
        """``(N,)`` long number of real steps of each demonstration."""
        return self.mask.sum(1)

    @property
    def n_steps(self) -> int:
        """Total number of real steps over all demonstrations."""
        return int(self.mask.sum())

    @property
    def device(self) -> torch.device:
        return self.states.device

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx) -> Demonstrations:
        """A subset (one index: an int, NumPy integer or 0-d integer tensor; a slice, index
        list/LongTensor or bool mask over N), trimmed to its longest demonstration.

        Indices lie in ``[-N, N)`` and a bool mask has length N; otherwise an ``IndexError``
        names the bad entry (a non-integer index is a ``TypeError``;
        :func:`~bayesirl._validation.select_rows`)."""
        idx = select_rows(idx, self.n, "demonstration", "demonstrations", self.device)
        mask = self.mask[idx]
        T = max(int(mask.sum(1).max()), 1) if mask.shape[0] else self.max_length
        final = None if self.final_states is None else self.final_states[idx]
        return Demonstrations(self.states[idx][:, :T], self.actions[idx][:, :T], mask[:, :T],
                              final)

    def to(self, device) -> Demonstrations:
        """A copy on ``device``."""
        final = None if self.final_states is None else self.final_states.to(device)
        return dataclasses.replace(self, states=self.states.to(device),
                                   actions=self.actions.to(device), mask=self.mask.to(device),
                                   final_states=final)

    def __repr__(self) -> str:
        return (f"Demonstrations(n={self.n}, max_length={self.max_length}, "
                f"n_steps={self.n_steps}, final_states={self.final_states is not None}, "
                f"device={self.device})")

    # ------------------------------------------------------------------ checks against an MDP
    def validate(self, mdp: TabularMDP) -> Demonstrations:
        """Check the demonstrations against ``mdp``; return ``self`` or raise ``ValueError``.

        Rejects state/action indices out of range, a first state with ``mdp.initial`` probability
        0, an observed transition ``s_t, a_t -> s_{t+1}`` (or ``-> final_states``) with
        probability 0, and demonstrations longer than a finite MDP's horizon; ``TypeError``
        when ``mdp`` is not a :class:`TabularMDP`.
        """
        check_mdp(mdp)
        S, A = mdp.n_states, mdp.n_actions
        succ, probs = mdp.successors.to(self.device), mdp.transition_probs.to(self.device)
        _check_range("states", self.states, S, "a state")  # padding is 0, always in range
        _check_range("actions", self.actions, A, "an action")
        final = self.final_states
        if final is not None and (final >= S).any():
            i = first_bad(final >= S)[0]
            raise ValueError(f"final_states[{i}] is {final[i].item()}, "
                             f"expected a state index in [0, {S})")
        if mdp.finite_horizon and (self.lengths > mdp.horizon).any():
            i = first_bad(self.lengths > mdp.horizon)[0]
            raise ValueError(f"demonstration {i} has length {self.lengths[i].item()}, expected "
                             f"at most the MDP's horizon {mdp.horizon}")
        s0 = self.states[:, 0]
        bad = mdp.initial.to(self.device)[s0] <= 0
        if bad.any():
            i = first_bad(bad)[0]
            raise ValueError(f"demonstration {i}, step 0: initial state {s0[i].item()} has "
                             "probability 0 under mdp.initial")
        # next state of every step; the last real step goes to final_states when known
        nxt = torch.cat([self.states[:, 1:], torch.zeros_like(s0)[:, None]], 1)
        has_next = torch.cat([self.mask[:, 1:], torch.zeros_like(self.mask[:, :1])], 1)
        if final is not None:
            last = (self.lengths - 1)[:, None]
            nxt = nxt.scatter(1, last, final[:, None])
            has_next = has_next.scatter(1, last, True)
        s, a = self.states, self.actions
        p = ((succ[s, a] == nxt[..., None]) * probs[s, a]).sum(-1)  # (N, T)
        bad = has_next & (p <= 0)
        if bad.any():
            i, t = first_bad(bad)
            raise ValueError(f"demonstration {i}, step {t}: transition {s[i, t].item()} "
                             f"--({a[i, t].item()})--> {nxt[i, t].item()} has probability 0 "
                             "under the MDP")
        return self

    # ------------------------------------------------------------------ statistics
    def counts(self, n_states: int, n_actions: int, discount: float | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(S, A)`` visit counts summed over demonstrations, step t weighted by discount**t
        (``discount`` in [0, 1], or None for 1)."""
        _check_range("states", self.states, n_states, "a state")
        _check_range("actions", self.actions, n_actions, "an action")
        dtype = dtype or torch.get_default_dtype()
        w = self.mask.to(dtype)
        if discount is not None:
            discount = check_number("discount", discount, 0.0, 1.0)
            w = w * discount ** torch.arange(self.max_length, dtype=dtype, device=self.device)
        flat = (self.states * n_actions + self.actions).reshape(-1)
        out = torch.zeros(n_states * n_actions, dtype=dtype, device=self.device)
        return out.index_add_(0, flat, w.reshape(-1)).reshape(n_states, n_actions)

    def feature_expectations(self, mdp: TabularMDP) -> torch.Tensor:
        """``(d,)`` mean over demonstrations of sum_t gamma^t phi(s_t, a_t).

        gamma is ``mdp.discount``, or 1 for a finite horizon; phi is
        ``mdp.state_action_features()`` ``(S, A, d)``.
        """
        phi = mdp.state_action_features()
        c = self.counts(mdp.n_states, mdp.n_actions, mdp.discount, dtype=mdp.dtype)
        return torch.einsum("sa,sad->d", c.to(mdp.device), phi) / self.n

    def empirical_initial(self, n_states: int) -> torch.Tensor:
        """``(S,)`` empirical distribution of the first states."""
        _check_range("states", self.states[:, :1], n_states, "a state")
        first = torch.bincount(self.states[:, 0], minlength=n_states)
        return first.to(torch.get_default_dtype()) / self.n

    # ------------------------------------------------------------------ files
    def save(self, path) -> None:
        """Write an ``.npz`` file at exactly ``path`` (read back by :meth:`load`)."""
        arrays = {k: getattr(self, k).cpu().numpy() for k in _REQUIRED}
        if self.final_states is not None:
            arrays["final_states"] = self.final_states.cpu().numpy()
        with open(path, "wb") as f:
            np.savez(f, format=np.array(_FORMAT), **arrays)

    @classmethod
    def load(cls, path) -> Demonstrations:
        """Read a file written by :meth:`save` (on the CPU)."""
        where = repr(os.fspath(path))
        with open(path, "rb") as f:  # a missing file raises FileNotFoundError
            try:
                data = np.load(f, allow_pickle=False)
                if not hasattr(data, "files"):
                    raise ValueError("not an .npz archive")
                arrays = {k: data[k] for k in data.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                raise ValueError(f"cannot read demonstrations from {where}: {e}") from e
        missing = [k for k in ("format",) + _REQUIRED if k not in arrays]
        if missing:
            raise ValueError(f"{where} is missing {', '.join(missing)}, expected a file "
                             "written by Demonstrations.save")
        if str(arrays["format"]) != _FORMAT:
            raise ValueError(f"{where} has format {str(arrays['format'])!r}, expected {_FORMAT!r}")
        final = arrays.get("final_states")
        try:
            return cls(*(torch.from_numpy(arrays[k]) for k in _REQUIRED),
                       final_states=None if final is None else torch.from_numpy(final))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from e


def rollouts(mdp: TabularMDP, policy, n: int, seed: int = 0, length: int | None = None,
             initial=None, progress: bool = False) -> Demonstrations:
    """Sample ``n`` demonstrations of ``length`` steps from ``mdp`` under ``policy``.

    Args:
        mdp: the MDP; its sparse transitions give the next states.
        policy: a plan with ``log_policy`` (``(T, S, A)`` time-indexed or ``(S, A)``
            stationary), or action probabilities of one of those shapes. A time-indexed
            policy uses ``policy[t]`` at step t and needs at least ``length`` steps.
        n: number of demonstrations (>= 1), sampled in parallel.
        seed: seed of the ``torch.Generator`` that drives all sampling, an integer in
            ``[0, 2**64)``.
        length: steps per demonstration; defaults to ``mdp.horizon``, required if discounted.
        initial: ``(S,)`` start distribution (default ``mdp.initial``) or one start state
            (an int, a NumPy integer or a 0-d integer tensor such as ``demos.states[0, 0]``).
        progress: show a tqdm bar over steps.

    Returns:
        :class:`Demonstrations` with ``states, actions: (n, length)`` and ``final_states: (n,)``.
    """
    check_mdp(mdp)
    S, A, dev = mdp.n_states, mdp.n_actions, mdp.device
    check_int("n", n)
    seed = check_seed("seed", seed)
    if length is None and not mdp.finite_horizon:
        raise ValueError("length is required for a discounted MDP (it has no horizon)")
    length = check_int("length", mdp.horizon if length is None else length)
    if mdp.finite_horizon and length > mdp.horizon:
        raise ValueError(f"length is {length}, expected at most the MDP's horizon {mdp.horizon}")
    pi = policy.log_policy.exp() if hasattr(policy, "log_policy") else as_tensor("policy", policy)
    pi = pi.detach().to(dev)
    if pi.dim() not in (2, 3) or tuple(pi.shape[-2:]) != (S, A):
        raise ValueError(f"policy must have shape ({S}, {A}) or (T, {S}, {A}), "
                         f"got {tuple(pi.shape)}")
    if pi.dim() == 3 and pi.shape[0] < length:
        raise ValueError(f"policy has {pi.shape[0]} time steps, expected at least "
                         f"length={length}")
    check_distribution_rows("policy", pi)
    if initial is None:
        mu = mdp.initial
    elif (state := integer_scalar(initial)) is not None:
        if not 0 <= state < S:
            raise ValueError(f"initial is {state}, expected a state index in [0, {S})")
        mu = torch.nn.functional.one_hot(torch.tensor(state), S).to(mdp.dtype)
    else:
        mu = as_tensor("initial", initial, dtype=mdp.dtype)
        if tuple(mu.shape) != (S,):
            raise ValueError(f"initial must be a state index or a distribution of shape ({S},),"
                             f" got shape {tuple(mu.shape)}")
        check_distribution_rows("initial", mu)
    g = torch.Generator(device=dev).manual_seed(seed)
    states = torch.empty(n, length, dtype=torch.long, device=dev)
    actions = torch.empty(n, length, dtype=torch.long, device=dev)
    s = torch.multinomial(mu.to(dev), n, replacement=True, generator=g)
    for t in tqdm(range(length), desc="rollouts", disable=not progress, leave=False):
        pi_t = pi[t] if pi.dim() == 3 else pi
        a = torch.multinomial(pi_t[s], 1, generator=g).squeeze(-1)
        k = torch.multinomial(mdp.transition_probs[s, a], 1, generator=g)
        states[:, t], actions[:, t] = s, a
        s = mdp.successors[s, a].gather(-1, k).squeeze(-1)
    mask = torch.ones(n, length, dtype=torch.bool, device=dev)
    return Demonstrations(states, actions, mask, final_states=s)
