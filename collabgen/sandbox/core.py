"""The sandbox: pick an isolation backend once, then run code in throwaway workspaces.

Why this class is thin: each concern lives in its own module (workspace files,
isolation backends, the warden, supervision, verdict decoding); what stays here is the
one decision per :class:`Sandbox` (which backend, whether to drop to a private uid, or to
refuse), the canary that proves the decision works, and the two entry points.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from collabgen.sandbox.bootstrap import (
    SOLUTION_NAME,
    TESTS_NAME,
    install_harness,
    new_nonce,
    script_mode,
    unittest_mode,
    warden_argv,
    warden_config,
)
from collabgen.sandbox.errors import SandboxInfrastructureError, SandboxUnavailable
from collabgen.sandbox.harness import count_declared_tests
from collabgen.sandbox.isolation import IsolationBackend, make_backend
from collabgen.sandbox.limits import SandboxLimits
from collabgen.sandbox.results import SandboxResult, UnitTestOutcome
from collabgen.sandbox.supervisor import Exit, supervise
from collabgen.sandbox.values import UNSUPPORTED, verdict_for
from collabgen.sandbox.verdict import script_result, unittest_result
from collabgen.sandbox.workspace import Workspace, safe_relpath, workspace

__all__ = ["Sandbox", "Verdict"]

Verdict = Literal["auto", "values", "in_process"]

# The logger the sandbox has always used, whichever module of the package logs.
logger = logging.getLogger("collabgen.sandbox")

INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`), or set the sandbox option "
    "`allow_unisolated: true` to accept running model code with rlimits and a private uid only"
)
_CANARY_TESTS = """\
import unittest
from solution import task_func


class CanaryTests(unittest.TestCase):
    def test_adds(self):
        self.assertEqual(task_func(2, 3), 5)

    def test_negative(self):
        self.assertEqual(task_func(-2, -3), -5)
