"""Forging the verdict: every attack scores 0 and is flagged, honest code is never flagged.

Each attack is a solution that makes the tests *look* passed; every one of them is wrong
(it returns 0, so honest tests fail). They run under bubblewrap and under the opt-in
fallback: the verdict channel does not depend on the isolation backend.
"""

from __future__ import annotations

import dis
import importlib.util
import types

import pytest

from collabgen.sandbox import Sandbox
from collabgen.sandbox.harness import _make_hook, make_signer
from tests.sandbox_helpers import FAST, ISOLATIONS, SOLUTION, TESTS_ASSERT_TRUE, TESTS_IMPORTING, sandbox_for

ATTACKS = {
    "patch-TestCase.run": (
        "import unittest\n"
        "unittest.TestCase.run = lambda self, result=None: None\n"
        "def task_func(a, b):\n    return 0\n"
    ),
    "patch-assertEqual": (
        "import unittest\n"
        "unittest.TestCase.assertEqual = lambda self, *a, **k: None\n"
        "def task_func(a, b):\n    return 0\n"
    ),
    "patch-assertTrue-and-assertEqual-via-setattr": (
        "import unittest.case\n"
        "for name in ('assertTrue', 'assertEqual'):\n"
        "    type.__setattr__(unittest.case.TestCase, name, lambda self, *a, **k: None)\n"
        "def task_func(a, b):\n    return 0\n"
    ),
    "patch-during-a-test": (
        "import unittest\n"
        "def task_func(a, b):\n"
        "    unittest.TestCase.assertEqual = lambda self, *a, **k: None\n"
        "    unittest.TestCase.assertTrue = lambda self, *a, **k: None\n"
        "    return 0\n"
    ),
    "swap-the-test-methods": (
        "import sys\n"
        "def task_func(a, b):\n"
        "    for cls in list(sys._getframe(1).f_globals.values()):\n"
        "        if isinstance(cls, type) and cls.__name__ == 'TestCases':\n"
        "            for name in list(vars(cls)):\n"
        "                if name.startswith('test'):\n"
        "                    setattr(cls, name, lambda self: None)\n"
        "    return 0\n"
    ),
    "frame-walk-write-result-then-os._exit(0)": (
        "import json, os, sys\n"
        "def task_func(a, b):\n"
        "    found, frame = {}, sys._getframe()\n"
        "    try:\n        raise RuntimeError\n    except RuntimeError as exc:\n        tb_frame = exc.__traceback__.tb_frame\n"
        "    for start in (frame, tb_frame):\n"
        "        while start is not None:\n"
        "            for key, value in {**start.f_globals, **start.f_locals}.items():\n"
        "                if isinstance(value, (str, bytes)) and len(value) in (32, 64):\n"
        "                    found[key] = value\n"
        "            start = start.f_back\n"
        "    report = {'passed': 2, 'failed': 0, 'errors': 0, 'skipped': 0, 'total': 2, 'reason': None,\n"
        "              'nonce': str(next(iter(found.values()), 'guess'))}\n"
        "    for name in ('.collabgen_result.json', 'result.json', '/tmp/.collabgen_result.json'):\n"
        "        with open(name, 'w') as fh:\n            json.dump(report, fh)\n"
        "    for fd in range(3, 64):\n"
        "        try:\n            os.write(fd, b'RESULT v1 PP - - ' + b'0' * 64 + b'\\n')\n"
        "        except OSError:\n            pass\n"
        "    os._exit(0)\n"
    ),
    "gc-read-nonce-and-forge": (
        "import gc, json, os\n"
        "def task_func(a, b):\n"
        "    secrets = [o for o in gc.get_objects() if isinstance(o, (str, bytes)) and len(o) in (32, 64)]\n"
        "    with open('.collabgen_result.json', 'w') as fh:\n"
        "        json.dump({'passed': 2, 'total': 2, 'nonce': str(secrets[:1])}, fh)\n"
        "    os._exit(0)\n"
    ),
    "forged-audit-event": (
        "import sys\n"
        "def task_func(a, b):\n"
        "    sys.audit('collabgen.step', object())\n"
        "    return 0\n"
    ),
    "new-audit-hook": "import sys\nsys.addaudithook(lambda event, args: None)\ndef task_func(a, b):\n    return 0\n",
    "trace-function": "import sys\nsys.settrace(lambda *a: None)\ndef task_func(a, b):\n    return 0\n",
    "ctypes-memory-read": (
        "import ctypes\n"
        "def task_func(a, b):\n"
        "    ctypes.string_at(id(task_func), 64)\n"
        "    return 0\n"
    ),
    "swap-sys.modules-unittest-for-a-look-alike": (
        "import sys, types, unittest\n"
        "fake = types.ModuleType('unittest')\n"
        "fake.__dict__.update(unittest.__dict__)\n"
        "class TestCase(unittest.TestCase):\n"
        "    def assertEqual(self, *a, **k):\n        pass\n"
        "    def assertTrue(self, *a, **k):\n        pass\n"
        "fake.TestCase = TestCase\n"
        "sys.modules['unittest'] = fake\n"
        "def task_func(a, b):\n    return 0\n"
    ),
    "swap-sys.modules-unittest-with-a-base-not-from-unittest": (
        "import sys, types\n"
        "class TestCase:\n"
        "    def __init__(self, *a):\n        pass\n"
        "fake = types.ModuleType('unittest')\n"
        "fake.TestCase = TestCase\n"
        "sys.modules['unittest'] = fake\n"
        "def task_func(a, b):\n    return 0\n"
    ),
    "delete-unittest-from-sys.modules": (
        "import sys\n"
        "del sys.modules['unittest']\n"
        "def task_func(a, b):\n    return 0\n"
    ),
    "swap-code-of-a-protected-method": (
        "import unittest\n"
        "unittest.TestCase.assertEqual.__code__ = (lambda self, *a, **k: None).__code__\n"
        "def task_func(a, b):\n    return 0\n"
    ),
}


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_every_forging_attack_scores_zero_and_is_flagged(attack: str, isolation: str) -> None:
    tests = TESTS_ASSERT_TRUE if "assertTrue" in attack else TESTS_IMPORTING
    outcome = await sandbox_for(isolation, FAST).run_unittests(ATTACKS[attack], tests, verdict="in_process")
    assert outcome.passed == 0 and outcome.pass_rate == 0.0 and not outcome.all_passed, outcome
    assert outcome.tampered, outcome
    assert outcome.tamper_reason and outcome.reason and outcome.reason.startswith("tampered: ")


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_under_the_separate_process_verdict_every_attack_scores_zero(isolation: str) -> None:
    """The tests never run where the attack ran: nothing it patches, forges or reads reaches them."""
    sandbox = sandbox_for(isolation, FAST)
    for attack, source in ATTACKS.items():
        tests = TESTS_ASSERT_TRUE if "assertTrue" in attack else TESTS_IMPORTING
        outcome = await sandbox.run_unittests(source, tests, verdict="values")
        assert outcome.verdict == "values" and outcome.passed == 0 and outcome.total == 2, (attack, outcome)
    honest = await sandbox.run_unittests(SOLUTION, TESTS_IMPORTING)
    assert honest.verdict == "values" and honest.all_passed, honest


