"""Can an unprivileged sandbox uid reach the interpreter, and what makes it so?

Why this exists: as root we drop to a private uid (the kernel ignores RLIMIT_NPROC for
uid 0), but that uid must still be able to run Python, wherever it is installed:

* under bubblewrap, the sandbox's filesystem is an allowlist (:func:`system_view`): the
  system directories, then the interpreter trees and every ``sys.path`` directory of the
  child (:func:`import_roots`) bound read-only at their own paths, their parents made
  ``0755`` inside the sandbox (:func:`bind_plan`). The host's modes on those parents never
  matter (``/root`` with a pyenv install, a venv in a ``0700`` temp dir, ``/tmp/a/venv``
  behind the fresh ``/tmp``), and nothing else of the host is there (home directories,
  tokens, other out dirs);
* without bubblewrap, the warden (still root) does the same masking itself in a private
  mount namespace (:func:`mask_plan`), so the interpreter keeps its own paths and
  subprocesses that re-run ``sys.executable`` work; where the kernel refuses a mount
  namespace it hands the child ``/proc/self/fd/N`` paths to directories it opened as root
  instead (the magic link skips the permission checks on the ancestors, nothing on the
  host changes), with ``PYTHONHOME``/``LD_LIBRARY_PATH`` pointing there; only the
  program itself then finds its interpreter, not the processes it starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import site
import stat
import subprocess
import sys
from collections.abc import Iterable
from pathlib import PurePosixPath

from collabgen.sandbox.isolation.base import PythonLaunch

__all__ = [
    "SYSTEM_DIRS",
    "bind_plan",
    "closed_roots",
    "fd_python_launch",
    "import_paths",
    "interpreter_roots",
    "mask_plan",
    "open_parents",
    "outermost",
    "plain_python_launch",
    "reachable_by_others",
    "system_view",
]

_FIRST_DIR_FD = 200
_PROBE_TIMEOUT_S = 30.0
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
"""What every sandbox sees of the host, read-only (see :func:`system_view`)."""
_SYSTEM_TOPS = frozenset(d.strip("/") for d in SYSTEM_DIRS)


def interpreter_roots() -> list[str]:
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
    return outermost(p for p in paths if os.path.isdir(p))


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


def reachable_by_others(path: str) -> bool:
    """Could an unrelated uid reach and list ``path``?"""
    return all(_others_can(a, stat.S_IXOTH) for a in _ancestors(path)) and _others_can(
        path, stat.S_IXOTH | stat.S_IROTH
    )


def mask_plan(roots: Iterable[str]) -> list[tuple[str, list[str]]] | None:
    """``[(untraversable ancestor, interpreter roots under it)]``; None if a root itself is closed."""
    masks: dict[str, list[str]] = {}
    for root in roots:
        if closed_roots([root]):
            return None
        blocked = next((a for a in _ancestors(root) if not _others_can(a, stat.S_IXOTH)), None)
        if blocked is not None:
            masks.setdefault(blocked, []).append(root)
    return sorted(masks.items())


def import_paths(python: str) -> list[str]:
    """Interpreter directories plus every entry of the child's ``sys.path``, probed once.

    Why probe: the child runs ``python -s`` with a scrubbed environment, so its
    ``sys.path`` is exactly what ``-I`` prints here (no PYTHONPATH, no script directory).
    ``.pth`` files put other directories there (a venv chained to another venv's
    site-packages, a project installed with ``pip install -e`` in path mode); the tests need
    them, and nothing else of the host's filesystem.
    """
    paths = set(interpreter_roots())
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        done = subprocess.run(
            [python, "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
            capture_output=True, timeout=_PROBE_TIMEOUT_S, check=True, cwd="/", env={"PATH": "/usr/bin:/bin"},
        )
        entries = [e for e in json.loads(done.stdout) if isinstance(e, str) and e.startswith("/")]
        paths.update(os.path.abspath(e) for e in entries)
        paths.update(os.path.realpath(e) for e in entries)
    return sorted(p for p in paths if os.path.exists(p))


def outermost(paths: Iterable[str]) -> list[str]:
    """The paths no other one contains: what gets bound."""
    existing = sorted(set(paths))
    return [p for p in existing if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in existing)]


def closed_roots(paths: Iterable[str]) -> list[str]:
    """Directories another uid could not enter or list on the way into ``paths``, once bound.

    Only what lies inside a bound root counts: parents above it are made afresh in the
    sandbox (:func:`bind_plan`).
    """
    paths = list(paths)
    roots = outermost(paths)
    closed: set[str] = set()
    for path in paths:
        root = next(r for r in roots if path == r or path.startswith(r.rstrip("/") + "/"))
        inside = [a for a in _ancestors(path) if a == root or a.startswith(root.rstrip("/") + "/")]
        closed.update(a for a in inside if not _others_can(a, stat.S_IXOTH))
        if os.path.isdir(path) and not _others_can(path, stat.S_IXOTH | stat.S_IROTH):
            closed.add(path)
    return sorted(closed)


def system_view() -> list[str]:
    """bwrap arguments for the system part of the sandbox's filesystem: an allowlist.

    Why an allowlist instead of ``--ro-bind / /``: whatever the host's uid can read would be
    readable by model code too (``~/.ssh``, ``~/.cache/huggingface/token``, other projects'
    out dirs, ``/run`` sockets). Only the directories programs are made of are there; merged
    ``/usr`` symlinks (``/lib -> usr/lib``) stay symlinks.
    """
    args: list[str] = []
    for top in SYSTEM_DIRS:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def bind_plan(roots: Iterable[str]) -> list[str]:
    """bwrap arguments binding each root read-only at its own path, parents made open.

    Why parents are made here: bwrap would create a missing parent (``/tmp/a`` of a venv
    at ``/tmp/a/venv``, ``/root`` of a pyenv install) as ``0700 root``, which the sandbox uid
    cannot enter. Made with ``--perms 0755`` in the sandbox's own mounts, they hide whatever
    else the host keeps there and ignore the host's modes (a venv in a ``mkdtemp`` dir, a
    base interpreter under a closed home directory).
    """
    roots = list(roots)
    args = open_parents(roots)
    for root in roots:
        args += ["--ro-bind", root, root]
    return args


def open_parents(paths: Iterable[str]) -> list[str]:
    """``--perms 0755 --dir`` for every missing ancestor of ``paths``, outermost first."""
    args: list[str] = []
    made: set[str] = set()
    for path in paths:
        for directory in _ancestors(path):
            if directory not in made and directory.split("/")[1] not in _SYSTEM_TOPS:
                made.add(directory)
                args += ["--perms", "0755", "--dir", directory]
    return args


def plain_python_launch() -> PythonLaunch:
    """Start the interpreter by its own path (it is reachable as it is)."""
    return PythonLaunch(sys.executable, sys.executable)


def fd_python_launch() -> PythonLaunch | None:
    """Reach an interpreter behind untraversable directories through root-opened fds.

    None when the layout does not allow it (the real binary outside ``sys.base_prefix``).
    """
    base = os.path.realpath(sys.base_prefix)
    binary = os.path.realpath(sys.executable)
    if not binary.startswith(base + "/"):
        return None
    base_fd = f"/proc/self/fd/{_FIRST_DIR_FD}"
    exec_path = f"{base_fd}/{os.path.relpath(binary, base)}"
    dirs = [(_FIRST_DIR_FD, base)]
    argv0 = exec_path
    if sys.prefix != sys.base_prefix:  # a venv: Python finds pyvenv.cfg next to argv0
        venv = os.path.abspath(sys.prefix)
        argv0 = os.path.abspath(sys.executable)
        if not reachable_by_others(venv):
            dirs.append((_FIRST_DIR_FD + 1, venv))
            argv0 = f"/proc/self/fd/{_FIRST_DIR_FD + 1}/{os.path.relpath(os.path.abspath(sys.executable), venv)}"
    env = (("PYTHONHOME", base_fd), ("LD_LIBRARY_PATH", f"{base_fd}/lib"))
    return PythonLaunch(exec_path, argv0, env, tuple(dirs))
