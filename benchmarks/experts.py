"""Many experts and preferences: partial pooling against pooled and separate fits, and the speed
of a preference-only posterior.

**Experts** (``results/experts.csv``: ``fit, n_experts, demos_per_expert, seed, evd_mean``).
A Garnet MDP (``envs.random_mdp(n_states=30, n_actions=4, n_features=4, horizon=10)``, seed
7); a population with mean weights ``mu`` (a standard normal draw, seed 11) and scale
``tau = 0.5`` per feature; E experts with ``theta_e = mu + tau z_e`` and rationalities cycling
through ``(0.5, 1, 2, 4)``, each demonstrating ``demos_per_expert`` trajectories of 10 steps
from its soft-optimal policy (``model.simulate_experts``, seeded per seed). Three fits of the
same data, each :class:`~bayesirl.HierarchicalReward` with a shared rationality 1 (the model is
not told the experts differ; their weights absorb it), sampled by
:func:`~bayesirl.model.ensemble_hmc`:

- ``pooled`` (``pooling="complete"``): one reward for everyone;
- ``separate`` (``pooling="none"``): every expert alone, ``theta_e ~ N(0, I)``;
- ``hierarchical`` (``pooling="partial"``): ``mu ~ N(0, I)``, ``tau ~ HalfNormal(1)``.

``evd_mean``: the mean over experts of the expected value difference (``metrics``) of the
optimal policy for the expert's posterior-mean reward, under the expert's true reward. Target
(printed PASS/FAIL): with at most 5 demonstrations per expert, the hierarchical fit's
``evd_mean`` (mean over seeds) is below both others'. The first seed's PSIS-LOO comparison of
the three fits (``model.loo_compare``) is printed too.

**Preferences** (``results/preferences.csv``: ``n_features, n_pairs, draws, min_ess, seconds,
sampler``). Bayesian REX's setting: a linear reward on 64 features, 1 000 pairwise preferences
between 1 000 trajectories given by their feature sums (standard normal), labelled by
Bradley-Terry with the true weights ``2 N(0, I) / 8``; ``N(0, 1)`` prior. Target: 100 000 draws
with min bulk ESS >= 1 000 in under 60 s (Bayesian REX: about 5 minutes on a laptop).
``ensemble_hmc`` draws them (100 chains x 1 000 after 200 warmup iterations, one batched
potential per leapfrog step: the potential is one matrix product). For comparison ``infer``'s
NUTS (Pyro, 2 chains, 300 + 300, one after the other) on the same target: Pyro's
per-iteration overhead of milliseconds, not the density, bounds it; its time to 100 000 draws
is printed as an extrapolation. ``seconds`` is the sampler's own wall time (warmup included,
ESS and table excluded), ``cpu_seconds`` its process CPU time (one thread: the wall time of an
idle machine; on a shared machine the wall time is longer).

``main(quick=True)`` (``--quick``): 6 experts, 3 demonstrations each, seeds 0-1, shorter
chains; and the full 64-feature, 1 000-pair preference row. The full run: 8 experts,
demonstrations per expert 2 and 5, seeds 0-4. Every fit is float64 on one thread.

Run: ``python benchmarks/experts.py [--quick]``.
"""

from __future__ import annotations

import argparse
import csv
import math
import pathlib
import time
import warnings

import numpy as np
import torch

import bayesirl as birl
from bayesirl.core.preferences import Preferences
from bayesirl.model.hierarchical import HierarchicalReward, loo_compare, simulate_experts
from bayesirl.model.preferences import PreferenceModel, ensemble_hmc

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
FITS = {"pooled": "complete", "separate": "none", "hierarchical": "partial"}
RATIONALITIES = (0.5, 1.0, 2.0, 4.0)
TAU = 0.5


