"""Run untrusted, model-written Python in an isolated child process.

Why this exists: the code-execution metric runs whatever the model wrote against unit
tests. That code must not read our API keys, touch our files, reach the network, or take
the machine down (fork bombs, memory hogs, infinite loops), and the event loop that
drives thousands of such runs must stay responsive, so everything here is async.

Layers, outermost first:

* **bubblewrap** (when usable): new pid/net/ipc/uts namespaces, the host root
  filesystem bound read-only, private size-capped tmpfs ``/tmp`` and ``/dev/shm``, fresh ``/proc``
  and ``/dev``, only the run's temp directory writable, ``--die-with-parent``,
  ``--new-session`` (no TIOCSTI into our terminal), no capabilities beyond the two the
  bootstrap needs to drop its uid. Directories the sandbox uid may not traverse on the
  way to the interpreter (e.g. ``/root`` with a pyenv install) are hidden behind a
  tmpfs and only the interpreter tree is bound back, which also hides the rest of
  root's home.
* **a private unprivileged uid** per run when we are root: the kernel ignores
  ``RLIMIT_NPROC`` for uid 0 (and for root mapped through ``--unshare-user``), so the
  bootstrap ``setresuid``s to a random high uid; that makes the process limit real,
  keeps concurrent runs from sharing one budget, and lets us find every leftover
  process by uid.
* **rlimits** (CPU, address space, file size, process count, no core dumps), applied
  by the trusted bootstrap in :mod:`collabgen.sandbox_runner` inside the sandbox.
* a **wall-clock timeout** that freezes (SIGSTOP) and then SIGKILLs the whole tree,
  plus a sweep after every run so background children never outlive the call.

Without bwrap we fall back to the last three layers and warn: then there is no
filesystem, network or pid isolation beyond what the uid drop gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from collabgen.sandbox_runner import BOOTSTRAP_FAILED_EXIT, count_declared_tests

__all__ = ["Sandbox", "SandboxLimits", "SandboxResult", "UnitTestOutcome"]

logger = logging.getLogger(__name__)

_RUNNER_NAME = ".collabgen_runner.py"
_CONFIG_NAME = ".collabgen_config.json"
_RESULT_NAME = ".collabgen_result.json"
_SOLUTION_NAME = "solution.py"
_TESTS_NAME = "test_solution.py"
_RESERVED_PREFIX = ".collabgen_"
_UID_BASE = 2_100_000_000
_UID_SPAN = 40_000_000
_PROBE_TIMEOUT_S = 15.0
_REAP_TIMEOUT_S = 5.0
_READER_GRACE_S = 1.0
_MAX_REPORT_BYTES = 64 * 1024
_STDERR_TAIL_CHARS = 4000
_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxLimits(BaseModel):
    """Resource limits of one sandboxed run.

    Why pydantic with ``extra="forbid"``: recipes load these from YAML, and a typo such
    as ``memory_mib`` must fail loudly instead of silently running with the default.
    ``max_processes`` counts threads as well (that is how RLIMIT_NPROC works).
    """

    model_config = ConfigDict(extra="forbid")

    cpu_seconds: int = Field(10, gt=0)
    memory_mb: int = Field(1024, gt=0)
    file_size_mb: int = Field(16, gt=0)
    max_processes: int = Field(32, gt=0)
    wall_seconds: float = Field(30.0, gt=0)
    network: bool = False
    max_output_bytes: int = Field(1_000_000, gt=0)


@dataclass
class SandboxResult:
    """What came out of one run; ``returncode`` is None when we killed it on timeout.

    A death by signal is reported as a negative returncode (subprocess convention),
    also under bwrap, which itself reports it as ``128 + signal``.
    """

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    isolation: str
    reason: str | None


@dataclass
class UnitTestOutcome:
    """Counts of a unit-test run; ``reason`` is None only when every test passed."""

    passed: int
    failed: int
    errors: int
    total: int
    reason: str | None
    isolation: str
    skipped: int = 0
    stderr: str = ""

    @property
    def pass_rate(self) -> float:
        """Fraction of tests that passed; 0.0 when there were none."""
        return self.passed / self.total if self.total else 0.0

    @property
    def all_passed(self) -> bool:
        """At least one test, and all of them passed."""
        return self.total > 0 and self.passed == self.total


# --------------------------------------------------------------------------- filesystem plan


@dataclass(frozen=True)
class _MountPlan:
    """bwrap arguments that make the interpreter reachable for the sandbox uid."""

    args: tuple[str, ...]
    feasible: bool


def _interpreter_roots() -> list[str]:
    """Directories the child interpreter needs: prefixes, bin dirs, site-packages.

    Both the spelled path and its realpath are kept: venv interpreters are symlinks and
    must be started by their own path, or the venv would not be found.
    """
    candidates: set[str] = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(sys.executable),
        os.path.dirname(os.path.realpath(sys.executable)),
    }
    with contextlib.suppress(AttributeError):
        candidates.update(site.getsitepackages())
    paths = {os.path.abspath(p) for p in candidates if p} | {os.path.realpath(p) for p in candidates if p}
    existing = sorted(p for p in paths if os.path.isdir(p))
    return [p for p in existing if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in existing)]


def _others_can(path: str, bits: int) -> bool:
    """Whether 'other' users have ``bits`` (e.g. S_IXOTH) on ``path``."""
    try:
        return bool(os.stat(path).st_mode & bits)
    except OSError:
        return False


def _ancestors(path: str) -> list[str]:
    """Strict ancestors of an absolute path, outermost first, excluding '/'."""
    parts = PurePosixPath(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _reachable_by_others(path: str) -> bool:
    """Could an unrelated uid reach and list ``path``?"""
    return all(_others_can(a, stat.S_IXOTH) for a in _ancestors(path)) and _others_can(
        path, stat.S_IXOTH | stat.S_IROTH
    )


def _mount_plan(roots: Iterable[str], perms_supported: bool) -> _MountPlan:
    """Hide untraversable ancestors (like /root) behind a tmpfs and bind the roots back."""
    masks: dict[str, list[str]] = {}
    for root in roots:
        if not _others_can(root, stat.S_IXOTH):
            return _MountPlan((), feasible=False)
        blocked = next((a for a in _ancestors(root) if not _others_can(a, stat.S_IXOTH)), None)
        if blocked is not None:
            masks.setdefault(blocked, []).append(root)
    if masks and not perms_supported:
        return _MountPlan((), feasible=False)  # parents would be created 0700: unreachable
    args: list[str] = []
    for mask, bound in sorted(masks.items()):
        args += ["--perms", "0755", "--tmpfs", mask]
        made: set[str] = set()
        for root in bound:
            for directory in _ancestors(root):
                if directory.startswith(mask + "/") and directory not in made:
                    made.add(directory)
                    args += ["--perms", "0755", "--dir", directory]
            args += ["--ro-bind", root, root]
    return _MountPlan(tuple(args), feasible=True)


# --------------------------------------------------------------------------- process table


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


def _open_pidfd(pid: int) -> int | None:
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
    pidfd = _open_pidfd(pid)
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


def _kill_tree(root_pid: int, root_pidfd: int | None, uid: int | None) -> set[int]:
    """Freeze then kill the run's processes: descendants of the root and the sandbox uid.

    Why freeze first: a fork bomb forks faster than we can scan and kill; stopped
    processes cannot fork or reparent, so a few rounds reach a fixpoint.
    """
    stopped: set[int] = set()
    if _pidfd_alive(root_pidfd):
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
        signal.pidfd_send_signal(root_pidfd, signal.SIGKILL)
    return stopped


def _survivors(uid: int | None, pids: set[int]) -> bool:
    """Whether any process of the sandbox uid, or any of ``pids``, is still alive."""
    for entry in _process_table():
        if entry.pid in pids or (uid is not None and entry.uid == uid):
            return True
    return False


# --------------------------------------------------------------------------- I/O helpers


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


async def _collect(task: asyncio.Task[tuple[bytes, bool]]) -> str:
    """Finish a reader; a pipe held open by an escaped process must not block us."""
    try:
        data, truncated = await asyncio.wait_for(task, _READER_GRACE_S)
    except asyncio.TimeoutError:
        return "\n[collabgen sandbox: output unavailable, pipe held open]"
    text = data.decode("utf-8", errors="replace")
    return text + "\n[collabgen sandbox: output truncated]" if truncated else text


def _safe_relpath(name: str) -> PurePosixPath:
    """Reject absolute paths, '..', and our own reserved file names."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(part in ("..", "") for part in path.parts) or not path.parts:
        raise ValueError(f"unsafe sandbox file name: {name!r}")
    if path.parts[0].startswith(_RESERVED_PREFIX):
        raise ValueError(f"reserved sandbox file name: {name!r}")
    return path


