"""The command line: ``bayesirl run SPEC.toml`` and ``bayesirl demo``.

``run`` reads a problem specification (see :mod:`bayesirl.cli.spec`), runs inference with a progress
bar, prints the posterior summary and the convergence diagnostics, and writes to ``--out``:
``posterior.nc`` (ArviZ netCDF, read back by :meth:`RewardPosterior.load`), ``summary.csv``,
``reward.png``, ``policy.png``, ``diagnostics.png`` (MCMC trace and rank plots, or the ELBO of an
SVI fit), ``recovery.png`` (when the true reward is known) and ``report.md``; a spec with a
``[decisions]`` table also gets ``decisions.csv`` and ``decisions.png``: the policy optimal for
the posterior-mean reward against the robust (BROIL) policy.

The outputs are written into a staging folder and moved into ``--out`` when complete
(:mod:`bayesirl.cli.folder`, which says what is atomic): ``--out`` holds one run's files or
none. A non-empty ``--out`` is refused unless ``--overwrite`` (which replaces only a folder of a
previous run's outputs), and a folder that cannot be written is found before any work; a
refused run creates nothing. When another run wrote ``--out`` meanwhile, the run keeps its
outputs in a folder the error names rather than replace the other's (exit 1). Ctrl-C
(SIGINT) stops the run and keeps what it made (see :class:`_Interrupts`): the draws so far,
marked incomplete in ``posterior.nc`` and in the report.

Exit codes: 0 success; 1 inference failed, or the outputs could not be written; 2 a bad spec,
bad arguments or an unusable ``--out`` (one line on stderr, nothing done); 130 interrupted
(one line on stderr saying what was kept).
``BAYESIRL_FAST=1`` shrinks the sample counts so that any spec runs in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
import warnings
from importlib import resources
from pathlib import Path

from bayesirl.cli import report
from bayesirl.cli import sweep as sweep_cli
from bayesirl.cli.build import build, deployment_mdp, fast_mode, unused_options
from bayesirl.cli.folder import OutputError, OutputFolder
from bayesirl.cli.spec import (
    INT_MAX,
    SEED_MAX,
    SpecError,
    apply_overrides,
    load_spec,
    parse_spec,
    tomllib,
)
from bayesirl.inference.facade import METHODS

__all__ = ["DEFAULT_SPEC_RESOURCE", "main"]

#: the spec ``bayesirl demo`` runs, shipped as package data (a test keeps it identical to
#: ``models/gridworld.toml``)
DEFAULT_SPEC_RESOURCE = "default.toml"

_MAX_ROWS = 24  # summary rows printed to the terminal (all go to summary.csv)


# ---------------------------------------------------------------------------- arguments
class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (through :class:`_UsageError`)."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _int_at_least(minimum: int, maximum: int = INT_MAX):
    """An argparse ``type`` accepting integers in ``[minimum, maximum]`` (the bounds of the
    spec key the option overrides)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"{text[:40]} is not an integer " + (f">= {minimum}" if maximum == INT_MAX
                                                     else f"in [{minimum}, {maximum}]"))
        return value

    return parse


def _add_output_options(p):
    p.add_argument("--out", metavar="DIR", type=Path, default=None,
                   help="folder for the outputs (created if missing, and must be empty; "
                        "default ./bayesirl-output/<spec name>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the outputs of a previous run in --out (a folder holding "
                        "other files is never replaced)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no summary table: print only warnings, errors "
                        "and where the outputs went")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bayesirl",
        description="Bayesian inverse reinforcement learning: a posterior over rewards from "
                    "demonstrations. Problems are TOML specs (see models/ for examples).",
        epilog="Exit codes: 0 success, 1 inference failed or the outputs could not be "
               "written, 2 bad spec, arguments or --out (nothing done), 130 interrupted "
               "(what was made is kept and marked). BAYESIRL_FAST=1 shrinks the sample counts "
               "(for tests).")
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
                     help="override inference.method: nuts, hmc (MCMC), svi (variational), "
                          "map (a point estimate) or laplace (draws from a Gaussian at the "
                          "MAP)")
    run.add_argument("--num-samples", metavar="N", type=_int_at_least(1), default=None,
                     help="override inference.num_samples: draws per chain (MCMC) or from the "
                          "fitted guide (SVI)")
    run.add_argument("--seed", metavar="S", type=_int_at_least(0, SEED_MAX), default=None,
                     help="override inference.seed (all randomness of the inference)")
    demo = sub.add_parser(
        "demo", help="run the default spec (8x8 gridworld, linear reward, NUTS) end to end",
        description="Run the default spec, a packaged copy of models/gridworld.toml (an 8x8 "
                    "gridworld with a linear reward, sampled with NUTS), and write its "
                    "outputs, like 'bayesirl run'.")
    _add_output_options(demo)
    sweep_cli.add_parser(sub)  # `bayesirl sweep`: bayesirl/cli/sweep.py
    return parser


