"""The final answer is the one the assistant stands by last, not its latest box anywhere.

Collaboration produces corrections: the assistant boxes 58, the user asks whether 7*8 is
right, the assistant says "you're right, the answer is 60". A box in an earlier message is
not the final answer then; the judge extracts it. Run end to end on the scripted server.
"""

from __future__ import annotations

import json
import re

import polars as pl
from typer.testing import CliRunner

from collabgen.cli import app
from tests.fakeserver import FakeLLMServer, ScriptCall
from tests.helpers import math_recipe, write_recipe
from tests.scripts import JUDGE, POLICY, USER, judge, say, sim_view

PROBLEM = "What is 7 \\times 8 + 4?"
EXTRACT_ASK = "What final answer did the ASSISTANT give last?"


def corrected_policy(call: ScriptCall) -> str:
    """Boxes a slip first; asked about it, corrects itself in words, with no box."""
    if any("looks off" in m["content"] for m in call.messages if m["role"] == "user"):
        return "You're right, 7 times 8 is 56, so the answer is 60."
    return "7 times 8 is 54, plus 4: $\\boxed{58}$."


def doubting_user(call: ScriptCall) -> str:
    view = sim_view(call)
    if view.opening:
        return say(f"can you help me with {PROBLEM}")
    return say("7*8 looks off?")


def extracting_judge(call: ScriptCall) -> str:
    prompt = call.messages[-1]["content"]
    if EXTRACT_ASK in prompt:
        stated = re.findall(r"the answer is (\d+)", prompt)
        return json.dumps({"answer": stated[-1] if stated else ""})
    return judge(call)


def test_a_box_the_assistant_corrected_later_is_not_its_final_answer(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"problem": PROBLEM, "answer": "60"}) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    with FakeLLMServer() as server:
        server.set_script(POLICY, corrected_policy)
        server.set_script(USER, doubting_user)
        server.set_script(JUDGE, extracting_judge)
        recipe = math_recipe(server.base_url, out, **{
            "task.source.path": str(seeds), "generation.max_turns": 1, "generation.window": 2,
            "generation.proactive_share": 0.0})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", recipe))])
        assert result.exit_code == 0, result.output
        extraction_asks = [c for c in server.ok_calls(JUDGE) if EXTRACT_ASK in c.body["messages"][-1]["content"]]
    candidates = pl.read_parquet(sorted((out / "candidates").glob("*.parquet")))
    futures = [f for row in candidates.iter_rows(named=True) for f in row["futures"]]
    assert futures and all("the answer is 60" in f["messages"][-1]["content"] for f in futures)
    assert [f["metrics"]["accuracy"] for f in futures] == [1.0] * len(futures)  # was 0.0: the stale \boxed{58}
    assert extraction_asks  # was none: the judge was never asked (identical futures share one cached call)


def test_a_box_in_the_last_message_is_read_without_the_judge(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"problem": PROBLEM, "answer": "58"}) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    with FakeLLMServer() as server:
        server.set_script(POLICY, lambda call: "It is $\\boxed{58}$.")
        server.set_script(USER, doubting_user)
        server.set_script(JUDGE, extracting_judge)
        recipe = math_recipe(server.base_url, out, **{
            "task.source.path": str(seeds), "generation.max_turns": 1, "generation.window": 2,
            "generation.proactive_share": 0.0})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", recipe))])
        assert result.exit_code == 0, result.output
        extraction_asks = [c for c in server.ok_calls(JUDGE) if EXTRACT_ASK in c.body["messages"][-1]["content"]]
    candidates = pl.read_parquet(sorted((out / "candidates").glob("*.parquet")))
    futures = [f for row in candidates.iter_rows(named=True) for f in row["futures"]]
    assert [f["metrics"]["accuracy"] for f in futures] == [1.0] * len(futures)
    assert extraction_asks == []
