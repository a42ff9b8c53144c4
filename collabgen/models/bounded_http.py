"""The HTTP client under the OpenAI and Anthropic SDKs, bounded against a hostile server.

Two bounds the SDKs do not give: a reply body larger than `max_reply_bytes` (counted as
decoded, so a compressed bomb counts at its real size) is refused while it streams in,
before it is held whole; and `timeout` bounds the whole exchange, headers and body, where
the SDKs' timeout bounds each read, so a server dripping a byte a second never hit it.

The bounds live in `send`, which both SDKs call once per HTTP attempt. A reply over the
bound raises `ReplyTooLarge` (permanent: the call fails with that reason, visibly); the
deadline raises `ReplyTimedOut` (transient: retried as any timeout). The OpenAI SDK lets
an exception it does not know pass as it is; the Anthropic SDK wraps it as a connection
error with it as the cause, which `sdk_errors.translated_errors` unwraps.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2

from collabgen.models.base import PermanentError, TransientError

DEFAULT_MAX_REPLY_BYTES = 16 << 20
"""16 MiB: a chat reply with every choice and its token ids fits many times over."""

_RECOMPUTED = {"content-encoding", "content-length", "transfer-encoding"}


class ReplyTooLarge(PermanentError):
    """The server's reply passed the role's `max_reply_bytes`."""


class ReplyTimedOut(TransientError):
    """The whole exchange took longer than the role's `timeout`."""


class BoundedSend:
    """Mixin for an `httpx2.AsyncClient` subclass (`class C(BoundedSend, SDKClient)`):
    every `send` reads its body within `max_reply_bytes` and `deadline` seconds and
    returns it already read."""

    def __init__(self, *, max_reply_bytes: int, deadline: float, **kwargs: Any) -> None:
        self.max_reply_bytes = max_reply_bytes
        self.deadline = deadline
        super().__init__(**kwargs)  # the SDK client's own defaults (limits, redirects)

    async def send(self, request: httpx2.Request, *, stream: bool = False, **kwargs: Any) -> httpx2.Response:
        try:
            async with asyncio.timeout(self.deadline):
                response: httpx2.Response = await super().send(request, stream=True, **kwargs)  # type: ignore[misc]
                try:
                    body = await self._read_bounded(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise ReplyTimedOut(f"no complete reply within the timeout of {self.deadline:g} s "
                                "(the whole request: headers and body)") from None
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _RECOMPUTED]
        read = httpx2.Response(response.status_code, headers=headers, content=body, request=request,
                               extensions=response.extensions, history=response.history)
        read.elapsed = response.elapsed
        return read

    async def _read_bounded(self, response: httpx2.Response) -> bytes:
        limit = self.max_reply_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit and "content-encoding" not in response.headers:
            raise ReplyTooLarge(self._too_large(f"announced {int(declared):,} bytes"))
        chunks: list[bytes] = []
        seen = 0
        async for chunk in response.aiter_bytes():
            seen += len(chunk)
            if seen > limit:
                raise ReplyTooLarge(self._too_large(f"more than {limit:,} bytes arrived"))
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, what: str) -> str:
        return (f"the server's reply is too large ({what}; max_reply_bytes is {self.max_reply_bytes:,}): "
                "refused unread; raise models.<role>.max_reply_bytes if the server is right")
