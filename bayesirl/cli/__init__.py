"""Command line: ``bayesirl demo | run``.

One module a job: :mod:`~bayesirl.cli.app` (argparse, the commands, exit codes, Ctrl-C),
:mod:`~bayesirl.cli.spec` (the TOML schema and its validation), :mod:`~bayesirl.cli.io` (the
``.npz`` and CSV files a spec names), :mod:`~bayesirl.cli.build` (spec -> MDP, demonstrations,
reward model, ``infer`` arguments), :mod:`~bayesirl.cli.report` (summary, figures,
``report.md``) and :mod:`~bayesirl.cli.folder` (the output folder, written aside and moved into
place). The default spec ships as package data, ``default.toml``.
"""

from bayesirl.cli.app import main

__all__ = ["main"]
