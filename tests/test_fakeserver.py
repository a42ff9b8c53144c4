"""Proves tests/fakeserver.py speaks the wire protocols of the REAL openai/anthropic SDKs."""

from __future__ import annotations

import asyncio
import json
import time

import anthropic
import openai
import pytest

from tests.fakeserver import CallRecord, FakeLLMServer, Faults, Reply, ScriptCall

pytestmark = pytest.mark.timeout(30)

USER = [{"role": "user", "content": "hello there"}]


# IMPORTANT: always close SDK clients (``await client.close()`` / ``async with``).  An
# AsyncOpenAI/AsyncAnthropic client that is garbage-collected unclosed while the event loop
# is running leaves stale fds in asyncio's selector; a new connection that reuses such an fd
# is then never woken up and the request hangs until its read timeout (seen here as random
# APITimeoutErrors with the full response sitting unread in the socket's Recv-Q).
_open_clients: list = []


def oai(server: FakeLLMServer, **kw) -> openai.AsyncOpenAI:
    kw.setdefault("max_retries", 0)
    c = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", **kw)
    _open_clients.append(c)
    return c


def ant(server: FakeLLMServer, **kw) -> anthropic.AsyncAnthropic:
    kw.setdefault("max_retries", 0)
    c = anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="test", **kw)
    _open_clients.append(c)
    return c


@pytest.fixture(autouse=True)
async def _close_clients():
    yield
    while _open_clients:
        await _open_clients.pop().close()


async def oai_chat(client: openai.AsyncOpenAI, model: str = "m", content: str = "hello there", **kw):
    return await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **kw
    )


async def ant_chat(client: anthropic.AsyncAnthropic, model: str = "m", content: str = "hello there", **kw):
    kw.setdefault("max_tokens", 64)
    return await client.messages.create(model=model, messages=[{"role": "user", "content": content}], **kw)


@pytest.fixture
def server():
    with FakeLLMServer(default=lambda c: "alpha beta gamma delta") as s:
        yield s


# --------------------------------------------------------------------------- happy paths


async def test_openai_n3_scripted_usage_and_scriptcall(fake_server: FakeLLMServer) -> None:
    seen: list[ScriptCall] = []

    def script(call: ScriptCall) -> str:
        seen.append(call)
        return f"choice {call.choice_index} says hi"  # 4 words

    fake_server.set_script("gpt-x", script)
    client = oai(fake_server)
    resp = await client.chat.completions.create(
        model="gpt-x",
        messages=[{"role": "system", "content": "be nice"}, {"role": "user", "content": "one two three"}],
        n=3, seed=7, temperature=0.5, response_format={"type": "json_object"},
    )
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert [c.message.content for c in resp.choices] == [f"choice {i} says hi" for i in range(3)]
    assert all(c.finish_reason == "stop" for c in resp.choices)
    assert resp.model == "gpt-x" and resp.object == "chat.completion"
    assert resp.usage.prompt_tokens == 5  # "be nice" + "one two three"
    assert resp.usage.completion_tokens == 12
    assert resp.usage.total_tokens == 17
    assert sorted(c.choice_index for c in seen) == [0, 1, 2]
    assert all(c.seed == 7 and c.temperature == 0.5 and c.protocol == "openai" for c in seen)
    assert seen[0].messages == [{"role": "system", "content": "be nice"},
                                {"role": "user", "content": "one two three"}]
    assert seen[0].body["n"] == 3

    [rec] = fake_server.calls
    assert isinstance(rec, CallRecord)
    assert rec.status == 200 and rec.fault is None and rec.protocol == "openai"
    assert rec.finished >= rec.started > 0
    assert rec.key == CallRecord("", "", dict(rec.body), 0, None, 0, 0).key  # stable
    assert len(rec.key) == 64
    assert fake_server.ok_calls("gpt-x") == [rec] and fake_server.ok_calls("other") == []


