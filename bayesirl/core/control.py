"""Scripted experts for Gymnasium's control tasks, and a continuous task with a known reward.

Experts that need no training and no download (``policy(obs) -> action``):

- :func:`cartpole_expert`: a linear state-feedback law on CartPole-v1's (x, x', theta, theta'):
  push right when ``3 theta + theta' + 0.1 x + 0.3 x' > 0``;
- :func:`acrobot_expert`: energy pumping on Acrobot-v1: torque +1 when the second joint's
  angular velocity is positive, else -1;
- :func:`lunar_lander_expert`: Gymnasium's own heuristic for LunarLander-v3 (discrete
  actions); it needs Box2D (the ``box2d`` package, Gymnasium's ``box2d`` extra).

:data:`EXPERTS` maps each environment id to its expert; :func:`make_env` builds the
environment (Box2D's SWIG bindings warn at import; see there).

:func:`point_mass` is a continuous-observation task whose reward is known: a point on a lattice
in the plane ``[-1, 1]^2``, observed by its coordinates, moving one lattice step per action
(stay, up, down, left, right; walls clip). The reward field ``r(x, y)`` is a goal bump and a
pit. The expert is soft-optimal: ``pi(a | s) = softmax(beta Q*(s, .))`` with
``Q*(s, a) = r(s) + gamma V*(f(s, a))``, ``V*(s) = logsumexp(beta Q*(s, .)) / beta``, solved by
value iteration on the lattice (which the models never see: they read coordinates). Because the
moves are deterministic, the reward of every observed transition is exactly
``r(s) = Q*(s, a) - gamma V*(s')``, the quantity a value-space posterior infers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bayesirl._validation import as_tensor, check_indices, check_int, check_number
from bayesirl.core.gym_envs import box2d_safe, make_env
from bayesirl.core.trajectories import Trajectories

__all__ = ["EXPERTS", "PointMass", "acrobot_expert", "cartpole_expert", "lunar_lander_expert",
           "make_env", "point_mass"]


def cartpole_expert(obs) -> int:
    """CartPole-v1: 1 (push right) when ``3 theta + theta' + 0.1 x + 0.3 x' > 0``, else 0."""
    x, x_dot, theta, theta_dot = (float(v) for v in np.asarray(obs).reshape(-1)[:4])
    return int(3.0 * theta + theta_dot + 0.1 * x + 0.3 * x_dot > 0)


def acrobot_expert(obs) -> int:
    """Acrobot-v1: torque +1 (action 2) when the second joint turns forward
    (``obs[5] > 0``), else -1 (action 0): it pumps energy into the swing."""
    return 2 if float(np.asarray(obs).reshape(-1)[5]) > 0 else 0


class _DiscreteLander:
    """What Gymnasium's heuristic reads of its environment: discrete actions."""

    class unwrapped:  # noqa: N801  (the attribute the heuristic reads)
        continuous = False


def lunar_lander_expert(obs) -> int:
    """LunarLander-v3: Gymnasium's ``heuristic`` (discrete actions); needs Box2D."""
    with box2d_safe():
        from gymnasium.envs.box2d.lunar_lander import heuristic
    return int(heuristic(_DiscreteLander, np.asarray(obs, dtype=np.float64).reshape(-1)))


EXPERTS = {"CartPole-v1": cartpole_expert, "Acrobot-v1": acrobot_expert,
           "LunarLander-v3": lunar_lander_expert}
"""The scripted expert of each environment id."""


# ---------------------------------------------------------------------------- point mass
_MOVES = np.array([(0, 0), (0, 1), (0, -1), (-1, 0), (1, 0)])  # (dx, dy): stay up down left right


def _points(name: str, obs) -> np.ndarray:
    """``obs`` as a float array ``(..., 2)`` of plane coordinates, naming ``name`` when it
    has another last dimension (a third coordinate would be ignored, one would fail deep in
    NumPy)."""
    p = np.asarray(obs.detach().cpu() if isinstance(obs, torch.Tensor) else obs,
                   dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (..., 2), the point's (x, y), got "
                         f"{p.shape}")
    return p


