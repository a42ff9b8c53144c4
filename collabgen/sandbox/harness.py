"""Stage 2 of a unit-test run: execute the tests so that the code under test cannot forge the verdict.

Why this file is shaped the way it is: the solution is model-written and runs in this very
process, so anything the runner keeps in Python objects it can reach (frames, ``gc``,
module globals, monkeypatched classes) the solution can reach too. The verdict therefore
never lives where Python code can get at it:

* **The warden decides, not this process.** The host only trusts the report of the
  warden (:mod:`collabgen.sandbox.warden`), a separate process with another uid (or
  non-dumpable and pid 1) that holds the nonce and the only pipe to the host. This
  process sends the warden one HMAC-signed ``RESULT`` line at the end; the warden also
  judges *how* it ended (exit 0 before reporting means ``os._exit`` forgery).
* **The key lives only inside the audit hook.** A PEP 578 hook, installed before the
  solution is compiled into anything executable and impossible to remove, holds the HMAC
  key schedule, the test plan, the per-test statuses and the work queue in its closure.
  Nothing else references them; every function on the hook's path binds what it needs at
  setup (no global or builtin lookups: rebinding ``builtins.len`` cannot reach it).
* **No trusted frame sits under untrusted code.** The main thread runs one C-level
  pipeline, started during setup, ``deque(map(call, iter(queue.get, END)), 0)``, so the
  first Python frame above the runner's module frame is the test itself: walking
  ``f_back`` finds nothing. Each untrusted call (exec of the solution, ``setUp``, the
  test method, ...) runs inside a weakref callback, so an exception (``SystemExit`` too)
  is swallowed by C code and reported as an unraisable whose ``object`` is that very
  callback: the hook learns "it raised" from an identity it alone holds, and learns "it
  returned" from the marker that follows it in the queue, an unguessable object.
* **Vetoes and tripwires.** The hook kills the run (alarm to the warden, ``os._exit``) on
  ``gc.get_objects/get_referrers/get_referents``, ``sys._current_frames``, tracing and
  profiling hooks, new audit hooks, ctypes memory and call primitives, forged
  ``collabgen.*`` events, and ``__code__``/``__defaults__``/``__class__``/``__bases__``
  writes on protected objects. ``/proc/self/mem`` is closed by the kernel: the process is
  made non-dumpable. Plain attribute writes (``TestCase.run = f``) raise no audit event,
  so they are caught by snapshots instead: ``unittest``, ``TestCase``, ``builtins`` and
  the numpy/pandas testing modules are compared against a copy taken before the solution
  ran (after the solution loads, before every test, at the end), and every test instance
  gets the real ``TestCase`` methods pinned into its own ``__dict__``, so a class-level
  patch made during a test has no effect before it is detected.

What it cannot stop (documented in the package docstring): native code. ctypes' own
function pointers (``memmove``, ``cast``) read and write memory without any audit event,
and ctypes cannot be banned (scikit-learn and multiprocessing need it), so a solution that
goes native can find the hook's state; the hook only trips on the audited primitives
(``string_at``, ``pythonapi``). Also out of reach: objects that lie in ``__eq__``, code
that mutates a test's own fixtures, and a patch made and undone within one test on an
instance reached by frame introspection.

How it is run: the warden starts ``python -s <this file> --unittest EVENT_FD KEY_FD
SOLUTION TESTS`` in the workspace. It must stay a single stdlib-only file; the host
imports ``count_declared_tests`` and the exit codes from it.
"""

from __future__ import annotations

import ast
import os
import sys

SETUP_FAILED_EXIT = 124
"""Exit status when the runner fails before any untrusted code ran (an infrastructure error)."""
TAMPER_EXIT = 86
"""Exit status after a tamper alarm (the alarm line itself may have been intercepted)."""
BOOKKEEPING_EXIT = 87
"""Exit status when the hook itself failed (out of memory, say): a crash, not tampering."""
TESTS_MODULE = "__test__"
"""Module name of the namespace solution and tests share (not ``__main__``: no ``unittest.main()``)."""

