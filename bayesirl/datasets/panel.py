"""Panel data (id, period, state, action) as transitions and demonstrations.

Economists and clinicians record decisions as a panel: one row per unit (a bus, a patient) and
period, with the unit's state and the action taken. :func:`load_panel` reads such a table (a CSV
file, or columns as arrays) into a :class:`Panel`:

- rows are sorted by ``(id, period)``; an id may be one column or several (a composite key);
- a continuous state column is binned: ``edges`` gives bins ``[edges[i], edges[i + 1])``
  (values outside ``[edges[0], edges[-1])`` are an error; pass ``np.inf`` as the last edge for
  an open top bin), ``bin_width=w`` gives bins ``[k w, (k + 1) w)``, ``k = floor(x / w)``, for
  values ``x >= 0``;
- consecutive periods of an id give the transitions ``(s_t, a_t, s_{t+1})``; the last row of
  each trajectory has no next state (``next_states`` is -1 there);
- a gap in an id's periods (``t`` followed by ``t + 2`` or later) is an error by default; with
  ``gaps="split"`` the trajectory ends before the gap and a new one starts after it, and no
  transition crosses the gap.

:meth:`Panel.to_demonstrations` gives one demonstration per trajectory (one per id when there is
no split) as :class:`~bayesirl.Demonstrations`; :meth:`Panel.transitions` gives the observed
triples for :func:`~bayesirl.core.dynamics.fit_transitions`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from bayesirl._validation import ArgumentTypeError, check_choice, check_number
from bayesirl.core.demos import Demonstrations

__all__ = ["CsvColumns", "Panel", "load_panel", "read_csv_columns"]


@dataclass(frozen=True, eq=False)
class Panel:
    """A panel sorted by ``(id, period)``; every per-row tensor has shape ``(N,)``.

    Attributes:
        ids: long index of each row's id into :attr:`id_labels`.
        periods: long period of each row.
        states: long state index (after binning, if any).
        actions: long action index.
        next_states: long state of the next row of the same trajectory, -1 where none.
        trajectories: long trajectory index ``0..n_trajectories-1``, non-decreasing; equal to
            ``ids`` unless ``gaps="split"`` cut an id's periods in several runs.
        id_labels: the distinct ids, in sorted order (tuples for a composite id).
        edges: the bin edges of the state column when it was binned with ``edges``, else None.
        extra: other columns carried along (``keep=``), as NumPy arrays in the rows' order.

    Built by :func:`load_panel`, which validates the input; a Panel trusts its fields.
    """

    ids: torch.Tensor
    periods: torch.Tensor
    states: torch.Tensor
    actions: torch.Tensor
    next_states: torch.Tensor
    trajectories: torch.Tensor
    id_labels: tuple
    edges: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.states.shape[0]

    @property
    def n_ids(self) -> int:
        return len(self.id_labels)

    @property
    def n_trajectories(self) -> int:
        return int(self.trajectories[-1]) + 1

    @property
    def has_next(self) -> torch.Tensor:
        """``(N,)`` bool: the row has a next row in its trajectory."""
        return self.next_states >= 0

    @property
    def n_states(self) -> int:
        """States the data need: ``len(edges) - 1`` when binned with edges, else the largest
        state + 1."""
        if self.edges is not None:
            return len(self.edges) - 1
        return int(self.states.max()) + 1

    def transitions(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The observed ``(states, actions, next_states)``, each ``(M,)``, M = rows with a
        next row (N minus one per trajectory)."""
        m = self.has_next
        return self.states[m], self.actions[m], self.next_states[m]

    def to_demonstrations(self) -> Demonstrations:
        """One demonstration per trajectory, padded to the longest: ``states, actions``
        ``(n_trajectories, T)`` with their lengths. ``final_states`` is None: the state after
        a trajectory's last decision is not in the panel."""
        traj = self.trajectories
        n = self.n_trajectories
        lengths = torch.bincount(traj, minlength=n)
        start = torch.cumsum(lengths, 0) - lengths
        pos = torch.arange(len(self)) - start[traj]
        T = int(lengths.max())
        states = torch.zeros(n, T, dtype=torch.long)
        actions = torch.zeros(n, T, dtype=torch.long)
        states[traj, pos] = self.states
        actions[traj, pos] = self.actions
        return Demonstrations.from_arrays(states, actions, lengths)

    def __repr__(self) -> str:
        return (f"Panel(rows={len(self)}, ids={self.n_ids}, trajectories={self.n_trajectories}, "
                f"transitions={int(self.has_next.sum())}, states={self.n_states}, "
                f"actions={int(self.actions.max()) + 1})")


