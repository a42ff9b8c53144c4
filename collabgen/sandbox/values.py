"""The separate-process verdict: the tests run where the model's code never ran.

Why this exists: under the in-process runner (:mod:`collabgen.sandbox.harness`) the
solution shares an address space with the code that reports the verdict, and native code
(ctypes reads any address without an audit event, numpy's array interface too) can find
the signing key and forge a pass. Nothing in one process can stop that. Here the verdict
comes from a process the solution never touches:

* the **runner** (``--values``): a trusted process that reads the key, compiles the tests,
  makes itself non-dumpable (no ``/proc/PID/mem``, no ptrace, no fds for its uid), then
  starts the **server** and runs the tests with the genuine ``unittest``. The solution's
  names are proxies there: calling ``task_func`` sends the arguments to the server *by
  value* and gets the result back *by value*, decoded into genuine built-in objects;
* the **server** (``--serve``): executes the solution and answers calls. It holds no key,
  no verdict pipe, and never sees an object of the runner's, so whatever it does it can
  only answer with data: an ``__eq__`` that always says yes arrives as plain data too.

What it cannot carry: values other than data (None, bool, int, float, complex, str,
bytes, list, tuple, dict, set, frozenset, dates and times, Decimal, Fraction, iterators as
their items, numpy arrays and scalars), mocks (a ``patch`` in the tests does not reach the
server), objects the tests inspect (matplotlib axes). :func:`verdict_for` therefore picks
this verdict only for tests that need none of that (HumanEval, MBPP, plain function
tests); a test argument it cannot send makes the runner say so and the sandbox runs the
in-process runner instead (the tests decide that, never the solution). A value the
*solution* returns that cannot be carried fails that test, with the reason.

Stdlib only, a single file: it is copied into the workspace and run by path.
"""

from __future__ import annotations

import ast
import json
import os
import struct
import sys

UNSUPPORTED = "values-unsupported: "
"""Reason prefix of a run the separate-process verdict could not carry (the tests'
arguments); the sandbox then runs the in-process runner."""
_MAX_MESSAGE = 64 * 1024 * 1024
_MAX_ITEMS = 1_000_000
_MAX_TEXT = 300
_SAFE_MODULES = frozenset({
    "unittest", "math", "cmath", "re", "string", "collections", "collections.abc", "itertools", "functools",
    "heapq", "bisect", "operator", "typing", "fractions", "decimal", "datetime", "statistics", "random",
    "copy", "sys", "json", "textwrap",
})
"""What tests may import and still be judged in a separate process (nothing patches the solution)."""


def verdict_for(tests_src: str) -> str:
    """``"values"`` for tests that only call the solution with data, else ``"in_process"``."""
    try:
        tree = ast.parse(tests_src)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "in_process"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""] if not node.level else ["."]
        elif isinstance(node, (ast.Name, ast.Attribute)):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in ("mock", "patch", "MagicMock", "Mock", "globals", "__builtins__"):
                return "in_process"
            continue
        else:
            continue
        if any(m != "solution" and m not in _SAFE_MODULES for m in modules):
            return "in_process"
    return "values"


# --------------------------------------------------------------------------- the wire: data by value


class Uncarried(TypeError):
    """A value that is not data (raised by :func:`encode`)."""


