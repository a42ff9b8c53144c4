"""The bubblewrap backend: namespaces and mounts around the warden.

What it adds to the rlimits and uid drop: new pid/net/ipc/uts namespaces with the warden
as pid 1 (``--as-pid-1``: shielded from the child's signals, and its exit kills every
leftover process), the host root filesystem bound read-only, ``/root`` masked down to the
interpreter, ``/run`` (host sockets) masked, fresh ``/proc`` and ``/dev``, and the only writable places size-capped
tmpfs: ``/tmp`` (which holds the workspace) and ``/dev/shm``. The host's copy of the run's
files is bound read-only at :data:`INPUTS` and copied into the workspace by the child.
``--die-with-parent``, ``--new-session`` (no TIOCSTI into our terminal), and no
capabilities beyond the two the warden needs to drop the child's uid.

Why the interpreter roots are bound back after the tmpfs mounts: a virtualenv under
``/tmp`` would otherwise vanish behind the fresh ``/tmp`` and every run would fail to
start (``bwrap: execvp .../bin/python: No such file or directory``).

Why probe instead of trusting ``which bwrap``: bwrap is often installed but unusable
(no user namespaces in a container, an old version), so the probe runs ``true`` with the
exact flags real runs use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING

from collabgen.sandbox.bootstrap import SYSTEM_PATH
from collabgen.sandbox.isolation.base import Launch
from collabgen.sandbox.isolation.mounts import (
    bind_plan,
    closed_roots,
    import_paths,
    open_parents,
    outermost,
    plain_python_launch,
    system_view,
)

if TYPE_CHECKING:
    from collabgen.sandbox.limits import SandboxLimits
    from collabgen.sandbox.workspace import Workspace

__all__ = ["INPUTS", "BubblewrapBackend"]

INPUTS = "/tmp/.collabgen-in"
"""Where the warden sees the host's copy of the run's files (read-only)."""
_PROBE_TIMEOUT_S = 15.0
_OPTIONAL = ("--perms", "--size", "--as-pid-1")
_MIB = 1024 * 1024


class BubblewrapBackend:
    """Wraps the warden in ``bwrap``; ``path`` exists so tests can point it at a missing binary."""

    name = "bwrap"
    workspace_mode = 0o711  # the warden has no CAP_DAC_OVERRIDE in here; no other run sees the host's /tmp

    def __init__(self, path: str | None = None, *, tmp_root: str | None = None) -> None:
        self.path = path if path is not None else (shutil.which("bwrap") or "bwrap")
        self._tmp_root = tmp_root
        self._is_root = os.geteuid() == 0
        self._options: frozenset[str] = frozenset()
        self._paths: list[str] | None = None

    def probe(self, limits: SandboxLimits) -> str | None:
        """Try ``bwrap ... true`` with the flags real runs use; None means it works."""
        if not os.path.isfile(self.path) or not os.access(self.path, os.X_OK):
            return f"{self.path} not found"
        probe_dir = tempfile.mkdtemp(prefix="collabgen-sbx-probe-", dir=self._tmp_root)
        try:
            self._options = self._supported_options()
            if "--size" not in self._options:
                return f"{self.path} is too old to cap the run's scratch space (--size needs bubblewrap 0.7 or newer)"
            drop = self._is_root and not self.closed_roots()
            argv = [*self._argv(probe_dir, probe_dir, drop, limits), "--", "true"]
            done = subprocess.run(argv, capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False, env={"PATH": SYSTEM_PATH})
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"probe failed: {exc}"
        finally:
            shutil.rmtree(probe_dir, ignore_errors=True)
        if done.returncode != 0:
            return f"probe exited with {done.returncode}: {done.stderr.decode(errors='replace').strip()[:300]}"
        return None

    def closed_roots(self) -> list[str]:
        """Interpreter and import directories another uid may not enter (their parents never matter)."""
        return closed_roots(self._import_paths())

    def launch(self, workspace: Workspace, limits: SandboxLimits) -> Launch:
        """The bwrap command line for one workspace; the child copies the inputs into the capped tmpfs."""
        workdir = str(workspace.path)
        wrapper = [*self._argv(str(workspace.path), workdir, workspace.uid is not None, limits), "--"]
        return Launch(
            wrapper=wrapper,
            inputs=INPUTS,
            workdir=workdir,
            copy_inputs=True,
            python=plain_python_launch(),
        )

    def _supported_options(self) -> frozenset[str]:
        """Optional bwrap flags this version knows (``--perms``/``--size`` are 0.5+/0.7+)."""
        done = subprocess.run(
            [self.path, "--help"], capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False, env={"PATH": SYSTEM_PATH}
        )
        text = (done.stdout + done.stderr).decode(errors="replace")
        return frozenset(opt for opt in _OPTIONAL if opt in text)

    def _import_paths(self) -> list[str]:
        if self._paths is None:
            self._paths = import_paths(sys.executable)
        return self._paths

    def _argv(self, host_dir: str, workdir: str, drop_uid: bool, limits: SandboxLimits) -> list[str]:
        """bwrap flags; the order of mount operations matters (later ones shadow earlier ones)."""
        argv = [self.path, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc"]
        argv += ["--unshare-uts", "--hostname", "sandbox", "--unshare-cgroup-try"]
        if "--as-pid-1" in self._options:
            argv.append("--as-pid-1")
        if not limits.network:
            argv.append("--unshare-net")
        if self._is_root:
            argv += ["--cap-drop", "ALL"]
            if drop_uid:
                argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            argv.append("--unshare-user")
        argv += system_view()
        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += self._scratch("/tmp", limits.disk_mb) + self._scratch("/dev/shm", limits.shm_mb)
        argv += bind_plan(outermost(self._import_paths()))  # after /tmp: a venv there is bound over the fresh tmpfs
        if not workdir.startswith("/tmp/"):
            argv += open_parents([workdir]) + self._scratch(workdir, limits.disk_mb)
        return [*argv, "--ro-bind", host_dir, INPUTS, "--chdir", "/"]

    def _scratch(self, mount: str, size_mb: int) -> list[str]:
        """A world-writable (sticky) tmpfs capped at ``size_mb``: the run's only writable space.

        Why capped: tmpfs pages are RAM that RLIMIT_AS does not see, and without a cap the
        files of the run would be bounded only by the host's memory.
        """
        options: list[str] = []
        if "--perms" in self._options:
            options += ["--perms", "1777"]
        if "--size" in self._options:
            options += ["--size", str(size_mb * _MIB)]
        return [*options, "--tmpfs", mount]