@dataclass(frozen=True, eq=False)
class PointMass:
    """A point on a ``grid x grid`` lattice of ``[-1, 1]^2`` with a known reward field.

    Attributes:
        grid: lattice points per side; the step between them is ``2 / (grid - 1)``.
        discount, rationality: gamma and beta of the soft-optimal expert.
        q: ``(grid * grid, 5)`` the expert's soft ``Q*`` in reward units, state index
            ``i * grid + j`` for the point ``(x_i, y_j)``.
    """

    grid: int
    discount: float
    rationality: float
    q: np.ndarray

    n_actions = 5
    obs_dim = 2

    @property
    def step_size(self) -> float:
        return 2.0 / (self.grid - 1)

    @staticmethod
    def reward_field(obs) -> np.ndarray:
        """``r(x, y)``: a goal bump at (0.5, 0.5) and a pit at (-0.4, -0.3); ``obs: (..., 2)``
        -> ``(...)``."""
        p = _points("obs", obs)
        x, y = p[..., 0], p[..., 1]
        goal = np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.18)
        pit = np.exp(-((x + 0.4) ** 2 + (y + 0.3) ** 2) / 0.08)
        return 1.5 * goal - pit

    def index(self, obs) -> np.ndarray:
        """Lattice indices ``(...)`` of observations ``(..., 2)`` (nearest lattice point)."""
        ij = np.rint((_points("obs", obs) + 1.0) / self.step_size).astype(int)
        ij = np.clip(ij, 0, self.grid - 1)
        return ij[..., 0] * self.grid + ij[..., 1]

    def coords(self, index) -> np.ndarray:
        """Coordinates ``(..., 2)`` of lattice indices ``(...)``."""
        index = np.asarray(index)
        return np.stack([index // self.grid, index % self.grid], -1) * self.step_size - 1.0

    def one_hot(self, obs) -> torch.Tensor:
        """``(..., grid * grid)`` one-hot features of the nearest lattice point of ``obs (...,
        2)`` (a tensor; the result in its dtype and on its device).

        As ``QValueModel(features=task.one_hot, reward_features=task.one_hot)`` they give
        classes that contain the truth: any Q on the lattice, the expert's ``Q*`` included, and
        any state reward, the field included. The task's other use, with generic features, is
        the misspecified case a user meets."""
        obs = as_tensor("obs", obs)
        index = torch.as_tensor(self.index(obs.detach().cpu().numpy()), device=obs.device)
        return torch.nn.functional.one_hot(index, self.grid * self.grid).to(obs.dtype)

    def dynamics(self, obs, actions):
        """``(next_obs, terminals)`` after ``actions (...)`` in ``obs (..., 2)``: one lattice
        step, clipped at the walls; nothing is terminal. Accepts and returns NumPy arrays or
        torch tensors. Actions are integers in ``[0, 5)`` (stay, up, down, left, right)."""
        as_torch = isinstance(obs, torch.Tensor)
        like = obs
        obs = _points("obs", obs)
        a = as_tensor("actions", actions, integer=True).cpu()
        check_indices("actions", a if a.dim() else a.reshape(1), self.n_actions, "an action")
        actions = a.numpy()
        nxt = np.clip(obs + self.step_size * _MOVES[actions], -1.0, 1.0)
        terminals = np.zeros(nxt.shape[:-1], dtype=bool)
        if as_torch:
            return (torch.as_tensor(nxt, dtype=like.dtype, device=like.device),
                    torch.as_tensor(terminals, device=like.device))
        return nxt, terminals

    def true_reward(self, obs, actions=None, next_obs=None) -> np.ndarray:
        """The reward of transitions from ``obs (..., 2)``: ``r(s)`` at the lattice point
        (any action)."""
        return self.reward_field(self.coords(self.index(obs)))

    def log_policy(self, obs) -> np.ndarray:
        """``(..., 5)`` the expert's ``log pi(. | s)``."""
        z = self.rationality * self.q[self.index(obs)]
        return z - np.logaddexp.reduce(z, axis=-1, keepdims=True)

    def sample(self, n: int, horizon: int, seed: int = 0) -> Trajectories:
        """``n`` expert trajectories of ``horizon`` steps from uniform random lattice points."""
        n, horizon = check_int("n", n), check_int("horizon", horizon)
        rng = np.random.default_rng(check_int("seed", seed, low=0))
        s = rng.integers(self.grid * self.grid, size=n)
        obs = np.zeros((n, horizon + 1, 2))
        acts = np.zeros((n, horizon), dtype=np.int64)
        obs[:, 0] = self.coords(s)
        for t in range(horizon):
            p = np.exp(self.log_policy(obs[:, t]))
            u = rng.random(n)[:, None]
            acts[:, t] = np.minimum((np.cumsum(p, -1) < u).sum(-1), self.n_actions - 1)
            obs[:, t + 1] = self.dynamics(obs[:, t], acts[:, t])[0]
        dtype = torch.get_default_dtype()
        return Trajectories.from_arrays(torch.as_tensor(obs, dtype=dtype), torch.as_tensor(acts),
                                        n_actions=self.n_actions)


def point_mass(grid: int = 15, discount: float = 0.9, rationality: float = 2.0,
               tol: float = 1e-10) -> PointMass:
    """The point-mass task (see the module docstring), its expert solved to ``tol`` > 0 (the
    largest change of ``Q*`` in a sweep)."""
    grid = check_int("grid", grid, low=2)
    tol = check_number("tol", tol, 0.0, low_open=True)
    discount = check_number("discount", discount, 0.0, 1.0, high_open=True)
    beta = check_number("rationality", rationality, 0.0, low_open=True)
    task = PointMass(grid, discount, beta, np.zeros((grid * grid, 5)))
    s = np.arange(grid * grid)
    xy = task.coords(s)
    r = task.reward_field(xy)
    succ = task.index(task.dynamics(xy[:, None, :], np.arange(5)[None, :])[0])  # (S, 5)
    q = np.zeros((grid * grid, 5))
    for _ in range(100_000):
        v = np.logaddexp.reduce(beta * q, axis=-1) / beta
        new = r[:, None] + discount * v[succ]
        done = np.abs(new - q).max() < tol
        q = new
        if done:
            break
    object.__setattr__(task, "q", q)
    return task
