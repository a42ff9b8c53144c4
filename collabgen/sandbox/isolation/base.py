"""The contract every isolation backend meets, and the launch plan it returns per run.

Why a protocol: the sandbox picks a backend once, then only asks it how to start the
warden for one workspace (:class:`Launch`). Workspace, supervision and verdict code never
look at which backend it was, so a new one (e.g. a container runtime) is one class plus
a line in :mod:`collabgen.sandbox.isolation.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collabgen.sandbox.limits import SandboxLimits
    from collabgen.sandbox.workspace import Workspace

__all__ = ["IsolationBackend", "Launch", "PythonLaunch"]


@dataclass(frozen=True)
class PythonLaunch:
    """How the (possibly unprivileged) child starts the interpreter.

    ``exec_path`` is what is executed, ``argv0`` what Python computes its prefix from (a
    venv's ``bin/python``), ``env`` extra variables, ``dirs`` ``(fd, directory)`` pairs the
    warden opens as root and hands to the child, so ``/proc/self/fd/N`` paths reach an
    interpreter behind a directory the child's uid may not traverse.
    """

    exec_path: str
    argv0: str
    env: tuple[tuple[str, str], ...] = ()
    dirs: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Launch:
    """One run's plan: the wrapper command line and the paths as the warden sees them."""

    wrapper: list[str]
    inputs: str
    workdir: str
    copy_inputs: bool
    python: PythonLaunch
    unshare_net: bool = False
    watch_disk: bool = False
    """Whether the host must police disk use (no size-capped mount holds the files)."""
    scratch_roots: tuple[str, ...] = ()
    """Host directories the run's private uid can write besides its workspace: watched and emptied."""
    masks: list[tuple[str, list[str]]] = field(default_factory=list)
    """Directories the warden hides behind a tmpfs in a private mount namespace, each with the
    interpreter roots it binds back read-only (the fallback's way to reach ``/root`` installs)."""
    python_alt: PythonLaunch | None = None
    """How to reach the interpreter if the warden may not make a mount namespace."""


class IsolationBackend(Protocol):
    """What wraps the warden in one kind of isolation."""

    name: str
    """Reported as the ``isolation`` of every result (``"bwrap"``, ``"rlimits"``)."""
    workspace_mode: int
    """Mode of a private uid's host workspace: ``0700`` unless the warden lacks the capability to enter it."""

    def probe(self, limits: SandboxLimits) -> str | None:
        """None when this backend works here with these limits; otherwise why it does not."""
        ...

    def closed_roots(self) -> list[str]:
        """Directories a sandbox-private unprivileged uid would need but may not enter; empty when it can run.

        Asked only when we are root: without a uid drop RLIMIT_NPROC is not enforced and
        the child could signal or read the warden, so a non-empty answer is a refusal.
        """
        ...

    def launch(self, workspace: Workspace, limits: SandboxLimits) -> Launch:
        """How to start the warden for ``workspace``."""
        ...
