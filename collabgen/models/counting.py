"""A backend that answers without a model, for `collabgen plan`.

`plan` runs the real conversation loop (the same `Collaboration`, scorer and task
metrics a run uses) against this backend, so its call counts are what the engine does,
not a hand-kept copy of the call plan. The replies are built for the upper bound:
- every reply is unique, so no two prompts coincide and nothing is shared or cached;
- the simulated user never ends the chat, so every conversation runs `max_turns`;
- replies hold no code fence and no boxed answer, so every extraction needs the judge;
- a structured request (judges, the simulated user) is answered with the smallest
  instance of its JSON schema, except that a string the schema requires to be non-empty
  (`minLength`, e.g. the user's message) gets a unique reply-length text.
Token figures are estimates: prompts at four characters per token, replies at the
lengths given per role.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from collabgen.models.base import ChatRequest, ChatResult

CHARS_PER_TOKEN = 4


def smallest_instance(schema: dict[str, Any] | None, text: Callable[[], str] = lambda: "x") -> Any:
    """A minimal value valid under a (simple) JSON schema: objects, strings, numbers, booleans,
    enums, arrays. A string with `minLength` is `text()` (the empty string otherwise)."""
    if not schema:
        return {}
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: smallest_instance(properties.get(name, {}), text) for name in schema.get("required", properties)}
    if kind in ("number", "integer"):
        return schema.get("minimum", 0)
    if kind == "string" and schema.get("minLength", 0) > 0:
        return text()
    defaults = {"string": "", "boolean": False, "array": [], "null": None}
    return defaults.get(kind, None)


def largest_bounded_instance(schema: dict[str, Any] | None) -> Any:
    """The longest value the schema's bounds allow: every string with a `maxLength` at
    that length (others as short as the schema allows), every optional property present."""
    if not schema:
        return {}
    kind = schema.get("type", "object")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: largest_bounded_instance(sub) for name, sub in properties.items()}
    if kind == "string" and "maxLength" in schema:
        return "x" * schema["maxLength"]
    return smallest_instance(schema)


class CountingBackend:
    """Answers every request at once with replies of assumed lengths (tokens per reply).

    `supports_n` mirrors the real backend's, so a role whose backend takes one choice per
    request is counted with one call per choice.
    """

    def __init__(self, reply_tokens: int, supports_n: bool = True) -> None:
        self.reply_tokens = reply_tokens
        self.supports_n = supports_n
        self._serial = itertools.count()
        self.schemas: dict[str, dict[str, Any]] = {}  # stage -> the JSON schema its replies must follow

    async def complete(self, request: ChatRequest) -> ChatResult:
        prompt_chars = sum(len(m["content"]) for m in request.messages)
        if request.json_schema is not None:
            self.schemas.setdefault(request.stage, request.json_schema)
        if request.json_schema is not None or request.json_mode:
            texts = [json.dumps(smallest_instance(request.json_schema, self._reply)) for _ in range(request.n)]
        else:
            texts = [self._reply() for _ in range(request.n)]
        return ChatResult(
            texts=texts,
            prompt_tokens=prompt_chars // CHARS_PER_TOKEN,
            completion_tokens=[self.reply_tokens] * request.n,
            finish_reasons=["stop"] * request.n,
        )

    def _reply(self) -> str:
        serial = f"reply {next(self._serial)} "
        return (serial * (self.reply_tokens * CHARS_PER_TOKEN // len(serial) + 1))[: self.reply_tokens * CHARS_PER_TOKEN]

    async def aclose(self) -> None:
        return None
