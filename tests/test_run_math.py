"""End to end: `collabgen run` on math seeds against the scripted server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import datasets
import polars as pl
import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.prompting import Prompts
from tests.fakeserver import FakeLLMServer, Faults
from tests.helpers import math_recipe, write_recipe
from tests.scripts import JUDGE, install_math, never_parsable_judge

ROW_SYSTEM = Prompts().render("row_system")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        install_math(fake)
        yield fake


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def read(out: Path, config: str) -> pl.DataFrame:
    return pl.read_parquet(sorted((out / config).glob("*.parquet")))


def test_run_writes_trainer_ready_pairs_sft_and_candidates(server, tmp_path):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "math.yaml", math_recipe(server.base_url, out))
    result = run_cli("run", str(recipe))
    assert result.exit_code == 0, result.output

    pairs = datasets.load_dataset("parquet", data_files=str(out / "pairs" / "*.parquet"), split="train")
    assert set(pairs.column_names) >= {"prompt", "chosen", "rejected", "score_chosen", "score_rejected",
                                       "conv_id", "turn", "task", "metrics_chosen", "metrics_rejected"}
    assert len(pairs) > 0
    for row in pairs:
        assert row["prompt"][0] == {"role": "system", "content": ROW_SYSTEM}  # the default row system prompt
        assert row["prompt"][-1]["role"] == "user"
        assert [m["role"] for m in row["chosen"]] == ["assistant"]
        assert [m["role"] for m in row["rejected"]] == ["assistant"]
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
        assert row["score_chosen"] - row["score_rejected"] >= 0.02
        assert set(row["metrics_chosen"]) == {"accuracy", "interactivity", "token_penalty"}

    # The card's configs make the folder loadable by name, as after a push.
    by_config = datasets.load_dataset(str(out), "pairs", split="train")
    assert len(by_config) == len(pairs)

    sft = read(out, "sft")
    assert sft.height == 6  # one trajectory per seed
    for messages in sft["messages"].to_list():
        roles = [m["role"] for m in messages]
        assert messages[0] == {"role": "system", "content": ROW_SYSTEM}
        assert roles[1] == "user" and roles[-1] == "assistant"
        assert all(a != b for a, b in zip(roles, roles[1:])), roles
        assert not any("[[TERMINATE CHAT]]" in m["content"] for m in messages)

    candidates = read(out, "candidates")
    per_turn = candidates.group_by("conv_id", "turn").agg(pl.len().alias("n"), pl.col("chosen").sum().alias("k"))
    assert per_turn["n"].unique().to_list() == [2] and per_turn["k"].unique().to_list() == [1]
    # MR is the mean over futures of the weighted metric sum.
    row = candidates.row(0, named=True)
    weights = {"accuracy": 1.0, "interactivity": 0.5, "token_penalty": 1.0}
    futures = row["futures"]
    assert len(futures) == 2
    expected = sum(sum(weights[k] * v for k, v in f["metrics"].items()) for f in futures) / len(futures)
    assert row["score"] == pytest.approx(expected)
    # Token penalty: -lambda * assistant tokens, from the server's usage figures.
    assert -1.0 <= row["metrics"]["token_penalty"] < 0

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["pairs"] == len(pairs)
    assert manifest["counts"]["conversations_ok"] == 6
    assert manifest["counts"]["conversations_failed"] == 0
    assert manifest["usage"]["by_role"]["policy"]["calls"] == len(server.ok_calls("policy-model"))
    assert manifest["usage"]["by_role"]["judge"]["completion_tokens"] > 0
    assert manifest["versions"]["collabgen"]


def test_candidates_come_in_one_request_with_n(server, tmp_path):
    out = tmp_path / "out"
    recipe = math_recipe(server.base_url, out, **{
        "generation.proactive_share": 0.0, "generation.candidates": 3, "generation.reuse_futures": False})
    result = run_cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert result.exit_code == 0, result.output
    candidate_calls = [c for c in server.ok_calls("policy-model") if c.body.get("n", 1) == 3]
    turns = read(out, "candidates").select("conv_id", "turn").unique().height
    assert len(candidate_calls) == turns


def test_the_chosen_future_serves_as_a_next_turn_candidate(server, tmp_path):
    """The next user turn comes from the chosen candidate's longest future, so that future's
    assistant reply was sampled on exactly the next turn's history: it is reused."""
    with_reuse, without = tmp_path / "reuse", tmp_path / "plain"
    recipe = math_recipe(server.base_url, with_reuse, **{"generation.reuse_futures": True})
    assert run_cli("run", str(write_recipe(tmp_path / "a.yaml", recipe))).exit_code == 0
    reuse_calls = len(server.calls)
    recipe = math_recipe(server.base_url, without, **{"generation.reuse_futures": False})
    assert run_cli("run", str(write_recipe(tmp_path / "b.yaml", recipe))).exit_code == 0
    plain_calls = len(server.calls) - reuse_calls
    assert reuse_calls < plain_calls

    candidates = read(with_reuse, "candidates")
    by_key = {(r["conv_id"], r["turn"], r["candidate"]): r for r in candidates.iter_rows(named=True)}
    reused = [r for r in by_key.values() if r["reused"]]
    assert reused and all(r["turn"] > 0 and not r["proactive"] for r in reused)
    for row in reused:
        chosen = next(r for r in by_key.values()
                      if r["conv_id"] == row["conv_id"] and r["turn"] == row["turn"] - 1 and r["chosen"])
        lead = [len(f["messages"]) for f in chosen["futures"]]
        lead_messages = chosen["futures"][lead.index(max(lead))]["messages"]
        assert row["response"] == lead_messages[1]["content"]
        assert row["prompt"][-1]["content"] == lead_messages[0]["content"]
        # The rest of that future is the reused candidate's first future, extended to the window.
        assert row["futures"][0]["messages"][: len(lead_messages) - 2] == lead_messages[2:]
        assert len(row["futures"]) == 2


