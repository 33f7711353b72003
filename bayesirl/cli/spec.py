"""Problem specifications: the schema of a TOML file and its validation into dataclasses.

A spec has six tables (all but ``[environment]`` optional) and two optional top-level strings,
``name`` (default: the file's stem; a plain file name, since the default output folder is
``bayesirl-output/<name>``) and ``description``::

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
the offending value and what is allowed. The choices of ``likelihood.kind`` and
``inference.method``, ``guide`` and ``space`` are those of :mod:`bayesirl.model.likelihood` and
:mod:`bayesirl.inference`, read from there. Loading the files a spec names is
:mod:`bayesirl.cli.io`; building the problem is :mod:`bayesirl.cli.build`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro.distributions as dist
import torch

from bayesirl.inference.facade import GUIDES, METHODS, SEED_MAX, SPACES
from bayesirl.model.likelihood import LIKELIHOODS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package
    import tomli as tomllib

__all__ = [
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
    "load_spec",
    "parse_spec",
]


class SpecError(ValueError):
    """A problem specification (or a file it names) is invalid; the message says where."""

    @classmethod
    def at(cls, where: str, error: Exception) -> SpecError:
        """``error``'s message on one line, prefixed with ``where`` (a file, a table)."""
        return cls(f"{where}: " + str(error).replace("\n", " "))


# ---------------------------------------------------------------------------- value checks
def _show(value) -> str:
    if isinstance(value, dict):
        return "a table {" + ", ".join(sorted(value)) + "}"
    if isinstance(value, Path):
        return repr(str(value))
    if isinstance(value, int) and value.bit_length() > 64:  # no str(): 4300 digits raise
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    return repr(value)


def _fail(where: str, value, expected: str):
    raise SpecError(f"{where} is {_show(value)}, expected {expected}")


#: the largest integer a spec key takes: TOML's integers are 64-bit (Python's parser reads
#: longer ones, which torch and NumPy cannot hold)
INT_MAX = 2 ** 63 - 1


def _int(low: int | None = None, high: int = INT_MAX):
    if low is None:
        what = f"an integer <= {high}"
    else:
        what = f"an integer >= {low}" if high == INT_MAX else f"an integer in [{low}, {high}]"

    def check(where, value):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, value, what)
        if (low is not None and value < low) or value > high or value < -INT_MAX - 1:
            _fail(where, value, what + (" (a 64-bit integer)" if value > high == INT_MAX
                                        else ""))
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
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(where, value, what)
        try:
            number = float(value)  # an integer of 400 digits overflows
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            _fail(where, value, what)
        if low is not None and (value < low or (low_open and value == low)):
            _fail(where, value, what)
        if high is not None and (value > high or (high_open and value == high)):
            _fail(where, value, what)
        return number
    return check


def _bool(where, value):
    if not isinstance(value, bool):
        _fail(where, value, "true or false")
    return value


def _str(where, value):
    if not isinstance(value, str) or not value:
        _fail(where, value, "a non-empty string")
    return value


