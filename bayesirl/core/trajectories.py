"""Offline trajectories with continuous observations and discrete actions.

A :class:`Trajectories` holds N episodes padded to a common length T:

- ``obs``: ``(N, T, obs_dim)`` float, the observation s_t in which decision t was taken;
- ``actions``: ``(N, T)`` long, the action a_t in ``[0, n_actions)``;
- ``next_obs``: ``(N, T, obs_dim)`` float, the observation s'_t reached after a_t;
- ``terminals``: ``(N, T)`` bool, True where s'_t is terminal (the episode *terminated*: no value
  follows it, V(s'_t) = 0). A time-limit *truncation* is not terminal: the state after it still
  has a value. Only an episode's last real step can be terminal;
- ``mask``: ``(N, T)`` bool, True on real steps; each row's True entries are a prefix (>= 1);
- ``rewards``: ``(N, T)`` float or None, the environment's rewards when they were logged (the
  IRL models never read them; benchmarks report returns with them).

Unlike the tabular :class:`~bayesirl.Demonstrations`, no transition model is needed: every step
carries its own successor, which is all a value-space model (:mod:`bayesirl.model.q_value`)
uses. Constructors read arrays (:meth:`Trajectories.from_arrays`), Minari-style episodes
(:meth:`Trajectories.from_episodes`: ``observations`` one longer than ``actions``,
``terminations``, ``truncations``), imitation-style trajectories
(:meth:`Trajectories.from_imitation`: ``obs``, ``acts``, ``terminal``), and rollouts of any
policy in a Gymnasium environment (:func:`rollout`). Neither Minari nor imitation is imported:
their objects are read by their fields. Validated once, at construction; downstream code trusts
it. Padding entries are zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from bayesirl._validation import (
    ArgumentTypeError,
    as_tensor,
    bool_tensor,
    check_indices,
    check_int,
    check_number,
    first_bad,
    float_dtype,
    fmt_index,
    integer_scalar,
    select_rows,
)
from bayesirl.core.demos import check_prefix_mask
from bayesirl.core.gym_envs import as_env

__all__ = ["Trajectories", "Transitions", "evaluate", "rollout"]


class Transitions(NamedTuple):
    """The M real steps of a :class:`Trajectories`, in row-major (trajectory, step) order.

    ``obs, next_obs: (M, obs_dim)``; ``actions: (M,)`` long; ``terminals: (M,)`` bool;
    ``trajectory, step: (M,)`` long, where each transition came from.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    next_obs: torch.Tensor
    terminals: torch.Tensor
    trajectory: torch.Tensor
    step: torch.Tensor