def test_rerun_is_free_and_identical(server, tmp_path):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "math.yaml", math_recipe(server.base_url, out))
    assert run_cli("run", str(recipe)).exit_code == 0
    first = {c: read(out, c) for c in ("pairs", "sft", "candidates")}
    calls = len(server.calls)
    # Discard the journal: every turn replays, answered by the request cache.
    (out / ".collabgen" / "journal.jsonl").unlink()
    assert run_cli("run", str(recipe)).exit_code == 0
    assert len(server.calls) == calls
    for config, frame in first.items():
        assert read(out, config).equals(frame), config


def test_thirty_percent_faults_still_complete_every_conversation(server, tmp_path):
    server.faults = Faults(rate=0.3, kinds=("429", "500", "malformed", "empty", "truncated"), retry_after=0.01)
    out = tmp_path / "out"
    recipe = math_recipe(server.base_url, out)
    for role in ("policy", "user", "judge"):
        recipe["models"][role].update({"retry_wait": 0.01, "retry_max_wait": 0.05, "max_retries": 8})
    result = run_cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert result.exit_code == 0, result.output
    faulted = [c for c in server.calls if c.fault]
    assert len(faulted) > 30
    assert {c.fault for c in faulted} >= {"429", "500", "malformed", "empty"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["conversations_ok"] == 6
    assert read(out, "sft").height == 6
    assert sum(r["retries"] for r in manifest["usage"]["by_role"].values()) > 0


def test_timeouts_are_retried(server, tmp_path):
    server.faults = Faults(rate=0.1, kinds=("timeout",), slow_seconds=1.0, max_consecutive=1)
    out = tmp_path / "out"
    recipe = math_recipe(server.base_url, out, **{"task.limit": 2})
    for role in ("policy", "user", "judge"):
        recipe["models"][role].update({"timeout": 0.5, "retry_wait": 0.01, "retry_max_wait": 0.05})
    result = run_cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert result.exit_code == 0, result.output
    assert any(c.fault == "timeout" for c in server.calls)


def test_judge_that_never_parses_fails_conversations_visibly(server, tmp_path):
    server.set_script(JUDGE, never_parsable_judge)
    out = tmp_path / "out"
    recipe = math_recipe(server.base_url, out, **{"task.limit": 2})
    recipe["models"]["judge"]["parse_retries"] = 2
    result = run_cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert result.exit_code == 1
    assert "failed" in result.output and "no parsable JSON" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["conversations_failed"] == 2
    assert all("no parsable JSON" in f["reason"] for f in manifest["failures"])
    # The judge prompt that failed each conversation was asked 3 times with distinct sample
    # seeds, never the same request twice. (Other branches of the failed turn stop at their
    # next call once the conversation has failed, so they may have asked fewer times.)
    keys = [c.key for c in server.ok_calls(JUDGE)]
    assert len(keys) == len(set(keys))
    asked = Counter(json.dumps(c.body["messages"]) for c in server.ok_calls(JUDGE))
    assert max(asked.values()) == 3 and sum(1 for n in asked.values() if n == 3) >= 2


def test_failure_threshold_lets_a_run_pass(server, tmp_path):
    server.set_script(JUDGE, never_parsable_judge)
    out = tmp_path / "out"
    recipe = math_recipe(server.base_url, out, **{"task.limit": 1, "generation.max_failure_rate": 1.0})
    recipe["models"]["judge"]["parse_retries"] = 0
    result = run_cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_kill_at_any_moment_resumes_to_the_same_shards(tmp_path):
    with FakeLLMServer(latency=0.02) as server:
        install_math(server)
        reference = tmp_path / "reference"
        recipe = write_recipe(tmp_path / "ref.yaml", math_recipe(server.base_url, reference))
        assert run_cli("run", str(recipe)).exit_code == 0
        uninterrupted = {call.key for call in server.ok_calls()}
        server.reset()

        out = tmp_path / "out"
        killed = write_recipe(tmp_path / "killed.yaml", math_recipe(server.base_url, out))
        journal = out / ".collabgen" / "journal.jsonl"
        kill_times = []
        for lines_before_kill in (3, 9):
            process = subprocess.Popen(
                [sys.executable, "-m", "collabgen", "run", str(killed)], cwd=ROOT,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if journal.exists() and journal.read_text().count("\n") >= lines_before_kill:
                    break
                time.sleep(0.01)
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            kill_times.append(time.monotonic())
        before = len(server.calls)
        assert before > 0
        result = run_cli("run", str(killed))
        assert result.exit_code == 0, result.output

        for config in ("pairs", "sft", "candidates"):
            assert read(out, config).equals(read(reference, config)), config
        # Killed and resumed, the runs ask nothing an uninterrupted run does not ask.
        assert {call.key for call in server.ok_calls()} <= uninterrupted
        # No finished call is paid twice: a request repeated after a kill was in flight then.
        first_seen: dict[str, float] = {}
        for call in server.ok_calls():
            if call.key in first_seen:
                finished = first_seen[call.key]
                assert any(abs(finished - kill) < 1.0 for kill in kill_times), "a cached call was repeated"
            else:
                first_seen[call.key] = call.finished


def test_three_candidates_at_share_one_half_sample_one_proactive_as_the_reference(server, tmp_path):
    """The reference takes `int(C * share)` proactive candidates (`collabllm/simulation.py`):
    1 of 3 at 0.5, not round(1.5) = 2."""
    out = tmp_path / "out"
    recipe = math_recipe(server.base_url, out, **{
        "generation.proactive_share": 0.5, "generation.candidates": 3, "generation.max_turns": 2})
    result = run_cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert result.exit_code == 0, result.output
    per_turn = read(out, "candidates").group_by("conv_id", "turn").agg(
        pl.len().alias("n"), pl.col("proactive").sum().alias("proactive"))
    assert per_turn["n"].unique().to_list() == [3]
    assert per_turn["proactive"].unique().to_list() == [1]
