"""Inference speed: min-ESS per second of bayesirl's NUTS beside the baselines users have today.

Problem (issue "Bayesian reward inference", section 6): an 8x8 gridworld (slip 0.1, horizon 30,
8 block features, 20 demonstrations from a known theta, Normal(0, 1) prior, soft likelihood).
Every sampler targets the same posterior, in one run, one thread:

- ``bayesirl``: ``birl.infer(method="nuts")``;
- ``pyro-naive``: the obvious Pyro model a user would write (reward -> soft value iteration
  in a Python loop of torch ops -> ``pyro.factor``), sampled with Pyro's NUTS;
- ``policywalk``: PolicyWalk (Ramachandran & Amir 2007), random-walk Metropolis in theta that
  re-plans at every proposal, its step size tuned during warmup to 0.234 acceptance;
- ``numpyro``: the same model in NumPyro, when the optional ``bench`` extra is installed.

min-ESS/s is the smallest bulk ESS over the theta coordinates (ArviZ; chains pooled) divided
by the sampling time, and by the total time including warmup. bayesirl runs infer()'s default
two chains one after the other, and PolicyWalk is given the same wall time: one chain's min ESS
is too noisy a statistic to compare samplers by. A second table runs the 144-parameter tabular
task (12x12 gridworld discounted at 0.9, as ValueWalk's, 50 demonstrated state-action pairs,
N(0, 10^2) prior, Boltzmann likelihood) for bayesirl's NUTS (infer()'s default 2 chains, in
parallel processes) and PolicyWalk (one chain, given the same wall time), as seconds per
effective sample, wall clock and per core: bayesirl's NUTS samples the values instead of the
rewards (``space="value"``, ValueWalk's idea) and refracts at the greedy policy's jumps. A
third table runs the task with the soft likelihood, also in value space; a fourth on a
finite horizon of 20 with the Boltzmann likelihood, in reward space (value space needs a
discounted MDP). A last line reports SVI (MVN guide): seconds until its posterior means are
within 0.1 posterior sd of NUTS's.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import torch

import bayesirl as birl
from bayesirl.posterior.diagnostics import InferenceWarning

warnings.filterwarnings("ignore", category=InferenceWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


def gridworld_problem(n_demos=20):
    mdp = birl.envs.gridworld(size=8, slip=0.1, horizon=30, block=(4, 2), seed=0,
                              dtype=torch.float64)
    theta = torch.linspace(-1.0, 1.0, mdp.n_features, dtype=torch.float64)
    reward = mdp.features @ theta
    demos = birl.rollouts(mdp, birl.soft_value_iteration(mdp, reward), n=n_demos, seed=0)
    return mdp, demos


def min_ess(draws: np.ndarray) -> float:
    """Smallest bulk ESS over coordinates of ``draws: (chains, draws, d)``."""
    import arviz as az
    return float(min(az.ess(draws[..., i]) for i in range(draws.shape[-1])))


# ---------------------------------------------------------------- samplers under comparison
def run_bayesirl(mdp, demos, model, num_samples, warmup, likelihood="soft", num_chains=1,
                 parallel=False):
    """``num_chains`` chains, one after another or (``parallel``) in processes, one per core."""
    t0 = time.perf_counter()
    post = birl.infer(mdp, demos, model, method="nuts", num_samples=num_samples, warmup=warmup,
                      num_chains=num_chains, parallel=parallel, seed=0, progress=False,
                      likelihood=likelihood)
    total = time.perf_counter() - t0
    return post.params["theta"].numpy(), total, post.settings


def run_pyro_naive(mdp, demos, num_samples, warmup):
    """The straightforward Pyro model: dense soft VI loop, one pyro.factor."""
    P = mdp.transition_matrix()
    phi = mdp.features
    T, d = mdp.horizon, phi.shape[-1]
    steps = torch.arange(demos.max_length)

    def model():
        theta = pyro.sample("theta", dist.Normal(torch.zeros(d), 1.0).to_event(1))
        r = phi @ theta
        v = torch.zeros(mdp.n_states)
        log_pis = []
        for _ in range(T):
            q = r[:, None] + torch.einsum("sat,t->sa", P, v)
            v = torch.logsumexp(q, -1)
            log_pis.append(q - v[:, None])
        log_pi = torch.stack(log_pis[::-1])
        lp = log_pi[steps, demos.states, demos.actions]
        pyro.factor("demos", (lp * demos.mask).sum())

    pyro.set_rng_seed(0)
    kernel = pyro.infer.NUTS(model)
    mcmc = pyro.infer.MCMC(kernel, num_samples=num_samples, warmup_steps=warmup,
                           disable_progbar=True)
    t0 = time.perf_counter()
    mcmc.run()
    total = time.perf_counter() - t0
    return mcmc.get_samples(group_by_chain=True)["theta"].numpy(), total


def run_policywalk(log_post, d, num_samples, warmup, seed=0):
    """Random-walk Metropolis; the step is tuned in warmup (Robbins-Monro to 0.234)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.zeros(d, dtype=torch.float64)
    lp = log_post(theta)
    log_step = math.log(0.5 / math.sqrt(d))
    draws, accepted = [], 0
    t0 = time.perf_counter()
    t_sampling = None
    for i in range(warmup + num_samples):
        if i == warmup:
            t_sampling = time.perf_counter()
        prop = theta + math.exp(log_step) * torch.randn(d, generator=g, dtype=torch.float64)
        lp_prop = log_post(prop)
        accept = math.log(float(torch.rand((), generator=g))) < float(lp_prop - lp)
        if accept:
            theta, lp = prop, lp_prop
        if i < warmup:
            log_step += (float(accept) - 0.234) / math.sqrt(i + 1)
        else:
            accepted += accept
            draws.append(theta.numpy().copy())
    end = time.perf_counter()
    return np.stack(draws)[None], end - t0, end - t_sampling