def _check_finite_on(name: str, t: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise naming the first non-finite real entry of ``t`` (``mask`` broadcasts from the
    left over ``t``'s leading dims)."""
    while mask.dim() < t.dim():
        mask = mask.unsqueeze(-1)
    bad = ~torch.isfinite(t) & mask
    if bad.any():
        idx = first_bad(bad)
        raise ValueError(f"{name}{fmt_index(idx)} is {t[idx].item()}, expected a finite number")


@dataclass(frozen=True, eq=False)
class Trajectories:
    """N episodes of continuous observations and discrete actions, validated at construction.

    Args:
        obs: ``(N, T, obs_dim)`` observations s_t.
        actions: ``(N, T)`` integer actions in ``[0, n_actions)``.
        next_obs: ``(N, T, obs_dim)`` observations s'_t after each action.
        terminals: ``(N, T)`` bool, True where s'_t is terminal (V(s'_t) = 0); only a row's
            last real step may be True.
        mask: ``(N, T)`` bool, True on real steps, a prefix of length >= 1 in each row.
        n_actions: the number of discrete actions A (>= the largest action + 1).
        rewards: ``(N, T)`` environment rewards, or None.

    Observations are kept in their floating dtype (integers become the default dtype).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    next_obs: torch.Tensor
    terminals: torch.Tensor
    mask: torch.Tensor
    n_actions: int
    rewards: torch.Tensor | None = None

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise the fields once, here
        obs = as_tensor("obs", self.obs)
        if obs.dim() != 3:
            raise ValueError(f"obs must have shape (N, T, obs_dim), got {tuple(obs.shape)}")
        N, T, D = obs.shape
        if N == 0:
            raise ValueError("trajectories are empty (N == 0), expected at least one")
        if T == 0 or D == 0:
            raise ValueError(f"obs has shape {tuple(obs.shape)}, expected T >= 1 steps and "
                             "obs_dim >= 1")
        device, dtype = obs.device, obs.dtype
        next_obs = as_tensor("next_obs", self.next_obs, dtype=dtype, device=device)
        if next_obs.shape != obs.shape:
            raise ValueError(f"next_obs must have shape {tuple(obs.shape)} like obs, got "
                             f"{tuple(next_obs.shape)}")
        actions = as_tensor("actions", self.actions, device=device, integer=True)
        terminals = bool_tensor("terminals", self.terminals, device)
        mask = bool_tensor("mask", self.mask, device)
        for name, t in (("actions", actions), ("terminals", terminals), ("mask", mask)):
            if tuple(t.shape) != (N, T):
                raise ValueError(f"{name} must have shape ({N}, {T}), got {tuple(t.shape)}")
        check_prefix_mask(mask, "trajectory")
        n_actions = check_int("n_actions", self.n_actions, low=1)
        bad = mask & ((actions < 0) | (actions >= n_actions))
        if bad.any():
            i, t = first_bad(bad)
            raise ValueError(f"trajectory {i}, step {t}: actions[{i}, {t}] is "
                             f"{actions[i, t].item()}, expected an action in [0, {n_actions})")
        last = torch.zeros_like(mask)
        last[torch.arange(N, device=device), mask.sum(1) - 1] = True
        early = terminals & mask & ~last
        if early.any():
            i, t = first_bad(early)
            raise ValueError(f"terminals[{i}, {t}] is True before the last step of trajectory "
                             f"{i} (length {int(mask[i].sum())}), expected a terminal only at "
                             "an episode's last step")
        _check_finite_on("obs", obs, mask)
        _check_finite_on("next_obs", next_obs, mask)
        pad = ~mask
        set_(self, "obs", obs.masked_fill(pad[..., None], 0.0))
        set_(self, "next_obs", next_obs.masked_fill(pad[..., None], 0.0))
        set_(self, "actions", actions.masked_fill(pad, 0))
        set_(self, "terminals", terminals & mask)
        set_(self, "mask", mask)
        set_(self, "n_actions", n_actions)
        if self.rewards is not None:
            rewards = as_tensor("rewards", self.rewards, dtype=dtype, device=device)
            if tuple(rewards.shape) != (N, T):
                raise ValueError(f"rewards must have shape ({N}, {T}), got "
                                 f"{tuple(rewards.shape)}")
            _check_finite_on("rewards", rewards, mask)
            set_(self, "rewards", rewards.masked_fill(pad, 0.0))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, obs, actions, next_obs=None, *, terminals=None, lengths=None,
                    mask=None, rewards=None, n_actions: int | None = None) -> Trajectories:
        """From padded arrays.

        Args:
            obs: ``(N, T, obs_dim)`` with ``next_obs`` given, or ``(N, T + 1, obs_dim)`` with
                ``next_obs`` None (row i's observation after its last decision at index
                ``lengths[i]``). A 2-d ``(T, obs_dim)`` (or ``(T + 1, obs_dim)``) is one
                trajectory.
            actions: ``(N, T)`` (or ``(T,)``) integer actions.
            next_obs: ``(N, T, obs_dim)`` or None.
            terminals: ``(N, T)`` per step, ``(N,)`` per trajectory (its last step), or None
                (nothing terminal).
            lengths: ``(N,)`` real steps per row, or ``mask``: ``(N, T)``; default all T.
            rewards: ``(N, T)`` or None.
            n_actions: default the largest action + 1.
        """
        obs = as_tensor("obs", obs)
        actions = as_tensor("actions", actions, device=obs.device, integer=True)
        if obs.dim() == 2 and actions.dim() == 1:  # one trajectory
            obs, actions = obs[None], actions[None]
            next_obs = None if next_obs is None else as_tensor("next_obs", next_obs)[None]
            if terminals is not None:  # one flag (the trajectory's) or one per step
                t = torch.as_tensor(np.asarray(terminals))
                terminals = t.reshape(1) if t.numel() == 1 else t.reshape(1, -1)
            rewards = None if rewards is None else as_tensor("rewards", rewards)[None]
        if obs.dim() != 3 or actions.dim() != 2:
            raise ValueError(f"obs must have shape (N, T, obs_dim) and actions (N, T), got "
                             f"{tuple(obs.shape)} and {tuple(actions.shape)}")
        N, T = actions.shape
        if next_obs is None:
            if obs.shape[:2] != (N, T + 1):
                raise ValueError(f"obs has shape {tuple(obs.shape)}; without next_obs it must "
                                 f"have T + 1 = {T + 1} steps per row, (N, T + 1, obs_dim), for "
                                 f"actions of shape {(N, T)}")
            obs, next_obs = obs[:, :-1], obs[:, 1:]
        if mask is not None and lengths is not None:
            raise ValueError("give at most one of lengths and mask")
        if lengths is not None:
            lengths = as_tensor("lengths", lengths, device=obs.device, integer=True)
            if tuple(lengths.shape) != (N,):
                raise ValueError(f"lengths must have shape ({N},), got {tuple(lengths.shape)}")
            bad = (lengths < 1) | (lengths > T)
            if bad.any():
                i = first_bad(bad)[0]
                raise ValueError(f"lengths[{i}] is {lengths[i].item()}, expected an integer "
                                 f"in [1, {T}]")
            mask = torch.arange(T, device=obs.device) < lengths[:, None]
        elif mask is None:
            mask = torch.ones(N, T, dtype=torch.bool, device=obs.device)
        else:
            mask = bool_tensor("mask", mask, obs.device)
        if terminals is None:
            terminals = torch.zeros(N, T, dtype=torch.bool, device=obs.device)
        else:
            terminals = bool_tensor("terminals", terminals, obs.device)
            if tuple(terminals.shape) == (N,):  # per trajectory: its last real step
                per_step = torch.zeros(N, T, dtype=torch.bool, device=obs.device)
                if mask.shape == (N, T):
                    last = mask.sum(1).clamp(min=1) - 1
                    per_step[torch.arange(N), last] = terminals
                terminals = per_step
        if n_actions is None:
            real = actions[mask] if mask.shape == actions.shape else actions.reshape(-1)
            n_actions = int(real.max()) + 1 if real.numel() else 1
        return cls(obs, actions, next_obs, terminals, mask, n_actions, rewards)

    @classmethod
    def from_episodes(cls, episodes: Iterable, n_actions: int | None = None) -> Trajectories:
        """From Minari-style episodes: each a mapping or an object with ``observations``
        ``(L + 1, obs_dim)``, ``actions`` ``(L,)``, ``terminations`` ``(L,)`` and optionally
        ``rewards`` ``(L,)`` (``truncations`` are not terminal and need not be given)."""
        rows = []
        for i, ep in enumerate(_listed("episodes", episodes)):
            get = _getter(f"episodes[{i}]", ep)
            obs, acts = get("observations"), get("actions")
            term = get("terminations", required=False)
            rows.append(_row(f"episodes[{i}]", obs, acts,
                             None if term is None else np.asarray(term).reshape(-1),
                             get("rewards", required=False)))
        return _stack(rows, n_actions)

    @classmethod
    def from_imitation(cls, trajectories: Iterable, n_actions: int | None = None
                       ) -> Trajectories:
        """From imitation-style trajectories: objects (or mappings) with ``obs``
        ``(L + 1, obs_dim)``, ``acts`` ``(L,)``, ``terminal``, optionally ``infos`` ``(L,)``
        (dicts) and ``rews`` ``(L,)``.

        imitation's ``terminal`` says that the trajectory holds its episode's last step, which
        is true of every whole episode, including one a time limit cut short; the cut is
        recorded in the last step's info as ``"TimeLimit.truncated"`` (Stable-Baselines3's
        vectorised environments, which imitation's rollouts use). The last step is terminal
        (``V(s') = 0`` in the value-space model) when ``terminal`` is true and that info does
        not say truncated. Without ``infos`` a true ``terminal`` is read as a termination:
        pass the infos of time-limited episodes, or a CartPole episode cut at 500 steps would
        be read as a failure."""
        rows = []
        for i, tr in enumerate(_listed("trajectories", trajectories)):
            get = _getter(f"trajectories[{i}]", tr)
            obs, acts = get("obs"), get("acts")
            n = len(np.asarray(acts).reshape(-1))
            term = np.zeros(n, dtype=bool)
            flag = get("terminal", required=False)
            if flag is not None:  # "False" is not True: a bool (or 0/1) or an error
                flag = bool_tensor(f"trajectories[{i}].terminal", flag, "cpu")
                if flag.numel() != 1:
                    raise ValueError(f"trajectories[{i}].terminal must be one bool, got shape "
                                     f"{tuple(flag.shape)}")
                term[-1:] = bool(flag) and not _truncated(f"trajectories[{i}]",
                                                          get("infos", required=False), n)
            rows.append(_row(f"trajectories[{i}]", obs, acts, term, get("rews", required=False)))
        return _stack(rows, n_actions)

    # ------------------------------------------------------------------ sizes
    @property
    def n(self) -> int:
        """Number of trajectories N."""
        return self.obs.shape[0]

    @property
    def max_length(self) -> int:
        """Padded length T."""
        return self.obs.shape[1]

    @property
    def obs_dim(self) -> int:
        return self.obs.shape[2]

    @property
    def lengths(self) -> torch.Tensor:
        """``(N,)`` long: real steps of each trajectory."""
        return self.mask.sum(1)

    @property
    def n_transitions(self) -> int:
        """M, the number of real steps over all trajectories."""
        return int(self.mask.sum())

    @property
    def device(self) -> torch.device:
        return self.obs.device

    @property
    def dtype(self) -> torch.dtype:
        return self.obs.dtype

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"Trajectories(n={self.n}, max_length={self.max_length}, "
                f"obs_dim={self.obs_dim}, n_actions={self.n_actions}, "
                f"transitions={self.n_transitions})")

    def __getitem__(self, idx) -> Trajectories:
        """The trajectories ``idx`` (an int, a slice, a sequence or tensor of indices, or a bool
        mask ``(N,)``; :func:`~bayesirl._validation.select_rows`), padding trimmed to their
        longest."""
        rows = select_rows(idx, self.n, "trajectory", "trajectories", self.device)
        if rows.numel() == 0:
            raise ValueError(f"index {idx!r} selects no trajectory")
        T = int(self.lengths[rows].max())

        def take(x):
            return None if x is None else x[rows, :T]

        return dataclasses.replace(self, obs=take(self.obs), actions=take(self.actions),
                                   next_obs=take(self.next_obs),
                                   terminals=take(self.terminals), mask=take(self.mask),
                                   rewards=take(self.rewards))

    def to(self, device=None, dtype=None) -> Trajectories:
        """A copy on ``device`` with observations (and rewards) in the floating ``dtype`` (a
        TypeError for any other: observations are real numbers)."""
        dtype = self.dtype if dtype is None else float_dtype(dtype)

        def move(x, floating):
            if x is None:
                return None
            return x.to(device=device, dtype=dtype) if floating else x.to(device=device)

        return dataclasses.replace(self, obs=move(self.obs, True),
                                   actions=move(self.actions, False),
                                   next_obs=move(self.next_obs, True),
                                   terminals=move(self.terminals, False),
                                   mask=move(self.mask, False), rewards=move(self.rewards, True))

    # ------------------------------------------------------------------ queries
    def query_obs(self, name: str, obs) -> torch.Tensor:
        """Observations to evaluate something fitted to these data at: ``obs`` as
        ``(M, obs_dim)`` in this data's dtype and device (one observation ``(obs_dim,)``
        becomes ``(1, obs_dim)``); an error naming ``name`` for any other shape, since
        features of the wrong width would fail deep inside torch or, worse, broadcast."""
        obs = as_tensor(name, obs, dtype=self.dtype, device=self.device)
        if obs.dim() == 1:
            obs = obs[None]
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"{name} must have shape (M, {self.obs_dim}), got "
                             f"{tuple(obs.shape)}")
        return obs

    def query_actions(self, actions, m: int) -> torch.Tensor:
        """``(m,)`` long actions to go with ``m`` query observations (one action is repeated
        for all ``m``), each in ``[0, n_actions)``: an action outside would index a Q-value
        that does not exist, or silently pick another action's neighbours."""
        a = as_tensor("actions", actions, device=self.device, integer=True).reshape(-1)
        if a.numel() == 1 and m > 1:
            a = a.expand(m)
        if a.shape[0] != m:
            raise ValueError(f"actions has {a.shape[0]} entries for {m} observations")
        check_indices("actions", a, self.n_actions, "an action")
        return a

    def query_terminals(self, name: str, terminals, m: int) -> torch.Tensor:
        """``(m,)`` chances that each of ``m`` query transitions ends the episode, in this
        data's dtype and device: booleans (1 for True) or probabilities in [0, 1] (a one-step
        model's :func:`~bayesirl.core.knn_dynamics.knn_dynamics` gives a chance). The value
        of the successor then counts with weight ``1 - chance``, the expectation over
        termination; an error naming ``name`` for anything else, since a cast to bool would
        make any chance above 0 a certain end."""
        t = as_tensor(name, terminals, device=self.device).reshape(-1)
        if t.shape[0] != m:
            raise ValueError(f"{name} has {t.shape[0]} entries for {m} observations")
        bad = ~((t >= 0) & (t <= 1))
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"{name}[{i}] is {t[i].item()}, expected a boolean or a chance "
                             "in [0, 1]")
        return t.to(self.dtype)

    # ------------------------------------------------------------------ views
    def transitions(self) -> Transitions:
        """The M real steps as flat arrays (see :class:`Transitions`)."""
        trajectory, step = self.mask.nonzero(as_tuple=True)
        return Transitions(self.obs[trajectory, step], self.actions[trajectory, step],
                           self.next_obs[trajectory, step], self.terminals[trajectory, step],
                           trajectory, step)

    def returns(self, discount: float = 1.0) -> torch.Tensor:
        """``(N,)`` (discounted) sum of the logged environment rewards of each trajectory;
        ``discount`` gamma in [0, 1]."""
        if self.rewards is None:
            raise ValueError("these trajectories carry no rewards (rewards is None)")
        discount = check_number("discount", discount, 0.0, 1.0)
        t = torch.arange(self.max_length, device=self.device, dtype=self.dtype)
        weights = torch.as_tensor(discount, dtype=self.dtype) ** t
        return (self.rewards * weights * self.mask).sum(1)


# ---------------------------------------------------------------------------- helpers
def _listed(name, items) -> list:
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise ArgumentTypeError(f"{name} must be an iterable of episodes, got "
                                f"{type(items).__name__}")
    items = list(items)
    if not items:
        raise ValueError(f"{name} is empty, expected at least one")
    return items


def _truncated(where: str, infos, n: int) -> bool:
    """Whether imitation-style ``infos`` (``n`` dicts, or None) mark the last step as cut by a
    time limit (``"TimeLimit.truncated"``, Stable-Baselines3's key)."""
    if infos is None or n == 0:
        return False
    infos = list(infos)
    if len(infos) != n:
        raise ValueError(f"{where} has {len(infos)} infos and {n} actions, expected one info "
                         "per action")
    last = infos[-1]
    if last is None:
        return False
    if not isinstance(last, Mapping):
        raise TypeError(f"{where} infos[-1] is {type(last).__name__}, expected a dict")
    flag = last.get("TimeLimit.truncated", False)
    if not isinstance(flag, (bool, np.bool_)):
        raise TypeError(f"{where} infos[-1]['TimeLimit.truncated'] is {flag!r}, expected a "
                        "bool")
    return bool(flag)


def _getter(where: str, item) -> Callable:
    """Read a field of a mapping or an object by name, naming ``where`` when it is missing."""

    def get(key, required=True):
        if isinstance(item, dict):
            value = item.get(key)
        else:
            value = getattr(item, key, None)
        if value is None and required:
            raise ValueError(f"{where} has no {key!r} field")
        return value

    return get


def _row(where, obs, acts, terminals, rewards):
    """One episode as arrays: obs ``(L + 1, D)``, actions ``(L,)``, terminals ``(L,)``."""
    obs = np.asarray(obs, dtype=np.float64)
    acts = np.asarray(acts)
    if obs.ndim == 1:  # scalar observations
        obs = obs[:, None]
    if obs.ndim != 2:
        raise ValueError(f"{where} observations have shape {obs.shape}, expected "
                         "(L + 1, obs_dim)")
    if acts.ndim != 1 and not (acts.ndim == 2 and acts.shape[1] == 1):
        raise ValueError(f"{where} actions have shape {acts.shape}, expected (L,) discrete "
                         "actions")
    # the checks from_arrays makes: numpy would cast 1.7 to action 1 and 0.5 to True
    acts = as_tensor(f"{where} actions", acts.reshape(-1), integer=True).numpy()
    L = len(acts)
    if L == 0 or len(obs) != L + 1:
        raise ValueError(f"{where} has {len(obs)} observations and {L} actions, expected "
                         "L >= 1 actions and L + 1 observations")
    if terminals is None:
        terminals = np.zeros(L, dtype=bool)
    terminals = bool_tensor(f"{where} terminations", np.asarray(terminals).reshape(-1),
                             "cpu").numpy()
    if len(terminals) != L:
        raise ValueError(f"{where} has {len(terminals)} terminal flags for {L} actions")
    if rewards is not None:
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if len(rewards) != L:
            raise ValueError(f"{where} has {len(rewards)} rewards for {L} actions")
    return obs, acts, terminals, rewards


def _stack(rows, n_actions) -> Trajectories:
    """Pad episode rows (from :func:`_row`) into one :class:`Trajectories`."""
    dims = {r[0].shape[1] for r in rows}
    if len(dims) > 1:
        raise ValueError(f"episodes have observations of different sizes {sorted(dims)}, "
                         "expected one obs_dim")
    N, T, D = len(rows), max(len(r[1]) for r in rows), dims.pop()
    obs = np.zeros((N, T + 1, D))
    acts = np.zeros((N, T), dtype=np.int64)
    term = np.zeros((N, T), dtype=bool)
    has_rewards = all(r[3] is not None for r in rows)
    rew = np.zeros((N, T)) if has_rewards else None
    lengths = np.array([len(r[1]) for r in rows])
    for i, (o, a, t, r) in enumerate(rows):
        L = len(a)
        obs[i, :L + 1], term[i, :L], acts[i, :L] = o, t, a  # checked in _row
        if has_rewards:
            rew[i, :L] = r
    dtype = torch.get_default_dtype()
    return Trajectories.from_arrays(torch.as_tensor(obs, dtype=dtype), torch.as_tensor(acts),
                                    terminals=term, lengths=lengths, n_actions=n_actions,
                                    rewards=None if rew is None else torch.as_tensor(rew,
                                                                                     dtype=dtype))


def _make_env(env):
    env = as_env(env)
    if not (hasattr(env, "reset") and hasattr(env, "step")):
        raise ArgumentTypeError(f"env must be a Gymnasium environment or an environment id, "
                                f"got {type(env).__name__}")
    return env


def rollout(env, policy: Callable, n: int, seed: int = 0, max_steps: int | None = None,
            progress: bool = True) -> Trajectories:
    """``n`` episodes of ``policy`` in a Gymnasium environment with a discrete action space.

    Args:
        env: a ``gymnasium.Env`` (or an id for ``gymnasium.make``) with ``Discrete`` actions.
        policy: ``policy(obs: np.ndarray) -> int``. A policy with a ``reset(seed)`` method
            (e.g. a Thompson-sampling posterior policy) has it called at each episode start
            with that episode's seed.
        n: episodes; episode i resets the environment with ``seed + i``.
        max_steps: cut episodes at this many steps (a truncation, not terminal); default the
            environment's own time limit.

    Returns:
        :class:`Trajectories` with the environment's rewards; ``terminals`` marks episodes
        that terminated (not those truncated).
    """
    n = check_int("n", n)
    seed = check_int("seed", seed, low=0)
    if max_steps is not None:
        max_steps = check_int("max_steps", max_steps)
    if not callable(policy):
        raise ArgumentTypeError(f"policy must be callable, obs -> action, got "
                                f"{type(policy).__name__}")
    owned = isinstance(env, str)  # made here, so closed here
    env = _make_env(env)
    try:
        return _rollouts(env, policy, n, seed, max_steps, progress)
    finally:
        if owned:
            env.close()


def _rollouts(env, policy, n, seed, max_steps, progress) -> Trajectories:
    """:func:`rollout`'s loop, on a checked environment and arguments."""
    n_actions = getattr(env.action_space, "n", None)
    if n_actions is None:
        raise ValueError(f"env must have a Discrete action space, got {env.action_space}")
    rows = []
    for i in tqdm(range(n), desc="rollouts", disable=not progress, leave=False):
        if hasattr(policy, "reset"):
            policy.reset(seed + i)
        o, _ = env.reset(seed=seed + i)
        obs, acts, rews = [np.asarray(o, dtype=np.float64).reshape(-1)], [], []
        terminated = False
        while True:
            a = _action(policy(obs[-1]), n_actions, i, len(acts))
            o, r, terminated, truncated, _ = env.step(a)
            obs.append(np.asarray(o, dtype=np.float64).reshape(-1))
            acts.append(a)
            rews.append(float(r))
            if terminated or truncated or (max_steps is not None and len(acts) >= max_steps):
                break
        term = np.zeros(len(acts), dtype=bool)
        term[-1] = bool(terminated)
        rows.append((np.stack(obs), np.asarray(acts), term, np.asarray(rews)))
    return _stack(rows, int(n_actions))


def _action(value, n_actions: int, episode: int, step: int) -> int:
    """A policy's action as an int in ``[0, n_actions)`` (an integer, a NumPy integer or a 0-d
    integer array or tensor), else a ValueError naming the episode and the step: a float would
    be truncated to another action, and an action out of range fails inside the environment."""
    a = integer_scalar(value[()] if isinstance(value, np.ndarray) and value.ndim == 0 else value)
    if a is None or not 0 <= a < n_actions:
        raise ValueError(f"policy returned {value!r} in episode {episode}, step {step}, "
                         f"expected an integer action in [0, {n_actions})")
    return a


def evaluate(env, policy: Callable, n: int, seed: int = 0, max_steps: int | None = None,
             progress: bool = True) -> np.ndarray:
    """``(n,)`` undiscounted returns of ``policy`` over ``n`` episodes seeded ``seed + i``
    (see :func:`rollout`)."""
    return rollout(env, policy, n, seed, max_steps, progress).returns().cpu().numpy()
