"""Transition dynamics estimated from data: a Dirichlet posterior over a sparse support.

Real users have panels of observed ``(s, a, s')`` triples, not transition tables. This module
turns such triples into the sparse ``(S, A, K)`` transitions a :class:`~bayesirl.TabularMDP`
holds, with the uncertainty that finitely many observations leave.

The model
---------
A :class:`TransitionSupport` names, for every ``(s, a)``, ``K`` candidate successors
``successors[s, a, k]`` (*slots*), of which ``valid[s, a, k]`` are real, and a parameter group
``groups[s, a]`` in ``[0, G)``. Every ``(s, a)`` of a group shares one probability vector
``theta_g`` over the K slots::

    P(s' = successors[s, a, k] | s, a) = theta[groups[s, a], k]

Tying is how structure enters: Rust's buses move 0, 1 or 2 mileage bins with the same
probabilities in every state and under either action (G = 1, one Dirichlet over 3 increments);
free dynamics give every ``(s, a)`` a group of its own (G = S A). The prior is
``theta_g ~ Dirichlet(alpha_g)`` over the group's valid slots. An observation ``(s, a, s')``
falls in the slot ``k`` with ``successors[s, a, k] == s'``; the slot counts ``n[g, k]`` are
sufficient, and by conjugacy the posterior is ``Dirichlet(alpha + n)``
(:class:`DirichletTransitions`). With ``alpha = 1`` (uniform on the simplex) the posterior mode
is the maximum-likelihood estimate, the observed frequencies: an econometrician's first stage.

Several slots of one ``(s, a)`` may name the same successor (a move clipped at an absorbing top
state: from the second-highest state "+1" and "+2" both land on the top). ``P(s' | s, a)`` then
adds their probabilities, and an observation of that successor says only "one of these slots": a
censored observation with no conjugate update. It is an error unless ``ambiguous="drop"``. An
observation whose successor fills *every* valid slot (staying in the absorbing top state) has
likelihood 1 whatever the probabilities; it is left out, which is exact.

Shapes: ``successors, valid: (S, A, K)``, ``groups: (S, A)``, prior/counts/concentration
``(G, K)`` (zero on a group's invalid slots), draws ``(n, S, A, K)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bayesirl._validation import (
    ArgumentTypeError,
    as_tensor,
    check_choice,
    check_indices,
    check_int,
    check_names,
    first_bad,
    fmt_index,
)
from bayesirl.core.mdp import TabularMDP

__all__ = ["DirichletTransitions", "TransitionSupport", "fit_transitions"]

_TIES = ("all", "action", "none")


@dataclass(frozen=True, eq=False)
class TransitionSupport:
    """Where each ``(s, a)`` can go, and which ``(s, a)`` share their probabilities.

    Args:
        successors: ``(S, A, K)`` integer next-state indices in ``[0, S)`` (any value on
            invalid slots; it is set to 0).
        valid: ``(S, A, K)`` bool, True on real slots (default: all); each ``(s, a)`` needs one.
        groups: ``(S, A)`` integer parameter group of each ``(s, a)``, numbered ``0..G-1``
            with every group used (default: a group per ``(s, a)``, free dynamics). All members
            of a group must have the same valid slots, since they share one distribution over
            them.
        slot_names: optional ``K`` labels of the slots (e.g. ``("+0", "+1", "+2")``).

    Use :meth:`from_offsets` for moves relative to the current state (or to a reset state).
    """

    successors: torch.Tensor
    valid: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    slot_names: tuple[str, ...] | None = None

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise fields once, here
        succ = as_tensor("successors", self.successors, integer=True).cpu()
        if succ.dim() != 3 or 0 in succ.shape:
            raise ValueError(f"successors must have non-empty shape (S, A, K), "
                             f"got {tuple(succ.shape)}")
        S, A, K = succ.shape
        if self.valid is None:
            valid = torch.ones(S, A, K, dtype=torch.bool)
        else:
            valid = torch.as_tensor(np.asarray(self.valid)) if not isinstance(
                self.valid, torch.Tensor) else self.valid.cpu()
            if valid.dtype != torch.bool:
                raise ArgumentTypeError(f"valid must be a boolean array, got dtype {valid.dtype}")
            if tuple(valid.shape) != (S, A, K):
                raise ValueError(f"valid must have shape {(S, A, K)} like successors, "
                                 f"got {tuple(valid.shape)}")
        check_indices("successors", succ, S, "a state", where=valid)
        empty = ~valid.any(-1)
        if empty.any():
            idx = first_bad(empty)
            raise ValueError(f"valid{fmt_index(idx)} has no True slot: (s, a) = {idx} can go "
                             "nowhere, expected at least one valid successor")
        if self.groups is None:
            groups = torch.arange(S * A).reshape(S, A)
        else:
            groups = as_tensor("groups", self.groups, integer=True).cpu()
            if tuple(groups.shape) != (S, A):
                raise ValueError(f"groups must have shape {(S, A)}, got {tuple(groups.shape)}")
            if (groups < 0).any():
                idx = first_bad(groups < 0)
                raise ValueError(f"groups{fmt_index(idx)} is {groups[idx].item()}, expected a "
                                 "group index >= 0")
            used = torch.bincount(groups.reshape(-1))
            if (used == 0).any():
                g = int((used == 0).nonzero()[0])
                raise ValueError(f"groups must number 0..G-1 with every group used; group {g} "
                                 f"has no (s, a) (G = {len(used)})")
        G = int(groups.max()) + 1
        # the valid slots of each group, read off its first member; every member must agree
        flat = groups.reshape(-1)
        first = torch.full((G,), S * A, dtype=torch.long).scatter_reduce(
            0, flat, torch.arange(S * A), reduce="amin")
        pattern = valid.reshape(S * A, K)[first]  # (G, K)
        differ = (valid.reshape(S * A, K) != pattern[flat]).any(-1)
        if differ.any():
            i = int(differ.nonzero()[0])
            s, a, g = i // A, i % A, int(flat[i])
            s0, a0 = int(first[g]) // A, int(first[g]) % A
            raise ValueError(f"valid[{s}, {a}] is {valid[s, a].tolist()} but valid[{s0}, {a0}] "
                             f"is {valid[s0, a0].tolist()}, expected the same valid slots within "
                             f"group {g} (its members share one distribution over the slots)")
        set_(self, "_group_valid", pattern)
        set_(self, "successors", succ.masked_fill(~valid, 0))
        set_(self, "valid", valid)
        set_(self, "groups", groups)
        if self.slot_names is not None:
            set_(self, "slot_names", check_names("slot_names", self.slot_names, K))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_offsets(cls, n_states: int, n_actions: int, offsets, origin=None,
                     tie: str = "all") -> TransitionSupport:
        """Moves by fixed offsets, from the current state or from a reset state.

        Args:
            n_states: S; states are ``0..S-1`` on a line.
            n_actions: A.
            offsets: ``(K,)`` integer moves shared by every action, or ``(A, K)`` per action.
            origin: ``A`` entries, each None (action ``a`` moves from the current state ``s``)
                or a state index (action ``a`` first resets to that state, then moves). Default:
                every action moves from ``s``.
            tie: ``"all"`` one group (slot k has the same probability in every ``(s, a)``),
                ``"action"`` one group per action, ``"none"`` a group per ``(s, a)``.

        Moves past either end are clipped: the top and bottom states absorb (from the top state,
        every slot stays there). Rust's bus engines::

            TransitionSupport.from_offsets(90, 2, offsets=(0, 1, 2), origin=(None, 0))

        keep (action 0) moves mileage up 0, 1 or 2 bins; replace (action 1) resets to bin 0
        and then moves; one set of increment probabilities for all.
        """
        S = check_int("n_states", n_states)
        A = check_int("n_actions", n_actions)
        check_choice("tie", tie, _TIES)
        off = as_tensor("offsets", offsets, integer=True).cpu()
        if off.dim() == 1 and off.numel() > 0:
            off = off.expand(A, -1)
        if off.dim() != 2 or tuple(off.shape[:1]) != (A,) or off.shape[1] == 0:
            raise ValueError(f"offsets must have shape (K,) or ({A}, K) with K >= 1, "
                             f"got {tuple(off.shape)}")
        if origin is None:
            origin = (None,) * A
        if isinstance(origin, (str, bytes)) or not isinstance(origin, Sequence) \
                or len(origin) != A:
            raise ValueError(f"origin must be a sequence of {A} entries (None or a state "
                             f"index), one per action, got {origin!r}")
        base = torch.arange(S)[:, None].repeat(1, A)  # (S, A)
        for a, o in enumerate(origin):
            if o is not None:
                base[:, a] = check_int(f"origin[{a}]", o, low=0, high=S - 1)
        succ = (base[..., None] + off[None]).clamp(0, S - 1)  # (S, A, K)
        if tie == "all":
            groups = torch.zeros(S, A, dtype=torch.long)
        elif tie == "action":
            groups = torch.arange(A).expand(S, A)
        else:
            groups = None
        names = tuple(f"{int(o):+d}" for o in off[0]) if (off == off[0]).all() else None
        return cls(succ, groups=groups, slot_names=names)

    # ------------------------------------------------------------------ sizes
    @property
    def n_states(self) -> int:
        return self.successors.shape[0]

    @property
    def n_actions(self) -> int:
        return self.successors.shape[1]

    @property
    def n_slots(self) -> int:
        """K, the number of slots per ``(s, a)``."""
        return self.successors.shape[2]

    @property
    def n_groups(self) -> int:
        """G, the number of Dirichlet distributions."""
        return int(self.groups.max()) + 1

    def group_valid(self) -> torch.Tensor:
        """``(G, K)`` bool: the valid slots of each group (the same for all its members)."""
        return self._group_valid

    def slots(self, states, actions, next_states, ambiguous: str = "error"):
        """The slot each observation ``(s, a, s')`` falls in.

        Args:
            states, actions, next_states: ``(N,)`` integer indices.
            ambiguous: ``"error"`` or ``"drop"``: what to do with a censored observation, one
                whose successor fills several but not all valid slots of its ``(s, a)``.

        Returns:
            ``(groups (M,), slots (M,), status (N,))``: the group and slot of each counted
            observation, and each observation's status: 0 counted, 1 uninformative (its
            successor fills every valid slot, so its likelihood is 1 whatever the
            probabilities, e.g. staying in an absorbing top state), 2 censored and dropped.

        Raises ``ValueError`` naming the observation index, s, a and s' when an index is out of
        range or the transition is outside the support.
        """
        check_choice("ambiguous", ambiguous, ("error", "drop"))
        S, A = self.n_states, self.n_actions
        s = _indices("states", states)
        a = _indices("actions", actions)
        s1 = _indices("next_states", next_states)
        for name, t in (("actions", a), ("next_states", s1)):
            if t.shape != s.shape:
                raise ValueError(f"{name} must have shape {tuple(s.shape)} like states, "
                                 f"got {tuple(t.shape)}")
        for name, t, n in (("states", s, S), ("actions", a, A), ("next_states", s1, S)):
            bad = (t < 0) | (t >= n)
            if bad.any():
                i = int(bad.nonzero()[0])
                raise ValueError(f"observation {i}: {name}[{i}] is {t[i].item()}, expected an "
                                 f"index in [0, {n}) (s={s[i].item()}, a={a[i].item()}, "
                                 f"s'={s1[i].item()})")
        valid = self.valid[s, a]  # (N, K)
        match = (self.successors[s, a] == s1[:, None]) & valid
        n_match, n_valid = match.sum(-1), valid.sum(-1)
        if (n_match == 0).any():
            i = int((n_match == 0).nonzero()[0])
            si, ai = s[i].item(), a[i].item()
            reach = sorted(set(self.successors[si, ai][self.valid[si, ai]].tolist()))
            raise ValueError(f"observation {i}: transition s={si}, a={ai} -> s'={s1[i].item()} "
                             f"is outside the support, expected s' in {reach}")
        counted = n_match == 1
        censored = ~counted & (n_match < n_valid)
        if ambiguous == "error" and censored.any():
            i = int(censored.nonzero()[0])
            k = match[i].nonzero().reshape(-1).tolist()
            raise ValueError(f"observation {i}: transition s={s[i].item()}, a={a[i].item()} -> "
                             f"s'={s1[i].item()} fills slots {k} of its support (moves clipped "
                             "at an absorbing state): a censored observation has no conjugate "
                             "update; use a support that does not clip there (more states) or "
                             "pass ambiguous='drop'")
        status = torch.where(counted, 0, torch.where(censored, 2, 1))
        slot = match[counted].long().argmax(-1)
        return self.groups[s[counted], a[counted]], slot, status


def _indices(name: str, value) -> torch.Tensor:
    t = as_tensor(name, value, integer=True).cpu()
    if t.dim() != 1:
        raise ValueError(f"{name} must have shape (N,), got {tuple(t.shape)}")
    return t


@dataclass(frozen=True, eq=False)
class DirichletTransitions:
    """The Dirichlet posterior over a support's transition probabilities.

    Args:
        support: the :class:`TransitionSupport`.
        prior: ``(G, K)`` concentration alpha (> 0 on valid slots), or anything that broadcasts
            to it: a number, or ``(K,)`` per slot.
        counts: ``(G, K)`` observed slot counts n (>= 0; 0 on invalid slots).
        n_censored: censored observations left out (``ambiguous="drop"``).
        n_uninformative: observations not counted because their likelihood is 1 whatever the
            probabilities (see :meth:`TransitionSupport.slots`).

    The posterior is ``Dirichlet(alpha + n)`` for each group; :attr:`concentration` holds it.
    Build one with :func:`fit_transitions` (from triples) or :meth:`from_counts`. Stored in
    float64 on the CPU; methods return ``dtype`` (default ``torch.get_default_dtype()``).
    """

    support: TransitionSupport
    prior: torch.Tensor
    counts: torch.Tensor
    n_censored: int = 0
    n_uninformative: int = 0

    def __post_init__(self):
        set_ = object.__setattr__
        if not isinstance(self.support, TransitionSupport):
            raise ArgumentTypeError("support must be a TransitionSupport, got "
                                    f"{type(self.support).__name__}")
        G, K = self.support.n_groups, self.support.n_slots
        valid = self.support.group_valid()
        for name in ("prior", "counts"):
            t = as_tensor(name, getattr(self, name), dtype=torch.float64).cpu()
            try:
                t = torch.broadcast_to(t, (G, K)).clone()
            except RuntimeError as e:
                raise ValueError(f"{name} must be a number or have shape ({K},) or ({G}, {K}), "
                                 f"got {tuple(t.shape)}") from e
            low = ((t <= 0) & valid) if name == "prior" else (t < 0)
            bad = ~torch.isfinite(t) | low
            if bad.any():
                idx = first_bad(bad)
                what = "a concentration > 0" if name == "prior" else "a count >= 0"
                raise ValueError(f"{name}{fmt_index(idx)} is {t[idx].item():g}, expected {what}")
            if name == "counts" and (t * ~valid).any():
                idx = first_bad((t > 0) & ~valid)
                raise ValueError(f"counts{fmt_index(idx)} is {t[idx].item():g} on a slot that "
                                 "is not valid for its group, expected 0")
            set_(self, name, t.masked_fill(~valid, 0.0))
        for name in ("n_censored", "n_uninformative"):
            set_(self, name, check_int(name, getattr(self, name), low=0))

    @classmethod
    def from_counts(cls, support: TransitionSupport, counts, prior=1.0) -> DirichletTransitions:
        """From slot counts ``(G, K)`` tallied elsewhere (e.g. recorded increments)."""
        return cls(support, prior, counts)

    # ------------------------------------------------------------------ summaries
    @property
    def concentration(self) -> torch.Tensor:
        """``(G, K)`` posterior concentration ``prior + counts`` (0 on invalid slots)."""
        return self.prior + self.counts

    @property
    def n_observations(self) -> int:
        """Number of observations counted (censored and uninformative ones are not)."""
        return int(round(float(self.counts.sum())))

    def group_mean(self, dtype=None) -> torch.Tensor:
        """``(G, K)`` posterior mean ``alpha_k / sum alpha`` of each group's probabilities."""
        c = self.concentration
        return (c / c.sum(-1, keepdim=True)).to(dtype or torch.get_default_dtype())

    def group_mode(self, dtype=None) -> torch.Tensor:
        """``(G, K)`` posterior mode ``(alpha_k - 1) / (sum alpha - K_valid)``.

        With a uniform prior (alpha = 1) this is the maximum-likelihood estimate, the observed
        frequencies. Defined when every valid concentration is >= 1 and one exceeds 1; raises
        ``ValueError`` naming the group otherwise. A group with one valid slot (a move the
        support fixes) has probability 1 there, observed or not.
        """
        c, valid = self.concentration, self.support.group_valid()
        lone = valid.sum(-1, keepdim=True) == 1
        low = valid & (c < 1) & ~lone
        flat = (((c - 1) * valid).sum(-1) <= 0) & ~lone[:, 0]
        if low.any() or flat.any():
            g = first_bad(low)[0] if low.any() else int(flat.nonzero()[0])
            raise ValueError(f"group {g} has concentration {c[g][valid[g]].tolist()}: the "
                             "Dirichlet mode needs every entry >= 1 and one > 1, use the mean")
        m = torch.where(lone, valid.to(c.dtype), (c - 1) * valid)
        return (m / m.sum(-1, keepdim=True)).to(dtype or torch.get_default_dtype())

    def group_sd(self, dtype=None) -> torch.Tensor:
        """``(G, K)`` posterior standard deviation of each probability,
        ``sqrt(alpha_k (alpha_0 - alpha_k) / (alpha_0^2 (alpha_0 + 1)))``."""
        c = self.concentration
        c0 = c.sum(-1, keepdim=True)
        return (c * (c0 - c) / (c0 ** 2 * (c0 + 1))).sqrt().to(
            dtype or torch.get_default_dtype())

    def probabilities(self, theta: torch.Tensor) -> torch.Tensor:
        """Group probabilities ``theta: (..., G, K)`` as transition probabilities
        ``(..., S, A, K)`` on :attr:`support` (zero on invalid slots). Differentiable in
        ``theta``, so transition parameters can sit inside a posterior with the reward's."""
        groups = self.support.groups.to(theta.device)
        return theta[..., groups, :] * self.support.valid.to(theta.device, theta.dtype)

    def log_likelihood(self, theta: torch.Tensor) -> torch.Tensor:
        """``(...)`` log-likelihood ``sum_{g,k} n[g, k] log theta[g, k]`` of the counted
        observations under group probabilities ``theta: (..., G, K)`` (slots without counts
        add nothing, even where theta is 0). Differentiable in ``theta``: the transition term
        of a full likelihood (Rust's stage 3)."""
        n = self.counts.to(theta.device, theta.dtype)
        terms = torch.where(n > 0, n * torch.log(torch.where(n > 0, theta, 1.0)), 0.0)
        return terms.sum((-2, -1))

    def mean(self, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior mean transitions ``(successors (S, A, K), probabilities (S, A, K))``."""
        return self.support.successors, self.probabilities(self.group_mean(dtype))

    def mode(self, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior mode transitions (the MLE under a uniform prior); see
        :meth:`group_mode`."""
        return self.support.successors, self.probabilities(self.group_mode(dtype))

    def draws(self, n: int, seed: int = 0, dtype=None) -> torch.Tensor:
        """``(n, S, A, K)`` transition probabilities drawn from the posterior (successors are
        :attr:`support`'s). Each group's vector is drawn once per draw and shared by its
        members. Reproducible: the draws depend only on ``seed`` (a NumPy generator)."""
        n = check_int("n", n)
        seed = check_int("seed", seed, low=0)
        rng = np.random.default_rng(seed)
        c = self.concentration.numpy()
        valid = c > 0
        gam = np.zeros((n,) + c.shape)
        gam[:, valid] = rng.standard_gamma(c[valid], size=(n, int(valid.sum())))
        theta = torch.from_numpy(gam / gam.sum(-1, keepdims=True))
        return self.probabilities(theta.to(dtype or torch.get_default_dtype()))

    def counts_table(self) -> dict[str, np.ndarray]:
        """One row per valid (group, slot): columns ``group, slot, name, prior, count,
        concentration, mean, sd`` as NumPy arrays (``pandas.DataFrame(table)`` reads it)."""
        valid = self.support.group_valid()
        g, k = valid.nonzero(as_tuple=True)
        names = self.support.slot_names or tuple(str(i) for i in range(self.support.n_slots))
        mean, sd = self.group_mean(torch.float64), self.group_sd(torch.float64)
        return {"group": g.numpy(), "slot": k.numpy(),
                "name": np.array([names[i] for i in k.tolist()], dtype=object),
                "prior": self.prior[g, k].numpy(), "count": self.counts[g, k].numpy(),
                "concentration": self.concentration[g, k].numpy(),
                "mean": mean[g, k].numpy(), "sd": sd[g, k].numpy()}

    # ------------------------------------------------------------------ an MDP
    def to_mdp(self, estimate="mean", *, discount: float | None = None,
               horizon: int | None = None, initial=None, features=None, dtype=None,
               **kwargs) -> TabularMDP:
        """A :class:`~bayesirl.TabularMDP` with these dynamics.

        Args:
            estimate: ``"mean"``, ``"mode"`` (the MLE under a uniform prior) or an
                ``(S, A, K)`` tensor of probabilities on the support (e.g. one of
                :meth:`draws`).
            discount, horizon: exactly one, as for :class:`~bayesirl.TabularMDP`.
            initial: ``(S,)`` initial distribution (default uniform).
            features: ``(S, d)`` or ``(S, A, d)`` reward features.
            dtype: float dtype of the MDP (default ``torch.get_default_dtype()``).
            kwargs: other :class:`~bayesirl.TabularMDP` fields (``feature_names``,
                ``state_names``, ``action_names``, ...).
        """
        dtype = dtype or torch.get_default_dtype()
        if isinstance(estimate, str):
            check_choice("estimate", estimate, ("mean", "mode"))
            succ, probs = self.mean(dtype) if estimate == "mean" else self.mode(dtype)
        else:
            probs = as_tensor("estimate", estimate, dtype=dtype).cpu()
            shape = tuple(self.support.successors.shape)
            if tuple(probs.shape) != shape:
                raise ValueError(f"estimate must be 'mean', 'mode' or probabilities of shape "
                                 f"{shape}, got {tuple(probs.shape)}")
            succ = self.support.successors
        S = self.support.n_states
        if initial is None:
            initial = torch.full((S,), 1.0 / S, dtype=dtype)
        return TabularMDP(successors=succ, transition_probs=probs, initial=initial,
                          discount=discount, horizon=horizon, features=features, **kwargs)


def fit_transitions(support: TransitionSupport, states, actions, next_states, prior=1.0,
                    ambiguous: str = "error") -> DirichletTransitions:
    """The Dirichlet posterior of ``support``'s probabilities given observed triples.

    Args:
        support: where each ``(s, a)`` can go and which ``(s, a)`` share probabilities.
        states, actions, next_states: ``(N,)`` integer indices, observation i being the
            transition ``states[i] --actions[i]--> next_states[i]``.
        prior: Dirichlet concentration: a number, ``(K,)`` or ``(G, K)``; 1 is uniform on the
            simplex, and then :meth:`DirichletTransitions.mode` is the MLE.
        ambiguous: ``"error"`` or ``"drop"`` for censored observations (see the module
            docstring).

    Raises ``ValueError`` naming the observation index, s, a and s' when a transition lies
    outside the support.
    """
    if not isinstance(support, TransitionSupport):
        raise ArgumentTypeError(f"support must be a TransitionSupport, got "
                                f"{type(support).__name__}")
    g, k, status = support.slots(states, actions, next_states, ambiguous)
    G, K = support.n_groups, support.n_slots
    counts = torch.bincount(g * K + k, minlength=G * K).reshape(G, K).to(torch.float64)
    return DirichletTransitions(support, prior, counts, n_censored=int((status == 2).sum()),
                                n_uninformative=int((status == 1).sum()))