def run_policywalk_for(seconds, log_post, d, min_steps):
    """PolicyWalk given ``seconds`` of wall time (half warmup, from a pilot's speed), and at
    least ``min_steps`` + ``min_steps`` steps."""
    _, pilot, _ = run_policywalk(log_post, d, 100, 100)
    n = max(min_steps, int(seconds / (pilot / 200) / 2))
    return n, run_policywalk(log_post, d, n, n)


def log_post_fn(mdp, demos, model, likelihood):
    from bayesirl.inference.facade import Target
    target = Target(mdp, demos, model, likelihood, 1.0)

    def log_post(theta):
        with torch.no_grad():
            return -target.potential({"theta": theta}, jacobian=False)
    return log_post


def run_numpyro(mdp, demos, num_samples, warmup):
    try:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as ndist
        from numpyro.infer import MCMC, NUTS
    except ImportError:
        return None
    P = jnp.asarray(mdp.transition_matrix().numpy())
    phi = jnp.asarray(mdp.features.numpy())
    states, actions = jnp.asarray(demos.states.numpy()), jnp.asarray(demos.actions.numpy())
    mask = jnp.asarray(demos.mask.numpy())
    T = mdp.horizon

    def model():
        theta = numpyro.sample("theta", ndist.Normal(jnp.zeros(phi.shape[1]), 1.0).to_event(1))
        r = phi @ theta

        def backup(v, _):
            q = r[:, None] + jnp.einsum("sat,t->sa", P, v)
            v = jax.nn.logsumexp(q, -1)
            return v, q - v[:, None]

        _, log_pis = jax.lax.scan(backup, jnp.zeros(P.shape[0]), None, length=T)
        log_pi = log_pis[::-1]
        lp = log_pi[jnp.arange(states.shape[1]), states, actions]
        numpyro.factor("demos", (lp * mask).sum())

    mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=num_samples, progress_bar=False)
    t0 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(0))
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["theta"])
    return draws, time.perf_counter() - t0


# ---------------------------------------------------------------- tables
def _row(name, draws, total, sampling=None):
    ess = min_ess(draws)
    sampling = total if sampling is None else sampling
    return {"sampler": name, "min_ess": ess, "seconds": total,
            "ess_per_s": ess / total, "ess_per_s_sampling": ess / sampling}