def _plain_name(where, value):
    """A name usable as one folder name: ``bayesirl-output/<name>`` stays in bayesirl-output."""
    _str(where, value)
    if ("/" in value or "\\" in value or "\0" in value or value in (".", "..")
            or value != value.strip() or Path(value).is_absolute()):
        _fail(where, value, "a plain file name (no '/' or '\\', not '.' or '..', no leading "
                            "or trailing spaces), e.g. \"gridworld\"")
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
_INFERENCE_SEED = _int(0, SEED_MAX)
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
    # a data set shipped with the package: it gives the MDP and the demonstrations
    "rust_bus": {"groups": _int_list, "bins": _int(2), "bin_size": _int(5000),
                 "discount": _DISCOUNT, "source": _choice("rust", "econirl"),
                 "first_stage": _choice("recorded", "transitions")},
}
#: environments that are data sets: ``bayesirl.datasets.<name>(**options)`` returns
#: ``(mdp, demos)``, so a spec naming one has no ``[demonstrations]`` table
DATASETS = ("rust_bus",)
_ENV_FILE_KEYS = {"file": _path, "horizon": _HORIZON, "discount": _DISCOUNT}
REWARD_MODELS: dict[str, dict[str, Any]] = {
    "linear": {"prior": _prior},
    "tabular": {"prior": _prior, "per_action": _bool},
    "gp": {"lengthscale": _positive_or_prior, "variance": _positive_or_prior,
           "jitter": _POSITIVE, "inputs": _choice("coords", "features")},
    "neural": {"hidden": _int_list, "prior_scale": _POSITIVE},
}


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
    """``[inference]``: the arguments of :func:`bayesirl.infer` (None: infer's default, e.g.
    ``parallel`` and ``dense_mass`` chosen from the problem). Booleans are TOML's ``true`` and
    ``false`` only: a string like ``"no"`` is an error, not a truthy value."""

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
    dense_mass: bool | None = None
    parallel: bool | None = None


_INFERENCE_SCHEMA = {
    "method": _choice(*METHODS), "num_samples": _int(1), "warmup": _int(0),
    "num_chains": _int(1), "seed": _INFERENCE_SEED, "guide": _choice(*GUIDES), "steps": _int(1),
    "lr": _POSITIVE, "lr_decay": _real(0.0, 1.0, low_open=True), "subsample_size": _int(1),
    "target_accept": _real(0.0, 1.0, low_open=True, high_open=True),
    "max_tree_depth": _int(1), "num_steps": _int(1), "space": _choice(*SPACES),
    "dense_mass": _bool, "parallel": _bool,
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
    #: the command line's overrides of the spec ``{"inference.method": "svi", ...}``
    #: (:func:`apply_overrides`): ``text`` is the spec as written, without them
    overrides: dict[str, Any] = field(default_factory=dict)


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
    allowed = {"name": _plain_name, "description": _str, **{t: _table for t in _TABLES}}
    for key, value in data.items():
        if key not in allowed:
            raise SpecError(f"{key} is not a known top-level key or table (value "
                            f"{_show(value)}); allowed: {', '.join(allowed)}")
        if key in _TABLES and not isinstance(value, dict):
            _fail(key, value, f"a table [{key}]")
        if key in ("name", "description"):
            allowed[key](key, value)
    if "environment" not in data:
        raise SpecError("[environment] is missing, expected a table with name = \"gridworld\" "
                        f"(or {', '.join(list(ENVIRONMENTS)[1:])}) or file = \"mdp.npz\"")
    inference = InferenceSpec(**_check_keys("inference", data.get("inference", {}),
                                            _INFERENCE_SCHEMA))
    return Spec(name=_plain_name("name", data.get("name", name)),
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
    except (tomllib.TOMLDecodeError, ValueError) as e:  # ValueError: an integer > 4300 digits
        raise SpecError(f"{path}: invalid TOML: {e}") from None
    try:
        return parse_spec(data, path.resolve().parent, path.stem, text, path)
    except SpecError as e:
        raise SpecError.at(str(path), e) from None


def apply_overrides(spec: Spec, method: str | None = None, num_samples: int | None = None,
                    seed: int | None = None) -> Spec:
    """A copy of ``spec`` with command-line overrides of ``[inference]`` (None keeps),
    recorded in its ``overrides`` (the report lists them beside the spec's text). Checked as
    the spec's keys are; an error names the option (``--seed``)."""
    changes = {"method": method, "num_samples": num_samples, "seed": seed}
    changes = {k: _INFERENCE_SCHEMA[k]("--" + k.replace("_", "-"), v)
               for k, v in changes.items() if v is not None}
    return dataclasses.replace(
        spec, inference=dataclasses.replace(spec.inference, **changes),
        overrides={**spec.overrides, **{f"inference.{k}": v for k, v in changes.items()}})
