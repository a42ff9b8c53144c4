"""One role's model as the engine sees it: a thin facade over the role's chain of layers.

The chain (`collabgen.models.registry.build_chain`) does the work: cache, in-flight
merge, prefix metering, retries, reply policy, limits. The facade builds each request
from the role's config, emulates `n` for backends that take one choice per request, asks
judges again for parsable JSON, and records every call into the usage sink it was given.
`bound(sink)` gives a facade over the same chain that records into one more sink: the
engine binds its roles to a turn's ledger once instead of handing it to every call.
`gated(gate)` gives one whose calls pass a `CallGate` (a run stopping, a conversation
that failed: no new calls, and the ones in flight counted until they land).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from collabgen.config.recipe import ModelConfig
from collabgen.models.base import (
    TRUNCATED,
    CallFailed,
    CallReport,
    ChatBackend,
    ChatRequest,
    ChatResult,
    ContextExhausted,
    Message,
)
from collabgen.models.gate import CallGate
from collabgen.models.prefix import PrefixMeter
from collabgen.models.reply_shape import check_shape
from collabgen.models.schema_dialect import for_backend
from collabgen.models.usage import UsageSink, UsageTee

__all__ = ["CallFailed", "Parsed", "RoleModel", "parse_json_object", "request_seed"]

T = TypeVar("T")


@dataclass(frozen=True)
class Parsed(Generic[T]):
    """One choice of a structured reply: what `parse` made of it, and the raw reply's
    token count and finish reason (a parsed reply can still have been cut)."""

    value: T
    tokens: int
    finish_reason: str


def request_seed(*parts: object) -> int:
    """A deterministic sample seed from a conversation's coordinates (31 bits, API-safe)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class RoleModel:
    """The facade the engine calls: `complete` for text, `complete_json` for judges.

    `backend` is the role's whole chain; `sink` gets every call's usage under this role's
    name; `prefix` is the chain's prefix meter, read for the manifest.
    """

    def __init__(
        self, role: str, config: ModelConfig, backend: ChatBackend, sink: UsageSink,
        prefix: PrefixMeter | None = None, gate: CallGate | None = None,
    ) -> None:
        self.role = role
        self.config = config
        self.backend = backend
        self.sink = sink
        self.prefix = prefix or PrefixMeter()
        self.gate = gate

    def bound(self, sink: UsageSink) -> RoleModel:
        """The same role and chain, recording into `sink` as well (e.g. a turn's ledger)."""
        return RoleModel(self.role, self.config, self.backend, UsageTee(self.sink, sink), self.prefix, self.gate)

    def gated(self, gate: CallGate) -> RoleModel:
        """The same role, chain and sink, its calls admitted by `gate`."""
        return RoleModel(self.role, self.config, self.backend, self.sink, self.prefix, gate)

    async def complete(
        self, messages: list[Message], *, seed: int, stage: str, n: int = 1, temperature: float | None = None,
        json_mode: bool = False, json_schema: dict[str, Any] | None = None,
    ) -> ChatResult:
        """`n` completions of `messages`; one request when the backend takes `n`."""
        if n > 1 and not self.backend.supports_n:
            return await self._emulate_n(messages, seed=seed, stage=stage, n=n, temperature=temperature,
                                         json_mode=json_mode, json_schema=json_schema)
        request = ChatRequest(
            messages=messages,
            temperature=self.config.temperature if temperature is None else temperature,
            top_p=self.config.top_p,
            max_tokens=self.config.max_tokens,
            n=n,
            seed=seed,
            json_mode=json_mode and self.config.json_mode,
            stage=stage,
            json_schema=json_schema,
        )
        return await self._send(request)

    async def complete_json(
        self, messages: list[Message], *, seed: int, stage: str,
        validate: Callable[[dict[str, Any]], Any] | None = None, json_schema: dict[str, Any] | None = None,
    ) -> Any:
        """A JSON object from the model, passed through `validate` when given.

        A reply that does not parse, does not fit `json_schema` (`reply_shape`), or that
        `validate` rejects (raises), is asked again with a new sample seed, so the cache
        never hands back the same bad reply; the last reason is in the failure.
        """

        def parse(text: str) -> Any:
            parsed = parse_json_object(text)
            if parsed is None:
                raise ValueError("no JSON object in the reply")
            check_shape(parsed, json_schema)  # a missing field, a bool where a number is asked
            return parsed if validate is None else validate(parsed)

        (only,) = await self.complete_parsed(messages, seed=seed, stage=stage, parse=parse, json_schema=json_schema,
                                             failure="parsable JSON")
        return only.value

    async def complete_parsed(
        self, messages: list[Message], *, seed: int, stage: str, parse: Callable[[str], T], n: int = 1,
        json_schema: dict[str, Any] | None = None, failure: str = "reply in the asked format",
    ) -> list[Parsed[T]]:
        """`n` structured replies in one request (JSON mode, `json_schema` where the backend
        can use it), each passed through `parse`; a choice that `parse` rejects (raises
        KeyError, TypeError or ValueError) is asked again on its own with new sample seeds,
        up to `parse_retries` times, so one bad choice does not cost the others. A choice
        that does not parse because it was cut at its token budget is not asked again with
        the same budget: the chain has already asked with twice the budget up to
        `max_tokens_cap` (the path of every cut reply), so it fails as truncated.
        """
        first = await self.complete(messages, seed=seed, stage=stage, n=n, json_mode=True, json_schema=json_schema)
        choices = zip(first.texts, first.completion_tokens, first.finish_reasons)
        return list(await asyncio.gather(*(
            self._parsed_choice(messages, seed=request_seed(seed, "choice", i) if i else seed, stage=stage,
                                parse=parse, json_schema=json_schema, first=choice, failure=failure)
            for i, choice in enumerate(choices)
        )))

    async def _parsed_choice(
        self, messages: list[Message], *, seed: int, stage: str, parse: Callable[[str], T],
        json_schema: dict[str, Any] | None, first: tuple[str, int, str], failure: str,
    ) -> Parsed[T]:
        text, tokens, finish = first
        reason = ""
        parse = self._held_to_dropped(parse, json_schema)
        for attempt in range(1, self.config.parse_retries + 2):
            try:
                return Parsed(parse(text), tokens, finish)
            except (KeyError, TypeError, ValueError) as err:
                reason = f" ({type(err).__name__}: {str(err)[:200]})"
            if finish == TRUNCATED and self.config.max_tokens is not None:
                # The chain already asked again with larger budgets up to the cap: a reply
                # still cut there is truncated, as a text reply is, not a format error.
                # (With no budget of ours, the cut is the server's: asking again may help.)
                self.sink.record_failure(self.role, stage)
                raise CallFailed(self._truncated(stage, text))
            if attempt > self.config.parse_retries:
                break
            self.sink.record_retry(self.role, stage)
            again = await self.complete(messages, seed=request_seed(seed, "parse", attempt), stage=stage,
                                        json_mode=True, json_schema=json_schema)
            text, tokens, finish = again.texts[0], again.completion_tokens[0], again.finish_reasons[0]
        self.sink.record_failure(self.role, stage)
        preview = text[:120].replace("\n", " ")
        raise CallFailed(
            f"{self.role} ({self.config.model}) gave no {failure} in {self.config.parse_retries + 1} "
            f"attempts at stage {stage!r}{reason}; last reply: {preview!r}"
        )

    def _held_to_dropped(self, parse: Callable[[str], T], json_schema: dict[str, Any] | None) -> Callable[[str], T]:
        """`parse`, then the reply checked against what the backend was not sent of
        `json_schema` (`schema_dialect`: OpenAI strict mode takes no `maxLength`): the
        server could not enforce it, so a reply breaking it is a format failure here."""
        sent = json_schema is not None and self.config.json_mode and self.config.json_schema
        residual = for_backend(self.config, json_schema).residual if sent and json_schema is not None else None
        if residual is None:
            return parse

        def checked(text: str) -> T:
            value = parse(text)
            check_shape(parse_json_object(text), residual)
            return value

        return checked

    def _truncated(self, stage: str, text: str) -> str:
        budget = max(self.config.max_tokens or 0, self.config.truncation_cap() or 0) or None
        limit = f"max_tokens={budget}" if budget is not None else "the server's own token limit"
        preview = text[:120].replace("\n", " ")
        return (f"truncated: {self.role} ({self.config.model}) reply cut at {limit} at stage {stage!r} before "
                f"its JSON was complete (asked again with twice the budget up to max_tokens_cap); raise max_tokens "
                f"or max_tokens_cap of models.{self.role}; last reply: {preview!r}")

    async def _emulate_n(
        self, messages: list[Message], *, seed: int, stage: str, n: int, temperature: float | None, json_mode: bool,
        json_schema: dict[str, Any] | None,
    ) -> ChatResult:
        """`n` one-choice requests with derived seeds, each cached and counted on its own."""
        parts = await asyncio.gather(
            *(
                self.complete(messages, seed=request_seed(seed, i), stage=stage, temperature=temperature,
                              json_mode=json_mode, json_schema=json_schema)
                for i in range(n)
            )
        )
        return ChatResult(
            texts=[p.texts[0] for p in parts],
            prompt_tokens=sum(p.prompt_tokens for p in parts),
            completion_tokens=[p.completion_tokens[0] for p in parts],
            finish_reasons=[p.finish_reasons[0] for p in parts],
        )

    async def _send(self, request: ChatRequest) -> ChatResult:
        """One request through the chain (past the gate, if any), its usage recorded from
        what the chain reports."""
        self._check_context(request)
        gate = self.gate
        if gate is not None:
            gate.enter()  # raises CallsStopped when closed
        try:
            result = await self.backend.complete(request)
            self._record_report(request.stage, result.report)
            self.sink.record(
                self.role, request.stage, prompt=result.prompt_tokens, completion=sum(result.completion_tokens),
                cached=result.report.cached,
            )
            return result
        except CallFailed as err:
            self._record_report(request.stage, err.report)
            raise
        finally:
            if gate is not None:
                gate.leave()  # after recording: whoever waits for the gate to drain sees the usage

    def _check_context(self, request: ChatRequest) -> None:
        """A prompt that cannot fit the role's known context is not sent (the server would
        refuse it): the conversation ends there. Tokens are estimated at four characters
        each; a prompt that slips past the estimate is caught from the server's refusal."""
        limit = self.config.context_length
        if limit is None:
            return
        estimate = sum(len(m["content"]) for m in request.messages) // 4 + (request.max_tokens or 0)
        if estimate > limit:
            raise ContextExhausted(
                f"{self.role} ({self.config.model}): about {estimate} tokens (prompt and max_tokens) would "
                f"not fit its context of {limit} at stage {request.stage!r}"
            )

    def _record_report(self, stage: str, report: CallReport) -> None:
        for _ in range(report.retries):
            self.sink.record_retry(self.role, stage)
        if report.failed:
            self.sink.record_failure(self.role, stage)

    async def aclose(self) -> None:
        await self.backend.aclose()


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text`, tolerating code fences and chatter around it."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder(strict=False)  # raw control characters in strings: constrained decoders emit them
    for candidate in candidates:
        for start in [i for i, ch in enumerate(candidate) if ch == "{"][:20]:
            try:
                value, _ = decoder.raw_decode(candidate[start:])
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None