def table_gridworld(quick: bool):
    n, w = (150, 150) if quick else (1000, 1000)
    mdp, demos = gridworld_problem()
    model = birl.LinearReward(mdp.features)
    rows = []
    # bayesirl runs infer()'s default 2 chains, one after the other on one core, and
    # PolicyWalk gets the same wall time: the min ESS of one 1000-draw chain varies a lot
    # with the seed, and a short PolicyWalk chain's is too small to estimate a rate from
    draws, total, settings = run_bayesirl(mdp, demos, model, n, w, num_chains=2)
    rows.append(_row("bayesirl NUTS", draws, total))
    pw_n, (pw_draws, pw_total, sampling) = run_policywalk_for(
        total, log_post_fn(mdp, demos, model, "soft"), mdp.n_features, 4 * n)
    draws, seconds = run_pyro_naive(mdp, demos, n, w)
    rows.append(_row("pyro-naive NUTS", draws, seconds))
    rows.append(_row("PolicyWalk", pw_draws, pw_total, sampling))
    result = run_numpyro(mdp, demos, n, w)
    if result is not None:
        rows.append(_row("NumPyro NUTS", *result))
    print(f"8x8 gridworld, 8 features, horizon 30, 20 demos; {n} warmup + {n} draws, bayesirl "
          f"2 chains one after the other, others 1 chain (PolicyWalk {pw_n} + {pw_n}, the same "
          f"wall time as bayesirl's); {torch.get_num_threads()} thread(s)")
    print(f"{'sampler':<18}{'min ESS':>9}{'seconds':>9}{'ESS/s':>9}{'ESS/s incl. warmup':>20}")
    for r in rows:
        print(f"{r['sampler']:<18}{r['min_ess']:>9.0f}{r['seconds']:>9.1f}"
              f"{r['ess_per_s_sampling']:>9.2f}{r['ess_per_s']:>20.2f}")
    base = rows[0]["ess_per_s"]
    for r in rows[1:]:
        print(f"bayesirl / {r['sampler']}: {base / r['ess_per_s']:.1f}x (incl. warmup)")
    return rows


def _tabular_problem(**time):
    mdp = birl.envs.gridworld(size=12, slip=0.1, block=3, seed=1, dtype=torch.float64, **time)
    plan = birl.soft_value_iteration(mdp, 3 * mdp.reward)
    demos = birl.rollouts(mdp, plan, n=5, seed=0, length=10)  # 50 state-action pairs
    return mdp, demos, birl.TabularReward(mdp.n_states, prior=dist.Normal(0.0, 10.0))


def _tabular_table(title, mdp, demos, model, likelihood, quick):
    """bayesirl's NUTS (infer()'s default 2 chains, in parallel processes: one per core of
    this 2-core machine; the "per core" column divides by the cores used) beside PolicyWalk
    (one chain, one core) given the same wall time and at least 10x NUTS's draws: its chain
    barely moves in 144 dimensions, and on a short run the ESS estimate of a near-constant
    chain says little. Returns ``(rows, infer()'s settings)``."""
    n = warmup = 100 if quick else 300
    chains = min(2, os.cpu_count() or 1)
    draws, total, settings = run_bayesirl(mdp, demos, model, n, warmup, likelihood=likelihood,
                                          num_chains=chains, parallel=chains > 1)
    rows = [_row("bayesirl NUTS", draws, total)]
    pw_n, (draws, pw_total, sampling) = run_policywalk_for(
        total, log_post_fn(mdp, demos, model, likelihood), mdp.n_states, 10 * n)
    rows.append(_row("PolicyWalk", draws, pw_total, sampling))
    rows[0]["cores"], rows[1]["cores"] = chains, 1
    print(f"\n{title}; NUTS ({settings['space']} space) {chains} chain(s) x ({warmup} + {n}), "
          f"PolicyWalk {pw_n} + {pw_n}")
    print(f"{'sampler':<18}{'cores':>6}{'min ESS':>9}{'seconds':>9}{'s per ESS':>11}"
          f"{'core-s per ESS':>16}")
    for r in rows:
        per = r["seconds"] / max(r["min_ess"], 1e-9)
        print(f"{r['sampler']:<18}{r['cores']:>6}{r['min_ess']:>9.1f}{r['seconds']:>9.1f}"
              f"{per:>11.2f}{per * r['cores']:>16.2f}")
    ratio = rows[0]["ess_per_s"] / rows[1]["ess_per_s"]
    print(f"bayesirl / PolicyWalk (ESS/s): {ratio:.0f}x wall clock, {ratio / chains:.0f}x per "
          "core")
    return rows, settings


def table_tabular(quick: bool):
    """The issue's tabular task, discounted as ValueWalk's gridworld: infer() samples the
    values (space="value") and NUTS refracts at the greedy policy's jumps."""
    rows, settings = _tabular_table(
        "12x12 gridworld, discounted (gamma 0.9), tabular reward (144 parameters), 50 "
        "state-action pairs, N(0, 10^2) prior, Boltzmann likelihood",
        *_tabular_problem(discount=0.9), "boltzmann", quick)
    assert settings["space"] == "value"
    return rows


