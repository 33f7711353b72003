"""Reward recovery on objectworld: expected value difference of every IRL method against N.

The GPIRL setup (Levine, Popovic & Koltun, NeurIPS 2011): ``envs.objectworld(size=32,
n_colors=2, density=0.05, determinism=0.7, discount=0.9, seed=s)`` for seeds s = 0, 1, 2;
N in {4, 8, 16, 32, 64, 128} demonstrations of 8 steps each from the soft (maximum causal
entropy) policy of ``RATIONALITY * mdp.reward``, ``RATIONALITY = 5``: with the raw +-1 reward,
slip 0.3 and discount 0.9 the soft policy's action preferences are so flat that 8-step
demonstrations are close to a random walk and no method can learn from them at small N.

Methods, all on the discrete indicator features ``(S, 4 * size)`` unless said otherwise:

- ``projection`` (Abbeel & Ng 2004), ``max_iters`` capped (see ``CONFIG``);
- ``max_margin`` (Abbeel & Ng 2004 / Ratliff et al. 2006), defaults;
- ``maxent`` (Ziebart et al. 2008), finite horizon 8 (the demonstrations' length), ``l2``;
- ``mce`` (Ziebart et al. 2010), discounted, ``l2`` (without it the dual is unbounded on
  indicator features the demonstrations never switch on, and L-BFGS runs to its iteration
  cap without converging);
- ``deep_maxent`` (Wulfmeier et al. 2016), ``max_iters`` capped;
- ``bayes_linear``: ``birl.infer(LinearReward(features, Normal(0, 1)), method="svi",
  guide="mvn", map_init=False, lr=0.1)``, rationality 1 in the likelihood (the model is *not*
  told the demonstrator's rationality 5; the weights absorb it). SVI starts at the prior
  centre: the L-BFGS MAP start (``map_init=True``) costs more soft-VI gradients than the
  whole short SVI run and does not change the posterior mean's EVD;
- ``bayes_gp``: ``GPReward`` on the continuous objectworld features (the 4 distances to the
  nearest object of each outer/inner colour; same layout, same true reward), fixed RBF
  hyperparameters (lengthscale 2, variance 4, jitter 1e-5), ``guide="normal"``, otherwise as
  ``bayes_linear``.

Guided cost learning is excluded: it is sample-based (unknown dynamics), the others plan with
the known transition tables. The iteration caps (``CONFIG``) keep the run time bounded on a
shared 2-core machine; every fit is float64 on one thread.

Metrics (``bayesirl.metrics``): EVD of the optimal policy of each learned reward under the true
reward on the training world, the mean over 2 *transfer* worlds (objectworld seeds 1000, 1001,
same settings) where linear rewards apply their ``theta`` to the new world's features, deep
MaxEnt its network, and the GP its posterior predictive mean ``K(X_new, X) K^-1 f`` at the new
world's continuous features (``GPReward.predict``, f the posterior mean on the training
states); EPIC distance to the true reward (training world); fit wall time. For the Bayesian
rows the point estimate is the posterior-mean reward; the ``EVD 5-95%`` column is the 5%-95%
interval of EVD over the ``CONFIG[...]["draws"]`` posterior draws (training world), averaged
over seeds.

Verdict (the issue's expectation): "the Bayesian posterior mean is at least as good as
MaxEnt/MCE at every N, and clearly better at N <= 16" -- per N, PASS when the linear posterior
mean's EVD (mean over seeds, training world) is <= the smaller of MaxEnt's and MCE's, and, at
N <= 16, at most 0.8 of it ("clearly": 20% lower). The GP posterior's line is printed as well.

``main(quick=True)``: size 16, N in {4, 16, 64}, one seed, capped iterations. The full run
(the Bayesian fits dominate its time) loops seeds outermost, so a cut-off run still covers
every N, and stores its rows after each (seed, N) in ``results/recovery_{quick,full}.json``;
``--report`` prints the table, verdict and plot of a stored (possibly unfinished) run. The
plot (EVD against N, min-max bands over seeds for the point methods, the mean posterior 5%-95%
EVD band for the Bayesian ones) goes to ``benchmarks/results/recovery.png``.

Run: ``python benchmarks/recovery.py [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pathlib
import time
import warnings

import pyro.distributions as dist
import torch

import bayesirl as birl

RATIONALITY = 5.0          # the demonstrator's: demos from soft_value_iteration(5 * reward)
DEMO_LENGTH = 8
TRANSFER_SEEDS = (1000, 1001)
RESULTS = pathlib.Path(__file__).resolve().parent / "results"

CONFIG = {
    "full": {"size": 32, "Ns": (4, 8, 16, 32, 64, 128), "seeds": (0, 1, 2),
             "projection_iters": 20, "deep_iters": 40, "l2": 0.1, "irl_iters": 100,
             "svi_steps": 50, "svi_lr": 0.1, "draws": 50},
    "quick": {"size": 16, "Ns": (4, 16, 64), "seeds": (0,),
              "projection_iters": 8, "deep_iters": 15, "l2": 0.1, "irl_iters": 30,
              "svi_steps": 20, "svi_lr": 0.1, "draws": 20},
}
IRL_TOL = 1e-4            # MaxEnt / MCE: gradient sup-norm, in feature-count units
GP_LENGTHSCALE, GP_VARIANCE, GP_JITTER = 2.0, 4.0, 1e-5

POINT_METHODS = ("projection", "max_margin", "maxent", "mce", "deep_maxent")
BAYES_METHODS = ("bayes_linear", "bayes_gp")
METHODS = POINT_METHODS + BAYES_METHODS


def worlds(size, seed):
    """``(discrete, continuous)`` objectworlds with one layout (same seed, same reward)."""
    kw = {"size": size, "n_colors": 2, "density": 0.05, "determinism": 0.7, "discount": 0.9,
          "seed": seed, "dtype": torch.float64}
    disc, cont = birl.envs.objectworld(**kw), birl.envs.objectworld(continuous=True, **kw)
    assert torch.equal(disc.reward, cont.reward)
    return disc, cont


# ---------------------------------------------------------------------------- fitting
def fit_all(mdp, cmdp, demos, cfg, seed):
    """Fit every method; returns ``{name: (train reward (draws?, S, A), transfer fn, secs)}``.

    ``transfer(world_disc, world_cont)`` gives the method's reward(s) on another world.
    """
    bl, out = birl.baselines, {}

    def timed(name, fn):
        t0 = time.perf_counter()
        res = fn()
        return res, time.perf_counter() - t0

    def linear(theta):
        return lambda w, cw: w.features @ theta.T if theta.dim() == 2 else w.features @ theta

    for name, fn in (
            ("projection", lambda: bl.projection_irl(mdp, demos,
                                                     max_iters=cfg["projection_iters"])),
            ("max_margin", lambda: bl.max_margin_irl(mdp, demos)),
            ("maxent", lambda: bl.maxent_irl(mdp, demos, horizon=DEMO_LENGTH, l2=cfg["l2"],
                                             max_iters=cfg["irl_iters"], tol=IRL_TOL)),
            ("mce", lambda: bl.mce_irl(mdp, demos, l2=cfg["l2"], max_iters=cfg["irl_iters"],
                                       tol=IRL_TOL)),
    ):
        res, secs = timed(name, fn)
        out[name] = (res.reward, linear(res.theta), secs)

    res, secs = timed("deep_maxent", lambda: bl.deep_maxent_irl(
        mdp, demos, max_iters=cfg["deep_iters"], seed=seed))
    net = res.info["network"]

    def deep_transfer(w, cw, net=net):
        with torch.no_grad():
            return net(w.features).squeeze(-1)
    out["deep_maxent"] = (res.reward, deep_transfer, secs)

    svi = {"method": "svi", "steps": cfg["svi_steps"], "lr": cfg["svi_lr"],
           "num_samples": cfg["draws"], "seed": seed, "progress": False, "map_init": False}
    model = birl.LinearReward(mdp.features, prior=dist.Normal(0.0, 1.0))
    post, secs = timed("bayes_linear", lambda: birl.infer(mdp, demos, model, guide="mvn", **svi))
    theta = post.samples["theta"].mean(0)                                # (d,) mean
    out["bayes_linear"] = (post.reward(), lambda w, cw: w.features @ theta, secs)

    gp = birl.GPReward(cmdp.features, lengthscale=GP_LENGTHSCALE, variance=GP_VARIANCE,
                       jitter=GP_JITTER)
    post, secs = timed("bayes_gp", lambda: birl.infer(cmdp, demos, gp, guide="normal", **svi))
    z = post.samples["z"].mean(0)                    # (S,): fixed hyperparameters, mean is linear
    out["bayes_gp"] = (post.reward(), lambda w, cw: gp.predict({"z": z}, cw.features), secs)
    return out


# ---------------------------------------------------------------------------- evaluation
def _as_batch(r, S, A):
    """A reward (S,), (S, A), (draws, S) or (draws, S, A) as (k, S, A)."""
    r = r.detach().to(torch.float64)
    if r.dim() == 1 or (r.dim() == 2 and tuple(r.shape) != (S, A)):
        r = r.unsqueeze(-1).expand(*r.shape, A)
    return r.reshape(-1, S, A)


def evaluate(world, rewards):
    """EVD of each entry of ``rewards: {name: reward or draws}`` in one batched call.

    Returns ``{name: (evd of the mean reward, evd per draw or None)}``.
    """
    S, A = world.n_states, world.n_actions
    names, chunks, spans = [], [], {}
    for name, r in rewards.items():
        b = _as_batch(r, S, A)
        if b.shape[0] > 1:
            chunks += [b.mean(0, keepdim=True), b]
        else:
            chunks.append(b)
        spans[name] = b.shape[0]
        names.append(name)
    evd = birl.metrics.expected_value_difference(world, world.reward, torch.cat(chunks))
    out, i = {}, 0
    for name in names:
        k = spans[name]
        if k > 1:
            out[name] = (float(evd[i]), evd[i + 1:i + 1 + k].clone())
            i += 1 + k
        else:
            out[name] = (float(evd[i]), None)
            i += 1
    return out


def run_one(cfg, seed, n, transfer_worlds):
    mdp, cmdp = worlds(cfg["size"], seed)
    expert = birl.soft_value_iteration(mdp, RATIONALITY * mdp.reward)
    demos = birl.rollouts(mdp, expert, n=n, seed=10_000 * seed + n, length=DEMO_LENGTH)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fits = fit_all(mdp, cmdp, demos, cfg, seed)
    notes = sorted({f"{w.category.__name__}: {str(w.message)[:90]}" for w in caught})
    train = evaluate(mdp, {k: v[0] for k, v in fits.items()})
    transfer = {k: [] for k in fits}
    for w, cw in transfer_worlds:
        res = evaluate(w, {k: v[1](w, cw) for k, v in fits.items()})
        for k in fits:
            transfer[k].append(res[k][0])
    rows = {}
    for k, (reward, _, secs) in fits.items():
        point = _as_batch(reward, mdp.n_states, mdp.n_actions).mean(0)
        draws = train[k][1]
        q = (None if draws is None else
             torch.quantile(draws, torch.tensor([0.05, 0.95], dtype=draws.dtype)).tolist())
        rows[k] = {"evd": train[k][0], "evd_q": q,
                   "transfer": sum(transfer[k]) / len(transfer[k]),
                   "epic": float(birl.metrics.epic_distance(mdp, mdp.reward, point)),
                   "secs": secs}
    return rows, notes


# ---------------------------------------------------------------------------- report
def _mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else math.nan


def summarise(results, cfg):
    """``{(method, N): dict of means over seeds, min/max of EVD, mean posterior interval}``."""
    table = {}
    for m in METHODS:
        for n in cfg["Ns"]:
            runs = [results[(s, n)][m] for s in cfg["seeds"] if (s, n) in results]
            if not runs:
                continue
            evds = [r["evd"] for r in runs]
            qs = [r["evd_q"] for r in runs if r["evd_q"] is not None]
            table[(m, n)] = {
                "evd": _mean(evds), "min": min(evds), "max": max(evds),
                "q05": _mean([q[0] for q in qs]) if qs else None,
                "q95": _mean([q[1] for q in qs]) if qs else None,
                "transfer": _mean([r["transfer"] for r in runs]),
                "epic": _mean([r["epic"] for r in runs]),
                "epic_nan": sum(math.isnan(r["epic"]) for r in runs),
                "secs": _mean([r["secs"] for r in runs]), "seeds": len(runs)}
    return table


def print_table(table, cfg, baseline_evd):
    print(f"\nobjectworld size {cfg['size']} (S = {cfg['size'] ** 2}), seeds {cfg['seeds']}, "
          f"demos of {DEMO_LENGTH} steps from soft policy of {RATIONALITY:g} * true reward; "
          f"EVD of the zero reward (uniform policy) = {baseline_evd:.2f}")
    head = (f"{'method':<13}{'N':>5}{'EVD train':>11}{'[min, max]':>16}{'EVD 5-95% post':>18}"
            f"{'EVD transfer':>14}{'EPIC':>7}{'seconds':>9}")
    print(head)
    print("-" * len(head))
    for m in METHODS:
        for n in cfg["Ns"]:
            row = table.get((m, n))
            if row is None:
                continue
            post = ("" if row["q05"] is None else f"[{row['q05']:.2f}, {row['q95']:.2f}]")
            rng = f"[{row['min']:.2f}, {row['max']:.2f}]"
            print(f"{m:<13}{n:>5}{row['evd']:>11.2f}{rng:>16}"
                  f"{post:>18}{row['transfer']:>14.2f}{row['epic']:>7.3f}{row['secs']:>9.1f}")
    if any(r["epic_nan"] for r in table.values()):
        print("EPIC means leave out seeds whose learned reward was constant (EPIC nan)")


def verdict(table, cfg):
    """PASS/FAIL per N of the issue's expectation; returns the list of (N, passed)."""
    print('\nexpectation: "the Bayesian posterior mean is at least as good as MaxEnt/MCE at every '
          'N, and clearly better at N <= 16" (EVD train, mean over seeds; "clearly" = <= 0.8x '
          "the better of MaxEnt/MCE)")
    out = []
    for bayes in BAYES_METHODS:
        for n in cfg["Ns"]:
            if any((m, n) not in table for m in (bayes, "maxent", "mce")):
                continue
            b = table[(bayes, n)]["evd"]
            ref = min(table[("maxent", n)]["evd"], table[("mce", n)]["evd"])
            need = 0.8 * ref if n <= 16 else ref
            ok = b <= need
            if bayes == "bayes_linear":
                out.append((n, ok))
            print(f"  {bayes:<13}N={n:<4} EVD {b:.2f} vs MaxEnt {table[('maxent', n)]['evd']:.2f}"
                  f" / MCE {table[('mce', n)]['evd']:.2f}: needs <= {need:.2f} -> "
                  f"{'PASS' if ok else 'FAIL'}")
    passed = all(ok for _, ok in out)
    print(f"VERDICT (bayes_linear, the issue's claim): {'PASS' if passed and out else 'FAIL'} "
          f"({sum(ok for _, ok in out)}/{len(out)} N values)")
    return out


