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
- plots: ArviZ 1.x's plots make their own figure and return a ``PlotCollection``
  (``plot_trace`` is the trace alone; ``plot_trace_dist`` is 0.x's density-and-trace).
"""

from __future__ import annotations

import warnings

import numpy as np

with warnings.catch_warnings():  # ArviZ 0.2x announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

__all__ = ["ARVIZ_1", "bfmi", "from_groups", "group_names", "load_netcdf", "plot"]

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1
"""True for ArviZ >= 1.0 (``xarray.DataTree``), False for 0.x (``arviz.InferenceData``)."""


def from_groups(groups, coords=None, dims=None, attrs=None):
    """ArviZ data from ``{group: {var: array}}``: ``InferenceData`` on ArviZ 0.x,
    ``xarray.DataTree`` on 1.x.

    Sample groups (all but ``observed_data``) have leading ``(chain, draw)`` axes.
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
        if ARVIZ_1:
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
    """Read a netCDF file written by ``to_netcdf`` of either ArviZ data type, into memory."""
    if not ARVIZ_1:
        return az.from_netcdf(path)
    import xarray as xr

    with xr.open_datatree(path) as tree:
        return tree.load()


_PLOTS_1 = {"trace": "plot_trace_dist", "rank": "plot_rank", "forest": "plot_forest"}


def plot(kind: str, data, var_names, axes=None, **kwargs):
    """``az.plot_trace`` / ``plot_rank`` / ``plot_forest`` (``kind``: trace, rank, forest);
    returns the matplotlib axes. ArviZ 1.x draws its own figure (``axes`` must be None) and
    returns a ``PlotCollection``: this returns the axes of its figure, a 1-d array."""
    if not ARVIZ_1:
        if kind == "trace":
            return az.plot_trace(data, var_names=var_names, axes=axes, **kwargs)
        return getattr(az, f"plot_{kind}")(data, var_names=var_names, ax=axes, **kwargs)
    if axes is not None:
        raise ValueError("axes= needs ArviZ 0.x: the plots of ArviZ >= 1.0 draw their own "
                         "figure (leave axes out; the returned axes hold the figure)")
    kwargs.setdefault("backend", "matplotlib")
    collection = getattr(az, _PLOTS_1[kind])(data, var_names=var_names, **kwargs)
    figure = collection.viz["figure"].item()  # a PlotCollection; its figure holds the axes
    return np.asarray(figure.axes, dtype=object)
