"""No silent zeros: refusing to run without isolation, the canary, and infrastructure errors.

A sandbox that cannot do its job must say so (an exception), never hand back a 0 that
looks like the code's fault.
"""

from __future__ import annotations

import os
import warnings

import pytest

from collabgen.config.errors import CollabgenError
from collabgen.sandbox import Sandbox, SandboxInfrastructureError, SandboxLimits, SandboxUnavailable
from collabgen.sandbox import bootstrap as bootstrap_module
from collabgen.sandbox.isolation import PythonLaunch
from collabgen.sandbox.isolation import bubblewrap as bubblewrap_module
from collabgen.sandbox.isolation.mounts import interpreter_roots, mask_plan
from tests.sandbox_helpers import FAST, SOLUTION, TESTS_IMPORTING, WRONG, sandbox_for

# --------------------------------------------------------------------------- refusing without isolation


def test_without_bubblewrap_the_sandbox_refuses_and_says_how_to_install_it() -> None:
    sandbox = Sandbox(FAST, bwrap_path="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable) as caught:
        _ = sandbox.isolation
    assert isinstance(caught.value, CollabgenError) and caught.value.exit_code == 2
    message = str(caught.value)
    assert "apt-get install bubblewrap" in message and "/nonexistent/bwrap" in message and "allow_unisolated" in message


def test_bubblewrap_missing_from_path_is_refused_too(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap anywhere on it
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        _ = Sandbox(FAST).isolation


async def test_the_canary_refuses_too_and_no_code_ever_runs() -> None:
    sandbox = Sandbox(FAST, bwrap_path="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable):
        await sandbox.canary()
    with pytest.raises(SandboxUnavailable):
        await sandbox.run_unittests(SOLUTION, TESTS_IMPORTING)


def test_disabling_bubblewrap_needs_the_explicit_opt_in() -> None:
    with pytest.raises(SandboxUnavailable, match="refusing to run model-written code without isolation"):
        _ = Sandbox(FAST, use_bwrap=False).isolation


def test_requiring_a_missing_bwrap_is_an_error_even_with_the_opt_in() -> None:
    limits = FAST.model_copy(update={"allow_unisolated": True})
    with pytest.raises(SandboxUnavailable, match="required"):
        _ = Sandbox(limits, use_bwrap=True, bwrap_path="/nonexistent/bwrap").isolation


async def test_with_the_opt_in_a_missing_bubblewrap_falls_back_with_a_warning() -> None:
    if os.geteuid() != 0:
        pytest.skip("the unisolated fallback contains code only through a uid drop, which needs root")
    limits = FAST.model_copy(update={"allow_unisolated": True})
    sandbox = Sandbox(limits, bwrap_path="/nonexistent/bwrap")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sandbox.isolation == "rlimits"
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("bubblewrap is not usable" in m and "allow_unisolated" in m for m in messages), messages
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sandbox.isolation == "rlimits"  # decided once, not re-probed or re-warned
    assert sandbox.process_limit_enforced
    await sandbox.canary()
    outcome = await sandbox.run_unittests(WRONG, TESTS_IMPORTING)
    assert (outcome.passed, outcome.failed, outcome.isolation) == (0, 2, "rlimits")


def test_the_code_tasks_sandbox_option_carries_the_opt_in() -> None:
    from collabgen.tasks.code import CodeTask

    task = CodeTask({"sandbox": {"allow_unisolated": True, "memory_mb": 2048}})
    assert task.options.sandbox is not None and task.options.sandbox.allow_unisolated
    assert SandboxLimits().allow_unisolated is False


# --------------------------------------------------------------------------- the canary


async def test_the_canary_passes_on_a_working_sandbox() -> None:
    await Sandbox(FAST).canary()


async def test_the_canary_catches_limits_too_small_for_the_libraries_the_tests_need() -> None:
    pytest.importorskip("numpy")
    tight = SandboxLimits(memory_mb=256, max_processes=8, cpu_seconds=5, wall_seconds=20)  # 32 MiB per process
    with pytest.raises(SandboxUnavailable) as caught:
        await Sandbox(tight).canary(imports=("numpy",))
    message = str(caught.value)  # numpy's import failed under the 32 MiB address-space limit
    assert "a correct program did not pass" in message and "could not be loaded" in message and "numpy" in message
    await Sandbox(SandboxLimits(memory_mb=1024, max_processes=4, wall_seconds=20)).canary(imports=("numpy",))


async def test_the_canary_catches_a_sandbox_that_passes_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = Sandbox(FAST)
    real = sandbox.run_unittests

    async def always_pass(solution: str, tests: str, verdict: str = "auto"):  # type: ignore[no-untyped-def]
        return await real(SOLUTION, tests, verdict)

    monkeypatch.setattr(sandbox, "run_unittests", always_pass)
    with pytest.raises(SandboxUnavailable, match="a wrong program was not failed"):
        await sandbox.canary()


async def test_the_canary_reports_the_sandboxs_stderr_when_it_cannot_start() -> None:
    sandbox = Sandbox(FAST)
    sandbox._python = "/nonexistent/bin/python"  # the warden's interpreter is gone
    with pytest.raises(SandboxUnavailable) as caught:
        await sandbox.canary()
    assert "bwrap: execvp /nonexistent/bin/python" in str(caught.value)


# --------------------------------------------------------------------------- infrastructure failures raise


async def test_a_missing_interpreter_is_an_infrastructure_error_not_a_zero() -> None:
    sandbox = Sandbox(FAST)
    sandbox._python = "/nonexistent/bin/python"
    with pytest.raises(SandboxInfrastructureError) as caught:
        await sandbox.run_unittests(SOLUTION, TESTS_IMPORTING)
    assert "without a report" in caught.value.reason and "No such file" in caught.value.stderr
    with pytest.raises(SandboxInfrastructureError):
        await sandbox.run_python({"main.py": "print(1)"}, "main.py")


async def test_an_interpreter_the_child_cannot_start_is_an_infrastructure_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bubblewrap_module, "plain_python_launch", lambda: PythonLaunch("/nonexistent/python", "/nonexistent/python"))
    with pytest.raises(SandboxInfrastructureError, match="could not start the sandboxed interpreter"):
        await Sandbox(FAST).run_unittests(SOLUTION, TESTS_IMPORTING)


def _broken(monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    real = bootstrap_module._source
    monkeypatch.setattr(bootstrap_module, "_source", lambda wanted: source.encode() if wanted == name else real(wanted))


async def test_a_crashing_harness_is_an_infrastructure_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _broken(monkeypatch, "harness.py", "raise SystemExit(3)\n")
    with pytest.raises(SandboxInfrastructureError, match="failed before running any untrusted code"):
        await Sandbox(FAST).run_unittests(SOLUTION, TESTS_IMPORTING)


async def test_a_crashing_warden_is_an_infrastructure_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _broken(monkeypatch, "warden.py", "import sys\nsys.stderr.write('warden exploded\\n')\nraise SystemExit(5)\n")
    with pytest.raises(SandboxInfrastructureError) as caught:
        await Sandbox(FAST).run_unittests(SOLUTION, TESTS_IMPORTING)
    assert "warden exploded" in caught.value.stderr


async def test_a_harness_that_hangs_before_the_code_runs_is_an_infrastructure_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _broken(monkeypatch, "harness.py", "import time\ntime.sleep(60)\n")
    limits = SandboxLimits(cpu_seconds=2, wall_seconds=2.0)
    with pytest.raises(SandboxInfrastructureError, match="did not start the code within 2s"):
        await Sandbox(limits).run_unittests(SOLUTION, TESTS_IMPORTING)


async def test_code_that_loops_is_a_timeout_score_not_an_infrastructure_error() -> None:
    limits = SandboxLimits(cpu_seconds=10, wall_seconds=2.0)
    outcome = await Sandbox(limits).run_unittests("import time\ndef task_func(a, b):\n    time.sleep(60)\n", TESTS_IMPORTING)
    assert (outcome.passed, outcome.total, outcome.reason) == (0, 2, "timed out after 2s")


# --------------------------------------------------------------------------- reaching the interpreter


async def test_without_a_mount_namespace_the_fallback_reaches_the_interpreter_through_fds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kernel refuses the mount namespace: the warden switches to /proc/self/fd paths."""
    real = bootstrap_module._source
    refused = "if True:  # simulated: the kernel refuses CLONE_NEWNS"

    def warden_without_mount_namespaces(name: str) -> bytes:
        source = real(name).decode()
        if name == "warden.py":
            assert "if _libc().unshare(_CLONE_NEWNS) != 0:" in source
            source = source.replace("if _libc().unshare(_CLONE_NEWNS) != 0:", refused)
        return source.encode()

    monkeypatch.setattr(bootstrap_module, "_source", warden_without_mount_namespaces)
    if not mask_plan(interpreter_roots()):
        pytest.skip("every interpreter directory is reachable by any uid here: nothing to mask")
    sandbox = sandbox_for("fallback", FAST)
    outcome = await sandbox.run_unittests(SOLUTION, TESTS_IMPORTING)
    assert outcome.all_passed and not outcome.tampered, outcome
    result = await sandbox.run_python({"main.py": "import os, sys\nprint(sys.base_prefix, os.getuid())\n"}, "main.py")
    base_prefix, uid = result.stdout.split()  # a venv's own prefix stays its path; its base comes through the fd
    assert base_prefix.startswith("/proc/self/fd/") and int(uid) != 0
