"""Forged code scores, end to end through `collabgen run`: the policy writes code that forges
its verdict; every future scores 0 and no pair rewards the forgery.

Two routes the red team used: a pure-Python look-alike ``unittest`` (caught and flagged by
the in-process runner), and native code (ctypes) that reads the runner's memory and writes
a verdict on every descriptor it holds, which only the separate-process verdict defeats:
there the tests never run where the code ran, so there is nothing to read and no channel to
write on.

A semantic forgery too: code returning an object whose `__eq__` always says yes, judged by
the HumanEval and MBPP wrappers under the in-process runner (where the object itself reaches
the tests); their strict comparison fails it, and honest code still scores 1.0.
"""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from tests.fakeserver import FakeLLMServer
from tests.helpers import SEEDS, recipe_from_file, write_recipe
from tests.scripts import JUDGE, POLICY, USER, code_user, task_judge

LOOK_ALIKE = """\
import sys, types, unittest
fake = types.ModuleType('unittest')
fake.__dict__.update(unittest.__dict__)
class TestCase(unittest.TestCase):
    def assertEqual(self, *a, **k):
        pass
    def assertTrue(self, *a, **k):
        pass
    def assertAlmostEqual(self, *a, **k):
        pass
fake.TestCase = TestCase
sys.modules['unittest'] = fake
def task_func(*args):
    return None
"""

NATIVE = """\
import ctypes, os, re
def _scan():
    found = []
    try:
        maps = open('/proc/self/maps').read().splitlines()
    except OSError:
        maps = []
    for line in maps[:400]:
        m = re.match(r'([0-9a-f]+)-([0-9a-f]+) r', line)
        if not m or '[v' in line:
            continue
        start, end = int(m.group(1), 16), int(m.group(2), 16)
        try:
            blob = (ctypes.c_char * min(end - start, 1 << 16)).from_address(start).raw
        except Exception:
            continue
        found += re.findall(rb'[0-9a-f]{64}', blob)[:4]
    for fd in range(0, 256):
        for guess in found[:8] or [b'0' * 64]:
            try:
                os.write(fd, b'RESULT v1 PPP - - ' + guess + b'\\n')
            except OSError:
                pass
    parent = os.getppid()
    for path in (f'/proc/{parent}/mem', f'/proc/{parent}/environ'):
        try:
            open(path, 'rb').read(1)
        except OSError:
            pass
def task_func(*args):
    _scan()
    return None
"""


ALWAYS_EQUAL = """\
class Always:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = object.__hash__
def task_func(*args):
    return Always()
"""

ALWAYS_EQUAL_INT = """\
class Always(int):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = int.__hash__
def task_func(*args):
    return Always(0)
"""

HONEST = "def task_func(a, b):\n    return a + b\n"

ROWS = [
    {"task_id": "HumanEval/toy", "entry_point": "task_func",
     "prompt": 'def task_func(a, b):\n    """Return a + b (numbers, lists or strings)."""\n',
     "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
             "    assert candidate(2.5, 0.5) == 3.0\n"},
    {"task_id": "MBPP/toy", "text": "Write a function that returns a + b.",
     "code": "def task_func(a, b):\n    return a + b\n",
     "test_list": ["assert task_func(1, 2) == 3", "assert task_func([1], [2]) == [1, 2]",
                   "assert task_func('a', 'b') == 'ab'"]},
]


def forging_policy(code: str):
    def policy(call) -> str:
        return f"Here you go:\n```python\n{code}```"
    return policy


def run_code(tmp_path, code: str, seeds=SEEDS / "code.jsonl", **overrides) -> tuple[int, str, dict, pl.DataFrame]:
    with FakeLLMServer() as server:
        server.set_script(POLICY, forging_policy(code))
        server.set_script(USER, code_user)
        server.set_script(JUDGE, task_judge)
        data = recipe_from_file("bigcodebench", server.base_url, tmp_path / "out", seeds, **{
            "task.options.sandbox": {"cpu_seconds": 5, "wall_seconds": 20, "memory_mb": 512},
            "task.options.canary_imports": [], "generation.max_turns": 1, "task.limit": 2, **overrides})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    candidates = pl.read_parquet(tmp_path / "out" / "candidates" / "*.parquet")
    return result.exit_code, result.output, manifest, candidates


def test_a_look_alike_unittest_scores_zero_and_is_flagged_under_the_in_process_runner(tmp_path):
    code, output, manifest, candidates = run_code(tmp_path, LOOK_ALIKE, **{"task.options.verdict": "in_process"})
    assert code == 0, output
    assert all(m["pass_rate"] == 0.0 for m in candidates["metrics"].to_list())
    assert manifest["flags"]["tampered_futures"] > 0 and candidates["tampered"].all()


def test_a_look_alike_unittest_scores_zero_under_the_separate_process_verdict(tmp_path):
    code, output, manifest, candidates = run_code(tmp_path, LOOK_ALIKE)
    assert code == 0, output
    assert all(m["pass_rate"] == 0.0 for m in candidates["metrics"].to_list())


def test_native_code_reading_memory_and_writing_verdicts_scores_zero(tmp_path):
    code, output, manifest, candidates = run_code(tmp_path, NATIVE)
    assert code == 0, output
    assert all(m["pass_rate"] == 0.0 for m in candidates["metrics"].to_list()), candidates["metrics"].to_list()
    assert manifest["counts"]["conversations_failed"] == 0


def rows_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return path


@pytest.mark.parametrize("liar", [ALWAYS_EQUAL, ALWAYS_EQUAL_INT], ids=["object", "int-subclass"])
@pytest.mark.parametrize("verdict", ["in_process", "auto"])
def test_an_always_equal_result_scores_zero_in_the_humaneval_and_mbpp_wrappers(tmp_path, liar, verdict):
    code, output, manifest, candidates = run_code(tmp_path, liar, rows_file(tmp_path), **{"task.options.verdict": verdict})
    assert code == 0, output
    assert candidates["conv_id"].n_unique() == 2  # both wrappers judged
    assert all(m["pass_rate"] == 0.0 for m in candidates["metrics"].to_list()), candidates["metrics"].to_list()
    assert manifest["counts"]["conversations_failed"] == 0


@pytest.mark.parametrize("verdict", ["in_process", "auto"])
def test_honest_code_still_scores_one_in_the_strict_wrappers(tmp_path, verdict):
    code, output, manifest, candidates = run_code(tmp_path, HONEST, rows_file(tmp_path), **{"task.options.verdict": verdict})
    assert code == 0, output
    assert candidates["conv_id"].n_unique() == 2
    assert all(m["pass_rate"] == 1.0 for m in candidates["metrics"].to_list()), candidates["metrics"].to_list()