async def test_reply_object_finish_reason(fake_server: FakeLLMServer) -> None:
    fake_server.set_script("m", lambda c: Reply("cut off", finish_reason="length"))
    r = await oai_chat(oai(fake_server))
    assert r.choices[0].finish_reason == "length"
    a = await ant_chat(ant(fake_server))
    assert a.stop_reason == "max_tokens" and a.content[0].text == "cut off"


async def test_anthropic_system_prepended_and_blocks_flattened(fake_server: FakeLLMServer) -> None:
    seen: list[ScriptCall] = []

    def script(call: ScriptCall) -> Reply:
        seen.append(call)
        return Reply("fine thanks")

    fake_server.set_script("claude-x", script)
    client = ant(fake_server)
    msg = await client.messages.create(
        # NB: anthropic 2.12's messages.create() has NO `temperature`/`top_p`/`top_k` kwargs
        # (TypeError); they must go through extra_body.
        model="claude-x", max_tokens=100, system="you are terse", extra_body={"temperature": 0.2},
        metadata={"user_id": "42"},
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "how"}, {"type": "text", "text": "are you"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "really?"},
        ],
    )
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "claude-x"
    assert msg.content[0].type == "text" and msg.content[0].text == "fine thanks"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens == 3 + 3 + 1 + 1
    assert msg.usage.output_tokens == 2
    [call] = seen
    assert call.protocol == "anthropic" and call.choice_index == 0
    assert call.seed == 42 and call.temperature == 0.2
    assert call.messages == [
        {"role": "system", "content": "you are terse"},
        {"role": "user", "content": "how\nare you"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "really?"},
    ]

    # system as content blocks; non-integer user_id -> seed None
    await client.messages.create(
        model="claude-x", max_tokens=10, system=[{"type": "text", "text": "sys block"}],
        metadata={"user_id": "alice"}, messages=USER,
    )
    assert seen[-1].messages[0] == {"role": "system", "content": "sys block"}
    assert seen[-1].seed is None


async def test_rate_limit_headers_on_200() -> None:
    with FakeLLMServer(default=lambda c: "x", rate_limit_headers={"x-ratelimit-remaining-requests": "10"}) as s:
        raw = await oai(s).chat.completions.with_raw_response.create(model="m", messages=USER)
        assert raw.headers["x-ratelimit-remaining-requests"] == "10"
        raw2 = await ant(s).messages.with_raw_response.create(model="m", max_tokens=5, messages=USER)
        assert raw2.headers["x-ratelimit-remaining-requests"] == "10"


# --------------------------------------------------------------------------- errors & faults


async def test_unknown_model_404(fake_server: FakeLLMServer) -> None:
    with pytest.raises(openai.NotFoundError):
        await oai_chat(oai(fake_server), model="nope")
    with pytest.raises(anthropic.NotFoundError) as ei:
        await ant_chat(ant(fake_server), model="nope")
    assert ei.value.body["error"]["type"] == "not_found_error"
    assert [c.status for c in fake_server.calls] == [404, 404]
    assert fake_server.ok_calls() == []


async def test_stream_true_is_400(server: FakeLLMServer) -> None:
    with pytest.raises(openai.BadRequestError):
        await oai_chat(oai(server), stream=True)
    with pytest.raises(anthropic.BadRequestError):
        await ant_chat(ant(server), stream=True)


async def test_429_both_protocols(server: FakeLLMServer) -> None:
    server.faults = Faults(rate=1.0, kinds=("429",), retry_after=0.05, max_consecutive=100)
    with pytest.raises(openai.RateLimitError) as ei:
        await oai_chat(oai(server))
    assert ei.value.status_code == 429
    assert float(ei.value.response.headers["retry-after"]) == pytest.approx(0.05)
    with pytest.raises(anthropic.RateLimitError) as ai:
        await ant_chat(ant(server))
    assert float(ai.value.response.headers["retry-after"]) == pytest.approx(0.05)
    assert ai.value.body["error"]["type"] == "rate_limit_error"
    assert [c.fault for c in server.calls] == ["429", "429"]
    assert [c.status for c in server.calls] == [429, 429]


