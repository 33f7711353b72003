"""The one place that knows which ArviZ is installed.

ArviZ 0.x (Python >= 3.10) works on ``arviz.InferenceData``; ArviZ >= 1.0 (Python >= 3.12) is a
rewrite on arviz-base / arviz-stats / arviz-plots that works on ``xarray.DataTree``. Both have
the groups as attributes (``data.posterior``, ``data.log_likelihood``, ...) whose variables,
``data_vars``, ``coords`` and ``attrs`` behave alike, and ``az.summary``, ``az.rhat``, ``az.ess``,
``az.mcse`` and ``az.loo`` take either. What differs, and is bridged here:

- ``az.from_dict``: keyword per group on 0.x, one nested ``{group: {var: array}}`` on 1.x;
- listing the groups: ``InferenceData.groups()`` versus ``DataTree.children``;
- ``az.bfmi``: an array on 0.x, a tree with an ``energy`` variable on 1.x;
- reading netCDF: ``az.from_netcdf`` versus ``xarray.open_datatree``;
- plots: ArviZ 1.x's plots return a ``PlotCollection`` and take no axes; ``plot`` lays them
  out on given axes by handing arviz_plots' grid maker the axes (``plot_trace`` is the trace
  alone there; ``plot_trace_dist`` is 0.x's density-and-trace).
"""

from __future__ import annotations

import contextlib
import threading
import warnings

import numpy as np

with warnings.catch_warnings():  # ArviZ 0.2x announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

__all__ = ["ARVIZ_1", "bfmi", "check_var_names", "from_groups", "group_names", "load_netcdf",
           "plot", "read_fit_extras", "write_fit_extras"]

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1
"""True for ArviZ >= 1.0 (``xarray.DataTree``), False for 0.x (``arviz.InferenceData``)."""


def from_groups(groups, coords=None, dims=None, attrs=None):
    """ArviZ data from ``{group: {var: array}}``: ``InferenceData`` on ArviZ 0.x,
    ``xarray.DataTree`` on 1.x.

    Sample groups (all but ``observed_data`` and ``constant_data``) have leading
    ``(chain, draw)`` axes.
    ``dims`` is ``{group: {var: [dim, ...]}}`` (per group, since one name may mean different
    things in two groups, like ``actions`` in ``log_likelihood`` and ``observed_data``);
    ``coords`` is ``{dim: values}`` for all groups; ``attrs`` is ``{group: {name: value}}``.
    """
    coords, dims, attrs = coords or {}, dims or {}, attrs or {}
    parts = {}
    for group, variables in groups.items():
        group_dims = {k: list(v) for k, v in dims.get(group, {}).items()}
        used = {d for v in group_dims.values() for d in v}
        group_coords = {d: list(c) for d, c in coords.items() if d in used}
        if group == "constant_data":  # no sample dims: a plain Dataset on either ArviZ
            import xarray as xr

            parts[group] = xr.Dataset(
                {k: (group_dims.get(k, [f"{k}_dim_{i}" for i in range(np.ndim(v))]),
                     np.asarray(v)) for k, v in variables.items()}, coords=group_coords)
        elif ARVIZ_1:
            parts[group] = az.from_dict({group: dict(variables)}, coords=group_coords,
                                        dims=group_dims)[group].to_dataset()
        else:
            parts[group] = getattr(az.from_dict(**{group: dict(variables)},
                                                coords=group_coords, dims=group_dims), group)
        parts[group].attrs.update(attrs.get(group, {}))
    if ARVIZ_1:
        import xarray as xr

        return xr.DataTree.from_dict(parts)
    return az.InferenceData(**parts)


def group_names(data) -> list[str]:
    """The groups of ArviZ data (``["posterior", "log_likelihood", ...]``)."""
    return list(data.children) if ARVIZ_1 else list(data.groups())


def bfmi(data) -> np.ndarray:
    """E-BFMI per chain from the ``energy`` in ``sample_stats``, as an array."""
    value = az.bfmi(data)
    return np.asarray(value["energy"].values if ARVIZ_1 else value, dtype=float)


