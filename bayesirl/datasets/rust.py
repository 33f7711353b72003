"""Rust (1987): the bus engine replacement data, as an MDP and demonstrations.

J. Rust, "Optimal replacement of GMC bus engines: an empirical model of Harold Zurcher",
Econometrica 55(5), 1987. Each month Harold Zurcher, superintendent of maintenance at the Madison
(Wisconsin) Metropolitan Bus Company, either kept a bus's engine or replaced it. Rust's model is
the soft-optimal (logit) expert of a discounted MDP, so a posterior over its two cost parameters
is exactly what bayesirl computes.

The MDP (:func:`rust_bus`)
--------------------------
- State ``x``: mileage accumulated since the last engine replacement, in bins of ``bin_size``
  miles, ``0..bins-1``; the top bin absorbs (it stands for "at least ``(bins - 1) * bin_size``
  miles").
- Actions: ``0`` keep, ``1`` replace (:data:`KEEP`, :data:`REPLACE`).
- Dynamics: mileage moves up ``j = 0, 1, 2`` bins a month with probabilities ``p_j``, the same
  in every state (Rust's ``theta_30, theta_31``); replacing resets ``x`` to bin 0, then it moves
  the same way. The first stage estimates ``p`` from the data (:func:`rust_bus_transitions`); the
  MDP uses its maximum-likelihood value, the observed frequencies.
- Reward (utility; the negative of Rust's costs): ``r(x, keep) = -0.001 * theta_11 * x`` and
  ``r(x, replace) = -RC`` (Rust's ``-RC - c(0)``, with ``c(0) = 0``). The MDP's features
  ``(S, 2, 2)`` are named ``("theta_11", "RC")``: ``phi(x, keep) = (-0.001 x, 0)``,
  ``phi(x, replace) = (0, -1)``, so a :class:`~bayesirl.LinearReward` with
  ``theta = (theta_11, RC)`` gives that reward, and positive ``theta`` are costs. ``x`` is the
  bin index, as in Rust's papers, so ``theta_11`` is the cost per bin of ``bin_size`` miles
  (times 1000): it scales with the bin size (Rust's Table X, with 2 571-mile bins, finds about
  half Table IX's value). ``RC`` is in the same utility units (the logit scale of the shocks).
- Discount ``0.9999`` per month (Rust's Table IX); the initial distribution is the empirical
  distribution of the buses' first observed bins.

Discretisation
--------------
The shipped data are already in 5 000-mile bins (Rust's), so only coarser bins are possible:
``bin_size`` must be a multiple of 5 000, and bin ``k`` of width ``m * 5000`` holds the 5 000-mile
bins ``k m .. k m + m - 1`` (``floor(x / m)``, :func:`~bayesirl.datasets.load_panel` with
``bin_width=m``). Finer bins would need the raw odometer readings, which are not shipped.

The data (``bayesirl/datasets/data/README.md`` states sources and licences)
---------------------------------------------------------------------------
Groups 1-4 (Rust's bus types; 104 buses). One row per bus and month with the first month of each
bus dropped, as in Rust's Table IX: group 4 has 37 buses and 4 292 bus-months (116 months each),
groups 1-3 together 3 864. Group 4 defaults to Rust's own discretisation (as processed by the
ruspy replication suite); groups 1-3 exist only in the econirl package's discretisation, which
``source="econirl"`` also uses for group 4. Each row carries ``usage``, the month's recorded
mileage increment (in 5 000-mile bins) into that row: for the first retained month it comes from
the dropped month, and Rust's data step codes the month after a replacement as the odometer's
increment (1 bin in all 33 of group 4's replacements) although the bin restarts at 0. Rust's first
stage counts these: 1 682 / 2 555 / 55 increments of 0 / 1 / 2 bins for group 4, ``p = (0.3919,
0.5953, 0.0128)`` as in his Table IX (``first_stage="recorded"``, the default). The state-based
alternative, ``first_stage="transitions"``, counts the panel's own consecutive ``(x, d, x')``
(from bin 0 after a replacement): 1 685 / 2 515 / 55 for group 4. econirl's ``usage`` is
state-based (its group 4: 1 710 / 2 527 / 55).
"""

from __future__ import annotations

import importlib.resources
import numbers
from collections.abc import Sequence

import numpy as np
import torch

from bayesirl._validation import ArgumentTypeError, check_choice, check_int, float_dtype
from bayesirl.core.demos import Demonstrations
from bayesirl.core.dynamics import DirichletTransitions, TransitionSupport, fit_transitions
from bayesirl.core.mdp import TabularMDP
from bayesirl.datasets.panel import Panel, load_panel, read_csv_columns

__all__ = ["COST_SCALE", "DATA_BIN_SIZE", "FEATURE_NAMES", "KEEP", "REPLACE", "rust_bus",
           "rust_bus_panel", "rust_bus_transitions"]

