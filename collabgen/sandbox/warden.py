"""Stage 1 of every sandboxed run: the trusted warden that starts the child and reports on it.

Why a separate, long-lived process (and not a bootstrap that execs the child): the
verdict must come from somewhere the model's code cannot reach. The warden

* holds the run's nonce and the only pipe back to the host (``REPORT_FD``); the child
  never gets either;
* cannot be touched by the child: as root it stays uid 0 while the child drops to a
  private uid (no ptrace, no /proc/PID/mem, no signals across uids); without root it is
  non-dumpable (PR_SET_DUMPABLE 0) and, under bubblewrap, pid 1 of the sandbox's pid
  namespace, which the kernel shields from every signal sent from inside;
* judges the unit-test child from outside: only lines signed with the per-run key
  (held in the child by its audit hook, see :mod:`collabgen.sandbox.harness`) count, any
  other byte on the channel is tampering, and so is a child that exits with status 0
  before reporting (``os._exit(0)`` after forging files).

It also applies the rlimits and the uid drop to the child (the kernel ignores
RLIMIT_NPROC for uid 0), and as pid 1 reaps orphans; when it exits, the kernel kills
everything left in the namespace (daemons included).

Started as ``python -I -S warden.py --boot CONFIG_FD REPORT_FD`` so nothing from the
workspace or site-packages is imported while it is root. Stdlib only, a single file.
"""

from __future__ import annotations

import ctypes
import hmac
import json
import os
import resource
import select
import shutil
import signal
import sys
import time

SETUP_FAILED_EXIT = 124
TAMPER_EXIT = 86
BOOKKEEPING_EXIT = 87

_MIB = 1024 * 1024
_MAX_CONFIG = 4 * _MIB
_MAX_EVENTS = _MIB
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_CHILD_SUBREAPER = 36
_CLONE_NEWNET = 0x40000000
_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT = 1, 2, 4, 32
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_CAP_VERSION_3 = 0x20080522
_POLL_S = 0.05
_LEFTOVER_REAP_S = 1.0


# --------------------------------------------------------------------------- kernel helpers


_LIBC = ctypes.CDLL(None, use_errno=True)
"""Loaded while still root: after the uid drop the child may not even reach the stdlib."""


def _libc():  # type: ignore[no-untyped-def]
    return _LIBC


def _prctl(option: int, value: int) -> None:
    if _libc().prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]


def _clear_capabilities() -> None:
    """Empty the inheritable set too (setresuid already emptied permitted/effective)."""
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc().capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def isolate_network() -> str | None:
    """A fresh network namespace (only a down loopback) when the kernel lets us; None if done.

    Used by the unisolated fallback, where it is the only network barrier: bubblewrap
    makes its own with ``--unshare-net``.
    """
    if _libc().unshare(_CLONE_NEWNET) != 0:
        return f"network not isolated: unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}"
    return None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    args = [None if value is None else value.encode() for value in (source, target, fstype)]
    if _libc().mount(args[0], args[1], args[2], flags, None if data is None else data.encode()) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}: {os.strerror(ctypes.get_errno())}")


