"""What the warden is started with: its files, its one-shot config, the child's environment.

Why its own module: these are the host's half of the protocol with
:mod:`collabgen.sandbox.warden` and :mod:`collabgen.sandbox.harness` (file names, config
keys, modes). The config travels through a pipe, never a file, so the nonce is never on
disk where the child could read it; the environment is built from nothing so no API key
or other host variable can leak into the child.
"""

from __future__ import annotations

import json
import os
import secrets
from importlib import resources
from typing import TYPE_CHECKING, Any

from collabgen.sandbox.values import RUNNER_FILE, VALUES_FILE
from collabgen.sandbox.workspace import RESERVED_PREFIX

if TYPE_CHECKING:
    from collabgen.sandbox.isolation.base import Launch, PythonLaunch
    from collabgen.sandbox.limits import SandboxLimits
    from collabgen.sandbox.workspace import Workspace

__all__ = [
    "RUNNER_NAME",
    "SOLUTION_NAME",
    "SYSTEM_PATH",
    "TESTS_NAME",
    "VALUES_NAME",
    "WARDEN_NAME",
    "child_env",
    "install_harness",
    "new_nonce",
    "script_mode",
    "unittest_mode",
    "warden_argv",
    "warden_config",
]

WARDEN_NAME = f"{RESERVED_PREFIX}warden.py"
RUNNER_NAME = RUNNER_FILE
VALUES_NAME = VALUES_FILE
assert RUNNER_NAME.startswith(RESERVED_PREFIX) and VALUES_NAME.startswith(RESERVED_PREFIX)
SOLUTION_NAME = "solution.py"
TESTS_NAME = "test_solution.py"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
"""PATH of every child (after the interpreter's own directory), and of the bwrap probe."""
_MIB = 1024 * 1024


def _source(name: str) -> bytes:
    return resources.files("collabgen.sandbox").joinpath(name).read_bytes()


def install_harness(ws: Workspace) -> None:
    """Copy warden and runner into the workspace (root-owned, read-only): they are run by path."""
    ws.write(WARDEN_NAME, _source("warden.py"), mode=0o644, owned=False)
    ws.write(RUNNER_NAME, _source("harness.py"), mode=0o644, owned=False)
    ws.write(VALUES_NAME, _source("values.py"), mode=0o644, owned=False)


def new_nonce() -> str:
    return secrets.token_hex(16)


def child_env(python: str, workdir: str) -> dict[str, str]:
    """The complete child environment: nothing inherited, so no API keys leak."""
    return {
        "PATH": f"{os.path.dirname(python)}:{SYSTEM_PATH}",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        # One thread per numeric library: threads count against max_processes, and
        # BLAS pools sized to the host's cores would hit it on import.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        # Each glibc malloc arena reserves 64 MiB of address space; RLIMIT_AS counts it.
        "MALLOC_ARENA_MAX": "2",
    }


def script_mode(main: str) -> dict[str, Any]:
    """The child runs the user's ``main`` script."""
    return {"mode": "script", "main": main}


def unittest_mode(verdict: str = "in_process") -> dict[str, Any]:
    """The child runs the tests against the solution and reports to the warden.

    ``verdict``: ``in_process`` (:mod:`~collabgen.sandbox.harness`) or ``values`` (the tests in
    a process of their own, :mod:`~collabgen.sandbox.values`)."""
    return {"mode": "unittest", "verdict": verdict, "solution": SOLUTION_NAME, "tests": TESTS_NAME}


def warden_config(ws: Workspace, launch: Launch, limits: SandboxLimits, nonce: str, mode: dict[str, Any]) -> bytes:
    """The warden's config, as the bytes written into its config pipe."""
    config = {
        **mode,
        "nonce": nonce,
        "limits": {
            "cpu_seconds": limits.cpu_seconds,
            "as_bytes": limits.process_memory_mb * _MIB,
            "file_size_bytes": limits.file_size_mb * _MIB,
            "max_processes": limits.max_processes,
        },
        "uid": ws.uid,
        "gid": ws.uid,
        "env": child_env(launch.python.argv0, launch.workdir),
        "python": _python(launch.python),
        "python_alt": _python(launch.python_alt) if launch.python_alt is not None else None,
        "masks": [[mask, list(roots)] for mask, roots in launch.masks],
        "inputs": launch.inputs,
        "workdir": launch.workdir,
        "copy_inputs": launch.copy_inputs,
        "runner": os.path.join(launch.inputs, RUNNER_NAME),
        "values_runner": os.path.join(launch.inputs, VALUES_NAME),
        "unshare_net": launch.unshare_net,
    }
    return json.dumps(config).encode()


def _python(python: PythonLaunch) -> dict[str, Any]:
    return {"exec": python.exec_path, "argv0": python.argv0, "env": dict(python.env), "dirs": [list(p) for p in python.dirs]}


def warden_argv(python: str, launch: Launch, config_fd: int, report_fd: int) -> list[str]:
    """``python -I -S warden --boot``: nothing from the workspace or site is imported while root."""
    warden = os.path.join(launch.inputs, WARDEN_NAME)
    return [*launch.wrapper, python, "-I", "-S", warden, "--boot", str(config_fd), str(report_fd)]