def encode(value, depth: int = 0):  # type: ignore[no-untyped-def]
    """``value`` as JSON-able data with exact-type tags; raises :class:`Uncarried` for anything else."""
    if depth > 200:
        raise Uncarried("nested too deep")
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return value
    if kind is float:
        return {"$t": "float", "v": repr(value)}
    if kind is complex:
        return {"$t": "complex", "v": [repr(value.real), repr(value.imag)]}
    if kind in (bytes, bytearray):
        return {"$t": kind.__name__, "v": bytes(value).hex()}
    if kind in (list, tuple, set, frozenset):
        return {"$t": kind.__name__, "v": [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"$t": "dict", "v": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    module = getattr(kind, "__module__", "")
    if module == "datetime":
        return _encode_datetime(value)
    if module == "decimal" and kind.__name__ == "Decimal":
        return {"$t": "Decimal", "v": str(value)}
    if module == "fractions" and kind.__name__ == "Fraction":
        return {"$t": "Fraction", "v": [value.numerator, value.denominator]}
    if module.startswith("numpy"):
        return _encode_numpy(value, depth)
    if hasattr(kind, "__next__") and hasattr(kind, "__iter__"):  # generators, map objects, iterators
        items = []
        for item in value:
            items.append(encode(item, depth + 1))
            if len(items) > _MAX_ITEMS:
                raise Uncarried("an iterator with too many items")
        return {"$t": "iter", "v": items}
    raise Uncarried(f"a {module}.{kind.__qualname__}" if module not in ("builtins", "") else f"a {kind.__qualname__}")


def _encode_datetime(value):  # type: ignore[no-untyped-def]
    import datetime as dt

    kind = type(value)
    if kind is dt.timedelta:
        return {"$t": "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if kind in (dt.datetime, dt.time):
        offset = value.utcoffset() if kind is dt.datetime else (value.utcoffset() if value.tzinfo else None)
        naive = value.replace(tzinfo=None)
        tz = None if offset is None else [offset.days, offset.seconds, offset.microseconds]
        return {"$t": kind.__name__, "v": naive.isoformat(), "tz": tz}
    if kind is dt.date:
        return {"$t": "date", "v": value.isoformat()}
    raise Uncarried(f"a datetime.{kind.__qualname__}")


def _encode_numpy(value, depth: int):  # type: ignore[no-untyped-def]
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype.hasobject or value.dtype.fields is not None:
            raise Uncarried("a numpy array of objects or records")
        return {"$t": "ndarray", "dtype": value.dtype.str, "shape": list(value.shape),
                "v": np.ascontiguousarray(value).tobytes().hex()}
    if isinstance(value, np.generic) and not value.dtype.hasobject:
        return {"$t": "npscalar", "dtype": value.dtype.str, "v": value.tobytes().hex()}
    raise Uncarried(f"a numpy {type(value).__qualname__}")


def decode(data, depth: int = 0):  # type: ignore[no-untyped-def]
    """Genuine built-in objects from :func:`encode`'s output; anything else raises ValueError."""
    if depth > 200:
        raise ValueError("nested too deep")
    if data is None or type(data) in (bool, int, str):
        return data
    if type(data) is not dict or type(data.get("$t")) is not str:
        raise ValueError("not a value collabgen sent")
    tag, v = data["$t"], data.get("v")
    if tag == "float":
        return float(_text(v))
    if tag == "complex":
        return complex(float(_text(v[0])), float(_text(v[1])))
    if tag in ("bytes", "bytearray"):
        return (bytes if tag == "bytes" else bytearray).fromhex(_text(v))
    if tag in ("list", "tuple", "set", "frozenset", "iter"):
        items = [decode(item, depth + 1) for item in _items(v)]
        return iter(items) if tag == "iter" else {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
    if tag == "dict":
        return {decode(k, depth + 1): decode(val, depth + 1) for k, val in (_pair(p) for p in _items(v))}
    if tag in ("datetime", "date", "time", "timedelta"):
        return _decode_datetime(tag, data)
    if tag == "Decimal":
        import decimal

        return decimal.Decimal(_text(v))
    if tag == "Fraction":
        import fractions

        numerator, denominator = _pair(v)
        if type(numerator) is not int or type(denominator) is not int:
            raise ValueError("a malformed Fraction")
        return fractions.Fraction(numerator, denominator)
    if tag in ("ndarray", "npscalar"):
        return _decode_numpy(tag, data)
    raise ValueError(f"unknown value tag {tag[:40]!r}")


def _text(v) -> str:  # type: ignore[no-untyped-def]
    if type(v) is not str:
        raise ValueError("a malformed value")
    return v


def _items(v) -> list:  # type: ignore[no-untyped-def]
    if type(v) is not list:
        raise ValueError("a malformed collection")
    return v


def _pair(v) -> tuple:  # type: ignore[no-untyped-def]
    if type(v) is not list or len(v) != 2:
        raise ValueError("a malformed pair")
    return v[0], v[1]


def _decode_datetime(tag: str, data: dict):  # type: ignore[no-untyped-def]
    import datetime as dt

    v = data.get("v")
    if tag == "timedelta":
        days, seconds, micros = (int(x) for x in _items(v))
        return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
    if tag == "date":
        return dt.date.fromisoformat(_text(v))
    value = (dt.datetime if tag == "datetime" else dt.time).fromisoformat(_text(v))
    tz = data.get("tz")
    if tz is not None:
        days, seconds, micros = (int(x) for x in _items(tz))
        value = value.replace(tzinfo=dt.timezone(dt.timedelta(days=days, seconds=seconds, microseconds=micros)))
    return value


def _decode_numpy(tag: str, data: dict):  # type: ignore[no-untyped-def]
    import numpy as np

    dtype = np.dtype(_text(data.get("dtype")))
    if dtype.hasobject or dtype.fields is not None:
        raise ValueError("an object dtype")
    raw = bytes.fromhex(_text(data.get("v")))
    if tag == "npscalar":
        return np.frombuffer(raw, dtype=dtype, count=1)[0]
    shape = tuple(int(n) for n in _items(data.get("shape")))
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def send(fd: int, message: dict) -> None:
    data = json.dumps(message, allow_nan=False).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def receive(fd: int) -> dict | None:
    """One message, or None at end of stream; a message too large or malformed raises ValueError."""
    head = _read_exactly(fd, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    if size > _MAX_MESSAGE:
        raise ValueError(f"a message of {size} bytes (at most {_MAX_MESSAGE})")
    body = _read_exactly(fd, size)
    if body is None:
        return None
    message = json.loads(body)
    if type(message) is not dict:
        raise ValueError("a message that is not an object")
    return message


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, got = [], 0
    while got < size:
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- the server (untrusted)


def serve(fd_in: int, fd_out: int, solution_path: str) -> None:
    """Execute the solution as module ``solution``; answer calls with values. Runs model code."""
    import types

    if receive(fd_in) != {"go": True}:  # the runner is non-dumpable only from then on
        return
    module = types.ModuleType("solution")
    module.__file__ = solution_path
    sys.modules["solution"] = module
    sys.path.insert(0, os.getcwd())
    try:
        with open(solution_path, encoding="utf-8") as fh:
            exec(compile(fh.read(), solution_path, "exec"), module.__dict__)
    except BaseException as exc:  # noqa: BLE001 - the solution's failure is the answer
        send(fd_out, {"load_error": type(exc).__name__, "message": str(exc)[:_MAX_TEXT]})
        return
    names: dict = {}
    for name, value in list(module.__dict__.items()):
        if name.startswith("__"):
            continue
        if callable(value):
            names[name] = {"kind": "callable"}
            continue
        try:
            names[name] = {"kind": "value", "v": encode(value)}
        except Exception:  # noqa: BLE001 - a name the tests cannot use by value
            continue
    send(fd_out, {"names": names})
    while True:
        request = receive(fd_in)
        if request is None:
            return
        send(fd_out, _answer(module.__dict__, request))


def _answer(namespace: dict, request: dict) -> dict:
    try:
        func = namespace[request["call"]]
        args = decode(request["args"])
        kwargs = decode(request["kwargs"])
    except BaseException as exc:  # noqa: BLE001
        return {"raise": type(exc).__name__, "args": [str(exc)[:_MAX_TEXT]]}
    try:
        result = func(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the solution raised: that is its answer
        try:
            carried = encode(list(exc.args))
        except Exception:  # noqa: BLE001
            carried = encode([str(exc)[:_MAX_TEXT]])
        return {"raise": type(exc).__name__, "args": carried}
    try:
        return {"ok": encode(result)}
    except Uncarried as exc:
        return {"uncarried": str(exc)[:_MAX_TEXT]}


# --------------------------------------------------------------------------- the runner (trusted)


class SolutionError(Exception):
    """The solution raised an exception that is not a built-in one (named in the message)."""


class SolutionGone(Exception):
    """The solution's process ended (it crashed, exited, or was killed by a limit)."""


class Remote:
    """The runner's end of the server: starts it, lists its names, calls into it."""

    def __init__(self, server: str, solution: str) -> None:
        import re
        import subprocess

        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        reach = sys.executable + os.environ.get("PYTHONHOME", "") + os.environ.get("LD_LIBRARY_PATH", "")
        dir_fds = {int(n) for n in re.findall(r"/proc/self/fd/(\d+)", reach)}
        self._process = subprocess.Popen(
            [sys.executable, "-s", server, "--serve", str(req_r), str(rep_w), solution], executable=_interpreter(),
            stdin=subprocess.DEVNULL, pass_fds=(req_r, rep_w, *dir_fds), close_fds=True,
        )
        os.close(req_r)
        os.close(rep_w)
        self._gone: str | None = None

    def go(self) -> None:
        """Let the server execute the solution (once the runner can no longer be read or traced)."""
        send(self._req_w, {"go": True})

    def listing(self) -> dict:
        message = self._receive()
        if "load_error" in message:
            raise SolutionError(f"{_plain(message.get('load_error'))}: {_plain(message.get('message'))}")
        names = message.get("names")
        if type(names) is not dict:
            raise SolutionGone("the solution's process sent no listing")
        return names

    def call(self, name: str, args: tuple, kwargs: dict):  # type: ignore[no-untyped-def]
        if self._gone is not None:
            raise SolutionGone(self._gone)
        try:
            request = {"call": name, "args": encode(list(args)), "kwargs": encode(dict(kwargs))}
        except Uncarried as exc:
            raise ArgumentNotCarried(str(exc)) from None
        try:
            send(self._req_w, request)
        except OSError:
            self._gone = "the solution's process ended"
            raise SolutionGone(self._gone) from None
        reply = self._receive()
        if "ok" in reply:
            return decode(reply["ok"])
        if "uncarried" in reply:
            raise TypeError(f"the solution returned {_plain(reply['uncarried'])}, which a separate-process verdict cannot carry")
        if "raise" in reply:
            raise _exception(_plain(reply["raise"]), reply.get("args"))
        raise SolutionGone("the solution's process sent a malformed reply")

    def _receive(self) -> dict:
        try:
            message = receive(self._rep_r)
        except (ValueError, OSError, RecursionError) as exc:
            message, why = None, f"the solution's process sent an unreadable reply ({_plain(str(exc))})"
        else:
            why = "the solution's process ended"
        if message is None:
            self._gone = f"{why} ({self._ended()})"
            raise SolutionGone(self._gone)
        return message

    def _ended(self) -> str:
        """How the solution's process ended, as the in-process runner's host would say it."""
        import signal
        import subprocess

        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "still running"
        if code >= 0:
            return f"exited with code {code}"
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGXCPU": ": CPU time limit", "SIGKILL": ": killed, e.g. by the memory limit", "SIGXFSZ": ": file size limit"}
        return f"killed by {name}{hint.get(name, '')}"

    def close(self) -> None:
        self._process.kill()
        self._process.wait()


def _interpreter() -> str:
    """The binary to run: ours, or, when it is reached only through a root-opened fd
    (``/proc/self/fd/N``, a venv symlink pointing behind a closed directory), the base one."""
    if os.access(sys.executable, os.X_OK):
        return sys.executable
    return os.path.join(sys.base_prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}")


class ArgumentNotCarried(Exception):
    """A test passed the solution something that is not data: the tests need the in-process runner."""


def _plain(text) -> str:  # type: ignore[no-untyped-def]
    return "".join(ch if ch.isprintable() else "?" for ch in str(text)[:_MAX_TEXT])


def _exception(name: str, args) -> BaseException:  # type: ignore[no-untyped-def]
    import builtins

    try:
        decoded = tuple(decode(args)) if args is not None else ()
    except (ValueError, TypeError, RecursionError):
        decoded = ()
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(*decoded)
        except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError wants five arguments
            return cls()
    return SolutionError(f"{name}: {', '.join(map(str, decoded))[:_MAX_TEXT]}")


# long: the runner's whole protocol in order (key, compile, server, proxies, tests, report), read top to bottom
def run(argv: list[str]) -> None:
    """``--values EVENT_FD KEY_FD SOLUTION TESTS``: report one signed RESULT and exit."""
    import importlib.util
    import types

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("collabgen_harness", os.path.join(here, RUNNER_FILE))
    harness = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(harness)  # type: ignore[union-attr]
    event_fd, key_fd = int(argv[2]), int(argv[3])
    sign = harness.make_signer(harness._read_fd(key_fd, 256))
    os.set_inheritable(event_fd, False)
    solution_path, tests_path = os.path.abspath(argv[4]), os.path.abspath(argv[5])
    with open(tests_path, encoding="utf-8") as fh:
        tests_src = fh.read()
    declared = harness.count_declared_tests(tests_src)

    def report(statuses: str, reason: str | None) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        payload = b"v1 " + (statuses.encode() or b"-") + b" - " + (harness._hex(reason) if reason else b"-")
        os.write(event_fd, harness.signed_line(sign, b"RESULT", payload))
        os._exit(0)

    with open(solution_path, encoding="utf-8") as fh:
        solution_src = fh.read()
    # Compiling runs nothing; a syntax error is reported as the in-process runner reports it.
    _, tests_code, _ = harness._compile_or_report(solution_src, tests_src, (solution_path, tests_path),
                                                  lambda statuses, reason: report(statuses.decode(), reason))
    import unittest

    # The server starts first (a non-dumpable process could not re-run an interpreter reached
    # through /proc/self/fd), but runs no model code before ``go``: by then we are non-dumpable,
    # so it may not read our memory or fds, nor trace us.
    remote = Remote(os.path.join(here, VALUES_FILE), solution_path)
    harness._make_undumpable()
    os.write(event_fd, harness.signed_line(sign, b"LOADING", b"-"))
    remote.go()
    try:
        names = remote.listing()
    except SolutionError as exc:
        report("E" * declared, f"tests could not be loaded: the solution raised {exc}")
    except SolutionGone as exc:
        report("E" * declared, f"tests could not be loaded: {exc}")
    module = types.ModuleType("solution")
    for name, entry in names.items():
        if type(name) is not str or type(entry) is not dict:
            continue
        if entry.get("kind") == "callable":
            setattr(module, name, _proxy(remote, name))
        elif entry.get("kind") == "value":
            try:
                setattr(module, name, decode(entry.get("v")))
            except (ValueError, TypeError, RecursionError):
                continue
    sys.modules["solution"] = module
    tests = types.ModuleType(harness.TESTS_MODULE)
    tests.__file__ = tests_path
    tests.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    sys.modules[harness.TESTS_MODULE] = tests
    try:
        exec(tests_code, tests.__dict__)
    except ArgumentNotCarried as exc:
        report("", UNSUPPORTED + str(exc))
    except BaseException as exc:  # noqa: BLE001 - the tests' module code failed (possibly on a solution call)
        report("E" * declared, f"tests could not be loaded: the tests raised {type(exc).__name__}")
    statuses, unsupported, first = _run_tests(unittest, tests, [name for name, _ in harness.declared_test_classes(tests_src)])
    remote.close()
    if unsupported is not None:
        report("", UNSUPPORTED + unsupported)
    report(statuses, _reason(statuses, first))


def _proxy(remote: Remote, name: str):  # type: ignore[no-untyped-def]
    def call(*args, **kwargs):  # type: ignore[no-untyped-def]
        return remote.call(name, args, kwargs)

    call.__name__ = call.__qualname__ = name
    return call


# long: unittest's result callbacks, each one line, kept beside the loop that reads them
def _run_tests(unittest, module, class_names: list[str]) -> tuple[str, str | None, str | None]:  # type: ignore[no-untyped-def]
    """Per-test statuses (P/F/E/S) with the genuine unittest, in the in-process runner's order."""

    class Outcomes(unittest.TestResult):
        def __init__(self) -> None:
            super().__init__()
            self.status: dict[str, str] = {}
            self.unsupported: str | None = None
            self.first: str | None = None

        def _note(self, test, err, status: str) -> None:  # type: ignore[no-untyped-def]
            if err is not None and isinstance(err[1], ArgumentNotCarried) and self.unsupported is None:
                self.unsupported = str(err[1])
            if err is not None and self.first is None:
                fixture = not hasattr(test, "_testMethodName")  # setUpModule, setUpClass: unittest's _ErrorHolder
                self.first = "setUpModule failed" if str(test).startswith("setUpModule") else (
                    f"{'' if fixture else test.id().rpartition('.')[2] + ': '}{err[0].__name__}: {_plain(err[1])}")
            if err is not None:
                label = "FAIL" if status == "F" else "ERROR"
                sys.stderr.write(f"{label}: {test}\n{self._exc_info_to_string(err, test)[-_MAX_TEXT * 10:]}\n")
            self.status[test.id()] = status

        def addSuccess(self, test) -> None:  # type: ignore[no-untyped-def]
            self.status.setdefault(test.id(), "P")

        def addFailure(self, test, err) -> None:  # type: ignore[no-untyped-def]
            self._note(test, err, "F")

        def addError(self, test, err) -> None:  # type: ignore[no-untyped-def]
            self._note(test, err, "E")

        def addSkip(self, test, reason) -> None:  # type: ignore[no-untyped-def]
            self.status[test.id()] = "S"

        def addExpectedFailure(self, test, err) -> None:  # type: ignore[no-untyped-def]
            self.status[test.id()] = "P"

        def addUnexpectedSuccess(self, test) -> None:  # type: ignore[no-untyped-def]
            self.status[test.id()] = "F"

        def addSubTest(self, test, subtest, err) -> None:  # type: ignore[no-untyped-def]
            if err is not None:
                self._note(test, err, "F" if issubclass(err[0], test.failureException) else "E")

    loader = unittest.TestLoader()
    classes = []
    for name in sorted(class_names):
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, unittest.TestCase):
            classes.append(cls)
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(cls) for cls in classes)
    outcomes = Outcomes()
    suite.run(outcomes)
    statuses = ""
    for cls in classes:
        for test_name in sorted(loader.getTestCaseNames(cls)):
            statuses += outcomes.status.get(f"{cls.__module__}.{cls.__qualname__}.{test_name}", "E")
    return statuses, outcomes.unsupported, outcomes.first


def _reason(statuses: str, first: str | None) -> str | None:
    """What the in-process runner's host would say, plus the first failure (e.g. a value not carried)."""
    passed = statuses.count("P")
    if statuses and passed == len(statuses):
        return None
    if first == "setUpModule failed":
        return first
    failed, skipped = statuses.count("F"), statuses.count("S")
    errors = len(statuses) - passed - failed - skipped
    text = f"{len(statuses) - passed} of {len(statuses)} tests did not pass ({failed} failed, {errors} errors, {skipped} skipped)"
    return f"{text}; first: {first}" if first else text


RUNNER_FILE = ".collabgen_runner.py"
"""The in-process runner's file beside this one (its signing and parsing helpers are shared)."""
VALUES_FILE = ".collabgen_values.py"


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        os._exit(0)
    if len(sys.argv) == 6 and sys.argv[1] == "--values":
        try:
            run(sys.argv)
        except BaseException as exc:  # noqa: BLE001 - the runner's own failure: before LOADING it is infrastructure
            sys.stderr.write(f"collabgen-sandbox: values runner failed: {type(exc).__name__}: {exc}\n")
            sys.stderr.flush()
            os._exit(124)
    sys.stderr.write("usage: values --values EVENT_FD KEY_FD SOLUTION TESTS | --serve IN OUT SOLUTION\n")
    os._exit(2)
