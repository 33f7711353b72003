"""Benchmark environments for inverse reinforcement learning, as :class:`TabularMDP` objects.

- :func:`gridworld`: an N x N grid with slippery moves and a sparse reward on macro-cells
  (Ng & Russell, "Algorithms for inverse reinforcement learning", ICML 2000; the block features
  follow Levine, Popovic & Koltun, NeurIPS 2011).
- :func:`objectworld`: the nonlinear-reward benchmark of Levine, Popovic & Koltun, "Nonlinear
  inverse reinforcement learning with Gaussian processes" (GPIRL), NeurIPS 2011.
- :func:`random_mdp`: Garnet MDPs (Archibald, McKinnon & Thomas, "On the generation of Markov
  decision processes", J. Oper. Res. Soc. 1995; Bhatnagar et al., Automatica 2009).
- :func:`from_gymnasium`: toy-text Gymnasium environments (FrozenLake, CliffWalking, Taxi) read
  from their ``env.unwrapped.P`` tables; terminal states become absorbing.
- :func:`sampler`: a reset/step :class:`EnvSampler` view of a Gymnasium environment or of a
  :class:`TabularMDP`, for sample-based algorithms that must not read the transition tables.

Every builder takes an explicit ``seed``, an int >= 0 (``np.random.default_rng(seed)``; no global
random state) and returns float tensors in ``dtype``, a floating torch dtype (default
``torch.get_default_dtype()``).
"""

from __future__ import annotations

import numbers
import re
from collections import Counter

import numpy as np
import torch

from bayesirl._validation import check_int, check_probability, float_dtype
from bayesirl.core.gym_envs import as_env
from bayesirl.core.mdp import TabularMDP

__all__ = ["GYM_DIRECTIONS", "EnvSampler", "from_gymnasium", "gym_directions", "gridworld",
           "map_marks", "objectworld", "random_mdp", "sampler"]

GRID_ACTIONS = ("stay", "up", "down", "left", "right")
_MOVES = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)])  # (d_row, d_col) per action
_DEFAULT_DISCOUNT = 0.9


# ---------------------------------------------------------------------------- validation helpers

def _time(horizon, discount):
    """At most one of horizon/discount; neither means ``discount=0.9``."""
    if horizon is not None and discount is not None:
        raise ValueError("give at most one of horizon and discount, got "
                         f"horizon={horizon!r}, discount={discount!r}")
    if horizon is None and discount is None:
        return None, _DEFAULT_DISCOUNT
    return horizon, discount


def _rng(seed):
    """The builders' only source of randomness: a numpy Generator from an int ``seed >= 0``."""
    return np.random.default_rng(check_int("seed", seed, low=0))


def _tensor(x, dtype):
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype)


# ---------------------------------------------------------------------------- grid worlds
def _grid_dynamics(rows, cols, slip):
    """Five-action grid moves, bumping into walls keeps the agent in place.

    The intended action runs with probability ``1 - slip``, each of the four others with
    ``slip / 4``. Returns numpy ``successors (S, 5, 5)`` and ``probs (S, 5, 5)``; entry ``k`` of the
    last axis is the outcome of executing action ``k`` (walls give duplicate successors).
    """
    r, c = np.divmod(np.arange(rows * cols), cols)
    nr = np.clip(r[:, None] + _MOVES[:, 0], 0, rows - 1)
    nc = np.clip(c[:, None] + _MOVES[:, 1], 0, cols - 1)
    nxt = nr * cols + nc                                              # (S, 5) executed action
    n = len(_MOVES)
    probs = np.where(np.eye(n, dtype=bool), 1.0 - slip, slip / (n - 1))  # (intended, executed)
    successors = np.broadcast_to(nxt[:, None, :], (rows * cols, n, n))
    return successors.copy(), np.broadcast_to(probs, successors.shape).copy()


def _grid_mdp(size, slip, horizon, discount, features, names, reward, dtype):
    succ, probs = _grid_dynamics(size, size, slip)
    S = size * size
    return TabularMDP(
        successors=torch.as_tensor(succ), transition_probs=_tensor(probs, dtype),
        initial=_tensor(np.full(S, 1.0 / S), dtype), horizon=horizon, discount=discount,
        features=_tensor(features, dtype), feature_names=names, reward=_tensor(reward, dtype),
        shape=(size, size), action_names=GRID_ACTIONS)


