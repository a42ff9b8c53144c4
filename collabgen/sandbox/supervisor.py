"""Start the warden, hold it to the wall clock, read its report, and leave nothing behind.

Why async: the engine drives thousands of runs from one event loop, which must stay
responsive while children run, so waiting, pipe draining, the disk watchdog and the
post-run sweep all yield to the loop. Output is capped so hostile output cannot eat our
memory. Two extra pipes connect us to the warden: its config goes in through one (never a
file, so the nonce is never on disk) and its JSON report comes back through the other,
which the sandboxed child never holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collabgen.sandbox.bootstrap import SYSTEM_PATH
from collabgen.sandbox.processes import kill_tree, open_pidfd, survivors
from collabgen.sandbox.reach import remove_uid_files, uid_usage

if TYPE_CHECKING:
    from collabgen.sandbox.limits import SandboxLimits
    from collabgen.sandbox.workspace import Workspace

__all__ = ["Exit", "supervise"]

_REAP_TIMEOUT_S = 5.0
_READER_GRACE_S = 1.0
_REPORT_LIMIT = 1_000_000
_DISK_POLL_S = 0.02


@dataclass(frozen=True)
class Exit:
    """How the warden ended, what the run printed, and what the warden reported."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    reports: list[dict[str, Any]] = field(default_factory=list)
    disk_exceeded: bool = False


@dataclass
class _Run:
    """The moving parts of one supervised run."""

    proc: asyncio.subprocess.Process
    pidfd: int | None
    tasks: dict[str, asyncio.Task[Any]]
    killed: set[int] = field(default_factory=set)


async def supervise(
    build_argv: Callable[[int, int], list[str]],
    ws: Workspace,
    config: bytes,
    stdin: str | None,
    limits: SandboxLimits,
    watch_disk: bool,
    scratch_roots: tuple[str, ...] = (),
) -> Exit:
    """Start the warden with its two pipes, enforce the wall clock, always clean up."""
    config_r, config_w = os.pipe()
    report_r, report_w = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *build_argv(config_r, report_w),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ws.path,
            env={"PATH": SYSTEM_PATH},
            start_new_session=True,
            pass_fds=(config_r, report_w),
        )
    finally:
        os.close(config_r)
        os.close(report_w)
    _write_all(config_w, config)
    run = _Run(proc, open_pidfd(proc.pid), _start_tasks(proc, report_r, stdin, limits))
    timed_out, exceeded = await _wait(run, ws, limits, scratch_roots if watch_disk else None)
    stdout, stderr = await _collect(run.tasks["out"]), await _collect(run.tasks["err"])
    reports = _parse_reports(await _collect_bytes(run.tasks["report"]))
    if watch_disk and ws.uid is not None:
        await asyncio.to_thread(remove_uid_files, ws.uid, scratch_roots, str(ws.path))
    return Exit(proc.returncode, stdout, stderr, timed_out, reports, exceeded)


def _write_all(fd: int, data: bytes) -> None:
    """The config is far below a pipe's buffer, so this never blocks on a live warden."""
    try:
        while data:
            data = data[os.write(fd, data):]
    except BrokenPipeError:
        pass  # the warden died before reading it: its missing report says so
    finally:
        os.close(fd)


def _start_tasks(proc: asyncio.subprocess.Process, report_r: int, stdin: str | None, limits: SandboxLimits) -> dict:
    cap = limits.max_output_bytes
    return {
        "out": asyncio.create_task(_read_capped(proc.stdout, cap)),
        "err": asyncio.create_task(_read_capped(proc.stderr, cap)),
        "report": asyncio.create_task(_read_fd(report_r, _REPORT_LIMIT)),
        "stdin": asyncio.create_task(_feed_stdin(proc, stdin)),
    }


async def _wait(run: _Run, ws: Workspace, limits: SandboxLimits, scratch: tuple[str, ...] | None) -> tuple[bool, bool]:
    """Wait for the warden under the wall clock (and the disk watchdog over ``scratch``, if any); then sweep."""
    watchdog = asyncio.create_task(_police_disk(run, ws, limits, scratch)) if scratch is not None else None
    timed_out = False
    try:
        await asyncio.wait_for(_exited(run), timeout=limits.wall_seconds)
    except asyncio.TimeoutError:
        timed_out = True
    except BaseException:  # cancelled: the sandbox must not outlive its caller
        for task in run.tasks.values():
            task.cancel()
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if run.proc.returncode is None:
            run.killed |= kill_tree(run.proc.pid, run.pidfd, ws.uid)
        run.tasks["stdin"].cancel()
        await asyncio.shield(_finish(run, ws.uid))
    exceeded = watchdog is not None and not watchdog.cancelled() and watchdog.done() and watchdog.result()
    return timed_out, bool(exceeded)


