"""`collabgen score`: a user's own conversations scored through the futures' path."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, write_recipe
from tests.scripts import install_math

PROBLEM = {"problem": "What is 2 + 3?", "solution": "It is $\\boxed{5}$."}


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        install_math(fake)
        yield fake


def lines(*records: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def test_each_line_gets_its_metrics_score_and_flags_in_order_and_bad_lines_say_why(server, tmp_path):
    recipe = write_recipe(tmp_path / "math.yaml", math_recipe(server.base_url, tmp_path / "out"))
    source = tmp_path / "mine.jsonl"
    source.write_text(lines(
        {"seed": PROBLEM, "messages": [{"role": "user", "content": "2+3?"},
                                       {"role": "assistant", "content": "Do you want it exact?"},
                                       {"role": "user", "content": "yes"},
                                       {"role": "assistant", "content": "$\\boxed{5}$"}], "assistant_tokens": 200},
        {"seed": PROBLEM, "messages": [{"role": "user", "content": "2+3?"},
                                       {"role": "assistant", "content": "$\\boxed{6}$"}]},
        "{not json",
        {"seed": {"problem": "no solution field"}, "messages": [{"role": "assistant", "content": "x"}]},
    ))
    result = CliRunner().invoke(app, ["score", str(recipe), str(source), "--out", str(tmp_path / "scores.jsonl")])
    assert result.exit_code == 1, result.output
    scored = [json.loads(x) for x in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(scored) == 4
    right, wrong, not_json, bad_seed = scored
    assert right["error"] is None and right["metrics"]["accuracy"] == 1.0
    # The scripted judge rates a conversation that asks a question 0.9.
    assert right["metrics"]["interactivity"] == 0.9
    assert right["metrics"]["token_penalty"] == pytest.approx(-200 * 5e-4)
    assert right["score"] == pytest.approx(1.0 + 0.5 * 0.9 - 0.1)
    assert wrong["metrics"]["accuracy"] == 0.0 and "tokens_estimated" in wrong["flags"]
    assert not_json["error"].startswith("line 3:") and not_json["score"] is None
    assert bad_seed["error"].startswith("line 4:") and "solution" in bad_seed["error"]


def test_all_lines_scored_exits_zero_and_a_bad_recipe_exits_two(server, tmp_path):
    recipe = write_recipe(tmp_path / "math.yaml", math_recipe(server.base_url, tmp_path / "out"))
    source = tmp_path / "mine.jsonl"
    source.write_text(lines({"seed": PROBLEM, "messages": [{"role": "user", "content": "2+3?"},
                                                           {"role": "assistant", "content": "$\\boxed{5}$"}]}))
    assert CliRunner().invoke(app, ["score", str(recipe), str(source)]).exit_code == 0
    assert (tmp_path / "mine.scores.jsonl").is_file()
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: {type: math}\n")
    assert CliRunner().invoke(app, ["score", str(broken), str(source)]).exit_code == 2


def test_seeds_are_read_through_the_recipes_field_mapping_and_errors_name_the_line_once(server, tmp_path):
    data = math_recipe(server.base_url, tmp_path / "out", **{"task.source.fields": {"problem": "question"}})
    recipe = write_recipe(tmp_path / "math.yaml", data)
    chat = [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "$\\boxed{5}$"}]
    source = tmp_path / "mine.jsonl"
    source.write_text(lines(
        {"seed": {"question": "What is 2 + 3?", "answer": "5"}, "messages": chat},  # a row of the seed file
        {"seed": {"problem": "What is 2 + 3?", "answer": "5"}, "messages": chat},  # the seed field's own name
        {"seed": {"title": "What is 2 + 3?", "answer": "5"}, "messages": chat},
    ))
    result = CliRunner().invoke(app, ["score", str(recipe), str(source), "--out", str(tmp_path / "scores.jsonl")])
    assert result.exit_code == 1, result.output
    mapped, own_name, unmapped = [json.loads(x) for x in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert mapped["error"] is None and mapped["metrics"]["accuracy"] == 1.0
    assert own_name["error"] is None and own_name["metrics"]["accuracy"] == 1.0
    assert unmapped["error"].startswith("line 3: malformed seed row:"), unmapped["error"]
    assert "line 3: line 3" not in unmapped["error"] and "column 'question'" in unmapped["error"]
