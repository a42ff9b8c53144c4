"""The opt-in fallback backend: no wrapper, only what the warden itself applies.

Why it exists at all: bubblewrap is sometimes unavailable, and a user may knowingly
accept weaker isolation (``SandboxLimits.allow_unisolated``). What it still enforces,
run as root: a private unprivileged uid (so the child cannot signal, trace or read the
warden or anything of root's, cannot write system files, and RLIMIT_NPROC binds), the
rlimits (per-process share of the memory budget, CPU, file size, processes), a fresh
network namespace when the kernel allows ``unshare``, the host's disk watchdog over every
file the uid owns in every world-writable directory it can reach (found by one walk of
the host, :mod:`collabgen.sandbox.reach`) and their removal afterwards, a ``0700``
workspace of its own uid, and the warden's kill of everything left (it is the child
subreaper, so ``setsid`` daemons too). What it does not give: a private filesystem view
(world-readable files stay readable, world-writable directories writable until the
watchdog and the cleanup catch it) or pid isolation. Without root there is no private
uid, and none of the uid-based parts hold (see the README).

How a private uid reaches an interpreter under ``/root`` (pyenv, CI home directories):
the warden masks ``/root`` with a tmpfs and binds the interpreter back read-only in a
private mount namespace; where the kernel refuses one, through ``/proc/self/fd`` paths.
Changing host permissions instead would expose the rest of root's home. See
:mod:`collabgen.sandbox.isolation.mounts`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from collabgen.sandbox.isolation.base import Launch
from collabgen.sandbox.isolation.mounts import (
    closed_roots,
    fd_python_launch,
    interpreter_roots,
    mask_plan,
    plain_python_launch,
)
from collabgen.sandbox.reach import writable_dirs

if TYPE_CHECKING:
    from collabgen.sandbox.isolation.base import PythonLaunch
    from collabgen.sandbox.limits import SandboxLimits
    from collabgen.sandbox.workspace import Workspace

__all__ = ["RlimitsBackend"]


class RlimitsBackend:
    """Runs the warden directly; it drops the child to a private uid when we are root."""

    name = "rlimits"
    workspace_mode = 0o700  # concurrent runs share the host's /tmp; the warden is root

    def __init__(self) -> None:
        self._masks = mask_plan(interpreter_roots())
        self._alt: PythonLaunch | None = fd_python_launch() if self._masks else None
        self._writable: tuple[str, ...] | None = None

    def probe(self, limits: SandboxLimits) -> str | None:
        """Always usable: it needs nothing beyond the interpreter."""
        return None

    def closed_roots(self) -> list[str]:
        """Interpreter directories closed to other users (ancestors are masked by the warden)."""
        return [] if self._masks is not None else closed_roots(interpreter_roots())

    def launch(self, workspace: Workspace, limits: SandboxLimits) -> Launch:
        """The workspace is the host directory itself; the host watches its disk use."""
        path = str(workspace.path)
        dropping = workspace.uid is not None and bool(self._masks)
        if workspace.uid is not None and self._writable is None:
            self._writable = writable_dirs()  # once: a walk of the host takes about a second
        return Launch(
            wrapper=[],
            inputs=path,
            workdir=path,
            copy_inputs=False,
            python=plain_python_launch(),
            unshare_net=not limits.network and os.geteuid() == 0,
            watch_disk=True,
            scratch_roots=self._writable if workspace.uid is not None and self._writable else (),
            masks=list(self._masks or []) if dropping else [],
            python_alt=self._alt if dropping else None,
        )
