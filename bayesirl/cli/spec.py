"""Problem specifications: a TOML file -> validated dataclasses -> MDP, demos, reward model.

A spec has six tables (all but ``[environment]`` optional) and two optional top-level strings,
``name`` (default: the file's stem) and ``description``::

    name = "gridworld"
    [environment]            # name = gridworld | objectworld | random_mdp | lava_world |
                             # gymnasium + options,
    name = "gridworld"       # or file = "mdp.npz" (transitions (S, A, S'), features, initial,
    size = 8                 # horizon or discount, optional reward, shape)
    horizon = 20
    [demonstrations]         # simulated from the true reward: n, seed, rationality, length,
    n = 20                   # expert = soft | boltzmann; or file = "demos.npz" | "demos.csv"
    [reward]                 # model = linear | tabular | gp | neural, with its options
    model = "linear"
    prior = { family = "normal", loc = 0.0, scale = 1.0 }
    [likelihood]             # kind = soft | boltzmann; rationality = 2.0 or a prior table
    rationality = { prior = "lognormal", loc = 0.0, scale = 0.5 }
    [inference]              # method = nuts | hmc | svi | map and its settings
    method = "nuts"
    [decisions]              # compare the posterior-mean and robust (BROIL) policies:
    alpha = 0.95             # CVaR level in (0, 1) and lam in [0, 1], the weight of the
    lam = 0.0                # expected return; start = states or [row, col] cells to deploy
                             # from (default the MDP's initial distribution); no table: no
                             # comparison

Relative file paths resolve against the spec's folder. Every problem is reported as one
:class:`SpecError` (a ``ValueError``) whose message names the ``table.key`` (or the CSV column),
the offending value and what is allowed. :func:`build` turns a :class:`Spec` into
``(mdp, demos, reward_model, infer_kwargs)`` ready for :func:`bayesirl.infer`.

``BAYESIRL_FAST=1`` in the environment makes :func:`build` shrink the sample counts (at most 20
draws and 20 warmup steps per chain, 2 chains, NUTS trees of depth 4, 50 SVI steps) so that any
spec runs in seconds (tests); the numbers are meaningless, the code paths are the real ones.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyro.distributions as dist
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package
    import tomli as tomllib

__all__ = [
    "Built",
    "DecisionsSpec",
    "DemonstrationsSpec",
    "EnvironmentSpec",
    "InferenceSpec",
    "LikelihoodSpec",
    "PriorSpec",
    "RewardSpec",
    "Spec",
    "SpecError",
    "apply_overrides",
    "build",
    "deployment_mdp",
    "fast_mode",
    "load_demos",
    "load_mdp_npz",
    "load_spec",
    "parse_spec",
]

FAST_NUM_SAMPLES = 20
FAST_WARMUP = 20
FAST_STEPS = 50
FAST_MAX_TREE_DEPTH = 4


class SpecError(ValueError):
    """A problem specification (or a file it names) is invalid; the message says where."""


# ---------------------------------------------------------------------------- value checks
def _show(value) -> str:
    if isinstance(value, dict):
        return "a table {" + ", ".join(sorted(value)) + "}"
    if isinstance(value, Path):
        return repr(str(value))
    return repr(value)


def _fail(where: str, value, expected: str):
    raise SpecError(f"{where} is {_show(value)}, expected {expected}")


def _int(low: int | None = None):
    def check(where, value):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, value, "an integer" + (f" >= {low}" if low is not None else ""))
        if low is not None and value < low:
            _fail(where, value, f"an integer >= {low}")
        return value
    return check


def _real(low: float | None = None, high: float | None = None, low_open: bool = False,
          high_open: bool = False):
    lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    if low is not None and high is not None:
        what = f"a number in {lo}, {hi}"
    elif low is not None:
        what = f"a number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        what = f"a number {'<' if high_open else '<='} {high:g}"
    else:
        what = "a finite number"

    def check(where, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
            _fail(where, value, what)
        if low is not None and (value < low or (low_open and value == low)):
            _fail(where, value, what)
        if high is not None and (value > high or (high_open and value == high)):
            _fail(where, value, what)
        return float(value)
    return check


def _bool(where, value):
    if not isinstance(value, bool):
        _fail(where, value, "true or false")
    return value


def _str(where, value):
    if not isinstance(value, str) or not value:
        _fail(where, value, "a non-empty string")
    return value


def _choice(*options):
    def check(where, value):
        if value not in options:
            _fail(where, value, "one of " + ", ".join(repr(o) for o in options))
        return value
    return check


def _is_int_pair(value, low: int) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value)


def _block(where, value):
    if _is_int_pair(value, 1):
        return tuple(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    _fail(where, value, "a positive integer or a [rows, cols] pair of positive integers")


def _cell(where, value):
    if not _is_int_pair(value, 0):
        _fail(where, value, "a [row, col] pair of integers >= 0, e.g. [0, 8]")
    return tuple(value)


def _cells(where, value):
    if not isinstance(value, list) or not value or not all(_is_int_pair(v, 0) for v in value):
        _fail(where, value, "a non-empty list of [row, col] pairs of integers >= 0, e.g. "
                            "[[4, 7], [4, 8]]")
    return [tuple(v) for v in value]


def _int_list(where, value):
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        _fail(where, value, "a non-empty list of positive integers, e.g. [32, 32]")
    return tuple(value)


def _table(where, value):
    if not isinstance(value, dict):
        _fail(where, value, "a table, e.g. { is_slippery = false }")
    return dict(value)


def _path(where, value):
    if not isinstance(value, str) or not value:
        _fail(where, value, "a file path (a string)")
    return value


_PROB = _real(0.0, 1.0)
_DISCOUNT = _real(0.0, 1.0, high_open=True)
_POSITIVE = _real(0.0, low_open=True)
_SEED = _int(0)
_HORIZON = _int(1)


def _check_keys(where: str, table: dict, schema: dict, context: str = "") -> dict:
    """Validate ``table`` against ``schema`` (key -> check); unknown keys name the allowed."""
    out = {}
    for key, value in table.items():
        if key not in schema:
            allowed = ", ".join(sorted(schema))
            raise SpecError(f"{where}.{key} is not a known key{context} (value {_show(value)});"
                            f" allowed keys: {allowed}")
        out[key] = schema[key](f"{where}.{key}", value)
    return out


def _one_time(where: str, options: dict) -> None:
    if "horizon" in options and "discount" in options:
        raise SpecError(f"{where}.horizon is {options['horizon']!r} and {where}.discount is "
                        f"{options['discount']!r}, expected at most one of them (a finite "
                        "horizon or a discount)")


# ---------------------------------------------------------------------------- priors
# family -> (parameters with defaults, positive support?)
PRIOR_FAMILIES: dict[str, tuple[dict[str, float], bool]] = {
    "normal": ({"loc": 0.0, "scale": 1.0}, False),
    "laplace": ({"loc": 0.0, "scale": 1.0}, False),
    "student_t": ({"df": 3.0, "loc": 0.0, "scale": 1.0}, False),
    "cauchy": ({"loc": 0.0, "scale": 1.0}, False),
    "uniform": ({"low": -1.0, "high": 1.0}, False),
    "lognormal": ({"loc": 0.0, "scale": 1.0}, True),
    "gamma": ({"concentration": 2.0, "rate": 1.0}, True),
    "exponential": ({"rate": 1.0}, True),
    "halfnormal": ({"scale": 1.0}, True),
    "halfcauchy": ({"scale": 1.0}, True),
}
_POSITIVE_PARAMS = ("scale", "df", "concentration", "rate")
_DISTRIBUTIONS = {
    "normal": dist.Normal, "laplace": dist.Laplace, "student_t": dist.StudentT,
    "cauchy": dist.Cauchy, "uniform": dist.Uniform, "lognormal": dist.LogNormal,
    "gamma": dist.Gamma, "exponential": dist.Exponential, "halfnormal": dist.HalfNormal,
    "halfcauchy": dist.HalfCauchy,
}


@dataclass(frozen=True)
class PriorSpec:
    """A univariate prior: ``family`` (a key of :data:`PRIOR_FAMILIES`) and its parameters."""

    family: str
    params: dict[str, float]

    def distribution(self) -> dist.Distribution:
        """The Pyro distribution (parameters in torch's default dtype)."""
        dtype = torch.get_default_dtype()
        return _DISTRIBUTIONS[self.family](
            **{k: torch.tensor(v, dtype=dtype) for k, v in self.params.items()})

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.family}({args})"