async def _police_disk(run: _Run, ws: Workspace, limits: SandboxLimits, scratch: tuple[str, ...]) -> bool:
    """The unisolated fallback's disk cap: kill the run's uid once what it holds exceeds ``disk_mb``.

    Bounded to one poll of writes (RLIMIT_FSIZE caps each file on top). In a thread: the
    run decides how many entries there are to walk, and the event loop must not wait on it.
    """
    budget = limits.disk_mb * 1024 * 1024
    while run.proc.returncode is None:
        used = await asyncio.to_thread(uid_usage, ws.uid, str(ws.path), scratch)
        if used > budget:
            if ws.uid is not None:
                run.killed |= kill_tree(-1, None, ws.uid)
            else:
                run.killed |= kill_tree(run.proc.pid, run.pidfd, None)
            return True
        await asyncio.sleep(_DISK_POLL_S)
    return False


async def _exited(run: _Run) -> None:
    """The warden's exit, seen through its pidfd.

    Why not ``proc.wait()``: on Python 3.11 it also waits for the output pipes to close,
    so anything still holding them (a daemon the run left) would keep every run waiting
    for the wall clock, though the warden ended long before.
    """
    if run.pidfd is None:
        await run.proc.wait()
        return
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    loop.add_reader(run.pidfd, lambda: ended.done() or ended.set_result(None))
    try:
        await ended
    finally:
        loop.remove_reader(run.pidfd)


async def _finish(run: _Run, uid: int | None) -> None:
    """Reap the warden, then make sure nothing of the run survives it."""
    try:
        await _exited(run)
        with contextlib.suppress(OSError):
            os.killpg(run.proc.pid, signal.SIGKILL)  # background children in our group
        if uid is not None:
            run.killed |= kill_tree(run.proc.pid, None, uid)
        deadline = time.monotonic() + _REAP_TIMEOUT_S
        while survivors(uid, run.killed) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(run.proc.wait(), _REAP_TIMEOUT_S)  # the returncode, once the pipes close
    finally:
        if run.pidfd is not None:
            os.close(run.pidfd)


async def _read_fd(fd: int, limit: int) -> tuple[bytes, bool]:
    """Read a raw pipe end to EOF (the warden's report), capped."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
    try:
        return await _read_capped(reader, limit)
    finally:
        transport.close()


async def _read_capped(stream: asyncio.StreamReader | None, limit: int) -> tuple[bytes, bool]:
    """Drain a pipe, keeping at most ``limit`` bytes so hostile output cannot eat our RAM."""
    if stream is None:
        return b"", False
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = limit - len(kept)
        if len(chunk) > room:
            truncated = True
        kept += chunk[: max(room, 0)]
    return bytes(kept), truncated


async def _feed_stdin(proc: asyncio.subprocess.Process, data: str | None) -> None:
    """Write stdin and close it; a child that stops reading is not our error."""
    if proc.stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if data:
            proc.stdin.write(data.encode())
            await proc.stdin.drain()
        proc.stdin.close()


async def _collect_bytes(task: asyncio.Task[tuple[bytes, bool]]) -> bytes:
    """Finish a reader; a pipe held open by an escaped process must not block us."""
    try:
        data, _ = await asyncio.wait_for(task, _READER_GRACE_S)
    except asyncio.TimeoutError:
        return b""
    return data


async def _collect(task: asyncio.Task[tuple[bytes, bool]]) -> str:
    try:
        data, truncated = await asyncio.wait_for(task, _READER_GRACE_S)
    except asyncio.TimeoutError:
        return "\n[collabgen sandbox: output unavailable, pipe held open]"
    text = data.decode("utf-8", errors="replace")
    return text + "\n[collabgen sandbox: output truncated]" if truncated else text


def _parse_reports(data: bytes) -> list[dict[str, Any]]:
    """The warden's JSON lines; anything else is ignored (only the warden holds this pipe)."""
    reports = []
    for line in data.splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if isinstance(item, dict):
                reports.append(item)
    return reports