def _block_shape(block, size):
    pair = (block, block) if isinstance(block, numbers.Integral) else block
    try:
        bh, bw = (check_int("block", b) for b in pair)
    except (TypeError, ValueError) as e:
        raise ValueError(f"block is {block!r}, expected a positive int or a (rows, cols) pair "
                         "of positive ints") from e
    if size % bh or size % bw:
        raise ValueError(f"block is {block!r}, but size={size} is not divisible by it")
    return bh, bw


def gridworld(size=8, slip=0.1, horizon=None, discount=None, block=2, seed=0, dtype=None):
    """A ``size x size`` gridworld with macro-cell features and a sparse ground-truth reward.

    States are ``s = row * size + col``; actions are ``stay, up, down, left, right`` (moves off the
    grid stay in place). With probability ``slip`` a uniformly random *other* action runs instead.
    Features are one-hot indicators ``(S, d)`` of the ``block x block`` macro-cell (``block`` an
    int or a ``(rows, cols)`` pair dividing ``size``), named ``"cell(i,j)"``. The true reward
    ``mdp.reward: (S,)`` is ``features @ theta`` with ``max(1, round(d / 4))`` random non-zero
    weights drawn from Uniform(-1, 1), the largest then set to +1 (the goal).
    Give at most one of ``horizon``/``discount``; neither means ``discount=0.9``.
    Initial distribution uniform.
    """
    size = check_int("size", size)
    slip = check_probability("slip", slip)
    horizon, discount = _time(horizon, discount)
    bh, bw = _block_shape(block, size)
    dtype = float_dtype(dtype)
    rng = _rng(seed)
    r, c = np.divmod(np.arange(size * size), size)
    mcols = size // bw
    d = (size // bh) * mcols
    features = np.eye(d)[(r // bh) * mcols + c // bw]                   # (S, d)
    names = tuple(f"cell({i},{j})" for i in range(size // bh) for j in range(mcols))
    theta = np.zeros(d)
    idx = rng.choice(d, size=max(1, round(0.25 * d)), replace=False)
    values = rng.uniform(-1.0, 1.0, size=len(idx))
    values[np.argmax(values)] = 1.0
    theta[idx] = values
    return _grid_mdp(size, slip, horizon, discount, features, names, features @ theta, dtype)


def _nearest_color_distances(size, cells, colors, n_colors):
    """Euclidean distance ``(S, 2, C)`` from each cell to the nearest object whose (outer, inner)
    color is ``c``; ``inf`` where there is no such object."""
    r, c = np.divmod(np.arange(size * size), size)
    orow, ocol = np.divmod(cells, size)
    dist = np.hypot(r[:, None] - orow, c[:, None] - ocol)                # (S, n)
    has = colors.T[:, None, :] == np.arange(n_colors)[:, None]           # (2, C, n)
    return np.where(has, dist[:, None, None, :], np.inf).min(-1, initial=np.inf)


def objectworld(size=32, n_colors=2, density=0.05, determinism=0.7, discount=0.9, horizon=None,
                continuous=False, seed=0, dtype=None):
    """The objectworld of Levine, Popovic & Koltun (2011), with a nonlinear true reward.

    ``round(density * size**2)`` objects sit at distinct random cells, each with an outer and an
    inner color in ``0..n_colors-1``. Grid dynamics are those of :func:`gridworld` with
    ``slip = 1 - determinism``. Features, ordered (outer, inner) x color:

    - discrete (default): indicators "distance to the nearest object of that color <= k" for
      ``k = 1..size``, ``(S, 2 * n_colors * size)``, named like ``"outer0<=3"``;
    - ``continuous=True``: the distances themselves, ``(S, 2 * n_colors)``, named like
      ``"outer0"``; ``2 * size`` where no object has that color.

    True reward ``(S,)``: +1 within distance 3 of outer color 0 and within 2 of outer color 1;
    -1 within 3 of outer color 0 only; 0 elsewhere. ``horizon`` given means finite horizon (the
    discount is then dropped). Initial distribution uniform.
    """
    size = check_int("size", size)
    n_colors = check_int("n_colors", n_colors, low=2)
    density = check_probability("density", density)
    determinism = check_probability("determinism", determinism)
    dtype = float_dtype(dtype)
    if horizon is not None:
        discount = None
    rng = _rng(seed)
    n_obj = round(density * size * size)
    cells = rng.choice(size * size, size=n_obj, replace=False)
    colors = rng.integers(0, n_colors, size=(n_obj, 2))                  # (outer, inner)
    dist = _nearest_color_distances(size, cells, colors, n_colors)       # (S, 2, C)
    keys = [f"{part}{k}" for part in ("outer", "inner") for k in range(n_colors)]
    if continuous:
        features = np.where(np.isfinite(dist), dist, 2.0 * size).reshape(size * size, -1)
        names = tuple(keys)
    else:
        ks = np.arange(1, size + 1)
        features = (dist[..., None] <= ks).reshape(size * size, -1).astype(np.float64)
        names = tuple(f"{key}<={k}" for key in keys for k in ks)
    near0, near1 = dist[:, 0, 0] <= 3, dist[:, 0, 1] <= 2
    reward = np.where(near0, np.where(near1, 1.0, -1.0), 0.0)
    return _grid_mdp(size, 1.0 - determinism, horizon, discount, features, names, reward, dtype)


# ---------------------------------------------------------------------------- Garnet
def _distinct_successors(rng, n, k, rows):
    """``(rows, k)`` rows of ``k`` distinct indices in ``[0, n)`` (Floyd's algorithm, vectorised
    over rows, so memory is ``rows * k``, not ``rows * n``)."""
    out = np.empty((rows, k), dtype=np.int64)
    for i, j in enumerate(range(n - k, n)):
        t = rng.integers(0, j + 1, size=rows)
        taken = (out[:, :i] == t[:, None]).any(axis=1)
        out[:, i] = np.where(taken, j, t)
    return rng.permuted(out, axis=1)


def random_mdp(n_states=100, n_actions=4, branching=3, n_features=8, horizon=None, discount=None,
               seed=0, dtype=None):
    """A Garnet MDP: each ``(s, a)`` has ``branching`` distinct random successors.

    Transition probabilities of each ``(s, a)`` are a flat Dirichlet draw; features ``(S, d)``
    are standard normal, named ``"f0".."f{d-1}"``; the true reward ``(S,)`` is
    ``features @ theta`` with ``theta ~ N(0, I)``. Give at most one of ``horizon``/``discount``;
    neither means ``discount=0.9``. Initial distribution uniform.
    """
    S = check_int("n_states", n_states)
    A = check_int("n_actions", n_actions)
    K = check_int("branching", branching)
    d = check_int("n_features", n_features)
    if K > S:
        raise ValueError(f"branching is {K}, expected at most n_states={S}")
    horizon, discount = _time(horizon, discount)
    dtype = float_dtype(dtype)
    rng = _rng(seed)
    succ = _distinct_successors(rng, S, K, S * A).reshape(S, A, K)
    probs = rng.dirichlet(np.ones(K), size=(S, A))
    features = rng.standard_normal((S, d))
    theta = rng.standard_normal(d)
    return TabularMDP(
        successors=torch.as_tensor(succ), transition_probs=_tensor(probs, dtype),
        initial=_tensor(np.full(S, 1.0 / S), dtype), horizon=horizon, discount=discount,
        features=_tensor(features, dtype), feature_names=tuple(f"f{i}" for i in range(d)),
        reward=_tensor(features @ theta, dtype))


# ---------------------------------------------------------------------------- Gymnasium
def _discrete_sizes(env):
    sizes = []
    for name in ("observation_space", "action_space"):
        space = getattr(env, name, None)
        n = getattr(space, "n", None)
        if n is None or getattr(space, "shape", None) != ():
            raise TypeError(f"env must have a Discrete {name}, got {space!r}")
        sizes.append(int(n))
    return sizes


def _flatten_table(P, S, A):
    """Rows ``(s, a, prob, next, reward, terminated)`` of a toy-text table ``P[s][a]``."""
    try:
        rows = [(s, a, p, s2, r, t) for s in range(S) for a in range(A)
                for p, s2, r, t in P[s][a]]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise ValueError("env.unwrapped.P must map every state s and action a to a list of "
                         f"(prob, next_state, reward, terminated), failed with {e!r}") from e
    table = np.array(rows, dtype=np.float64).reshape(-1, 6)
    s, a, s2 = table[:, [0, 1, 3]].T.astype(np.int64)
    if ((s2 < 0) | (s2 >= S)).any():
        bad = int(np.flatnonzero((s2 < 0) | (s2 >= S))[0])
        raise ValueError(f"env.unwrapped.P[{s[bad]}][{a[bad]}] has next_state {s2[bad]}, "
                         f"expected a state index in [0, {S})")
    return s, a, table[:, 2], s2, table[:, 4], table[:, 5].astype(bool)


def _absorb_terminals(s, a, p, s2, r, term, S, A):
    """Replace the rows of every state entered with ``terminated`` by zero-reward self-loops."""
    absorbing = np.zeros(S, dtype=bool)
    absorbing[s2[term]] = True
    keep = ~absorbing[s]
    loops = np.repeat(np.flatnonzero(absorbing), A)
    n = len(loops)
    loop_actions = np.tile(np.arange(A), n // A)
    return (np.concatenate([s[keep], loops]), np.concatenate([a[keep], loop_actions]),
            np.concatenate([p[keep], np.ones(n)]), np.concatenate([s2[keep], loops]),
            np.concatenate([r[keep], np.zeros(n)]))


def _sparse_from_triplets(s, a, s2, p, S, A):
    """Sum duplicate ``(s, a, s')`` entries into sparse ``(S, A, K)`` tables."""
    keys, inverse = np.unique((s * A + a) * S + s2, return_inverse=True)
    probs = np.bincount(inverse, weights=p)
    sa, nxt = np.divmod(keys, S)
    counts = np.bincount(sa, minlength=S * A)
    pos = np.arange(len(keys)) - (np.cumsum(counts) - counts)[sa]
    K = max(int(counts.max()), 1)
    succ = np.repeat(np.arange(S), A)[:, None].repeat(K, 1)           # padding: stay, prob 0
    table = np.zeros((S * A, K))
    succ[sa, pos], table[sa, pos] = nxt, probs
    return succ.reshape(S, A, K), table.reshape(S, A, K)


def _grid_shape(unwrapped, S):
    for shape in (getattr(getattr(unwrapped, "desc", None), "shape", None),
                  getattr(unwrapped, "shape", None)):
        if shape is not None and len(shape) == 2 and shape[0] * shape[1] == S:
            return tuple(int(x) for x in shape)
    return None


def _map_names(unwrapped, S):
    """State names like ``"H(1,1)"``, the map letter then the cell, from a character map
    ``desc`` of S cells (FrozenLake: S start, F frozen, H hole, G goal); None without one."""
    desc = getattr(unwrapped, "desc", None)
    if desc is None or np.ndim(desc) != 2 or np.size(desc) != S:
        return None
    letters = [[x.decode("ascii", "replace") if isinstance(x, bytes) else str(x) for x in row]
               for row in np.asarray(desc)]
    return tuple(f"{ch}({r},{c})" for r, row in enumerate(letters) for c, ch in enumerate(row))


def from_gymnasium(env, horizon=None, discount=None, features=None, feature_names=None,
                   initial=None, dtype=None):
    """A :class:`TabularMDP` from a toy-text Gymnasium environment's table ``env.unwrapped.P``.

    ``env`` is an environment with Discrete observation and action spaces (or its id, passed to
    ``gymnasium.make``), whose ``P[s][a]`` lists ``(prob, next_state, reward, terminated)``.
    Every state entered with ``terminated=True`` becomes absorbing (self-loops, zero reward);
    duplicate ``(s, a, s')`` entries are summed. ``mdp.reward: (S, A)`` is the expected immediate
    reward. Features default to one-hot states ``(S, S)``. ``initial: (S,)`` defaults to
    ``env.unwrapped.initial_state_distrib``. Grid ``shape`` comes from ``desc`` (FrozenLake) or
    ``shape`` (CliffWalking) when it matches S. A character map ``desc`` (FrozenLake) also gives
    the state names: the cell's letter then the cell, ``"S(0,0)"``, ``"H(1,1)"``, ``"G(3,3)"``
    (:func:`map_marks` reads them back, to mark holes and the goal on plots).
    Neither horizon nor discount means ``discount=0.9``.
    """
    dtype = float_dtype(dtype)
    env = as_env(env)
    u = getattr(env, "unwrapped", env)
    if not hasattr(u, "P"):
        raise TypeError(f"env {env!r} has no transition table env.unwrapped.P; use sampler(env) "
                        "for sample-based algorithms")
    S, A = _discrete_sizes(env)
    horizon, discount = _time(horizon, discount)
    s, a, p, s2, r = _absorb_terminals(*_flatten_table(u.P, S, A), S, A)
    succ, probs = _sparse_from_triplets(s, a, s2, p, S, A)
    reward = np.bincount(s * A + a, weights=p * r, minlength=S * A).reshape(S, A)
    if initial is None:
        initial = getattr(u, "initial_state_distrib", None)
        if initial is None:
            raise ValueError(f"env {env!r} has no initial_state_distrib; pass initial= (S,)")
    if features is None:
        features, feature_names = np.eye(S), tuple(f"state{i}" for i in range(S))
    return TabularMDP(
        successors=torch.as_tensor(succ), transition_probs=_tensor(probs, dtype),
        initial=_tensor(initial, dtype), horizon=horizon, discount=discount,
        features=_tensor(features, dtype), feature_names=feature_names,
        reward=_tensor(reward, dtype), shape=_grid_shape(u, S), state_names=_map_names(u, S))


#: action names, in action-index order, of toy-text Gymnasium grids (their MDPs carry none);
#: keys are id prefixes ("FrozenLake" matches "FrozenLake-v1" and "FrozenLake8x8-v1")
GYM_DIRECTIONS = {"FrozenLake": ("left", "down", "right", "up"),
                  "CliffWalking": ("up", "right", "down", "left")}
_MAP_NAME = re.compile(r"(\S)\((\d+),(\d+)\)")  # "H(1,1)": map letter, row, column


def gym_directions(env_id) -> tuple[str, ...] | None:
    """The action names of a Gymnasium grid id (:data:`GYM_DIRECTIONS`, matched by prefix), or
    None for ids whose actions are not moves on a grid."""
    for prefix, names in GYM_DIRECTIONS.items():
        if str(env_id).startswith(prefix):
            return names
    return None


def map_marks(mdp) -> dict[int, str]:
    """The special cells of a grid MDP's map: ``{state: letter}``.

    Read from state names of the form ``"H(1,1)"`` (the cell's map letter, then its row and
    column), which :func:`from_gymnasium` gives FrozenLake's states; every letter but the most
    common one (the plain cells) is special: FrozenLake's start ``S``, holes ``H`` and goal
    ``G``. Empty for MDPs without such names or without a grid ``shape``.
    """
    names = getattr(mdp, "state_names", None)
    if mdp.shape is None or not names:
        return {}
    cols = mdp.shape[1]
    letters = []
    for s, name in enumerate(names):
        m = _MAP_NAME.fullmatch(str(name))
        if m is None or (int(m[2]), int(m[3])) != divmod(s, cols):
            return {}
        letters.append(m[1])
    plain = Counter(letters).most_common(1)[0][0]
    return {s: ch for s, ch in enumerate(letters) if ch != plain}


# ---------------------------------------------------------------------------- sampler view
class EnvSampler:
    """A reset/step view of an environment for sample-based algorithms (no transition tables).

    ``reset(seed=None) -> state`` and ``step(action) -> (next_state, reward, done)`` with integer
    states and actions; ``done`` is set by the environment or after ``horizon`` steps. Build one
    with :func:`sampler`.
    """

    def __init__(self, reset_fn, step_fn, n_states, n_actions, horizon=None):
        self._reset_fn, self._step_fn = reset_fn, step_fn
        self.n_states, self.n_actions, self.horizon = n_states, n_actions, horizon
        self._t, self._done = 0, True

    def reset(self, seed=None) -> int:
        """Start an episode; a ``seed`` makes it and the following steps reproducible."""
        self._t, self._done = 0, False
        return int(self._reset_fn(seed))

    def step(self, action) -> tuple[int, float, bool]:
        """Take ``action`` (int in ``[0, n_actions)``); returns ``(next_state, reward, done)``."""
        if self._done:
            raise RuntimeError("the episode is over (or never started): call reset() first")
        if isinstance(action, bool) or not isinstance(action, numbers.Integral) or not (
                0 <= action < self.n_actions):
            raise ValueError(f"action is {action!r}, expected an int in [0, {self.n_actions})")
        nxt, reward, done = self._step_fn(int(action))
        self._t += 1
        self._done = bool(done) or (self.horizon is not None and self._t >= self.horizon)
        return int(nxt), float(reward), self._done

    def __repr__(self) -> str:
        return (f"EnvSampler(n_states={self.n_states}, n_actions={self.n_actions}, "
                f"horizon={self.horizon})")


def _draw(cdf, rng):
    """Index drawn from an unnormalised cumulative ``cdf`` (zero-probability entries never)."""
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)


def _mdp_sampler(mdp, horizon):
    initial_cdf = mdp.initial.detach().cpu().double().cumsum(0).numpy()
    succ = mdp.successors.cpu().numpy().copy()  # own memory: pickling the MDP for parallel
    # chains moves its tensors' storage to shared memory, leaving views dangling
    cdf = mdp.transition_probs.detach().cpu().double().cumsum(-1).numpy()
    reward = np.zeros((mdp.n_states, mdp.n_actions))
    if mdp.reward is not None:
        reward += mdp.reward.detach().cpu().double().numpy().reshape(mdp.n_states, -1)
    state = {"rng": None, "s": 0}

    def reset(seed):
        if seed is not None or state["rng"] is None:
            state["rng"] = np.random.default_rng(seed)
        state["s"] = _draw(initial_cdf, state["rng"])
        return state["s"]

    def step(a):
        s = state["s"]
        state["s"] = int(succ[s, a, _draw(cdf[s, a], state["rng"])])
        return state["s"], reward[s, a], False

    return EnvSampler(reset, step, mdp.n_states, mdp.n_actions,
                      mdp.horizon if horizon is None else horizon)


def _gym_sampler(env, horizon):
    S, A = _discrete_sizes(env)

    def reset(seed):
        return env.reset(seed=seed)[0]

    def step(a):
        obs, reward, terminated, truncated, _ = env.step(a)
        return obs, reward, terminated or truncated

    return EnvSampler(reset, step, S, A, horizon)


def sampler(source, horizon=None) -> EnvSampler:
    """An :class:`EnvSampler` for a Gymnasium env (or id) or a :class:`TabularMDP`.

    For an MDP, states are simulated from its sparse tables with a numpy Generator seeded at
    ``reset(seed)``; the reward is ``mdp.reward[s]`` or ``mdp.reward[s, a]`` (0 without one), and
    episodes end after ``horizon`` steps (default ``mdp.horizon``; never for a discounted MDP
    without one). For a Gymnasium env, ``done = terminated or truncated`` (or ``horizon`` steps).
    """
    if horizon is not None:
        horizon = check_int("horizon", horizon)
    if isinstance(source, TabularMDP):
        return _mdp_sampler(source, horizon)
    source = as_env(source)
    if not (callable(getattr(source, "reset", None)) and callable(getattr(source, "step", None))):
        raise TypeError(f"source must be a TabularMDP or a Gymnasium env, got {source!r}")
    return _gym_sampler(source, horizon)


# ---------------------------------------------------------------------------- lava world
LAVA_FEATURES = ("goal", "lava", "red", "green", "blue", "yellow", "purple", "orange")
_LAVA_WEIGHTS = {"goal": 2.0, "lava": -10.0}


def _grid_cells(name, cells, size):
    """Flat indices of ``cells``, an iterable of ``(row, col)`` pairs inside the grid."""
    try:
        pairs = [(int(r), int(c)) for r, c in cells]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be (row, col) pairs, got {cells!r}") from e
    for i, (r, c) in enumerate(pairs):
        if not (0 <= r < size and 0 <= c < size):
            raise ValueError(f"{name}[{i}] is {(r, c)}, expected a cell of the {size} x {size} "
                             "grid")
    return np.array([r * size + c for r, c in pairs], dtype=np.int64)


def lava_world(size=9, lava=None, goal=None, slip=0.0, discount=0.9, terrain=0.25, seed=0,
               dtype=None, horizon=None):
    """A ``size x size`` gridworld with a goal, a lava region and coloured terrain: 8 features.

    After the 9 x 9, 8-feature, gamma 0.9 worlds of Brown & Niekum, "Efficient probabilistic
    performance bounds for inverse reinforcement learning" (AAAI 2018). Dynamics are those of
    :func:`gridworld` (``stay, up, down, left, right``; ``slip`` to a random other action).
    Features ``(S, 8)`` are one-hot cell types named :data:`LAVA_FEATURES`: ``goal``, ``lava``
    and six terrain colours; the other ("open") cells have no feature, so their reward is 0.
    Each cell that is neither goal nor lava is coloured with probability ``terrain``, the colour
    uniform. True weights: goal +2, lava -10, colours Uniform(-0.5, 0) (seeded); ``mdp.reward``
    is ``(S,)``.

    Defaults: the goal in the top-right corner ``(0, size - 1)`` and the lava a 3 x 2 block
    against the right wall, rows ``size // 2 .. size // 2 + 2``, columns ``size - 2, size - 1``:
    from the cells below it the straight way up crosses the lava and going around costs 2 or 4
    steps, while demonstrations started in the top rows reach the goal far from it.
    ``lava`` and ``goal`` take ``(row, col)`` cells.
    The initial distribution is uniform over the cells that are not lava. ``horizon`` given
    means a finite horizon of that many decisions (the discount is then dropped).
    """
    size = check_int("size", size, low=3)
    slip = check_probability("slip", slip)
    dtype = float_dtype(dtype)
    g = size // 2
    goal_cell = _grid_cells("goal", [(0, size - 1) if goal is None else goal], size)
    lava_cells = _grid_cells("lava", [(r, c) for r in range(g, min(g + 3, size))
                                      for c in (size - 2, size - 1)] if lava is None else lava,
                             size)
    if np.isin(goal_cell, lava_cells).any():
        raise ValueError(f"goal {goal!r} is a lava cell")
    rng = _rng(seed)
    S = size * size
    kind = np.full(S, -1)                                  # -1: open
    coloured = rng.random(S) < check_probability("terrain", terrain)
    kind[coloured] = rng.integers(2, len(LAVA_FEATURES), size=int(coloured.sum()))
    kind[lava_cells], kind[goal_cell] = 1, 0
    features = np.zeros((S, len(LAVA_FEATURES)))
    features[kind >= 0, kind[kind >= 0]] = 1.0
    theta = np.concatenate([[_LAVA_WEIGHTS["goal"], _LAVA_WEIGHTS["lava"]],
                            rng.uniform(-0.5, 0.0, size=len(LAVA_FEATURES) - 2)])
    initial = np.where(kind == 1, 0.0, 1.0)
    succ, probs = _grid_dynamics(size, size, slip)
    return TabularMDP(
        successors=torch.as_tensor(succ), transition_probs=_tensor(probs, dtype),
        initial=_tensor(initial / initial.sum(), dtype), horizon=horizon,
        discount=None if horizon is not None else discount,
        features=_tensor(features, dtype), feature_names=LAVA_FEATURES,
        reward=_tensor(features @ theta, dtype), shape=(size, size), action_names=GRID_ACTIONS)


__all__ += ["lava_world"]
