"""One retry policy for every SDK: their errors become TransientError or PermanentError.

The openai and anthropic clients share their error classes' names; a malformed body
surfaces from both as a bare `json.JSONDecodeError` (a ValueError), not as an SDK error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from collabgen.models.base import ContextTooLong, ModelError, PermanentError, TransientError
from collabgen.models.retry_after import retry_after_seconds

RETRYABLE_STATUS = (408, 409, 425, 429)
# How servers say a prompt outgrew the context: OpenAI and vLLM ("maximum context length",
# "max_model_len"), Anthropic ("prompt is too long"), llama.cpp / SGLang ("exceeds the context").
CONTEXT_TOO_LONG = re.compile(
    r"maximum context length|max_model_len|context length|prompt is too long|exceeds? the (?:available )?context",
    re.IGNORECASE,
)


@contextmanager
def translated_errors(sdk: ModuleType, service: str) -> Iterator[None]:
    """Re-raise the SDK's errors (module `sdk`) as collabgen's, naming `service`."""
    try:
        yield
    except sdk.APIStatusError as err:
        status = err.status_code
        text = str(err)
        message = f"HTTP {status} from {service}: {text[:300]}{'...' if len(text) > 300 else ''}"
        if status in RETRYABLE_STATUS or status >= 500:
            raise TransientError(message, retry_after=retry_after_seconds(err.response.headers)) from None
        if status in (400, 413) and CONTEXT_TOO_LONG.search(text):
            raise ContextTooLong(message) from None
        raise PermanentError(message) from None
    except (sdk.APITimeoutError, sdk.APIConnectionError) as err:
        if isinstance(err.__cause__, ModelError):  # our own bound, raised under the SDK (bounded_http)
            raise err.__cause__ from None
        raise TransientError(f"{type(err).__name__}: {err}") from None
    except (sdk.APIResponseValidationError, json.JSONDecodeError, ValueError) as err:
        raise TransientError(f"malformed response: {type(err).__name__}") from None