def _prior(where: str, value, positive: bool = False, family_key: str = "family") -> PriorSpec:
    """Parse ``{family = "normal", loc = 0, scale = 1}`` (``family_key`` names the family)."""
    families = [f for f, (_, pos) in PRIOR_FAMILIES.items() if pos or not positive]
    if isinstance(value, str) and value in PRIOR_FAMILIES:
        value = {family_key: value}
    if not isinstance(value, dict):
        _fail(where, value, f'a table like {{ {family_key} = "{families[0]}", ... }}')
    value = dict(value)
    keys = [k for k in dict.fromkeys((family_key, "family")) if k in value]
    if len(keys) > 1:
        raise SpecError(f"{where} gives both {family_key} and family, expected one of them")
    if not keys:
        raise SpecError(f"{where}.{family_key} is missing, expected one of "
                        + ", ".join(families))
    key = keys[0]
    family = value.pop(key)
    if family not in families:
        extra = " (a prior on positive numbers)" if positive else ""
        _fail(f"{where}.{key}", family, "one of " + ", ".join(families) + extra)
    defaults, _ = PRIOR_FAMILIES[family]
    schema = {k: _POSITIVE if k in _POSITIVE_PARAMS else _real() for k in defaults}
    params = {**defaults, **_check_keys(where, value, schema, f" of a {family} prior")}
    if family == "uniform" and not params["low"] < params["high"]:
        raise SpecError(f"{where}.high is {params['high']!r}, expected a number > "
                        f"{where}.low = {params['low']!r}")
    return PriorSpec(family, params)


