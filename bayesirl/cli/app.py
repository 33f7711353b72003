"""The command line: ``bayesirl run SPEC.toml`` and ``bayesirl demo``.

``run`` reads a problem specification (see :mod:`bayesirl.cli.spec`), runs inference with a progress
bar, prints the posterior summary and the convergence diagnostics, and writes to ``--out``:
``posterior.nc`` (ArviZ netCDF, read back by :meth:`RewardPosterior.load`), ``summary.csv``,
``reward.png``, ``policy.png``, ``diagnostics.png`` (MCMC trace and rank plots, or the ELBO of an
SVI fit), ``recovery.png`` (when the true reward is known) and ``report.md``; a spec with a
``[decisions]`` table also gets ``decisions.csv`` and ``decisions.png``: the policy optimal for
the posterior-mean reward against the robust (BROIL) policy.

Exit codes: 0 success, 2 a bad spec or bad arguments (one line on stderr), 1 inference failed.
``BAYESIRL_FAST=1`` shrinks the sample counts so that any spec runs in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path

from bayesirl.cli.spec import (
    METHODS,
    SpecError,
    apply_overrides,
    build,
    deployment_mdp,
    fast_mode,
    load_spec,
)

__all__ = ["DEFAULT_SPEC", "default_spec_path", "main"]

#: Used by ``bayesirl demo`` when ``models/gridworld.toml`` is not next to the package (an
#: installed wheel); a test keeps it identical to that file.
DEFAULT_SPEC = """\
# The demo: Bayesian IRL on an 8x8 gridworld with a linear reward, sampled with NUTS.
# The true reward lives on 2x2 macro-cells (16 one-hot features); 20 soft-optimal experts
# walk 20 steps each. The posterior sd map shows which cells the demonstrations pin down.
name = "gridworld"
description = "8x8 gridworld, linear reward on 2x2 macro-cells, NUTS"

[environment]
name = "gridworld"
size = 8
slip = 0.1
block = 2
horizon = 20
seed = 0

[demonstrations]
n = 20
seed = 0
rationality = 1.0

[reward]
model = "linear"
prior = { family = "normal", loc = 0.0, scale = 1.0 }

[likelihood]
kind = "soft"
rationality = 1.0

[inference]
method = "nuts"
num_samples = 500
warmup = 300
num_chains = 2
seed = 0
"""

_MAX_ROWS = 24  # summary rows printed to the terminal (all go to summary.csv)


def default_spec_path() -> Path | None:
    """``models/gridworld.toml`` of a source checkout (next to the package), or None."""
    path = Path(__file__).resolve().parents[2] / "models" / "gridworld.toml"
    return path if path.is_file() else None


# ---------------------------------------------------------------------------- arguments
class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (through :class:`_UsageError`)."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _int_at_least(minimum: int):
    """An argparse ``type`` accepting integers ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is not an integer >= {minimum}")
        return value

    return parse


def _add_output_options(p):
    p.add_argument("--out", metavar="DIR", type=Path, default=None,
                   help="folder for the outputs (created if missing; default "
                        "./bayesirl-output/<spec name>)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no summary table: print only warnings, errors "
                        "and where the outputs went")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bayesirl",
        description="Bayesian inverse reinforcement learning: a posterior over rewards from "
                    "demonstrations. Problems are TOML specs (see models/ for examples).",
        epilog="Exit codes: 0 success, 2 bad spec or arguments, 1 inference failed. "
               "BAYESIRL_FAST=1 shrinks the sample counts (for tests).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser(
        "run", help="run inference on a problem spec and write the posterior, plots and a "
                    "report",
        description="Run the inference a TOML spec describes ([environment], "
                    "[demonstrations], [reward], [likelihood], [inference], optionally "
                    "[decisions]); print the posterior summary and diagnostics; write "
                    "posterior.nc, summary.csv, reward.png, policy.png, diagnostics.png, "
                    "recovery.png (when the true reward is known), decisions.csv and "
                    "decisions.png (with [decisions]: posterior-mean against robust policy) "
                    "and report.md to --out.")
    run.add_argument("spec", metavar="SPEC.toml", type=Path, help="the problem specification")
    _add_output_options(run)
    run.add_argument("--method", choices=METHODS, default=None,
                     help="override inference.method: nuts, hmc (MCMC), svi (variational) or "
                          "map (a point estimate)")
    run.add_argument("--num-samples", metavar="N", type=_int_at_least(1), default=None,
                     help="override inference.num_samples: draws per chain (MCMC) or from the "
                          "fitted guide (SVI)")
    run.add_argument("--seed", metavar="S", type=_int_at_least(0), default=None,
                     help="override inference.seed (all randomness of the inference)")
    demo = sub.add_parser(
        "demo", help="run the default spec (8x8 gridworld, linear reward, NUTS) end to end",
        description="Run models/gridworld.toml (an 8x8 gridworld with a linear reward, "
                    "sampled with NUTS; a built-in copy when installed without the models/ "
                    "folder) and write its outputs, like 'bayesirl run'.")
    _add_output_options(demo)
    return parser


