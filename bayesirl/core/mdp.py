"""Tabular Markov decision processes with sparse transitions.

A :class:`TabularMDP` is validated once, at construction; everything downstream (planning,
likelihoods, inference) trusts it. Axis order is fixed throughout bayesirl:

- ``successors``: ``(S, A, K)`` integer indices of the possible next states of each (s, a);
- ``transition_probs``: ``(S, A, K)`` their probabilities (padding entries have probability 0);
- the dense view :meth:`TabularMDP.transition_matrix` is ``(S, A, S')``.

K is the largest branching factor, so memory and compute scale with S * A * K, not S**2 * A.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass

import torch

from bayesirl._validation import (
    ArgumentTypeError,
    as_tensor,
    check_distribution_rows,
    check_finite,
    check_indices,
    check_int,
    check_names,
    check_number,
    float_dtype,
    positive_ints,
)
from bayesirl.core.sparse import (
    batch_first,
    batch_last,
    matmul,
    transition_operators,
)

__all__ = ["TabularMDP", "check_mdp"]


@dataclass(frozen=True, eq=False)
class TabularMDP:
    """A finite MDP with sparse transitions, validated at construction.

    Args:
        successors: ``(S, A, K)`` integer next-state indices in ``[0, S)``.
        transition_probs: ``(S, A, K)`` probabilities; each ``[s, a]`` row sums to 1.
        initial: ``(S,)`` initial state distribution mu.
        horizon: number of decisions T of a finite-horizon problem (time-indexed policy).
        discount: gamma in [0, 1) of an infinite-horizon problem (stationary policy).
            Exactly one of ``horizon`` and ``discount`` is given.
        features: ``(S, d)`` state features or ``(S, A, d)`` state-action features, ``d >= 1``
            (None for none).
        feature_names: ``d`` names, used as coordinates in ArviZ output.
        reward: ground-truth reward ``(S,)`` or ``(S, A)``, when known (simulated problems).
        shape: grid shape ``(rows, cols)`` with ``rows * cols == S`` for plotting.
        state_names, action_names: optional labels.

    Use :meth:`from_dense` to build one from a dense ``(S, A, S')`` transition tensor.
    """

    successors: torch.Tensor
    transition_probs: torch.Tensor
    initial: torch.Tensor
    horizon: int | None = None
    discount: float | None = None
    features: torch.Tensor | None = None
    feature_names: tuple[str, ...] | None = None
    reward: torch.Tensor | None = None
    shape: tuple[int, int] | None = None
    state_names: tuple[str, ...] | None = None
    action_names: tuple[str, ...] | None = None

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise fields once, here
        probs = as_tensor("transition_probs", self.transition_probs)
        if probs.dim() != 3:
            raise ValueError(
                f"transition_probs must have shape (S, A, K), got {tuple(probs.shape)}")
        S, A, K = probs.shape
        if S < 1 or A < 1 or K < 1:
            raise ValueError(f"transition_probs must be non-empty, got shape {tuple(probs.shape)}")
        dtype, device = probs.dtype, probs.device
        succ = as_tensor("successors", self.successors, device=device, integer=True)
        if tuple(succ.shape) != (S, A, K):
            raise ValueError(f"successors must have shape {(S, A, K)} like transition_probs, "
                             f"got {tuple(succ.shape)}")
        check_indices("successors", succ, S, "a state")
        check_distribution_rows("transition_probs", probs)
        set_(self, "transition_probs", probs)
        set_(self, "successors", succ)

        initial = as_tensor("initial", self.initial, dtype, device)
        if tuple(initial.shape) != (S,):
            raise ValueError(f"initial must have shape ({S},) (one entry per state), "
                             f"got {tuple(initial.shape)}")
        check_distribution_rows("initial", initial)
        set_(self, "initial", initial)

        if (self.horizon is None) == (self.discount is None):
            raise ValueError("give exactly one of horizon (finite) or discount (infinite), got "
                             f"horizon={self.horizon!r}, discount={self.discount!r}")
        if self.horizon is not None:
            set_(self, "horizon", check_int("horizon", self.horizon))
        else:
            set_(self, "discount", check_number("discount", self.discount, 0.0, 1.0,
                                                high_open=True))

        if self.features is not None:
            phi = as_tensor("features", self.features, dtype, device)
            if phi.dim() not in (2, 3) or phi.shape[0] != S or (phi.dim() == 3
                                                                 and phi.shape[1] != A):
                raise ValueError(f"features must have shape ({S}, d) or ({S}, {A}, d), "
                                 f"got {tuple(phi.shape)}")
            if phi.shape[-1] < 1:  # a reward of no features: features=None says that
                raise ValueError(f"features has shape {tuple(phi.shape)}, expected d >= 1 "
                                 "features (pass features=None for none)")
            check_finite("features", phi)
            set_(self, "features", phi)
            d = phi.shape[-1]
            if self.feature_names is not None:
                set_(self, "feature_names", check_names("feature_names", self.feature_names, d))
        elif self.feature_names is not None:
            raise ValueError("feature_names given without features")

        if self.reward is not None:
            r = as_tensor("reward", self.reward, dtype, device)
            if tuple(r.shape) not in ((S,), (S, A)):
                raise ValueError(f"reward must have shape ({S},) or ({S}, {A}), "
                                 f"got {tuple(r.shape)}")
            check_finite("reward", r)
            set_(self, "reward", r)

        if self.shape is not None:
            shape = positive_ints(self.shape)
            if shape is None or len(shape) != 2 or shape[0] * shape[1] != S:
                raise ValueError(f"shape is {self.shape!r}, expected (rows, cols) with "
                                 f"rows * cols == {S}")
            set_(self, "shape", shape)
        for field, n in (("state_names", S), ("action_names", A)):
            if getattr(self, field) is not None:
                set_(self, field, check_names(field, getattr(self, field), n))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dense(cls, transitions, **kwargs) -> TabularMDP:
        """Build from a dense transition tensor ``transitions: (S, A, S')``.

        Every row ``transitions[s, a]`` must be a distribution over next states; the sparse
        representation keeps only the non-zero entries. Other keyword arguments are those of
        :class:`TabularMDP`; ``initial`` defaults to the uniform distribution.
        """
        P = as_tensor("transitions", transitions)
        if P.dim() != 3 or P.shape[0] != P.shape[2] or P.shape[0] < 1 or P.shape[1] < 1:
            raise ValueError(f"transitions must have shape (S, A, S), got {tuple(P.shape)}")
        check_distribution_rows("transitions", P)
        S = P.shape[0]
        K = max(int((P > 0).sum(-1).max()), 1)
        # the K largest entries of each row hold all of its mass
        probs, succ = P.topk(K, dim=-1)
        kwargs.setdefault("initial", torch.full((S,), 1.0 / S, dtype=P.dtype))
        return cls(successors=succ, transition_probs=probs, **kwargs)

    # ------------------------------------------------------------------ sizes and views
    @property
    def n_states(self) -> int:
        return self.transition_probs.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transition_probs.shape[1]

    @property
    def n_features(self) -> int | None:
        return None if self.features is None else self.features.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.transition_probs.dtype

    @property
    def device(self) -> torch.device:
        return self.transition_probs.device

    @property
    def finite_horizon(self) -> bool:
        return self.horizon is not None

    def transition_matrix(self) -> torch.Tensor:
        """The dense view ``(S, A, S')`` (a convenience; never the compute path)."""
        S, A, _ = self.transition_probs.shape
        P = torch.zeros(S, A, S, dtype=self.dtype, device=self.device)
        return P.scatter_add_(-1, self.successors, self.transition_probs)

    def state_action_features(self) -> torch.Tensor:
        """Features broadcast to ``(S, A, d)``."""
        if self.features is None:
            raise ValueError("this MDP has no features")
        if self.features.dim() == 3:
            return self.features
        return self.features.unsqueeze(1).expand(-1, self.n_actions, -1)

    def __getstate__(self):
        # cached transition operators are rebuilt on demand, not pickled (parallel chains)
        return {k: v for k, v in self.__dict__.items()
                if k != "_operators"}

    @functools.cached_property
    def _operators(self):
        # detached: the cached operators outlive one backward pass; gradients with respect to
        # the probabilities go through the discounted solvers, never through these operators
        return transition_operators(self.successors, self.transition_probs.detach())

    def expected_next(self, v: torch.Tensor) -> torch.Tensor:
        """``E[v(s') | s, a]`` for ``v: (..., S)``, returning ``(..., S, A)``. Differentiable."""
        P, PT = self._operators
        out = matmul(P, PT, batch_last(v, 1))
        return batch_first(out, v.shape[:-1], (self.n_states, self.n_actions))

    def push(self, w: torch.Tensor) -> torch.Tensor:
        """``sum_{s,a} w(s, a) P(s' | s, a)`` for ``w: (..., S, A)``, returning ``(..., S')``.

        The transpose of :meth:`expected_next`: it moves state-action mass to next states.
        """
        P, PT = self._operators
        out = matmul(PT, P, batch_last(w, 2))
        return batch_first(out, w.shape[:-2], (self.n_states,))

    def to(self, device=None, dtype=None) -> TabularMDP:
        """A copy on ``device`` (a ``torch.device`` or a name such as ``"cuda"``) with floating
        tensors cast to ``dtype``, a floating dtype (``torch.float32``, ``torch.float64``)."""
        if dtype is not None:
            float_dtype(dtype)
        if device is not None:
            try:
                device = torch.device(device)
            except (RuntimeError, TypeError) as e:
                error = ArgumentTypeError if isinstance(e, TypeError) else ValueError
                raise error(f"device is {device!r}, expected a torch device or its name, such "
                            "as 'cpu', 'cuda' or 'cuda:1'") from e

        def move(t):
            if t is None:
                return None
            if t.dtype.is_floating_point:
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)
        try:
            moved = {k: move(getattr(self, k)) for k in ("successors", "transition_probs",
                                                         "initial", "features", "reward")}
        except (RuntimeError, AssertionError) as e:  # a device torch has no backend for
            raise ValueError(f"device is {str(device)!r}, which is not available: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        return dataclasses.replace(self, **moved)

    def replace(self, **changes) -> TabularMDP:
        """A validated copy with some fields changed (e.g. ``mdp.replace(horizon=10)``).

        Giving ``horizon`` clears ``discount`` and the other way round; giving ``features``
        without ``feature_names`` drops the old names (they named the old features)."""
        if "horizon" in changes and "discount" not in changes:
            changes["discount"] = None
        if "discount" in changes and "horizon" not in changes:
            changes["horizon"] = None
        if "features" in changes and "feature_names" not in changes:
            changes["feature_names"] = None
        return dataclasses.replace(self, **changes)

    def with_probabilities(self, prob) -> TabularMDP:
        """A copy with the same successors and transition probabilities ``prob: (S, A, K)``.

        ``prob`` may require grad (transition parameters inside a posterior): the discounted
        planners (``soft_value_iteration``, ``value_iteration``) then differentiate through it,
        their implicit gradient giving ``dL/dprob[s, a, k] = gamma pi(a|s) u(s) V[succ[s, a,
        k]]`` (``u`` the adjoint). The copy's :meth:`expected_next` and :meth:`push` treat
        ``prob`` as a constant (their cached operators are built from ``prob.detach()``, so
        that no graph outlives one backward pass); the finite-horizon planners and
        ``occupancy`` refuse a ``prob`` that requires grad rather than drop its gradient.

        ``prob`` is cast to this MDP's dtype and device and validated: shape ``(S, A, K)`` as
        ``successors``, finite, non-negative, each ``prob[s, a]`` summing to 1 (within 1e-6 in
        float64, 1e-4 in float32); errors name the first bad index.
        """
        S, A, K = self.successors.shape
        prob = as_tensor("prob", prob, self.dtype, self.device)
        if tuple(prob.shape) != (S, A, K):
            raise ValueError(f"prob must have shape {(S, A, K)} like successors, "
                             f"got {tuple(prob.shape)}")
        check_distribution_rows("prob", prob)
        copy = dataclasses.replace(self, transition_probs=prob)
        copy.__dict__["_operators"] = transition_operators(copy.successors, prob.detach())
        return copy

    def fingerprint(self) -> str:
        """A short hash of dynamics, horizon/discount and features (to match saved posteriors)."""
        h = hashlib.sha256()
        for t in (self.successors, self.transition_probs, self.initial, self.features):
            if t is not None:
                h.update(t.detach().cpu().to(torch.float64 if t.dtype.is_floating_point
                                             else torch.long).numpy().tobytes())
        h.update(repr((self.horizon, self.discount)).encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        T = f"horizon={self.horizon}" if self.finite_horizon else f"discount={self.discount}"
        d = "" if self.features is None else f", features={tuple(self.features.shape)}"
        return (f"TabularMDP(S={self.n_states}, A={self.n_actions}, K={self.successors.shape[-1]}"
                f", {T}{d}, dtype={self.dtype}, device={self.device})")


def check_mdp(mdp, name: str = "mdp") -> TabularMDP:
    """``mdp`` if it is a :class:`TabularMDP`; the one home of that rule (TypeError otherwise)."""
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"{name} must be a TabularMDP, got {type(mdp).__name__}")
    return mdp
