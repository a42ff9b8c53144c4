"""What a sandboxed run hands back to its caller.

Why plain dataclasses apart from the decoding in :mod:`collabgen.sandbox.verdict`: tasks
and tests only read these values; how they were derived from exit codes and harness
reports is the sandbox's business.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SandboxResult", "UnitTestOutcome"]


@dataclass
class SandboxResult:
    """What came out of one run; ``returncode`` is None when it was killed on the wall clock.

    ``returncode`` is the program's own exit status as the warden saw it, a death by
    signal negative (subprocess convention), whichever isolation wrapped it.
    """

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    isolation: str
    reason: str | None


@dataclass
class UnitTestOutcome:
    """Counts of a unit-test run; ``reason`` is None only when every test passed.

    ``tampered`` means the code under test tried to forge its verdict (patched unittest,
    reached for the runner's state, wrote on the verdict channel, ended the runner
    early...): such a run always has ``passed == 0`` and says why in ``tamper_reason``.
    """

    passed: int
    failed: int
    errors: int
    total: int
    reason: str | None
    isolation: str
    skipped: int = 0
    stderr: str = ""
    tampered: bool = False
    tamper_reason: str | None = None
    verdict: str = "in_process"
    """Which runner judged: ``values`` (the tests in a process the code never touched) or ``in_process``."""

    @property
    def pass_rate(self) -> float:
        """Fraction of tests that passed; 0.0 when there were none."""
        return self.passed / self.total if self.total else 0.0

    @property
    def all_passed(self) -> bool:
        """At least one test, and all of them passed."""
        return self.total > 0 and self.passed == self.total
