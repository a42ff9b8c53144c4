"""`collabgen plan` counts the calls a real run makes.

Plan runs the engine's own loop on a counting backend; these tests hold it to a real run
of the engine on an in-process scripted backend (keyed by role and stage, not by prompt
wording) whose simulated user never ends the chat and whose replies never repeat: the
case the plan's upper bound describes, so the two counts must be equal.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from collabgen.app.context import prepare
from collabgen.app.generate import run_async
from collabgen.app.plan import plan_run
from collabgen.tasks.recipe_check import load_recipe
from tests.helpers import SEEDS, math_recipe, recipe_from_file
from tests.scripted_backend import ScriptedBackend

UNUSED = "http://127.0.0.1:9/v1"  # nothing listens: the scripted backend answers instead


def scripted_roles() -> dict[str, ScriptedBackend]:
    base = ScriptedBackend("judge")
    base.on("interactivity", lambda request, _: json.dumps({"thought": request.messages[-1]["content"][-40:],
                                                            "interactivity": 0.5}))
    # one reply serves both extraction schemas: the document task reads `document`, math `answer`
    base.on("extraction", lambda request, _: json.dumps({"document": f"draft {request.seed}", "answer": "7"}))
    return {role: base.for_role(role) for role in ("policy", "user", "judge")}


def counted_run(recipe_data: dict) -> tuple[float, float, dict[str, ScriptedBackend]]:
    recipe = load_recipe(recipe_data)
    backends = scripted_roles()
    report = asyncio.run(run_async(recipe, backends=backends, progress=False))
    assert report.exit_code == 0 and report.ok == report.seeds
    served = len(backends["policy"].log)
    planned = asyncio.run(plan_run(prepare(recipe, check_keys=False)))
    return served / report.seeds, planned.calls_per_conversation, backends


@pytest.mark.parametrize("reuse", [True, False])
def test_plan_equals_the_calls_of_a_run_that_plays_every_turn(tmp_path, reuse):
    data = math_recipe(UNUSED, tmp_path / "out", **{"generation.reuse_futures": reuse, "task.limit": 2})
    served, planned, backends = counted_run(data)
    assert served == planned
    # The scripted user never ended a chat: every conversation played every turn.
    assert {r.stage for r in backends["policy"].requests()} >= {"candidates", "future_policy", "interactivity"}


def test_plan_counts_a_task_metric_that_calls_the_judge(tmp_path):
    data = recipe_from_file("mediumdoc", UNUSED, tmp_path / "out", SEEDS / "document.jsonl",
                            **{"generation.max_turns": 2, "task.limit": 2})
    served, planned, backends = counted_run(data)
    assert served == planned
    assert backends["judge"].requests(stage="extraction", role="judge")


def test_plan_makes_no_call_and_needs_no_server(tmp_path):
    recipe = load_recipe(math_recipe(UNUSED, tmp_path / "out"))
    plan = asyncio.run(plan_run(prepare(recipe)))
    assert plan.seeds == 6 and plan.calls_per_conversation > 0
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["mediumdoc", "bigcodebench", "math", "eval/abgcoqa", "collabllm/math",
                                  "collabllm/mediumdoc", "collabllm/bigcodebench", "paper/math",
                                  "paper/mediumdoc", "paper/bigcodebench"])
def test_plan_on_a_shipped_recipe_opens_no_network_and_says_what_it_did_not_check(name, monkeypatch):
    import datasets
    from typer.testing import CliRunner

    from collabgen.cli import app
    from tests.helpers import RECIPES

    def no_hub(*args, **kwargs):
        raise AssertionError("plan must not open a Hub dataset")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    result = CliRunner().invoke(app, ["plan", str(RECIPES / f"{name}.yaml")])
    assert result.exit_code == 0, result.output
    assert "not checked:" in result.output and "task.limit" in result.output


def plan_output(data: dict, tmp_path) -> str:
    from typer.testing import CliRunner

    from collabgen.cli import app
    from tests.helpers import write_recipe

    result = CliRunner().invoke(app, ["plan", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # rich wraps long lines


def test_plan_warns_when_a_roles_budget_cannot_hold_the_bounded_fields_of_its_schema(tmp_path):
    # The simulator's schema: a 400-character thought, a 1,200-character message.
    fields = len(json.dumps({"thought": "x" * 400, "satisfied": False, "message": "x" * 1200}))
    tokens = -(-fields // 3)
    data = math_recipe(UNUSED, tmp_path / "out", **{"models.user.max_tokens": 48, "models.judge.max_tokens": 48})
    text = plan_output(data, tmp_path)
    assert (f"warning: models.user.max_tokens 48 may not hold its JSON reply at stage 'user_open', 'future_user': "
            f"the schema's bounded fields allow {fields:,} characters, about {tokens:,} tokens at 3 characters per "
            f"token") in text
    assert "max_tokens_cap 192 cannot hold it either" in text
    assert "models.judge" not in text and "models.policy" not in text  # judges' schemas bound no field

    data["models"]["user"]["max_tokens_cap"] = 1024
    assert "asked again with larger budgets up to max_tokens_cap 1024" in plan_output(data, tmp_path)
    data["models"]["user"]["max_tokens"] = tokens
    assert "warning:" not in plan_output(data, tmp_path)


def test_plan_with_adaptive_futures_counts_every_race_run_to_max_futures_and_says_it_is_an_upper_bound(
    tmp_path, monkeypatch,
):
    adaptive = {"min_futures": 2, "max_futures": 5, "confidence": 0.9}
    data = math_recipe(UNUSED, tmp_path / "out", **{"generation.adaptive": adaptive, "task.limit": 2})
    # The scripted judge rates every window alike, so the run's races run to max_futures too.
    served, planned, _ = counted_run(data)
    assert served == planned
    # Even where the rule would stop every race at once, plan counts max_futures.
    monkeypatch.setattr("collabgen.engine.collaboration.race_round", lambda *args: [])
    assert asyncio.run(plan_run(prepare(load_recipe(data), check_keys=False))).calls_per_conversation == planned
    fixed = asyncio.run(plan_run(prepare(load_recipe(
        math_recipe(UNUSED, tmp_path / "out", **{"generation.futures": 2, "task.limit": 2})), check_keys=False)))
    assert planned > fixed.calls_per_conversation
    # The lower bound: every race stopped after its first round is a fixed S of min_futures.
    bounds = asyncio.run(plan_run(prepare(load_recipe(data), check_keys=False)))
    assert bounds.least_calls_per_conversation == fixed.calls_per_conversation
    assert fixed.least_calls_per_conversation is None
    text = plan_output(math_recipe(UNUSED, tmp_path / "out", **{"generation.adaptive": adaptive}), tmp_path)
    assert ("calls per conversation (upper bound, 3 turns, adaptive futures counted at max_futures 5 per candidate: "
            "a race stops once the best candidate is separated at confidence 0.9, after 2 futures at least)") in text
    assert "calls per conversation if every race stops after its first round (the lower bound" in text
