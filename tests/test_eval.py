"""`collabgen eval`: two scripted policies that differ in a known way, compared paired."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.config.errors import RecipeError
from collabgen.config.recipe import Recipe
from tests.fakeserver import FakeLLMServer, ScriptCall
from tests.helpers import math_recipe, write_recipe
from tests.scripts import install_math


def _answer(call: ScriptCall) -> str:
    text = " ".join(m["content"] for m in call.messages if m["role"] == "user")
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    return f"The answer is $\\boxed{{{sum(numbers[:2])}}}$."


def asker(call: ScriptCall) -> str:
    """Asks one clarifying question first, then answers."""
    if sum(1 for m in call.messages if m["role"] == "assistant") == 0:
        return "Quick question before I start: do you want an exact value or a decimal?"
    return _answer(call)


def direct(call: ScriptCall) -> str:
    """Never asks; answers at once."""
    return _answer(call)


def test_eval_reports_the_known_difference_with_intervals(tmp_path):
    with FakeLLMServer() as server:
        install_math(server)
        server.set_script("asker", asker)
        server.set_script("direct", direct)
        recipe = math_recipe(server.base_url, tmp_path / "out")
        recipe["eval"] = {"source": recipe["task"]["source"], "limit": 6, "max_turns": 4, "bootstrap": 500}
        path = write_recipe(tmp_path / "r.yaml", recipe)
        args = ["eval", str(path), "--policy", "name=direct,model=direct", "--policy", "name=asker,model=asker"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        calls = len(server.calls)
        opener_calls = [c for c in server.ok_calls("user-sim") if "has not started" in c.body["messages"][-1]["content"]]
        assert len(opener_calls) == 6  # one opening per seed, shared by both policies

        # A rerun resumes from the journal: no call at all.
        assert CliRunner().invoke(app, args).exit_code == 0
        assert len(server.calls) == calls

    report = json.loads((tmp_path / "out" / "eval" / "report.json").read_text())
    asks, answers = report["policies"]["asker"], report["policies"]["direct"]
    assert asks["conversations"] == answers["conversations"] == 6
    inter = asks["metrics"]["interactivity"]
    assert inter["low"] <= inter["mean"] <= inter["high"]
    assert asks["metrics"]["interactivity"]["mean"] > answers["metrics"]["interactivity"]["mean"]
    assert asks["metrics"]["turns"]["mean"] > answers["metrics"]["turns"]["mean"]
    diff = report["paired"]["asker - direct"]
    assert diff["seeds"] == 6
    # The asker is more interactive on every seed: the whole interval is above zero.
    assert diff["metrics"]["interactivity"]["low"] > 0
    # Both reach the same answers: accuracy does not differ.
    assert diff["metrics"]["accuracy"]["mean"] == 0
    assert report["pinned"]["user"] == {"backend": "openai", "model": "user-sim", "temperature": 1.0}
    assert report["pinned"]["judge"]["temperature"] == 0.0
    markdown = (tmp_path / "out" / "eval" / "report.md").read_text()
    assert "| asker - direct | 6 |" in markdown
    assert "asker" in result.output and "Δ asker" in result.output


def test_eval_rejects_a_bad_policy_spec(tmp_path):
    recipe = math_recipe("http://127.0.0.1:9/v1", tmp_path / "out")
    path = write_recipe(tmp_path / "r.yaml", recipe)
    result = CliRunner().invoke(app, ["eval", str(path), "--policy", "name=x,temperature=hot"])
    assert result.exit_code == 2 and "--policy" in result.output and "temperature" in result.output


def test_eval_refuses_the_training_seeds_of_a_local_source_without_a_split(tmp_path):
    with FakeLLMServer() as server:
        install_math(server)
        recipe = math_recipe(server.base_url, tmp_path / "out")
        recipe["eval"] = {"limit": 2, "max_turns": 2, "bootstrap": 200}
        path = write_recipe(tmp_path / "r.yaml", recipe)
        args = ["eval", str(path), "--policy", "name=direct,model=direct"]
        result = CliRunner().invoke(app, args)
        assert server.calls == [] and not (tmp_path / "out" / "eval").exists()
        server.set_script("direct", direct)
        on_purpose = CliRunner().invoke(app, [*args, "--set", "eval.on_training_seeds=true"])
        assert on_purpose.exit_code == 0, on_purpose.output
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1) if row.startswith("eval:"))
    assert f"{path}:{line}: eval.source: not set" in text
    assert "would score the seeds the run trains on" in text
    assert all(hint in text for hint in ("task.source.select.split", "eval.on_training_seeds: true"))


def test_on_training_seeds_is_left_out_of_dumps_at_its_default(tmp_path):
    data = math_recipe("http://127.0.0.1:9/v1", tmp_path / "out")
    assert "on_training_seeds" not in Recipe.from_dict(data).model_dump()["eval"]
    data["eval"] = {"on_training_seeds": True}
    assert Recipe.from_dict(data).model_dump()["eval"]["on_training_seeds"] is True


@pytest.mark.parametrize(("task_limit", "eval_offset", "refused"), [(None, 10, True), (4, 3, True), (4, 4, False)])
def test_eval_past_the_training_rows_is_held_out(tmp_path, task_limit, eval_offset, refused):
    from collabgen.engine.evaluation import eval_task_config

    data = math_recipe("http://127.0.0.1:9/v1", tmp_path / "out", **{"task.limit": task_limit})
    data["eval"] = {"offset": eval_offset, "limit": 2}
    recipe = Recipe.from_dict(data)
    if refused:
        with pytest.raises(RecipeError, match="would score the seeds the run trains on"):
            eval_task_config(recipe)
    else:
        assert eval_task_config(recipe).offset == eval_offset
