"""A validated :class:`~bayesirl.cli.spec.Spec` -> ``(mdp, demos, reward_model, infer_kwargs)``.

:func:`build` runs the environment builders, reads or simulates the demonstrations and makes the
reward model; whatever a builder rejects comes back as a :class:`~bayesirl.cli.spec.SpecError`
naming the spec and the table. ``BAYESIRL_FAST=1`` in the environment (:func:`fast_mode`) makes
:func:`build` shrink the sample counts (at most 20 draws and 20 warmup steps per chain, 2 chains,
NUTS trees of depth 4, 50 SVI steps) so that any spec runs in seconds (tests); the numbers are
meaningless, the code paths are the real ones.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import Any, NamedTuple

import torch

from bayesirl.cli.io import load_demos, load_mdp_npz
from bayesirl.cli.spec import (
    DATASETS,
    DemonstrationsSpec,
    EnvironmentSpec,
    InferenceSpec,
    PriorSpec,
    Spec,
    SpecError,
)

__all__ = ["Built", "available_memory", "build", "demonstrations_bytes", "deployment_mdp",
           "environment_bytes", "fast_mode", "infer_kwargs", "planning_bytes",
           "unused_options"]

FAST_NUM_SAMPLES = 20
FAST_WARMUP = 20
FAST_STEPS = 50
FAST_MAX_TREE_DEPTH = 4


def fast_mode() -> bool:
    """True when ``BAYESIRL_FAST`` is set to anything but "", "0", "false" or "no"."""
    return os.environ.get("BAYESIRL_FAST", "").strip().lower() not in ("", "0", "false", "no")


class Built(NamedTuple):
    """What :func:`build` returns; unpacks as ``mdp, demos, reward_model, infer_kwargs``."""

    mdp: Any
    demos: Any
    reward_model: Any
    infer_kwargs: dict[str, Any]


_GIB = 2.0 ** 30


def environment_bytes(name: str, options: dict) -> tuple[float, str]:
    """A lower bound on the memory the builder ``name`` allocates for ``options``, in bytes,
    and what dominates it: the arrays each builder makes (float64, 8 bytes an entry), before
    any planning. Estimated from the options alone, so a spec is refused before it allocates.

    gridworld: features ``(S, d)`` and the ``(d, d)`` identity they index, ``d`` the macro-cells;
    objectworld: distances from every cell to every object ``(S, 2, C, n_objects)``;
    lava_world: features ``(S, 8)``; random_mdp: transitions ``(S, A, K)`` and features
    ``(S, d)``; every grid: transitions ``(S, 5, 5)`` (successor and probability). Builders
    not listed (gymnasium) count 0: their size is the environment's.
    """
    size = options.get("size")
    grid = {"gridworld": 8, "objectworld": 32, "lava_world": 9}
    if name in grid:
        size = size if isinstance(size, int) else grid[name]
        S = float(size) ** 2
        moves = S * 5 * 5 * 16 + S * 16  # successors and probabilities; initial, reward
        if name == "gridworld":
            block = options.get("block", 2)
            bh, bw = (block, block) if isinstance(block, int) else tuple(block)
            d = max(size // max(bh, 1), 1) * max(size // max(bw, 1), 1)
            return moves + S * d * 8 + float(d) ** 2 * 8, (
                f"a {size} x {size} gridworld has {S:.0f} states and {d} macro-cell features")
        if name == "objectworld":
            C = options.get("n_colors", 2)
            n = round(options.get("density", 0.05) * S)
            return moves + S * 2 * C * n * 8, (
                f"a {size} x {size} objectworld has {S:.0f} states and {n} objects")
        return moves + S * 8 * 8, f"a {size} x {size} lava world has {S:.0f} states"
    if name == "random_mdp":
        S, A = options.get("n_states", 100), options.get("n_actions", 4)
        K, d = options.get("branching", 3), options.get("n_features", 8)
        return float(S) * A * K * 16 + float(S) * (d + 2) * 8, (
            f"a random MDP with {S} states, {A} actions and {K} successors each")
    return 0.0, ""


def available_memory() -> float | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable, else the free
    physical pages), or None where neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_bytes(need: float, where: str, what: str, doing: str) -> None:
    """The one memory rule: refuse ``need`` bytes beyond the memory available, naming the
    spec key (``where``), what takes the memory and for what (``doing``): a MemoryError, or
    the system killing the process, would come only after minutes, as a traceback."""
    have = available_memory()
    if have is not None and need > have:
        raise SpecError(f"{where}: {what}, which needs at least {need / _GIB:.3g} GiB of memory "
                        f"{doing}, more than the {have / _GIB:.3g} GiB available; choose a "
                        "smaller problem")


def _check_memory(env: EnvironmentSpec) -> None:
    """Refuse an environment whose arrays alone exceed the memory available."""
    need, what = environment_bytes(env.name, env.options)
    key = next((k for k in ("size", "n_states") if k in env.options), None)
    _check_bytes(need, f"environment.{key} is {env.options[key]!r}" if key else "environment",
                 what, "to build")


def planning_bytes(mdp) -> float:
    """A lower bound on the memory one finite-horizon planning pass over ``mdp`` allocates:
    the policy ``(horizon, S, A)`` and the values ``(horizon, S)`` of backward induction,
    float64 (0 for a discounted MDP, whose tables are ``(S, A)``). The expert's simulated
    policy and every likelihood evaluation of the inference make one."""
    if not mdp.finite_horizon:
        return 0.0
    return float(mdp.horizon) * mdp.n_states * (mdp.n_actions + 1) * 8


def _check_planning_memory(env: EnvironmentSpec, mdp) -> None:
    """Refuse a horizon whose planning tables exceed the memory available, naming the key
    that set it (``environment.horizon``, or the file's ``horizon`` array)."""
    if not mdp.finite_horizon:
        return
    h = mdp.horizon if mdp.horizon < 10 ** 9 else f"{float(mdp.horizon):.3g}"
    if "horizon" in env.options:
        where = f"environment.horizon is {env.options['horizon']!r}"
    elif env.file is not None:
        where = f"environment.file {env.file.name!r}: array horizon is {h}"
    else:
        where = f"environment (its horizon is {h})"
    _check_bytes(planning_bytes(mdp), where,
                 f"planning {h} steps over {mdp.n_states} states and {mdp.n_actions} actions",
                 "for its tables")


def demonstrations_bytes(n: int, length: int) -> float:
    """A lower bound on the memory of ``n`` simulated demonstrations of ``length`` steps: the
    states and actions (int64) and the mask (bool) of :class:`~bayesirl.Demonstrations`."""
    return float(n) * float(length) * (8 + 8 + 1)


def _build_environment(env: EnvironmentSpec):
    from bayesirl.core import envs

    options = dict(env.options)
    if env.file is not None:
        try:
            mdp = load_mdp_npz(env.file, options.get("horizon"), options.get("discount"))
        except SpecError as e:
            raise SpecError.at("environment.file", e) from None
        _check_planning_memory(env, mdp)
        return mdp
    try:
        if env.name == "gymnasium":
            try:
                import gymnasium
            except ImportError:
                raise SpecError("environment.name is 'gymnasium', but the gymnasium package is "
                                "not installed: pip install bayesirl[gym]") from None
            env_id, kwargs = options.pop("id"), options.pop("kwargs", {})
            try:
                gym_env = gymnasium.make(env_id, **kwargs)
            except Exception as e:  # gymnasium raises its own error types for unknown ids
                raise SpecError(f"environment.id is {env_id!r} with kwargs {kwargs!r}: "
                                f"gymnasium.make failed ({type(e).__name__}: {e})") from None
            mdp = envs.from_gymnasium(gym_env, **options)
        else:
            _check_memory(env)
            mdp = getattr(envs, env.name)(**options)
    except SpecError:
        raise
    except (TypeError, ValueError) as e:
        raise SpecError.at(f"environment ({env.name})", e) from None
    _check_planning_memory(env, mdp)
    return mdp


def _build_demos(spec: Spec, mdp):
    from bayesirl.core.demos import rollouts
    from bayesirl.model.likelihood import action_log_probs

    d = spec.demonstrations
    if d.file is not None:
        try:
            demos = load_demos(d.file)
        except SpecError as e:
            raise SpecError.at("demonstrations.file", e) from None
        try:
            return demos.validate(mdp)
        except ValueError as e:
            raise SpecError(f"demonstrations.file is {str(d.file)!r}, but it does not fit the "
                            f"environment: {e}") from None
    if mdp.reward is None:
        raise SpecError("demonstrations are simulated (no demonstrations.file), but the "
                        "environment has no true reward to simulate them from; add a reward "
                        "array to the environment file or set demonstrations.file")
    length = d.length if d.length is not None else (mdp.horizon or 20)
    if mdp.finite_horizon and length > mdp.horizon:
        raise SpecError(f"demonstrations.length is {length}, expected at most the "
                        f"environment's horizon {mdp.horizon}")
    _check_bytes(demonstrations_bytes(d.n, length), f"demonstrations.n is {d.n}",
                 f"{d.n} demonstrations of {length} steps", "to simulate")
    expert = d.expert or spec.likelihood.kind
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log_policy = action_log_probs(mdp, mdp.reward, expert, d.rationality)
    if (torch.isnan(log_policy).any() or (log_policy == math.inf).any()
            or not torch.isfinite(log_policy).any(-1).all()):  # the planner's warnings say so too
        raise SpecError(f"demonstrations.rationality is {d.rationality!r}: the {expert} "
                        "expert's policy is not finite at this rationality (the scaled rewards "
                        "overflow); choose a smaller one")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    # log_softmax renormalises: a soft expert's log-policy is Q - V, which loses its
    # normalisation to rounding when rationality * reward is large (1e10: sums off by 1e-6)
    policy = torch.log_softmax(log_policy, dim=-1).exp()
    return rollouts(mdp, policy, n=d.n, seed=d.seed, length=length)


def _grid_coords(mdp) -> torch.Tensor:
    rows, cols = mdp.shape
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([r.reshape(-1), c.reshape(-1)], -1).to(mdp.dtype)


def _build_reward(spec: Spec, mdp):
    from bayesirl.model.rewards import GPReward, LinearReward, NeuralReward, TabularReward

    r = spec.reward
    prior = r.prior.distribution() if r.prior is not None else None
    opts = r.options
    need_features = r.model in ("linear", "neural") or (
        r.model == "gp" and opts.get("inputs", "features" if mdp.shape is None else "coords")
        == "features")
    if need_features and mdp.features is None:
        raise SpecError(f"reward.model is {r.model!r}, which needs state features, but the "
                        "environment has none; add a features array or use model = 'tabular'")
    try:
        if r.model == "linear":
            return LinearReward(mdp.features, prior=prior, feature_names=mdp.feature_names)
        if r.model == "tabular":
            return TabularReward(mdp.n_states, mdp.n_actions if opts.get("per_action") else None,
                                 prior=prior)
        if r.model == "gp":
            inputs = opts.get("inputs", "features" if mdp.shape is None else "coords")
            if inputs == "coords" and mdp.shape is None:
                raise SpecError("reward.inputs is 'coords', but the environment is not a grid "
                                "(no shape); use inputs = 'features'")
            x = _grid_coords(mdp) if inputs == "coords" else mdp.features
            if x.dim() != 2:
                raise SpecError("reward.inputs is 'features', but the environment has "
                                f"state-action features {tuple(x.shape)}; a GP needs (S, d)")
            hyper = {k: (v.distribution() if isinstance(v, PriorSpec) else v)
                     for k, v in opts.items() if k in ("lengthscale", "variance")}
            return GPReward(x, jitter=opts.get("jitter", 1e-6), **hyper)
        return NeuralReward(mdp.features, hidden=opts.get("hidden", (32, 32)),
                            prior_scale=opts.get("prior_scale", 1.0))
    except SpecError:
        raise
    except (TypeError, ValueError) as e:
        raise SpecError.at(f"reward ({r.model})", e) from None


def infer_kwargs(spec: Spec, n_demos: int | None = None, fast: bool | None = None) -> dict:
    """Keyword arguments of :func:`bayesirl.infer` from ``[likelihood]`` and ``[inference]``;
    ``fast`` (default: :func:`fast_mode`) shrinks the sample counts. Options the spec's method
    does not use (``steps`` with NUTS, ``num_chains`` with MAP) are left out, so infer has
    nothing to warn about: a spec table holds every option with its default (those the spec
    set are named by :func:`unused_options`, which the command line reports)."""
    from bayesirl.inference.facade import USED_BY

    inf, lik = spec.inference, spec.likelihood
    kwargs = dataclasses.asdict(inf)
    if kwargs["warmup"] is None:
        kwargs["warmup"] = inf.num_samples
    if fast if fast is not None else fast_mode():
        kwargs["num_samples"] = min(kwargs["num_samples"], FAST_NUM_SAMPLES)
        kwargs["warmup"] = min(kwargs["warmup"], FAST_WARMUP)
        kwargs["steps"] = min(kwargs["steps"], FAST_STEPS)
        kwargs["num_chains"] = min(kwargs["num_chains"], 2)
        kwargs["max_tree_depth"] = min(kwargs["max_tree_depth"], FAST_MAX_TREE_DEPTH)
    if inf.subsample_size is not None and n_demos is not None and inf.subsample_size > n_demos:
        raise SpecError(f"inference.subsample_size is {inf.subsample_size}, expected at most "
                        f"the number of demonstrations ({n_demos})")
    rationality = lik.rationality
    kwargs["likelihood"] = lik.kind
    kwargs["rationality"] = (rationality.distribution() if isinstance(rationality, PriorSpec)
                             else rationality)
    return {k: v for k, v in kwargs.items() if k not in USED_BY or inf.method in USED_BY[k]}


def unused_options(spec: Spec, keys=None) -> list[str]:
    """The ``[inference]`` options among ``keys`` (names of its keys; default: those the spec
    sets to anything but their default) that the spec's method does not use
    (:data:`bayesirl.inference.facade.USED_BY`), as ``"inference.<key>"``: :func:`infer_kwargs`
    leaves them out, so the command line says so (``bayesirl run`` warns, ``bayesirl sweep``
    refuses a grid axis of them). The rule of :func:`bayesirl.infer`'s own
    UnusedOptionWarning: a default value is not an option set."""
    from bayesirl.inference.facade import USED_BY

    inf, default = spec.inference, InferenceSpec()
    if keys is None:
        keys = [f.name for f in dataclasses.fields(inf)
                if getattr(inf, f.name) != getattr(default, f.name)]
    return [f"inference.{k}" for k in keys if k in USED_BY and inf.method not in USED_BY[k]]


def _build_dataset(spec: Spec):
    """``(mdp, demos)`` of a packaged data set (:data:`~bayesirl.cli.spec.DATASETS`)."""
    from bayesirl import datasets

    env = spec.environment
    if spec.demonstrations != DemonstrationsSpec():
        raise SpecError(f"environment.name is {env.name!r}, a data set that brings its own "
                        "demonstrations: remove the [demonstrations] table")
    try:
        return getattr(datasets, env.name)(**env.options)
    except (TypeError, ValueError) as e:
        raise SpecError.at(f"environment ({env.name})", e) from None


def build(spec: Spec, fast: bool | None = None) -> Built:
    """Build ``(mdp, demos, reward_model, infer_kwargs)``: ``infer(mdp, demos, reward_model,
    **infer_kwargs)`` runs the spec. Raises :class:`SpecError` for anything the spec got wrong
    (including values the builders reject)."""
    where = str(spec.source) if spec.source is not None else spec.name
    try:
        if spec.environment.name in DATASETS:
            mdp, demos = _build_dataset(spec)
        else:
            mdp = _build_environment(spec.environment)
            demos = _build_demos(spec, mdp)
        model = _build_reward(spec, mdp)
        kwargs = infer_kwargs(spec, demos.n, fast)
    except SpecError as e:
        raise SpecError.at(where, e) from None
    return Built(mdp, demos, model, kwargs)


def deployment_mdp(spec: Spec, mdp):
    """The MDP the ``[decisions]`` policies are compared on: ``mdp`` started uniformly from
    ``decisions.start`` (states or grid cells), or ``mdp`` itself without a start."""
    start = spec.decisions.start if spec.decisions is not None else None
    if start is None:
        return mdp
    rows, cols = mdp.shape or (0, 0)
    initial = torch.zeros(mdp.n_states, dtype=mdp.dtype, device=mdp.device)
    try:
        for i, v in enumerate(start):
            if isinstance(v, tuple):
                if mdp.shape is None or not (v[0] < rows and v[1] < cols):
                    grid = "a grid" if mdp.shape is None else f"the {rows} x {cols} grid"
                    raise SpecError(f"decisions.start[{i}] is {list(v)!r}, expected a [row, col] "
                                    f"cell of {grid} (or a state index)")
                v = v[0] * cols + v[1]
            elif v >= mdp.n_states:
                raise SpecError(f"decisions.start[{i}] is {v!r}, expected a state index in "
                                f"[0, {mdp.n_states})")
            initial[v] = 1.0
    except SpecError as e:
        raise SpecError.at(str(spec.source) if spec.source is not None else spec.name, e) from None
    return mdp.replace(initial=initial / initial.sum())