def mask_directories(masks: list[list]) -> str | None:
    """Hide each untraversable directory (``/root``) behind a tmpfs, binding the interpreter back read-only.

    In a private mount namespace, so the host sees nothing; the interpreter keeps its own
    paths, so the child's subprocesses that re-run ``sys.executable`` find it. None when
    done, else why not (then the fd-based launch is used instead).
    """
    if _libc().unshare(_CLONE_NEWNS) != 0:
        return f"no private mount namespace: {os.strerror(ctypes.get_errno())}"
    try:
        _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
        for mask, roots in masks:
            fds = [os.open(root, os.O_PATH | os.O_DIRECTORY) for root in roots]
            _mount("tmpfs", mask, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
            for root, fd in zip(roots, fds):
                os.makedirs(root, mode=0o755, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", root, None, _MS_BIND | _MS_REC)
                _mount(None, root, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY)
                os.close(fd)
    except OSError as exc:
        return f"masking failed: {exc}"
    return None


def choose_python(config: dict, notes: list[str]) -> None:
    """Mask ``/root`` for the child if asked; where the kernel refuses, switch to the fd-based launch."""
    if not config.get("masks"):
        return
    problem = mask_directories(config["masks"])
    if problem is None:
        return
    alt = config.get("python_alt")
    if alt is None:
        raise RuntimeError(f"the sandbox user cannot reach the interpreter ({problem})")
    notes.append(f"{problem}; the interpreter is reached through /proc/self/fd (its subprocesses cannot re-run it)")
    config["python"] = alt
    path = config["env"].get("PATH", "").split(":", 1)
    config["env"]["PATH"] = ":".join([os.path.dirname(alt["argv0"]), *path[1:]])


# --------------------------------------------------------------------------- the child's limits


def _set_limit(which: int, soft: int, hard: int | None = None) -> None:
    """Set an rlimit, clamped to the current hard limit when we may not raise it."""
    hard = soft if hard is None else hard
    _, cur_hard = resource.getrlimit(which)
    if os.geteuid() != 0 and cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def _own_process_count() -> int:
    """Tasks (threads count too) of our real uid: RLIMIT_NPROC counts them all without a private uid."""
    uid = os.getuid()
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid == uid:
                count += len(os.listdir(f"/proc/{name}/task"))
        except OSError:
            continue
    return count


def apply_limits(limits: dict[str, int], private_uid: bool) -> None:
    """CPU, address space (the per-process share of the budget), file size, cores, processes.

    Why the CPU hard limit is one second above the soft one: the soft limit sends SIGXCPU
    (a clear "CPU limit" reason), the hard one SIGKILLs a process that ignores it.
    """
    cpu = int(limits["cpu_seconds"])
    _set_limit(resource.RLIMIT_CPU, cpu, cpu + 1)
    _set_limit(resource.RLIMIT_AS, int(limits["as_bytes"]))
    _set_limit(resource.RLIMIT_FSIZE, int(limits["file_size_bytes"]))
    _set_limit(resource.RLIMIT_CORE, 0)
    nproc = int(limits["max_processes"])
    if not private_uid and os.geteuid() != 0:
        nproc += _own_process_count()
    _set_limit(resource.RLIMIT_NPROC, nproc)


def drop_privileges(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` for good: no groups, no capabilities, no way back.

    Why: the kernel does not enforce RLIMIT_NPROC for uid 0, and only a different uid
    keeps the child from signalling, tracing or reading the warden.
    """
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise RuntimeError("privilege drop did not take effect")
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    _clear_capabilities()
    _prctl(_PR_SET_PDEATHSIG, 9)  # cleared by the credential change: set it afterwards


# --------------------------------------------------------------------------- the child


def _copy_inputs(source: str, target: str) -> None:
    """The host's files into the (size-capped, private) workspace, owned by the child's uid."""
    os.makedirs(target, exist_ok=True)
    for root, dirs, files in os.walk(source):
        rel = os.path.relpath(root, source)
        dest = target if rel == "." else os.path.join(target, rel)
        os.makedirs(dest, exist_ok=True)
        for name in files:
            shutil.copyfile(os.path.join(root, name), os.path.join(dest, name))
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]


def _keep_only(keep: set[int]) -> None:
    """Close every inherited descriptor but ``keep`` (and stdio)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _child_argv(config: dict, event_w: int | None, key_r: int | None) -> list[str]:
    python = config["python"]
    if config["mode"] == "script":
        return [python["argv0"], "-s", config["main"]]
    if config.get("verdict") == "values":
        runner, flag = config["values_runner"], "--values"
    else:
        runner, flag = config["runner"], "--unittest"
    return [python["argv0"], "-s", runner, flag, str(event_w), str(key_r), config["solution"], config["tests"]]


def _place_dirs(dirs: list[tuple[int, int]]) -> set[int]:
    """Interpreter directories opened by root, moved to the numbers the child's paths name."""
    for fd, target in dirs:
        os.dup2(fd, target, inheritable=True)
    return {target for _, target in dirs}


def child(config: dict, event_w: int | None, key_r: int | None, status_w: int, dirs: list[tuple[int, int]]) -> None:
    """In the forked child: limits, uid drop, workspace, exec. Never returns."""
    try:
        keep = {status_w} | _place_dirs(dirs) | {fd for fd in (event_w, key_r) if fd is not None}
        _keep_only(keep)
        for fd in (event_w, key_r):
            if fd is not None:
                os.set_inheritable(fd, True)
        uid = config.get("uid")
        apply_limits(config["limits"], private_uid=uid is not None)
        if uid is not None:
            drop_privileges(int(uid), int(config["gid"]))
        else:
            _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        if config["copy_inputs"]:
            _copy_inputs(config["inputs"], config["workdir"])
        os.chdir(config["workdir"])
        env = {**config["env"], **config["python"]["env"]}
        os.execve(config["python"]["exec"], _child_argv(config, event_w, key_r), env)
    except BaseException as exc:  # noqa: BLE001 - everything here is an infrastructure failure
        os.write(status_w, f"{type(exc).__name__}: {exc}".encode(errors="replace")[:2000])
    os._exit(SETUP_FAILED_EXIT)


# --------------------------------------------------------------------------- the verdict channel


class Events:
    """Lines from the unit-test child: signed LOADING/RESULT, unsigned ALARM; anything else is tampering."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._buffer = b""
        self._size = 0
        self.loading = False
        self.relayed = False
        self.result: dict | None = None
        self.tamper: str | None = None

    def feed(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > _MAX_EVENTS:
            self._flag("more data than the runner ever sends arrived on the verdict channel")
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._line(line)

    def close(self) -> None:
        if self._buffer:
            self._flag("a partial line arrived on the verdict channel")

    def _flag(self, reason: str) -> None:
        if self.tamper is None:
            self.tamper = reason

    def _signed(self, line: bytes) -> bytes | None:
        body, _, mac = line.rpartition(b" ")
        expected = hmac.new(self._key, body, "sha256").hexdigest().encode()
        return body if body and hmac.compare_digest(mac, expected) else None

    def _line(self, line: bytes) -> None:
        if line.startswith(b"ALARM "):
            self._flag("tamper alarm: " + line[6:200].decode("ascii", "replace"))
            return
        body = self._signed(line)
        if body is None:
            self._flag("unsigned or forged data arrived on the verdict channel")
        elif body.startswith(b"LOADING ") and not self.loading:
            self.loading = True
        elif body.startswith(b"RESULT ") and self.result is None:
            self.result = parse_result(body)
        else:
            self._flag("an out-of-order message arrived on the verdict channel")


def _unhex(field: bytes) -> str | None:
    return None if field == b"-" else bytes.fromhex(field.decode()).decode("utf-8", "replace")


def parse_result(body: bytes) -> dict:
    """``RESULT v1 STATUSES TAMPER REASON`` (free text hex-encoded, ``-`` for none)."""
    _, version, statuses, tamper, reason = body.split(b" ")
    if version != b"v1" or (statuses != b"-" and statuses.strip(b"PFES")):
        raise ValueError("malformed result")
    return {
        "statuses": "" if statuses == b"-" else statuses.decode(),
        "tamper": _unhex(tamper),
        "reason": _unhex(reason),
    }


def unittest_verdict(events: Events, exitcode: int | None) -> dict:
    """The verdict from what the warden saw: the channel first, then how the child ended."""
    if events.tamper:
        return {"tampered": events.tamper}
    if events.result is not None:
        return events.result
    if not events.loading:
        return {"infra": f"the test runner failed before running any untrusted code (exit status {exitcode})"}
    if exitcode == 0:
        return {"tampered": "the test process exited with status 0 without reporting (os._exit from the code under test?)"}
    if exitcode == TAMPER_EXIT:
        return {"tampered": "the test process was stopped by a tamper alarm"}
    if exitcode == BOOKKEEPING_EXIT:
        return {"crashed": True, "why": "the test runner's bookkeeping failed (out of memory?)"}
    return {"crashed": True}


# --------------------------------------------------------------------------- the warden


class Report:
    """JSON lines to the host: ``{"phase": "running"}`` once untrusted code runs, then the final report."""

    def __init__(self, fd: int, nonce: str) -> None:
        self._fd = fd
        self._nonce = nonce

    def send(self, message: dict) -> None:
        data = json.dumps({**message, "nonce": self._nonce}).encode() + b"\n"
        while data:
            data = data[os.write(self._fd, data):]


def _reap(child_pid: int, block: bool) -> int | None:
    """Reap every exited child (we may be pid 1); the exit code of ``child_pid`` once it ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return -1
        if pid == 0:
            return None
        if pid == child_pid:
            return os.waitstatus_to_exitcode(status)


def _drain(fd: int, events: Events) -> None:
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not data:
            return
        events.feed(data)


def watch(child_pid: int, event_r: int | None, key: bytes, report: Report) -> tuple[int | None, Events | None]:
    """Wait for the child, reading its channel; relay "running" once untrusted code starts."""
    if event_r is None:
        report.send({"phase": "running"})
        return _reap(child_pid, block=True), None
    events = Events(key)
    exitcode = None
    while exitcode is None:
        ready, _, _ = select.select([event_r], [], [], _POLL_S)
        if ready:
            data = os.read(event_r, 65536)
            events.feed(data)
            if events.loading and not events.relayed:
                events.relayed = True
                report.send({"phase": "running"})
        exitcode = _reap(child_pid, block=False)
    _drain(event_r, events)  # what was written before the exit; never wait for EOF (daemons hold it)
    events.close()
    return exitcode, events


def _children_table() -> dict[int, list[int]]:
    """ppid -> pids of every live process (zombies too: they are ours to reap)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    return children


def _descendants(children: dict[int, list[int]], root: int) -> set[int]:
    found: set[int] = set()
    stack = [root]
    while stack:
        for pid in children.get(stack.pop(), []):
            if pid not in found:
                found.add(pid)
                stack.append(pid)
    return found


def end_leftovers() -> None:
    """Stop, then kill, whatever the child left running (daemons), and reap it.

    Why here: we are the child subreaper, so every orphan of the run (``setsid`` and a
    double fork included) is re-parented to us, not to the host's init; and ending them
    now, not at the wall clock, is what lets the host see the run finish (a daemon holds
    the output pipes open). Frozen first so a fork bomb cannot outpace the kill; each pid
    is pinned by a pidfd before it is signalled.
    """
    me = os.getpid()
    stopped: set[int] = set()
    for _ in range(50):
        fresh = _descendants(_children_table(), me) - stopped
        if not fresh:
            break
        for pid in fresh:
            _signal_pinned(pid, signal.SIGSTOP)
        stopped |= fresh
    for pid in stopped:
        _signal_pinned(pid, signal.SIGKILL)
    deadline = time.monotonic() + _LEFTOVER_REAP_S
    while time.monotonic() < deadline:  # never block: one we could not signal must not hold the report
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.005)
        except ChildProcessError:
            break


def _signal_pinned(pid: int, sig: int) -> None:
    """Signal ``pid`` through a pidfd, so a pid recycled meanwhile is never hit."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        signal.pidfd_send_signal(fd, sig)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pipes(unittest: bool) -> dict[str, int | None]:
    fds: dict[str, int | None] = {"event_r": None, "event_w": None, "key_r": None, "key_w": None}
    if unittest:
        fds["event_r"], fds["event_w"] = os.pipe()
        fds["key_r"], fds["key_w"] = os.pipe()
    return fds


def _start_child(config: dict) -> tuple[int, dict, bytes, str | None]:
    """Fork the child; return its pid, our pipe ends, the key, and an exec error if any."""
    key = os.urandom(32)
    fds = _pipes(config["mode"] == "unittest")
    if fds["key_w"] is not None:  # before the fork: a child that dies early must not break our write
        os.write(fds["key_w"], key)
        os.close(fds["key_w"])
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    dirs = [(os.open(path, os.O_PATH | os.O_DIRECTORY), int(target)) for target, path in config["python"]["dirs"]]
    pid = os.fork()
    if pid == 0:
        os.close(status_r)
        child(config, fds["event_w"], fds["key_r"], status_w, dirs)
    for fd in [status_w, fds["event_w"], fds["key_r"], *(fd for fd, _ in dirs)]:
        if fd is not None:
            os.close(fd)
    error = b""
    while chunk := os.read(status_r, 4096):
        error += chunk
    os.close(status_r)
    return pid, fds, key, (error.decode(errors="replace") or None)


def run(config: dict, report: Report) -> dict:
    """Start the child, watch it, and say how it went."""
    notes: list[str] = []
    if config.get("unshare_net"):
        problem = isolate_network()
        if problem:
            notes.append(problem)
    choose_python(config, notes)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    pid, fds, key, error = _start_child(config)
    if error is not None:
        exitcode = _reap(pid, block=True)
        return {"infra": f"could not start the sandboxed interpreter: {error}", "exit": exitcode, "notes": notes}
    exitcode, events = watch(pid, fds["event_r"], key, report)
    if os.getpid() != 1:  # as pid 1 of a namespace (bubblewrap), our exit kills them all
        end_leftovers()
    final: dict = {"exit": exitcode, "notes": notes}
    if events is not None:
        final["verdict"] = unittest_verdict(events, exitcode)
    return final


def _read_config(fd: int) -> dict:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
        if len(data) > _MAX_CONFIG:
            raise ValueError("config too large")
    os.close(fd)
    return json.loads(data)


def main(argv: list[str]) -> None:
    """``--boot CONFIG_FD REPORT_FD``: read the config, run the child, report, exit."""
    if len(argv) != 4 or argv[1] != "--boot":
        sys.stderr.write("usage: warden --boot CONFIG_FD REPORT_FD\n")
        os._exit(2)
    report = Report(int(argv[3]), "")
    try:
        config = _read_config(int(argv[2]))
        report = Report(int(argv[3]), str(config["nonce"]))
        _prctl(_PR_SET_DUMPABLE, 0)
        final = run(config, report)
    except BaseException as exc:  # noqa: BLE001 - the host must hear about it, not guess
        final = {"infra": f"the sandbox warden failed: {type(exc).__name__}: {exc}"}
    try:
        report.send({"final": final})
    finally:
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
