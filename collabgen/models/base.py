"""The narrow contract every model backend fulfils.

A backend turns one `ChatRequest` into one `ChatResult`. It does not retry, cache,
limit or count: those live in `collabgen.models.executor`, so every backend gets them
the same way. Backends translate their library's errors into `TransientError` (worth
retrying) or `PermanentError` (not).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from collabgen.models.rate_headers import RateHint

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


@dataclass
class ChatResult:
    texts: list[str]
    prompt_tokens: int = 0
    completion_tokens: list[int] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    rate_hint: RateHint | None = field(default=None, compare=False)

    def cacheable(self) -> dict[str, object]:
        """What the request cache stores: the reply, not the transient rate hint."""
        return {
            "texts": self.texts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reasons": self.finish_reasons,
        }


class ModelError(Exception):
    """Base class of model-call failures."""


class TransientError(ModelError):
    """Worth retrying: rate limits, server errors, timeouts, malformed or empty replies."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ModelError):
    """Not worth retrying: bad request, authentication, unknown model."""


class ChatBackend(Protocol):
    """What the executor needs from a backend."""

    supports_n: bool

    async def complete(self, request: ChatRequest) -> ChatResult: ...

    async def aclose(self) -> None: ...


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