_STEP = "collabgen.step"
_MAX_REASON = 300
_TESTING_MODULES = {"numpy": ("numpy.testing",), "pandas": ("pandas.testing", "pandas._testing")}
_VETOED = (
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames",
    "sys.settrace", "sys.setprofile", "sys.addaudithook", "sys.monitoring.register_callback",
    "sys.monitoring.use_tool_id", "ctypes.call_function", "ctypes.string_at", "ctypes.wstring_at",
    "ctypes.dlsym", "ctypes.dlsym/handle",
)
"""Events that end the run as tampered. Not ``ctypes.cdata``/``addressof``: multiprocessing's
shared values use them."""
_GUARDED_ATTRS = ("__code__", "__defaults__", "__kwdefaults__", "__class__", "__bases__", "__dict__")


# --------------------------------------------------------------------------- static helpers


def count_declared_tests(source: str) -> int:
    """Count ``test*`` methods of TestCase classes without executing anything.

    Why: when the solution does not even load (syntax error, crash, timeout) the outcome
    still needs a denominator, and the host must not run untrusted code to get it.
    """
    return sum(count for _, count in declared_test_classes(source))


def declared_test_classes(source: str) -> list[tuple[str, int]]:
    """(class name, number of ``test*`` methods in its body) for each test class, by AST."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    known: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and _is_test_class(node, known):
            known.add(node.name)
            methods = [i for i in node.body if isinstance(i, (ast.FunctionDef, ast.AsyncFunctionDef))]
            found.append((node.name, sum(1 for m in methods if m.name.startswith("test"))))
    return found


def _is_test_class(node: ast.ClassDef, known: set[str]) -> bool:
    """A class deriving from ``*TestCase`` or from a test class seen earlier."""
    for base in node.bases:
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        if name.endswith("TestCase") or name in known:
            return True
    return False


def imported_top_modules(source: str) -> set[str]:
    """Top-level package names the tests import (to pre-import their testing helpers)."""
    return {name.split(".")[0] for name in _imported_names(source)}


def _imported_names(source: str) -> set[str]:
    """Dotted names of the absolute imports in ``source`` (``from a.b import c`` gives ``a.b``)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


# --------------------------------------------------------------------------- signing


def make_signer(key: bytes):  # type: ignore[no-untyped-def]
    """HMAC-SHA256 as a closure over C primitives, so no patchable module is consulted later."""
    import hashlib

    sha256 = hashlib.sha256
    block = key.ljust(64, b"\0") if len(key) <= 64 else sha256(key).digest().ljust(64, b"\0")
    inner_pad = bytes(b ^ 0x36 for b in block)
    outer_pad = bytes(b ^ 0x5C for b in block)

    def sign(message: bytes) -> bytes:
        inner = sha256(inner_pad + message).digest()
        return sha256(outer_pad + inner).hexdigest().encode()

    return sign


def signed_line(sign, kind: bytes, payload: bytes) -> bytes:  # type: ignore[no-untyped-def]
    """``KIND PAYLOAD MAC``: the warden recomputes the MAC over ``KIND PAYLOAD``."""
    body = kind + b" " + payload
    return body + b" " + sign(body) + b"\n"


# --------------------------------------------------------------------------- setup


