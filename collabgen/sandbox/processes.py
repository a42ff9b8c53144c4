"""Find and stop every process of one run, without ever signalling a stranger.

Why by /proc scan and not by process group: untrusted code can call ``setsid`` and
leave our group, and a fork bomb outpaces any one-shot kill. A run's processes are the
descendants of its root plus (with a private uid) everything owned by that uid; each is
pinned by a pidfd before it is signalled, so a recycled pid is never hit. (The same uid
marks the files an unisolated run wrote: :mod:`collabgen.sandbox.reach`.)
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass

__all__ = ["kill_tree", "open_pidfd", "survivors"]


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    uid: int
    zombie: bool


def _read_proc(pid: int) -> _Proc | None:
    """Parse /proc/PID/status; None if the process is gone."""
    fields: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("State", "PPid", "Uid"):
                    fields[key] = value.strip()
    except OSError:
        return None
    try:
        return _Proc(pid, int(fields["PPid"]), int(fields["Uid"].split()[0]), fields["State"].startswith("Z"))
    except (KeyError, ValueError, IndexError):
        return None


def _process_table() -> list[_Proc]:
    """Snapshot of all live processes (zombies excluded: they cannot do anything)."""
    table = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            entry = _read_proc(int(name))
            if entry is not None and not entry.zombie:
                table.append(entry)
    return table


def _descendants(table: list[_Proc], roots: set[int]) -> set[int]:
    """Transitive children of ``roots`` in one snapshot."""
    children: dict[int, list[int]] = {}
    for entry in table:
        children.setdefault(entry.ppid, []).append(entry.pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def open_pidfd(pid: int) -> int | None:
    """A pidfd pins *this* process, so later signals cannot hit a recycled pid."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _pidfd_alive(pidfd: int | None) -> bool:
    """True while the process behind ``pidfd`` has not been reaped."""
    if pidfd is None:
        return False
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except OSError:
        return False
    return True


def _signal_checked(pid: int, sig: int, uid: int | None, parents: set[int]) -> bool:
    """Signal ``pid`` only if, once pinned by a pidfd, it still looks like ours."""
    pidfd = open_pidfd(pid)
    try:
        entry = _read_proc(pid)
        if entry is None or entry.pid == os.getpid():
            return False
        if not ((uid is not None and entry.uid == uid) or entry.ppid in parents):
            return False
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
        return True
    except OSError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def kill_tree(root_pid: int, root_pidfd: int | None, uid: int | None) -> set[int]:
    """Freeze then kill the run's processes: descendants of the root and the sandbox uid.

    Why freeze first: a fork bomb forks faster than we can scan and kill; stopped
    processes cannot fork or reparent, so a few rounds reach a fixpoint.
    """
    stopped: set[int] = set()
    if _pidfd_alive(root_pidfd):
        with contextlib.suppress(ProcessLookupError):  # it may exit between the check and the signal
            signal.pidfd_send_signal(root_pidfd, signal.SIGSTOP)
            stopped.add(root_pid)
    for _ in range(50):
        table = _process_table()
        targets = {p.pid for p in table if uid is not None and p.uid == uid}
        if stopped:
            targets |= _descendants(table, stopped)
        targets -= stopped | {os.getpid()}
        targets = {pid for pid in targets if _signal_checked(pid, signal.SIGSTOP, uid, stopped)}
        if not targets:
            break
        stopped |= targets
    for pid in stopped - {root_pid}:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if _pidfd_alive(root_pidfd):
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(root_pidfd, signal.SIGKILL)
    return stopped


def survivors(uid: int | None, pids: set[int]) -> bool:
    """Whether any process of the sandbox uid, or any of ``pids``, is still alive."""
    for entry in _process_table():
        if entry.pid in pids or (uid is not None and entry.uid == uid):
            return True
    return False
