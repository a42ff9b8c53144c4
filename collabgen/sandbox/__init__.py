"""Run untrusted, model-written Python in an isolated child process, and judge it honestly.

Why this exists: the code-execution metric runs whatever the model wrote against unit
tests. That code must not read our API keys, touch our files, reach the network, or take
the machine down (fork bombs, memory hogs, infinite loops), and it must not be able to
forge its own score: collabgen is a reward generator, and a wrong reward is silent. Two
rules follow. A run the sandbox could not carry out raises
:class:`SandboxInfrastructureError` (never a 0); a machine without isolation raises
:class:`SandboxUnavailable` unless the user opted in (``allow_unisolated``), and
:meth:`Sandbox.canary` proves a configuration right before a run relies on it.

Layers, outermost first:

* **an isolation backend** (:mod:`collabgen.sandbox.isolation`): bubblewrap (new
  pid/net/ipc/uts namespaces, read-only root, ``/root`` masked, only size-capped tmpfs
  writable, interpreter trees under ``/tmp`` bound back), or, only when allowed, the
  ``rlimits`` fallback (a private uid, rlimits, a network namespace when permitted, a
  disk watchdog and a uid sweep).
* **the warden** (:mod:`collabgen.sandbox.warden`), a trusted process inside the sandbox
  (pid 1 under bubblewrap) that drops the child to a **private unprivileged uid** (the
  kernel ignores RLIMIT_NPROC for uid 0; a different uid also cannot signal, trace or read
  the warden), applies the **rlimits** (memory as a per-process share of the tree's
  budget), and alone holds the nonce and the pipe the host reads the verdict from.
* **the runner** (:mod:`collabgen.sandbox.harness`) for unit tests: an audit hook that
  owns the verdict, drives the tests from a C-level pipeline with no trusted frame below
  them, vetoes introspection, pins ``TestCase`` methods per instance and checks
  ``unittest``/``builtins`` against snapshots; tampering scores 0 and is flagged.
* a **wall-clock timeout** (:mod:`collabgen.sandbox.supervisor`) that freezes (SIGSTOP)
  and SIGKILLs the whole tree, plus a sweep after every run.

Residual risks, stated so nobody relies on more: code that goes native (ctypes function
pointers read and write memory without audit events, and ctypes cannot be banned: numpy,
scikit-learn and multiprocessing need it) can find the runner's state; objects whose
``__eq__`` lies pass ``assertEqual`` (as under any in-process runner: the HumanEval and
MBPP wrappers compare their ``==`` asserts strictly, see
:mod:`collabgen.tasks.strict_equality`, BigCodeBench's own tests do not; the README's
sandbox section says what that covers); a patch made and undone within one test, on an
instance reached by frame introspection, goes unseen.

Modules: ``limits``, ``results``, ``errors``, ``workspace`` (the throwaway directory),
``bootstrap`` (files, config, child environment), ``isolation``, ``warden``, ``harness``,
``processes`` and ``supervisor`` (running and killing), ``verdict`` (reports to results),
``core`` (:class:`Sandbox`), ``lifetime`` (:class:`LazySandbox`, the one place sandboxes
are made). Apart from the error base class, nothing else of collabgen is imported.
"""

from __future__ import annotations

from collabgen.sandbox.core import Sandbox
from collabgen.sandbox.errors import SandboxInfrastructureError, SandboxUnavailable
from collabgen.sandbox.harness import count_declared_tests
from collabgen.sandbox.isolation import IsolationBackend, backend_names, make_backend, register_backend
from collabgen.sandbox.lifetime import LazySandbox
from collabgen.sandbox.limits import SandboxLimits
from collabgen.sandbox.results import SandboxResult, UnitTestOutcome

__all__ = [
    "IsolationBackend",
    "LazySandbox",
    "Sandbox",
    "SandboxInfrastructureError",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "UnitTestOutcome",
    "backend_names",
    "count_declared_tests",
    "make_backend",
    "register_backend",
]
