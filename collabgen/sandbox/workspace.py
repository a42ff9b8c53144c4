"""One run's throwaway directory on the host: made fresh, filled with files, deleted afterwards.

Why its own module: every file the untrusted code sees is written here, so the checks
that keep caller-chosen names inside the directory (no absolute paths, no ``..``, no
clobbering of our reserved warden/runner files) and the ownership rules for the sandbox
uid live in one place. Under bubblewrap it is the read-only source the child copies into
its size-capped workspace; unisolated, it is the workspace itself.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["RESERVED_PREFIX", "Workspace", "private_uid", "safe_relpath", "workspace"]

_PREFIX = "collabgen-sbx-"

RESERVED_PREFIX = ".collabgen_"
"""Names the host writes next to the user's files; callers may not use them."""

_UID_BASE = 2_100_000_000
_UID_SPAN = 40_000_000


@dataclass(frozen=True)
class Workspace:
    """One run's private directory and the uid that will own it."""

    path: Path
    uid: int | None

    def write(self, name: str | PurePosixPath, content: str | bytes, mode: int = 0o644, owned: bool = True) -> Path:
        """Create a file (and parents) inside the workspace, owned by the sandbox uid."""
        target = self.path / Path(name)
        for parent in reversed(target.relative_to(self.path).parents[:-1]):
            directory = self.path / parent
            if not directory.exists():
                directory.mkdir()
                self._chown(directory)
        data = content.encode() if isinstance(content, str) else content
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if owned:
            self._chown(target)
        return target

    def _chown(self, path: Path) -> None:
        if self.uid is not None:
            os.chown(path, self.uid, self.uid)


def private_uid() -> int:
    """A random high uid for one run, so concurrent runs never share a process budget."""
    return _UID_BASE + secrets.randbelow(_UID_SPAN)


def _claim_uid(tmp_root: str | None) -> tuple[Path, int]:
    """A fresh uid and its directory: ``mkdir`` of ``collabgen-sbx-<uid>`` is the lease.

    Why a lease and not only a random draw: two live runs sharing a uid could read, fill
    and kill each other (the sweep after one run kills every process of its uid), so a
    uid is never handed out twice while its directory exists, across processes too.
    """
    parent = tmp_root if tmp_root is not None else tempfile.gettempdir()
    while True:
        uid = private_uid()
        path = Path(parent) / f"{_PREFIX}{uid}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return path, uid


@contextlib.contextmanager
def workspace(private: bool, tmp_root: str | None, mode: int = 0o700) -> Iterator[Workspace]:
    """A fresh directory, owned by a run-private uid if ``private`` (then with ``mode``), deleted afterwards.

    Why the mode is the backend's (:attr:`IsolationBackend.workspace_mode`): unisolated,
    concurrent runs share the host's ``/tmp``, and a directory others may traverse would let
    one run read another's solution and tests by name, so it is ``0700``; under bubblewrap
    no other run sees the host's ``/tmp``, and the capability-less warden must traverse it.
    """
    if private:
        path, uid = _claim_uid(tmp_root)
    else:
        path, uid = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=tmp_root)), None
    try:
        if uid is not None:
            os.chown(path, uid, uid)
            os.chmod(path, mode)
        yield Workspace(path, uid)
    finally:
        _rmtree(path)


def safe_relpath(name: str) -> PurePosixPath:
    """Reject absolute paths, '..', and our own reserved file names."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(part in ("..", "") for part in path.parts) or not path.parts:
        raise ValueError(f"unsafe sandbox file name: {name!r}")
    if path.parts[0].startswith(RESERVED_PREFIX):
        raise ValueError(f"reserved sandbox file name: {name!r}")
    return path


def _rmtree(path: Path) -> None:
    """Delete the run directory even if the untrusted code chmod-ed parts of it to 000.

    Permissions are only ever repaired *inside* the run directory: its parent is a shared
    directory such as /tmp, and must never be touched.
    """
    root = os.path.abspath(path)

    def fix(func: Any, target: str, _exc: Any) -> None:
        target = os.path.abspath(target)
        for directory in (os.path.dirname(target), target):
            if directory == root or directory.startswith(root + os.sep):
                with contextlib.suppress(OSError):
                    os.chmod(directory, 0o700)
        with contextlib.suppress(OSError):
            func(target)

    if os.path.lexists(root):
        shutil.rmtree(root, onerror=fix)
