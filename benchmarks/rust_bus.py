"""Rust's (1987) bus engines: bayesirl against a reference NFXP and the published estimates.

Side by side in one run, on the same data (``bayesirl.datasets.rust_bus``: Rust's group 4 as
he discretised it, 90 bins of 5 000 miles; groups 1-3 in econirl's discretisation), the same
first-stage increment probabilities and the same discount:

1. **Partial likelihood (stage 2)**: bayesirl's MAP under a flat prior
   (``infer(method="map")`` with ``LinearReward(prior=bayesirl.model.priors.flat())``: the
   MLE) against :mod:`nfxp` (``fit_nfxp(panel, beta, p=...)``, Rust's polyalgorithm with
   Newton outer steps): estimates, log-likelihood and the median seconds of repeated complete
   fits, at discounts 0.9999, 0.99, 0.975 and 0. Target: equal to 3 decimals; bayesirl's time
   at most 2x NFXP's at 0.9999.
2. **Full likelihood (stage 3)**: :func:`bayesirl.inference.map.laplace_fit` on
   ``FullLikelihood`` (increment probabilities inside the posterior) against NFXP's stage 3 on
   a panel with Rust's recorded increments: estimates, standard errors from the inverse Hessian
   (the Laplace approximation) and from the outer product of scores (BHHH, the kind Rust
   published), full log-likelihood, seconds.
3. **Published**: both beside Rust's Tables VIII-IX (``benchmarks/rust_published.csv``) for
   groups 4, 1-3 and 1-4 at the published discounts (0.9999 and 0).
4. **NUTS**: the partial-likelihood posterior under the flat prior at 0.9999, 2 chains x
   1 000 draws after 1 000 warmup (parallel chains): seconds, min bulk ESS, 95% intervals and
   whether they hold the published estimates. Targets: under 60 s on 2 cores; ESS >= 400.
5. **Demand curve**: :func:`bayesirl.decisions.replacement_demand` over the NUTS draws: expected
   replacements per bus-year against RC, with its 95% band.
6. **Demand with the dynamics' uncertainty**: NUTS on the full likelihood (``theta`` and the
   increment probabilities ``p`` together, flat prior on ``theta``, the first stage's uniform
   Dirichlet on ``p``), then its demand curve twice on the same draws: each draw planned in its
   own ``p`` (the default for such a posterior) and every draw in the first stage's ``p`` (as
   NFXP's counterfactuals): seconds and the bands' widths side by side.

Everything runs on one torch thread in this process (NFXP is single-threaded NumPy); the NUTS
chains run one per core. Beside wall-clock medians it prints CPU times (of this process; of the
chain processes for NUTS): on a shared machine the wall clock measures the other processes too,
and CPU time is what a busy machine disturbs least. Writes ``benchmarks/results/rust_bus.csv``
(long format: one row per table, groups, discount, fit and quantity).

``python benchmarks/rust_bus.py [--quick]``: ``--quick`` runs group 4 only, fewer repeats, a
NUTS run of 2 x (200 + 200) and a coarse demand grid, and writes ``rust_bus_quick.csv`` instead.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import math
import pathlib
import resource
import statistics
import sys
import time
import warnings

import numpy as np
import torch

import bayesirl as birl
from bayesirl.datasets import rust_bus, rust_bus_panel, rust_bus_transitions
from bayesirl.inference.map import laplace_fit
from bayesirl.model.dynamics_likelihood import FullLikelihood
from bayesirl.model.priors import flat

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results" / "rust_bus.csv"
PUBLISHED = HERE / "rust_published.csv"
DISCOUNTS = (0.9999, 0.99, 0.975, 0.0)
TARGET_TIME_RATIO = 2.0
TARGET_NUTS_SECONDS = 60.0
TARGET_ESS = 400


def _load_nfxp():
    spec = importlib.util.spec_from_file_location("benchmarks_nfxp", HERE / "nfxp.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


nfxp = _load_nfxp()


# ------------------------------------------------------------------------------ data
def nfxp_panel(groups):
    """The bayesirl panel of ``groups`` as an NFXP :class:`nfxp.Panel`, with Rust's recorded
    increments (into month t, paired with month t's choice: his stage 3's pairing)."""
    panel = rust_bus_panel(groups)
    return nfxp.Panel(bus=panel.trajectories.numpy(), state=panel.states.numpy(),
                      decision=panel.actions.numpy(),
                      increment=panel.extra["usage"].astype(np.int64))


def published(groups, discount) -> dict:
    """Rust's Table IX (S = 90) for ``groups`` at ``discount``: ``{parameter: (estimate, se)}``
    plus ``"loglik"`` (full) and ``"partial_loglik"``; empty where nothing was published."""
    key = ",".join(str(g) for g in groups)
    out = {}
    with open(PUBLISHED) as f:
        for row in csv.DictReader(f):
            if row["group"] != key or float(row["discount"]) != discount:
                continue
            if row["parameter"] == "partial_loglik":
                out["partial_loglik"] = float(row["loglik"])
            else:
                out[row["parameter"]] = (float(row["estimate"]), float(row["se"]))
                out["loglik"] = float(row["loglik"])
    return out


def _paired_medians(fns, repeats: int) -> list[tuple[float, float]]:
    """``(wall, cpu)`` median seconds of each function in ``fns``, called in turn ``repeats``
    times after a warm-up call each. Alternating keeps a load that changes during the run
    (other processes on the cores) from favouring one of them; the CPU time of this process
    (``time.process_time``) is the figure a busy machine disturbs least."""
    for fn in fns:
        fn()  # warm-up: imports, caches
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    for _ in range(repeats):
        for fn, w, c in zip(fns, wall, cpu, strict=True):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            w.append(time.perf_counter() - t0)
            c.append(time.process_time() - c0)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu, strict=True)]


# ------------------------------------------------------------------------------ fits
def bayesirl_map(mdp, demos):
    """The flat-prior MAP (the MLE): ``(theta (2,), standard errors or None, loglik)``."""
    post = birl.infer(mdp, demos, birl.LinearReward(mdp.features, prior=flat()), method="map",
                      progress=False)
    se = post.extra.get("standard_errors", {}).get("theta")
    return (post.samples["theta"][0].numpy(), None if se is None else np.asarray(se),
            float(post.log_lik.sum()))


def full_likelihood(mdp, demos, transitions):
    target = FullLikelihood(birl.LinearReward(mdp.features, prior=flat()),
                            transitions).build_target(mdp, demos)
    return laplace_fit(target)


def _children_cpu() -> float:
    """CPU seconds used so far by this process's finished child processes (the chains')."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _gradient_seconds(mdp, demos, post, repeats: int = 50) -> float:
    """Median seconds of one potential and gradient of infer's target at the posterior mean."""
    from bayesirl.inference.target import Target

    target = Target(mdp, demos, birl.LinearReward(mdp.features, prior=flat()), "soft", 1.0)
    theta = post.samples["theta"].mean(0)
    times = []
    for _ in range(repeats + 1):
        u = {"theta": theta.clone().requires_grad_(True)}
        t0 = time.perf_counter()
        target.potential(u).backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def _fmt(x, digits=4):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


