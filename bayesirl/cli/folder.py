"""The output folder of a run: written aside, moved into place when complete.

A run writes into a staging folder (``.<name>.<host>.<pid>.<token>.partial``) and
:meth:`OutputFolder.commit` moves it into ``--out``. What is atomic depends on whether ``--out``
exists when the run starts:

- ``--out`` missing: the staging folder is made beside it (in the same parent, so on the same
  file system) and the commit renames it to ``--out`` in one step: a reader finds no folder or
  the whole run.
- ``--out`` exists (empty, or a previous run's outputs with ``overwrite``): the folder itself
  is kept (its mode, owner and inode: a mount point, a shell's working folder), the staging
  folder is made inside it (the same file system even on a mount point) and the commit moves
  the files in one by one: each file is replaced atomically, ``posterior.nc`` first and
  ``report.md`` last (a ``report.md`` from this run means the run is complete), then the
  previous run's files this run does not write are removed. A reader during those
  milliseconds may find files of both runs.

Everything that can make the folder unusable is found by the constructor, before any work: a
file in the way, a parent that cannot be created or written, a non-empty ``--out`` (refused
unless ``overwrite``, and then only when it holds nothing but files a run writes, so ``--out
.`` can never delete a user's files), or another run writing the same ``--out`` (its staging
folder is there). The commit checks ``--out`` again: when another run wrote it meanwhile (or
anything else put files there) and ``overwrite`` was not given, it refuses and keeps this
run's outputs in a folder its :class:`OutputError` names, as it does when a move fails. A run
that is abandoned (:meth:`OutputFolder.discard`) leaves nothing, not even the parent folders
it made. Staging folders left by killed runs of the same target (their process gone) are
removed on the next run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path

from bayesirl.posterior.files import stale_temporaries, temporary_path

__all__ = ["OUTPUT_FILES", "OutputError", "OutputFolder"]

#: every file a run may write; --overwrite replaces a folder holding these only
OUTPUT_FILES = ("posterior.nc", "summary.csv", "report.md", "reward.png", "policy.png",
                "diagnostics.png", "recovery.png", "decisions.csv", "decisions.png")
_SUFFIX = ".partial"


class OutputError(Exception):
    """``--out`` cannot hold the outputs; the message says why, on one line."""


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _held(entries: list[str]) -> str:
    return f"{entries[0]!r}" + (f" and {len(entries) - 1} more" if len(entries) > 1 else "")


def _move_order(name: str) -> tuple:
    """posterior.nc first, report.md last (its presence marks a complete run)."""
    return (name != "posterior.nc", name == "report.md", name)


class OutputFolder:
    """A staging folder for the run's outputs, moved into ``target`` by :meth:`commit` (see
    the module docstring for what is atomic).

    Args:
        target: the ``--out`` folder (made absolute; a symlink is followed).
        overwrite: replace the outputs of a previous run that ``target`` holds.

    Raises :class:`OutputError` when ``target`` cannot receive the outputs. ``path`` is where
    the run writes; :meth:`discard` removes it and the parent folders the constructor made
    (an abandoned run).
    """

    def __init__(self, target, overwrite: bool = False):
        self.target = Path(os.path.abspath(target)).resolve()
        self.overwrite = overwrite
        self._committed = False
        self._made: list[Path] = []  # parent folders this run created, deepest first
        self.inside = self.target.exists() or self.target.is_symlink()
        self._remove_stale(self.target.parent)
        if self.inside:
            if not self.target.is_dir():
                raise OutputError(f"--out {self.target} exists and is not a folder")
            self._remove_stale(self.target)
        self._check_in_use()
        if self.inside:
            problem = self._contents_problem(self._results())
            if problem is not None:
                why, advice = problem
                raise OutputError(f"--out {self.target} {why}: {advice}")
        self._make_parents()
        here = self.target if self.inside else self.target.parent
        while True:
            path = Path(temporary_path(here / self.target.name, _SUFFIX))
            try:
                os.mkdir(path, 0o777)  # the umask applies, as to any new folder
                break
            except FileExistsError:
                continue
            except OSError as e:
                self._remove_made()
                raise OutputError(f"--out {self.target}: cannot write in {here} "
                                  f"({_reason(e)})") from None
        self.path = path
        try:  # a folder that takes a subfolder may still refuse files (a full disk, quotas)
            probe = self.path / ".probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            self.discard()
            raise OutputError(f"--out {self.target}: cannot write files in {here} "
                              f"({_reason(e)})") from None

    # ------------------------------------------------------------------ checks
    def _is_staging(self, entry: str) -> bool:
        return entry.startswith(f".{self.target.name}.") and entry.endswith(_SUFFIX)

    def _remove_stale(self, folder: Path) -> None:
        """Staging folders of killed runs of this target in ``folder``."""
        for stale in stale_temporaries(folder / self.target.name, _SUFFIX):
            shutil.rmtree(stale, ignore_errors=True)

    def _staging_of_others(self) -> list[str]:
        """Staging folders of other runs writing this target (beside it or inside it)."""
        mine = getattr(self, "path", None)
        found = []
        for folder in (self.target.parent, self.target):
            try:
                entries = os.listdir(folder)
            except OSError:
                continue
            found += [str(folder / e) for e in entries
                      if self._is_staging(e) and (mine is None or folder / e != mine)]
        return sorted(found)

    def _check_in_use(self) -> None:
        others = self._staging_of_others()
        if others:
            raise OutputError(f"--out {self.target} is being written by another run (its "
                              f"staging folder {others[0]} exists): choose another folder, "
                              "or remove that one if no run is writing there")

    def _results(self) -> list[str]:
        """What ``target`` holds besides staging folders (this run's and others')."""
        return sorted(e for e in os.listdir(self.target) if not self._is_staging(e))

    def _contents_problem(self, entries: list[str]) -> tuple[str, str] | None:
        """``(why, what to do)`` when ``target`` holding ``entries`` cannot take the outputs
        (None: it can): files while ``overwrite`` is off, or files a run does not write."""
        if entries and not self.overwrite:
            return (f"is not empty (it holds {_held(entries)})", "pass --overwrite to replace "
                    "a previous run's outputs, or choose a new folder")
        foreign = [e for e in entries if e not in OUTPUT_FILES]
        if foreign:
            return (f"holds {foreign[0]!r}, which a run does not write", "--overwrite "
                    "replaces only a folder of bayesirl outputs; choose a new folder")
        return None

    def _make_parents(self) -> None:
        parent = self.target.parent
        missing = []
        p = parent
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._made = [m for m in missing if m.is_dir()]
            self._remove_made()
            raise OutputError(f"--out {self.target}: cannot create the folder {parent} "
                              f"({_reason(e)})") from None
        self._made = missing

    def _remove_made(self) -> None:
        """The parent folders this run made, while empty (another run may have used them)."""
        for folder in self._made:
            try:
                os.rmdir(folder)
            except OSError:
                break
        self._made = []

    # ------------------------------------------------------------------ commit
    def commit(self) -> Path:
        """Move the outputs into the target; returns the target.

        Raises :class:`OutputError` naming the folder that keeps this run's outputs when
        the target no longer takes them (another run wrote it and ``overwrite`` is off, it
        holds other files, it is no folder) or a move fails."""
        if not self.inside and not os.path.lexists(self.target):
            try:
                os.rename(self.path, self.target)
                self._committed = True
                return self.target
            except OSError as e:  # unless the target appeared meanwhile: files into it
                if not os.path.lexists(self.target):
                    self._keep(f"moving the outputs to --out {self.target} failed "
                               f"({_reason(e)})")
        try:
            if not self.target.is_dir():
                self._keep(f"--out {self.target} is no longer a folder")
            old = self._results()
        except OSError as e:
            self._keep(f"--out {self.target} cannot be read ({_reason(e)})")
        problem = self._contents_problem(old)
        if problem is not None:
            self._keep(f"--out {self.target} {problem[0]} at the end of the run (another run "
                       "wrote it meanwhile?)" + ("" if self.overwrite else
                                                 ", and --overwrite was not given"))
        new = sorted(os.listdir(self.path), key=_move_order)
        for i, name in enumerate(new):
            try:
                os.replace(self.path / name, self.target / name)
            except OSError as e:
                self._keep(f"moving {name} into --out {self.target} failed ({_reason(e)}) "
                           f"after {i} of {len(new)} files")
        self._committed = True
        left = []
        for name in old:  # the previous run's files this run does not write
            if name not in new:
                try:
                    os.unlink(self.target / name)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    left.append(f"{name} ({_reason(e)})")
        with contextlib.suppress(OSError):
            os.rmdir(self.path)
        if left:
            raise OutputError(f"the outputs are in --out {self.target}, but the previous "
                              f"run's {', '.join(left)} could not be removed")
        return self.target

    def _keep(self, why: str):
        """Keep the staged outputs under a visible name beside the target (or where they are,
        when that fails) and raise OutputError saying ``why`` and where they are."""
        name = f"{self.target.name}.unsaved.{os.getpid()}.{secrets.token_hex(3)}"
        for kept in (self.target.parent / name, self.path.parent / name):
            try:
                os.rename(self.path, kept)
                break
            except OSError:
                continue
        else:
            kept = self.path
        self._committed = True  # discard() must not remove what is kept
        raise OutputError(f"{why}; this run's outputs are kept in {kept}")

    def discard(self) -> None:
        """Remove the staging folder and what is in it, and the parent folders the constructor
        made (while empty). Nothing to do after :meth:`commit`."""
        if self._committed:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        self._remove_made()
