"""The reply policy: which replies the engine accepts, and which it asks again.

A backend answers whatever the server sent; whether a reply is usable is one decision,
made here for every backend. Each check looks at a result and names the problem of a
reply worth asking again (raised as `TransientError`, so the retry layer above retries
it and counts it).

Finish reasons: a reply cut at its token budget (`length`) is asked again with twice the
budget, up to `max_tokens_cap` (a `TruncatedReply` carries the bigger request to the
retry layer). A reply still cut at the cap is returned as it is, its finish reason
intact: the engine flags it `truncated` and never chooses it.

Text: a lone surrogate escape in a reply (`\\ud800`, valid JSON, not Unicode) becomes
U+FFFD here, below the request cache, so neither the run nor a rerun trips on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from collabgen.models.base import (
    TRUNCATED,
    BackendLayer,
    ChatBackend,
    ChatRequest,
    ChatResult,
    TransientError,
    TruncatedReply,
)

ReplyCheck = Callable[[ChatResult], str | None]


def empty_reply(result: ChatResult) -> str | None:
    """A choice with no text: servers send it under load, and a new sample usually has text."""
    return "empty reply" if any(not text.strip() for text in result.texts) else None


DEFAULT_CHECKS: tuple[ReplyCheck, ...] = (empty_reply,)


class ReplyPolicy(BackendLayer):
    def __init__(
        self, inner: ChatBackend, checks: Sequence[ReplyCheck] = DEFAULT_CHECKS, max_tokens_cap: int | None = None,
    ) -> None:
        super().__init__(inner)
        self.checks = tuple(checks)
        self.max_tokens_cap = max_tokens_cap

    async def complete(self, request: ChatRequest) -> ChatResult:
        result = (await self.inner.complete(request)).with_clean_text()  # what is cached is usable
        for check in self.checks:
            problem = check(result)
            if problem is not None:
                raise TransientError(problem)
        if TRUNCATED in result.finish_reasons:
            bigger = self.bigger_budget(request)
            if bigger is not None:
                raise TruncatedReply(f"reply cut at max_tokens={request.max_tokens}", bigger)
        return result

    def bigger_budget(self, request: ChatRequest) -> ChatRequest | None:
        """The request with twice the token budget, or None at the cap (or with no budget set)."""
        if request.max_tokens is None or self.max_tokens_cap is None or request.max_tokens >= self.max_tokens_cap:
            return None
        return request.model_copy(update={"max_tokens": min(2 * request.max_tokens, self.max_tokens_cap)})