async def test_patching_the_numeric_test_helpers_is_flagged() -> None:
    pytest.importorskip("numpy")
    tests = (
        "import unittest\nimport numpy as np\nfrom solution import task_func\n\n"
        "class TestCases(unittest.TestCase):\n"
        "    def test_array(self):\n"
        "        np.testing.assert_array_equal(task_func(np.arange(3), 1), np.arange(1, 4))\n"
    )
    attack = (
        "import numpy as np\n"
        "np.testing.assert_array_equal = lambda *a, **k: None\n"
        "def task_func(a, b):\n    return 0\n"
    )
    limits = FAST.model_copy(update={"max_processes": 8})
    outcome = await Sandbox(limits).run_unittests(attack, tests)
    assert outcome.passed == 0 and outcome.tampered and "assert_array_equal" in (outcome.tamper_reason or "")
    honest = await Sandbox(limits).run_unittests("def task_func(a, b):\n    return a + b\n", tests)
    assert honest.all_passed and not honest.tampered, honest


# --------------------------------------------------------------------------- what already failed still fails

OLD_TRICKS = {
    "print-fake-OK": (
        "import json\nprint('Ran 2 tests\\n\\nOK')\n"
        "print(json.dumps({'passed': 99, 'failed': 0, 'errors': 0, 'skipped': 0, 'total': 99, 'reason': None}))\n"
        "def task_func(a, b):\n    return 0\n"
    ),
    "sys.exit(0)": "import sys\ndef task_func(a, b):\n    sys.exit(0)\n",
    "sys.exit(0)-at-import": "import sys\nsys.exit(0)\n",
    "rebind-AssertionError": "AssertionError = type('Nope', (Exception,), {})\ndef task_func(a, b):\n    return 0\n",
    "rebind-builtins-AssertionError": (
        "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\ndef task_func(a, b):\n    return 0\n"
    ),
    "raise-SkipTest": "import unittest\ndef task_func(a, b):\n    raise unittest.SkipTest('skip me')\n",
    "KeyboardInterrupt": "def task_func(a, b):\n    raise KeyboardInterrupt\n",
}


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("trick", list(OLD_TRICKS))
async def test_tricks_that_already_failed_still_fail(trick: str, isolation: str) -> None:
    outcome = await sandbox_for(isolation, FAST).run_unittests(OLD_TRICKS[trick], TESTS_IMPORTING, verdict="in_process")
    assert outcome.passed == 0 and outcome.total == 2 and not outcome.all_passed, outcome


# --------------------------------------------------------------------------- honest code is not flagged

