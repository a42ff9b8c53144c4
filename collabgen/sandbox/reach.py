"""What an unisolated run's private uid can write on the host: found, measured, emptied.

Why this exists: without bubblewrap there is no size-capped mount around the run, and a
uid with no groups can create files in every world-writable directory it can reach, not
only ``/tmp`` (a ``0777`` folder nested in a ``0755`` one, ``/var/tmp``, ``/run/lock``, an
application's spool). Its private uid is what marks those files as the run's, so:

* :func:`writable_dirs` walks the host once (as root) for the directories another user
  can both reach and write;
* :func:`uid_usage` charges the run, while it runs, for its workspace, for everything
  its uid owns in those directories (and in world-writable directories below them made
  since), and for deleted files its processes still hold open; every inode costs at least
  one page, so a million empty files are over budget too;
* :func:`remove_uid_files` deletes what the uid owns there afterwards, at any depth.

What it cannot see (the README's sandbox section says so): world-writable directories
created outside those roots by other users after the walk, world-writable regular files
the code appends to (each capped by RLIMIT_FSIZE), and a deleted file kept only as a
memory mapping (bounded by the address-space limit).
"""

from __future__ import annotations

import os
import shutil
import stat

__all__ = ["remove_uid_files", "uid_usage", "writable_dirs"]

_PAGE = 4096
_PSEUDO = ("/proc", "/sys")
_OPEN_TO_OTHERS = stat.S_IWOTH | stat.S_IXOTH


def _open_dir(info: os.stat_result) -> bool:
    return stat.S_ISDIR(info.st_mode) and info.st_mode & _OPEN_TO_OTHERS == _OPEN_TO_OTHERS


def writable_dirs() -> tuple[str, ...]:
    """Every directory a uid with no groups can reach (``o+x`` all the way) and create files in (``o+wx``)."""
    found: list[str] = []
    stack = ["/"]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.path in _PSEUDO or not entry.is_dir(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not info.st_mode & stat.S_IXOTH:
                continue  # nothing below is reachable by another uid
            if _open_dir(info):
                found.append(entry.path)
            stack.append(entry.path)
    return tuple(sorted(found))


def _charge(info: os.stat_result) -> int:
    return max(info.st_blocks * 512, _PAGE)


def _tree_bytes(path: str, seen: set[tuple[int, int]]) -> int:
    """Bytes charged for everything under ``path`` (any owner), without following links."""
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            info = os.lstat(current)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        total += _charge(info)
        if stat.S_ISDIR(info.st_mode):
            try:
                stack.extend(os.path.join(current, name) for name in os.listdir(current))
            except OSError:
                continue
    return total


def _owned(uid: int, roots: tuple[str, ...], skip: str) -> list[str]:
    """Paths ``uid`` owns directly in ``roots`` or in world-writable directories below them."""
    owned: list[str] = []
    visited: set[tuple[int, int]] = set()
    stack = list(roots)
    while stack:
        current = stack.pop()
        try:
            info = os.lstat(current)
            if (info.st_dev, info.st_ino) in visited:
                continue
            visited.add((info.st_dev, info.st_ino))
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.path == skip:
                continue
            if info.st_uid == uid:
                owned.append(entry.path)
            elif _open_dir(info):
                stack.append(entry.path)
    return owned


def _open_deleted_bytes(uid: int, seen: set[tuple[int, int]]) -> int:
    """Deleted files the uid's processes still hold open: on disk, though in no directory."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                info = os.stat(f"/proc/{name}/fd/{fd}")
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 0 and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += _charge(info)
    return total


def uid_usage(uid: int | None, workspace: str, roots: tuple[str, ...]) -> int:
    """Bytes the run holds: its workspace, and (with a private uid) what that uid owns anywhere it can write."""
    seen: set[tuple[int, int]] = set()
    total = _tree_bytes(workspace, seen)
    if uid is None:
        return total
    total += sum(_tree_bytes(path, seen) for path in _owned(uid, roots, skip=workspace))
    return total + _open_deleted_bytes(uid, seen)


def remove_uid_files(uid: int, roots: tuple[str, ...], keep: str) -> None:
    """Delete what ``uid`` left in ``roots`` at any depth (never anyone else's); ``keep`` is removed by its owner."""
    for path in _owned(uid, roots, skip=keep):
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        except OSError:
            continue
