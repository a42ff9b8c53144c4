"""The simulated user: what it knows, how it sees the chat, and how it answers.

What it knows: the `user_simulator` template around the task's brief
(`Task.user_brief`), which holds only what a real user would have: the request and the
intent behind it, never a reference answer, tests or labels.

How it sees the chat: as a transcript in one user message (`user_turn`), after its
system prompt. The roles are not flipped: an assistant-tuned model shown the assistant's
drafts as *user* messages tends to slip back into its trained role and review or rewrite
them; asked to write the next move of the USER in a transcript, it stays a user.

How it answers: a JSON object (schema `user_simulator.schema.json`) with a private
`thought` (its assessment of the assistant's latest answer), `satisfied` and the
`message` it sends. Only the message reaches the chat; the thought is dropped here, so
no assistant-facing prompt, judge prompt or output row ever holds it. A satisfied user
ends the chat: its message is stored with the termination marker, which the rest of the
pipeline reads (futures' `terminated`, the next real user turn, rows strip it). A message
must carry words: one of blanks, punctuation or only the marker is a reply not in the
format, asked again like any other. The message's `maxLength` holds for every message but
the first of a seed whose brief asks for a paste (Abg-CoQA's story), which gets the
paste's length on top (`opening_schema`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from collabgen.models.base import TRUNCATED, Message
from collabgen.models.executor import RoleModel, parse_json_object
from collabgen.prompting import TERMINATION_MARKER, Prompts
from collabgen.tasks.base import SeedModel, Task, transcript

TEMPLATES = ("user_simulator", "user_turn")


def is_termination(text: str) -> bool:
    """Whether a user message ends the chat."""
    return TERMINATION_MARKER in text


@dataclass(frozen=True)
class UserReply:
    """The public part of one simulator reply: its message and whether it ends the chat."""

    message: str
    satisfied: bool

    def stored(self, *, opening: bool) -> str:
        """The user message as the chat keeps it: with the termination marker when the user
        is satisfied. An opening never ends the chat (nothing has been answered yet)."""
        text = self.message.replace(TERMINATION_MARKER, "").strip() if opening else self.message
        if self.satisfied and not opening and not is_termination(text):
            text = f"{text} {TERMINATION_MARKER}".strip()
        return text


def carries_words(message: str) -> bool:
    """Whether a message says anything: a letter or digit (any script) besides the
    termination marker. The schema's `minLength: 1` lets through a space, a newline, a
    zero-width space or a bare marker, each of which would be an empty user turn."""
    return any(ch.isalnum() for ch in message.replace(TERMINATION_MARKER, ""))


def parse_user_reply(text: str) -> UserReply:
    """The simulator's JSON reply, checked; raises (KeyError, TypeError, ValueError) so the
    caller asks again. The `thought` must be there (the simulator thinks before it speaks)
    but is not kept."""
    reply: dict[str, Any] | None = parse_json_object(text)
    if reply is None:
        raise ValueError("no JSON object in the simulator's reply")
    if not isinstance(reply["thought"], str):
        raise TypeError("thought must be a string")
    message = reply["message"]
    if not isinstance(message, str):
        raise TypeError("message must be a string")
    if not carries_words(message):
        raise ValueError("message must carry words (a letter or digit besides the termination marker)")
    satisfied = reply["satisfied"]
    if isinstance(satisfied, str) and satisfied.strip().lower() in ("true", "false"):
        satisfied = satisfied.strip().lower() == "true"
    if not isinstance(satisfied, bool):
        raise TypeError("satisfied must be true or false")
    return UserReply(message=message.strip(), satisfied=satisfied)


def opening_schema(schema: dict[str, Any] | None, pasted: int) -> dict[str, Any] | None:
    """The simulator's schema for its first message: the message's `maxLength` raised by
    `pasted`, the characters the brief tells the user to paste word for word (the Abg-CoQA
    story, `Task.opening_paste_chars`).

    Why: a constrained decoder (vLLM structured outputs, strict `json_schema`) ends the
    string at `maxLength`, so an opening that pastes a story near or over the usual cap lost
    the question that follows it, and the assistant was scored on a story with no question.
    The story's length on top of the usual cap leaves the user the usual room for what it
    writes itself (the question, a lead-in) whatever the story's length. The cap is widened
    rather than dropped: a bound is what keeps a runaway or random model (which fills
    strings to their `maxLength`) from writing to its token budget, and what `plan`'s
    budget warnings read. Later messages keep the usual cap: the brief asks for no paste."""
    if schema is None:
        return None
    message = schema.get("properties", {}).get("message", {})
    if not pasted or "maxLength" not in message:
        return schema
    widened = copy.deepcopy(schema)
    widened["properties"]["message"]["maxLength"] = message["maxLength"] + pasted
    return widened


@dataclass(frozen=True)
class Said:
    """One message as the chat stores it, with its token count and whether it was cut at its budget."""

    text: str
    tokens: int
    truncated: bool
    tokens_estimated: bool = False  # the backend gave no usable count (`models.token_usage`)

    @property
    def ends(self) -> bool:
        return is_termination(self.text)


class UserSimulator:
    """One seed's simulated user: its brief, rendered once per conversation."""

    def __init__(self, task: Task, seed: SeedModel, prompts: Prompts) -> None:
        self.prompts = prompts
        self.system = prompts.render("user_simulator", task_brief=task.user_brief(seed, prompts))
        self.schema = prompts.schema("user_simulator")
        self.opening = opening_schema(prompts.schema("user_simulator"), task.opening_paste_chars(seed))

    def view(self, conversation: list[Message]) -> list[Message]:
        """The chat as the simulator sees it: its brief, then the transcript so far in one message."""
        chat = [m for m in conversation if m["role"] != "system"]
        turn = self.prompts.render("user_turn", transcript=transcript(chat), started=bool(chat))
        return [{"role": "system", "content": self.system}, {"role": "user", "content": turn}]

    async def speak(
        self, model: RoleModel, conversation: list[Message], *, seed: int, stage: str, n: int = 1
    ) -> list[Said]:
        """`n` next user messages after `conversation` (one request; unparsable choices asked again)."""
        opening = not any(m["role"] == "assistant" for m in conversation)
        replies = await model.complete_parsed(
            self.view(conversation), seed=seed, stage=stage, parse=parse_user_reply, n=n,
            json_schema=self.opening if opening else self.schema,
        )
        return [
            Said(text=r.value.stored(opening=opening), tokens=r.tokens, truncated=r.finish_reason == TRUNCATED)
            for r in replies
        ]
