"""Abg-CoQA-Chat: a user asks about a story; some questions are ambiguous.

Seed columns: `story`, `question`, `ambiguous` (a bool; "true"/"false", 0/1 and
Abg-CoQA's "ambiguous"/"non_ambiguous" labels are accepted), optional `intent` (the
reading of the question the user has in mind; for an ambiguous Abg-CoQA question, the
user's answer to its clarifying question), optional `answers` (reference answers; a
string is taken as a one-item list).
What the simulated user sees: the story, the question and its intent (the question
itself when no intent is given, so a brief looks the same whether or not the question is
ambiguous). Never the label or the answers: a real user does not know that its question
is ambiguous, nor the answer it asks for.
Metric: `clarify_accuracy`, 1.0 when the assistant's first response in the conversation
asks for clarification exactly when the question is ambiguous (and answers directly
when it is not), judged by `tasks/clarify_judge`. Only the first response counts, so
from the second turn on every candidate gets the same value: the metric ranks turn 0.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import field_validator

from collabgen.models.base import Message
from collabgen.tasks.base import ScoringTools, SeedModel, Task, TaskOptions, transcript

_LABELS = {"ambiguous": True, "non_ambiguous": False, "non-ambiguous": False, "unambiguous": False}


class ClarifySeed(SeedModel):
    story: str
    question: str
    ambiguous: bool
    intent: str | None = None
    answers: list[str] = []

    @field_validator("ambiguous", mode="before")
    @classmethod
    def _label(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in _LABELS:
            return _LABELS[value.strip().lower()]
        return value

    @field_validator("answers", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value


class ClarifyTask(Task[ClarifySeed, TaskOptions]):
    name: ClassVar[str] = "clarify"
    metrics: ClassVar[tuple[str, ...]] = ("clarify_accuracy",)
    user_template: ClassVar[str] = "tasks/clarify_user"
    description: ClassVar[str] = "Abg-CoQA-Chat: questions about a story; ask to clarify exactly when the question is ambiguous."
    default_hub: ClassVar[str | None] = "MeiqiGuo/abg-coqa"

    def templates(self) -> list[str]:
        return [self.user_template, "tasks/clarify_judge"]

    def opening_paste_chars(self, seed: ClarifySeed) -> int:
        """The brief says to paste the story in full, then ask: the story's length."""
        return len(seed.story)

    async def score(self, seed: ClarifySeed, conversation: list[Message], tools: ScoringTools) -> dict[str, float]:
        first = next(i for i, m in enumerate(conversation) if m["role"] == "assistant")
        asked: bool = await tools.judge_json(
            "tasks/clarify_judge", stage="clarify", validate=_asked_field,
            request=transcript(conversation[:first]), response=conversation[first]["content"],
        )
        return {"clarify_accuracy": 1.0 if asked == seed.ambiguous else 0.0}


def _asked_field(reply: dict[str, Any]) -> bool:
    value = reply["asked_clarification"]
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise TypeError("asked_clarification must be true or false")
    return value
