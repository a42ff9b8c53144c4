"""The token counts a backend reports, checked before the token penalty reads them.

Missing or zero usage made every future's token penalty 0 (free tokens); negative usage
made the penalty a reward (+500, +1000). A count that is negative or not an integer is a
backend fault: the call fails with the reason (`PermanentError`), visibly, never a score.
A reply with no usage (or zero completion tokens for a non-empty text) is counted with
the documented estimate, one token per 4 characters (rounded up; tiktoken is not a
dependency and its encodings download at first use, which a run may not do), and the
result says `tokens_estimated`.
"""

from __future__ import annotations

import math
from typing import Any

from collabgen.models.base import PermanentError

CHARS_PER_TOKEN = 4


def reported_count(value: Any, what: str) -> int | None:
    """A usage figure as the server sent it: None when absent; refused when not a count."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PermanentError(f"the server reported {what} = {value!r}: token usage must be a count >= 0 "
                             "(a backend fault; the token penalty cannot be computed from it)")
    return value


def estimated_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def needs_estimate(total: int | None, texts: list[str]) -> bool:
    """No figure, or zero tokens for text that is there: the figure cannot be used."""
    return total is None or (total == 0 and any(texts))
