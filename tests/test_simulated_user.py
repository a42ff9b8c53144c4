"""The simulated user knows only what a real user knows, and keeps its thoughts to itself.

Proof from the server's request log: each task runs the real CLI with its shipped recipe
against the fake server, and every request the user simulator received is read back.
None holds what only the metric may use (math: the solution and its final answer; code:
the unit tests; clarify: the gold label and the reference answers). The document task
has no hidden answer: its user has the article in mind, as the reference's does, so the
test shows that this intent is all it gets. The hidden values are written in forms the
scripted assistant never produces, so a hit can only be a leak, and the runs' metrics
show the values did reach the metric.

The simulator replies JSON with a private `thought`; the scripted users start theirs
with `THOUGHT`, which must appear in no request of any role and no output row.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.prompting import Prompts
from collabgen.tasks.clarify import ClarifyTask
from tests.fakeserver import FakeLLMServer
from tests.helpers import SEEDS, read_shards, recipe_from_file, write_recipe
from tests.scripts import (
    POLICY,
    THOUGHT,
    USER,
    clarify_user,
    install_clarify,
    install_code,
    install_document,
    install_math,
    schema_capped,
)

FAST_SANDBOX = {"cpu_seconds": 5, "wall_seconds": 20, "memory_mb": 512}


def seed_file(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(server: FakeLLMServer, tmp_path: Path, recipe_name: str, seeds: Path, **overrides: Any) -> Path:
    out = tmp_path / "out"
    recipe = recipe_from_file(recipe_name, server.base_url, out, seeds, **overrides)
    result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "recipe.yaml", recipe))])
    assert result.exit_code == 0, result.output
    return out


def seen_by_user(server: FakeLLMServer) -> list[str]:
    """Everything each user-simulator request held, one string per request."""
    requests = ["\n".join(m["content"] for m in call.body["messages"]) for call in server.ok_calls(USER)]
    assert requests, "the simulator was never asked"
    return requests


def assert_thoughts_stay_private(server: FakeLLMServer, out: Path) -> None:
    """No request of any role (the simulator's own included) and no output holds a thought.
    The request cache keeps raw replies and is internal (never pushed): it is the one exception."""
    for call in server.ok_calls():
        assert THOUGHT not in json.dumps(call.body), call.body.get("model")
    for config in ("pairs", "sft", "candidates"):
        rows = read_shards(out, config).to_dicts()
        assert rows and THOUGHT not in json.dumps(rows, default=str), config
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md"):
            assert THOUGHT not in path.read_text(encoding="utf-8"), path


# --------------------------------------------------------------------------- math

MATH_ROWS = [
    # The answer written as an equivalent fraction: the metric accepts the assistant's
    # "\boxed{5}", and "\dfrac{10}{2}" can only reach the user through a leak.
    {"problem": "What is 2 + 3?", "solution": "Worked solution (zebra): add them to get $\\boxed{\\dfrac{10}{2}}$."},
    {"problem": "What is 7 \\times 6?", "solution": "Worked solution (zebra): multiply, $\\boxed{\\dfrac{84}{2}}$."},
]


def test_the_math_user_sees_the_problem_never_the_solution_or_its_answer(tmp_path):
    with FakeLLMServer() as server:
        install_math(server)
        out = run(server, tmp_path, "math", seed_file(tmp_path, MATH_ROWS))
        seen = seen_by_user(server)
        assert_thoughts_stay_private(server, out)
    for text in seen:
        assert "zebra" not in text and "Worked solution" not in text
        assert "\\dfrac{10}{2}" not in text and "\\dfrac{84}{2}" not in text
    assert all(any(row["problem"] in text for row in MATH_ROWS) for text in seen)
    # The answer did reach the metric: right answers scored 1.
    accuracy = read_shards(out, "candidates")["metrics"].struct.field("accuracy")
    assert accuracy.max() == 1.0


# --------------------------------------------------------------------------- code


def test_the_code_user_sees_the_instruction_and_signature_never_the_tests(tmp_path):
    rows = [json.loads(line) for line in (SEEDS / "code.jsonl").read_text().splitlines()]
    with FakeLLMServer() as server:
        install_code(server)
        out = run(server, tmp_path, "bigcodebench", seed_file(tmp_path, rows),
                  **{"task.options.sandbox": FAST_SANDBOX, "task.options.canary_imports": []})
        seen = seen_by_user(server)
        assert_thoughts_stay_private(server, out)
    test_lines = {line.strip() for row in rows for line in row["test"].splitlines() if "assert" in line or "class " in line}
    for text in seen:
        assert "unittest" not in text and not any(line in text for line in test_lines)
    for row in rows:
        briefs = [t for t in seen if row["instruct_prompt"] in t]
        assert briefs and all(row["code_prompt"].strip() in t for t in briefs)
    # The tests did run: the right code passes them all.
    assert read_shards(out, "candidates")["metrics"].struct.field("pass_rate").max() == 1.0


def test_the_code_task_has_no_option_to_show_the_tests():
    from collabgen.tasks.code import CodeTask

    with pytest.raises(Exception, match="user_sees_tests"):
        CodeTask({"user_sees_tests": True})


# --------------------------------------------------------------------------- document


def test_the_document_user_has_its_article_in_mind_and_nothing_else(tmp_path):
    rows = [{**json.loads(line), "url": f"https://medium.example/canary-{i}", "claps": "canary-claps"}
            for i, line in enumerate((SEEDS / "document.jsonl").read_text().splitlines())]
    with FakeLLMServer() as server:
        install_document(server)
        out = run(server, tmp_path, "mediumdoc", seed_file(tmp_path, rows))
        seen = seen_by_user(server)
        assert_thoughts_stay_private(server, out)
    for row in rows:
        briefs = [t for t in seen if f"The title of your article:\n{row['title']}" in t]
        # Its intent, as in the reference: the title and the article it has in mind.
        assert briefs and all(row["text"] in t for t in briefs)
    for text in seen:
        assert "canary" not in text  # other columns of the row never reach it
        assert "Extract the final version" not in text and "Rate the ASSISTANT" not in text  # nor the judges


# --------------------------------------------------------------------------- clarify

CLARIFY_ROWS = [
    {"story": "Anna and her brother Tom went to the fair. Anna won a ribbon for her pie, Tom one for his pumpkin.",
     "question": "What color was the ribbon?", "ambiguity": "ambiguous", "intent": "the ribbon Anna won",
     "answer": "cobalt rosette"},
    {"story": "Anna and her brother Tom went to the fair. On Sunday they went to the lake.",
     "question": "Where did they go on Sunday?", "ambiguity": "non_ambiguous", "answer": "the shore of Lake Vireo"},
]


def test_the_clarify_user_sees_story_question_and_intent_never_the_label_or_answers(tmp_path):
    with FakeLLMServer() as server:
        install_clarify(server)
        out = run(server, tmp_path, "eval/abgcoqa", seed_file(tmp_path, CLARIFY_ROWS))
        seen = seen_by_user(server)
        assert_thoughts_stay_private(server, out)
    for text in seen:
        assert not re.search(r"ambigu", text, re.IGNORECASE)
        assert "cobalt rosette" not in text and "Lake Vireo" not in text
    ambiguous = [t for t in seen if CLARIFY_ROWS[0]["story"] in t]
    assert ambiguous and all("What you have in mind when you ask it: the ribbon Anna won" in t for t in ambiguous)
    # The label did reach the metric: asking was right for one question, answering for the other.
    assert set(read_shards(out, "candidates")["metrics"].struct.field("clarify_accuracy")) == {0.0, 1.0}


LONG_STORY = " ".join(f"On day {day} Anna and Tom walked to the fair and counted {day * 3} ribbons on the stalls."
                      for day in range(1, 25))


def test_a_story_longer_than_the_message_cap_reaches_the_assistant_whole_with_its_question(tmp_path):
    # The brief says: paste the story in full, then ask. A constrained decoder ends the
    # message at the schema's maxLength (1,200), so a longer story pushed the question out.
    cap = Prompts().schema("user_simulator")["properties"]["message"]["maxLength"]
    assert len(LONG_STORY) > cap
    row = {"story": LONG_STORY, "question": "What color was the ribbon?", "ambiguity": "ambiguous",
           "intent": "the ribbon Anna won"}
    with FakeLLMServer() as server:
        install_clarify(server)
        server.set_script(USER, schema_capped(clarify_user))
        run(server, tmp_path, "eval/abgcoqa", seed_file(tmp_path, [row]), **{"generation.max_turns": 2})
        policy = [call.body["messages"] for call in server.ok_calls(POLICY)]
        user = [call.body for call in server.ok_calls(USER)]
    openings = {next(m["content"] for m in messages if m["role"] == "user") for messages in policy}
    assert openings == {f"{LONG_STORY}\n\nWhat color was the ribbon?"}
    # Only the opening gets the story's room; later messages keep the usual cap.
    limits = {("has not started yet" in body["messages"][1]["content"],
               body["response_format"]["json_schema"]["schema"]["properties"]["message"]["maxLength"]) for body in user}
    assert limits == {(True, cap + len(LONG_STORY)), (False, cap)}


def test_a_clarify_brief_reads_the_same_whether_or_not_the_question_is_ambiguous():
    task, prompts = ClarifyTask(), Prompts()
    row = {"story": "Anna won a ribbon.", "question": "What color?", "answers": "blue"}
    briefs = {label: task.user_brief(task.seed_from_row({**row, "ambiguous": label}, {}, "r:1"), prompts)
              for label in (True, False)}
    assert briefs[True] == briefs[False]
    assert "blue" not in briefs[True]


# --------------------------------------------------------------------------- the view


def test_the_simulator_gets_its_brief_and_the_transcript_in_one_message_roles_unflipped(tmp_path):
    with FakeLLMServer() as server:
        install_math(server)
        run(server, tmp_path, "math", seed_file(tmp_path, MATH_ROWS[:1]), **{"generation.max_turns": 1})
        requests = [call.body for call in server.ok_calls(USER)]
    schema = Prompts().schema("user_simulator")
    for body in requests:
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        # One constraint: the simulator's own schema (JSON-schema response format).
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == schema
    opening, *later = [body["messages"][1]["content"] for body in requests]
    assert "has not started yet" in opening
    assert later and all("<<<CHAT\nUSER: hey, can you help me with this: What is 2 + 3?\n\nASSISTANT: " in t
                         for t in later)
    assert set(schema["required"]) == {"thought", "satisfied", "message"}


BRIEF_FIELDS = {  # what each task's brief may read from its seed: the request and the user's intent
    "math_user": {"problem"},
    "code_user": {"instruct_prompt", "code_prompt", "entry_point"},
    "document_user": {"title", "text"},
    "clarify_user": {"story", "question", "intent"},
}


@pytest.mark.parametrize("name", sorted(BRIEF_FIELDS))
def test_each_brief_reads_only_the_request_and_the_intent_from_its_seed(name):
    text = (Path(__file__).resolve().parent.parent / "collabgen" / "prompts" / "tasks" / f"{name}.j2").read_text()
    assert set(re.findall(r"seed\.(\w+)", text)) == BRIEF_FIELDS[name]
    # Options only as a real user's own wish: the article's length (the reference's "under 500 words").
    assert set(re.findall(r"options\.(\w+)", text)) == BRIEF_OPTIONS.get(name, set())


BRIEF_OPTIONS = {"document_user": {"length_cue_words"}}