def _ess(draws: np.ndarray) -> np.ndarray:
    """Bulk ESS per coordinate of ``(chains, draws, d)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az.ess(az.convert_to_dataset({"x": draws}), method="bulk")["x"].values


def _fit(mdp, data, pooling, samples, warmup, chains, seed):
    target = HierarchicalReward(mdp.features, data.n_experts, pooling=pooling).build_target(
        mdp, data)
    run = ensemble_hmc(target, num_samples=samples, warmup=warmup, num_chains=chains,
                       seed=seed, progress=False)
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in run.params.items()}
    stats = {k: v.reshape(chains, samples) for k, v in run.sample_stats.items()}
    return target.make_posterior(flat, method="ensemble_hmc", sample_stats=stats,
                                 num_chains=chains), run.seconds


def experts(quick: bool) -> list[dict]:
    E = 6 if quick else 8
    per_expert = (3,) if quick else (2, 5)
    seeds = range(2) if quick else range(5)
    samples, warmup, chains = (150, 150, 8) if quick else (250, 250, 16)
    mdp = birl.envs.random_mdp(n_states=30, n_actions=4, n_features=4, horizon=10, seed=7,
                               dtype=torch.float64)
    mu = torch.randn(4, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    betas = [RATIONALITIES[e % len(RATIONALITIES)] for e in range(E)]
    rows = []
    print(f"experts: {E} experts, rationalities {betas}, tau {TAU}, "
          f"{chains} chains x ({warmup} + {samples})")
    for seed in seeds:
        for n in per_expert:
            data, theta = simulate_experts(mdp, mdp.features, n, mean=mu, scale=TAU,
                                           n_experts=E, rationality=betas, seed=seed)
            truth = theta @ mdp.features.T                                     # (E, S)
            posts = {}
            for fit, pooling in FITS.items():
                post, seconds = _fit(mdp, data, pooling, samples, warmup, chains, seed)
                mean_reward = post.reward().mean(0)                            # (E, S, A)
                evd = torch.stack([birl.metrics.expected_value_difference(
                    mdp, truth[e], mean_reward[e]) for e in range(E)])
                rows.append({"fit": fit, "n_experts": E, "demos_per_expert": n, "seed": seed,
                             "evd_mean": float(evd.mean()), "seconds": round(seconds, 2)})
                print(f"  seed {seed} demos/expert {n} {fit:>12}: evd_mean "
                      f"{float(evd.mean()):.4f} ({seconds:.1f} s)")
                posts[fit] = post
            if seed == seeds[0] and n == per_expert[0]:
                with warnings.catch_warnings():  # few draws: PSIS warns about Pareto k
                    warnings.simplefilter("ignore", UserWarning)
                    table = loo_compare(posts)
                print(table[["rank", "elpd_loo", "p_loo", "elpd_diff", "dse"]].to_string())
    return rows


def _preference_problem(d=64, P=1000, M=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    F = torch.randn(M, d, generator=g, dtype=torch.float64)
    theta = 2 * torch.randn(d, generator=g, dtype=torch.float64) / math.sqrt(d)
    i = torch.randint(M, (P,), generator=g)
    j = (i + torch.randint(1, M, (P,), generator=g)) % M                     # j != i
    R = F @ theta
    win = torch.rand(P, generator=g, dtype=torch.float64) < torch.sigmoid(R[i] - R[j])
    pairs = torch.stack([torch.where(win, i, j), torch.where(win, j, i)], -1)
    return Preferences.from_pairs(pairs, features=F)


def preferences() -> list[dict]:
    d, P = 64, 1000
    prefs = _preference_problem(d, P)
    model = PreferenceModel(birl.LinearReward(torch.eye(d, dtype=torch.float64)))
    target = model.build_target(None, prefs)
    rows = []
    chains, samples, warmup = 100, 1000, 200
    cpu = time.process_time()
    run = ensemble_hmc(target, num_samples=samples, warmup=warmup, num_chains=chains, seed=0,
                       progress=False)
    cpu = time.process_time() - cpu
    ess = _ess(run.params["theta"].numpy())
    rows.append({"n_features": d, "n_pairs": P, "draws": chains * samples,
                 "min_ess": round(float(ess.min())), "seconds": round(run.seconds, 2),
                 "cpu_seconds": round(cpu, 2), "sampler": "ensemble_hmc"})
    n_steps = float(run.sample_stats["n_steps"][0].float().mean())
    print(f"preferences: {d} features, {P} pairs; ensemble HMC {chains} chains x ({warmup} + "
          f"{samples}): {chains * samples} draws, min ESS {ess.min():.0f} in "
          f"{run.seconds:.1f} s wall, {cpu:.1f} s CPU ({n_steps:.1f} leapfrog steps per draw)")
    # Pyro's NUTS through infer(), short: its cost per draw
    n_nuts = 300
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # short chains: ESS warnings
        post = birl.infer(None, prefs, model, method="nuts", num_samples=n_nuts,
                          warmup=n_nuts, num_chains=2, parallel=False, progress=False,
                          map_init=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    ess = _ess(post.params["theta"].numpy())
    rows.append({"n_features": d, "n_pairs": P, "draws": 2 * n_nuts,
                 "min_ess": round(float(ess.min())), "seconds": round(seconds, 2),
                 "cpu_seconds": round(cpu, 2), "sampler": "pyro_nuts"})
    per_draw = cpu / (2 * n_nuts) / 2  # warmup and sampling iterations alike
    print(f"  Pyro NUTS via infer, 2 chains x ({n_nuts} + {n_nuts}): min ESS "
          f"{ess.min():.0f} in {seconds:.1f} s wall, {cpu:.1f} s CPU; 100 000 draws would take "
          f"about {per_draw * 100_000 / 60:.0f} CPU minutes")
    return rows


def _write(name, rows, fields):
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def main(quick: bool = False) -> list[dict]:
    """Run both studies, print the tables and targets, write the CSV files; return the rows."""
    torch.set_num_threads(1)
    pref_rows = preferences()
    _write("preferences.csv", pref_rows,
           ["n_features", "n_pairs", "draws", "min_ess", "seconds", "cpu_seconds", "sampler"])
    fast = pref_rows[0]
    ok = fast["min_ess"] >= 1000 and fast["seconds"] < 60 and fast["draws"] >= 100_000
    print(f"target: 100 000 draws with min ESS >= 1000 in < 60 s: "
          f"{fast['draws']} draws, min ESS {fast['min_ess']}, {fast['seconds']} s wall "
          f"({fast['cpu_seconds']} s CPU: on a machine shared with other work the wall time "
          f"exceeds it) -> {'PASS' if ok else 'FAIL'}")
    rows = experts(quick)
    _write("experts.csv", rows,
           ["fit", "n_experts", "demos_per_expert", "seed", "evd_mean"])
    print("mean EVD per expert over seeds:")
    for n in sorted({r["demos_per_expert"] for r in rows}):
        means = {fit: float(np.mean([r["evd_mean"] for r in rows
                                     if r["fit"] == fit and r["demos_per_expert"] == n]))
                 for fit in FITS}
        verdict = ("PASS" if means["hierarchical"] < min(means["pooled"], means["separate"])
                   else "FAIL")
        print(f"  {n} demos/expert: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items())
              + (f" -> hierarchical below both: {verdict}" if n <= 5 else ""))
    return pref_rows + rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes)")
    main(parser.parse_args().quick)
