"""The narrow contract every model backend fulfils.

A backend turns one `ChatRequest` into one `ChatResult`. It does not retry, cache,
limit or count: each of those is a layer wrapping a backend in the same protocol
(`collabgen.models.registry.build_chain` stacks them), so every backend gets them the
same way and each layer can be tested alone. Backends translate their library's errors
into `TransientError` (worth retrying) or `PermanentError` (not).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from collabgen.config.secrets import scrub_known
from collabgen.models.rate_headers import RateHint

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

Message = dict[str, str]


class ChatRequest(BaseModel):
    """One chat completion request; `n` choices share the same prompt."""

    model_config = ConfigDict(frozen=True)

    messages: list[Message]
    temperature: float = 1.0
    top_p: float | None = None
    max_tokens: int | None = None
    n: int = 1
    seed: int | None = None
    json_mode: bool = False
    # Which step of the engine asks (e.g. "future_user"): for usage books, error messages
    # and scripted test backends. Excluded from dumps, so the request-cache key is what
    # it was before the field existed and identical requests of two stages share a reply.
    stage: str = Field(default="", exclude=True)
    # The JSON Schema a judge's reply must follow (declared next to its template). Excluded
    # from the cache key: it is a function of the template, whose text is in `messages`.
    json_schema: dict[str, Any] | None = Field(default=None, exclude=True)


@dataclass(frozen=True)
class CallReport:
    """What the layers did for one call, so the facade can count it without them.

    Travels on the `ChatResult` (or the `CallFailed`) out of the chain, because the chain
    is shared by every usage book a call may land in (the run's and a turn's).
    """

    cached: bool = False  # answered by the request cache or by an identical request in flight
    retries: int = 0  # transport retries this call waited through
    failed: bool = False  # the call gave up here (a merged waiter of a failed call does not count it)


@dataclass
class ChatResult:
    texts: list[str]
    prompt_tokens: int = 0
    completion_tokens: list[int] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    rate_hint: RateHint | None = field(default=None, compare=False)
    report: CallReport = field(default_factory=CallReport, compare=False)
    tokens_estimated: bool = False  # the server gave no usable completion count: estimated (`token_usage`)

    def with_clean_text(self) -> ChatResult:
        """The result as it may be stored: every lone surrogate (`\\ud800` in a server's JSON:
        valid JSON, not Unicode, so no file, shard or request can carry it) replaced by
        U+FFFD, and every known key (`scrub_known`) masked. A server that quotes the key in a
        normal reply would otherwise put it in the cache, the journal and the shards."""
        texts = [scrub_known(_LONE_SURROGATE.sub("\ufffd", text)) for text in self.texts]
        return self if texts == self.texts else dataclasses.replace(self, texts=texts)

    def cacheable(self) -> dict[str, object]:
        """What the request cache stores: the reply, not the transient rate hint."""
        return {
            "texts": self.texts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reasons": self.finish_reasons,
            **({"tokens_estimated": True} if self.tokens_estimated else {}),
        }


class ModelError(Exception):
    """Base class of model-call failures.

    The message is scrubbed of every known key when the error is made: an SDK's error
    text carries the server's body, and a server may echo the key it refused. Whatever
    prints, logs or journals the error later then has nothing to leak.
    """

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(scrub_known(str(message)), *args)


class TransientError(ModelError):
    """Worth retrying: rate limits, server errors, timeouts, malformed or empty replies."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TruncatedReply(TransientError):
    """A reply cut at its token budget, worth asking again with a larger one (`request`)."""

    def __init__(self, message: str, request: ChatRequest) -> None:
        super().__init__(message, retry_after=0.0)
        self.request = request


TRUNCATED = "length"
"""The finish reason of a reply cut at its token budget (backends map theirs to it)."""


class PermanentError(ModelError):
    """Not worth retrying: bad request, authentication, unknown model."""


class CallFailed(ModelError):
    """A call still failed after every retry; the conversation it served fails with this reason."""

    def __init__(self, message: str, report: CallReport | None = None) -> None:
        super().__init__(message)
        self.report = report or CallReport()


class ContextTooLong(PermanentError):
    """The server refused a prompt longer than the model's context (HTTP 400)."""


class ContextExhausted(CallFailed):
    """The conversation outgrew the model's context: it ends cleanly with the turns it has
    (status `context_exhausted`), it does not fail."""


class ChatBackend(Protocol):
    """What a layer needs from the layer (or backend) it wraps."""

    supports_n: bool

    async def complete(self, request: ChatRequest) -> ChatResult: ...

    async def aclose(self) -> None: ...


class BackendLayer:
    """A `ChatBackend` wrapping another one: holds `inner` and passes `supports_n` and
    `aclose` through, so each layer's class is only its one job."""

    def __init__(self, inner: ChatBackend) -> None:
        self.inner = inner
        self.supports_n = inner.supports_n

    async def aclose(self) -> None:
        await self.inner.aclose()


def split_usage(total: int, texts: list[str]) -> list[int]:
    """Apportion an aggregate completion-token count over choices by their length.

    OpenAI-compatible servers report one usage figure for all `n` choices; the token
    penalty needs one per choice. The split is proportional to characters and sums to
    `total` exactly.
    """
    if not texts:
        return []
    lengths = [max(len(t), 1) for t in texts]
    whole = sum(lengths)
    shares = [total * length // whole for length in lengths]
    shares[-1] += total - sum(shares)
    return shares
