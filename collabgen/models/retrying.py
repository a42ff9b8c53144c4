"""The retry layer: transport retries alone, with tenacity.

Transient errors (rate limits, server errors, timeouts, replies the reply policy
rejects) are asked again with exponential backoff and jitter, waiting at least what a
server's Retry-After says; anything else, or a transient error after `max_retries`
retries, becomes `CallFailed`. A reply cut at its budget (`TruncatedReply`) is asked
again at once with the larger budget it carries, without using up `max_retries`. How many retries a call waited through travels out on its
report, since the layer cannot know which usage books the call belongs to.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from collabgen.models.base import (
    BackendLayer,
    CallFailed,
    CallReport,
    ChatBackend,
    ChatRequest,
    ChatResult,
    ContextExhausted,
    ContextTooLong,
    ModelError,
    TransientError,
    TruncatedReply,
)

log = logging.getLogger("collabgen")


class RetryingBackend(BackendLayer):
    """`label` names the role and model in failure reasons; `hold` is told a server's
    Retry-After, so the layer admitting requests holds all of them, not just this one;
    `sleep` is tenacity's, replaceable so tests can count waits instead of timing them."""

    def __init__(
        self, inner: ChatBackend, *, label: str, max_retries: int, wait: float, max_wait: float,
        hold: Callable[[float], None] | None = None, sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(inner)
        self.label = label
        self.max_retries = max_retries
        self.hold = hold
        self.max_wait = max_wait
        self._capped_warned = False
        self._sleep = {} if sleep is None else {"sleep": sleep}  # None: tenacity's own
        self._backoff = wait_exponential_jitter(multiplier=wait, max=max_wait, jitter=wait)

    async def complete(self, request: ChatRequest) -> ChatResult:
        retries = 0
        larger_budgets = 0
        current = request

        def count(state: RetryCallState) -> None:
            nonlocal retries, larger_budgets, current
            retries += 1
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, TruncatedReply):
                larger_budgets += 1
                current = error.request  # the same request with a larger token budget

        def spent(state: RetryCallState) -> bool:
            # A larger budget is not a transport retry: the doublings up to the cap are
            # bounded on their own and never use up `max_retries`.
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, TruncatedReply):
                return False
            return state.attempt_number - larger_budgets > self.max_retries

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientError), stop=spent,
            wait=self._wait_for, before_sleep=count, reraise=True, **self._sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result = await self.inner.complete(current)
                    return dataclasses.replace(result, report=CallReport(retries=retries))
        except ContextTooLong as err:
            reason = f"{self.label}: the conversation outgrew the model's context at stage {request.stage!r}: {err}"
            raise ContextExhausted(reason, CallReport(retries=retries)) from None
        except ModelError as err:
            reason = f"{self.label} failed at stage {request.stage!r}: {err}"
            raise CallFailed(reason, CallReport(retries=retries, failed=True)) from None
        raise AssertionError("unreachable")

    def _wait_for(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TruncatedReply):
            return 0.0  # not the server's trouble: ask again at once, with the bigger budget
        retry_after = getattr(error, "retry_after", None)
        if retry_after is None:
            return backoff
        retry_after = self._capped(retry_after)
        if self.hold is not None:
            self.hold(retry_after)  # the server's word holds for every request of this role
        return max(backoff, retry_after)

    def _capped(self, retry_after: float) -> float:
        """A server's Retry-After, at most `retry_max_wait` (a hostile or broken `1e9` or
        `inf` would stall the run silently); said once per role."""
        if retry_after <= self.max_wait:
            return retry_after
        if not self._capped_warned:
            self._capped_warned = True
            log.warning("%s: the server asked to wait %s s (Retry-After); waiting retry_max_wait = %g s instead",
                        self.label, f"{retry_after:g}", self.max_wait)
        return self.max_wait
