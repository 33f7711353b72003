"""The output folder of a run: written aside, moved into place when complete.

A run writes into a staging folder beside ``--out`` (``.<name>.<host>.<pid>.<token>.partial`` in
the same parent, so the final move is a rename on one file system) and
:meth:`OutputFolder.commit` renames it to ``--out``. A reader therefore finds the previous
folder or the new one, never two runs' files mixed, and a run that fails or is stopped before
the commit leaves nothing. Everything that can make the folder unusable is found by the
constructor, before any work: a file in the way, a parent that cannot be created or written, or
a non-empty ``--out`` (refused unless ``overwrite``, and then only when it holds nothing but
files a run writes, so ``--out .`` can never delete a user's files). Staging folders left by
killed runs of the same target (their process gone) are removed on the next run.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from bayesirl.posterior.files import stale_temporaries, temporary_path

__all__ = ["OUTPUT_FILES", "OutputError", "OutputFolder"]

#: every file a run may write; --overwrite replaces a folder holding these only
OUTPUT_FILES = ("posterior.nc", "summary.csv", "report.md", "reward.png", "policy.png",
                "diagnostics.png", "recovery.png", "decisions.csv", "decisions.png")


class OutputError(Exception):
    """``--out`` cannot hold the outputs; the message says why, on one line."""


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


class OutputFolder:
    """A staging folder for the run's outputs, moved to ``target`` by :meth:`commit`.

    Args:
        target: the ``--out`` folder (made absolute; a symlink is followed).
        overwrite: replace a ``target`` that already holds a previous run's outputs.

    Raises :class:`OutputError` when ``target`` cannot receive the outputs. ``path`` is where
    the run writes; :meth:`discard` removes it (an abandoned run).
    """

    def __init__(self, target, overwrite: bool = False):
        self.target = Path(os.path.abspath(target)).resolve()
        self.replaces = False
        if self.target.exists() or self.target.is_symlink():
            if not self.target.is_dir():
                raise OutputError(f"--out {self.target} exists and is not a folder")
            entries = sorted(os.listdir(self.target))
            if entries and not overwrite:
                raise OutputError(f"--out {self.target} is not empty (it holds {entries[0]!r}"
                                  + (f" and {len(entries) - 1} more" if len(entries) > 1
                                     else "") + "): pass --overwrite to replace a previous "
                                  "run's outputs, or choose a new folder")
            foreign = [e for e in entries if e not in OUTPUT_FILES]
            if foreign:
                raise OutputError(f"--out {self.target} holds {foreign[0]!r}, which a run does "
                                  "not write: --overwrite replaces only a folder of bayesirl "
                                  "outputs; choose a new folder")
            self.replaces = bool(entries)
        parent = self.target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"--out {self.target}: cannot create the folder {parent} "
                              f"({_reason(e)})") from None
        for stale in stale_temporaries(self.target, ".partial"):  # killed runs' staging
            shutil.rmtree(stale, ignore_errors=True)
        while True:
            path = Path(temporary_path(self.target, ".partial"))
            try:
                os.mkdir(path, 0o777)  # the umask applies, as to any new folder
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise OutputError(f"--out {self.target}: cannot write in {parent} "
                                  f"({_reason(e)})") from None
        self.path = path
        try:  # a folder that takes a subfolder may still refuse files (a full disk, quotas)
            probe = self.path / ".probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            self.discard()
            raise OutputError(f"--out {self.target}: cannot write files in {parent} "
                              f"({_reason(e)})") from None

    def commit(self) -> Path:
        """Move the staging folder to the target (replacing a previous run's folder there);
        returns the target."""
        old = None
        if self.target.exists() and any(self.target.iterdir()):
            old = self.target.with_name(f".{self.target.name}.{secrets.token_hex(4)}.old")
            os.replace(self.target, old)
        try:
            os.replace(self.path, self.target)  # replaces an empty folder too
        except OSError:
            if old is not None:
                os.replace(old, self.target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def discard(self) -> None:
        """Remove the staging folder and what is in it."""
        shutil.rmtree(self.path, ignore_errors=True)
