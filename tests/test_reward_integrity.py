"""A broken sandbox is never a score: the canary stops a run before any call, and a
sandbox that breaks mid-run fails its conversations with the reason (exit 1)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.sandbox import Sandbox, SandboxInfrastructureError
from tests.fakeserver import FakeLLMServer
from tests.helpers import SEEDS, recipe_from_file, write_recipe
from tests.scripts import install_code

FAST = {"cpu_seconds": 5, "wall_seconds": 20, "memory_mb": 512}


def code_recipe(base_url: str, out, **overrides):
    return recipe_from_file("bigcodebench", base_url, out, SEEDS / "code.jsonl", **{
        "task.options.sandbox": FAST, "task.options.canary_imports": [], "generation.max_turns": 1,
        "task.limit": 2, **overrides})


def test_a_sandbox_that_cannot_give_a_right_verdict_stops_the_run_before_any_call(tmp_path):
    with FakeLLMServer() as server:
        install_code(server)
        data = code_recipe(server.base_url, tmp_path / "out", **{"task.options.canary_imports": ["no_such_module_xyz"]})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
        assert result.exit_code == 2, result.output
        assert "canary" in result.output and "no_such_module_xyz" in result.output
        assert server.calls == []


def test_a_sandbox_breaking_mid_run_fails_conversations_with_the_reason_not_a_zero(tmp_path, monkeypatch):
    real = Sandbox.run_unittests

    async def breaks_after_the_canary(self, code: str, tests: str, verdict: str = "auto"):
        if "class CanaryTests" in tests:
            return await real(self, code, tests, verdict)
        raise SandboxInfrastructureError("the harness crashed", stderr="Segmentation fault")

    monkeypatch.setattr(Sandbox, "run_unittests", breaks_after_the_canary)
    with FakeLLMServer() as server:
        install_code(server)
        data = code_recipe(server.base_url, tmp_path / "out")
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 1, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["conversations_failed"] == 2 and manifest["counts"]["pairs"] == 0
    assert all(f["reason"].startswith("infrastructure:") and "harness crashed" in f["reason"]
               for f in manifest["failures"])