KEEP, REPLACE = 0, 1
FEATURE_NAMES = ("theta_11", "RC")
COST_SCALE = 0.001  # Rust's c(x) = 0.001 * theta_11 * x
DATA_BIN_SIZE = 5000  # miles per bin of the shipped data
_GROUPS = (1, 2, 3, 4)
_FILES = {"rust": "rust1987_group4.csv", "econirl": "rust1987_econirl.csv"}
_SOURCES = ("rust", "econirl")
_FIRST_STAGES = ("recorded", "transitions")


def _groups(groups) -> tuple[int, ...]:
    if isinstance(groups, numbers.Integral) and not isinstance(groups, bool):
        groups = (groups,)
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence) or not groups:
        raise ArgumentTypeError(f"groups must be a non-empty sequence of bus groups from "
                                f"{_GROUPS}, got {groups!r}")
    out = tuple(check_int(f"groups[{i}]", g, low=1, high=4) for i, g in enumerate(groups))
    if len(set(out)) != len(out):
        raise ValueError(f"groups is {groups!r}, expected distinct groups")
    return tuple(sorted(out))


def _factor(bin_size) -> int:
    """``bin_size`` as a multiple of the shipped 5 000-mile bins."""
    b = check_int("bin_size", bin_size)
    if b % DATA_BIN_SIZE:
        raise ValueError(f"bin_size is {b}, expected a multiple of {DATA_BIN_SIZE}: the shipped "
                         f"data are in {DATA_BIN_SIZE}-mile bins, so only coarser multiples can "
                         "be formed (finer bins need the raw odometer readings, not shipped)")
    return b // DATA_BIN_SIZE