def _positive_or_prior(where, value):
    if isinstance(value, dict):
        return _prior(where, value, positive=True)
    return _POSITIVE(where, value)


# ---------------------------------------------------------------------------- tables
ENVIRONMENTS: dict[str, dict[str, Any]] = {
    "gridworld": {"size": _int(1), "slip": _PROB, "horizon": _HORIZON, "discount": _DISCOUNT,
                  "block": _block, "seed": _SEED},
    "objectworld": {"size": _int(1), "n_colors": _int(2), "density": _PROB,
                    "determinism": _PROB, "horizon": _HORIZON, "discount": _DISCOUNT,
                    "continuous": _bool, "seed": _SEED},
    "random_mdp": {"n_states": _int(1), "n_actions": _int(1), "branching": _int(1),
                   "n_features": _int(1), "horizon": _HORIZON, "discount": _DISCOUNT,
                   "seed": _SEED},
    "lava_world": {"size": _int(3), "slip": _PROB, "horizon": _HORIZON, "discount": _DISCOUNT,
                   "terrain": _PROB, "goal": _cell, "lava": _cells, "seed": _SEED},
    "gymnasium": {"id": _str, "horizon": _HORIZON, "discount": _DISCOUNT, "kwargs": _table},
}
_ENV_FILE_KEYS = {"file": _path, "horizon": _HORIZON, "discount": _DISCOUNT}
LIKELIHOODS = ("soft", "boltzmann")
REWARD_MODELS: dict[str, dict[str, Any]] = {
    "linear": {"prior": _prior},
    "tabular": {"prior": _prior, "per_action": _bool},
    "gp": {"lengthscale": _positive_or_prior, "variance": _positive_or_prior,
           "jitter": _POSITIVE, "inputs": _choice("coords", "features")},
    "neural": {"hidden": _int_list, "prior_scale": _POSITIVE},
}
METHODS = ("nuts", "hmc", "svi", "map")
SPACES = ("auto", "reward", "value")
GUIDES = ("normal", "mvn", "lowrank")


