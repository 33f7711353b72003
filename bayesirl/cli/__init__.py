"""Command line: ``bayesirl demo | run``; the spec schema and its file loaders."""

from bayesirl.cli.app import main

__all__ = ["main"]