# ---------------------------------------------------------------------------- output helpers
def _say(quiet: bool, *lines: str) -> None:
    if not quiet:
        for line in lines:
            print(line, flush=True)


# ---------------------------------------------------------------------------- interrupts
class _Interrupts:
    """What SIGINT (Ctrl-C) does during a run, by ``phase``; installed in the main thread only.

    - ``"start"`` (building the problem): stop; nothing is written.
    - ``"infer"``: the first SIGINT reaches :func:`~bayesirl.infer` as ``KeyboardInterrupt``,
      which stops sampling and returns the draws made so far (marked incomplete); later ones
      are swallowed, so that a second press cannot cost those draws while they are collected.
    - ``"write"`` (figures, decisions): stop drawing; the files finished so far are kept.
    - ``"final"`` (saving the posterior, the report, the move into place): swallowed; these
      take well under a second and are what an interrupt is meant to keep.

    ``count`` is the number of SIGINTs received; any makes the run exit 130.
    """

    def __init__(self):
        self.phase = "start"
        self.count = 0
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handle(self, signum, frame):
        self.count += 1
        if self.phase in ("start", "write") or (self.phase == "infer" and self.count == 1):
            if self.phase != "infer":
                self.phase = "final"  # the clean-up that follows is not interrupted
            raise KeyboardInterrupt


