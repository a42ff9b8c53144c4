"""Replies cut at their token budget are asked again with a larger one, then flagged and never chosen."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import polars as pl
import pytest

from collabgen.app.generate import run_async
from collabgen.models.base import ChatRequest, ChatResult
from collabgen.output.manifest import Manifest
from collabgen.tasks.recipe_check import load_recipe
from tests import scripts
from tests.fakeserver import FakeLLMServer, Reply, ScriptCall
from tests.helpers import math_recipe
from tests.scripted_backend import ScriptedBackend, Seen
from tests.scripts import POLICY, USER, install_math

UNUSED = "http://127.0.0.1:9/v1"


class CuttingPolicy(ScriptedBackend):
    """The plain policy's candidates run long: cut below `fits` tokens of budget.

    Proactive candidates (the ones sampled with a system prompt) and every reply inside a
    future are short and never cut.
    """

    def __init__(self, fits: int, base: ScriptedBackend) -> None:
        super().__init__("policy", script=base._script, log=base.log)
        self.fits = fits

    async def complete(self, request: ChatRequest) -> ChatResult:
        self.log.append(Seen(self.role, request))
        plain_candidate = request.stage == "candidates" and request.messages[0]["role"] != "system"
        cut = plain_candidate and (request.max_tokens or 0) < self.fits
        text = f"long answer budget={request.max_tokens} seed={request.seed}"
        return ChatResult(texts=[text] * request.n, prompt_tokens=10, completion_tokens=[5] * request.n,
                          finish_reasons=["length" if cut else "stop"] * request.n)


def backends(fits: int) -> dict[str, ScriptedBackend]:
    base = ScriptedBackend("judge")
    base.on("interactivity", json.dumps({"thought": "ok", "interactivity": 0.5}))
    base.on("extraction", json.dumps({"answer": ""}))  # no boxed answer: the judge finds none either
    return {"policy": CuttingPolicy(fits, base), "user": base.for_role("user"), "judge": base.for_role("judge")}


def run(tmp_path, fits: int, **overrides) -> tuple[object, dict[str, ScriptedBackend]]:
    data = math_recipe(UNUSED, tmp_path / "out", **{"task.limit": 1, "generation.max_turns": 1,
                                                     "models.policy.max_tokens": 20, **overrides})
    used = backends(fits)
    report = asyncio.run(run_async(load_recipe(data), backends=used, progress=False))
    return report, used


def test_a_cut_reply_is_asked_again_with_twice_the_budget_and_kept_when_it_fits(tmp_path):
    report, used = run(tmp_path, fits=40)
    budgets = [r.max_tokens for r in used["policy"].requests("candidates") if r.messages[0]["role"] != "system"]
    assert budgets == [20, 40]
    candidates = pl.read_parquet(tmp_path / "out" / "candidates")
    assert not candidates["truncated"].any()
    assert report.ok == 1


def test_a_reply_still_cut_at_the_cap_is_flagged_never_chosen_and_counted(tmp_path):
    report, used = run(tmp_path, fits=10_000)  # never fits: 20 -> 40 -> 80 (the default cap, 4 x 20)
    budgets = [r.max_tokens for r in used["policy"].requests("candidates") if r.messages[0]["role"] != "system"]
    assert budgets == [20, 40, 80]
    candidates = pl.read_parquet(tmp_path / "out" / "candidates")
    cut = candidates.filter(pl.col("truncated"))
    assert cut.height == 1 and not cut["chosen"].any() and cut["flags"].to_list() == [["truncated"]]
    manifest = Manifest.read(tmp_path / "out")
    assert manifest.flags is not None and manifest.flags["truncated_candidates"] == 1
    pairs = pl.read_parquet(tmp_path / "out" / "pairs")
    assert cut["response"][0] not in [row[0]["content"] for row in pairs["chosen"].to_list()]
    assert report.ok == 1


def test_a_turn_where_every_candidate_is_cut_fails_the_conversation_with_the_reason(tmp_path):
    report, _ = run(tmp_path, fits=10_000, **{"generation.proactive_share": 0.0})
    assert report.failed == 1 and report.exit_code == 1
    assert "truncated" in report.failures[0]["reason"]


# --------------------------------------------------------------------------- JSON replies, over the wire


def cut_below(fits: int) -> Callable[[ScriptCall], str | Reply]:
    """The simulated user's JSON runs long: with a budget under `fits` tokens it stops half
    way (finish_reason length / stop_reason max_tokens), else it is the math user's reply."""

    def script(call: ScriptCall) -> str | Reply:
        budget = call.body.get("max_tokens") or 0
        if budget < fits:
            return Reply(scripts.math_user(call)[:25], finish_reason="length")
        return scripts.math_user(call)

    return script


def run_cut_user(tmp_path, protocol: str, fits: int) -> tuple[object, FakeLLMServer]:
    with FakeLLMServer() as server:
        install_math(server)
        server.set_script(USER, cut_below(fits))
        data = math_recipe(server.base_url, tmp_path / "out", **{"task.limit": 1, "generation.max_turns": 1,
                                                                  "models.user.max_tokens": 50})
        if protocol == "anthropic":
            data["models"]["user"].update(backend="anthropic", base_url=server.anthropic_base_url,
                                          api_key_env="COLLABGEN_TEST_ANTHROPIC_KEY")
        report = asyncio.run(run_async(load_recipe(data), progress=False))
    return report, server


@pytest.fixture
def anthropic_key(monkeypatch):
    monkeypatch.setenv("COLLABGEN_TEST_ANTHROPIC_KEY", "sk-ant-test")


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_cut_json_reply_is_asked_again_with_twice_the_budget_and_parsed_when_it_fits(tmp_path, protocol,
                                                                                       anthropic_key):
    report, server = run_cut_user(tmp_path, protocol, fits=100)
    opening = server.ok_calls(USER)[:2]
    assert [c.body["max_tokens"] for c in opening] == [50, 100]
    assert opening[0].body["messages"] == opening[1].body["messages"]
    assert report.ok == 1 and report.failed == 0
    manifest = Manifest.read(tmp_path / "out")
    assert manifest.usage.by_role["user"].failures == 0


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_json_reply_still_cut_at_the_cap_fails_the_conversation_as_truncated(tmp_path, protocol, anthropic_key):
    report, server = run_cut_user(tmp_path, protocol, fits=10_000)  # never fits: 50 -> 100 -> 200 (4 x 50)
    assert [c.body["max_tokens"] for c in server.ok_calls(USER)] == [50, 100, 200]  # not asked again at 200
    assert report.failed == 1 and report.exit_code == 1
    reason = report.failures[0]["reason"]
    assert reason.startswith("truncated: user") and "max_tokens=200" in reason and "user_open" in reason
    assert "format" not in reason
    assert server.ok_calls(POLICY) == []


def test_larger_budgets_do_not_use_up_transport_retries(tmp_path, anthropic_key):
    """With no transport retry left, a cut reply is still asked again at each larger budget."""
    with FakeLLMServer() as server:
        install_math(server)
        server.set_script(USER, cut_below(200))
        data = math_recipe(server.base_url, tmp_path / "out", **{
            "task.limit": 1, "generation.max_turns": 1, "models.user.max_tokens": 50, "models.user.max_retries": 0})
        report = asyncio.run(run_async(load_recipe(data), progress=False))
    assert [c.body["max_tokens"] for c in server.ok_calls(USER)][:3] == [50, 100, 200]
    assert report.ok == 1, report.failures
