"""Per-role limits: concurrency, requests per minute, tokens per minute.

Concurrency is explicit: self-hosted servers slow down instead of answering 429, so a
limit must never assume 429s to find out it is pushing too hard.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class RateLimiter:
    def __init__(
        self,
        concurrency: int,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        window: float = 60.0,
    ) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._rpm = requests_per_minute
        self._tpm = tokens_per_minute
        self._window = window
        self._starts: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._lock = asyncio.Lock()
        self._paused_until = 0.0
        self.in_flight = 0

    @asynccontextmanager
    async def slot(self, estimated_tokens: int = 0) -> AsyncIterator[None]:
        async with self._slots:
            await self._admit(estimated_tokens)
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1

    def pause(self, seconds: float) -> None:
        """Hold new requests for `seconds` (a provider said its budget is spent)."""
        if seconds > 0:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def observe(self, token_correction: int) -> None:
        """Correct the token estimate of the last admitted call with the real usage."""
        if self._tpm is not None and token_correction:
            self._tokens.append((time.monotonic(), token_correction))

    async def _admit(self, tokens: int) -> None:
        while (wait := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if self._rpm is None and self._tpm is None:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                horizon = now - self._window
                while self._starts and self._starts[0] <= horizon:
                    self._starts.popleft()
                while self._tokens and self._tokens[0][0] <= horizon:
                    self._tokens.popleft()
                waits = []
                if self._rpm is not None and len(self._starts) >= self._rpm:
                    waits.append(self._starts[0] - horizon)
                used = sum(t for _, t in self._tokens)
                if self._tpm is not None and self._tokens and used + tokens > self._tpm:
                    waits.append(self._tokens[0][0] - horizon)
                if not waits:
                    self._starts.append(now)
                    if self._tpm is not None:
                        self._tokens.append((now, tokens))
                    return
                await asyncio.sleep(max(min(waits), 0.001))