# ---------------------------------------------------------------------------- reading


class CsvColumns(dict):
    """``{column name: (N,) array}`` read from a CSV file; ``lines``: ``(N,)`` the file's line
    number (1-based) of each data row, so that messages name the line even after blank ones."""

    lines: np.ndarray


def read_csv_columns(path) -> CsvColumns:
    """A CSV file with a header row as ``{column name: (N,) array}`` (a :class:`CsvColumns`).

    Columns whose every value parses as an integer become int64, else float64 where every value
    parses as a number, else strings. Blank lines are skipped. Raises ``ValueError`` naming the
    file and line when a row has the wrong number of fields, when two columns share a name, or
    when the file has no header or no rows, or is not a UTF-8 text file (a byte-order mark, as
    Excel writes, is skipped); a missing file raises ``FileNotFoundError``.
    """
    where = repr(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{where} is a directory, expected a CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            numbered = [(k + 1, r) for k, r in enumerate(csv.reader(f)) if r]  # no blank lines
    except UnicodeDecodeError as e:
        raise ValueError(f"{where} is not a UTF-8 text file (byte {e.start} is "
                         f"{e.object[e.start:e.start + 1]!r}), expected a CSV file") from None
    except csv.Error as e:
        raise ValueError(f"{where} is not a readable CSV file ({e})") from None
    if not numbered:
        raise ValueError(f"{where} is empty, expected a header row and data rows")
    header = [h.strip() for h in numbered[0][1]]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise ValueError(f"{where} names the column(s) {twice} more than once in its header; "
                         "a column is read by its name")
    if len(numbered) < 2:
        raise ValueError(f"{where} has a header but no data rows")
    lines, rows = (np.array([k for k, _ in numbered[1:]]), [r for _, r in numbered[1:]])
    for line, r in zip(lines, rows, strict=True):
        if len(r) != len(header):
            raise ValueError(f"{where} line {line} has {len(r)} fields, expected "
                             f"{len(header)} like the header {header}")
    cols = CsvColumns()
    cols.lines = lines
    for j, name in enumerate(header):
        values = np.array([r[j].strip() for r in rows])
        for kind in (np.int64, np.float64):
            try:
                cols[name] = values.astype(kind)
                break
            except (ValueError, OverflowError):  # an integer beyond int64 is a float
                continue
        else:
            cols[name] = values
    return cols


def _columns(data) -> tuple[dict, str]:
    """``data`` (a path, a mapping or a DataFrame of columns) as a column getter and a name."""
    if isinstance(data, (str, os.PathLike)):
        return read_csv_columns(data), repr(os.fspath(data))
    if hasattr(data, "keys") and hasattr(data, "__getitem__"):
        return {str(k): data[k] for k in data.keys()}, "the data"
    raise ArgumentTypeError(f"data must be a CSV path or a mapping of column name to array "
                            f"(a dict or a pandas DataFrame), got {type(data).__name__}")


def _column(cols: dict, where: str, arg: str, name: str, n: int | None) -> np.ndarray:
    if not isinstance(name, str):
        raise ArgumentTypeError(f"{arg} must be a column name, got {name!r}")
    if name not in cols:
        raise ValueError(f"{arg}={name!r}: {where} has no column {name!r}; its columns are "
                         f"{sorted(cols)}")
    values = np.asarray(cols[name])
    if values.ndim != 1:
        raise ValueError(f"{arg}={name!r}: column {name!r} must be 1-D, got shape "
                         f"{values.shape}")
    if n is not None and len(values) != n:
        raise ValueError(f"{arg}={name!r}: column {name!r} has {len(values)} rows, expected {n} "
                         "like the other columns")
    return values


def _show(v) -> str:
    """A value as messages print it: ``0.5``, ``'x'`` (NumPy scalars as Python ones)."""
    return repr(v.item() if isinstance(v, np.generic) else v)


def _first_row(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def _rows(where: str, cols):
    """How messages name data row i: ``row i`` (0-based), plus its line in a CSV file."""
    lines = getattr(cols, "lines", None)
    if lines is not None:
        return lambda i: f"row {i} (line {lines[i]} of {where})"
    return lambda i: f"row {i}"


def _integers(values: np.ndarray, arg: str, name: str, low: int | None, at) -> np.ndarray:
    """A column as int64, naming the first row that is not an integer (>= low)."""
    kind = values.dtype.kind
    if kind in "iu":
        out = values.astype(np.int64)
    elif kind == "f":
        with np.errstate(invalid="ignore"):  # nan compares False
            bad = (~np.isfinite(values) | (values != np.round(values))
                   | (np.abs(values) >= 2.0 ** 63))  # beyond int64 a cast wraps silently
        if bad.any():
            i = _first_row(bad)
            raise ValueError(f"{arg}={name!r}: {at(i)} is {_show(values[i])}, expected an "
                             "integer (within int64)")
        out = values.astype(np.int64)
    elif kind == "b":
        raise ArgumentTypeError(f"{arg}={name!r}: column {name!r} is boolean, expected "
                                "integers")
    else:
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            try:
                out[i] = int(v)
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"{arg}={name!r}: {at(i)} is {_show(v)}, expected an "
                                 "integer") from None
    if low is not None and (out < low).any():
        i = _first_row(out < low)
        raise ValueError(f"{arg}={name!r}: {at(i)} is {out[i]}, expected an integer >= {low}")
    return out


def _reals(values: np.ndarray, arg: str, name: str, at) -> np.ndarray:
    try:
        out = values.astype(np.float64)
    except (TypeError, ValueError):
        for i, v in enumerate(values):
            try:
                float(v)
            except (TypeError, ValueError):
                raise ValueError(f"{arg}={name!r}: {at(i)} is {_show(v)}, expected a "
                                 "number") from None
        raise
    if not np.isfinite(out).all():
        i = _first_row(~np.isfinite(out))
        raise ValueError(f"{arg}={name!r}: {at(i)} is {out[i]}, expected a finite number")
    return out


def _bin(x: np.ndarray, name: str, edges, bin_width, at) -> tuple[np.ndarray, np.ndarray | None]:
    """Continuous states as bin indices (see the module docstring)."""
    if edges is not None:
        try:
            e = np.asarray(edges, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ArgumentTypeError(f"edges must be numbers (bin edges), got {edges!r}") from err
        if e.ndim != 1 or len(e) < 2 or np.isnan(e).any() or not (np.diff(e) > 0).all():
            raise ValueError(f"edges must be an increasing 1-D array of at least 2 bin edges, "
                             f"got {edges!r}")
        s = np.searchsorted(e, x, side="right") - 1
        bad = (s < 0) | (s >= len(e) - 1)
        if bad.any():
            i = _first_row(bad)
            raise ValueError(f"state={name!r}: {at(i)} is {x[i]}, outside the bins "
                             f"[{e[0]:g}, {e[-1]:g}) of edges; extend edges (np.inf as the "
                             "last edge makes the top bin open)")
        return s.astype(np.int64), e
    w = check_number("bin_width", bin_width, 0.0, low_open=True)
    if (x < 0).any():
        i = _first_row(x < 0)
        raise ValueError(f"state={name!r}: {at(i)} is {x[i]}, expected a value >= 0 for "
                         "bin_width binning (use edges for other ranges)")
    return np.floor(x / w).astype(np.int64), None


def load_panel(data, *, id="id", period="period", state="state", action="action",
               edges=None, bin_width=None, gaps: str = "error", keep=()) -> Panel:
    """Read panel data (one row per id and period) into a :class:`Panel`.

    Args:
        data: a CSV file path (header row, comma-separated), or columns: a mapping of column
            name to 1-D array (a dict, or a pandas DataFrame).
        id: the id column, or a sequence of columns forming a composite id.
        period: the integer period column; periods of an id must be distinct.
        state: the state column: integer state indices >= 0, or values binned with ``edges``
            or ``bin_width`` (one of them at most).
        action: the integer action column (indices >= 0).
        edges: increasing bin edges; state ``i`` is ``[edges[i], edges[i + 1])``.
        bin_width: bins ``[k w, (k + 1) w)`` from 0, state ``k = floor(x / w)``.
        gaps: ``"error"`` (default) or ``"split"``: what a gap in an id's periods does.
        keep: other columns to carry along in :attr:`Panel.extra` (sorted like the rows).

    Raises ``ValueError`` naming the argument and column (a missing column lists those there
    are), the offending row (0-based, in the input's order) and what was expected.
    """
    check_choice("gaps", gaps, ("error", "split"))
    if edges is not None and bin_width is not None:
        raise ValueError("give edges or bin_width, not both")
    cols, where = _columns(data)
    id_names = (id,) if isinstance(id, str) else tuple(id) if isinstance(id, Sequence) else (id,)
    if not id_names:
        raise ValueError("id is empty, expected a column name or a sequence of them")
    first = _column(cols, where, "period", period, None)
    n = len(first)
    if n == 0:
        raise ValueError(f"{where} has no rows, expected at least one")
    at = _rows(where, cols)
    periods = _integers(first, "period", period, None, at)
    id_cols = [_column(cols, where, "id", c, n) for c in id_names]
    raw_state = _column(cols, where, "state", state, n)
    if edges is None and bin_width is None:
        states, used_edges = _integers(raw_state, "state", state, 0, at), None
    else:
        states, used_edges = _bin(_reals(raw_state, "state", state, at), state, edges,
                                  bin_width, at)
    actions = _integers(_column(cols, where, "action", action, n), "action", action, 0, at)
    if isinstance(keep, str):
        keep = (keep,)
    elif keep is None:
        keep = ()
    elif not isinstance(keep, Sequence):
        raise ArgumentTypeError(f"keep must be a column name or a sequence of them, got "
                                f"{type(keep).__name__}")
    extra_raw = {k: _column(cols, where, "keep", k, n) for k in keep}

    # id codes: each column's codes, combined lexicographically for a composite id
    codes = []
    for c, name in zip(id_cols, id_names, strict=True):
        if c.dtype.kind == "f" and not np.isfinite(c).all():
            i = _first_row(~np.isfinite(c))
            raise ValueError(f"id={name!r}: {at(i)} is {c[i]}, expected an id (not missing)")
        try:
            _, inv = np.unique(c, return_inverse=True)
        except TypeError as e:
            raise ValueError(f"id={name!r}: its values cannot be ordered (mixed types?)") from e
        codes.append(inv.reshape(-1))
    if len(codes) == 1:
        unit = codes[0]
        labels = tuple(v.item() if hasattr(v, "item") else v for v in np.unique(id_cols[0]))
    else:
        stacked = np.stack(codes, 1)
        _, unit = np.unique(stacked, axis=0, return_inverse=True)
        unit = unit.reshape(-1)
        firsts = np.unique(unit, return_index=True)[1]
        labels = tuple(tuple(c[i].item() if hasattr(c[i], "item") else c[i] for c in id_cols)
                       for i in firsts)

    order = np.lexsort((periods, unit))
    unit, periods, states, actions = unit[order], periods[order], states[order], actions[order]
    same = unit[1:] == unit[:-1]
    step = periods[1:] - periods[:-1]
    dup = same & (step == 0)
    if dup.any():
        i = _first_row(dup)
        raise ValueError(f"id {labels[unit[i]]!r} has two rows for period {periods[i]} ("
                         f"{at(order[i])} and {at(order[i + 1])}), expected one row per id "
                         "and period")
    gap = same & (step > 1)
    if gap.any() and gaps == "error":
        i = _first_row(gap)
        raise ValueError(f"id {labels[unit[i]]!r}: period {periods[i]} is followed by period "
                         f"{periods[i + 1]} ({at(order[i])} and {at(order[i + 1])}), a gap of "
                         f"{step[i] - 1}; pass gaps='split' to start a new trajectory there")
    linked = same & (step == 1)  # row i -> row i + 1 is a transition
    traj = np.concatenate([[0], np.cumsum(~linked)])
    next_states = np.full(n, -1, dtype=np.int64)
    next_states[:-1] = np.where(linked, states[1:], -1)
    return Panel(ids=_long(unit), periods=_long(periods), states=_long(states),
                 actions=_long(actions), next_states=_long(next_states),
                 trajectories=_long(traj), id_labels=labels, edges=used_edges,
                 extra={k: v[order] for k, v in extra_raw.items()})


def _long(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
