"""Many experts and preferences: partial pooling against pooled and separate fits, and the speed
of a preference-only posterior.

**Experts** (``results/experts.csv``: ``fit, n_experts, demos_per_expert, seed, evd_mean``,
then ``rationality, max_rhat, min_ess, cpu_seconds``). A Garnet MDP
(``envs.random_mdp(n_states=30, n_actions=4, n_features=4, horizon=10)``, seed 7); a
population with mean weights ``mu`` (a standard normal draw, seed 11) and scale ``tau = 0.5``
per feature; E experts with ``theta_e = mu + tau z_e``, each demonstrating
``demos_per_expert`` trajectories of 10 steps from its soft-optimal policy
(``model.simulate_experts``, seeded per seed), with rationality 2 for everyone (``equal``) or
cycling through ``(0.5, 1, 2, 4)`` (``varied``). Three fits of the same data, each
:class:`~bayesirl.HierarchicalReward` with a shared rationality 1 (the model is not told the
rationalities; the weights absorb them, which for ``varied`` makes the hierarchy's additive
spread a misspecified model of multiplicative differences), sampled by ``infer``'s vectorized
chains (``method="hmc", chain_method="vectorized"``: 16 ChEES-HMC chains in lockstep, one
batched planner call per leapfrog step for all chains and experts):

- ``pooled`` (``pooling="complete"``): one reward for everyone;
- ``separate`` (``pooling="none"``): every expert alone, ``theta_e ~ N(0, I)``;
- ``hierarchical`` (``pooling="partial"``): ``mu ~ N(0, I)``, ``tau ~ HalfNormal(1)``.

``evd_mean``: the mean over experts of the expected value difference (``metrics``) of the
optimal policy for the expert's posterior-mean reward, under the expert's true reward;
``max_rhat``, ``min_ess``: the worst R-hat and bulk ESS over the fit's sites. Target (printed
PASS/FAIL per setting): with at most 5 demonstrations per expert, the hierarchical fit's
``evd_mean`` (mean over seeds) is below both others'. The first seed's PSIS-LOO comparison of
the three fits (``model.loo_compare``) is printed too.

**Preferences** (``results/preferences.csv``: ``n_features, n_pairs, draws, min_ess, seconds,
sampler``). Bayesian REX's setting: a linear reward on 64 features, 1 000 pairwise preferences
between 1 000 trajectories given by their feature sums (standard normal), labelled by
Bradley-Terry with the true weights ``2 N(0, I) / 8``; ``N(0, 1)`` prior. Target: 100 000 draws
with min bulk ESS >= 1 000 in under 60 s (Bayesian REX: about 5 minutes on a laptop).
``infer(None, preferences, PreferenceModel(LinearReward(eye(64))), method="hmc",
chain_method="vectorized", num_chains=100, num_samples=1000, warmup=200)`` draws them, with
a diagonal mass matrix (``sampler`` ``vectorized``, infer's default above 50 parameters) and a
dense one (``vectorized_dense``, ``dense_mass=True``): one batched potential per leapfrog step
for all chains, the potential one matrix product in a fused autograd node. For comparison
``infer``'s NUTS (Pyro, 2 chains, 300 + 300, one after the other) on the same target: Pyro's
per-iteration overhead of milliseconds, not the density, bounds it; its time to 100 000 draws
is printed as an extrapolation. ``seconds`` is ``infer``'s wall time (MAP start, warmup and
sampling; ESS and table excluded), ``cpu_seconds`` its process CPU time (one thread: the wall
time of an idle machine; on a shared machine the wall time is longer).

``main(quick=True)`` (``--quick``): 6 experts, 3 demonstrations each, seeds 0-1, chains of
200 + 200; and the full 64-feature, 1 000-pair preference row. The full run: 8 experts,
demonstrations per expert 2 and 5, seeds 0-4, chains of 300 + 300. Every fit is float64 on one
thread.

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
from bayesirl.model.preferences import PreferenceModel

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
    model = HierarchicalReward(mdp.features, data.n_experts, pooling=pooling)
    cpu = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the diagnostics are in the table
        post = birl.infer(mdp, data, model, method="hmc", chain_method="vectorized",
                          num_samples=samples, warmup=warmup, num_chains=chains, seed=seed,
                          progress=False)
    cpu = time.process_time() - cpu
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's notices
        table = post.summary(var_names=list(post.params))
    return post, cpu, float(table["r_hat"].max()), float(table["ess_bulk"].min())


def experts(quick: bool) -> list[dict]:
    E = 6 if quick else 8
    per_expert = (3,) if quick else (2, 5)
    seeds = range(2) if quick else range(5)
    samples, warmup, chains = (200, 200, 16) if quick else (300, 300, 16)
    mdp = birl.envs.random_mdp(n_states=30, n_actions=4, n_features=4, horizon=10, seed=7,
                               dtype=torch.float64)
    mu = torch.randn(4, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    settings = {"equal": [2.0] * E,
                "varied": [RATIONALITIES[e % len(RATIONALITIES)] for e in range(E)]}
    rows = []
    print(f"experts: {E} experts, tau {TAU}, rationalities {settings}, {chains} chains x "
          f"({warmup} + {samples})")
    for seed in seeds:
        for rationality, betas in settings.items():
            for n in per_expert:
                data, theta = simulate_experts(mdp, mdp.features, n, mean=mu, scale=TAU,
                                               n_experts=E, rationality=betas, seed=seed)
                truth = theta @ mdp.features.T                                 # (E, S)
                posts = {}
                for fit, pooling in FITS.items():
                    post, cpu, rhat, ess = _fit(mdp, data, pooling, samples, warmup, chains,
                                                seed)
                    mean_reward = post.reward().mean(0)                        # (E, S, A)
                    evd = torch.stack([birl.metrics.expected_value_difference(
                        mdp, truth[e], mean_reward[e]) for e in range(E)])
                    rows.append({"fit": fit, "n_experts": E, "demos_per_expert": n,
                                 "seed": seed, "evd_mean": round(float(evd.mean()), 5),
                                 "rationality": rationality, "max_rhat": round(rhat, 3),
                                 "min_ess": round(ess), "cpu_seconds": round(cpu, 1)})
                    print(f"  seed {seed} {rationality:>6} rationality, {n} demos/expert, "
                          f"{fit:>12}: evd_mean {float(evd.mean()):.4f} (R-hat <= {rhat:.3f},"
                          f" ESS >= {ess:.0f}, {cpu:.1f} s CPU)")
                    posts[fit] = post
                if seed == seeds[0] and n == per_expert[0]:
                    with warnings.catch_warnings():  # PSIS warns about its Pareto k
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
    rows = []
    chains, samples, warmup = 100, 1000, 200
    for sampler, dense in (("vectorized", False), ("vectorized_dense", True)):
        start, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            post = birl.infer(None, prefs, model, method="hmc", chain_method="vectorized",
                              num_samples=samples, warmup=warmup, num_chains=chains, seed=0,
                              dense_mass=dense, progress=False)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        ess = _ess(post.params["theta"].numpy())
        rows.append({"n_features": d, "n_pairs": P, "draws": chains * samples,
                     "min_ess": round(float(ess.min())), "seconds": round(seconds, 2),
                     "cpu_seconds": round(cpu, 2), "sampler": sampler})
        print(f"preferences: {d} features, {P} pairs; infer vectorized "
              f"({'dense' if dense else 'diagonal'} mass), {chains} chains x ({warmup} + "
              f"{samples}): {chains * samples} draws, min ESS {ess.min():.0f} in "
              f"{seconds:.1f} s wall, {cpu:.1f} s CPU")
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
    for fast in pref_rows[:2]:
        ok = fast["min_ess"] >= 1000 and fast["seconds"] < 60 and fast["draws"] >= 100_000
        print(f"target: 100 000 draws with min ESS >= 1000 in < 60 s ({fast['sampler']}): "
              f"{fast['draws']} draws, min ESS {fast['min_ess']}, {fast['seconds']} s wall "
              f"({fast['cpu_seconds']} s CPU; on a machine shared with other work the wall "
              f"time exceeds it) -> {'PASS' if ok else 'FAIL'}")
    rows = experts(quick)
    _write("experts.csv", rows, ["fit", "n_experts", "demos_per_expert", "seed", "evd_mean",
                                 "rationality", "max_rhat", "min_ess", "cpu_seconds"])
    print("mean EVD per expert over seeds:")
    for rationality in ("equal", "varied"):
        for n in sorted({r["demos_per_expert"] for r in rows}):
            means = {fit: float(np.mean([r["evd_mean"] for r in rows if r["fit"] == fit
                                         and r["demos_per_expert"] == n
                                         and r["rationality"] == rationality]))
                     for fit in FITS}
            verdict = ("PASS" if means["hierarchical"] < min(means["pooled"],
                                                             means["separate"]) else "FAIL")
            print(f"  {rationality:>6} rationality, {n} demos/expert: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in means.items())
                  + (f" -> hierarchical below both: {verdict}" if n <= 5 else ""))
    return pref_rows + rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes)")
    main(parser.parse_args().quick)
