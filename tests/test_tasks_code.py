"""The code task (BigCodeBench-Chat): final code from the conversation, tests in the sandbox."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.prompting import Prompts
from collabgen.sandbox import Sandbox, SandboxInfrastructureError, SandboxLimits
from collabgen.tasks.code import CodeTask
from tests.fakeserver import FakeLLMServer
from tests.helpers import SEEDS, by_turn, read_shards, recipe_from_file, write_recipe
from tests.scripts import CODE_VARIANTS, JUDGE, install_code

FAST = SandboxLimits(cpu_seconds=2, wall_seconds=5.0, memory_mb=512)
ROWS = [json.loads(line) for line in (SEEDS / "code.jsonl").read_text().splitlines()]
ADD, WORDS, CIRCLE = ROWS
# Buggy variants by hand: abs(a) + abs(b) passes test_small and test_zero, fails
# test_negative (2 of 3); text.count(' ') + 1 gives 1 for '' and 3 for 'a  b' (2 of 4);
# 3.14 * r ** 2 fails the unit circle at 7 places, passes r = 0 (1 of 2).
BUGGY_FRACTION = {"code-000000": 2 / 3, "code-000001": 2 / 4, "code-000002": 1 / 2}


class StubTools:
    """What `score` may use, with a scripted judge and a real (or broken) sandbox."""

    def __init__(self, sandbox: Any, judge_reply: dict[str, Any] | None = None) -> None:
        self.prompts = Prompts()
        self._sandbox = sandbox
        self.judge_reply = judge_reply
        self.judge_calls: list[str] = []
        self.flags: list[str] = []

    def flag(self, name: str) -> None:
        self.flags.append(name)

    async def judge_json(self, template: str, *, stage: str, validate=None, **variables: Any) -> Any:
        self.prompts.render(template, **variables)
        self.judge_calls.append(template)
        assert self.judge_reply is not None, "unexpected judge call"
        return validate(self.judge_reply) if validate else self.judge_reply

    @property
    def sandbox(self) -> Any:
        return self._sandbox


def chat(*assistant: str) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": "I need a function"}]
    for text in assistant:
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "ok"}]
    return messages


def fenced(code: str) -> str:
    return f"Here it is:\n```python\n{code}```\nAnything else?"


async def score(row: dict[str, Any], conversation: list[dict[str, str]], tools: StubTools, **options: Any) -> float:
    task = CodeTask(options)
    result = await task.score(task.seed_from_row(row, {}, "code.jsonl"), conversation, tools)
    return result["pass_rate"]


async def test_pass_rate_is_all_or_nothing_by_default_and_the_share_in_fraction_mode():
    tools = StubTools(Sandbox(FAST))
    right, buggy = CODE_VARIANTS["adds two numbers"]
    assert await score(ADD, chat(fenced(buggy)), tools) == 0.0
    assert await score(ADD, chat(fenced(buggy)), tools, pass_mode="fraction") == pytest.approx(2 / 3)
    assert await score(ADD, chat(fenced(right)), tools) == 1.0
    assert await score(ADD, chat(fenced(right)), tools, pass_mode="fraction") == 1.0
    # The code was in the last assistant message: no extraction call.
    assert tools.judge_calls == []


async def test_the_judge_extracts_the_code_when_the_last_message_has_none():
    right, buggy = CODE_VARIANTS["counts the words"]
    tools = StubTools(Sandbox(FAST), judge_reply={"code": f"```python\n{buggy}```"})
    conversation = chat(fenced(right), fenced(buggy), "Glad to help!")
    assert await score(WORDS, conversation, tools, pass_mode="fraction") == 0.5
    assert tools.judge_calls == ["tasks/code_extract"]
    # A block that does not define the entry point is not the solution either.
    tools.judge_calls.clear()
    assert await score(WORDS, chat(fenced("print(task_func('a b'))\n")), tools, pass_mode="fraction") == 0.5
    assert tools.judge_calls == ["tasks/code_extract"]


async def test_an_empty_extraction_scores_zero_without_running_anything():
    class NoSandbox:
        async def run_unittests(self, solution: str, tests: str, verdict: str = "auto") -> None:
            raise AssertionError("nothing to run")

    assert await score(ADD, chat("What should it do?"), StubTools(NoSandbox(), {"code": ""})) == 0.0


async def test_code_prompt_imports_are_put_in_front_of_a_solution_that_lacks_them():
    right, _ = CODE_VARIANTS["area of a circle"]  # uses math.pi, imports nothing
    tools = StubTools(Sandbox(FAST))
    assert await score(CIRCLE, chat(fenced(right)), tools) == 1.0
    assert await score(CIRCLE, chat(fenced(right)), tools, prepend_imports=False) == 0.0  # NameError


async def test_a_sandbox_that_breaks_fails_the_future_instead_of_scoring_zero():
    class BrokenSandbox:
        async def run_unittests(self, solution: str, tests: str, verdict: str = "auto") -> None:
            raise SandboxInfrastructureError("bwrap: execvp /tmp/venv/bin/python: No such file or directory")

    right, _ = CODE_VARIANTS["adds two numbers"]
    with pytest.raises(SandboxInfrastructureError, match="execvp"):
        await score(ADD, chat(fenced(right)), StubTools(BrokenSandbox()))


async def test_tampering_code_scores_zero_is_flagged_and_logged(caplog):
    _, buggy = CODE_VARIANTS["adds two numbers"]
    forging = "import unittest\nunittest.TestCase.assertEqual = lambda self, *a, **k: None\n" + buggy
    tools = StubTools(Sandbox(FAST))
    assert await score(ADD, chat(fenced(forging)), tools, pass_mode="fraction", verdict="in_process") == 0.0
    assert "tampered" in caplog.text and tools.flags == ["tampered"]
    caplog.clear()
    separate = StubTools(Sandbox(FAST))  # the default verdict for these tests: the patch never reaches them
    assert await score(ADD, chat(fenced(forging)), separate, pass_mode="fraction") == 2 / 3
    assert separate.flags == []


def test_a_seed_without_test_methods_is_rejected():
    with pytest.raises(Exception, match="no unittest test methods"):
        CodeTask().seed_from_row({**ADD, "test": "print('hi')"}, {}, "code.jsonl:1")


def test_sandbox_limits_are_validated_as_recipe_options():
    with pytest.raises(Exception, match="memory_mib"):
        CodeTask({"sandbox": {"memory_mib": 10}})


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        install_code(fake)
        yield fake


def run(recipe: dict[str, Any], tmp_path) -> Any:
    return CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "code.yaml", recipe))])


def test_bigcodebench_recipe_scores_candidates_by_their_futures_test_results(server, tmp_path):
    out = tmp_path / "out"
    recipe = recipe_from_file("bigcodebench", server.base_url, out, SEEDS / "code.jsonl",
                              **{"task.options.sandbox": FAST.model_dump(), "task.options.canary_imports": []})
    result = run(recipe, tmp_path)
    assert result.exit_code == 0, result.output

    turns = by_turn(read_shards(out, "candidates"))
    for conv_id in BUGGY_FRACTION:
        first = turns[(conv_id, 0)]
        assert first[True]["metrics"]["pass_rate"] == 1.0  # asked, then wrote the right code
        assert first[False]["metrics"]["pass_rate"] == 0.0  # buggy: not every test passes
        assert first[True]["chosen"]
        assert {c["metrics"]["pass_rate"] for c in turns[(conv_id, 1)].values()} == {1.0}
    assert read_shards(out, "pairs").height == 3
    # Only the buggy candidate's futures end on a message without code (3 seeds x 3 futures);
    # their extraction prompts are identical, so each seed pays for one extraction call.
    extractions = [c for c in server.ok_calls(JUDGE) if '{"code"' in c.body["messages"][-1]["content"]]
    assert len(extractions) == 3
    card = (out / "README.md").read_text()
    assert "license: other" in card and "`pass_rate`" in card and "zhuo2024bigcodebench" not in card


def test_fraction_mode_scores_the_share_of_tests_that_pass(server, tmp_path):
    out = tmp_path / "out"
    recipe = recipe_from_file(
        "bigcodebench", server.base_url, out, SEEDS / "code.jsonl",
        **{"task.options.sandbox": FAST.model_dump(), "task.options.pass_mode": "fraction", "task.options.canary_imports": [],
           "generation.max_turns": 1, "generation.futures": 1},
    )
    assert run(recipe, tmp_path).exit_code == 0
    turns = by_turn(read_shards(out, "candidates"))
    for conv_id, fraction in BUGGY_FRACTION.items():
        assert turns[(conv_id, 0)][False]["metrics"]["pass_rate"] == pytest.approx(fraction)
        assert turns[(conv_id, 0)][True]["metrics"]["pass_rate"] == 1.0


def test_hostile_model_code_scores_zero_and_the_run_goes_on(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-collabgen-test-secret")  # the test expects to read it
    out = tmp_path / "out"
    recipe = recipe_from_file(
        "bigcodebench", server.base_url, out, SEEDS / "code_hostile.jsonl",
        **{
            "task.options.sandbox": {"cpu_seconds": 1, "wall_seconds": 2, "memory_mb": 256}, "task.options.canary_imports": [],
            "task.options.pass_mode": "fraction", "task.options.parallel_tests": 4,
            "generation.max_turns": 1, "generation.futures": 1,
        },
    )
    result = run(recipe, tmp_path)
    assert result.exit_code == 0, result.output
    candidates = read_shards(out, "candidates")
    assert candidates.height == 3 * 2
    # The loop is killed, the environment is scrubbed, the allocation fails: all score 0.
    for row in candidates.iter_rows(named=True):
        assert [f["metrics"]["pass_rate"] for f in row["futures"]] == [0.0], row["conv_id"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["conversations_ok"] == 3
    assert "sk-collabgen-test-secret" not in (out / "manifest.json").read_text()


def test_the_brief_carries_the_signature_and_the_opening_passes_it_on(server, tmp_path):
    from tests.scripts import POLICY, USER

    seeds = [json.loads(line) for line in (SEEDS / "code.jsonl").read_text().splitlines() if line.strip()]
    out = tmp_path / "out"
    recipe = recipe_from_file("bigcodebench", server.base_url, out, SEEDS / "code.jsonl",
                              **{"task.options.sandbox": FAST.model_dump(), "task.options.canary_imports": []})
    assert run(recipe, tmp_path).exit_code == 0
    briefs = [c.body["messages"][0]["content"] for c in server.ok_calls(USER)]
    openings = [next(m["content"] for m in c.body["messages"] if m["role"] == "user") for c in server.ok_calls(POLICY)]
    for seed in seeds:
        signature = seed["code_prompt"].strip()
        # The user's brief holds the exact lines and says to pass them on word for word ...
        assert any(f"<<<SIGNATURE\n{signature}\nSIGNATURE>>>" in b and "word for word" in b for b in briefs)
        # ... and the assistant's first view of the seed holds them.
        assert any(signature in opening for opening in openings), signature
