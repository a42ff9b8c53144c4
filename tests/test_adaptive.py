"""Adaptive futures (`generation.adaptive`): the racing rule, and runs against the scripted server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from collabgen.app.generate import run_async
from collabgen.config.recipe import GenerationConfig
from collabgen.engine.confidence import sample_std
from collabgen.engine.multiturn_reward import Scorer
from collabgen.engine.racing import candidate_options, contenders, next_round, race_round
from collabgen.engine.records import Candidate, Future
from collabgen.engine.selection import Option, Selection, select_pairs
from collabgen.models.executor import request_seed
from collabgen.tasks.base import USER_DRIFT
from collabgen.tasks.recipe_check import load_recipe
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, read_shards, write_recipe
from tests.scripts import USER, install_math

ROOT = Path(__file__).resolve().parent.parent


def option(index: int, scores: list[float], eligible: bool = True) -> Option:
    return Option(index=index, score=sum(scores) / len(scores), text=f"reply {index}", eligible=eligible,
                  std=sample_std(scores), futures=len(scores))


# --------------------------------------------------------------------------- the rule


def test_a_dominating_candidate_ends_the_race_at_once():
    turn = [option(0, [0.2, 0.2]), option(1, [1.2, 1.2]), option(2, [0.1, 0.3])]
    assert contenders(turn, 0.9) == [1]
    assert next_round(turn, 0.9, max_futures=6) == []


def test_a_close_race_goes_on_until_max_futures():
    turn = [option(0, [1.0, 0.0]), option(1, [0.0, 1.0])]
    assert next_round(turn, 0.9, max_futures=6) == [0, 1]
    at_max = [option(0, [1.0, 0.0, 1.0, 0.0]), option(1, [0.0, 1.0, 0.0, 1.0])]
    assert next_round(at_max, 0.9, max_futures=4) == []


def test_only_candidates_that_can_still_win_get_another_future():
    best, close, beaten = [1.0, 0.9, 1.0], [0.95, 1.0, 0.9], [0.0, 0.1, 0.0]
    turn = [option(0, beaten), option(1, best), option(2, close)]
    assert next_round(turn, 0.9, max_futures=6) == [1, 2]
    # a contender already at max_futures waits while the other catches up
    turn = [option(0, beaten), option(1, best + [1.0]), option(2, close)]
    assert next_round(turn, 0.9, max_futures=4) == [2]


def test_the_rule_stops_exactly_where_the_confidence_column_reaches_the_asked_confidence():
    for gap in [x / 20 for x in range(1, 20)]:
        turn = [option(0, [1.0, 0.6, 0.8]), option(1, [1.0 - gap, 0.6 - gap, 0.9 - gap])]
        [(_, _, sure)] = select_pairs(turn, Selection(min_gap=0.0))
        assert (next_round(turn, 0.9, max_futures=6) == []) == (sure.confidence >= 0.9), gap


def test_unknown_noise_separates_nothing():
    turn = [option(0, [1.0]), option(1, [0.0])]  # one future each: no variance to test with
    assert next_round(turn, 0.9, max_futures=3) == [0, 1]


def test_a_candidate_that_may_not_be_chosen_never_contends():
    turn = [option(0, [2.0, 2.0], eligible=False), option(1, [1.0, 0.0]), option(2, [0.0, 1.0], eligible=False)]
    assert contenders(turn, 0.9) == [1]
    assert next_round(turn, 0.9, max_futures=6) == []
    assert contenders([option(0, [1.0, 1.0], eligible=False)], 0.9) == []


def test_drifted_futures_count_against_max_futures_but_not_in_the_estimate():
    def future(score: float, drifted: bool = False) -> Future:
        return Future(messages=[], tokens=[], terminated=False, score=score, flags=[USER_DRIFT] if drifted else [])

    a = Candidate(text="a", tokens=1, proactive=False, futures=[future(1.0), future(0.0), future(9.0, drifted=True)])
    b = Candidate(text="b", tokens=1, proactive=False, futures=[future(0.0), future(1.0)])
    for c in (a, b):
        Scorer.aggregate(c)
    assert [(o.score, o.futures) for o in candidate_options([a, b])] == [(0.5, 2), (0.5, 2)]  # as the rows say
    assert race_round([a, b], 0.9, max_futures=3) == [1]  # a has sampled its three


def test_adaptive_settings_are_checked_and_left_out_of_dumps_when_unset():
    assert "adaptive" not in GenerationConfig().model_dump()
    assert GenerationConfig(adaptive={"min_futures": 2, "max_futures": 4}).first_futures() == 2
    with pytest.raises(ValueError, match="max_futures"):
        GenerationConfig(adaptive={"min_futures": 4, "max_futures": 3})
    with pytest.raises(ValueError):
        GenerationConfig(adaptive={"confidence": 0.5})


# --------------------------------------------------------------------------- runs


def adaptive_run(tmp_path: Path, name: str, server: FakeLLMServer, **overrides: Any) -> Path:
    """A small math run (2 conversations, 2 turns, C = 2) against the scripted server."""
    out = tmp_path / name
    settings = {"task.limit": 2, "generation.max_turns": 2, "generation.conversations": 2, **overrides}
    recipe = load_recipe(write_recipe(tmp_path / f"{name}.yaml", math_recipe(server.base_url, out, **settings)))
    report = asyncio.run(run_async(recipe, progress=False))
    assert report.exit_code == 0 and report.ok == report.seeds
    return out


def shards(out: Path) -> dict[str, pl.DataFrame]:
    return {config: read_shards(out, config) for config in ("pairs", "sft", "candidates")}


def later_round_seeds(candidates: pl.DataFrame, first: int, last: int) -> dict[int, tuple[str, int, int, int]]:
    """The sample seed of the first user reply of every future index in first..last-1 a
    turn's candidates could get: a pure function of (conversation, turn, candidate, index)."""
    return {
        request_seed(0, row["conv_id"], row["turn"], row["candidate"], "future-user", s):
            (row["conv_id"], row["turn"], row["candidate"], s)
        for row in candidates.iter_rows(named=True) for s in range(first, last)
    }