class _Exit(Exception):
    """A command stops with exit status ``code``, having said why on stderr."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


# ---------------------------------------------------------------------------- commands
def _run(spec, out: Path | None, quiet: bool, overwrite: bool = False) -> int:
    """Run ``spec`` into ``out``: check the folder first, write aside, move into place."""
    try:
        folder = OutputFolder(out if out is not None else Path("bayesirl-output") / spec.name,
                              overwrite)
    except OutputError as e:
        print(f"bayesirl: error: {e}", file=sys.stderr)
        return 2
    try:
        with _Interrupts() as interrupts:
            return _run_into(spec, folder, quiet, interrupts)
    finally:
        folder.discard()  # nothing left to discard after a commit


def _run_into(spec, folder: OutputFolder, quiet: bool, interrupts: _Interrupts) -> int:
    import torch

    torch.set_default_dtype(torch.float64)
    start = time.perf_counter()
    try:
        built = build(spec)  # SpecError -> exit 2 in main
        mdp, demos, reward_model, kwargs = built
        deploy = deployment_mdp(spec, mdp)
    except KeyboardInterrupt:
        print("bayesirl: interrupted before inference started; nothing written",
              file=sys.stderr)
        return 130
    t_build = time.perf_counter() - start
    for key in unused_options(spec):  # infer_kwargs left them out: say so, they were set
        value = getattr(spec.inference, key.split(".")[1])
        print(f"bayesirl: warning: {key} is {value!r}, but method {spec.inference.method!r} "
              "does not use it; ignored", file=sys.stderr)
    _say(quiet, f"spec {spec.name}: {spec.description or spec.source or ''}".rstrip(": "),
         f"  MDP: {mdp!r}", f"  demonstrations: {demos!r}",
         f"  reward: {spec.reward.model}, likelihood: {kwargs['likelihood']}, "
         f"method: {kwargs['method']}" + (" (BAYESIRL_FAST=1: sample counts shrunk)"
                                          if fast_mode() else ""))
    t0 = time.perf_counter()
    try:
        post, caught = _infer(mdp, demos, reward_model, kwargs, quiet, interrupts)
    except _Exit as e:
        return e.code
    t_infer = time.perf_counter() - t0
    notes = []
    if interrupts.count or post.incomplete:
        notes.append(f"inference was interrupted: the posterior holds the {post.num_chains} "
                     f"chain(s) x {post.num_draws} draws made before it" + (
                         ", marked incomplete (RewardPosterior.incomplete)" if post.incomplete
                         else " (the chains had finished)"))
    summary = report.summary_table(post)
    diagnostics = report.diagnostics_lines(post, caught)
    _show(post, summary, diagnostics, caught, quiet, t_infer)
    t0 = time.perf_counter()
    out = folder.path
    figures, decision_table, failed = {}, None, None
    try:
        post.save(out / "posterior.nc")
        report.write_csv(summary, out / "summary.csv")
        try:
            interrupts.phase = "write"
            report.write_figures(post, spec, out, figures)
            if spec.decisions is not None:
                decision_table, figures["decisions"] = report.write_decisions(post, spec,
                                                                              deploy, out)
            interrupts.phase = "final"
        except KeyboardInterrupt:
            notes.append("writing the figures was interrupted: " + _written(figures))
        except Exception as e:  # a figure that fails must not cost the posterior
            if isinstance(e, OSError):
                raise
            interrupts.phase = "final"
            failed = (f"a figure failed ({type(e).__name__}: {e}); " + _written(figures)
                      ).replace("\n", " ")
        timing = {"build (environment, demonstrations)": t_build, "inference": t_infer,
                  "outputs (files, figures)": time.perf_counter() - t0,
                  "total": time.perf_counter() - start}
        report.write_report(spec, built, post, summary, diagnostics, figures, timing, out,
                            decision_table, interrupted=notes,
                            problems=[failed] if failed else [])
        target = folder.commit()
    except OSError as e:
        print(f"bayesirl: cannot write the outputs to {folder.target}: {e}".replace("\n", " "),
              file=sys.stderr)
        return 1
    except OutputError as e:  # --out changed under the run: the outputs are kept elsewhere
        print(f"bayesirl: error: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    if decision_table is not None and not quiet:
        import pandas as pd

        with pd.option_context("display.width", 120, "display.precision", 3):
            print("\ndecisions (see decisions.png):")
            print(decision_table.to_string())
    files = ["posterior.nc", "summary.csv", "report.md"]
    files += ["decisions.csv"] if decision_table is not None else []
    files += [f for f in figures.values() if f.endswith(".png")]
    print(f"wrote {', '.join(files)} to {target} (total {timing['total']:.1f} s)")
    if notes:
        print(f"bayesirl: interrupted: {'; '.join(notes)}; wrote {target}", file=sys.stderr)
        return 130
    if failed:
        print(f"bayesirl: {failed}; wrote the rest to {target}", file=sys.stderr)
        return 1
    return 0


def _infer(mdp, demos, reward_model, kwargs: dict, quiet: bool, interrupts: _Interrupts):
    """``infer()`` with its InferenceWarnings caught: ``(posterior, their problem lines)``;
    other warnings pass through. Raises :class:`_Exit` (130 interrupted, 1 failed) after saying
    why nothing was written."""
    from bayesirl.inference.facade import infer
    from bayesirl.posterior.diagnostics import InferenceWarning

    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always", InferenceWarning)
        try:
            interrupts.phase = "infer"
            post = infer(mdp, demos, reward_model, progress=not quiet, **kwargs)
        except KeyboardInterrupt as e:
            print(f"bayesirl: {str(e) or 'interrupted during inference'}; nothing written",
                  file=sys.stderr)
            raise _Exit(130) from e
        except Exception as e:  # numerical failures surface with many types
            print(f"bayesirl: inference failed: {type(e).__name__}: {e}".replace("\n", " "),
                  file=sys.stderr)
            raise _Exit(1) from e
        finally:
            interrupts.phase = "final"
    caught = []
    for w in records:
        if issubclass(w.category, InferenceWarning):
            caught += [ln.lstrip("- ") for ln in str(w.message).splitlines()[1:]]
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return post, caught


def _show(post, summary, diagnostics: list[str], caught: list[str], quiet: bool,
          seconds: float) -> None:
    """Print the posterior's summary table and its diagnostics (``quiet``: only the
    problems, on stderr)."""
    if not quiet:
        import pandas as pd

        with pd.option_context("display.width", 120, "display.max_columns", 20):
            print(f"\nposterior summary ({post.method}, {post.num_chains} chain(s) x "
                  f"{post.num_draws} draws, {seconds:.1f} s):")
            print(summary.head(_MAX_ROWS).to_string())
            if len(summary) > _MAX_ROWS:
                print(f"... {len(summary) - _MAX_ROWS} more rows in summary.csv")
        print("\ndiagnostics:")
    for line in diagnostics:
        problem = line in caught or line.startswith("the run was interrupted")
        if problem or not quiet:
            print(f"  {'warning: ' if problem else ''}{line}",
                  file=sys.stderr if problem and quiet else sys.stdout)


def _written(figures: dict) -> str:
    done = [f for f in figures.values() if f.endswith(".png")]
    return f"only {', '.join(done)} written" if done else "no figure written"


def _demo_spec():
    """The packaged default spec (the 8x8 gridworld with NUTS), parsed."""
    text = resources.files("bayesirl.cli").joinpath(DEFAULT_SPEC_RESOURCE).read_text("utf-8")
    return parse_spec(tomllib.loads(text), Path.cwd(), "gridworld", text)


def main(argv=None) -> int:
    """Entry point of the ``bayesirl`` console script; returns the exit code (see the module
    docstring)."""
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
    if args.command == "sweep":  # bayesirl/cli/sweep.py
        return sweep_cli.run(args)
    import torch

    old_dtype = torch.get_default_dtype()
    try:
        if args.command == "demo":
            spec = _demo_spec()
        else:
            spec = apply_overrides(load_spec(args.spec), method=args.method,
                                   num_samples=args.num_samples, seed=args.seed)
        return _run(spec, args.out, args.quiet, args.overwrite)
    except SpecError as e:
        print(f"bayesirl: error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before a run's own handling (reading the spec)
        print("bayesirl: interrupted; nothing written", file=sys.stderr)
        return 130
    finally:
        torch.set_default_dtype(old_dtype)


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