# ------------------------------------------------------------------------------ main
def main(quick: bool = False) -> None:
    """Run the tables of the module docstring, print them and write the CSV."""
    torch.set_default_dtype(torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []

    def record(table, groups, discount, fit, quantity, value, *, se=None, se_opg=None,
               loglik=None, seconds=None, reference=None, reference_se=None, note=""):
        rows.append(dict(table=table, groups=",".join(map(str, groups)), discount=discount,
                         fit=fit, quantity=quantity, value=value, se=se, se_opg=se_opg,
                         loglik=loglik, seconds=seconds, reference=reference,
                         reference_se=reference_se, note=note))

    try:
        _partial_table(quick, record)
        _full_table(quick, record)
        _nuts_and_demand(quick, record)
        _dynamics_demand(quick, record)
    finally:
        torch.set_num_threads(threads)
    path = RESULTS.with_stem(RESULTS.stem + "_quick") if quick else RESULTS  # never mixed
    path.parent.mkdir(exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {path.relative_to(HERE.parent)} ({len(rows)} rows)")


def _partial_table(quick, record):
    groups = (4,)
    repeats = 3 if quick else 9
    transitions = rust_bus_transitions(groups)
    p = transitions.group_mode()[0].numpy()
    panel = nfxp_panel(groups)
    print(f"1. Partial likelihood (stage 2), group 4, p = {np.array2string(p, precision=4)} "
          f"(first stage, counts {transitions.counts[0].int().tolist()}), flat prior; "
          f"median of {repeats} complete fits each, alternating, 1 thread")
    head = (f"{'discount':>8} {'fit':<9} {'theta_11':>9} {'RC':>9} {'se th11':>8} {'se RC':>8}"
            f" {'LL choice':>10} {'seconds':>8} {'vs NFXP':>8}")
    print(head)
    print("-" * len(head))
    for discount in ((0.9999, 0.0) if quick else DISCOUNTS):
        mdp, demos = rust_bus(groups, discount=discount)
        ref = nfxp.fit_nfxp(panel, discount, p=p)
        theta, se, ll = bayesirl_map(mdp, demos)
        (t_ref, c_ref), (t_map, c_map) = _paired_medians(
            [lambda d=discount: nfxp.fit_nfxp(panel, d, p=p),
             lambda m=mdp, d=demos: bayesirl_map(m, d)], repeats)
        ratio, cpu_ratio = t_map / t_ref, c_map / c_ref
        agree = np.abs(theta - ref.params).max()
        for fit, th, s, lik, secs in (("NFXP", ref.params, ref.se_hessian, ref.loglik_choice,
                                       t_ref), ("bayesirl", theta, se, ll, t_map)):
            s = (None, None) if s is None else s
            tail = f" {ratio:7.1f}x" if fit == "bayesirl" else ""
            print(f"{discount:>8} {fit:<9} {th[0]:9.4f} {th[1]:9.4f} {_fmt(s[0], 3):>8}"
                  f" {_fmt(s[1], 3):>8} {lik:10.3f} {secs:8.4f}{tail}")
            for i, name in enumerate(("theta_11", "RC")):
                record("partial", groups, discount, fit, name, float(th[i]),
                       se=None if s[i] is None else float(s[i]), loglik=lik, seconds=secs,
                       reference=float(ref.params[i]) if fit == "bayesirl" else None,
                       note=(f"time ratio {ratio:.2f} (CPU {cpu_ratio:.2f}; CPU s "
                             f"{c_map:.4f} vs {c_ref:.4f})" if fit == "bayesirl" else ""))
        verdict = "PASS" if agree < 5e-4 else "FAIL"
        line = f"         max |bayesirl - NFXP| = {agree:.1e} ({verdict}: 3 decimals)"
        line += f"; CPU time {c_map:.4f} s vs {c_ref:.4f} s, ratio {cpu_ratio:.1f}x"
        if discount == 0.9999:
            line += (f"; wall ratio {ratio:.1f}x "
                     f"({'PASS' if ratio <= TARGET_TIME_RATIO else 'FAIL'}: <= "
                     f"{TARGET_TIME_RATIO:g}x)")
        print(line)
    print("se: bayesirl's from infer's extra['standard_errors'] (blank where infer gives none); "
          "NFXP's from the inverse observed information.")


def _full_table(quick, record):
    print("\n2-3. Full likelihood (stage 3) and Rust's Table IX (S = 90; published s.e. are "
          "BHHH)")
    head = (f"{'groups':>8} {'discount':>8} {'fit':<10} {'theta_11':>9} {'RC':>9} {'p0':>7}"
            f" {'p1':>7} {'se th11':>13} {'se RC':>13} {'LL full':>10} {'seconds':>8}")
    print(head)
    print("-" * len(head))
    print(f"{'':>38}{'Hess / BHHH':>27}{'Hess / BHHH':>14}")
    cases = [((4,), 0.9999), ((4,), 0.0)]
    if not quick:
        cases += [((4,), 0.99), ((4,), 0.975), ((1, 2, 3), 0.9999), ((1, 2, 3), 0.0),
                  ((1, 2, 3, 4), 0.9999), ((1, 2, 3, 4), 0.0)]
    for groups, discount in cases:
        mdp, demos = rust_bus(groups, discount=discount)
        transitions = rust_bus_transitions(groups)
        fit = full_likelihood(mdp, demos, transitions)
        theta, p = fit.params["theta"].numpy(), fit.params["p"][0].numpy()
        se, opg = fit.standard_errors["theta"].numpy(), fit.opg_standard_errors["theta"].numpy()
        se_p, opg_p = fit.standard_errors["p"][0].numpy(), fit.opg_standard_errors["p"][0].numpy()
        label = ",".join(map(str, groups))
        t0 = time.perf_counter()
        ref = nfxp.fit_nfxp(nfxp_panel(groups), discount, full=True)
        t_ref = time.perf_counter() - t0
        pub = published(groups, discount)
        lines = [("bayesirl", theta, p, se, opg, fit.log_likelihood, fit.seconds),
                 ("NFXP", ref.params[:2], ref.p, ref.se_hessian[:2], ref.se_bhhh[:2],
                  ref.loglik, t_ref)]
        for fit_name, th, pp, s, o, ll, secs in lines:
            print(f"{label:>8} {discount:>8} {fit_name:<10} {th[0]:9.4f} {th[1]:9.4f}"
                  f" {pp[0]:7.4f} {pp[1]:7.4f} {s[0]:6.3f}/{o[0]:6.3f} {s[1]:6.3f}/{o[1]:6.3f}"
                  f" {ll:10.3f} {secs:8.3f}")
        if pub:
            print(f"{label:>8} {discount:>8} {'Rust 1987':<10} {pub['theta11'][0]:9.4f}"
                  f" {pub['RC'][0]:9.4f} {pub['theta30'][0]:7.4f} {pub['theta31'][0]:7.4f}"
                  f" {'':>6} {pub['theta11'][1]:6.3f} {'':>6} {pub['RC'][1]:6.3f}"
                  f" {pub['loglik']:10.3f}")
        names = ("theta_11", "RC", "p0", "p1")
        values = (*theta, p[0], p[1])
        ses = (*se, se_p[0], se_p[1])
        opgs = (*opg, opg_p[0], opg_p[1])
        pub_keys = ("theta11", "RC", "theta30", "theta31")
        for name, v, s, o, key in zip(names, values, ses, opgs, pub_keys, strict=True):
            ref_v, ref_se = pub.get(key, (None, None))
            record("full", groups, discount, "bayesirl", name, float(v), se=float(s),
                   se_opg=float(o), loglik=fit.log_likelihood, seconds=fit.seconds,
                   reference=ref_v, reference_se=ref_se, note="Rust (1987) Table IX")
        if discount == 0.9999 and groups == (4,):
            se_ok = all(round(float(o), 2) == round(pub[k][1], 2)
                        for o, k in zip(opg, ("theta11", "RC"), strict=True))
            lap_ok = all(round(float(s), 2) == round(pub[k][1], 2)
                         for s, k in zip(se, ("theta11", "RC"), strict=True))
            print(f"         s.e. vs published {pub['theta11'][1]} / {pub['RC'][1]} to two "
                  f"digits: BHHH {'PASS' if se_ok else 'FAIL'}, Laplace (inverse Hessian) "
                  f"{'PASS' if lap_ok else 'FAIL'}")


def _nuts_and_demand(quick, record):
    import arviz as az

    groups, discount = (4,), 0.9999
    samples, warmup = (200, 200) if quick else (1000, 1000)
    mdp, demos = rust_bus(groups, discount=discount)
    pub = published(groups, discount)
    print(f"\n4. NUTS, group 4, discount {discount}, flat prior, 2 chains x ({warmup} warmup + "
          f"{samples} draws), chains in parallel processes")
    t0, children = time.perf_counter(), _children_cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short --quick run may warn about its ESS
        post = birl.infer(mdp, demos, birl.LinearReward(mdp.features, prior=flat()),
                          method="nuts", num_samples=samples, warmup=warmup, num_chains=2,
                          seed=0, progress=False, parallel=True)
    seconds, chain_cpu = time.perf_counter() - t0, _children_cpu() - children
    idata = post.to_arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = az.ess(idata, var_names=["theta"], method="bulk")["theta"].values
        rhat = az.rhat(idata, var_names=["theta"])["theta"].values
    draws = post.samples["theta"].numpy()
    lo, hi = np.quantile(draws, [0.025, 0.975], axis=0)
    mean = draws.mean(0)
    print(f"{'':10} {'mean':>8} {'95% interval':>20} {'published':>10} {'inside':>7}"
          f" {'bulk ESS':>9} {'R-hat':>6}")
    for i, (name, key) in enumerate((("theta_11", "theta11"), ("RC", "RC"))):
        inside = lo[i] <= pub[key][0] <= hi[i]
        print(f"{name:10} {mean[i]:8.4f} [{lo[i]:8.4f}, {hi[i]:8.4f}] {pub[key][0]:10.4f}"
              f" {'yes' if inside else 'NO':>7} {ess[i]:9.0f} {rhat[i]:6.3f}")
        record("nuts", groups, discount, "bayesirl NUTS", name, float(mean[i]),
               se=float(draws[:, i].std()), seconds=seconds, reference=pub[key][0],
               reference_se=pub[key][1],
               note=f"95% [{lo[i]:.4f}, {hi[i]:.4f}]; bulk ESS {ess[i]:.0f}; R-hat "
                    f"{rhat[i]:.3f}")
    stats = post.sample_stats
    n_div = int(stats["diverging"].sum()) if "diverging" in stats else 0
    n_steps = int(stats["n_steps"].sum()) if "n_steps" in stats else 0
    print(f"{seconds:.1f} s ({'PASS' if seconds < TARGET_NUTS_SECONDS else 'FAIL'}: < "
          f"{TARGET_NUTS_SECONDS:g} s); min bulk ESS {ess.min():.0f} "
          f"({'PASS' if ess.min() >= TARGET_ESS else 'FAIL'}: >= {TARGET_ESS}); "
          f"{n_div} divergences; {seconds / max(ess.min(), 1):.3f} s per effective draw")
    print(f"CPU time of the two chains' processes (start-up included): {chain_cpu:.1f} s, "
          f"{chain_cpu / 2:.1f} s each: the wall time two idle cores would need")
    t_grad = _gradient_seconds(mdp, demos, post)
    print(f"cost: {n_steps} leapfrog steps in the kept draws; one potential + gradient "
          f"{t_grad * 1e3:.2f} ms here (median of 50 at the posterior mean, 1 thread), so the "
          f"kept draws alone need {n_steps * t_grad:.1f} s of one core")
    record("nuts", groups, discount, "bayesirl NUTS", "gradient seconds", t_grad,
           seconds=seconds, note=f"{n_steps} leapfrog steps in the kept draws")
    record("nuts", groups, discount, "bayesirl NUTS", "chain CPU seconds", chain_cpu,
           seconds=seconds, note="CPU time of both chain processes, start-up included")

    grid = torch.linspace(2.0, 20.0, 7 if quick else 19)
    t0 = time.perf_counter()
    curve = birl.decisions.replacement_demand(post, grid, prob=0.95, progress=False)
    t_curve = time.perf_counter() - t0
    n_draws = curve.draws.shape[1]
    print(f"\n5. Demand curve: expected replacements per bus-year (12 x the stationary "
          f"replacement frequency) against RC, theta_11 at its {n_draws} posterior draws "
          f"({t_curve:.1f} s for {len(grid) * n_draws} policies)")
    print(f"{'RC':>6} {'mean':>8} {'95% band':>20}")
    for c, m, lo_, hi_ in zip(grid.tolist(), curve.mean.tolist(), curve.lower.tolist(),
                              curve.upper.tolist(), strict=True):
        print(f"{c:6.1f} {m:8.4f} [{lo_:8.4f}, {hi_:8.4f}]")
        record("demand", groups, discount, "bayesirl NUTS", f"demand at RC={c:g}", m,
               seconds=t_curve, note=f"95% [{lo_:.4f}, {hi_:.4f}]")


def _dynamics_demand(quick, record):
    groups, discount = (4,), 0.9999
    samples, warmup = (200, 200) if quick else (1000, 1000)
    mdp, demos = rust_bus(groups, discount=discount)
    transitions = rust_bus_transitions(groups)
    model = FullLikelihood(birl.LinearReward(mdp.features, prior=flat()), transitions)
    print(f"\n6. Demand with the dynamics' uncertainty: NUTS on the full likelihood (theta and "
          f"p), group 4, discount {discount}, 2 chains x ({warmup} warmup + {samples} draws), "
          "chains in parallel processes")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short --quick run may warn about its ESS
        post = birl.infer(mdp, demos, model, method="nuts", num_samples=samples,
                          warmup=warmup, num_chains=2, seed=0, progress=False, parallel=True)
    seconds = time.perf_counter() - t0
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = az.ess(post.to_arviz(), var_names=["theta", "p"], method="bulk")
    min_ess = min(float(ess[k].values.min()) for k in ("theta", "p"))
    p = post.samples["p"][:, 0]
    print(f"{seconds:.1f} s; min bulk ESS over theta and p {min_ess:.0f}; p = "
          + ", ".join(f"{float(m):.4f} (sd {float(sd):.4f})"
                      for m, sd in zip(p.mean(0), p.std(0), strict=True)))
    record("demand_dynamics", groups, discount, "bayesirl NUTS full", "seconds", seconds,
           seconds=seconds, note=f"min bulk ESS {min_ess:.0f} over theta and p")
    grid = torch.linspace(2.0, 20.0, 7 if quick else 19)
    curves = {}
    for name, probs in (("own p", "draws"), ("first stage", mdp.transition_probs)):
        t0 = time.perf_counter()
        curve = birl.decisions.replacement_demand(post, grid, transition_probs=probs,
                                                  prob=0.95, progress=False)
        curves[name] = (curve, time.perf_counter() - t0)
    n = len(grid) * curves["own p"][0].draws.shape[1]
    print(f"demand per bus-year, 95% bands; {n} policies each: each draw in its own p "
          f"{curves['own p'][1]:.1f} s, every draw in the first stage's p "
          f"{curves['first stage'][1]:.1f} s")
    print(f"{'RC':>6} {'mean':>8} {'band, own p':>20} {'band, first stage':>20} "
          f"{'width ratio':>12}")
    own, fixed = curves["own p"][0], curves["first stage"][0]
    for i, c in enumerate(grid.tolist()):
        w_own = float(own.upper[i] - own.lower[i])
        w_fixed = float(fixed.upper[i] - fixed.lower[i])
        print(f"{c:6.1f} {float(own.mean[i]):8.4f} [{float(own.lower[i]):8.4f}, "
              f"{float(own.upper[i]):8.4f}] [{float(fixed.lower[i]):8.4f}, "
              f"{float(fixed.upper[i]):8.4f}] {w_own / w_fixed:12.3f}")
        for name, (curve, secs) in curves.items():
            record("demand_dynamics", groups, discount, f"bayesirl NUTS full, {name}",
                   f"demand at RC={c:g}", float(curve.mean[i]), seconds=secs,
                   note=f"95% [{float(curve.lower[i]):.4f}, {float(curve.upper[i]):.4f}]")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="group 4, fewer repeats")
    main(parser.parse_args().quick)
