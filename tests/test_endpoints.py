"""Endpoints checked before the first paid call; a conversation that outgrows the model's
context ends cleanly with the turns it has."""

from __future__ import annotations

import json
import re
import socket

from typer.testing import CliRunner

from collabgen.cli import app
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, write_recipe
from tests.scripts import POLICY, install_math


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there once the socket is closed


def test_a_dead_endpoint_is_exit_2_naming_role_and_url_before_any_paid_call(tmp_path):
    dead = closed_port_url()
    with FakeLLMServer() as server:
        install_math(server)
        data = math_recipe(server.base_url, tmp_path / "out", **{"models.policy.base_url": dead})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
        assert result.exit_code == 2, result.output
        assert "models.policy" in result.output and dead in result.output
        assert server.calls == []  # the user simulator and judge were not paid for either


def test_a_server_refusing_a_too_long_prompt_ends_the_conversation_cleanly_keeping_its_turns(tmp_path):
    # The proactive candidate prompt is the longest (about 280 words at turn 0, 300 at turn 1);
    # this server does not say its context length, it only refuses (HTTP 400, vLLM's words).
    with FakeLLMServer(context_lengths={POLICY: 330}, list_context_lengths=False) as server:
        install_math(server)
        data = math_recipe(server.base_url, tmp_path / "out", **{"generation.max_turns": 6, "task.limit": 2,
                                                                 "models.policy.max_tokens": 40})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
        assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["conversations_failed"] == 0 and counts["conversations_ok"] == 2
    assert counts["conversations_context_exhausted"] >= 1
    assert counts["sft"] == 2  # finished turns are kept as trajectories


def test_a_recipe_context_length_stops_before_sending_what_cannot_fit(tmp_path):
    with FakeLLMServer() as server:
        install_math(server)
        data = math_recipe(server.base_url, tmp_path / "out", **{
            "generation.max_turns": 6, "task.limit": 1, "models.policy.max_tokens": 40,
            "models.policy.context_length": 430})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
        assert result.exit_code == 0, result.output
        assert not [c for c in server.calls if c.status == 400]  # never sent a prompt it knew was too long
    counts = json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]
    assert counts["conversations_context_exhausted"] == 1 and counts["turns"] >= 1


def test_the_context_length_the_server_lists_is_used_before_sending(tmp_path):
    # vLLM lists max_model_len; collabgen estimates 4 characters a token (about 420 at turn 0,
    # 450 at turn 1 here), so turn 1 is never sent.
    with FakeLLMServer(context_lengths={POLICY: 430}) as server:
        install_math(server)
        data = math_recipe(server.base_url, tmp_path / "out", **{"generation.max_turns": 6, "task.limit": 1,
                                                                 "models.policy.max_tokens": 40})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
        assert result.exit_code == 0, result.output
        assert not [c for c in server.calls if c.status == 400]
    counts = json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]
    assert counts["conversations_context_exhausted"] == 1 and counts["turns"] == 1


def _no_gpu_error(tmp_path) -> str:
    from tests.helpers import RECIPES

    result = CliRunner().invoke(app, ["run", str(RECIPES / "mediumdoc.yaml"), "--out", str(tmp_path / "no-gpu")])
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.strip()]
    assert len(error) == 1 and "no GPU" in error[0], result.output
    return error[0]


def _assignments(text: str) -> dict[str, str]:
    return dict(re.findall(r"(COLLABGEN_[A-Z_]+)=(\S+)", text))


def test_the_no_gpu_hint_names_every_variable_of_every_role_and_following_it_to_servers_runs(tmp_path, monkeypatch):
    from tests.helpers import RECIPES, SEEDS
    from tests.scripts import document_policy, document_user, task_judge

    servers_part, _, _ = _no_gpu_error(tmp_path).partition("or at a provider")
    wanted = _assignments(servers_part)
    assert set(wanted) == {f"COLLABGEN_{r}_{f}" for r in ("POLICY", "USER", "JUDGE") for f in ("BACKEND", "BASE_URL")}
    scripts = {"POLICY": document_policy, "USER": document_user, "JUDGE": task_judge}
    servers = {role: FakeLLMServer(default=script).start() for role, script in scripts.items()}
    try:
        for name, value in wanted.items():  # as the hint says, with this test's hosts for gpu-host
            role = name.split("_")[1]
            monkeypatch.setenv(name, value.replace("http://gpu-host:8000/v1", servers[role].base_url))
        result = CliRunner().invoke(app, [
            "run", str(RECIPES / "mediumdoc.yaml"), "--out", str(tmp_path / "served"), "--limit", "1",
            "--set", f"task.source={{path: {SEEDS / 'document.jsonl'}}}", "--set", "generation.max_turns=1"])
        assert result.exit_code == 0, result.output
        assert all(server.ok_calls() for server in servers.values())
    finally:
        for server in servers.values():
            server.stop()


def test_following_the_no_gpu_hint_to_a_provider_leaves_no_role_on_the_in_process_engine(tmp_path, monkeypatch):
    from tests.helpers import RECIPES

    _, _, provider_part = _no_gpu_error(tmp_path).partition("or at a provider")
    wanted = _assignments(provider_part)
    assert {name.split("_", 2)[2] for name in wanted} == {"BACKEND", "MODEL", "API_KEY_ENV"}
    for name, value in wanted.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    result = CliRunner().invoke(app, ["plan", str(RECIPES / "mediumdoc.yaml")])
    assert result.exit_code == 0, result.output
    assert "no GPU" not in result.output and "vllm" not in result.output.lower()
