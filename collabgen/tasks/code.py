"""BigCodeBench-Chat: the simulated user wants a Python function whose spec it knows.

The simulator sees the instruction and the signature only, as a real user would; the
tests stay with the metric (the reference's simulator never sees them either).

Seed columns: `instruct_prompt` (the spec), `code_prompt` (imports and signature),
`entry_point` (the function's name), `test` (unittest source; it may
`from solution import ...` or use the solution's names directly).
Metric: `pass_rate`, 0..1: the final code is the last ```python block of the last
assistant message that defines the entry point (no model call), else the judge extracts
it (`tasks/code_extract`); the tests run in the sandbox. `pass_mode: all` (default, as in
BigCodeBench) scores 1.0 only when every test passes, `fraction` the share that pass.
Code that hangs, crashes, fails or tampers with its tests scores 0. A sandbox that could not
run the tests at all is no score: its error (`SandboxInfrastructureError`, or
`SandboxUnavailable` without isolation) propagates, so the engine fails that future with
the reason instead of recording a 0 nobody would notice.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import re
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from collabgen.models.base import Message
from collabgen.sandbox import LazySandbox, Sandbox, SandboxLimits, count_declared_tests
from collabgen.tasks.base import (
    ScoringTools,
    SeedModel,
    Task,
    TaskOptions,
    assistant_messages,
    transcript,
)
from collabgen.tasks.code_formats import CodeFormat, to_bigcodebench
from collabgen.tasks.drift import writes_code

log = logging.getLogger("collabgen")

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


class CodeSeed(SeedModel):
    instruct_prompt: str
    code_prompt: str
    entry_point: str
    test: str

    @field_validator("entry_point")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError(f"{value!r} is not a Python function name")
        return value

    @field_validator("test")
    @classmethod
    def _has_tests(cls, value: str) -> str:
        if count_declared_tests(value) == 0:
            raise ValueError("no unittest test methods found (expected a TestCase with test_* methods)")
        return value


class CodeOptions(TaskOptions):
    pass_mode: Literal["all", "fraction"] = "all"
    sandbox: SandboxLimits | None = None
    """Limits of each test run (``allow_unisolated: true`` accepts running without bubblewrap);
    unset uses the run's default sandbox."""
    parallel_tests: int | None = Field(default=None, ge=1)
    """Sandboxed test runs at once (default: the CPU count)."""
    prepend_imports: bool = True
    """Put `code_prompt`'s import lines the solution lacks in front of it."""
    format: CodeFormat = "auto"
    """The rows' shape: bigcodebench, humaneval (`prompt`, `test` with `check`), mbpp
    (`text`, `code`, `test_list`), or auto-detected per row."""
    verdict: Literal["auto", "values", "in_process"] = "auto"
    """Which test runner judges (see the README's sandbox section): ``values`` runs the tests in
    a process the code never touches and calls it by value (unforgeable; data in and out only),
    ``in_process`` shares one namespace as BigCodeBench needs (mocks, returned objects), ``auto``
    picks ``values`` for tests that allow it."""
    canary_imports: list[str] = []
    """Modules the tests need (e.g. numpy, pandas for BigCodeBench): the canary imports them
    under the run's limits before the first call, so limits too tight for them stop the run."""


class CodeTask(Task[CodeSeed, CodeOptions]):
    name: ClassVar[str] = "code"
    metrics: ClassVar[tuple[str, ...]] = ("pass_rate",)
    user_template: ClassVar[str] = "tasks/code_user"
    description: ClassVar[str] = "BigCodeBench-Chat: writing a Python function with a user who knows what it needs."
    default_hub: ClassVar[str | None] = "bigcode/bigcodebench"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._own_sandbox = LazySandbox(self.options.sandbox) if self.options.sandbox is not None else None
        self._gate: asyncio.Semaphore | None = None

    def templates(self) -> list[str]:
        return [self.user_template, "tasks/code_extract"]

    def seed_from_row(self, row: dict[str, Any], fields: dict[str, str], where: str) -> CodeSeed:
        """HumanEval and MBPP rows are accepted as they come (see `code_formats`)."""
        renamed = {field: row[column] for field, column in fields.items() if column in row}
        return super().seed_from_row(to_bigcodebench({**row, **renamed}, self.options.format), {}, where)

    def sandboxes(self, default: Callable[[], Sandbox]) -> list[tuple[Sandbox, tuple[str, ...]]]:
        own = self._own_sandbox() if self._own_sandbox is not None else default()
        return [(own, tuple(self.options.canary_imports))]

    def opening_paste_chars(self, seed: CodeSeed) -> int:
        """The brief has the user pass the signature on word for word (as the reference's user
        opens with the instruction that holds it), in a fenced block: the cap must fit it."""
        return len(seed.code_prompt) + len("```python\n\n```")

    def user_drift(self, seed: CodeSeed, message: str) -> str | None:
        return writes_code(message, seed.code_prompt)

    async def score(self, seed: CodeSeed, conversation: list[Message], tools: ScoringTools) -> dict[str, float]:
        code = fenced_solution(conversation, seed.entry_point)
        if code is None:
            code = await tools.judge_json(
                "tasks/code_extract", stage="extraction", validate=_code_field,
                conversation=transcript(conversation), entry_point=seed.entry_point, code_prompt=seed.code_prompt,
            )
        if not code.strip():
            return {"pass_rate": 0.0}
        if self.options.prepend_imports:
            code = with_imports(code, seed.code_prompt)
        async with self._parallel():
            outcome = await self._sandbox_for(tools).run_unittests(code, seed.test, self.options.verdict)
        if outcome.tampered:
            log.warning("code task: the model's code tampered with its tests (%s); pass_rate 0", outcome.tamper_reason)
            tools.flag("tampered")
            return {"pass_rate": 0.0}
        if self.options.pass_mode == "fraction":
            return {"pass_rate": outcome.pass_rate}
        return {"pass_rate": 1.0 if outcome.all_passed else 0.0}

    def _sandbox_for(self, tools: ScoringTools) -> Sandbox:
        if self._own_sandbox is None:
            return tools.sandbox
        return self._own_sandbox()

    def _parallel(self) -> asyncio.Semaphore:
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.options.parallel_tests or os.cpu_count() or 4)
        return self._gate


