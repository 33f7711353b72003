"""Posterior diagnostics figures: ArviZ's trace, rank and forest plots, per-chain density, trace
and rank rows of the least converged parameters, and the ELBO of an SVI fit.

Every function takes ``ax=None`` (or ``axes=None``) and returns what it drew on.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np

from bayesirl._validation import check_int
from bayesirl.plots.common import as_numpy, new_axes
from bayesirl.posterior import arviz_io
from bayesirl.posterior.reward_posterior import require_draws

__all__ = ["plot_diagnostics", "plot_elbo", "plot_posterior"]


@contextlib.contextmanager
def _quiet_arviz():
    """ArviZ 0.2x calls matplotlib APIs that matplotlib 3.11 deprecates (not ours to fix), and
    warns on the density of a chain that never moved (the trace and rank plots show that)."""
    from matplotlib import MatplotlibDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
        warnings.filterwarnings("ignore", "Your data appears to have a single value",
                                UserWarning)
        yield


def _idata(posterior):
    return posterior.to_arviz() if hasattr(posterior, "to_arviz") else posterior


def plot_posterior(posterior, kind: str = "trace", var_names=None, axes=None, **kwargs):
    """A thin layer over ArviZ: ``kind="trace"`` (``az.plot_trace``; ``az.plot_trace_dist`` on
    ArviZ >= 1.0), ``"rank"`` (``az.plot_rank``) or ``"forest"`` (``az.plot_forest``, chains
    combined).

    ``posterior`` is a :class:`RewardPosterior` or ArviZ data (``arviz.InferenceData``, or
    ``xarray.DataTree`` on ArviZ >= 1.0); ``var_names`` defaults to every parameter site (not
    the derived ``reward``). Extra keyword arguments go to ArviZ, whose arguments differ
    between 0.x and 1.x. Returns the array of matplotlib axes drawn on.

    ``axes``: matplotlib axes to draw on (default: a new figure), laid out as ArviZ lays the
    plot out. For the trace, an array ``(n_variables, 2)`` (density, trace) with either ArviZ;
    for the rank plot, one per scalar component. The forest plot takes one axes on ArviZ 0.x
    and two on 1.x (labels, intervals; their y axes are shared). ArviZ 1.x has no axes
    argument: its plot is laid out on these in place of a figure of its own (any number of
    axes of the right size, in row-major order; a wrong number raises ``ValueError`` naming
    the rows x columns it needs), and ``axes`` is returned as an array. ``var_names`` must
    name variables of the posterior group (a ValueError lists them). A posterior of one draw
    (a MAP fit) has nothing to plot: a ValueError.
    """
    if kind not in ("trace", "rank", "forest"):
        raise ValueError(f"kind is {kind!r}, expected 'trace', 'rank' or 'forest'")
    idata = _idata(posterior)
    sizes = idata.posterior.sizes
    require_draws(sizes.get("chain", 1) * sizes.get("draw", 1), "plot_posterior",
                  method=getattr(posterior, "method", None))
    if var_names is None:
        params = getattr(posterior, "params", None)
        var_names = list(params) if params else [v for v in idata.posterior.data_vars
                                                 if v != "reward"] or ["reward"]
    if kind == "forest":
        kwargs.setdefault("combined", True)
    with _quiet_arviz():
        return arviz_io.plot(kind, idata, var_names, axes=axes, **kwargs)


def _scalar_draws(posterior) -> dict[str, np.ndarray]:
    """Every scalar component of every parameter site as ``(chains, draws)``, named like
    ``theta[cell(0,1)]`` (by index where the posterior has no ``dims``/``coords``: a
    hierarchical or preference posterior). A posterior without per-chain draws ``params``
    raises a TypeError saying what to pass."""
    params = getattr(posterior, "params", None)
    if not isinstance(params, dict):
        parent = getattr(posterior, "parent", None)
        hint = ("; pass the hierarchical posterior it came from" if parent is not None else
                "; pass a RewardPosterior, HierarchicalPosterior or PreferencePosterior")
        raise TypeError(f"plot_diagnostics needs a posterior's per-chain parameter draws "
                        f"(params), which {type(posterior).__name__} has not{hint}")
    names = getattr(posterior, "dims", None) or {}
    labels_of = getattr(posterior, "coords", None) or {}
    out = {}
    for name, value in params.items():
        v = as_numpy(value)
        C, D = v.shape[:2]
        flat = v.reshape(C, D, -1)
        dims = names.get(name, ())
        coords = [labels_of.get(d) for d in dims]
        for j, idx in enumerate(np.ndindex(*v.shape[2:]) if v.ndim > 2 else [()]):
            labels = [str(coords[k][i]) if k < len(coords) and coords[k] and i < len(coords[k])
                      else str(i) for k, i in enumerate(idx)]
            out[f"{name}[{','.join(labels)}]" if idx else name] = flat[:, :, j]
    return out


def plot_diagnostics(posterior, max_params: int = 6, axes=None):
    """MCMC diagnostics of the ``max_params`` scalar parameters with the largest R-hat (and the
    rationality, when inferred): one row each with the marginal density per chain, the trace and
    the rank histogram (ranks among all chains' draws; a uniform histogram per chain is what
    mixing chains give).

    Drawn with matplotlib (R-hat from ArviZ), so it draws on given ``axes`` with any ArviZ.
    ``posterior``: anything with per-chain draws ``params`` ``{site: (chains, draws, ...)}``:
    a :class:`~bayesirl.RewardPosterior`, a hierarchical or a preference posterior (one
    expert's ``hier.expert(e)`` has none: pass ``hier``), with at least 4 draws per chain.
    ``max_params`` >= 1. Returns the ``(k, 3)`` array of axes.
    """
    max_params = check_int("max_params", max_params)
    draws = _scalar_draws(posterior)
    if not draws:
        raise ValueError("the posterior has no parameter draws")
    C, D = next(iter(draws.values())).shape
    require_draws(D, "plot_diagnostics", 4, method=getattr(posterior, "method", None),
                  per_chain=True)
    names = list(draws)
    if C > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a chain that never moved
            rhat = arviz_io.az.rhat(arviz_io.from_groups({"posterior": draws}))
        score = [float(np.nan_to_num(rhat[n].values, nan=np.inf)) for n in names]
        names = [n for _, n in sorted(zip(score, names, strict=True), key=lambda x: -x[0])]
    if "rationality" in names:  # the quantity a Boltzmann spec is about: always shown
        names.remove("rationality")
        names.insert(0, "rationality")
    names = names[:max_params]
    k = len(names)
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(k, 3, figsize=(12, 1.9 * k + 0.6), squeeze=False,
                               layout="constrained")
    axes = np.asarray(axes).reshape(k, 3)
    for i, n in enumerate(names):
        _chain_panels(axes[i], np.asarray(draws[n], dtype=float))
        axes[i, 2].set_title(f"{n} (rank)", fontsize="medium")
        axes[i, 0].set_title(n, fontsize="medium")
        axes[i, 1].set_title(f"{n} (trace)", fontsize="medium")
        axes[i, 2].set_xlabel("rank (all chains)" if i == k - 1 else "", fontsize="medium")
        axes[i, 2].set_ylabel("chain", fontsize="medium")
    axes[-1, 1].set_xlabel("draw")
    return axes


def _chain_panels(row, values: np.ndarray) -> None:
    """Density (Gaussian kernel, Silverman's bandwidth of the pooled draws), trace and rank
    histogram of ``values: (chains, draws)`` on the three axes of ``row``, a colour a chain."""
    from scipy.stats import rankdata

    C, D = values.shape
    sd = float(values.std())
    bw = 1.06 * (sd if sd > 0 else 1.0) * (C * D) ** -0.2
    grid = np.linspace(values.min() - 3 * bw, values.max() + 3 * bw, 200)
    ranks = rankdata(values.ravel()).reshape(C, D)
    bins = np.linspace(0.5, C * D + 0.5, max(2, min(20, D // 5)) + 1)
    expected = D / (len(bins) - 1)
    for c in range(C):
        colour = f"C{c % 10}"
        z = (grid[:, None] - values[c][None, :]) / bw
        row[0].plot(grid, np.exp(-0.5 * z ** 2).mean(1) / (bw * math.sqrt(2 * math.pi)),
                    color=colour, lw=1)
        row[1].plot(np.arange(D), values[c], color=colour, lw=0.7)
        counts, _ = np.histogram(ranks[c], bins=bins)
        row[2].bar(bins[:-1], 0.45 * counts / expected, width=np.diff(bins), bottom=c,
                   align="edge", color=colour, alpha=0.8, edgecolor="white", lw=0.5)
        row[2].axhline(c + 0.45, color="k", ls="--", lw=0.7)
    row[2].set_yticks(np.arange(C) + 0.45, [str(c) for c in range(C)])


def plot_elbo(posterior, ax=None, skip: float = 0.0):
    """The ELBO of an SVI fit per step (``posterior.extra["elbo"]``); ``skip`` drops that
    fraction of the first steps. Returns the axes."""
    elbo = np.asarray(getattr(posterior, "extra", {}).get("elbo", []), dtype=float)
    if elbo.size == 0:
        raise ValueError("the posterior has no ELBO history (it is not an SVI fit)")
    start = int(math.floor(skip * elbo.size))
    ax = new_axes(ax)
    steps = np.arange(start, elbo.size)
    ax.plot(steps, elbo[start:], lw=0.8, color="C0", alpha=0.6, label="ELBO")
    if elbo.size - start >= 20:
        w = max((elbo.size - start) // 20, 2)
        smooth = np.convolve(elbo[start:], np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], smooth, color="C1", lw=1.5, label=f"moving mean ({w} steps)")
        ax.legend(loc="lower right", fontsize="small")
    ax.set_xlabel("SVI step")
    ax.set_ylabel("ELBO (nats)")
    ax.set_title("evidence lower bound")
    return ax