def plot(table, cfg, path, zero_evd=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    Ns = list(cfg["Ns"])
    for m in METHODS:
        rows = [table.get((m, n)) for n in Ns]
        if any(r is None for r in rows):
            continue
        style = "-o" if m in BAYES_METHODS else "--s"
        line, = axes[0].plot(Ns, [r["evd"] for r in rows], style, label=m, ms=4)
        if m in BAYES_METHODS:
            lo, hi = [r["q05"] for r in rows], [r["q95"] for r in rows]
        else:
            lo, hi = [r["min"] for r in rows], [r["max"] for r in rows]
        axes[0].fill_between(Ns, lo, hi, color=line.get_color(), alpha=0.15)
        axes[1].plot(Ns, [r["transfer"] for r in rows], style, label=m, ms=4,
                     color=line.get_color())
    titles = ("training world (band: posterior 5-95% EVD for Bayesian, min-max over seeds "
              "otherwise)", "transfer worlds (mean)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("number of demonstrations N (8 steps each)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    if zero_evd is not None:
        axes[0].axhline(zero_evd, color="gray", lw=0.8, ls=":", label="zero reward (uniform)")
    axes[0].set_ylabel("expected value difference")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"objectworld {cfg['size']}x{cfg['size']}, {len(cfg['seeds'])} seed(s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(cfg, results, zero_evd, notes=(), out=None):
    """Table, warnings, verdict and plot from ``results: {(seed, N): rows}``."""
    table = summarise(results, cfg)
    print_table(table, cfg, zero_evd)
    if notes:
        print("\nwarnings raised during fitting (deduplicated):")
        for note in sorted(notes):
            print(f"  {note}")
    verdict(table, cfg)
    path = (out or RESULTS) / "recovery.png"
    plot(table, cfg, path, zero_evd)
    print(f"\nplot: {path}")
    return table


def _store(path, cfg, results, zero_evd, notes):
    rows = [{"seed": s, "N": n, "rows": r} for (s, n), r in results.items()]
    path.write_text(json.dumps({"config": cfg, "zero_evd": zero_evd, "notes": sorted(notes),
                                "results": rows}, indent=1))


def main(quick: bool = False, out: pathlib.Path | None = None):
    """Run every (seed, N), seeds outermost (a cut-off run still covers every N), storing the
    rows after each in ``results/recovery_{quick,full}.json``; print the table and verdict."""
    torch.set_num_threads(1)
    mode = "quick" if quick else "full"
    cfg = CONFIG[mode]
    t_start = time.perf_counter()
    importlib.import_module("torch._dynamo")  # torch.optim imports it on first use: not timed
    transfer_worlds = [worlds(cfg["size"], s) for s in TRANSFER_SEEDS]
    mdp0, _ = worlds(cfg["size"], cfg["seeds"][0])
    zero_evd = float(birl.metrics.expected_value_difference(
        mdp0, mdp0.reward, torch.zeros(mdp0.n_states, dtype=torch.float64)))
    print(f"recovery: objectworld size {cfg['size']}, N {cfg['Ns']}, seeds {cfg['seeds']}, "
          f"methods {', '.join(METHODS)} (guided cost learning excluded: sample-based)",
          flush=True)
    store = (out or RESULTS) / f"recovery_{mode}.json"
    store.parent.mkdir(parents=True, exist_ok=True)
    results, notes = {}, set()
    for s in cfg["seeds"]:
        for n in cfg["Ns"]:
            t0 = time.perf_counter()
            rows, w = run_one(cfg, s, n, transfer_worlds)
            results[(s, n)] = rows
            notes.update(w)
            _store(store, cfg, results, zero_evd, notes)
            print(f"  seed {s} N {n:>3}: {time.perf_counter() - t0:6.1f} s  " + "  ".join(
                f"{m} {rows[m]['evd']:.2f}" for m in METHODS), flush=True)
    table = report(cfg, results, zero_evd, notes, out)
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return table


def report_saved(quick: bool = False, out: pathlib.Path | None = None):
    """Table, verdict and plot from a stored (possibly unfinished) run."""
    mode = "quick" if quick else "full"
    data = json.loads(((out or RESULTS) / f"recovery_{mode}.json").read_text())
    cfg = dict(data["config"])
    results = {(r["seed"], r["N"]): r["rows"] for r in data["results"]}
    cfg["seeds"] = tuple(sorted({s for s, _ in results}))
    cfg["Ns"] = tuple(n for n in cfg["Ns"] if any(k[1] == n for k in results))
    total = len(data["config"]["seeds"]) * len(data["config"]["Ns"])
    print(f"stored {mode} run: {len(results)} of {total} (seed, N) runs finished")
    return report(cfg, results, data["zero_evd"], data["notes"], out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="size 16, N in {4, 16, 64}, one seed (a few minutes)")
    parser.add_argument("--report", action="store_true",
                        help="only print the table, verdict and plot of the stored run")
    args = parser.parse_args()
    (report_saved if args.report else main)(args.quick)