def _code_field(reply: dict[str, Any]) -> str:
    code = reply["code"]
    if not isinstance(code, str):
        raise TypeError("code must be a string")
    return strip_fence(code)


def fenced_solution(conversation: list[Message], entry_point: str) -> str | None:
    """The last ```python block of the last assistant message that defines `entry_point`."""
    said = assistant_messages(conversation)
    if not said:
        return None
    defines = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
    for block in reversed(_FENCE.findall(said[-1])):
        if defines.search(block):
            return block
    return None


def strip_fence(code: str) -> str:
    """Judges sometimes wrap the code they extract in a fence of its own."""
    found = _FENCE.findall(code)
    return found[-1] if found else code


def with_imports(code: str, code_prompt: str) -> str:
    """`code` with the top-level imports of `code_prompt` it does not already have.

    The imports are read from the parsed prompt, never from text lines: a docstring line
    such as "from two integers, ..." is not an import, and copying it made correct code a
    SyntaxError (score 0). A valid solution never comes out invalid: if the assembly does
    not parse, the solution is returned as it was.
    """
    imports = prompt_imports(code_prompt)
    present = _present_imports(code)
    missing = [source for source, key in imports if key not in present]
    if not missing:
        return code
    lines = code.splitlines()
    at = _import_insertion_line(code)
    assembled = "\n".join([*lines[:at], *missing, *lines[at:]])
    if code.endswith("\n"):
        assembled += "\n"
    if _parses(code) and not _parses(assembled):
        return code
    return assembled


def prompt_imports(code_prompt: str) -> list[tuple[str, str]]:
    """(source, key) of each top-level `import`/`from ... import` of `code_prompt`.

    BigCodeBench prompts usually end in a bare `def task_func(...):` header, which does
    not parse; the longest parsable prefix of lines still holds every import above it.
    `__future__` imports come first, as Python requires.
    """
    tree, source = _longest_parsable_prefix(code_prompt)
    found = []
    for node in tree.body if tree is not None else []:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            segment = ast.get_source_segment(source, node)
            if segment:
                found.append((segment, ast.dump(node)))
    return sorted(found, key=lambda item: not item[0].startswith("from __future__"))


def _longest_parsable_prefix(source: str) -> tuple[ast.Module | None, str]:
    """The module of the longest run of leading lines that parses, and that run's text."""
    lines = source.splitlines()
    for end in range(len(lines), 0, -1):
        prefix = "\n".join(lines[:end])
        try:
            return ast.parse(prefix), prefix
        except (SyntaxError, ValueError):
            continue
    return None, ""


def _present_imports(code: str) -> set[str]:
    """Keys (`ast.dump`) of the solution's top-level imports, so an import it already
    has, however it is laid out, is not added again; unparsable code compares lines."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        keys = set()
        for line in code.splitlines():
            try:
                keys.add(ast.dump(ast.parse(line.strip()).body[0]))
            except (SyntaxError, ValueError, IndexError):
                continue
        return keys
    return {ast.dump(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))}


def _import_insertion_line(code: str) -> int:
    """Index of the line the imports go before: after the solution's module docstring
    and `from __future__` imports, which must stay first; 0 for unparsable code."""
    try:
        body = ast.parse(code).body
    except (SyntaxError, ValueError):
        return 0
    end = 0
    for i, node in enumerate(body):
        docstring = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
            and isinstance(node.value.value, str)
        future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if not (docstring or future):
            break
        end = node.end_lineno or end
    return end


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True
