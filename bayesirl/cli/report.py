"""What a run writes: the summary table, the diagnostics lines, the figures and ``report.md``.

Each writer takes the output folder and returns what it wrote; :mod:`bayesirl.cli.app` decides
where that folder is and when it is complete. Every file is written whole or not at all
(:func:`~bayesirl.posterior.files.atomic_write`): an interrupt while drawing leaves the figures
finished so far and no part of the next. Figures are drawn on ``matplotlib.figure.Figure``
objects, never pyplot: no GUI backend and no global figure list.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

from bayesirl.cli.build import fast_mode
from bayesirl.posterior.files import atomic_write

__all__ = ["diagnostics_lines", "markdown_table", "summary_table", "write_csv",
           "write_decisions", "write_figures", "write_report"]


def _save(fig, path: Path, dpi: int) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def write_csv(table, path: Path) -> None:
    """A pandas table as CSV, written whole or not at all."""
    atomic_write(path, lambda tmp: table.to_csv(tmp))


def markdown_table(df) -> str:
    """A pandas DataFrame as a GitHub markdown table (no ``tabulate`` needed)."""
    cols = [""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * len(df.columns))
             + "|"]
    for index, row in df.iterrows():
        cells = [str(index)] + [_fmt(v) for v in row.values]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def summary_table(post):
    """The posterior's summary table (:meth:`RewardPosterior.summary`), with ArviZ's
    convergence columns for MCMC runs of two chains or more and ``estimate``/``se`` for a
    point estimate."""
    names = list(post.params) or ["reward"]
    if post.num_chains * post.num_draws < 2:
        return post.summary(var_names=names)
    logger = logging.getLogger("arviz")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # R-hat of a chain that never moved
            mcmc = post.method in ("nuts", "hmc") and post.num_draws >= 4
            return post.summary(var_names=names,
                                kind="all" if mcmc and post.num_chains >= 2 else "stats")
    finally:
        logger.setLevel(level)


def diagnostics_lines(post, caught: list[str]) -> list[str]:
    """Human-readable diagnostics lines."""
    from bayesirl.posterior.diagnostics import BFMI_MIN, ESS_MIN, RHAT_MAX

    lines = list(caught)
    if post.incomplete:
        lines.append("the run was interrupted: the draws are incomplete")
    if post.method in ("nuts", "hmc"):
        if not caught:
            lines.append(f"no convergence problems (R-hat <= {RHAT_MAX}, bulk ESS >= {ESS_MIN}, "
                         f"no divergences, E-BFMI >= {BFMI_MIN})")
        stats = post.sample_stats
        if "diverging" in stats and not any("divergent" in c for c in caught):
            lines.append(f"divergent transitions: {int(stats['diverging'].sum())}")
        if "n_steps" in stats:
            steps = float(stats["n_steps"].float().mean())
            lines.append(f"mean leapfrog steps per draw: {steps:.1f}; final step size: "
                         f"{float(stats['step_size'][:, -1].mean()):.3g}")
    elif post.method == "svi":
        elbo = post.extra.get("elbo", [])
        if elbo:
            tail = elbo[-max(len(elbo) // 10, 1):]
            lines.append(f"SVI: final ELBO {sum(tail) / len(tail):.4g} (mean of the last "
                         f"{len(tail)} of {len(elbo)} steps); an approximation, no R-hat")
    elif post.method == "map":
        lines.append("MAP: a point estimate" + (
            " with standard errors from the curvature at the mode" if post.extra.get(
                "standard_errors") else ", no posterior uncertainty")
            + "; no convergence diagnostics")
    else:
        lines.append(f"{post.method}: independent draws, no chains to diagnose")
    return lines


def _directions(spec):
    """Action names of a Gymnasium grid spec (their MDPs carry none), else None."""
    from bayesirl.core.envs import gym_directions

    env = spec.environment
    return gym_directions(env.options.get("id", "")) if env.name == "gymnasium" else None


def write_figures(post, spec, out: Path, made: dict | None = None) -> dict[str, str]:
    """Write the PNGs; returns name -> file (or a reason it was skipped). ``made``, when given,
    is filled as each figure is finished, so a caller interrupted meanwhile knows which are."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure list

    from bayesirl import plots

    mdp = post.mdp
    made = {} if made is None else made
    grid = mdp.shape is not None
    many = post.num_chains * post.num_draws > 1
    n = 3 if mdp.reward is not None else 2
    if many:
        fig = Figure(figsize=(4.6 * n, 3.9) if grid else (5.5 * n, 3.6), layout="constrained")
        plots.plot_reward_panels(post, axes=fig.subplots(1, n), show_true=True)
    else:
        fig = Figure(figsize=(4.8 * (n - 1), 3.9), layout="constrained")
        axes = fig.subplots(1, n - 1, squeeze=False)[0]
        if mdp.reward is not None:
            plots.plot_reward(mdp, ax=axes[0])
        plots.plot_reward(post, ax=axes[-1], title="MAP reward")
    _save(fig, out / "reward.png", dpi=110)
    made["reward"] = "reward.png"

    directions = _directions(spec)
    fig = Figure(figsize=(6.0, 5.0) if grid else (6.0, 7.0), layout="constrained")
    ax = fig.subplots()
    background = post.mean_reward().max(-1).values if grid else None
    plots.plot_policy(mdp, post, ax=ax, uncertainty="sd" if many else None,
                      background=background, directions=directions,
                      title="posterior expert policy" + (" (t = 0)" if mdp.finite_horizon
                                                         else ""))
    _save(fig, out / "policy.png", dpi=110)
    made["policy"] = "policy.png"

    if post.method in ("nuts", "hmc") and post.num_draws >= 4:
        k = min(4, sum(max(v[0, 0].numel(), 1) for v in post.params.values()))
        fig = Figure(figsize=(12, 2.0 * k + 0.6), layout="constrained")
        plots.plot_diagnostics(post, max_params=k, axes=fig.subplots(k, 3, squeeze=False))
        fig.suptitle(f"MCMC diagnostics of the {k} parameter(s) with the largest R-hat"
                     + (" (and the rationality)" if "rationality" in post.params else ""))
        _save(fig, out / "diagnostics.png", dpi=90)
        made["diagnostics"] = "diagnostics.png"
    elif post.method == "svi" and post.extra.get("elbo"):
        fig = Figure(figsize=(6.4, 3.8), layout="constrained")
        plots.plot_elbo(post, ax=fig.subplots(), skip=0.05)
        _save(fig, out / "diagnostics.png", dpi=110)
        made["diagnostics"] = "diagnostics.png"
    else:
        made["diagnostics"] = "skipped: " + (
            "MAP is a single point" if not many else
            "independent draws of an approximation, no chains to diagnose"
            if post.method not in ("nuts", "hmc") else "too few draws for trace plots")

    if mdp.reward is not None and many:
        fig = Figure(figsize=(5.0, 5.0), layout="constrained")
        plots.plot_recovery(mdp.reward, post, ax=fig.subplots(), center=True)
        _save(fig, out / "recovery.png", dpi=110)
        made["recovery"] = "recovery.png"
    return made


