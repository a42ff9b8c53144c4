"""Bring your own math data: a gold `answer` column, GSM8K's `#### 42`, numbers as answers.

Each test writes its own small seed file and reads it the way a run does: through
`collabgen plan` (the CLI) and through the loader (`iter_seeds` with `MathTask`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.config.errors import SeedError
from collabgen.config.recipe import SourceConfig, TaskConfig
from collabgen.engine.seeds import iter_seeds
from collabgen.prompting import Prompts
from collabgen.tasks.math import MathSeed, MathTask
from collabgen.tasks.math_answers import final_marked_answer, number_text
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, read_shards, write_recipe
from tests.scripts import install_math

UNREACHABLE = "http://127.0.0.1:9/v1"

GSM8K_ANSWER = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def load(path: Path, fields: dict[str, str] | None = None) -> list[MathSeed]:
    config = TaskConfig(type="math", source=SourceConfig(path=path, fields=fields or {}))
    return [seed for _, seed in iter_seeds(MathTask(), config)]  # type: ignore[misc]


def plan(tmp_path: Path, seeds: Path, fields: dict[str, str] | None = None):
    data = math_recipe(UNREACHABLE, tmp_path / "out", **{"task.source.path": str(seeds)})
    data["task"]["source"]["fields"] = fields or {}
    return CliRunner().invoke(app, ["plan", str(write_recipe(tmp_path / "r.yaml", data))])


def test_a_gold_answer_column_mapped_from_question_is_read(tmp_path):
    seeds = write_jsonl(tmp_path / "s.jsonl", [
        {"question": "What is 6 times 7?", "answer": "42"},
        {"question": "Half of 3?", "answer": "\\frac{3}{2}"},
    ])
    loaded = load(seeds, {"problem": "question"})
    assert [(s.problem, s.answer, s.solution) for s in loaded] == [
        ("What is 6 times 7?", "42", None), ("Half of 3?", "\\frac{3}{2}", None),
    ]
    result = plan(tmp_path, seeds, {"problem": "question"})
    assert result.exit_code == 0, result.output
    assert "task math, 2 seeds" in result.output


def test_numbers_in_the_answer_column_are_read_as_text(tmp_path):
    seeds = write_jsonl(tmp_path / "s.jsonl", [
        {"question": "a", "answer": 42}, {"question": "b", "answer": 4.0},
        {"question": "c", "answer": 0.25}, {"question": "d", "answer": -3},
    ])
    assert [s.answer for s in load(seeds, {"problem": "question"})] == ["42", "4", "0.25", "-3"]
    assert plan(tmp_path, seeds, {"problem": "question"}).exit_code == 0


def test_a_gsm8k_row_takes_its_gold_from_the_final_hashes(tmp_path):
    # GSM8K's own columns: `question`, and `answer` holding the worked solution.
    seeds = write_jsonl(tmp_path / "s.jsonl", [
        {"question": "Natalia sold clips to 48 of her friends in April...", "answer": GSM8K_ANSWER},
        {"question": "Big?", "answer": "Add them up.\n#### 1,250"},
    ])
    first, second = load(seeds, {"problem": "question"})
    assert first.answer == "72" and first.solution == GSM8K_ANSWER  # the worked text is the solution
    assert second.answer == "1250"  # thousands commas dropped
    assert plan(tmp_path, seeds, {"problem": "question"}).exit_code == 0


def test_a_gsm8k_style_solution_column_is_read(tmp_path):
    seeds = write_jsonl(tmp_path / "s.jsonl", [{"problem": "p", "solution": "3 + 4 = 7\n#### 7\n"}])
    (seed,) = load(seeds)
    assert seed.answer == "7" and seed.solution == "3 + 4 = 7\n#### 7\n"


def test_math_solutions_keep_working_and_the_answer_column_wins(tmp_path):
    seeds = write_jsonl(tmp_path / "s.jsonl", [
        {"problem": "p", "solution": "so $\\boxed{\\frac{3}{4}}$."},
        {"problem": "q", "solution": "so $\\boxed{5}$.", "answer": "6"},
    ])
    first, second = load(seeds)
    assert first.answer == "\\frac{3}{4}"
    assert second.answer == "6"


def test_a_row_with_neither_names_its_columns_and_the_mapping(tmp_path):
    seeds = write_jsonl(tmp_path / "s.jsonl", [{"question": "a", "answer": "1"}, {"question": "b", "gold": ""}])
    with pytest.raises(SeedError) as caught:
        load(seeds, {"problem": "question"})
    message = str(caught.value)
    assert message.startswith(f"{seeds}:2: malformed seed row: no gold answer")
    assert "['gold', 'question']" in message and "fields: {answer: <column>}" in message
    result = plan(tmp_path, seeds, {"problem": "question"})
    assert result.exit_code == 2
    assert f"{seeds}:2: malformed seed row: no gold answer" in result.output


def test_a_solution_without_a_final_answer_says_what_is_looked_for(tmp_path):
    seeds = write_jsonl(tmp_path / "s.jsonl", [{"problem": "p", "solution": "It is five."}])
    with pytest.raises(SeedError, match=r"s\.jsonl:1: .*no \\boxed\{\.\.\.\} final answer and no '#### <answer>'"):
        load(seeds)


def test_a_bool_or_nan_answer_is_refused(tmp_path):
    with pytest.raises(SeedError, match="valid string"):
        load(write_jsonl(tmp_path / "a.jsonl", [{"problem": "p", "answer": True}]))
    with pytest.raises(SeedError, match="not a number"):
        MathTask().seed_from_row({"problem": "p", "answer": float("nan")}, {}, "row 0")


@pytest.mark.parametrize(("text", "found"), [
    ("x\n#### 72", ("72", "x")),
    ("#### -3.5  \n", ("-3.5", "")),
    ("so \\boxed{\\frac{1}{2}} done", ("\\frac{1}{2}", "so ")),
    ("it is 72", None),
    ("#### 72 is the total\nbut then more text", None),  # the marker is only read on the last line
    ("x\n####   \n", None),
])
def test_final_marked_answer(text, found):
    assert final_marked_answer(text) == found


def test_number_text():
    assert [number_text(v) for v in (3, 3.0, 2.5, "x", None, True)] == ["3", "3", "2.5", "x", None, True]


def test_an_answer_only_seed_gives_the_simulated_user_the_problem_and_never_the_answer():
    seed = MathSeed.model_validate({"problem": "What is 6 times 7?", "answer": 42})
    brief = MathTask().user_brief(seed, Prompts())
    assert "What is 6 times 7?" in brief and "42" not in brief and "None" not in brief


def test_a_run_on_answer_column_seeds_scores_accuracy(tmp_path):
    seeds = write_jsonl(tmp_path / "s.jsonl", [
        {"question": "What is 2 + 3?", "answer": 5}, {"question": "What is 7 + 6?", "answer": "13"},
    ])
    with FakeLLMServer() as server:
        install_math(server)
        out = tmp_path / "out"
        data = math_recipe(server.base_url, out, **{"task.source.path": str(seeds), "generation.max_turns": 2})
        data["task"]["source"]["fields"] = {"problem": "question"}
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 0, result.output
    accuracy = set(read_shards(out, "candidates")["metrics"].struct.field("accuracy"))
    assert max(accuracy) > 0  # the scripted policy's right answers were matched against the column