async def test_500_both_protocols(server: FakeLLMServer) -> None:
    server.faults = Faults(rate=1.0, kinds=("500",), max_consecutive=100)
    with pytest.raises(openai.InternalServerError):
        await oai_chat(oai(server))
    with pytest.raises(anthropic.InternalServerError) as ai:
        await ant_chat(ant(server))
    assert ai.value.body["error"]["type"] == "api_error"


async def test_503_and_529(server: FakeLLMServer) -> None:
    server.faults = Faults(rate=1.0, kinds=("529",), max_consecutive=100)
    with pytest.raises(anthropic.OverloadedError):
        await ant_chat(ant(server))
    with pytest.raises(openai.InternalServerError):
        await oai_chat(oai(server))
    server.faults = Faults(rate=1.0, kinds=("503",), max_consecutive=100)
    with pytest.raises(anthropic.ServiceUnavailableError) as ai:
        await ant_chat(ant(server))
    assert "retry-after" in ai.value.response.headers


async def test_malformed_raises_json_decode_error_and_is_not_retried(server: FakeLLMServer) -> None:
    # The real SDKs raise a bare json.JSONDecodeError (a ValueError), not an SDK exception,
    # and do not retry it even with max_retries > 0.
    server.faults = Faults(rate=1.0, kinds=("malformed",), max_consecutive=100)
    with pytest.raises(json.JSONDecodeError):
        await oai_chat(oai(server, max_retries=2))
    with pytest.raises(json.JSONDecodeError):
        await ant_chat(ant(server, max_retries=2))
    assert len(server.calls) == 2
    assert all(c.status == 200 and c.fault == "malformed" for c in server.calls)
    assert server.ok_calls() == []


async def test_truncated_and_empty(server: FakeLLMServer) -> None:
    server.faults = Faults(rate=1.0, kinds=("truncated",), max_consecutive=100)
    r = await oai_chat(oai(server))
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "alpha beta gamma delta"[:11]
    a = await ant_chat(ant(server))
    assert a.stop_reason == "max_tokens" and a.content[0].text == "alpha beta "

    server.faults = Faults(rate=1.0, kinds=("empty",), max_consecutive=100)
    r = await oai_chat(oai(server), n=2)
    assert [c.message.content for c in r.choices] == ["", ""]
    assert r.usage.completion_tokens == 0
    a = await ant_chat(ant(server))
    assert a.content[0].text == ""
    assert [c.fault for c in server.calls] == ["truncated", "truncated", "empty", "empty"]


async def test_timeout_fault_gives_api_timeout_error(server: FakeLLMServer) -> None:
    server.faults = Faults(rate=1.0, kinds=("timeout",), slow_seconds=1.0, max_consecutive=100)
    with pytest.raises(openai.APITimeoutError):
        await oai_chat(oai(server, timeout=0.5))
    with pytest.raises(anthropic.APITimeoutError):
        await ant_chat(ant(server, timeout=0.5))
    assert server.calls and {c.fault for c in server.calls} == {"timeout"}


async def test_timeout_fault_drop_before_client_timeout_is_connection_error(server: FakeLLMServer) -> None:
    server.faults = Faults(rate=1.0, kinds=("timeout",), slow_seconds=0.05, max_consecutive=100)
    with pytest.raises(openai.APIConnectionError) as ei:
        await oai_chat(oai(server, timeout=5))
    assert not isinstance(ei.value, openai.APITimeoutError)
    with pytest.raises(anthropic.APIConnectionError):
        await ant_chat(ant(server, timeout=5))
    assert all(c.status == 0 and c.fault == "timeout" for c in server.calls)


async def test_slow_fault_answers_normally(server: FakeLLMServer) -> None:
    server.faults = Faults(rate=1.0, kinds=("slow",), slow_seconds=0.2, max_consecutive=100)
    t0 = time.monotonic()
    r = await oai_chat(oai(server))
    assert time.monotonic() - t0 >= 0.2
    assert r.choices[0].message.content == "alpha beta gamma delta"
    assert server.calls[0].fault == "slow" and server.ok_calls() == []