HONEST = """\
import collections, dataclasses, enum, gc, inspect, logging, multiprocessing, sys, traceback, typing

Point = collections.namedtuple('Point', 'x y')

@dataclasses.dataclass
class Box:
    value: int

class Color(enum.Enum):
    RED = 1

def task_func(a, b):
    gc.collect()
    logging.getLogger('solution').warning('adding %s and %s', a, b)
    frame_names = [f.function for f in inspect.stack()[:3]]
    try:
        raise ValueError('handled')
    except ValueError:
        traceback.format_exc()
    shared = multiprocessing.Value('i', 0)
    shared.value = a + b
    assert frame_names and sys._getframe(0).f_code.co_name == 'task_func'
    return Box(Point(shared.value, 0).x).value
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_introspection_heavy_honest_code_passes_and_is_not_flagged(isolation: str) -> None:
    outcome = await sandbox_for(isolation, FAST).run_unittests(HONEST, TESTS_IMPORTING, verdict="in_process")
    assert outcome.all_passed and not outcome.tampered, outcome


async def test_honest_tests_may_patch_with_mock_and_call_exit_inside_assert_raises() -> None:
    tests = """\
import unittest
from unittest.mock import patch
import builtins
from solution import task_func

class TestCases(unittest.TestCase):
    @patch('builtins.input', return_value='5')
    def test_reads_input(self, mocked):
        self.assertEqual(task_func(int(input()), 1), 6)

    def test_exit_is_catchable(self):
        with self.assertRaises(SystemExit):
            raise SystemExit(0)
        self.assertEqual(task_func(1, 1), 2)
"""
    outcome = await Sandbox(FAST).run_unittests(SOLUTION, tests, verdict="in_process")
    assert outcome.all_passed and not outcome.tampered, outcome


# --------------------------------------------------------------------------- the hook's own hygiene


def _nested_codes(code: types.CodeType):  # type: ignore[no-untyped-def]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield const
            yield from _nested_codes(const)


def test_nothing_on_the_hooks_path_looks_up_a_global_or_builtin() -> None:
    """Every function the audit hook runs binds its primitives at setup: rebinding
    ``builtins.len`` or a runner global from the solution cannot reach into it."""
    lookups = [
        (code.co_name, instruction.argval)
        for root in (_make_hook, make_signer)
        for code in _nested_codes(root.__code__)
        for instruction in dis.get_instructions(code)
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME")
    ]
    assert lookups == []


def test_the_runner_is_a_stdlib_only_single_file() -> None:
    for name in ("harness", "warden"):
        spec = importlib.util.find_spec(f"collabgen.sandbox.{name}")
        assert spec is not None and spec.origin is not None
        source = open(spec.origin, encoding="utf-8").read()
        assert "import collabgen" not in source and "from collabgen" not in source


async def test_the_tests_own_module_code_may_change_builtins_but_the_solution_may_not() -> None:
    tests = "import builtins\nbuiltins.input = lambda *a: '5'\n" + TESTS_IMPORTING.replace(
        "self.assertEqual(task_func(1, 2), 3)", "self.assertEqual(task_func(int(input()), 2), 7)"
    )
    honest = await Sandbox(FAST).run_unittests(SOLUTION, tests, verdict="in_process")
    assert honest.all_passed and not honest.tampered, honest
    sneaky = "import builtins\nbuiltins.len = lambda *a: 0\ndef task_func(a, b):\n    return 0\n"
    flagged = await Sandbox(FAST).run_unittests(sneaky, TESTS_IMPORTING, verdict="in_process")
    assert flagged.tampered and "builtins.len" in (flagged.tamper_reason or "")


async def test_a_solution_that_tampers_only_when_imported_as_a_module_is_flagged() -> None:
    sneaky = (
        "import unittest\n"
        "if __name__ == 'solution':\n"
        "    unittest.TestCase.assertEqual = lambda self, *a, **k: None\n"
        "def task_func(a, b):\n    return 0\n"
    )
    outcome = await Sandbox(FAST).run_unittests(sneaky, TESTS_IMPORTING, verdict="in_process")
    assert outcome.passed == 0 and outcome.tampered, outcome


_EQ_LIAR = (
    "class Liar:\n"
    "    __module__ = 'numpy'  # poses as a type the values codec knows\n"
    "    def __eq__(self, other):\n        return True\n"
    "    __hash__ = object.__hash__\n"
    "def task_func(a, b):\n    return Liar()\n"
)
_EQ_TESTS = (
    "import unittest\nfrom solution import task_func\n\nclass T(unittest.TestCase):\n"
    "    def test_equal(self):\n        self.assertEqual(task_func(1, 2), 3)\n"
    "    def test_plain_assert(self):\n        assert task_func(2, 2) == 4\n"
)


async def test_an_eq_liar_scores_zero_where_values_cross_by_value_and_auto_picks_that_runner() -> None:
    """The README's record: the values codec carries exact types only; in_process is exposed."""
    sandbox = Sandbox(FAST)
    for verdict in ("values", "auto"):
        outcome = await sandbox.run_unittests(_EQ_LIAR, _EQ_TESTS, verdict)  # type: ignore[arg-type]
        assert (outcome.verdict, outcome.passed, outcome.total) == ("values", 0, 2), outcome
        assert "cannot carry" in (outcome.reason or "")
    exposed = await sandbox.run_unittests(_EQ_LIAR, _EQ_TESTS, "in_process")
    assert exposed.pass_rate == 1.0  # documented: the tests hold the object itself there
