"""Token usage a server misreports never turns into free tokens or a reward: missing usage
is estimated (the result says `tokens_estimated`), negative usage fails the call visibly."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, read_shards, write_recipe
from tests.scripts import install_math


def run(tmp_path, transform, backend: str = "openai"):
    with FakeLLMServer() as server:
        install_math(server)
        server.usage_transform = transform
        out = tmp_path / "out"
        base_url = server.anthropic_base_url if backend == "anthropic" else server.base_url
        recipe = math_recipe(base_url, out, **{"task.limit": 2})
        for role in ("policy", "user", "judge"):
            recipe["models"][role]["backend"] = backend
            if backend == "anthropic":
                recipe["models"][role]["api_key_env"] = "FAKE_ANTHROPIC_KEY"
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", recipe))])
    return result, out


def penalties(out) -> list[float]:
    return [row["metrics"]["token_penalty"] for row in read_shards(out, "candidates").iter_rows(named=True)]


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_missing_usage_is_estimated_never_free(tmp_path, backend, monkeypatch):
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "test-key")
    result, out = run(tmp_path, lambda usage: None, backend)
    assert result.exit_code == 0, result.output
    assert penalties(out) and all(p < 0 for p in penalties(out))  # before: 0 for every candidate
    rows = list(read_shards(out, "candidates").iter_rows(named=True))
    assert all("tokens_estimated" in row["flags"] for row in rows)
    assert all("tokens_estimated" in future["flags"] for row in rows for future in row["futures"])
    assert json.loads((out / "manifest.json").read_text())["flags"]["tokens_estimated_futures"] > 0


def test_reported_usage_is_not_flagged(tmp_path):
    result, out = run(tmp_path, None)
    assert result.exit_code == 0, result.output
    assert not any("tokens_estimated" in row["flags"] for row in read_shards(out, "candidates").iter_rows(named=True))


def test_zero_completion_tokens_for_a_reply_are_estimated(tmp_path):
    result, out = run(tmp_path, lambda usage: {**usage, "completion_tokens": 0})
    assert result.exit_code == 0, result.output
    assert all(p < 0 for p in penalties(out))


@pytest.mark.parametrize("bad", [-1000, 1.5])
def test_negative_or_fractional_usage_fails_the_call_visibly_never_a_reward(tmp_path, bad):
    result, out = run(tmp_path, lambda usage: {**usage, "completion_tokens": bad})
    assert result.exit_code == 1, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["conversations_ok"] == 0
    assert f"usage.completion_tokens = {bad!r}" in " ".join(f["reason"] for f in manifest["failures"])
    assert not (out / "candidates").exists() or all(p <= 0 for p in penalties(out))