def _make_undumpable() -> None:
    """PR_SET_DUMPABLE 0: /proc/self/mem becomes root-owned and ptrace is refused."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def _preimport(tests_src: str) -> list[tuple[str, object]]:
    """Import what the tests import, before the solution can replace or patch it.

    Returns the modules whose callables are snapshotted (builtins, unittest, the numeric
    testing helpers). Everything else the tests import is imported too, so that its
    ``sys.modules`` entry exists before the solution runs: a solution that swaps one for
    a look-alike (a ``unittest`` whose ``TestCase`` asserts nothing) is then caught by
    identity (``modules`` in the hook), not only by attribute snapshots.
    """
    import builtins
    import importlib
    import unittest
    import unittest.case

    modules: list[tuple[str, object]] = [("builtins", builtins), ("unittest", unittest), ("unittest.case", unittest.case)]
    wanted = imported_top_modules(tests_src)
    for top, helpers in _TESTING_MODULES.items():
        if top not in wanted:
            continue
        for name in helpers:
            try:
                modules.append((name, importlib.import_module(name)))
            except Exception:  # noqa: BLE001 - a missing helper is the tests' problem, not ours
                continue
    for name in sorted(imported_module_names(tests_src)):
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - the tests will meet the same error, as their own
            continue
    return modules


def imported_module_names(source: str) -> set[str]:
    """Dotted names of the modules the tests import, not ``solution``."""
    return {n for n in _imported_names(source) if n.split(".")[0] not in ("solution", TESTS_MODULE)}


def _testcase_subclasses() -> dict:
    """``TestCase`` subclasses that exist before the solution runs (``IsolatedAsyncioTestCase``,
    a library's base class the tests import), by id: their overrides are genuine."""
    import unittest

    found: dict = {}
    todo = list(unittest.TestCase.__subclasses__())
    while todo:
        cls = todo.pop()
        if id(cls) not in found:
            found[id(cls)] = cls
            todo.extend(cls.__subclasses__())
    return found


def code_objects(code) -> dict:  # type: ignore[no-untyped-def]
    """Every code object compiled from one source, by id (keeps them alive, so ids stay unique)."""
    found, todo = {}, [code]
    while todo:
        current = todo.pop()
        found[id(current)] = current
        todo.extend(c for c in current.co_consts if isinstance(c, type(code)))
    return found


def _read_fd(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    while sum(len(c) for c in chunks) < limit:
        chunk = os.read(fd, limit)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _hex(text: str) -> bytes:
    """Free text for the wire: hex, so it can hold no separator (``-`` means none)."""
    return text[:_MAX_REASON].encode("utf-8", "replace").hex().encode() or b"-"


def _compile_or_report(solution_src: str, tests_src: str, paths: tuple[str, str], report) -> tuple:  # type: ignore[no-untyped-def]
    """Compile both sources (nothing runs yet); a syntax error is reported and ends the run."""
    declared = count_declared_tests(tests_src)
    try:
        solution_code = compile(solution_src, paths[0], "exec")
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        report(b"E" * declared, f"syntax error in solution: {getattr(exc, 'msg', exc)} (line {line})")
    try:
        tests_code = compile(tests_src, paths[1], "exec")
    except (SyntaxError, ValueError) as exc:
        report(b"E" * declared, f"syntax error in tests: {type(exc).__name__}: {getattr(exc, 'msg', exc)}")
    return solution_code, tests_code, declared


def _module_frame_code():  # type: ignore[no-untyped-def]
    """The code of the runner's module frame: the only frame the pipeline may run under."""
    frame = sys._getframe()
    while frame.f_back is not None:
        frame = frame.f_back
    return frame.f_code


def _read_sources(argv: list[str]) -> tuple[tuple[str, str], str, str]:
    paths = (os.path.abspath(argv[4]), os.path.abspath(argv[5]))
    with open(paths[0], encoding="utf-8") as fh:
        solution_src = fh.read()
    with open(paths[1], encoding="utf-8") as fh:
        tests_src = fh.read()
    return paths, solution_src, tests_src


def setup(argv: list[str]):  # type: ignore[no-untyped-def]
    """Everything before untrusted code: read, compile, snapshot, install the hook.

    Returns ``(queue.get, END)`` for the module-level pipeline expression; once this
    returns, no Python-reachable object refers to the key, the queue or the markers.
    """
    event_fd, key_fd = int(argv[2]), int(argv[3])
    sign = make_signer(_read_fd(key_fd, 256))
    os.set_inheritable(event_fd, False)
    paths, solution_src, tests_src = _read_sources(argv)

    def report(statuses: bytes, reason: str) -> None:  # only before the hook: nothing untrusted ran
        payload = b"v1 " + (statuses or b"-") + b" - " + _hex(reason)
        os.write(event_fd, signed_line(sign, b"RESULT", payload))
        os._exit(0)

    solution_code, tests_code, declared = _compile_or_report(solution_src, tests_src, paths, report)
    if sys.path[:1] != [os.getcwd()]:
        sys.path.insert(0, os.getcwd())  # `from solution import ...` finds the workspace copy
    _make_undumpable()
    protected = _preimport(tests_src)
    caps = _capture(_module_frame_code(), event_fd, sign, protected, _test_module(paths[1]))
    caps["import_solution"] = "solution" in imported_top_modules(tests_src)
    caps["tests_codes"] = code_objects(tests_code)
    caps["trusted_bases"] = _testcase_subclasses()
    async_base = _async_base(tests_src)
    classes = tuple(name for name, _ in declared_test_classes(tests_src))
    pipeline = _make_hook(caps, (solution_code, tests_code), classes, declared, async_base)
    os.write(event_fd, signed_line(sign, b"LOADING", b"-"))
    return pipeline


def _async_base(tests_src: str):  # type: ignore[no-untyped-def]
    """IsolatedAsyncioTestCase, imported only if the tests mention it (it pulls in asyncio)."""
    if "IsolatedAsyncioTestCase" not in tests_src:
        return None
    import unittest

    return unittest.IsolatedAsyncioTestCase


def _test_module(tests_path: str):  # type: ignore[no-untyped-def]
    """The namespace solution and tests share, importable as ``__test__``."""
    import types

    module = types.ModuleType(TESTS_MODULE)
    module.__file__ = tests_path
    sys.modules[TESTS_MODULE] = module
    return module


# long: one flat table of every primitive the hook uses, bound while nothing untrusted has run
def _capture(module_code, event_fd: int, sign, protected, module) -> dict:  # type: ignore[no-untyped-def]
    """Bind every primitive the hook will use now; later lookups could be hijacked."""
    import _queue
    import _thread
    import collections
    import functools
    import operator
    import types
    import unittest.case
    import weakref

    test_case = unittest.case.TestCase
    return {
        "module_code": module_code, "event_fd": event_fd, "sign": sign, "protected": protected,
        "ns": module.__dict__, "write": os.write, "exit": os._exit, "getpid": os.getpid,
        "getframe": sys._getframe, "get_ident": _thread.get_ident, "audit": sys.audit,
        "partial": functools.partial, "wref": weakref.ref, "fromkeys": dict.fromkeys, "map": map,
        "call": operator.methodcaller("__call__"), "deque": collections.deque, "iter": iter,
        "Queue": _queue.SimpleQueue, "MethodType": types.MethodType, "FunctionType": types.FunctionType,
        "classmethod": classmethod, "staticmethod": staticmethod, "type": type, "str": str,
        "id": id, "len": len, "sorted": sorted, "callable": callable, "isinstance": isinstance,
        "issubclass": issubclass, "exec": exec, "import": __import__, "object": object, "object_new": object.__new__,
        "set": set, "BaseException": BaseException, "StopIteration": StopIteration,
        "AssertionError": AssertionError, "TestCase": test_case, "SkipTest": unittest.case.SkipTest,
        "inst_dict": test_case.__dict__["__dict__"].__get__,
        "mro_of": type.__dict__["__mro__"].__get__,
        "dict_of": type.__dict__["__dict__"].__get__,
        "name_of": type.__dict__["__name__"].__get__,
        "func_dict": types.FunctionType.__dict__["__dict__"].__get__,
        "TestCase_init": test_case.__dict__["__init__"],
        "code_of": types.FunctionType.__dict__["__code__"].__get__,
        "modules": sys.modules,
        "flush": (sys.stdout.flush, sys.stderr.flush),
        "max_reason": _MAX_REASON,
    }


# --------------------------------------------------------------------------- the hook


# long: the closure that owns the verdict; its nested functions are short and share its cells
def _make_hook(caps: dict, codes: tuple, class_names: tuple, declared: int, async_base):  # type: ignore[no-untyped-def]
    """Install the audit hook that owns the verdict; return the pipeline's ``(get, END)``.

    Every nested function runs on the hook's path after untrusted code started, so it may
    only use names bound here (closure cells): never a global or a builtin, which the
    solution could rebind. ``tests/test_sandbox_verdict.py`` checks their bytecode.
    """
    write, exit_, getframe, audit = caps["write"], caps["exit"], caps["getframe"], caps["audit"]
    partial, wref, fromkeys, map_, call = caps["partial"], caps["wref"], caps["fromkeys"], caps["map"], caps["call"]
    type_, str_, id_, len_ = caps["type"], caps["str"], caps["id"], caps["len"]
    sorted_, callable_, isinstance_, issubclass_ = caps["sorted"], caps["callable"], caps["isinstance"], caps["issubclass"]
    exec_, object_, set_, object_new = caps["exec"], caps["object"], caps["set"], caps["object_new"]
    import_, import_solution = caps["import"], caps["import_solution"]
    BaseException_, StopIteration_, AssertionError_ = caps["BaseException"], caps["StopIteration"], caps["AssertionError"]
    TestCase, SkipTest, TestCase_init = caps["TestCase"], caps["SkipTest"], caps["TestCase_init"]
    MethodType, FunctionType = caps["MethodType"], caps["FunctionType"]
    classmethod_, staticmethod_ = caps["classmethod"], caps["staticmethod"]
    inst_dict, mro_of, dict_of = caps["inst_dict"], caps["mro_of"], caps["dict_of"]
    name_of_type, func_dict, flushes = caps["name_of"], caps["func_dict"], caps["flush"]
    event_fd, ns, module_code, sign = caps["event_fd"], caps["ns"], caps["module_code"], caps["sign"]
    get_ident, getpid, max_reason = caps["get_ident"], caps["getpid"], caps["max_reason"]
    code_of, tests_codes, modules = caps["code_of"], caps["tests_codes"], caps["modules"]
    trusted_bases = caps["trusted_bases"]
    my_pid, main_ident = getpid(), get_ident()
    queue, END, step_event, tamper_exit, crash_exit = caps["Queue"](), object_(), _STEP, TAMPER_EXIT, BOOKKEEPING_EXIT
    vetoed, guarded = set_(_VETOED), set_(_GUARDED_ATTRS)
    protected_ids: dict = {}
    pending: dict = {}  # id(callback) -> callback of a wrapped call still in the pipeline
    failures: dict = {}  # id(callback) -> the exception type that call raised
    expected: list = []  # [marker, callback]: the one marker the pipeline may reach next
    state: dict = {"tamper": None}

    def hexed(text: str) -> bytes:
        return text[:max_reason].encode("utf-8", "replace").hex().encode() or b"-"

    def type_name(cls) -> str:
        name = name_of_type(cls)
        return name if type_(name) is str_ else "?"

    def snapshot(mapping) -> dict:
        copy: dict = {}
        for key, value in mapping.items():
            if type_(key) is str_:
                copy[key] = value
        return copy

    def changed(label: str, mapping, before: dict, mode: str) -> str | None:
        """``mode``: "callables" (those may not change), "kept" (no value may change; new keys are
        fine: ``sys.modules``), "exact" (nothing may change or be added: ``TestCase``)."""
        try:
            now = snapshot(mapping)
        except BaseException_:
            return label + " changed while being checked"
        for key, value in before.items():
            if now.get(key, END) is not value and (mode != "callables" or callable_(value)):
                return label + "." + key + " was replaced or removed"
        if mode == "exact":
            for key in now:
                if key not in before:
                    return label + "." + key + " was added"
        return None

    baseline = [(label, m.__dict__, snapshot(m.__dict__), "callables") for label, m in caps["protected"]]
    baseline.append(("unittest.TestCase", dict_of(TestCase), snapshot(dict_of(TestCase)), "exact"))
    baseline.append(("sys.modules", modules, snapshot(modules), "kept"))

    def protect(obj) -> None:
        protected_ids[id_(obj)] = obj

    for _, mapping, before, _ in baseline:
        protect(mapping)
        for value in before.values():
            protect(value)
    protect(TestCase)

    def rebaseline() -> None:
        fresh = []
        for label, mapping, _, mode in baseline:
            fresh.append((label, mapping, snapshot(mapping), mode))
            for value in fresh[-1][2].values():
                protect(value)
        baseline[:] = fresh

    def check_integrity(extra: list) -> str | None:
        for label, mapping, before, mode in baseline + extra:
            problem = changed(label, mapping, before, mode)
            if problem is not None:
                return problem
        return None

    # ---------------------------------------------------------------- the channel to the warden

    def alarm(code: bytes) -> None:
        try:
            write(event_fd, b"ALARM " + code + b"\n")
        finally:
            exit_(tamper_exit)

    def crash() -> None:
        exit_(crash_exit)  # our own bookkeeping failed (e.g. MemoryError): the run earned a 0, no more

    def finish(statuses: bytes, reason: str | None) -> None:
        if getpid() != my_pid:
            exit_(0)  # a forked test process got here: only the original reports
        for flush in flushes:
            try:
                flush()
            except BaseException_:
                pass
        tamper = state["tamper"]
        payload = b"v1 " + (statuses or b"-") + b" " + (hexed(tamper) if tamper else b"-")
        body = b"RESULT " + payload + b" " + (hexed(reason) if reason else b"-")
        try:
            write(event_fd, body + b" " + sign(body) + b"\n")
        except BaseException_:
            crash()
        exit_(0)

    # ---------------------------------------------------------------- feeding the pipeline

    def run_then_mark(func, *args) -> None:
        """Queue ``func(*args)`` inside a weakref callback (it cannot abort the pipeline), then a marker."""
        callback = partial(fromkeys, map_(id_, map_(call, (partial(func, *args),))))
        pending[id_(callback)] = callback
        queue.put(partial(wref, set_(), callback))
        marker = object_()
        expected[:] = [marker, callback]
        queue.put(partial(audit, step_event, marker))

    # ---------------------------------------------------------------- the driver (a generator)

    def load():
        """The solution (exec'd, then imported as ``solution`` if the tests do), then the tests.

        Integrity is checked after each solution step; the tests' own module code is
        trusted, so whatever it changes becomes the baseline the test runs are held to.
        """
        raised = yield (exec_, codes[0], ns)
        if raised is None:
            state["tamper"] = check_integrity([])
        if raised is None and state["tamper"] is None and import_solution:
            raised = yield (import_, "solution")
            state["tamper"] = check_integrity([]) if raised is None else None
        if raised is not None:
            return "tests could not be loaded: the solution raised " + type_name(raised)
        if state["tamper"]:
            return None
        raised = yield (exec_, codes[1], ns)
        if raised is not None:
            return "tests could not be loaded: the tests raised " + type_name(raised)
        rebaseline()
        return None

    def resolve(cls) -> dict:
        attrs: dict = {}
        for klass in mro_of(cls):
            for key, value in dict_of(klass).items():
                if type_(key) is str_ and key not in attrs:
                    attrs[key] = value
        return attrs

    def foreign_override(cls) -> str | None:
        """A ``TestCase`` attribute a class before ``TestCase`` in the MRO overrides with code not from the tests.

        Why: the solution can hand the tests a look-alike base (``sys.modules['unittest']``
        swapped for a module whose ``TestCase`` subclass asserts nothing); the genuine methods
        are then shadowed, not patched, and no snapshot of ``unittest`` sees it.
        """
        genuine = dict_of(TestCase)
        for klass in mro_of(cls):
            if klass is TestCase or trusted_bases.get(id_(klass)) is klass:
                return None
            for key, value in dict_of(klass).items():
                if type_(key) is not str_ or key not in genuine or key[:2] == "__":
                    continue
                func = value.__func__ if type_(value) is classmethod_ or type_(value) is staticmethod_ else value
                if type_(func) is not FunctionType or tests_codes.get(id_(code_of(func))) is not code_of(func):
                    return type_name(cls) + "." + key + " does not come from the tests (" + type_name(klass) + ")"
        return None

    def plan() -> list:
        """[(class, attrs, [test names])] for the test classes the tests declare, sorted like unittest."""
        current = snapshot(ns)
        found = []
        for name in sorted_(class_names):
            cls = current.get(name)
            if cls is None or not isinstance_(cls, type_) or not issubclass_(cls, TestCase):
                continue
            problem = foreign_override(cls)
            if problem is not None:
                state["tamper"] = problem
                return []
            attrs = resolve(cls)
            names = []
            for key, value in attrs.items():
                if key[:4] == "test" and type_(value) is FunctionType:
                    names.append(key)
                    protect(value)
            found.append((cls, attrs, sorted_(names)))
            protect(cls)
        return found

    def pin(cls, attrs: dict, inst) -> dict:
        """Bind the snapshotted methods into the instance's own __dict__ (class patches then miss)."""
        mapping = inst_dict(inst)
        for key, value in attrs.items():
            if key[:2] == "__":
                continue
            kind = type_(value)
            if kind is FunctionType:
                mapping[key] = MethodType(value, inst)
            elif kind is classmethod_:
                mapping[key] = MethodType(value.__func__, cls)
            elif kind is staticmethod_:
                mapping[key] = value.__func__
            elif isinstance_(value, type_):
                mapping[key] = value
        return {key: mapping.get(key) for key in ("setUp", "tearDown", "doCleanups", "debug")}

    def flag(value, name: str) -> bool:
        return type_(value) is FunctionType and func_dict(value).get(name) is True

    def classify(raised) -> bytes:
        if raised is None:
            return b"P"
        if issubclass_(raised, SkipTest):
            return b"S"
        return b"F" if issubclass_(raised, AssertionError_) else b"E"

    def new_instance(cls, attrs: dict):
        try:
            inst = object_new(cls)
        except BaseException_:
            return None, None
        protect(inst)
        return inst, pin(cls, attrs, inst)

    def one_test(cls, attrs: dict, name: str, is_async: bool):
        """One test's status (P/F/E/S), with unittest's setUp/tearDown/cleanup order."""
        method = attrs[name]
        if attrs.get("__unittest_skip__") is True or flag(method, "__unittest_skip__"):
            return b"S"
        inst, bound = new_instance(cls, attrs)
        if inst is None:
            return b"E"
        init = attrs.get("__init__")
        raised = yield ((init if type_(init) is FunctionType else TestCase_init), inst, name)
        if raised is not None:
            return b"E"
        if is_async:  # IsolatedAsyncioTestCase.debug() runs its own event loop around the test
            raised = yield (bound["debug"],)
            return classify(raised)
        raised = yield (bound["setUp"],)
        if raised is not None:
            yield (bound["doCleanups"],)
            return b"S" if issubclass_(raised, SkipTest) else b"E"
        status = classify((yield (MethodType(method, inst),)))
        if flag(method, "__unittest_expecting_failure__"):
            status = {b"F": b"P", b"P": b"F"}.get(status, status)
        if (yield (bound["tearDown"],)) is not None:
            status = b"E"
        yield (bound["doCleanups"],)
        return status

    def class_hook(attrs: dict, cls, name: str):
        value = attrs.get(name)
        if type_(value) is classmethod_:
            return MethodType(value.__func__, cls)
        return MethodType(dict_of(TestCase)[name].__func__, cls)

    def one_class(cls, attrs: dict, names: list):
        if attrs.get("__unittest_skip__") is True:
            return b"S" * len_(names)
        raised = yield (class_hook(attrs, cls, "setUpClass"),)
        if raised is not None:
            return (b"S" if issubclass_(raised, SkipTest) else b"E") * len_(names)
        extra = [(type_name(cls), dict_of(cls), snapshot(dict_of(cls)), "callables")]
        is_async = async_base is not None and issubclass_(cls, async_base)
        statuses = b""
        for name in names:
            state["tamper"] = check_integrity(extra)
            if state["tamper"]:
                return statuses + b"E" * (len_(names) - len_(statuses))
            statuses += yield from one_test(cls, attrs, name, is_async)
        yield (class_hook(attrs, cls, "tearDownClass"),)
        yield (class_hook(attrs, cls, "doClassCleanups"),)
        return statuses

    def module_hook(name: str):
        value = snapshot(ns).get(name)
        return value if type_(value) is FunctionType else None

    def driver():
        reason = yield from load()
        if reason is not None or state["tamper"]:
            return b"E" * declared, reason
        classes, setup_module = plan(), module_hook("setUpModule")
        if state["tamper"]:
            return b"E" * declared, None
        if setup_module is not None and (yield (setup_module,)) is not None:
            planned = 0
            for _, _, names in classes:
                planned += len_(names)
            return b"E" * planned, "setUpModule failed"
        statuses = b""
        for cls, attrs, names in classes:
            statuses += yield from one_class(cls, attrs, names)
            if state["tamper"]:
                return statuses, None
        teardown_module = module_hook("tearDownModule")
        if teardown_module is not None:
            yield (teardown_module,)
        state["tamper"] = check_integrity([])
        return statuses, None

    steps = driver()
    protect(steps)

    def advance(raised) -> None:
        try:
            item = steps.send(raised)
        except StopIteration_ as done:
            statuses, reason = done.value
            finish(statuses, reason)
            return
        run_then_mark(*item)

    # ---------------------------------------------------------------- event handlers

    def on_step(args) -> None:
        genuine = len_(args) == 1 and len_(expected) == 2 and args[0] is expected[0]
        if genuine and getpid() != my_pid:
            exit_(0)  # a forked test process reached the next step: it is not the run
        frame = getframe(3)  # on_step <- dispatch <- hook <- the frame the pipeline runs under
        if not genuine or get_ident() != main_ident or frame.f_back is not None or frame.f_code is not module_code:
            alarm(b"forged-step")
        callback = expected[1]
        pending.pop(id_(callback), None)
        advance(failures.pop(id_(callback), None))

    def on_unraisable(args) -> None:
        if len_(args) == 2 and get_ident() == main_ident:
            unraisable = args[1]
            target = pending.get(id_(unraisable.object))
            if target is not None and target is unraisable.object:
                failures[id_(target)] = unraisable.exc_type

    def on_setattr(args) -> None:
        if len_(args) >= 2 and type_(args[1]) is str_ and args[1] in guarded and id_(args[0]) in protected_ids:
            alarm(b"protected-attribute:" + args[1].encode())

    def on_getattr(args) -> None:
        if len_(args) == 2 and args[0] is steps:
            alarm(b"protected-attribute")

    handlers = {
        step_event: on_step,
        "sys.unraisablehook": on_unraisable,
        "object.__setattr__": on_setattr,
        "object.__delattr__": on_setattr,
        "object.__getattr__": on_getattr,
    }

    def dispatch(handler, args) -> None:
        try:
            handler(args)
        except BaseException_:
            crash()

    def hook(event, args) -> None:
        if type_(event) is not str_:
            alarm(b"forged-event")
        if event in vetoed:
            alarm(b"vetoed:" + event.encode())
        handler = handlers.get(event)
        if handler is not None:
            dispatch(handler, args)
        elif event[:10] == "collabgen.":
            alarm(b"forged-event")

    sys.addaudithook(hook)
    run_then_mark(*steps.send(None))
    return queue.get, END


def unittest_main(argv: list[str]):  # type: ignore[no-untyped-def]
    """Setup; a failure before untrusted code ran is an infrastructure error (exit 124)."""
    try:
        return setup(argv)
    except BaseException as exc:  # noqa: BLE001
        sys.stderr.write(f"collabgen-sandbox: runner setup failed: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        os._exit(SETUP_FAILED_EXIT)


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "--unittest":
        sys.stderr.write("usage: runner --unittest EVENT_FD KEY_FD SOLUTION TESTS\n")
        os._exit(2)
    import collections as _collections
    import operator as _operator

    # One expression whose names are all loaded before any untrusted code exists; the queue it
    # drains is referenced only from C from here on. It never returns: the hook ends the process.
    _collections.deque(map(_operator.methodcaller("__call__"), iter(*unittest_main(sys.argv))), 0)
    os._exit(SETUP_FAILED_EXIT)
