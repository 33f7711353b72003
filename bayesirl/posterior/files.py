"""Atomic files: a writer fills a temporary file beside the target, which is flushed to disk and
renamed into place, so a reader finds the old file or the new one, never a part.

The temporary file is ``.<name>.<host>.<pid>.<token>.tmp`` in the target's folder (a rename
within one file system is atomic). It is created with mode ``0o666`` filtered by the umask, as
``open()`` creates files, so the result has the permissions of every other output (a
``tempfile.mkstemp`` file would keep ``0o600``). An exception, including ``KeyboardInterrupt``,
removes it; a process killed outright (SIGKILL, power loss) cannot, so each write first removes
the temporary files of the same target left by processes of this host that no longer run.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket

__all__ = ["atomic_write", "stale_temporaries", "temporary_path"]


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


def temporary_path(path, suffix: str = ".tmp") -> str:
    """A fresh name beside ``path`` for this process to write ``path``'s content under:
    ``.<name>.<host>.<pid>.<token><suffix>``, so :func:`stale_temporaries` can tell a dead
    writer's leftovers from a running one's."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(folder, f".{name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}"
                                f"{suffix}")


def stale_temporaries(path, suffix: str = ".tmp") -> list[str]:
    """The temporary names (:func:`temporary_path`) of ``path`` left by writers of this host
    whose process no longer runs."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = re.compile(re.escape(f".{name}.{_host()}.") + r"(\d+)\.[0-9a-f]+"
                         + re.escape(suffix))
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    return [os.path.join(folder, e) for e in entries
            if (m := pattern.fullmatch(e)) is not None and int(m[1]) != os.getpid()
            and not _alive(int(m[1]))]


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX; folders cannot be opened on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path, write) -> None:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then fsync it and rename it
    to ``path``. The temporary file is removed on any exception; leftovers of killed writers of
    ``path`` are removed first. A ``path`` whose folder does not exist, or that is a folder,
    raises naming it (not the temporary file)."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: its folder {folder} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    for old in stale_temporaries(path):
        with contextlib.suppress(OSError):
            os.remove(old)
    tmp = temporary_path(path)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies
    try:
        mode = os.fstat(fd).st_mode & 0o777
        os.close(fd)
        write(tmp)
        os.chmod(tmp, mode)  # a writer that recreated the file gets the umask's mode back
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_folder(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
