"""One role's model as the engine sees it: cache, limits, retries and usage around a backend."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from collabgen.config.recipe import ModelConfig
from collabgen.models.base import (
    ChatBackend,
    ChatRequest,
    ChatResult,
    Message,
    ModelError,
    TransientError,
)
from collabgen.models.cache import RequestCache
from collabgen.models.limits import RateLimiter
from collabgen.models.prefix import PrefixMeter
from collabgen.models.usage import UsageBook


class CallFailed(ModelError):
    """A call still failed after every retry; the conversation it served fails with this reason."""


def request_seed(*parts: object) -> int:
    """A deterministic sample seed from a conversation's coordinates (31 bits, API-safe)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class RoleModel:
    """The facade the engine calls: `complete` for text, `complete_json` for judges."""

    def __init__(
        self,
        role: str,
        config: ModelConfig,
        backend: ChatBackend,
        cache: RequestCache | None,
        usage: UsageBook,
    ) -> None:
        self.role = role
        self.config = config
        self.backend = backend
        self.cache = cache
        self.usage = usage
        self.limiter = RateLimiter(
            concurrency=config.concurrency,
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
        )
        self.prefix = PrefixMeter()
        self._pending: dict[str, asyncio.Future[ChatResult]] = {}
        self._wait = wait_exponential_jitter(
            multiplier=config.retry_wait, max=config.retry_max_wait, jitter=config.retry_wait
        )

    async def complete(
        self,
        messages: list[Message],
        *,
        seed: int,
        stage: str,
        n: int = 1,
        temperature: float | None = None,
        json_mode: bool = False,
        ledger: UsageBook | None = None,
    ) -> ChatResult:
        """`n` completions of `messages`; one request when the backend takes `n`."""
        if n > 1 and not self.backend.supports_n:
            parts = await asyncio.gather(
                *(
                    self.complete(messages, seed=request_seed(seed, i), stage=stage, temperature=temperature,
                                  json_mode=json_mode, ledger=ledger)
                    for i in range(n)
                )
            )
            return ChatResult(
                texts=[p.texts[0] for p in parts],
                prompt_tokens=sum(p.prompt_tokens for p in parts),
                completion_tokens=[p.completion_tokens[0] for p in parts],
                finish_reasons=[p.finish_reasons[0] for p in parts],
            )
        request = ChatRequest(
            messages=messages,
            temperature=self.config.temperature if temperature is None else temperature,
            top_p=self.config.top_p,
            max_tokens=self.config.max_tokens,
            n=n,
            seed=seed,
            json_mode=json_mode and self.config.json_mode,
        )
        key = RequestCache.key(self.config.backend, self.config.model, request)
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                self._count(stage, cached, cached=True, ledger=ledger)
                return cached
        pending = self._pending.get(key)
        if pending is not None:
            # The same request is already on the wire (e.g. two policies' shared opening):
            # wait for its answer instead of paying twice.
            result = await asyncio.shield(pending)
            self._count(stage, result, cached=True, ledger=ledger)
            return result
        future: asyncio.Future[ChatResult] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            self.prefix.observe(messages)
            result = await self._call_with_retries(request, stage, ledger)
            if self.cache is not None:
                self.cache.put(key, result)
            future.set_result(result)
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved here, so an unawaited future does not warn
            raise
        finally:
            del self._pending[key]
        self._count(stage, result, cached=False, ledger=ledger)
        return result

    async def complete_json(
        self,
        messages: list[Message],
        *,
        seed: int,
        stage: str,
        ledger: UsageBook | None = None,
        validate: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Any:
        """A JSON object from the model, passed through `validate` when given.

        A reply that does not parse, or that `validate` rejects (raises), is asked again
        with a new sample seed, so the cache never hands back the same bad reply.
        """
        last = ""
        for attempt in range(self.config.parse_retries + 1):
            result = await self.complete(
                messages, seed=request_seed(seed, "parse", attempt) if attempt else seed, stage=stage,
                json_mode=True, ledger=ledger,
            )
            last = result.texts[0]
            parsed = parse_json_object(last)
            if parsed is not None:
                if validate is None:
                    return parsed
                try:
                    return validate(parsed)
                except (KeyError, TypeError, ValueError):
                    pass
            self._books(ledger, lambda b: b.record_retry(self.role, stage))
        self._books(ledger, lambda b: b.record_failure(self.role, stage))
        preview = last[:120].replace("\n", " ")
        raise CallFailed(
            f"{self.role} ({self.config.model}) gave no parsable JSON in {self.config.parse_retries + 1} "
            f"attempts at stage {stage!r}; last reply: {preview!r}"
        )

    async def _call_with_retries(self, request: ChatRequest, stage: str, ledger: UsageBook | None) -> ChatResult:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=self._wait_for,
            before_sleep=lambda _: self._books(ledger, lambda b: b.record_retry(self.role, stage)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    estimate = _estimate_tokens(request)
                    async with self.limiter.slot(estimate):
                        result = await self.backend.complete(request)
                    self.limiter.observe(result.prompt_tokens + sum(result.completion_tokens) - estimate)
                    if result.rate_hint is not None:
                        self.limiter.pause(result.rate_hint.pause_seconds())
                    if any(not text.strip() for text in result.texts):
                        raise TransientError("empty reply")
                    return result
        except ModelError as err:
            self._books(ledger, lambda b: b.record_failure(self.role, stage))
            raise CallFailed(f"{self.role} ({self.config.model}) failed at stage {stage!r}: {err}") from None
        raise AssertionError("unreachable")

    def _wait_for(self, state: RetryCallState) -> float:
        backoff = self._wait(state)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is None:
            return backoff
        self.limiter.pause(retry_after)  # the server's word holds for every request of this role
        return max(backoff, retry_after)

    def _books(self, ledger: UsageBook | None, action: Callable[[UsageBook], None]) -> None:
        action(self.usage)
        if ledger is not None:
            action(ledger)

    def _count(self, stage: str, result: ChatResult, *, cached: bool, ledger: UsageBook | None) -> None:
        for book in (self.usage, ledger):
            if book is not None:
                book.record(
                    self.role, stage, prompt=result.prompt_tokens, completion=sum(result.completion_tokens),
                    cached=cached,
                )

    async def aclose(self) -> None:
        await self.backend.aclose()


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text`, tolerating code fences and chatter around it."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start in [i for i, ch in enumerate(candidate) if ch == "{"][:20]:
            try:
                value, _ = decoder.raw_decode(candidate[start:])
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _estimate_tokens(request: ChatRequest) -> int:
    prompt = sum(len(m["content"]) for m in request.messages) // 4
    return prompt + (request.max_tokens or 256) * request.n