def table_tabular_finite(quick: bool):
    """The tabular task on a finite horizon, where infer() samples the rewards."""
    rows, settings = _tabular_table(
        "12x12 gridworld, horizon 20, tabular reward (144 parameters), 50 state-action pairs, "
        "N(0, 10^2) prior, Boltzmann likelihood", *_tabular_problem(horizon=20), "boltzmann",
        quick)
    assert settings["space"] == "reward"
    return rows


def table_tabular_values(quick: bool):
    """The tabular task on the discounted gridworld (gamma 0.9) with the soft likelihood,
    where infer() samples the soft values (space="value": no planning per gradient) rather
    than the rewards. Reward-space NUTS solves a soft Bellman fixed point and its adjoint at
    every gradient; its cost per gradient is printed beside value space's instead of a run,
    which would take hours."""
    mdp, demos, model = _tabular_problem(discount=0.9)
    rows, settings = _tabular_table(
        "12x12 gridworld, discounted (gamma 0.9), tabular reward (144 parameters), 50 "
        "state-action pairs, N(0, 10^2) prior, soft likelihood", mdp, demos, model, "soft",
        quick)
    assert settings["space"] == "value"
    from bayesirl.inference.target import Target
    from bayesirl.inference.value_space import ValueSpaceTarget
    target = Target(mdp, demos, model, "soft", 1.0)
    values = ValueSpaceTarget(target, torch.zeros(mdp.n_states, dtype=torch.float64))
    ms = [_ms_per_gradient(values.potential, values.init_unconstrained()),
          _ms_per_gradient(target.potential, {"theta": torch.zeros(mdp.n_states)})]
    print(f"potential + gradient: value space {ms[0]:.2f} ms, reward space {ms[1]:.1f} ms "
          f"({ms[1] / ms[0]:.0f}x)")
    return rows


def _ms_per_gradient(potential, u, n=20):
    u = {k: v.clone().requires_grad_() for k, v in u.items()}
    torch.autograd.grad(potential(u), list(u.values()))
    t0 = time.perf_counter()
    for _ in range(n):
        torch.autograd.grad(potential(u), list(u.values()))
    return (time.perf_counter() - t0) / n * 1e3


def svi_time_to_nuts(quick: bool):
    """SVI runs of more and more steps (infer()'s default lr, decayed to lr / 20 over the
    run: with a constant step the final iterate jitters around the optimum) until the
    largest |SVI mean - NUTS mean| / NUTS sd over theta is below 0.1; prints every run."""
    mdp, demos = gridworld_problem()
    model = birl.LinearReward(mdp.features)
    ref = birl.infer(mdp, demos, model, method="nuts", num_samples=500 if quick else 1000,
                     num_chains=2, parallel=False, seed=1, progress=False)
    mean, sd = ref.samples["theta"].mean(0), ref.samples["theta"].std(0)
    print("\nSVI (MVN guide) against NUTS (2 x 1000 draws): max over theta of |mean - NUTS "
          "mean| / NUTS sd, and SVI sd / NUTS sd")
    for steps in (200, 400, 800, 1600, 3200, 6400):
        t0 = time.perf_counter()
        post = birl.infer(mdp, demos, model, method="svi", guide="mvn", steps=steps,
                          lr_decay=0.05, num_samples=4000, seed=0, progress=False)
        seconds = time.perf_counter() - t0
        theta = post.samples["theta"]
        err = float(((theta.mean(0) - mean).abs() / sd).max())
        ratio = theta.std(0) / sd
        print(f"  {steps:>5} steps {seconds:>6.1f} s: mean error {err:.3f} sd; sd ratio "
              f"{float(ratio.min()):.2f}-{float(ratio.max()):.2f}")
        if err < 0.1:
            print(f"SVI (MVN guide): {seconds:.1f} s to means within 0.1 sd of NUTS's")
            return seconds
    print(f"SVI (MVN guide): means still {err:.3f} sd from NUTS's after {steps} steps")
    return None


def main(quick: bool = False, threads: int = 1):
    torch.set_num_threads(threads)
    torch.set_default_dtype(torch.float64)
    table_gridworld(quick)
    table_tabular(quick)
    table_tabular_values(quick)
    table_tabular_finite(quick)
    svi_time_to_nuts(quick)


if __name__ == "__main__":
    import sys
    main("--quick" in sys.argv)