def _table(groups: tuple[int, ...], source: str) -> dict[str, np.ndarray]:
    """The rows of ``groups`` from the shipped files, as columns."""
    data = importlib.resources.files("bayesirl.datasets").joinpath("data")
    parts = []
    for name in sorted({_FILES["rust" if (source == "rust" and g == 4) else "econirl"]
                        for g in groups}):
        with importlib.resources.as_file(data.joinpath(name)) as path:
            cols = read_csv_columns(path)
        rows = np.isin(cols["group"], groups)
        if source == "rust" and name == _FILES["econirl"]:
            rows &= cols["group"] != 4
        parts.append({k: v[rows] for k, v in cols.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def rust_bus_panel(groups=(4,), bin_size: int = DATA_BIN_SIZE, source: str = "rust") -> Panel:
    """Rust's bus-month panel, loaded with :func:`~bayesirl.datasets.load_panel`.

    Args:
        groups: bus groups from 1-4 (a sequence, or one int).
        bin_size: miles per state bin, a multiple of 5 000 (see the module docstring).
        source: ``"rust"`` (Rust's discretisation of group 4; groups 1-3 from econirl) or
            ``"econirl"`` (econirl's for every group).

    Returns:
        a :class:`~bayesirl.datasets.Panel` with ids ``(group, bus)``, states in bins of
        ``bin_size`` miles, actions 0 keep / 1 replace, and ``extra`` columns ``usage`` (the
        recorded increment into each month, in 5 000-mile bins) and ``state`` (the 5 000-mile
        bin), one trajectory per bus.
    """
    groups = _groups(groups)
    m = _factor(bin_size)
    check_choice("source", source, _SOURCES)
    return load_panel(_table(groups, source), id=("group", "bus"), period="period",
                      state="state", action="decision", bin_width=m if m > 1 else None,
                      keep=("usage", "state", "group"))


def _recorded_increments(panel: Panel, m: int) -> np.ndarray:
    """Each row's recorded increment re-expressed in bins of ``m`` 5 000-mile bins.

    A month starts at the previous row's 5 000-mile bin (bin 0 after a replacement), or, for a
    bus's first row, at its bin minus its recorded increment (the dropped month's bin); it ends
    ``usage`` bins further. The coarse increment is ``(start + usage) // m - start // m``, the
    recorded one when ``m = 1``.
    """
    fine = panel.extra["state"].astype(np.int64)
    usage = panel.extra["usage"].astype(np.int64)
    actions = panel.actions.numpy()
    has_prev = np.concatenate([[False], panel.has_next.numpy()[:-1]])
    prev = np.concatenate([[0], np.where(actions[:-1] == REPLACE, 0, fine[:-1])])
    start = np.where(has_prev, prev, fine - usage)
    if (usage < 0).any() or (start < 0).any():
        i = int(np.flatnonzero((usage < 0) | (start < 0))[0])
        raise ValueError(f"bus {panel.id_labels[int(panel.ids[i])]}, period "
                         f"{int(panel.periods[i])}: recorded increment {usage[i]} into bin "
                         f"{fine[i]} is inconsistent, expected 0 <= increment <= bin")
    return (start + usage) // m - start // m


def rust_bus_transitions(groups=(4,), bins: int = 90, bin_size: int = DATA_BIN_SIZE,
                         source: str = "rust", first_stage: str = "recorded", prior=1.0,
                         increments: int | None = None) -> DirichletTransitions:
    """Rust's first stage: a Dirichlet posterior over the monthly mileage increments.

    Args:
        groups, bin_size, source: as for :func:`rust_bus_panel`.
        bins: number of mileage bins S (the top bin absorbs).
        first_stage: ``"recorded"`` counts the data's recorded monthly increments (Rust's first
            stage, which reproduces his Table IX), ``"transitions"`` the panel's consecutive
            ``(x, d, x')`` (see the module docstring).
        prior: Dirichlet concentration over the increments (1: uniform, so that
            :meth:`~bayesirl.core.dynamics.DirichletTransitions.mode` is the MLE).
        increments: number of increments J (moves ``0..J-1`` bins); default the largest
            observed increment + 1 (3 for Rust's bins).

    Returns:
        a :class:`~bayesirl.core.dynamics.DirichletTransitions` over
        ``TransitionSupport.from_offsets(bins, 2, range(J), origin=(None, 0))``: one Dirichlet
        (G = 1) shared by every state and both actions.
    """
    check_choice("first_stage", first_stage, _FIRST_STAGES)
    panel = rust_bus_panel(groups, bin_size, source)
    return _first_stage(panel, _bins(bins, panel, bin_size), _factor(bin_size), first_stage,
                        prior, increments)


def _first_stage(panel: Panel, S: int, m: int, first_stage: str, prior,
                 increments) -> DirichletTransitions:
    """:func:`rust_bus_transitions` on a loaded panel with ``S`` bins of ``m`` data bins."""
    if first_stage == "recorded":
        inc = _recorded_increments(panel, m)
    else:
        s, a, s1 = (t.numpy() for t in panel.transitions())
        inc = s1 - np.where(a == REPLACE, 0, s)
    J = int(inc.max()) + 1 if increments is None else check_int("increments", increments)
    support = TransitionSupport.from_offsets(S, 2, np.arange(J), origin=(None, 0))
    if first_stage == "recorded":
        if inc.max() >= J:
            raise ValueError(f"increments is {J}, but the data record a move of "
                             f"{int(inc.max())} bins, expected increments > {int(inc.max())}")
        counts = np.bincount(inc, minlength=J)[None]
        return DirichletTransitions.from_counts(support, counts, prior)
    return fit_transitions(support, *panel.transitions(), prior=prior)


def _bins(bins, panel: Panel, bin_size: int) -> int:
    S = check_int("bins", bins, low=2)
    top = int(panel.states.max())
    if top >= S:
        i = int(torch.argmax(panel.states))
        raise ValueError(f"bins is {S}, but bus {panel.id_labels[int(panel.ids[i])]} reaches "
                         f"bin {top} ({top * bin_size}+ miles) in period "
                         f"{int(panel.periods[i])}, expected bins >= {top + 1}")
    return S


def rust_bus(groups=(4,), bins: int = 90, bin_size: int = DATA_BIN_SIZE,
             discount: float = 0.9999, dtype: torch.dtype = torch.float64,
             source: str = "rust", first_stage: str = "recorded"
             ) -> tuple[TabularMDP, Demonstrations]:
    """Rust's bus engine replacement problem: the MDP and one demonstration per bus.

    Args:
        groups: bus groups from 1-4 (default Rust's group 4, 37 GMC A5308 buses).
        bins: number of mileage bins S (Rust: 90).
        bin_size: miles per bin, a multiple of 5 000 (Rust: 5 000).
        discount: the monthly discount factor (Rust's Table IX: 0.9999).
        dtype: the MDP's float dtype (float64: discounts near 1 need it).
        source, first_stage: see :func:`rust_bus_panel` and :func:`rust_bus_transitions`.

    Returns:
        ``(mdp, demos)``: a discounted :class:`~bayesirl.TabularMDP` with ``S = bins`` states,
        2 actions (keep, replace), the first stage's maximum-likelihood transitions and features
        ``(S, 2, 2)`` named ``("theta_11", "RC")`` (the module docstring gives the reward
        convention and units); and :class:`~bayesirl.Demonstrations`, one per bus (group 4:
        37 of 116 months, 4 292 decisions), checked against the MDP.
    """
    dtype = float_dtype(dtype)
    check_choice("first_stage", first_stage, _FIRST_STAGES)
    panel = rust_bus_panel(groups, bin_size, source)
    dyn = _first_stage(panel, _bins(bins, panel, bin_size), _factor(bin_size), first_stage,
                       1.0, None)
    demos = panel.to_demonstrations()
    S = dyn.support.n_states
    x = torch.arange(S, dtype=dtype)
    phi = torch.zeros(S, 2, 2, dtype=dtype)
    phi[:, KEEP, 0] = -COST_SCALE * x
    phi[:, REPLACE, 1] = -1.0
    initial = torch.bincount(demos.states[:, 0], minlength=S).to(dtype) / demos.n
    names = tuple(f"{s * bin_size}-{(s + 1) * bin_size}" for s in range(S - 1))
    mdp = dyn.to_mdp("mode", discount=discount, initial=initial, features=phi, dtype=dtype,
                     feature_names=FEATURE_NAMES, action_names=("keep", "replace"),
                     state_names=names + (f"{(S - 1) * bin_size}+",))
    return mdp, demos.validate(mdp)