async def test_max_consecutive_guarantees_success(server: FakeLLMServer) -> None:
    server.faults = Faults(rate=1.0, kinds=("429", "500", "malformed"), max_consecutive=3)
    client = oai(server)
    errors = []
    for attempt in range(4):  # noqa: B007 - read after the loop
        try:
            r = await oai_chat(client)
            break
        except (openai.APIError, json.JSONDecodeError) as e:
            errors.append(e)
    else:
        pytest.fail("no success within 4 attempts")
    assert attempt == 3 and len(errors) == 3
    assert r.choices[0].message.content == "alpha beta gamma delta"
    assert [c.fault is None for c in server.calls] == [False, False, False, True]
    assert len({c.key for c in server.calls}) == 1
    assert len(server.ok_calls()) == 1


async def test_sdk_own_retries_recover_from_429(server: FakeLLMServer) -> None:
    server.faults = Faults(rate=1.0, kinds=("429",), retry_after=0.01, max_consecutive=2)
    r = await oai_chat(oai(server, max_retries=3))
    assert r.choices[0].message.content == "alpha beta gamma delta"
    a = await ant_chat(ant(server, max_retries=3))
    assert a.content[0].text == "alpha beta gamma delta"
    assert [c.status for c in server.calls] == [429, 429, 200, 429, 429, 200]


async def test_fault_decisions_are_deterministic() -> None:
    async def run() -> list[str | None]:
        faults = Faults(rate=0.5, kinds=("429", "500", "empty"), seed=123, max_consecutive=100)
        with FakeLLMServer(default=lambda c: "ok", faults=faults) as s:
            client = oai(s)
            await asyncio.gather(
                *(oai_chat(client, content=f"q{i}") for i in range(20)), return_exceptions=True
            )
            return [c.fault for c in sorted(s.calls, key=lambda c: c.body["messages"][0]["content"])]

    a, b = await run(), await run()
    assert a == b
    assert 0 < sum(f is not None for f in a) < 20


# --------------------------------------------------------------------------- concurrency & lifecycle


async def test_max_concurrency_queues_instead_of_429() -> None:
    with FakeLLMServer(default=lambda c: "ok", latency=0.2, max_concurrency=2) as s:
        client = oai(s)
        t0 = time.monotonic()
        rs = await asyncio.gather(*(oai_chat(client, content=f"q{i}") for i in range(6)))
        elapsed = time.monotonic() - t0
    assert all(r.choices[0].message.content == "ok" for r in rs)
    assert s.max_processing == 2
    assert s.max_in_flight >= 3  # counted from arrival, so queued requests count
    assert elapsed >= 0.6
    assert len(s.ok_calls()) == 6


async def test_per_token_latency() -> None:
    with FakeLLMServer(default=lambda c: "w " * 10, per_token_latency=0.02) as s:
        t0 = time.monotonic()
        await oai_chat(oai(s))
        assert time.monotonic() - t0 >= 0.2


async def test_many_concurrent_connections_and_keepalive(server: FakeLLMServer) -> None:
    client = oai(server)
    rs = await asyncio.gather(*(oai_chat(client, content=f"q{i}") for i in range(100)))
    assert len(rs) == 100 and len(server.ok_calls()) == 100
    assert len({c.key for c in server.calls}) == 100

    server.reset()
    assert server.calls == [] and server.max_in_flight == 0
    client2 = oai(server)
    for i in range(10):
        await oai_chat(client2, content=f"seq{i}")
    assert server.total_connections == 1  # HTTP/1.1 keep-alive reuse


async def test_script_exception_is_500(fake_server: FakeLLMServer) -> None:
    def boom(call: ScriptCall) -> str:
        raise RuntimeError("kaboom")

    fake_server.set_script("m", boom)
    with pytest.raises(openai.InternalServerError, match="kaboom"):
        await oai_chat(oai(fake_server))


