"""A symbolic comparison math-verify cannot finish in `verify_seconds` is a flagged outcome
(`math_verify_timeout`, its candidate never chosen nor rejected), never a silent 0; it
runs in a separate process, so the event loop goes on meanwhile."""

from __future__ import annotations

import asyncio
import json
import time

from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.tasks.math_bounded import answers_match_bounded
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, read_shards, write_recipe
from tests.scripts import POLICY, USER, install_math, is_proactive, say, sim_view

HARD_GOLD, HARD_EQUAL = "10^{10^7}", "(10^{10^6})^{10}"


def test_a_slow_comparison_is_undecided_within_its_bound_and_does_not_block_the_loop():
    async def main() -> tuple[bool | None, int, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        beat = asyncio.ensure_future(ticker())
        started = time.monotonic()
        outcome = await answers_match_bounded(HARD_GOLD, HARD_EQUAL, 1.0)
        beat.cancel()
        return outcome, ticks, time.monotonic() - started

    outcome, ticks, elapsed = asyncio.run(main())
    assert outcome is None and elapsed < 3
    assert ticks >= 10  # the loop kept running while the child computed
    assert asyncio.run(answers_match_bounded("\\frac{1}{2}", "0.5", 5)) is True
    assert asyncio.run(answers_match_bounded("3", "4", 5)) is False


def test_a_math_verify_timeout_is_flagged_through_a_run_never_a_silent_zero(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"problem": "What is ten to the ten million?", "answer": HARD_GOLD}) + "\n")
    with FakeLLMServer() as server:
        install_math(server)
        server.set_script(POLICY, lambda call: "Exact or decimal?" if is_proactive(call)
                          else f"The answer is $\\boxed{{{HARD_EQUAL}}}$.")
        out = tmp_path / "out"
        recipe = math_recipe(server.base_url, out, **{"task.source.path": str(seeds), "generation.max_turns": 1,
                                                     "task.options": {"verify_seconds": 1.0}})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", recipe))])
    # Every future ends on the hard answer, so no candidate has a decided score: the
    # conversation fails with the reason (before: accuracy 0 for all, exit 0, no flag).
    assert result.exit_code == 1, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["conversations_failed"] == 1
    reason = " ".join(f["reason"] for f in manifest["failures"])
    assert "could not decide" in reason and "no choosable candidate" in reason
    assert not (out / "candidates").exists() or read_shards(out, "candidates").height == 0


def test_an_undecided_candidate_is_flagged_and_never_chosen_while_a_decided_one_is(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"problem": "What is ten to the ten million?", "answer": HARD_GOLD}) + "\n")

    def user(call):
        view = sim_view(call)
        return say("what is ten to the ten million?") if view.opening else say("ok bye", satisfied=True, why="done")

    with FakeLLMServer() as server:
        install_math(server)
        server.set_script(USER, user)
        server.set_script(POLICY, lambda call: "Exact or decimal?" if is_proactive(call)
                          else f"The answer is $\\boxed{{{HARD_EQUAL}}}$.")
        out = tmp_path / "out"
        recipe = math_recipe(server.base_url, out, **{"task.source.path": str(seeds), "generation.max_turns": 1,
                                                     "task.options": {"verify_seconds": 1.0}})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", recipe))])
    assert result.exit_code == 0, result.output
    rows = {row["proactive"]: row for row in read_shards(out, "candidates").iter_rows(named=True)}
    assert "math_verify_timeout" in rows[False]["flags"] and not rows[False]["chosen"]
    assert "math_verify_timeout" not in rows[True]["flags"] and rows[True]["chosen"]
    assert json.loads((out / "manifest.json").read_text())["flags"]["math_verify_timeout_futures"] > 0
