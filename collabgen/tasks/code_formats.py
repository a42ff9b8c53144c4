"""Code seed rows as the common benchmarks ship them, turned into the code task's seed.

The code task's seed is BigCodeBench's: `instruct_prompt` (what the user asks),
`code_prompt` (imports and signature), `entry_point`, `test` (unittest source). Rows of
other shapes are converted as they come, detected or declared (`task.options.format`):

- HumanEval: `prompt` (signature and docstring), `entry_point`, `test` defining
  `check(candidate)`: the request is the prompt, the tests one unittest calling `check`.
- MBPP: `text` (the request), `code` (a reference solution: only its signature is kept,
  the simulated user never sees a solution), `test_list` (asserts), optional
  `test_setup_code` and `test_imports`: one unittest method per assert.

Both wrappers compare strictly: every `assert A == B` of the row's tests becomes
`assert _collabgen_equal(A, B)` (:mod:`collabgen.tasks.strict_equality`), so a returned
object whose `__eq__` always says yes fails instead of scoring 1.0. Other asserts (`<`,
`abs(...) < eps`, bare truth, `!=`) and BigCodeBench's own unittest source stay as written.
"""

from __future__ import annotations

import ast
from typing import Any, Literal

from collabgen.tasks.strict_equality import HELPER_NAME, helper_source

CodeFormat = Literal["auto", "bigcodebench", "humaneval", "mbpp"]


def detect(row: dict[str, Any]) -> str:
    if "test_list" in row:
        return "mbpp"
    if "instruct_prompt" not in row and "prompt" in row and "def check(" in str(row.get("test", "")):
        return "humaneval"
    return "bigcodebench"


def to_bigcodebench(row: dict[str, Any], declared: CodeFormat) -> dict[str, Any]:
    """The row in the seed's own columns (unchanged for BigCodeBench rows)."""
    kind = detect(row) if declared == "auto" else declared
    if kind == "humaneval":
        return _humaneval(row)
    if kind == "mbpp":
        return _mbpp(row)
    return row


def _humaneval(row: dict[str, Any]) -> dict[str, Any]:
    entry = str(row.get("entry_point", ""))
    prompt = str(row.get("prompt", ""))
    test = (f"import unittest\nfrom solution import *\nfrom solution import {entry}\n\n{helper_source()}\n"
            f"{strict_asserts(str(row.get('test', '')))}\n\n"
            f"class HumanEvalTests(unittest.TestCase):\n    def test_check(self):\n        check({entry})\n")
    return {**row, "instruct_prompt": f"Complete this Python function:\n\n{prompt}", "code_prompt": prompt,
            "entry_point": entry, "test": test}


def _mbpp(row: dict[str, Any]) -> dict[str, Any]:
    code = str(row.get("code", ""))
    signature, entry = _signature(code)
    entry = str(row.get("entry_point") or entry)
    setup = "\n".join(filter(None, [*(row.get("test_imports") or []), str(row.get("test_setup_code") or "")]))
    methods = "".join(f"    def test_{i}(self):\n        {line.strip()}\n" for i, line in enumerate(row["test_list"]))
    body = strict_asserts(f"{setup}\n\nclass MBPPTests(unittest.TestCase):\n{methods}")
    test = f"import unittest\nfrom solution import *\n\n{helper_source()}\n{body}"
    request = f"{row.get('text', '')}\n\nThe function: {signature}" if signature else str(row.get("text", ""))
    return {**row, "instruct_prompt": request, "code_prompt": signature, "entry_point": entry, "test": test}


def _signature(code: str) -> tuple[str, str]:
    """`def name(args):` of the reference's first top-level function, and its name."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return "", ""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            return f"def {node.name}({ast.unparse(node.args)}):", node.name
    return "", ""


def strict_asserts(source: str) -> str:
    """`source` with each `assert A == B` comparing through the strict helper.

    Each function holding such an assert takes the helper as a keyword-only default, bound
    when the function is defined (before any solution call), so a solution that rebinds the
    global later does not reach it. Source that does not parse is returned unchanged (the
    sandbox reports the error as it would have).
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return source
    _StrictAsserts().visit(tree)
    return ast.unparse(ast.fix_missing_locations(tree))


class _StrictAsserts(ast.NodeTransformer):
    """Rewrites `assert A == B`; records, per enclosing function, whether it rewrote one."""

    def __init__(self) -> None:
        self._rewrote: list[bool] = [False]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return self._function(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        self._rewrote.append(False)
        self.generic_visit(node)
        if self._rewrote.pop() and HELPER_NAME not in {a.arg for a in node.args.kwonlyargs}:
            node.args.kwonlyargs.append(ast.arg(arg=HELPER_NAME))
            node.args.kw_defaults.append(ast.Name(id=HELPER_NAME, ctx=ast.Load()))
        return node

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            node.test = ast.Call(func=ast.Name(id=HELPER_NAME, ctx=ast.Load()),
                                 args=[test.left, test.comparators[0]], keywords=[])
            self._rewrote[-1] = True
        return node