# ---------------------------------------------------------------------------- output helpers
def _say(quiet: bool, *lines: str) -> None:
    if not quiet:
        for line in lines:
            print(line, flush=True)


def _markdown_table(df) -> str:
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


def _summary(post):
    """ArviZ summary (diagnostics columns only for MCMC), quiet about single chains."""
    import arviz as az

    names = list(post.params) or ["reward"]
    idata = post.to_arviz()
    logger = logging.getLogger("arviz")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # sd of a single draw
            mcmc = post.method in ("nuts", "hmc") and post.num_draws >= 4
            if post.num_draws * post.num_chains < 2:
                return az.summary(idata, var_names=names, kind="stats")[["mean"]]
            return az.summary(idata, var_names=names, kind="all" if mcmc else "stats")
    finally:
        logger.setLevel(level)


def _diagnostics(post, caught: list[str]) -> list[str]:
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
    else:
        lines.append("MAP: a point estimate, no posterior uncertainty or convergence "
                     "diagnostics")
    return lines


def _gym_directions(spec):
    from bayesirl.core.envs import GYM_DIRECTIONS

    env = spec.environment
    if env.name != "gymnasium":
        return None
    for prefix, names in GYM_DIRECTIONS.items():
        if str(env.options.get("id", "")).startswith(prefix):
            return names
    return None


