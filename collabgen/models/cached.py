"""The request-cache layer: a finished call is never paid for twice.

Outermost in a role's chain, so a rerun after a kill replays every finished call from
`RequestCache` before anything else (merging, limits, retries) is involved. A reply
another caller's request answered in flight is already stored by that caller, and a
replayed reply is reported `cached` for the usage books.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from collabgen.models.base import BackendLayer, CallReport, ChatBackend, ChatRequest, ChatResult
from collabgen.models.cache import RequestCache


class CachedBackend(BackendLayer):
    def __init__(self, inner: ChatBackend, cache: RequestCache, key: Callable[[ChatRequest], str]) -> None:
        super().__init__(inner)
        self.cache = cache
        self.key = key

    async def complete(self, request: ChatRequest) -> ChatResult:
        key = self.key(request)
        hit = self.cache.get(key)
        if hit is not None:
            # with_clean_text: a cache written before replies were cleaned replays clean
            return dataclasses.replace(hit.with_clean_text(), report=CallReport(cached=True))
        result = await self.inner.complete(request)
        if not result.report.cached:
            self.cache.put(key, result)
        return result