def seeds_asked(server: FakeLLMServer) -> list[int]:
    return [c.body.get("seed") for c in server.ok_calls(USER)]


# The scripted judge rates a window 0.9 when an assistant line asks a question, else 0.2:
# the proactive candidate (a clarifying question) beats the plain answer in every future.
ONE_DOMINATES = {"reward.weights": {"interactivity": 1.0, "token_penalty": 1.0}}
# Two plain answers and interactivity alone: every future of every candidate scores 0.2.
DEAD_HEAT = {"reward.weights": {"interactivity": 1.0}, "generation.proactive_share": 0.0}


def test_a_dominating_candidate_stops_after_min_futures(tmp_path):
    with FakeLLMServer() as server:
        install_math(server)
        fixed = adaptive_run(tmp_path, "fixed", server, **ONE_DOMINATES, **{"generation.futures": 2})
        fixed_calls = len(server.ok_calls())
        server.reset()
        adaptive = adaptive_run(tmp_path, "adaptive", server, **ONE_DOMINATES, **{
            "generation.futures": 3, "generation.adaptive": {"min_futures": 2, "max_futures": 6, "confidence": 0.9}})
        rows = shards(adaptive)
        assert set(rows["candidates"]["n_futures"]) == {2}
        assert not set(later_round_seeds(rows["candidates"], 2, 6)) & set(seeds_asked(server))
        assert len(server.ok_calls()) == fixed_calls  # the same requests as a fixed S = min_futures run
    for config, frame in shards(fixed).items():
        assert frame.equals(rows[config]), config
    assert rows["pairs"].height > 0 and (rows["pairs"]["confidence"] >= 0.9).all()


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh", "reuse_futures"])
def test_a_close_race_goes_to_max_futures_with_one_request_per_later_future(tmp_path, reuse):
    with FakeLLMServer() as server:
        install_math(server)
        out = adaptive_run(tmp_path, "race", server, **DEAD_HEAT, **{
            "generation.adaptive": {"min_futures": 2, "max_futures": 4, "confidence": 0.9},
            "generation.reuse_futures": reuse})
        rows = shards(out)
        assert set(rows["candidates"]["n_futures"]) == {4}
        assert rows["candidates"]["reused"].any() == reuse  # a reused candidate's partial future is its first
        later = later_round_seeds(rows["candidates"], 2, 4)
        asked = [seed for seed in seeds_asked(server) if seed in later]
        assert sorted(asked) == sorted(later)  # each later future: one request, once
        assert rows["pairs"].height == 0  # a dead heat: no gap to learn from


def test_a_rerun_of_an_adaptive_run_cut_mid_way_makes_no_new_call_and_no_duplicate_row(tmp_path):
    with FakeLLMServer() as server:
        install_math(server)
        settings = {**DEAD_HEAT, "generation.adaptive": {"min_futures": 2, "max_futures": 4, "confidence": 0.9}}
        out = adaptive_run(tmp_path, "race", server, **settings)
        before = shards(out)
        calls = len(server.calls)
        # A kill -9 mid-way: the journal keeps the turns finished before it, the cache every answer.
        journal = out / ".collabgen" / "journal.jsonl"
        records = journal.read_text().splitlines(keepends=True)
        journal.write_text("".join(records[:1]))
        adaptive_run(tmp_path, "race", server, **settings)
        assert len(server.calls) == calls
    after = shards(out)
    for config, frame in before.items():
        assert frame.equals(after[config]), config
    keys = after["candidates"].select("conv_id", "turn", "candidate")
    assert keys.height == keys.unique().height


@pytest.mark.slow
def test_a_run_killed_mid_round_resumes_to_the_same_rows_without_asking_answered_futures_again(tmp_path):
    settings = {"task.limit": 3, "generation.max_turns": 2, "generation.conversations": 1, **DEAD_HEAT,
                "generation.adaptive": {"min_futures": 2, "max_futures": 4, "confidence": 0.9}}
    with FakeLLMServer(latency=0.03) as server:
        install_math(server)
        reference = adaptive_run(tmp_path, "reference", server, **settings)
        later = later_round_seeds(read_shards(reference, "candidates"), 2, 4)
        server.reset()
        out = tmp_path / "out"
        recipe = write_recipe(tmp_path / "out.yaml", math_recipe(server.base_url, out, **settings))
        process = subprocess.Popen([sys.executable, "-m", "collabgen", "run", str(recipe)], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        journal = out / ".collabgen" / "journal.jsonl"
        # Mid-round: a later round's future asked, after the first turn was journaled.
        while not (journal.exists() and journal.read_text().count("\n") >= 1
                   and sum(c.body.get("seed") in later for c in server.calls) >= 3):
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        killed_at = time.monotonic()
        answered = {c.key for c in server.ok_calls() if c.finished and c.finished < killed_at - 0.5}
        before = len(server.calls)
        adaptive_run(tmp_path, "out", server, **settings)
        again = [c for c in server.calls[before:] if c.key in answered]
        assert again == [], "answered requests were asked again instead of read from the cache"
    rows = shards(out)
    for config, frame in shards(reference).items():
        assert frame.equals(rows[config]), config
    keys = rows["candidates"].select("conv_id", "turn", "candidate")
    assert keys.height == keys.unique().height