def _figures(post, spec, out: Path) -> dict[str, str]:
    """Write the PNGs; returns name -> file (or a reason it was skipped)."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure list

    from bayesirl import plots

    mdp = post.mdp
    made = {}
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
    fig.savefig(out / "reward.png", dpi=110)
    made["reward"] = "reward.png"

    directions = _gym_directions(spec)
    fig = Figure(figsize=(6.0, 5.0) if grid else (6.0, 7.0), layout="constrained")
    ax = fig.subplots()
    background = post.mean_reward().max(-1).values if grid else None
    plots.plot_policy(mdp, post, ax=ax, uncertainty="sd" if many else None,
                      background=background, directions=directions,
                      title="posterior expert policy" + (" (t = 0)" if mdp.finite_horizon
                                                         else ""))
    fig.savefig(out / "policy.png", dpi=110)
    made["policy"] = "policy.png"

    if post.method in ("nuts", "hmc") and post.num_draws >= 4:
        k = min(4, sum(max(v[0, 0].numel(), 1) for v in post.params.values()))
        fig = Figure(figsize=(12, 2.0 * k + 0.6), layout="constrained")
        plots.plot_diagnostics(post, max_params=k, axes=fig.subplots(k, 3, squeeze=False))
        fig.suptitle(f"MCMC diagnostics of the {k} parameter(s) with the largest R-hat"
                     + (" (and the rationality)" if "rationality" in post.params else ""))
        fig.savefig(out / "diagnostics.png", dpi=90)
        made["diagnostics"] = "diagnostics.png"
    elif post.method == "svi" and post.extra.get("elbo"):
        fig = Figure(figsize=(6.4, 3.8), layout="constrained")
        plots.plot_elbo(post, ax=fig.subplots(), skip=0.05)
        fig.savefig(out / "diagnostics.png", dpi=110)
        made["diagnostics"] = "diagnostics.png"
    else:
        made["diagnostics"] = ("skipped: " + ("MAP is a single point" if post.method == "map"
                                              else "too few draws for trace plots"))

    if mdp.reward is not None and many:
        fig = Figure(figsize=(5.0, 5.0), layout="constrained")
        plots.plot_recovery(mdp.reward, post, ax=fig.subplots(), center=True)
        fig.savefig(out / "recovery.png", dpi=110)
        made["recovery"] = "recovery.png"
    return made


def _decisions(post, spec, mdp, out: Path):
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
    table.to_csv(out / "decisions.csv")
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
    fig.savefig(out / "decisions.png", dpi=110)
    return table, "decisions.png"


def _report(spec, built, post, summary, diagnostics, figures, timing, out: Path,
            decision_table=None) -> None:
    mdp, demos, _, kwargs = built
    settings = {k: v for k, v in post.settings.items() if k != "seconds"}
    lines = [f"# bayesirl report: {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += [f"- spec: `{spec.source}`" if spec.source else "- spec: built-in default",
              f"- MDP: `{mdp!r}`", f"- demonstrations: `{demos!r}`",
              f"- reward model: {spec.reward.model}"
              + (f", prior {spec.reward.prior}" if spec.reward.prior else ""),
              f"- likelihood: {spec.likelihood.kind}, rationality {spec.likelihood.rationality}",
              f"- method: {post.method}" + (" (BAYESIRL_FAST: sample counts shrunk)"
                                            if fast_mode() else ""),
              "", "## Settings", "", "```json", json.dumps(settings, indent=2, default=str),
              "```", "", "## Timing", "",
              "| step | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in timing.items()]
    lines += ["", "## Posterior summary", "", _markdown_table(summary), "",
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
                  _markdown_table(decision_table)]
    lines += ["", "## Figures", ""]
    for name, file in figures.items():
        if file.endswith(".png"):
            lines += [f"### {name}", "", f"![{name}]({file})", ""]
        else:
            lines += [f"- {name}: {file}"]
    lines += ["", "## Spec", "", "```toml", spec.text.rstrip(), "```", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


# ---------------------------------------------------------------------------- commands
def _run(spec, out: Path | None, quiet: bool) -> int:
    import torch

    from bayesirl.inference.facade import infer
    from bayesirl.posterior.diagnostics import InferenceWarning

    torch.set_default_dtype(torch.float64)
    start = time.perf_counter()
    built = build(spec)  # SpecError -> exit 2 in main
    mdp, demos, reward_model, kwargs = built
    deploy = deployment_mdp(spec, mdp)
    t_build = time.perf_counter() - start
    out = out if out is not None else Path("bayesirl-output") / spec.name
    _say(quiet, f"spec {spec.name}: {spec.description or spec.source or ''}".rstrip(": "),
         f"  MDP: {mdp!r}", f"  demonstrations: {demos!r}",
         f"  reward: {spec.reward.model}, likelihood: {kwargs['likelihood']}, "
         f"method: {kwargs['method']}" + (" (BAYESIRL_FAST=1: sample counts shrunk)"
                                          if fast_mode() else ""))
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always", InferenceWarning)
        try:
            post = infer(mdp, demos, reward_model, progress=not quiet, **kwargs)
        except KeyboardInterrupt:
            print("bayesirl: interrupted before any draw was made", file=sys.stderr)
            return 130
        except Exception as e:  # numerical failures surface with many types
            print(f"bayesirl: inference failed: {type(e).__name__}: {e}".replace("\n", " "),
                  file=sys.stderr)
            return 1
    t_infer = time.perf_counter() - t0
    caught = []
    for w in records:
        if issubclass(w.category, InferenceWarning):
            caught += [ln.lstrip("- ") for ln in str(w.message).splitlines()[1:]]
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    summary = _summary(post)
    diagnostics = _diagnostics(post, caught)
    if not quiet:
        import pandas as pd

        with pd.option_context("display.width", 120, "display.max_columns", 20):
            print(f"\nposterior summary ({post.method}, {post.num_chains} chain(s) x "
                  f"{post.num_draws} draws, {t_infer:.1f} s):")
            print(summary.head(_MAX_ROWS).to_string())
            if len(summary) > _MAX_ROWS:
                print(f"... {len(summary) - _MAX_ROWS} more rows in summary.csv")
        print("\ndiagnostics:")
    for line in diagnostics:
        problem = line in caught or line.startswith("the run was interrupted")
        if problem or not quiet:
            print(f"  {'warning: ' if problem else ''}{line}",
                  file=sys.stderr if problem and quiet else sys.stdout)
    t0 = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
        post.save(out / "posterior.nc")
        summary.to_csv(out / "summary.csv")
        figures = _figures(post, spec, out)
        decision_table = None
        if spec.decisions is not None:
            decision_table, figures["decisions"] = _decisions(post, spec, deploy, out)
    except OSError as e:
        print(f"bayesirl: cannot write the outputs to {out}: {e}", file=sys.stderr)
        return 1
    timing = {"build (environment, demonstrations)": t_build, "inference": t_infer,
              "outputs (files, figures)": time.perf_counter() - t0,
              "total": time.perf_counter() - start}
    if decision_table is not None and not quiet:
        import pandas as pd

        with pd.option_context("display.width", 120, "display.precision", 3):
            print("\ndecisions (see decisions.png):")
            print(decision_table.to_string())
    _report(spec, built, post, summary, diagnostics, figures, timing, out, decision_table)
    files = ["posterior.nc", "summary.csv", "report.md"]
    files += [f for f in figures.values() if f.endswith(".png")]
    print(f"wrote {', '.join(files)} to {out} (total {timing['total']:.1f} s)")
    return 0


def _demo_spec():
    path = default_spec_path()
    if path is not None:
        return load_spec(path)
    from bayesirl.cli.spec import parse_spec, tomllib

    return parse_spec(tomllib.loads(DEFAULT_SPEC), Path.cwd(), "gridworld", DEFAULT_SPEC)


def main(argv=None) -> int:
    """Entry point of the ``bayesirl`` console script; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    import torch

    old_dtype = torch.get_default_dtype()
    try:
        if args.command == "demo":
            spec = _demo_spec()
        else:
            spec = apply_overrides(load_spec(args.spec), method=args.method,
                                   num_samples=args.num_samples, seed=args.seed)
        return _run(spec, args.out, args.quiet)
    except SpecError as e:
        print(f"bayesirl: error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    finally:
        torch.set_default_dtype(old_dtype)


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