"""
_CANARY_RIGHT = "def task_func(a, b):\n    return a + b\n"
_CANARY_WRONG = "def task_func(a, b):\n    return a - b\n"


class Sandbox:
    """Runs untrusted Python under bubblewrap, or refuses (unless unisolated runs are allowed).

    ``use_bwrap=None`` probes once (``bwrap <our flags> true``) and caches the answer on
    this object; ``False`` asks for the rlimits fallback (which still needs
    ``limits.allow_unisolated``); ``True`` makes a broken bwrap an error even when the
    fallback is allowed. ``bwrap_path`` exists so tests can point the probe at a missing
    binary.
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
        self._preferred = make_backend("bwrap", path=bwrap_path, tmp_root=tmp_root)
        self._fallback = make_backend("rlimits")
        self._tmp_root = tmp_root
        self._python = sys.executable
        self._is_root = os.geteuid() == 0
        self._backend: IsolationBackend | None = None
        self._drop_uid: bool | None = None
        self._noted: set[str] = set()

    # ----------------------------------------------------------------- isolation choice

    @property
    def isolation(self) -> str:
        """``"bwrap"`` or ``"rlimits"``; decided once per Sandbox (raises SandboxUnavailable)."""
        if self._backend is None:
            backend = self._choose_backend()
            self._drop_uid = self._decide_uid_drop(backend)
            self._backend = backend
        return self._backend.name

    @property
    def process_limit_enforced(self) -> bool:
        """Whether RLIMIT_NPROC binds the sandboxed code (false only for root without a uid drop)."""
        _ = self.isolation
        return not self._is_root or bool(self._drop_uid)

    def _chosen(self) -> IsolationBackend:
        _ = self.isolation
        assert self._backend is not None  # set by the isolation property
        return self._backend

    def _choose_backend(self) -> IsolationBackend:
        """bwrap when usable; the fallback only when explicitly allowed, and then with a warning."""
        if self._use_bwrap is False:
            return self._unisolated("bubblewrap was disabled by the caller")
        problem = self._preferred.probe(self.limits)
        if problem is None:
            return self._preferred
        if self._use_bwrap:
            raise SandboxUnavailable(f"bubblewrap was required but is not usable ({problem}); {INSTALL_HINT}")
        return self._unisolated(f"bubblewrap is not usable ({problem})")

    def _unisolated(self, why: str) -> IsolationBackend:
        if not self.limits.allow_unisolated:
            raise SandboxUnavailable(f"refusing to run model-written code without isolation: {why}; {INSTALL_HINT}")
        message = (
            f"{why}; running untrusted code unisolated, as allowed by allow_unisolated: rlimits and a private "
            "uid only, no filesystem view or pid isolation"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=4)  # blames whoever first read ``isolation``
        logger.warning("sandbox: %s", message)
        return self._fallback

    def _decide_uid_drop(self, backend: IsolationBackend) -> bool:
        """Root must switch to a private uid, or RLIMIT_NPROC is not enforced at all."""
        if not self._is_root:
            if backend.name != "bwrap":
                message = "sandbox runs untrusted code unisolated as your own user: it can signal and read what you can"
                warnings.warn(message, RuntimeWarning, stacklevel=4)
                logger.warning("sandbox: %s", message)
            return False
        closed = backend.closed_roots()
        if not closed:
            return True
        raise SandboxUnavailable(
            f"cannot run {sys.executable} as an unprivileged sandbox user with the {backend.name} backend: "
            f"{', '.join(closed)} {'is' if len(closed) == 1 else 'are'} closed to other users, and running model code "
            "as root would not be a sandbox; open them to reading (`chmod o+rx DIR`; the interpreter's parents "
            "may stay closed) or run collabgen from an interpreter installed elsewhere"
        )

    # ----------------------------------------------------------------- execution

    @contextlib.contextmanager
    def _workspace(self) -> Iterator[Workspace]:
        """A fresh directory for one run, owned by a private uid when we drop to one."""
        _ = self.isolation  # decide isolation and uid policy first
        with workspace(bool(self._drop_uid), self._tmp_root, self._chosen().workspace_mode) as ws:
            install_harness(ws)
            yield ws

    async def _execute(self, ws: Workspace, mode: dict[str, Any], stdin: str | None) -> tuple[Exit, str]:
        """Start the warden under the backend and collect how it went."""
        backend = self._chosen()
        launch = backend.launch(ws, self.limits)
        nonce = new_nonce()
        config = warden_config(ws, launch, self.limits, nonce, mode)

        def argv(config_fd: int, report_fd: int) -> list[str]:
            return warden_argv(self._python, launch, config_fd, report_fd)

        done = await supervise(argv, ws, config, stdin, self.limits, launch.watch_disk, launch.scratch_roots)
        self._log_notes(done, nonce)
        return done, nonce

    def _log_notes(self, done: Exit, nonce: str) -> None:
        """What the warden could not set up (e.g. no network namespace), said once per Sandbox."""
        for report in done.reports:
            final = report.get("final") if report.get("nonce") == nonce else None
            for note in (final or {}).get("notes") or []:
                if note not in self._noted:
                    self._noted.add(note)
                    logger.warning("sandbox (%s): %s", self.isolation, note)

    # ----------------------------------------------------------------- public API

    async def run_python(self, files: dict[str, str], main: str, stdin: str | None = None) -> SandboxResult:
        """Write ``files`` into a fresh directory and run ``python -s main`` there.

        Why not ``-I``: it implies ``-P`` (the script's directory would not be importable,
        breaking multi-file programs) and ``-E``; the environment is already scrubbed, and
        ``-s`` drops the user site. Raises :class:`SandboxInfrastructureError` when the
        sandbox itself failed.
        """
        main_path = safe_relpath(main)
        checked = {safe_relpath(name): content for name, content in files.items()}
        with self._workspace() as ws:
            for name, content in checked.items():
                ws.write(name, content)
            done, nonce = await self._execute(ws, script_mode(str(main_path)), stdin)
        return script_result(done, nonce, self._chosen().name, self.limits)

    async def run_unittests(self, solution: str, tests: str, verdict: Verdict = "auto") -> UnitTestOutcome:
        """Run BigCodeBench-style ``unittest`` tests against ``solution``.

        ``verdict`` picks the runner. ``values``: the tests run in a process of their own and
        call the solution by value (:mod:`collabgen.sandbox.values`), so no code can forge
        the verdict; ``in_process``: tests and solution share a namespace, as BigCodeBench
        needs for mocks and returned objects (:mod:`collabgen.sandbox.harness`: Python-level
        forgeries are caught, native code is not); ``auto``: ``values`` where the tests allow
        it (:func:`~collabgen.sandbox.values.verdict_for`), falling back to ``in_process`` when
        a test hands the solution something that is not data (the tests decide, never the
        code). Raises :class:`SandboxInfrastructureError` when the sandbox itself failed: that
        is never a score.
        """
        declared = count_declared_tests(tests)
        chosen = verdict_for(tests) if verdict == "auto" else verdict
        outcome = await self._unittests_with(chosen, solution, tests, declared)
        if chosen == "values" and verdict == "auto" and (outcome.reason or "").startswith(UNSUPPORTED):
            outcome = await self._unittests_with("in_process", solution, tests, declared)
        return outcome

    async def _unittests_with(self, verdict: str, solution: str, tests: str, declared: int) -> UnitTestOutcome:
        with self._workspace() as ws:
            ws.write(SOLUTION_NAME, solution)
            ws.write(TESTS_NAME, tests)
            done, nonce = await self._execute(ws, unittest_mode(verdict), None)
        outcome = unittest_result(done, nonce, self._chosen().name, self.limits, declared)
        outcome.verdict = verdict
        return outcome

    async def canary(self, imports: Sequence[str] = ()) -> None:
        """Prove this sandbox, exactly as configured, gives right verdicts; else raise SandboxUnavailable.

        Runs a unit-test program that must pass and one that must fail. ``imports`` are
        modules the passing program imports first: pass the libraries your tests need
        (``("numpy", "pandas")`` for BigCodeBench) to also prove the memory limits fit them.
        """
        header = "".join(f"import {name}\n" for name in imports)
        for verdict in ("values", "in_process"):  # both runners a task's tests may be judged by
            try:
                right = await self.run_unittests(header + _CANARY_RIGHT, _CANARY_TESTS, verdict)
                wrong = await self.run_unittests(_CANARY_WRONG, _CANARY_TESTS, verdict)
            except SandboxInfrastructureError as err:
                raise SandboxUnavailable(f"sandbox canary could not run ({self.isolation}, {verdict}): {err}") from err
            if not right.all_passed or right.tampered:
                raise SandboxUnavailable(_canary_failure("a correct program did not pass", right))
            if wrong.passed or wrong.tampered or wrong.failed != wrong.total or wrong.total == 0:
                raise SandboxUnavailable(_canary_failure("a wrong program was not failed", wrong))


def _canary_failure(what: str, outcome: UnitTestOutcome) -> str:
    counts = f"{outcome.passed} passed, {outcome.failed} failed, {outcome.errors} errors of {outcome.total}"
    return (
        f"sandbox canary: {what} ({counts}; reason: {outcome.reason}; isolation: {outcome.isolation}; "
        f"verdict: {outcome.verdict})\n"
        f"--- sandbox stderr (tail) ---\n{outcome.stderr.strip()}"
    )
