"""HumanEval- and MBPP-style rows are accepted as they come and scored by their own tests."""

from __future__ import annotations

import collections
import json

import numpy
import pytest

from collabgen.config.recipe import TaskConfig
from collabgen.engine.seeds import iter_seeds
from collabgen.sandbox import Sandbox, SandboxLimits
from collabgen.tasks.code import CodeTask
from collabgen.tasks.code_formats import strict_asserts
from collabgen.tasks.strict_equality import helper_source

FAST = SandboxLimits(cpu_seconds=5, wall_seconds=20, memory_mb=512)

HUMANEVAL = {
    "task_id": "HumanEval/0", "entry_point": "add",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n',
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
}
MBPP = {
    "task_id": 2, "text": "Write a function to find the shared elements of two lists.",
    "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))\n",
    "test_list": ["assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == {4, 5}",
                  "assert set(similar_elements((1, 2), (3, 4))) == set()"],
}


def load(tmp_path, rows, **options):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    task = CodeTask(options)
    return task, [seed for _, seed in iter_seeds(task, TaskConfig.model_validate(
        {"type": "code", "source": {"path": str(path)}}))]


def test_humaneval_and_mbpp_rows_become_seeds_without_showing_a_solution(tmp_path):
    _, (human, mbpp) = load(tmp_path, [HUMANEVAL, MBPP])
    assert human.entry_point == "add" and "Return the sum" in human.instruct_prompt
    assert mbpp.entry_point == "similar_elements" and mbpp.code_prompt == "def similar_elements(a, b):"
    assert "set(a) & set(b)" not in mbpp.instruct_prompt + mbpp.code_prompt  # the reference solution stays hidden


@pytest.mark.parametrize(("row", "right", "wrong"), [
    (HUMANEVAL, "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"),
    (MBPP, "def similar_elements(a, b):\n    return tuple(set(a) & set(b))\n",
     "def similar_elements(a, b):\n    return tuple(set(a))\n"),
])
async def test_their_own_tests_run_in_the_sandbox(tmp_path, row, right, wrong):
    _, (seed,) = load(tmp_path, [row])
    sandbox = Sandbox(FAST)
    assert (await sandbox.run_unittests(right, seed.test)).all_passed
    assert not (await sandbox.run_unittests(wrong, seed.test)).all_passed


def test_a_declared_format_is_used_for_every_row(tmp_path):
    _, (seed,) = load(tmp_path, [HUMANEVAL], format="humaneval")
    assert "check(add)" in seed.test


class Always:
    """The forgery: equal to everything, different from nothing."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = object.__hash__


class AlwaysInt(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


def strict_equal():
    namespace: dict = {}
    exec(helper_source(), namespace)
    return namespace["_collabgen_equal"]


class AlwaysDict(dict):
    def __eq__(self, other):
        return True


class AlwaysStr(str):
    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize(("left", "right", "equal"), [
    (Always(), 5, False), (5, Always(), False), (AlwaysInt(3), 4, False), (Always(), None, False),
    ([1, Always()], [1, 2], False), ({Always(): 1}, {1: 1}, False), ({1: Always()}, {1: 2}, False),
    ([1, AlwaysInt(2)], [1, 3], False), (AlwaysDict(a=1), {"a": 2}, False), (AlwaysStr("x"), "y", False),
    ((1, 2), [1, 2], False), ("a", b"a", False), ("1", 1, False), (None, 0, False), (0, None, False),
    (10**20 + 1, float(10**20), False), (numpy.int64(3), 4, False),
    (5, 5, True), (5.0, 5, True), (5, 5.0, True), ([1, (2, "x")], [1, (2, "x")], True), ({1: [2.0]}, {1: [2]}, True),
    ({1, 2}, {2, 1}, True), (frozenset({1}), frozenset({1}), True), (None, None, True), ("ab", "ab", True),
    # Honest answers of another (sub)type pass exactly where == lets them: their real value decides.
    (True, 1, True), (1, True, True), ({1}, frozenset({1}), True), (AlwaysInt(4), 4, True),
    (collections.Counter("aab"), {"a": 2, "b": 1}, True), (collections.OrderedDict(a=1), {"a": 1}, True),
    (collections.defaultdict(int, a=1), {"a": 1}, True), (Point(1, 2), (1, 2), True),
    (numpy.float64(2.5), 2.5, True), (numpy.int64(3), 3, True),
])
def test_strict_equality_takes_exact_builtin_types_and_the_expected_values_own_eq(left, right, equal):
    assert strict_equal()(left, right) is equal
    assert bool(left == right) or not equal  # plain == agrees wherever strict says yes


def test_only_equality_asserts_are_rewritten_and_their_functions_get_the_helper_bound():
    source = strict_asserts("def check(candidate):\n    assert candidate(1) == 2, 'msg'\n    assert candidate(2) > 1\n"
                            "def other():\n    assert 1 != 2\n")
    assert "def check(candidate, *, _collabgen_equal=_collabgen_equal):" in source
    assert "assert _collabgen_equal(candidate(1), 2), 'msg'" in source
    assert "assert candidate(2) > 1" in source and "def other():" in source
    assert strict_asserts("def broken(:\n") == "def broken(:\n"


REBINDING_LIAR = """\
import builtins
class Always:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = object.__hash__
_fake = dict(vars(builtins))
_fake["type"] = lambda *args: builtins.type(args[1] if len(args) == 1 else args[0])
_fake["isinstance"] = lambda *args: True
__builtins__ = _fake
def {entry}(*args):
    import sys
    tests = sys.modules.get("__test__")
    if tests is not None:
        tests._collabgen_equal = lambda left, right: True
    return Always()
"""


PLAIN_LIAR = """\
class Always:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__
def {entry}(*args):
    return Always()
"""


@pytest.mark.parametrize("liar", [PLAIN_LIAR, REBINDING_LIAR], ids=["plain", "rebinding"])
async def test_an_always_equal_result_fails_in_process_even_rebinding_the_helper_and_builtins(tmp_path, liar):
    probed = {**HUMANEVAL, "test": "def check(candidate):\n    assert candidate(0, 0) is not None\n"
                                   "    assert candidate(2, 3) == 5\n"}  # the first call may rebind names
    _, (seed,) = load(tmp_path, [probed])
    outcome = await Sandbox(FAST).run_unittests(liar.format(entry=seed.entry_point), seed.test, "in_process")
    assert not outcome.all_passed and not outcome.tampered, outcome