def _rmtree(path: Path) -> None:
    """Delete the run directory even if the untrusted code chmod-ed parts of it to 000."""

    def fix(func: Any, target: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
        with contextlib.suppress(OSError):
            func(target)

    shutil.rmtree(path, onerror=fix)


def _read_report(path: Path, nonce: str) -> dict[str, Any] | None:
    """Read the runner's JSON report without following links or blocking on FIFOs."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_REPORT_BYTES:
            return None
        try:
            report = json.loads(fh.read(_MAX_REPORT_BYTES))
        except (ValueError, UnicodeDecodeError):
            return None
    return report if _valid_report(report, nonce) else None


def _valid_report(report: Any, nonce: str) -> bool:
    """Nonce matches and the counts are consistent non-negative integers."""
    if not isinstance(report, dict) or report.get("nonce") != nonce:
        return False
    counts = [report.get(k) for k in ("passed", "failed", "errors", "skipped", "total")]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        return False
    return sum(counts[:4]) == counts[4] and isinstance(report.get("reason"), (str, type(None)))


# --------------------------------------------------------------------------- exit reasons

_STDERR_HINTS = (
    ("MemoryError", "memory limit (MemoryError)"),
    ("Cannot allocate memory", "memory limit (allocation failed)"),
    ("File too large", "file size limit"),
    ("Resource temporarily unavailable", "process limit (fork failed)"),
)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _describe_exit(returncode: int | None, timed_out: bool, stderr: str, limits: SandboxLimits) -> str | None:
    """Human-readable reason for anything but a clean exit 0."""
    if timed_out:
        return f"timed out after {limits.wall_seconds:g}s"
    if returncode is None or returncode == 0:
        return None
    if returncode < 0:
        name = _signal_name(-returncode)
        if -returncode == signal.SIGXCPU:
            return f"killed by signal {name} (CPU limit of {limits.cpu_seconds}s)"
        if -returncode == signal.SIGKILL:
            return f"killed by signal {name} (CPU limit?)"
        return f"killed by signal {name}"
    if returncode == BOOTSTRAP_FAILED_EXIT and "collabgen-sandbox: bootstrap failed" in stderr:
        return "sandbox bootstrap failed: " + stderr.strip().splitlines()[-1][:300]
    tail = stderr[-_STDERR_TAIL_CHARS:]
    hint = next((text for needle, text in _STDERR_HINTS if needle in tail), None)
    return f"{hint} (exit code {returncode})" if hint else f"exited with code {returncode}"


# --------------------------------------------------------------------------- the sandbox


@dataclass(frozen=True)
class _Workspace:
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


class Sandbox:
    """Runs untrusted Python with bwrap (if usable) or rlimits alone.

    ``use_bwrap=None`` probes once (``bwrap <our flags> true``) and caches the answer on
    this object; ``False`` forces the rlimits fallback; ``True`` makes a broken bwrap an
    error instead of a silent downgrade. ``bwrap_path`` exists so tests can point the
    probe at a missing binary.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        use_bwrap: bool | None = None,
        *,
        bwrap_path: str | None = None,
        tmp_root: str | None = None,
    ) -> None:
        self.limits = limits if limits is not None else SandboxLimits()
        self._use_bwrap = use_bwrap
        self._bwrap_path = bwrap_path if bwrap_path is not None else (shutil.which("bwrap") or "bwrap")
        self._tmp_root = tmp_root
        self._python = sys.executable
        self._runner_source = Path(__file__).with_name("sandbox_runner.py").read_bytes()
        self._is_root = os.geteuid() == 0
        self._isolation: str | None = None
        self._drop_uid: bool | None = None
        self._plan: _MountPlan | None = None
        self._bwrap_options: frozenset[str] = frozenset()

    # ----------------------------------------------------------------- isolation choice

    @property
    def isolation(self) -> str:
        """``"bwrap"`` or ``"rlimits"``; decided (and warned about) once per Sandbox."""
        if self._isolation is None:
            self._isolation = self._choose_isolation()
            self._drop_uid = self._decide_uid_drop(self._isolation)
        return self._isolation

    @property
    def process_limit_enforced(self) -> bool:
        """Whether RLIMIT_NPROC binds the sandboxed code (false only for root without a uid drop)."""
        _ = self.isolation
        return not self._is_root or bool(self._drop_uid)

    def _mounts(self) -> _MountPlan:
        if self._plan is None:
            self._plan = _mount_plan(_interpreter_roots(), "--perms" in self._bwrap_options)
        return self._plan

    def _choose_isolation(self) -> str:
        if self._use_bwrap is False:
            logger.info("sandbox: bwrap disabled by caller; using rlimits only")
            return "rlimits"
        problem = self._probe_bwrap()
        if problem is None:
            return "bwrap"
        if self._use_bwrap:
            raise RuntimeError(f"bwrap was requested but is not usable: {problem}")
        message = (
            f"bubblewrap is not usable ({problem}); running untrusted code with rlimits only: "
            "no filesystem, network or pid-namespace isolation"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        logger.warning("sandbox: %s", message)
        return "rlimits"

    def _probe_bwrap(self) -> str | None:
        """Try ``bwrap ... true`` with the flags real runs use; None means it works."""
        if not os.path.isfile(self._bwrap_path) or not os.access(self._bwrap_path, os.X_OK):
            return f"{self._bwrap_path} not found"
        probe_dir = tempfile.mkdtemp(prefix="collabgen-sbx-probe-", dir=self._tmp_root)
        try:
            self._bwrap_options = self._supported_options()
            drop = self._is_root and self._mounts().feasible
            argv = [*self._bwrap_argv(probe_dir, drop), "--", "true"]
            done = subprocess.run(argv, capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False, env={"PATH": _SYSTEM_PATH})
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"probe failed: {exc}"
        finally:
            shutil.rmtree(probe_dir, ignore_errors=True)
        if done.returncode != 0:
            return f"probe exited with {done.returncode}: {done.stderr.decode(errors='replace').strip()[:300]}"
        return None

    def _supported_options(self) -> frozenset[str]:
        """Optional bwrap flags this version knows (``--perms``/``--size`` are 0.5+/0.7+)."""
        done = subprocess.run(
            [self._bwrap_path, "--help"], capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False, env={"PATH": _SYSTEM_PATH}
        )
        text = (done.stdout + done.stderr).decode(errors="replace")
        return frozenset(opt for opt in ("--perms", "--size") if opt in text)

    def _decide_uid_drop(self, isolation: str) -> bool:
        """Root must switch to a private uid, or RLIMIT_NPROC is not enforced at all."""
        if not self._is_root:
            return False
        if isolation == "bwrap" and self._mounts().feasible:
            return True
        if isolation == "rlimits" and all(_reachable_by_others(r) for r in _interpreter_roots()):
            return True
        message = (
            "sandbox runs untrusted code as root: the interpreter is not reachable by an "
            "unprivileged uid, so RLIMIT_NPROC is not enforced (only the wall-clock kill "
            "contains a fork bomb)"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=4)
        logger.warning("sandbox: %s", message)
        return False

    # ----------------------------------------------------------------- command line

    def _bwrap_argv(self, workdir: str, drop_uid: bool) -> list[str]:
        """bwrap flags; the order of mount operations matters (later ones shadow)."""
        argv = [self._bwrap_path, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc"]
        argv += ["--unshare-uts", "--hostname", "sandbox", "--unshare-cgroup-try"]
        if not self.limits.network:
            argv.append("--unshare-net")
        if self._is_root:
            argv += ["--cap-drop", "ALL"]
            if drop_uid:
                argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            argv.append("--unshare-user")
        argv += ["--ro-bind", "/", "/"]
        if drop_uid:
            argv += list(self._mounts().args)
        argv += ["--proc", "/proc", "--dev", "/dev"]
        for mount in ("/tmp", "/dev/shm"):
            argv += self._tmpfs_options() + ["--tmpfs", mount]
        argv += ["--bind", workdir, workdir, "--chdir", workdir]
        return argv

    def _tmpfs_options(self) -> list[str]:
        """World-writable (sticky) scratch tmpfs, each capped at half the memory budget.

        Why capped: tmpfs pages are RAM that RLIMIT_AS does not see; without ``--size``
        a sandbox could fill half the host's memory per mount.
        """
        options: list[str] = []
        if "--perms" in self._bwrap_options:
            options += ["--perms", "1777"]
        if "--size" in self._bwrap_options:
            options += ["--size", str(self.limits.memory_mb * 1024 * 1024 // 2)]
        return options

    def _command(self, ws: _Workspace, runner: Path, config: Path) -> list[str]:
        inner = [self._python, "-I", "-S", str(runner), "--boot", str(config)]
        if self.isolation == "bwrap":
            return [*self._bwrap_argv(str(ws.path), ws.uid is not None), "--", *inner]
        return inner

    def _child_env(self, ws: _Workspace) -> dict[str, str]:
        """The complete child environment: nothing inherited, so no API keys leak."""
        python_dir = os.path.dirname(self._python)
        return {
            "PATH": f"{python_dir}:{_SYSTEM_PATH}",
            "HOME": str(ws.path),
            "TMPDIR": str(ws.path),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            # One thread per numeric library: threads count against max_processes, and
            # BLAS pools sized to the host's cores would hit it on import.
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }

    # ----------------------------------------------------------------- workspace

    @contextlib.contextmanager
    def _workspace(self) -> Iterator[_Workspace]:
        """A fresh directory (cwd and HOME of the run), deleted afterwards."""
        _ = self.isolation  # decide isolation and uid policy first
        uid = _UID_BASE + secrets.randbelow(_UID_SPAN) if self._drop_uid else None
        path = Path(tempfile.mkdtemp(prefix="collabgen-sbx-", dir=self._tmp_root))
        try:
            if uid is not None:
                os.chown(path, uid, uid)
                os.chmod(path, 0o711)  # root-owned bootstrap files stay readable to stage 1
            yield _Workspace(path, uid)
        finally:
            _rmtree(path)

    def _write_bootstrap(self, ws: _Workspace, mode_config: dict[str, Any]) -> tuple[Path, Path]:
        """Write the runner (root-owned, read-only) and its one-shot config (0600)."""
        runner = ws.write(_RUNNER_NAME, self._runner_source, mode=0o644, owned=False)
        config = {
            "limits": self.limits.model_dump(include={"cpu_seconds", "memory_mb", "file_size_mb", "max_processes"}),
            "uid": ws.uid,
            "gid": ws.uid,
            "env": self._child_env(ws),
            **mode_config,
        }
        path = ws.write(_CONFIG_NAME, json.dumps(config), mode=0o600, owned=False)
        return runner, path

    # ----------------------------------------------------------------- execution

    async def _execute(self, ws: _Workspace, mode_config: dict[str, Any], stdin: str | None) -> SandboxResult:
        """Start the sandbox, enforce the wall clock, and always clean up the tree."""
        runner, config = self._write_bootstrap(ws, mode_config)
        proc = await asyncio.create_subprocess_exec(
            *self._command(ws, runner, config),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ws.path,
            env=self._child_env(ws),
            start_new_session=True,
        )
        pidfd = _open_pidfd(proc.pid)
        cap = self.limits.max_output_bytes
        out_task = asyncio.create_task(_read_capped(proc.stdout, cap))
        err_task = asyncio.create_task(_read_capped(proc.stderr, cap))
        feeder = asyncio.create_task(_feed_stdin(proc, stdin))
        timed_out = False
        killed: set[int] = set()
        try:
            await asyncio.wait_for(proc.wait(), timeout=self.limits.wall_seconds)
        except asyncio.TimeoutError:
            timed_out = True
        except BaseException:  # cancelled: the sandbox must not outlive its caller
            out_task.cancel()
            err_task.cancel()
            raise
        finally:
            if proc.returncode is None:
                killed = _kill_tree(proc.pid, pidfd, ws.uid)
            feeder.cancel()
            await asyncio.shield(self._finish(proc, pidfd, ws.uid, killed))
        stdout, stderr = await _collect(out_task), await _collect(err_task)
        returncode = None if timed_out else self._normalise_returncode(proc.returncode)
        reason = _describe_exit(returncode, timed_out, stderr, self.limits)
        return SandboxResult(returncode, stdout, stderr, timed_out, self.isolation, reason)

    async def _finish(self, proc: asyncio.subprocess.Process, pidfd: int | None, uid: int | None, killed: set[int]) -> None:
        """Reap the child, then make sure nothing of the run survives it."""
        try:
            await proc.wait()
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # background children in our group
            if uid is not None:
                killed |= _kill_tree(proc.pid, None, uid)
            deadline = time.monotonic() + _REAP_TIMEOUT_S
            while _survivors(uid, killed) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _normalise_returncode(self, returncode: int | None) -> int | None:
        """bwrap reports a child's death by signal N as exit 128+N; map it back to -N."""
        if self.isolation == "bwrap" and returncode is not None and 128 < returncode < 128 + 65:
            return -(returncode - 128)
        return returncode

    # ----------------------------------------------------------------- public API

    async def run_python(self, files: dict[str, str], main: str, stdin: str | None = None) -> SandboxResult:
        """Write ``files`` into a fresh directory and run ``python -s main`` there.

        Why not ``-I``: it implies ``-P`` (the script's directory would not be importable,
        breaking multi-file programs) and ``-E`` (ignoring PYTHONHASHSEED); the
        environment is already scrubbed, and ``-s`` drops the user site.
        """
        main_path = _safe_relpath(main)
        checked = {_safe_relpath(name): content for name, content in files.items()}
        with self._workspace() as ws:
            for name, content in checked.items():
                ws.write(name, content)
            return await self._execute(ws, {"mode": "script", "main": str(main_path)}, stdin)

    async def run_unittests(self, solution: str, tests: str) -> UnitTestOutcome:
        """Run BigCodeBench-style ``unittest`` tests against ``solution``.

        The tests run in a namespace that first executed the solution (and may also
        ``from solution import ...``). Counts come back through a nonce-checked report
        file written by the trusted runner, never from the program's free stdout. This
        defeats printed or planted fake results; it cannot stop a solution that
        deliberately monkeypatches ``unittest`` in its own process.
        """
        declared = count_declared_tests(tests)
        nonce = secrets.token_hex(16)
        with self._workspace() as ws:
            ws.write(_SOLUTION_NAME, solution)
            ws.write(_TESTS_NAME, tests)
            mode = {"mode": "unittest", "nonce": nonce, "result": _RESULT_NAME, "solution": _SOLUTION_NAME, "tests": _TESTS_NAME}
            result = await self._execute(ws, mode, None)
            report = _read_report(ws.path / _RESULT_NAME, nonce)
        return self._outcome(result, report, declared)

    def _outcome(self, result: SandboxResult, report: dict[str, Any] | None, declared: int) -> UnitTestOutcome:
        """Counts from a valid report; otherwise every declared test is an error."""
        tail = result.stderr[-_STDERR_TAIL_CHARS:]
        if report is not None:
            return UnitTestOutcome(
                passed=report["passed"],
                failed=report["failed"],
                errors=report["errors"],
                total=report["total"],
                reason=report["reason"],
                isolation=result.isolation,
                skipped=report["skipped"],
                stderr=tail,
            )
        reason = result.reason or f"no test report (runner exited with code {result.returncode})"
        return UnitTestOutcome(0, 0, declared, declared, reason, result.isolation, stderr=tail)
