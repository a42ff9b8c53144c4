"""Reading how long a server asks us to wait.

A value that does not parse (`soon`) or is not a number (`nan`) counts as absent; an
enormous one (`1e9`, `inf`) is returned as it is, and the retry layer caps it at the
role's `retry_max_wait`, saying so."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return max(parsed.timestamp() - time.time(), 0.0)


def _number(text: str | None) -> float | None:
    """A non-negative number of seconds, `inf` included; None for text or `nan`."""
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) else max(value, 0.0)
