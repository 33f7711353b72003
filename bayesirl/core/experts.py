"""Demonstrations keyed by expert: many people's trajectories in one padded set.

An :class:`ExpertDemonstrations` is a :class:`~bayesirl.Demonstrations` of N trajectories plus

- ``expert``: ``(N,)`` long, the index in ``[0, E)`` of the expert who made each trajectory;
- ``n_experts``: E (an expert may have no trajectory: a population member with no data yet);
- ``expert_names``: E labels for ArviZ coordinates, or None (``"e0", "e1", ...``).

Keeping all experts in one padded set lets a likelihood evaluate every demonstration against its
own expert's policy in one batched call (the planner runs once over an ``(E, S, A)`` stack of
rewards); the expert index picks the row. Validated once, at construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bayesirl._validation import as_tensor, check_int, check_names, first_bad, integer_scalar
from bayesirl.core.demos import Demonstrations

__all__ = ["ExpertDemonstrations", "concat_demonstrations"]


def _demonstrations_list(name: str, items, expected: str) -> list[Demonstrations]:
    """``items`` as a non-empty list of :class:`Demonstrations`; ``expected`` says, in the
    message for an empty one, how many were wanted."""
    items = list(items)
    if not items:
        raise ValueError(f"{name} is empty, expected {expected}")
    for i, d in enumerate(items):
        if not isinstance(d, Demonstrations):
            raise TypeError(f"{name}[{i}] must be Demonstrations, got {type(d).__name__}")
    return items


def concat_demonstrations(parts: Sequence[Demonstrations]) -> Demonstrations:
    """One padded :class:`Demonstrations` from several, in order (final states are kept only
    when every part has them)."""
    parts = _demonstrations_list("parts", parts, "at least one Demonstrations")
    T = max(p.max_length for p in parts)

    def pad(x):
        return torch.nn.functional.pad(x, (0, T - x.shape[1]))

    final = (None if any(p.final_states is None for p in parts)
             else torch.cat([p.final_states for p in parts]))
    return Demonstrations(torch.cat([pad(p.states) for p in parts]),
                          torch.cat([pad(p.actions) for p in parts]),
                          torch.cat([pad(p.mask) for p in parts]), final)


@dataclass(frozen=True, eq=False)
class ExpertDemonstrations:
    """N demonstrations, each tagged with the expert who made it.

    Args:
        demos: the :class:`~bayesirl.Demonstrations` of all experts together.
        expert: ``(N,)`` integer expert index of each demonstration, in ``[0, n_experts)``.
        n_experts: E, default ``expert.max() + 1``; larger leaves experts without data.
        expert_names: E names (ArviZ coordinates of the ``expert`` dim), default None.
    """

    demos: Demonstrations
    expert: torch.Tensor
    n_experts: int | None = None
    expert_names: tuple[str, ...] | None = None

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise the fields once, here
        if not isinstance(self.demos, Demonstrations):
            raise TypeError(f"demos must be Demonstrations, got {type(self.demos).__name__}")
        expert = as_tensor("expert", self.expert, device=self.demos.device, integer=True)
        if tuple(expert.shape) != (self.demos.n,):
            raise ValueError(f"expert must have shape ({self.demos.n},), one index per "
                             f"demonstration, got {tuple(expert.shape)}")
        if (expert < 0).any():
            i = first_bad(expert < 0)[0]
            raise ValueError(f"expert[{i}] is {expert[i].item()}, expected an index >= 0")
        E = int(expert.max()) + 1
        if self.n_experts is not None:
            n = check_int("n_experts", self.n_experts)
            if n < E:
                i = first_bad(expert >= n)[0]
                raise ValueError(f"expert[{i}] is {expert[i].item()}, expected an index in "
                                 f"[0, n_experts={n})")
            E = n
        set_(self, "expert", expert)
        set_(self, "n_experts", E)
        if self.expert_names is not None:
            set_(self, "expert_names", check_names("expert_names", self.expert_names, E))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_groups(cls, groups: Sequence[Demonstrations],
                    expert_names=None) -> ExpertDemonstrations:
        """From one :class:`Demonstrations` per expert (expert e is ``groups[e]``)."""
        groups = _demonstrations_list("groups", groups, "one Demonstrations per expert")
        expert = torch.cat([torch.full((g.n,), e, dtype=torch.long, device=g.device)
                            for e, g in enumerate(groups)])
        return cls(concat_demonstrations(groups), expert, len(groups), expert_names)

    # ------------------------------------------------------------------ sizes and views
    @property
    def n(self) -> int:
        """Number of demonstrations N (all experts)."""
        return self.demos.n

    def __len__(self) -> int:
        return self.n

    @property
    def device(self) -> torch.device:
        return self.demos.device

    @property
    def counts(self) -> torch.Tensor:
        """``(E,)`` long, the number of demonstrations of each expert."""
        return torch.bincount(self.expert, minlength=self.n_experts)

    @property
    def names(self) -> list[str]:
        """The E expert labels (``expert_names`` or ``e0, e1, ...``)."""
        return list(self.expert_names or (f"e{e}" for e in range(self.n_experts)))

    def of(self, e: int) -> Demonstrations:
        """Expert ``e``'s demonstrations (ValueError when it has none)."""
        e = check_int("e", e, 0, self.n_experts - 1)
        idx = (self.expert == e).nonzero().squeeze(-1)
        if idx.numel() == 0:
            raise ValueError(f"expert {e} has no demonstrations")
        return self.demos[idx]

    def __getitem__(self, idx) -> ExpertDemonstrations:
        """A subset of the demonstrations, keeping every expert (some may be left without data).

        ``idx`` is what indexing a :class:`~bayesirl.Demonstrations` takes: one index (an int,
        NumPy integer or 0-d integer tensor), an index list, LongTensor, slice or bool mask
        over N."""
        sub = self.demos[idx]  # the same indices; it names one out of range
        if (one := integer_scalar(idx)) is not None:
            idx = [one]
        expert = self.expert[torch.as_tensor(idx, device=self.device)
                             if isinstance(idx, list) else idx]
        return ExpertDemonstrations(sub, expert, self.n_experts, self.expert_names)

    def validate(self, mdp) -> ExpertDemonstrations:
        """Check the demonstrations against ``mdp`` (see :meth:`Demonstrations.validate`)."""
        self.demos.validate(mdp)
        return self

    def to(self, device) -> ExpertDemonstrations:
        return ExpertDemonstrations(self.demos.to(device), self.expert.to(device),
                                    self.n_experts, self.expert_names)

    def __repr__(self) -> str:
        return (f"ExpertDemonstrations(n={self.n}, n_experts={self.n_experts}, "
                f"per_expert={self.counts.tolist()}, max_length={self.demos.max_length})")