async def test_stop_is_prompt_with_sleeping_handlers() -> None:
    s = FakeLLMServer(default=lambda c: "ok", latency=10).start()
    client = oai(s, timeout=20)
    task = asyncio.create_task(oai_chat(client))
    for _ in range(100):
        if s.calls:
            break
        await asyncio.sleep(0.01)
    # The handler sleeps 10 s; stop() must not wait for it (the guard is a hang guard,
    # not a measurement: it only fails if stop waits for the sleeping handler).
    await asyncio.wait_for(asyncio.to_thread(s.stop), timeout=5)
    assert not task.done() or task.exception() is not None
    with pytest.raises(openai.APIConnectionError):
        await asyncio.wait_for(task, 5)


def test_context_manager_and_urls() -> None:
    with FakeLLMServer() as s:
        assert s.base_url.startswith("http://127.0.0.1:") and s.base_url.endswith("/v1")
        assert s.anthropic_base_url == s.base_url[: -len("/v1")]
        assert s.port > 0
    # sync client too
    with FakeLLMServer(scripts={"m": lambda c: "sync ok"}) as s:
        with openai.OpenAI(base_url=s.base_url, api_key="t", max_retries=0) as c:
            r = c.chat.completions.create(model="m", messages=USER)
        assert r.choices[0].message.content == "sync ok"


def strict_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "reply", "strict": True, "schema": schema}}


CLOSED = {"type": "object", "properties": {"a": {"type": "string"}, "n": {"type": "number", "minimum": 0}},
          "required": ["a", "n"], "additionalProperties": False}


@pytest.mark.parametrize(("schema", "model", "refused"), [
    ({**CLOSED, "properties": {"a": {"type": "string", "maxLength": 5}, "n": {"type": "number"}}}, "m",
     "In context=('properties', 'a'), 'maxLength' is not permitted."),
    ({**CLOSED, "properties": {"a": {"type": "string", "minLength": 1}, "n": {"type": "number"}}}, "m",
     "'minLength' is not permitted"),
    ({k: v for k, v in CLOSED.items() if k != "additionalProperties"}, "m",
     "In context=(), 'additionalProperties' is required to be supplied and to be false."),
    ({**CLOSED, "required": ["a"]}, "m", "including every key in properties. Missing 'n'."),
    ({**CLOSED, "allOf": [{"type": "object"}]}, "m", "'allOf' is not permitted"),
    ({**CLOSED, "properties": {"a": {"type": "string", "format": "color"}, "n": {"type": "number"}}}, "m",
     "'format' is not permitted"),
    ({"anyOf": [CLOSED]}, "m", "the root schema must be an object"),
    (CLOSED, "ft:gpt-4o-mini:org::x", "In context=('properties', 'n'), 'minimum' is not permitted."),
])
async def test_a_strict_schema_openai_refuses_is_400(server: FakeLLMServer, schema, model, refused) -> None:
    server.set_script(model, lambda c: "{}")
    with pytest.raises(openai.BadRequestError) as err:
        await oai_chat(oai(server), model=model, response_format=strict_format(schema))
    assert err.value.status_code == 400 and refused in err.value.body["message"]
    assert err.value.body["param"] == "response_format" and err.value.body["type"] == "invalid_request_error"
    assert err.value.body["message"].startswith("Invalid schema for response_format 'reply': ")


async def test_a_strict_schema_openai_takes_is_answered(server: FakeLLMServer) -> None:
    nested = {**CLOSED, "properties": {**CLOSED["properties"], "tags": {
        "type": "array", "maxItems": 3, "items": {"type": "string", "pattern": "^[a-z]+$"}}},
        "required": ["a", "n", "tags"]}
    for schema in (CLOSED, nested):
        reply = await oai_chat(oai(server), response_format=strict_format(schema))
        assert reply.choices[0].message.content
    # Outside strict mode the schema is a hint: nothing is refused.
    loose = {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object", "properties": {
        "a": {"type": "string", "maxLength": 5}}}}}
    assert (await oai_chat(oai(server), response_format=loose)).choices[0].message.content