@dataclass(frozen=True)
class EnvironmentSpec:
    """``[environment]``: a named builder with its keyword arguments, or an ``.npz`` file."""

    name: str | None = None
    file: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemonstrationsSpec:
    """``[demonstrations]``: simulated from the environment's true reward, or a file.

    Simulated: ``n`` demonstrations of ``length`` steps (default: the horizon, or 20 for a
    discounted MDP) from the ``expert`` policy (default: the likelihood's kind) with
    rationality ``rationality``, sampled with ``seed``.
    """

    file: Path | None = None
    n: int = 20
    seed: int = 0
    rationality: float = 1.0
    length: int | None = None
    expert: str | None = None


@dataclass(frozen=True)
class RewardSpec:
    """``[reward]``: the reward model, its prior and options."""

    model: str = "linear"
    prior: PriorSpec | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LikelihoodSpec:
    """``[likelihood]``: ``kind`` and a fixed rationality or a prior on it."""

    kind: str = "soft"
    rationality: float | PriorSpec = 1.0


@dataclass(frozen=True)
class InferenceSpec:
    """``[inference]``: the arguments of :func:`bayesirl.infer`."""

    method: str = "nuts"
    num_samples: int = 500
    warmup: int | None = None
    num_chains: int = 2
    seed: int = 0
    guide: str = "mvn"
    steps: int = 2000
    lr: float = 0.01
    lr_decay: float = 1.0
    subsample_size: int | None = None
    target_accept: float = 0.8
    max_tree_depth: int = 10
    num_steps: int = 10
    space: str = "auto"


_INFERENCE_SCHEMA = {
    "method": _choice(*METHODS), "num_samples": _int(1), "warmup": _int(0),
    "num_chains": _int(1), "seed": _SEED, "guide": _choice(*GUIDES), "steps": _int(1),
    "lr": _POSITIVE, "lr_decay": _real(0.0, 1.0, low_open=True), "subsample_size": _int(1),
    "target_accept": _real(0.0, 1.0, low_open=True, high_open=True),
    "max_tree_depth": _int(1), "num_steps": _int(1), "space": _choice(*SPACES),
}


@dataclass(frozen=True)
class DecisionsSpec:
    """``[decisions]``: compare the policy optimal for the posterior-mean reward with the
    robust BROIL policy maximising ``lam * E[return] + (1 - lam) * CVaR_alpha[return]`` over
    the posterior (:func:`bayesirl.decisions.robust_policy`)."""

    alpha: float = 0.95
    lam: float = 0.0
    start: tuple | None = None


def _states_or_cells(where, value):
    if not isinstance(value, list) or not value or not all(
            _is_int_pair(v, 0) or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
            for v in value):
        _fail(where, value, "a non-empty list of state indices or [row, col] cells, e.g. "
                            "[[7, 7], [7, 8]]")
    return tuple(tuple(v) if isinstance(v, list) else v for v in value)


_DECISIONS_SCHEMA = {"alpha": _real(0.0, 1.0, low_open=True, high_open=True), "lam": _PROB,
                     "start": _states_or_cells}


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
                    _fail(f"decisions.start[{i}]", list(v), f"a [row, col] cell of {grid} (or "
                                                            "a state index)")
                v = v[0] * cols + v[1]
            elif v >= mdp.n_states:
                _fail(f"decisions.start[{i}]", v, f"a state index in [0, {mdp.n_states})")
            initial[v] = 1.0
    except SpecError as e:
        raise _prefix(str(spec.source) if spec.source is not None else spec.name, e) from None
    return mdp.replace(initial=initial / initial.sum())