def load_netcdf(path):
    """Read a netCDF file written by ``to_netcdf`` of either ArviZ data type, into memory:
    every value is read here (a damaged block fails now, not at a later access) and the file is
    closed."""
    if not ARVIZ_1:
        with az.rc_context({"data.load": "eager"}):
            return az.from_netcdf(path)
    import xarray as xr

    with xr.open_datatree(path) as tree:
        return tree.load()


COVARIANCE_DIMS = ("coordinate", "coordinate_bis")
"""The dims of a saved ``extra["covariance"]``: its rows and its columns."""
STANDARD_ERROR_PREFIXES = {"standard_errors": "standard_error_",
                           "standard_errors_bhhh": "bhhh_standard_error_"}
"""``extra`` key -> the prefix of its per-site ``constant_data`` variables in a saved
posterior."""


def _array(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def write_fit_extras(extra: dict, site_dims: dict) -> tuple[dict, dict, dict]:
    """A MAP's or Laplace fit's ``extra`` entries (standard errors per site, BHHH's too, and
    the covariance over ``extra["coordinates"]``) as ``constant_data`` variables, their dims
    (a site's from ``site_dims``) and the covariance's coords; every posterior type saves them
    this way, so that :func:`read_fit_extras` gives them back."""
    variables, dims, coords = {}, {}, {}
    for key, prefix in STANDARD_ERROR_PREFIXES.items():
        for site, se in (extra.get(key) or {}).items():
            name = prefix + site
            variables[name] = _array(se)
            dims[name] = list(site_dims.get(site, ()))
    if extra.get("covariance") is not None:
        cov = _array(extra["covariance"])
        names = list(extra.get("coordinates") or range(cov.shape[0]))
        if cov.ndim != 2 or cov.shape != (len(names), len(names)):
            raise ValueError(f"extra['covariance'] has shape {cov.shape}, expected "
                             f"({len(names)}, {len(names)}) for extra['coordinates']")
        variables["covariance"] = cov
        dims["covariance"] = list(COVARIANCE_DIMS)
        coords = {d: [str(n) for n in names] for d in COVARIANCE_DIMS}
    return variables, dims, coords


def read_fit_extras(group, tensor) -> dict:
    """``extra`` entries (standard errors, BHHH's too, covariance, coordinates) from a saved
    posterior's ``constant_data`` (:func:`write_fit_extras`), each array through
    ``tensor``."""
    extra = {}
    for key, prefix in STANDARD_ERROR_PREFIXES.items():
        errors = {k[len(prefix):]: tensor(group[k].values) for k in group.data_vars
                  if k.startswith(prefix)}
        if errors:
            extra[key] = errors
    if "covariance" in group:
        extra["covariance"] = tensor(group["covariance"].values)
        extra["coordinates"] = [str(c) for c in group["covariance"][COVARIANCE_DIMS[0]].values]
    return extra


def check_var_names(var_names, available) -> list[str]:
    """``var_names`` (a name or a list of names; ``"~name"`` leaves a variable out, as in
    ArviZ) as the list of the ``available`` variables it selects; a ValueError naming a name
    that is not among them, and listing them, instead of ArviZ's KeyError."""
    available = list(available)
    names = [var_names] if isinstance(var_names, str) else var_names
    try:
        names = list(names)
    except TypeError:
        raise TypeError(f"var_names must be a variable name or a list of names, got "
                        f"{type(var_names).__name__}") from None
    for name in names:
        if not isinstance(name, str) or name.removeprefix("~") not in available:
            raise ValueError(f"var_names has {name!r}, expected names from {available}")
    dropped = {n[1:] for n in names if n.startswith("~")}
    kept = [n for n in names if not n.startswith("~")] or available
    out = [n for n in kept if n not in dropped]
    if not out:
        raise ValueError(f"var_names {names!r} leaves no variable of {available}")
    return out


_PLOTS_1 = {"trace": "plot_trace_dist", "rank": "plot_rank", "forest": "plot_forest"}
_ONTO_AXES = threading.Lock()  # one plot at a time swaps arviz_plots' grid maker for axes


def plot(kind: str, data, var_names, axes=None, **kwargs):
    """``az.plot_trace`` / ``plot_rank`` / ``plot_forest`` (``kind``: trace, rank, forest);
    returns the matplotlib axes.

    ArviZ 1.x (arviz_plots) has no ``ax``/``axes`` argument and returns a ``PlotCollection``;
    without ``axes`` this returns the axes of the figure it made, a 1-d array. With ``axes``
    the plot is laid out on them instead (see :func:`_onto_axes`): as many axes as ArviZ's grid
    has plots, e.g. ``(n_variables, 2)`` for the trace, one per scalar component for the rank
    plot and two (labels, intervals) for the forest; this returns ``axes`` as an array.
    ``var_names`` must name variables of ``data.posterior`` (:func:`check_var_names`) unless
    ``filter_vars`` asks ArviZ to match them.
    """
    if kwargs.get("filter_vars") is None:
        var_names = check_var_names(var_names, data.posterior.data_vars)
    if not ARVIZ_1:
        if kind == "trace":
            return az.plot_trace(data, var_names=var_names, axes=axes, **kwargs)
        return getattr(az, f"plot_{kind}")(data, var_names=var_names, ax=axes, **kwargs)
    function = getattr(az, _PLOTS_1[kind])
    kwargs.setdefault("backend", "matplotlib")
    if axes is None:
        collection = function(data, var_names=var_names, **kwargs)
        figure = collection.viz["figure"].item()  # a PlotCollection; its figure holds the axes
        return np.asarray(figure.axes, dtype=object)
    if kwargs["backend"] != "matplotlib":
        raise ValueError(f"axes= are matplotlib axes; got backend={kwargs['backend']!r}")
    if "plot_collection" in kwargs:
        raise ValueError("pass axes= or plot_collection=, not both")
    given = np.atleast_1d(np.asarray(axes, dtype=object))
    with _onto_axes(given, _PLOTS_1[kind]):
        function(data, var_names=var_names, **kwargs)
    return given


@contextlib.contextmanager
def _onto_axes(given: np.ndarray, name: str):
    """Make arviz_plots lay its next grid of plots out on ``given`` axes.

    Every arviz_plots plot makes its figure with the backend's ``create_plotting_grid(number,
    rows, cols, ...)`` (through ``PlotCollection.grid`` / ``wrap``); meanwhile that returns the
    given axes, reshaped to ``(rows, cols)``, with the figure of the first. Sizes (``figsize``,
    ``width_ratios``) are the given axes' own; ``sharex`` / ``sharey`` are applied to them.
    Plots made meanwhile by other threads get their own figure as usual.
    """
    from arviz_plots.backend import matplotlib as backend

    flat = given.ravel()
    made = []
    thread = threading.get_ident()

    def onto_given(number, rows=1, cols=1, *, squeeze=True, sharex=False, sharey=False,
                   **figure_kwargs):
        if threading.get_ident() != thread:  # another thread's plot: a figure of its own
            return make_grid(number, rows, cols, squeeze=squeeze, sharex=sharex,
                             sharey=sharey, **figure_kwargs)
        if made:
            raise RuntimeError(f"az.{name} asked for a second grid of plots")
        if flat.size != rows * cols:
            raise ValueError(f"az.{name} lays this out on {rows} x {cols} axes; axes= has "
                             f"{flat.size} (shape {given.shape})")
        grid = flat.reshape(rows, cols)
        _share(grid, "x", sharex)
        _share(grid, "y", sharey)
        for ax in flat[number:]:
            ax.set_axis_off()
        made.append(grid)
        return flat[0].figure, grid if not squeeze else np.squeeze(grid)

    with _ONTO_AXES:
        make_grid = backend.create_plotting_grid
        backend.create_plotting_grid = onto_given
        try:
            yield
        finally:
            backend.create_plotting_grid = make_grid


def _share(grid: np.ndarray, axis: str, how) -> None:
    """``sharex`` / ``sharey`` of :func:`matplotlib.pyplot.subplots` on existing axes (those
    that already share that axis with another are left as they are)."""
    if how in (True, "all"):
        groups = [grid.ravel()]
    elif how == "row":
        groups = list(grid)
    elif how == "col":
        groups = list(grid.T)
    else:
        return
    for group in groups:
        first = group[0]
        for ax in group[1:]:
            shared = getattr(ax, f"get_shared_{axis}_axes")()
            if not shared.joined(ax, first) and len(shared.get_siblings(ax)) == 1:
                getattr(ax, f"share{axis}")(first)