def write_decisions(post, spec, mdp, out: Path):
    """The policy optimal for the posterior-mean reward against the robust BROIL policy on
    ``mdp`` (the deployment MDP): their returns under the posterior draws (mean and CVaR) and
    under the true reward, as a table (also ``decisions.csv``), and both policies side by side
    in ``decisions.png``. Returns ``(table, figure file)``."""
    import pandas as pd
    from matplotlib.figure import Figure

    from bayesirl import decisions, plots
    from bayesirl.planning.bellman import policy_value

    d = spec.decisions
    robust_name = f"robust (BROIL, alpha = {d.alpha:g}, lam = {d.lam:g})"
    policies = {"posterior-mean reward": decisions.bayes_optimal_policy(mdp, post).policy,
                robust_name: decisions.robust_policy(mdp, post, alpha=d.alpha,
                                                     lam=d.lam).policy}
    rows = {}
    for name, pi in policies.items():
        returns = policy_value(mdp, pi, post.reward())
        rows[name] = {"posterior mean return": float(returns.mean()),
                      f"CVaR {d.alpha:g} of return": decisions.cvar(returns, d.alpha)}
        if mdp.reward is not None:
            rows[name]["true return"] = float(policy_value(mdp, pi, mdp.reward))
    table = pd.DataFrame(rows).T
    write_csv(table, out / "decisions.csv")
    marks = plots.map_marks(mdp)
    if d.start is not None and mdp.shape is not None:
        marks.update({int(s): "S" for s in mdp.initial.nonzero().reshape(-1)})
    grid = mdp.shape is not None
    fig = Figure(figsize=(15.0, 4.6) if grid else (16.0, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    if mdp.reward is not None:
        plots.plot_reward(mdp, ax=axes[0], marks=marks)
    else:
        plots.plot_reward(post, ax=axes[0], marks=marks)
    for ax, (name, pi) in zip(axes[1:], policies.items(), strict=True):
        plots.plot_visits(mdp, pi, ax=ax, vmax=1.0, marks=marks,
                          title=f"where the {name.split(' (')[0]} policy goes")
    fig.suptitle("started " + (f"from decisions.start{' (S)' if grid else ''}" if d.start
                               else "from the MDP's initial distribution"))
    _save(fig, out / "decisions.png", dpi=110)
    return table, "decisions.png"


def write_report(spec, built, post, summary, diagnostics, figures, timing, out: Path,
                 decision_table=None, interrupted=(), problems=()) -> None:
    """``report.md``: the problem, settings, timing, summary, diagnostics, decisions, figures
    and the spec (as written, with the command line's overrides listed beside it);
    ``interrupted`` lines (what an interrupt stopped) and ``problems`` (outputs
    that failed) come first."""
    mdp, demos, _, kwargs = built
    settings = {k: v for k, v in post.settings.items() if k != "seconds"}
    lines = [f"# bayesirl report: {spec.name}", ""]
    if interrupted:
        lines += ["## Interrupted", ""] + [f"- {line}" for line in interrupted] + [""]
    if problems:
        lines += ["## Problems", ""] + [f"- {line}" for line in problems] + [""]
    if spec.description:
        lines += [spec.description, ""]
    overrides = ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in spec.overrides.items())
    lines.append(f"- spec: `{spec.source}`" if spec.source else "- spec: built-in default")
    if overrides:
        lines.append(f"- command-line overrides: {overrides} (they replace the spec's values)")
    lines += [f"- MDP: `{mdp!r}`", f"- demonstrations: `{demos!r}`",
              f"- reward model: {spec.reward.model}"
              + (f", prior {spec.reward.prior}" if spec.reward.prior else ""),
              f"- likelihood: {spec.likelihood.kind}, rationality {spec.likelihood.rationality}",
              f"- method: {post.method}" + (" (BAYESIRL_FAST: sample counts shrunk)"
                                            if fast_mode() else ""),
              "", "## Settings", "", "```json", json.dumps(settings, indent=2, default=str),
              "```", "", "## Timing", "",
              "| step | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in timing.items()]
    lines += ["", "## Posterior summary", "", markdown_table(summary), "",
              "## Diagnostics", ""] + [f"- {d}" for d in diagnostics]
    if decision_table is not None:
        start = spec.decisions.start
        lines += ["", "## Decisions under reward uncertainty", "",
                  "The policy optimal for the posterior-mean reward (it maximises the posterior "
                  "expected return) against the robust BROIL policy (Brown, Niekum & Petrik "
                  "2020), which trades expected return for its CVaR, the mean of the worst "
                  f"{1 - spec.decisions.alpha:.0%} of returns over the posterior draws; "
                  "started " + ("from decisions.start " + str([list(v) if isinstance(
                      v, tuple) else v for v in start]) if start else
                                "from the MDP's initial distribution") + ".", "",
                  markdown_table(decision_table)]
    lines += ["", "## Figures", ""]
    for name, file in figures.items():
        if file.endswith(".png"):
            lines += [f"### {name}", "", f"![{name}]({file})", ""]
        else:
            lines += [f"- {name}: {file}"]
    lines += ["", "## Spec", ""]
    if overrides:
        lines += [f"As written; the command line overrode {overrides}.", ""]
    lines += ["```toml", spec.text.rstrip(), "```", ""]
    text = "\n".join(lines)
    atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
