"""OpenAI chat-completions protocol: OpenAI, vLLM's server, SGLang, Ollama, llama.cpp.

Judges are constrained by exactly one `response_format`: `json_schema` (strict, the
template's schema in OpenAI's strict dialect, `schema_dialect`) when the request carries a schema and the role allows it
(`json_schema: true`), else `json_object` (`json_mode: true`), else nothing (prompt-only;
the facade's parse retries cope). A recipe that puts its own constraint in `extra_body`
(`response_format` or vLLM's `structured_outputs`) gets that one alone: vLLM answers two
with HTTP 400 ("only one kind of structured outputs constraint"). vLLM's old `guided_json`
family is refused when the backend is built: vLLM >= 0.12 drops those fields with only a
server-side warning, so judges would run unconstrained without anyone noticing.

What it counts, per request, from the server's `usage`: `prompt_tokens` as the server
reports it (OpenAI and vLLM: the prompt once per request, however many choices; vLLM's
Prometheus `prompt_tokens` counter counts it once per choice, so a run with `n` > 1 reads
higher there than in the manifest); `completion_tokens[i]` exactly, from `len(token_ids)`
of choice i, when the server returns each choice's token ids (vLLM does when asked with
`extra_body: {return_token_ids: true}`); otherwise the usage total split over choices by
their length in characters (exact for n = 1).
"""

from __future__ import annotations

import inspect
from typing import Any

import openai
from openai._constants import RAW_RESPONSE_HEADER
from openai.types.chat import ChatCompletion

from collabgen.config.errors import RecipeError
from collabgen.config.recipe import ModelConfig
from collabgen.models.base import (
    ChatRequest,
    ChatResult,
    TransientError,
    split_usage,
)
from collabgen.models.bounded_http import BoundedSend
from collabgen.models.rate_headers import rate_hint_from_headers
from collabgen.models.schema_dialect import for_backend
from collabgen.models.sdk_errors import translated_errors
from collabgen.models.token_usage import estimated_tokens, needs_estimate, reported_count

# Constraints a recipe may set itself in extra_body; then collabgen sends none of its own.
OWN_CONSTRAINTS = ("response_format", "structured_outputs")
# vLLM's pre-0.12 fields, silently ignored by current servers.
DROPPED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "guided_decoding_backend")


def response_format(request: ChatRequest, config: ModelConfig) -> dict[str, Any] | None:
    """The one constraint for a request: its schema, a JSON object, or none."""
    if not request.json_mode:
        return None
    if request.json_schema is not None and config.json_schema:
        name = str(request.json_schema.get("title") or request.stage or "reply")
        # Strict mode takes a subset of JSON Schema (`schema_dialect`): what it refuses is
        # left out here and checked on the parsed reply by the role's facade.
        schema = for_backend(config, request.json_schema).schema
        return {"type": "json_schema", "json_schema": {"name": _schema_name(name), "schema": schema,
                                                       "strict": True}}
    return {"type": "json_object"}


def _schema_name(text: str) -> str:
    """OpenAI's rule for a schema name: a-z, A-Z, 0-9, underscores and dashes, at most 64."""
    cleaned = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in text)
    return cleaned[:64] or "reply"


def completion_tokens(choices: list[Any], total: int, texts: list[str]) -> list[int]:
    """Each choice's completion tokens: the server's own token ids where every choice has
    them (vLLM with `return_token_ids`), else the total split by length."""
    ids = [getattr(choice, "token_ids", None) for choice in choices]
    if choices and all(isinstance(i, list) for i in ids):
        return [len(i) for i in ids]
    return split_usage(total, texts)


class _BoundedClient(BoundedSend, openai.DefaultAsyncHttpxClient):
    """The SDK's default client, reading each reply within the role's size and time bounds."""


class OpenAIBackend:
    """Async client for any server speaking `POST /v1/chat/completions`."""

    def __init__(self, config: ModelConfig, api_key: str | None) -> None:
        dropped = sorted(set(config.extra_body) & set(DROPPED_FIELDS))
        if dropped:
            raise RecipeError(
                f"models: extra_body {dropped}: current vLLM ignores these fields (with a warning in the "
                "server's log only); judges are constrained by response_format json_schema already, "
                "or set extra_body.structured_outputs (e.g. {json: <schema>})"
            )
        self.config = config
        self.supports_n = config.supports_n
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=api_key or "EMPTY",
            max_retries=0,  # the chain's retry layer retries, with one policy for every backend
            timeout=config.timeout,
            http_client=_BoundedClient(max_reply_bytes=config.max_reply_bytes, deadline=config.timeout),
        )

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The request body: sampling, at most one constraint, then the recipe's extra_body."""
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "n": request.n,
        }
        if request.seed is not None and self.config.send_seed:
            body["seed"] = request.seed
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        constraint = response_format(request, self.config)
        if constraint is not None and not any(key in self.config.extra_body for key in OWN_CONSTRAINTS):
            body["response_format"] = constraint
        return {**body, **self.config.extra_body}

    async def complete(self, request: ChatRequest) -> ChatResult:
        with translated_errors(openai, str(self.config.base_url or "api.openai.com")):
            # The client's generic `post` skips the per-call transform of typed arguments
            # (a third of the engine's CPU per call, measured in bench/), same wire request.
            raw = await self._client.post(
                "/chat/completions", body=self.body(request), cast_to=ChatCompletion,
                options={"headers": {RAW_RESPONSE_HEADER: "true"}},
            )
            response = raw.parse()
            if inspect.isawaitable(response):  # the async clients' raw responses parse lazily
                response = await response
        choices = sorted(response.choices or [], key=lambda c: c.index)
        if len(choices) != request.n:
            raise TransientError(f"asked for {request.n} choices, got {len(choices)}")
        texts = [(c.message.content or "") if c.message else "" for c in choices]
        usage = response.usage
        prompt = reported_count(usage.prompt_tokens if usage else None, "usage.prompt_tokens")
        total = reported_count(usage.completion_tokens if usage else None, "usage.completion_tokens")
        has_ids = bool(choices) and all(isinstance(getattr(c, "token_ids", None), list) for c in choices)
        estimated = not has_ids and needs_estimate(total, texts)
        return ChatResult(
            texts=texts,
            prompt_tokens=prompt or 0,
            completion_tokens=([estimated_tokens(t) for t in texts] if estimated
                               else completion_tokens(choices, total or 0, texts)),
            finish_reasons=[c.finish_reason or "stop" for c in choices],
            rate_hint=rate_hint_from_headers(raw.headers),
            tokens_estimated=estimated,
        )

    async def aclose(self) -> None:
        await self._client.close()
