"""A hostile or broken server cannot exhaust memory, stall a run, or crash it.

A reply past `max_reply_bytes` fails its call visibly, unread; `timeout` bounds a whole
request, so a server dripping bytes cannot outlast it; a Retry-After of `1e9` or `inf`
is capped at `retry_max_wait` with a warning; one that does not parse counts as absent.
Each against the real SDKs over a live fake server, on both protocols.
"""

from __future__ import annotations

import logging
import time
import tracemalloc

import pytest

from collabgen.config.recipe import ModelConfig
from collabgen.models.anthropic_backend import AnthropicBackend
from collabgen.models.base import CallFailed
from collabgen.models.executor import RoleModel
from collabgen.models.openai_backend import OpenAIBackend
from collabgen.models.registry import build_role
from collabgen.models.retry_after import retry_after_seconds
from collabgen.models.usage import UsageBook
from tests.fakeserver import FakeLLMServer, Faults

PROTOCOLS = ["openai", "anthropic"]


def role_model(server: FakeLLMServer, protocol: str, **config) -> RoleModel:
    base_url = server.base_url if protocol == "openai" else server.anthropic_base_url
    cfg = ModelConfig(backend=protocol, model="m", base_url=base_url, temperature=0.5, retry_wait=0.01, **config)
    backend = OpenAIBackend(cfg, None) if protocol == "openai" else AnthropicBackend(cfg, "k")
    return build_role("policy", cfg, backend, None, UsageBook())


async def ask(role: RoleModel, i: int = 1):
    try:
        return await role.complete([{"role": "user", "content": f"q{i}"}], seed=i, stage="test")
    finally:
        await role.aclose()


def always(kind: str, **faults) -> Faults:
    return Faults(rate=1.0, kinds=(kind,), max_consecutive=100, **faults)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_reply_over_max_reply_bytes_fails_the_call_unread_and_is_not_retried(protocol):
    with FakeLLMServer(default=lambda call: "ok", faults=always("huge", huge_bytes=4 << 20)) as server:
        role = role_model(server, protocol, max_reply_bytes=64 << 10, max_retries=3)
        with pytest.raises(CallFailed, match=r"reply is too large \(more than 65,536 bytes arrived; max_reply_bytes"):
            await ask(role)
        assert len(server.calls) == 1  # permanent: the same server would send it again


async def test_the_default_bound_keeps_a_huge_reply_out_of_memory():
    huge = 64 << 20
    with FakeLLMServer(default=lambda call: "ok", faults=always("huge", huge_bytes=huge)) as server:
        role = role_model(server, "openai", max_retries=0)
        tracemalloc.start()
        try:
            with pytest.raises(CallFailed, match="too large"):
                await ask(role)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 40 << 20, f"peak {peak / 2**20:.0f} MiB for a {huge >> 20} MiB reply"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_timeout_bounds_a_whole_request_against_a_dripping_server(protocol):
    # One byte every 0.3 s: every read beats a 1 s read timeout; the body takes minutes.
    with FakeLLMServer(default=lambda call: "ok", faults=always("drip", drip_seconds=0.3)) as server:
        role = role_model(server, protocol, timeout=1.0, max_retries=1)
        started = time.monotonic()
        with pytest.raises(CallFailed, match=r"no complete reply within the timeout of 1 s"):
            await ask(role)
        assert time.monotonic() - started < 6
        assert len(server.calls) == 2  # a timeout is transient: asked again, then failed


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("header", ["1e9", "inf"])
async def test_an_enormous_retry_after_is_capped_at_retry_max_wait_and_said(protocol, header, caplog):
    faults = Faults(rate=1.0, kinds=("429",), retry_after=header, max_consecutive=1)
    with FakeLLMServer(default=lambda call: "ok", faults=faults) as server:
        role = role_model(server, protocol, retry_max_wait=0.3)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="collabgen"):
            result = await ask(role)
        assert result.texts == ["ok"]
        assert 0.25 <= time.monotonic() - started < 5
        assert f"the server asked to wait {float(header):g} s (Retry-After); waiting retry_max_wait = 0.3 s" \
            in caplog.text


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_unparseable_retry_after_counts_as_absent(protocol):
    faults = Faults(rate=1.0, kinds=("429",), retry_after="soon", max_consecutive=1)
    with FakeLLMServer(default=lambda call: "ok", faults=faults) as server:
        result = await ask(role_model(server, protocol))
        assert result.texts == ["ok"]
        assert [c.status for c in server.calls] == [429, 200]


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "soon"}, None), ({"retry-after": "nan"}, None), ({"retry-after": "inf"}, float("inf")),
    ({"retry-after": "-3"}, 0.0), ({"retry-after-ms": "250"}, 0.25), ({"retry-after-ms": "x", "retry-after": "2"}, 2.0),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0), ({"retry-after": "Wed, 99 Foo 2015"}, None),
])
def test_retry_after_parsing(headers, seconds):
    assert retry_after_seconds(headers) == seconds


# --------------------------------------------------------------------------- text that is not Unicode


def with_lone_surrogate(script):
    """A policy whose every reply carries `\\ud800` on the wire (valid JSON, not Unicode)."""
    return lambda call: script(call) + " \ud800"


def test_a_lone_surrogate_in_a_reply_is_replaced_and_the_run_and_its_rerun_succeed(tmp_path):
    from typer.testing import CliRunner

    from collabgen.cli import app
    from tests.helpers import math_recipe, read_shards, write_recipe
    from tests.scripts import POLICY, install_math, math_policy

    with FakeLLMServer() as server:
        install_math(server)
        server.set_script(POLICY, with_lone_surrogate(math_policy))
        path = write_recipe(tmp_path / "r.yaml", math_recipe(server.base_url, tmp_path / "out", **{"task.limit": 2}))
        first = CliRunner().invoke(app, ["run", str(path)])
        assert first.exit_code == 0, first.output
        replies = read_shards(tmp_path / "out", "candidates")["response"].to_list()
        assert replies and all(r.endswith(" \ufffd") for r in replies)
        paid = len(server.calls)
        # The cache holds the cleaned reply: a rerun replays it for free and fails nothing.
        (tmp_path / "out" / "manifest.json").unlink()
        second = CliRunner().invoke(app, ["run", str(path)])
        assert second.exit_code == 0, second.output
        assert len(server.calls) == paid


async def test_a_cache_written_with_a_lone_surrogate_replays_clean(tmp_path):
    from collabgen.models.base import ChatRequest, ChatResult
    from collabgen.models.cache import RequestCache
    from collabgen.models.cached import CachedBackend

    cache = RequestCache(tmp_path / "cache.sqlite")
    cache.put("k", ChatResult(texts=["x \ud800"], completion_tokens=[2], finish_reasons=["stop"]))
    from tests.scripted_backend import ScriptedBackend

    layer = CachedBackend(ScriptedBackend(), cache, lambda request: "k")
    hit = await layer.complete(ChatRequest(messages=[{"role": "user", "content": "q"}], temperature=0.0))
    assert hit.texts == ["x \ufffd"] and hit.report.cached
