"""File loaders of the command line: an MDP from ``.npz``, demonstrations from ``.npz`` or ``.csv``.

No file read here can run code: NumPy archives load with ``allow_pickle=False`` and CSV files are
text. Every problem is a :class:`~bayesirl.cli.spec.SpecError` naming the file, and the array,
line or column and what was expected.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import torch

from bayesirl.cli.spec import SpecError

__all__ = ["load_demos", "load_mdp_npz"]

_MDP_ARRAYS = ("transitions", "features", "initial", "horizon", "discount", "reward", "shape",
               "feature_names", "state_names", "action_names")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive at ``path`` (read eagerly, no pickles)."""
    if not path.is_file():
        raise SpecError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):  # a .npy (an array) or a text file
                raise ValueError(f"it holds a single {type(data).__name__}, not an archive of "
                                 "named arrays (a .npy file renamed .npz?)")
            with data:
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


def _real_array(path, arrays, key) -> np.ndarray:
    """``arrays[key]`` if it holds real numbers (integers, floats or booleans); a SpecError
    naming the file and the array otherwise (strings, complex numbers, dates)."""
    value = arrays[key]
    if not (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)
            or value.dtype == np.bool_):
        raise SpecError(f"{path}: array {key} has dtype {value.dtype}, expected real numbers")
    return value


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
            kwargs[key] = torch.as_tensor(_real_array(path, arrays, key),
                                          dtype=torch.get_default_dtype())
    if "shape" in arrays:
        shape = _real_array(path, arrays, "shape")
        if shape.ndim != 1 or not np.all(np.isfinite(shape)) or not np.all(
                shape == np.round(shape)):
            raise SpecError(f"{path}: array shape is {shape.tolist()!r}, expected two whole "
                            "numbers (rows, cols)")
        kwargs["shape"] = tuple(int(x) for x in shape)
    for key in ("feature_names", "state_names", "action_names"):
        if key in arrays:
            kwargs[key] = tuple(str(x) for x in np.ravel(arrays[key]))
    try:
        P = torch.as_tensor(_real_array(path, arrays, "transitions"),
                            dtype=torch.get_default_dtype())
        return TabularMDP.from_dense(P, **kwargs)
    except (TypeError, ValueError) as e:
        raise SpecError.at(str(path), e) from None


_CSV_COLUMNS = ("episode", "step", "state", "action")


def _load_csv(path: Path):
    from bayesirl.core.demos import Demonstrations

    try:
        # utf-8-sig: spreadsheet exports begin with a byte-order mark, which is not a header
        with open(path, newline="", encoding="utf-8-sig") as f:
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
    for c in _CSV_COLUMNS:
        where = [i + 1 for i, h in enumerate(header) if h == c]
        if len(where) > 1:
            raise SpecError(f"{path}: column {c!r} appears {len(where)} times in the header "
                            f"(columns {', '.join(map(str, where))} of {','.join(header)!r}), "
                            "expected it once")
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
        raise SpecError.at(str(path), e) from None
