"""Turn what the warden reported (and how the run ended) into results, or into an error.

Why separate from running: this is where a run becomes a reward, so it draws the one line
that matters: a 0 the *code* earned (it looped, crashed, failed, tampered) is a result; a
run the *sandbox* could not carry out (no interpreter, harness crash, a warden that never
reported, a timeout before the code even started) is a :class:`SandboxInfrastructureError`
and never a score. Only the warden's report counts: it arrives on a pipe the sandboxed
code never holds and must carry this run's nonce.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

from collabgen.sandbox.errors import SandboxInfrastructureError
from collabgen.sandbox.results import SandboxResult, UnitTestOutcome

if TYPE_CHECKING:
    from collabgen.sandbox.limits import SandboxLimits
    from collabgen.sandbox.supervisor import Exit

__all__ = ["describe_exit", "script_result", "unittest_result"]

_STDERR_TAIL_CHARS = 4000
_MAX_REASON_CHARS = 200
_STDERR_HINTS = (
    ("MemoryError", "memory limit (MemoryError)"),
    ("Cannot allocate memory", "memory limit (allocation failed)"),
    ("File too large", "file size limit"),
    ("No space left on device", "disk limit"),
    ("Resource temporarily unavailable", "process limit (fork failed)"),
)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_exit(returncode: int | None, timed_out: bool, stderr: str, limits: SandboxLimits) -> str | None:
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
    tail = stderr[-_STDERR_TAIL_CHARS:]
    hint = next((text for needle, text in _STDERR_HINTS if needle in tail), None)
    return f"{hint} (exit code {returncode})" if hint else f"exited with code {returncode}"


def _reports(done: Exit, nonce: str) -> list[dict[str, Any]]:
    return [r for r in done.reports if r.get("nonce") == nonce]


def _final(done: Exit, nonce: str) -> dict[str, Any] | None:
    finals = [r["final"] for r in _reports(done, nonce) if isinstance(r.get("final"), dict)]
    return finals[-1] if finals else None


def _started(done: Exit, nonce: str) -> bool:
    return any(r.get("phase") == "running" for r in _reports(done, nonce))


def _tail(done: Exit) -> str:
    return done.stderr[-_STDERR_TAIL_CHARS:]


def _legit_end(done: Exit, nonce: str, limits: SandboxLimits) -> str:
    """Why a run without a final report still earned its 0, or raise: the sandbox failed."""
    if _started(done, nonce):
        if done.disk_exceeded:
            return f"disk limit of {limits.disk_mb} MiB exceeded"
        if done.timed_out:
            return f"timed out after {limits.wall_seconds:g}s"
    if done.timed_out:
        raise SandboxInfrastructureError(f"the sandbox did not start the code within {limits.wall_seconds:g}s", _tail(done))
    ended = describe_exit(done.returncode, False, done.stderr, limits) or "exited with code 0"
    raise SandboxInfrastructureError(f"the sandbox ended without a report (its wrapper {ended})", _tail(done))


def _checked_final(done: Exit, nonce: str) -> dict[str, Any] | None:
    final = _final(done, nonce)
    if final is not None and final.get("infra"):
        raise SandboxInfrastructureError(str(final["infra"]), _tail(done))
    return final


def script_result(done: Exit, nonce: str, isolation: str, limits: SandboxLimits) -> SandboxResult:
    """The user's program's exit as the warden saw it."""
    final = _checked_final(done, nonce)
    if final is None:
        reason = _legit_end(done, nonce, limits)
        return SandboxResult(None, done.stdout, done.stderr, done.timed_out, isolation, reason)
    code = final.get("exit")
    returncode = code if isinstance(code, int) and not isinstance(code, bool) else None
    reason = describe_exit(returncode, False, done.stderr, limits)
    if done.disk_exceeded:
        reason = f"disk limit of {limits.disk_mb} MiB exceeded"
    return SandboxResult(returncode, done.stdout, done.stderr, False, isolation, reason)


def bounded_text(text: str, limit: int = _MAX_REASON_CHARS) -> str:
    """Text the sandboxed code may have chosen, made safe to log: printable and short.

    Why: a tamper reason travels from the code's process into our logs; it must not carry
    terminal escapes, fill a log, or smuggle a file it read (the view hides the host's files;
    the logger's scrubber masks known keys).
    """
    printable = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return printable if len(printable) <= limit else printable[: limit - 3] + "..."


def _tampered(declared: int, why: str, isolation: str, stderr: str) -> UnitTestOutcome:
    why = bounded_text(why)
    return UnitTestOutcome(0, 0, declared, declared, f"tampered: {why}", isolation, stderr=stderr,
                           tampered=True, tamper_reason=why)


def _counted(verdict: dict[str, Any], declared: int, isolation: str, stderr: str) -> UnitTestOutcome:
    statuses = str(verdict.get("statuses") or "")
    total = len(statuses) or declared
    if verdict.get("tamper"):
        return _tampered(total, str(verdict["tamper"]), isolation, stderr)
    passed, failed, skipped = statuses.count("P"), statuses.count("F"), statuses.count("S")
    errors = total - passed - failed - skipped
    reason = verdict.get("reason")
    if reason is None and passed != total:
        reason = f"{total - passed} of {total} tests did not pass ({failed} failed, {errors} errors, {skipped} skipped)"
    return UnitTestOutcome(passed, failed, errors, total, reason, isolation, skipped=skipped, stderr=stderr)


def unittest_result(done: Exit, nonce: str, isolation: str, limits: SandboxLimits, declared: int) -> UnitTestOutcome:
    """Counts from the warden's verdict; a run that earned nothing has every declared test as an error."""
    stderr = _tail(done)
    final = _checked_final(done, nonce)
    if final is None:
        reason = _legit_end(done, nonce, limits)
        return UnitTestOutcome(0, 0, declared, declared, reason, isolation, stderr=stderr)
    verdict = final.get("verdict")
    if not isinstance(verdict, dict):
        raise SandboxInfrastructureError("the warden's report carries no verdict", stderr)
    if verdict.get("infra"):
        raise SandboxInfrastructureError(str(verdict["infra"]), stderr)
    if verdict.get("tampered"):
        return _tampered(declared, str(verdict["tampered"]), isolation, stderr)
    if verdict.get("crashed") or done.disk_exceeded:
        code = final.get("exit")
        ended = describe_exit(code if isinstance(code, int) else None, False, done.stderr, limits)
        if done.disk_exceeded:
            ended = f"disk limit of {limits.disk_mb} MiB exceeded"
        return UnitTestOutcome(0, 0, declared, declared, f"no test report ({ended})", isolation, stderr=stderr)
    return _counted(verdict, declared, isolation, stderr)
