"""Preferences between trajectories: pairwise comparisons and rankings, with optional ties.

A :class:`Preferences` holds M trajectories and P comparisons between them:

- ``pairs``: ``(P, 2)`` long trajectory indices; ``pairs[k] = (i, j)`` says trajectory i was
  preferred to trajectory j, or, when ``ties[k]``, that neither was preferred;
- ``ties``: ``(P,)`` bool;
- the trajectories, in one of two forms:

  * index sequences padded to a common length T: ``states (M, T)`` long, ``actions (M, T)``
    long or None (state-only trajectories, for state rewards), ``mask (M, T)`` bool whose
    True entries are a prefix of length >= 1;
  * precomputed feature sums ``features (M, d)``: ``sum_t gamma^t phi(s_t, a_t)`` of each
    trajectory, all a linear reward needs (Bayesian REX's form: no MDP, no states).

A ranking is turned into the pairs it implies (every trajectory ranked above another is preferred
to it; members of a tied group are tied pairwise), as T-REX and Bayesian REX do; those pairs are
not independent observations, which the likelihood treats them as. Validated once, at
construction; :meth:`Preferences.validate` adds the checks that need an MDP.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bayesirl._validation import (
    as_tensor,
    bool_tensor,
    check_finite,
    check_indices,
    check_number,
    first_bad,
    fmt_index,
    select_rows,
)
from bayesirl.core.demos import Demonstrations, check_prefix_mask

__all__ = ["Preferences"]


def _trajectory_mask(states: torch.Tensor, lengths, mask) -> torch.Tensor:
    if lengths is not None and mask is not None:
        raise ValueError("give lengths or mask, not both")
    M, T = states.shape
    if mask is not None:
        t = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask)
        if t.dtype != torch.bool:
            if t.dtype.is_complex or not ((t == 0) | (t == 1)).all():
                raise TypeError(f"mask must be boolean (or 0/1), got dtype {t.dtype}")
            t = t != 0
        return t.to(states.device)
    if lengths is None:
        return torch.ones(M, T, dtype=torch.bool, device=states.device)
    lengths = as_tensor("lengths", lengths, device=states.device, integer=True)
    if tuple(lengths.shape) != (M,):
        raise ValueError(f"lengths must have shape ({M},), one per trajectory, got "
                         f"{tuple(lengths.shape)}")
    bad = (lengths < 1) | (lengths > T)
    if bad.any():
        i = first_bad(bad)[0]
        raise ValueError(f"lengths[{i}] is {lengths[i].item()}, expected an integer in [1, {T}]")
    return torch.arange(T, device=states.device) < lengths[:, None]


@dataclass(frozen=True, eq=False)
class Preferences:
    """P comparisons between M trajectories, validated at construction.

    Args:
        pairs: ``(P, 2)`` trajectory indices, ``(preferred, other)`` (or a tied pair).
        ties: ``(P,)`` bool, True where the pair was judged equal; default all False.
        states: ``(M, T)`` state indices, or None when ``features`` are given.
        actions: ``(M, T)`` action indices, or None (state-only trajectories).
        mask: ``(M, T)`` bool, True on real steps (a prefix of length >= 1 per row); default
            all True.
        features: ``(M, d)`` precomputed feature sums of the trajectories, instead of states.

    Padding entries (``mask`` False) of ``states`` and ``actions`` are set to 0.
    """

    pairs: torch.Tensor
    ties: torch.Tensor | None = None
    states: torch.Tensor | None = None
    actions: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    features: torch.Tensor | None = None

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise the fields once, here
        if (self.states is None) == (self.features is None):
            raise ValueError("give the trajectories as states (with optional actions) or as "
                             "features (precomputed feature sums), exactly one of the two; got "
                             f"states={'None' if self.states is None else 'given'}, "
                             f"features={'None' if self.features is None else 'given'}")
        if self.features is not None:
            if self.actions is not None or self.mask is not None:
                raise ValueError("actions and mask describe state sequences; with features "
                                 "(feature sums) leave them None")
            phi = as_tensor("features", self.features)
            if phi.dim() != 2 or phi.shape[0] < 2 or phi.shape[1] < 1:
                raise ValueError(f"features must have shape (M, d) with M >= 2 trajectories "
                                 f"and d >= 1, got {tuple(phi.shape)}")
            check_finite("features", phi)
            set_(self, "features", phi)
            M, device = phi.shape[0], phi.device
        else:
            states = as_tensor("states", self.states, integer=True)
            if states.dim() != 2 or states.shape[0] < 2 or states.shape[1] < 1:
                raise ValueError(f"states must have shape (M, T) with M >= 2 trajectories "
                                 f"and T >= 1, got {tuple(states.shape)}")
            device = states.device
            mask = _trajectory_mask(states, None, self.mask)
            if mask.shape != states.shape:
                raise ValueError(f"mask must have shape {tuple(states.shape)} like states, "
                                 f"got {tuple(mask.shape)}")
            check_prefix_mask(mask, "trajectory")
            seqs = {"states": states}
            if self.actions is not None:
                actions = as_tensor("actions", self.actions, device=device, integer=True)
                if actions.shape != states.shape:
                    raise ValueError(f"actions must have shape {tuple(states.shape)} like "
                                     f"states, got {tuple(actions.shape)}")
                seqs["actions"] = actions
            for name, t in seqs.items():
                check_indices(name, t, where=mask)
                set_(self, name, t.masked_fill(~mask, 0))
            set_(self, "mask", mask)
            M = states.shape[0]
        pairs = as_tensor("pairs", self.pairs, device=device, integer=True)
        if pairs.dim() != 2 or pairs.shape[1] != 2 or pairs.shape[0] < 1:
            raise ValueError(f"pairs must have shape (P, 2) with P >= 1 comparisons, got "
                             f"{tuple(pairs.shape)}")
        check_indices("pairs", pairs, M, "a trajectory")
        same = pairs[:, 0] == pairs[:, 1]
        if same.any():
            k = first_bad(same)[0]
            raise ValueError(f"pairs[{k}] compares trajectory {pairs[k, 0].item()} with itself, "
                             "expected two different trajectories")
        set_(self, "pairs", pairs)
        if self.ties is None:
            ties = torch.zeros(pairs.shape[0], dtype=torch.bool, device=device)
        else:
            ties = bool_tensor("ties", self.ties, device)
            if tuple(ties.shape) != (pairs.shape[0],):
                raise ValueError(f"ties must have shape ({pairs.shape[0]},), one per pair, got "
                                 f"{tuple(ties.shape)}")
        set_(self, "ties", ties.to(device))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pairs(cls, pairs, *, states=None, actions=None, lengths=None, mask=None,
                   features=None, ties=None) -> Preferences:
        """From ``pairs (P, 2)`` and the trajectories (``states`` with optional ``actions`` and
        ``lengths (M,)`` or ``mask``, or ``features (M, d)``)."""
        if states is not None:
            states = as_tensor("states", states, integer=True)
            if states.dim() != 2:
                raise ValueError(f"states must have shape (M, T), got {tuple(states.shape)}")
            mask = _trajectory_mask(states, lengths, mask)
        elif lengths is not None:
            raise ValueError("lengths describe state sequences; give states with them")
        return cls(pairs, ties, states, actions, mask, features)

    @classmethod
    def from_demonstrations(cls, demos: Demonstrations, pairs, ties=None,
                            state_only: bool = False) -> Preferences:
        """Comparisons between the trajectories of ``demos`` (``pairs`` index its rows);
        ``state_only`` drops the actions."""
        if not isinstance(demos, Demonstrations):
            raise TypeError(f"demos must be Demonstrations, got {type(demos).__name__}")
        return cls(pairs, ties, demos.states, None if state_only else demos.actions,
                   demos.mask)

    @classmethod
    def from_rankings(cls, rankings, *, states=None, actions=None, lengths=None, mask=None,
                      features=None) -> Preferences:
        """From rankings of trajectories, best first, turned into all the pairs they imply.

        ``rankings``: a sequence of rankings; a ranking is a sequence of items, an item a
        trajectory index or a sequence of indices judged equal (a tied group). Every trajectory
        ranked above another gives a pair ``(above, below)``; the members of a group give tied
        pairs. E.g. ``[[3, (0, 2), 1]]``: 3 > 0, 3 > 2, 3 > 1, 0 > 1, 2 > 1 and 0 ~ 2.
        Trajectories are given as in :meth:`from_pairs`.
        """
        if isinstance(rankings, (str, bytes)) or not isinstance(rankings, Sequence):
            raise TypeError(f"rankings must be a sequence of rankings, got "
                            f"{type(rankings).__name__}")
        pairs, ties = [], []
        for r, ranking in enumerate(rankings):
            if isinstance(ranking, (str, bytes)) or not isinstance(ranking, Sequence):
                raise TypeError(f"rankings[{r}] must be a sequence of trajectory indices (or "
                                f"tied groups), got {type(ranking).__name__}")
            groups = []
            for k, item in enumerate(ranking):
                group = [item] if isinstance(item, numbers.Integral) else item
                if isinstance(group, (str, bytes)) or not isinstance(group, Sequence) or not (
                        group and all(isinstance(i, numbers.Integral)
                                      and not isinstance(i, bool) for i in group)):
                    raise TypeError(f"rankings[{r}][{k}] is {item!r}, expected a trajectory "
                                    "index or a non-empty sequence of indices (a tied group)")
                groups.append([int(i) for i in group])
            flat = [i for g in groups for i in g]
            if len(set(flat)) != len(flat):
                raise ValueError(f"rankings[{r}] lists a trajectory twice: {ranking!r}")
            if len(flat) < 2:
                raise ValueError(f"rankings[{r}] has {len(flat)} trajectory, expected at "
                                 "least 2 to compare")
            for g, group in enumerate(groups):
                for a, i in enumerate(group):
                    pairs += [(i, j) for j in group[a + 1:]]
                    ties += [True] * (len(group) - a - 1)
                    below = [j for h in groups[g + 1:] for j in h]
                    pairs += [(i, j) for j in below]
                    ties += [False] * len(below)
        if not pairs:
            raise ValueError("rankings is empty, expected at least one ranking")
        return cls.from_pairs(torch.tensor(pairs), states=states, actions=actions,
                              lengths=lengths, mask=mask, features=features,
                              ties=torch.tensor(ties))

    # ------------------------------------------------------------------ sizes and views
    @property
    def n_pairs(self) -> int:
        """Number of comparisons P."""
        return self.pairs.shape[0]

    def __len__(self) -> int:
        return self.n_pairs

    @property
    def n_trajectories(self) -> int:
        """Number of trajectories M."""
        return (self.features if self.features is not None else self.states).shape[0]

    @property
    def has_ties(self) -> bool:
        return bool(self.ties.any())

    @property
    def has_actions(self) -> bool:
        return self.actions is not None

    @property
    def device(self) -> torch.device:
        return self.pairs.device

    def __getitem__(self, idx) -> Preferences:
        """A subset of the comparisons (an int, a slice, indices or a bool mask ``(P,)`` over
        the P pairs; :func:`~bayesirl._validation.select_rows`), keeping every
        trajectory."""
        rows = select_rows(idx, self.n_pairs, "pair", "pairs", self.device)
        return Preferences(self.pairs[rows], self.ties[rows], self.states, self.actions,
                           self.mask, self.features)

    def feature_sums(self, features, discount: float | None = None) -> torch.Tensor:
        """``(M, d)`` feature sums ``sum_t gamma^t phi(s_t, a_t)`` of the trajectories.

        ``features``: ``(S, d)`` state features or ``(S, A, d)`` (needs actions); ``discount``
        gamma in [0, 1] (default 1, plain sums). Precomputed feature sums are returned as given.
        """
        if self.features is not None:
            return self.features
        phi = as_tensor("features", features)
        if phi.dim() not in (2, 3):
            raise ValueError(f"features must have shape (S, d) or (S, A, d), got "
                             f"{tuple(phi.shape)}")
        if phi.dim() == 3 and self.actions is None:
            raise ValueError("features are state-action features (S, A, d) but the "
                             "trajectories have no actions; give state features (S, d)")
        self.check_indices(phi.shape[0], phi.shape[1] if phi.dim() == 3 else None,
                           "the features'")
        w = self.step_weights(discount, phi.dtype).to(phi.device)
        steps = (phi[self.states] if phi.dim() == 2
                 else phi[self.states, self.actions])                      # (M, T, d)
        return torch.einsum("mt,mtd->md", w, steps)

    def step_weights(self, discount: float | None = None, dtype=None) -> torch.Tensor:
        """``(M, T)`` weight of each step in a return: ``gamma**t`` on real steps, 0 on
        padding (state sequences only)."""
        if self.states is None:
            raise ValueError("these preferences hold feature sums, not state sequences")
        dtype = dtype or torch.get_default_dtype()
        w = self.mask.to(dtype)
        if discount is not None:
            gamma = check_number("discount", discount, 0.0, 1.0)
            w = w * gamma ** torch.arange(w.shape[1], dtype=dtype, device=w.device)
        return w

    def validate(self, mdp) -> Preferences:
        """Check state and action indices against ``mdp``; return ``self`` or raise."""
        return self.check_indices(mdp.n_states, mdp.n_actions, "the MDP's")

    def check_indices(self, n_states: int, n_actions: int | None, whose: str) -> Preferences:
        """Check state indices against ``n_states`` and actions against ``n_actions`` (None:
        unchecked), ``whose`` naming what they index (``"the MDP's"``); return ``self`` or
        raise. A state-action reward is read flat, so an action past the last would silently
        read the next state's reward."""
        if self.states is None:
            return self
        for name, t, n in (("states", self.states, n_states),
                           ("actions", self.actions, n_actions)):
            if t is not None and n is not None and (t >= n).any():
                idx = first_bad(t >= n)
                raise ValueError(f"{name}{fmt_index(idx)} is {t[idx].item()}, expected an "
                                 f"index in [0, {n}) ({whose} {name})")
        return self

    def __repr__(self) -> str:
        kind = (f"features (d={self.features.shape[1]})" if self.features is not None
                else f"{'state-action' if self.has_actions else 'state-only'} sequences "
                     f"(T={self.states.shape[1]})")
        return (f"Preferences(n_pairs={self.n_pairs}, ties={int(self.ties.sum())}, "
                f"n_trajectories={self.n_trajectories}, {kind})")
