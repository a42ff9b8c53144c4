"""Rate-limit hints that providers send in response headers.

OpenAI: `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` ("6m0s", "1s",
"20ms"), and the same for tokens. Anthropic: `anthropic-ratelimit-requests-remaining`,
`anthropic-ratelimit-requests-reset` (an RFC 3339 time), and the same for tokens.
When a budget reaches zero the role's limiter holds new requests until its reset.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class RateHint:
    remaining_requests: int | None = None
    reset_requests: float | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None

    def pause_seconds(self) -> float:
        """How long to hold new requests: until the reset of an exhausted budget."""
        waits = []
        if self.remaining_requests == 0 and self.reset_requests:
            waits.append(self.reset_requests)
        if self.remaining_tokens == 0 and self.reset_tokens:
            waits.append(self.reset_tokens)
        return max(waits, default=0.0)


def parse_duration(text: str) -> float | None:
    """Seconds in an OpenAI-style duration ("1m30s", "250ms", "2.5s")."""
    parts = _DURATION.findall(text.strip())
    if not parts:
        try:
            return float(text)
        except ValueError:
            return None
    return sum(float(value) * _UNIT[unit] for value, unit in parts)


def _seconds_until(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return parse_duration(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max((moment - datetime.now(timezone.utc)).total_seconds(), 0.0)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


# Per provider: header names (remaining requests, reset, remaining tokens, reset) and how to read a reset.
_PROVIDERS = (
    (("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
      "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"), parse_duration),
    (("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset",
      "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"), _seconds_until),
)


def rate_hint_from_headers(headers: Mapping[str, str]) -> RateHint | None:
    for (requests, requests_reset, tokens, tokens_reset), read_reset in _PROVIDERS:
        if requests in headers or tokens in headers:
            reset_r, reset_t = headers.get(requests_reset), headers.get(tokens_reset)
            return RateHint(
                remaining_requests=_int(headers.get(requests)),
                reset_requests=read_reset(reset_r) if reset_r else None,
                remaining_tokens=_int(headers.get(tokens)),
                reset_tokens=read_reset(reset_t) if reset_t else None,
            )
    return None