@dataclass(frozen=True)
class Spec:
    """A validated problem specification (see the module docstring for the format)."""

    name: str
    environment: EnvironmentSpec
    demonstrations: DemonstrationsSpec = DemonstrationsSpec()
    reward: RewardSpec = RewardSpec()
    likelihood: LikelihoodSpec = LikelihoodSpec()
    inference: InferenceSpec = InferenceSpec()
    decisions: DecisionsSpec | None = None
    description: str = ""
    source: Path | None = None
    text: str = ""


def _resolve(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _existing_file(where: str, value: str, base: Path, suffixes: tuple[str, ...]) -> Path:
    path = _resolve(value, base)
    if path.suffix.lower() not in suffixes:
        _fail(where, value, "a file ending in " + " or ".join(suffixes))
    if not path.is_file():
        raise SpecError(f"{where} is {value!r}, but there is no such file ({path})")
    return path


def _parse_environment(table, base: Path) -> EnvironmentSpec:
    where = "environment"
    if "file" in table:
        if "name" in table:
            raise SpecError(f"environment.name is {table['name']!r} and environment.file is "
                            f"{table['file']!r}, expected one of them")
        options = _check_keys(where, table, _ENV_FILE_KEYS, " with environment.file")
        _one_time(where, options)
        path = _existing_file("environment.file", options.pop("file"), base, (".npz",))
        return EnvironmentSpec(file=path, options=options)
    if "name" not in table:
        raise SpecError("environment.name is missing, expected one of "
                        + ", ".join(repr(n) for n in ENVIRONMENTS)
                        + ' (or environment.file = "mdp.npz")')
    table = dict(table)
    name = _choice(*ENVIRONMENTS)("environment.name", table.pop("name"))
    options = _check_keys(where, table, ENVIRONMENTS[name], f" of a {name} environment")
    _one_time(where, options)
    if name == "gymnasium" and "id" not in options:
        raise SpecError('environment.id is missing, expected a Gymnasium id such as '
                        '"FrozenLake-v1"')
    return EnvironmentSpec(name=name, options=options)


def _parse_demonstrations(table, base: Path) -> DemonstrationsSpec:
    where = "demonstrations"
    if "file" in table:
        _check_keys(where, table, {"file": _path}, " with demonstrations.file (the file holds "
                                                   "the demonstrations)")
        path = _existing_file("demonstrations.file", table["file"], base, (".npz", ".csv"))
        return DemonstrationsSpec(file=path)
    schema = {"n": _int(1), "seed": _SEED, "rationality": _POSITIVE, "length": _int(1),
              "expert": _choice(*LIKELIHOODS)}
    return DemonstrationsSpec(**_check_keys(where, table, schema))


def _parse_reward(table) -> RewardSpec:
    table = dict(table)
    model = _choice(*REWARD_MODELS)("reward.model", table.pop("model", "linear"))
    options = _check_keys("reward", table, REWARD_MODELS[model], f" of a {model} reward")
    prior = options.pop("prior", None)
    if prior is None and "prior" in REWARD_MODELS[model]:
        prior = PriorSpec("normal", {"loc": 0.0, "scale": 1.0})
    return RewardSpec(model, prior, options)


def _parse_likelihood(table) -> LikelihoodSpec:
    def rationality(where, value):
        if isinstance(value, dict):
            return _prior(where, value, positive=True, family_key="prior")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            _fail(where, value, 'a number > 0 or a table like { prior = "lognormal", '
                                'loc = 0.0, scale = 0.5 }')
        return _POSITIVE(where, value)

    schema = {"kind": _choice(*LIKELIHOODS), "rationality": rationality}
    return LikelihoodSpec(**_check_keys("likelihood", table, schema))


_TABLES = ("environment", "demonstrations", "reward", "likelihood", "inference", "decisions")


def parse_spec(data: dict, base: Path | str = ".", name: str = "spec", text: str = "",
               source: Path | None = None) -> Spec:
    """Validate a spec already read into a dict (``tomllib.loads``); see :func:`load_spec`."""
    base = Path(base)
    allowed = {"name": _str, "description": _str, **{t: _table for t in _TABLES}}
    for key, value in data.items():
        if key not in allowed:
            raise SpecError(f"{key} is not a known top-level key or table (value "
                            f"{_show(value)}); allowed: {', '.join(allowed)}")
        if key in _TABLES and not isinstance(value, dict):
            _fail(key, value, f"a table [{key}]")
        if key in ("name", "description"):
            _str(key, value)
    if "environment" not in data:
        raise SpecError("[environment] is missing, expected a table with name = \"gridworld\" "
                        f"(or {', '.join(list(ENVIRONMENTS)[1:])}) or file = \"mdp.npz\"")
    inference = InferenceSpec(**_check_keys("inference", data.get("inference", {}),
                                            _INFERENCE_SCHEMA))
    return Spec(name=data.get("name", name),
                environment=_parse_environment(data["environment"], base),
                demonstrations=_parse_demonstrations(data.get("demonstrations", {}), base),
                reward=_parse_reward(data.get("reward", {})),
                likelihood=_parse_likelihood(data.get("likelihood", {})),
                inference=inference,
                decisions=DecisionsSpec(**_check_keys("decisions", data["decisions"],
                                                      _DECISIONS_SCHEMA))
                if "decisions" in data else None,
                description=data.get("description", ""),
                source=source, text=text)


def _prefix(where: str, e: Exception) -> SpecError:
    msg = str(e).replace("\n", " ")
    return SpecError(f"{where}: {msg}")


def load_spec(path) -> Spec:
    """Read and validate a TOML spec; raise :class:`SpecError` naming the first problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read the spec ({e})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: invalid TOML: {e}") from None
    try:
        return parse_spec(data, path.resolve().parent, path.stem, text, path)
    except SpecError as e:
        raise _prefix(str(path), e) from None


def apply_overrides(spec: Spec, method: str | None = None, num_samples: int | None = None,
                    seed: int | None = None) -> Spec:
    """A copy of ``spec`` with command-line overrides of ``[inference]`` (None keeps)."""
    changes = {"method": method, "num_samples": num_samples, "seed": seed}
    schema = {"method": _choice(*METHODS), "num_samples": _int(1), "seed": _SEED}
    changes = {k: schema[k](k.replace("_", "-"), v) for k, v in changes.items()
               if v is not None}
    return dataclasses.replace(spec, inference=dataclasses.replace(spec.inference, **changes))


# ---------------------------------------------------------------------------- files
_MDP_ARRAYS = ("transitions", "features", "initial", "horizon", "discount", "reward", "shape",
               "feature_names", "state_names", "action_names")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise SpecError(f"{path}: no such file")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("not an .npz archive")
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise SpecError(f"{path}: cannot read the .npz archive (truncated or not an npz "
                        f"file?): {e}") from None


def _scalar(path, arrays, key, kind):
    value = arrays[key]
    if value.shape != () or not np.issubdtype(value.dtype, np.number):
        raise SpecError(f"{path}: array {key} has shape {value.shape} and dtype {value.dtype}, "
                        f"expected a scalar {kind}")
    return value.item()


def load_mdp_npz(path, horizon: int | None = None, discount: float | None = None):
    """A :class:`~bayesirl.TabularMDP` from an ``.npz`` file.

    Arrays: ``transitions (S, A, S')`` (required), ``features (S, d)`` or ``(S, A, d)``,
    ``initial (S,)`` (default uniform), a scalar ``horizon`` or ``discount`` (or give one as an
    argument, which takes precedence), optional ``reward (S,)`` or ``(S, A)`` (the truth, for
    simulated demonstrations), ``shape (2,)`` (a grid, for plots), ``feature_names``,
    ``state_names``, ``action_names`` (string arrays).
    """
    from bayesirl.core.mdp import TabularMDP

    path = Path(path)
    arrays = _read_npz(path)
    unknown = sorted(set(arrays) - set(_MDP_ARRAYS))
    if unknown:
        raise SpecError(f"{path}: array {unknown[0]!r} is not a known array; allowed: "
                        + ", ".join(_MDP_ARRAYS))
    if "transitions" not in arrays:
        raise SpecError(f"{path}: array 'transitions' (S, A, S') is missing; the file has "
                        + (", ".join(sorted(arrays)) or "no arrays"))
    if horizon is None and discount is None:
        if "horizon" in arrays and "discount" in arrays:
            raise SpecError(f"{path}: arrays horizon and discount are both given, expected one")
        if "horizon" in arrays:
            horizon = _scalar(path, arrays, "horizon", "integer")
            if not float(horizon).is_integer() or horizon < 1:
                raise SpecError(f"{path}: array horizon is {horizon!r}, expected an integer "
                                ">= 1")
            horizon = int(horizon)
        elif "discount" in arrays:
            discount = float(_scalar(path, arrays, "discount", "number"))
        else:
            raise SpecError(f"{path}: neither a horizon nor a discount array; add one to the "
                            "file, or set environment.horizon or environment.discount")
    kwargs = {"horizon": horizon, "discount": discount}
    for key in ("features", "initial", "reward"):
        if key in arrays:
            kwargs[key] = torch.as_tensor(arrays[key], dtype=torch.get_default_dtype())
    if "shape" in arrays:
        kwargs["shape"] = tuple(int(x) for x in np.ravel(arrays["shape"]))
    for key in ("feature_names", "state_names", "action_names"):
        if key in arrays:
            kwargs[key] = tuple(str(x) for x in np.ravel(arrays[key]))
    try:
        P = torch.as_tensor(arrays["transitions"], dtype=torch.get_default_dtype())
        return TabularMDP.from_dense(P, **kwargs)
    except (TypeError, ValueError) as e:
        raise _prefix(str(path), e) from None


_CSV_COLUMNS = ("episode", "step", "state", "action")


def _load_csv(path: Path):
    from bayesirl.core.demos import Demonstrations

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SpecError(f"{path}: cannot read the CSV file ({e})") from None
    if not rows:
        raise SpecError(f"{path}: the file is empty, expected a header "
                        + ",".join(_CSV_COLUMNS) + " and one row per step")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in _CSV_COLUMNS if c not in header]
    if missing:
        raise SpecError(f"{path}: column {missing[0]!r} is missing (header is "
                        f"{','.join(header)!r}), expected columns " + ", ".join(_CSV_COLUMNS))
    col = {c: header.index(c) for c in _CSV_COLUMNS}
    episodes: dict[str, list[tuple[int, int, int, int]]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise SpecError(f"{path}, line {line}: {len(row)} fields, expected {len(header)} "
                            f"like the header")
        values = {}
        for c in ("step", "state", "action"):
            cell = row[col[c]].strip()
            try:
                values[c] = int(cell)
            except ValueError:
                values[c] = None
            if values[c] is None or values[c] < 0:
                raise SpecError(f"{path}, line {line}: column {c} is {cell!r}, expected a "
                                "non-negative integer")
        episode = row[col["episode"]].strip()
        if not episode:
            raise SpecError(f"{path}, line {line}: column episode is empty, expected an id")
        episodes.setdefault(episode, []).append(
            (values["step"], values["state"], values["action"], line))
    if not episodes:
        raise SpecError(f"{path}: no rows after the header, expected one row per step")
    def order(episode):  # numeric ids in numeric order, others after them as strings
        try:
            return (0, int(episode), "")
        except ValueError:
            return (1, 0, episode)

    trajectories = []
    for episode, steps in sorted(episodes.items(), key=lambda item: order(item[0])):
        steps.sort()
        for expected, (step, _, _, line) in enumerate(steps):
            if step != expected:
                what = "repeats" if step < expected else "skips to"
                raise SpecError(f"{path}, line {line}: column step {what} {step} in episode "
                                f"{episode!r}, expected consecutive steps 0, 1, 2, ... "
                                f"(step {expected} next)")
        trajectories.append(([s[1] for s in steps], [s[2] for s in steps]))
    return Demonstrations.from_trajectories(trajectories)


def load_demos(path):
    """Demonstrations from ``.npz`` (:meth:`Demonstrations.save`) or ``.csv`` with columns
    ``episode, step, state, action`` (one row per step; steps 0, 1, ... in each episode; rows
    in any order; demonstrations ordered by episode id; other columns ignored)."""
    from bayesirl.core.demos import Demonstrations

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        return _load_csv(path)
    if path.suffix.lower() != ".npz":
        raise SpecError(f"{path}: unknown demonstrations format {path.suffix!r}, expected "
                        ".npz or .csv")
    try:
        return Demonstrations.load(path)
    except (TypeError, ValueError) as e:
        raise _prefix(str(path), e) from None


# ---------------------------------------------------------------------------- build
def fast_mode() -> bool:
    """True when ``BAYESIRL_FAST`` is set to anything but "", "0", "false" or "no"."""
    return os.environ.get("BAYESIRL_FAST", "").strip().lower() not in ("", "0", "false", "no")


class Built(NamedTuple):
    """What :func:`build` returns; unpacks as ``mdp, demos, reward_model, infer_kwargs``."""

    mdp: Any
    demos: Any
    reward_model: Any
    infer_kwargs: dict[str, Any]


def _build_environment(env: EnvironmentSpec):
    from bayesirl.core import envs

    options = dict(env.options)
    if env.file is not None:
        try:
            return load_mdp_npz(env.file, options.get("horizon"), options.get("discount"))
        except SpecError as e:
            raise _prefix("environment.file", e) from None
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
            return envs.from_gymnasium(gym_env, **options)
        return getattr(envs, env.name)(**options)
    except SpecError:
        raise
    except (TypeError, ValueError) as e:
        raise _prefix(f"environment ({env.name})", e) from None


def _build_demos(spec: Spec, mdp):
    from bayesirl.core.demos import rollouts
    from bayesirl.model.likelihood import action_log_probs

    d = spec.demonstrations
    if d.file is not None:
        try:
            demos = load_demos(d.file)
        except SpecError as e:
            raise _prefix("demonstrations.file", e) from None
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
    expert = d.expert or spec.likelihood.kind
    with torch.no_grad():
        policy = action_log_probs(mdp, mdp.reward, expert, d.rationality).exp()
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
        raise _prefix(f"reward ({r.model})", e) from None


def infer_kwargs(spec: Spec, n_demos: int | None = None, fast: bool | None = None) -> dict:
    """Keyword arguments of :func:`bayesirl.infer` from ``[likelihood]`` and ``[inference]``;
    ``fast`` (default: :func:`fast_mode`) shrinks the sample counts."""
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
    return kwargs


def build(spec: Spec, fast: bool | None = None) -> Built:
    """Build ``(mdp, demos, reward_model, infer_kwargs)``: ``infer(mdp, demos, reward_model,
    **infer_kwargs)`` runs the spec. Raises :class:`SpecError` for anything the spec got wrong
    (including values the builders reject)."""
    where = str(spec.source) if spec.source is not None else spec.name
    try:
        mdp = _build_environment(spec.environment)
        demos = _build_demos(spec, mdp)
        model = _build_reward(spec, mdp)
        kwargs = infer_kwargs(spec, demos.n, fast)
    except SpecError as e:
        raise _prefix(where, e) from None
    return Built(mdp, demos, model, kwargs)
