"""Anthropic Messages API. The system prompt goes in `system`; `n` is emulated by the
role's facade with parallel requests (`supports_n = False`); errors map to the same retry
policy as every other backend.

Judges with a JSON Schema (and `json_schema: true`, `json_mode: true`) are constrained the
way the API offers: one tool whose `input_schema` is the schema, forced by `tool_choice`;
the tool call's input is the reply's text, as JSON. Without a schema the request is
prompt-only (the API has no JSON mode) and the facade's parse retries cope.

What it counts: the API's `usage.input_tokens` and `usage.output_tokens`, one choice per
request, exact.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import anthropic

from collabgen.config.recipe import ModelConfig
from collabgen.models.base import (
    ChatRequest,
    ChatResult,
    Message,
    PermanentError,
)
from collabgen.models.bounded_http import BoundedSend
from collabgen.models.rate_headers import rate_hint_from_headers
from collabgen.models.schema_dialect import for_backend
from collabgen.models.sdk_errors import translated_errors
from collabgen.models.token_usage import estimated_tokens, needs_estimate, reported_count

DEFAULT_MAX_TOKENS = 2048
REPLY_TOOL = "reply"


def schema_tool(request: ChatRequest, config: ModelConfig) -> dict[str, Any]:
    """`tools` and `tool_choice` that force a reply following the request's schema, or {}."""
    if not (request.json_mode and config.json_schema and request.json_schema is not None):
        return {}
    tool = {"name": REPLY_TOOL, "description": "Give your reply as this tool's input.",
            "input_schema": for_backend(config, request.json_schema).schema}
    return {"tools": [tool], "tool_choice": {"type": "tool", "name": REPLY_TOOL}}


def reply_text(content: list[Any]) -> str:
    """The forced tool's input as JSON when the reply has it, else the text blocks."""
    for block in content:
        if getattr(block, "type", "") == "tool_use" and getattr(block, "name", "") == REPLY_TOOL:
            return json.dumps(block.input)
    return "".join(block.text for block in content if getattr(block, "type", "") == "text")


class _BoundedClient(BoundedSend, anthropic.DefaultAsyncHttpxClient):
    """The SDK's default client, reading each reply within the role's size and time bounds."""


class AnthropicBackend:
    supports_n = False

    def __init__(self, config: ModelConfig, api_key: str | None) -> None:
        self.config = config
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key or "EMPTY", base_url=config.base_url, max_retries=0, timeout=config.timeout,
            http_client=_BoundedClient(max_reply_bytes=config.max_reply_bytes, deadline=config.timeout),
        )

    async def complete(self, request: ChatRequest) -> ChatResult:
        if request.n != 1:
            raise PermanentError("the Anthropic backend takes one choice per request")
        system, messages = split_system(request.messages)
        sampling: dict[str, Any] = {"temperature": min(request.temperature, 1.0)}
        if request.top_p is not None:
            sampling["top_p"] = request.top_p
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": messages,
            # Sent in the body as-is: the client's typed signature varies across versions.
            "extra_body": {**sampling, **schema_tool(request, self.config), **self.config.extra_body},
        }
        if system:
            kwargs["system"] = system
        with translated_errors(anthropic, "Anthropic API"):
            raw = await self._client.messages.with_raw_response.create(**kwargs)
            response = raw.parse()
            if inspect.isawaitable(response):  # the async clients' raw responses parse lazily
                response = await response
        text = reply_text(response.content)
        finish = "length" if response.stop_reason == "max_tokens" else "stop"
        usage = response.usage
        prompt = reported_count(getattr(usage, "input_tokens", None), "usage.input_tokens")
        output = reported_count(getattr(usage, "output_tokens", None), "usage.output_tokens")
        estimated = needs_estimate(output, [text])
        return ChatResult(
            texts=[text],
            prompt_tokens=prompt or 0,
            completion_tokens=[estimated_tokens(text) if estimated else output or 0],
            finish_reasons=[finish],
            rate_hint=rate_hint_from_headers(raw.headers),
            tokens_estimated=estimated,
        )

    async def aclose(self) -> None:
        await self._client.close()


def split_system(messages: list[Message]) -> tuple[str, list[Message]]:
    """System text apart; the rest starts with a user turn and alternates roles."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    chat: list[Message] = []
    for message in messages:
        if message["role"] == "system":
            continue
        if chat and chat[-1]["role"] == message["role"]:
            chat[-1] = {"role": message["role"], "content": chat[-1]["content"] + "\n\n" + message["content"]}
        else:
            chat.append({"role": message["role"], "content": message["content"]})
    if chat and chat[0]["role"] != "user":
        chat.insert(0, {"role": "user", "content": "(continue)"})
    return system, chat
