"""MediumDocEdit-Chat: the simulated user co-writes an article it already has in mind.

Seed columns: `title`, `text` (the target article). Articles longer than the option
`max_article_chars` are rejected with a message, never silently dropped: the whole
article goes into the simulator's brief, so a budget keeps prompts bounded.
Metrics, 0..1, both on the final document the judge extracts from the conversation
(`tasks/document_extract`, one call for both): the whole document, the latest version of
every section in order, since an assistant often writes one section a message and "the
latest draft" was then its last section alone. `bleu`, sacrebleu's word-level sentence
BLEU against the article; `bleu_nltk`, the reference code's definition (NLTK's
`sentence_bleu` on raw strings, i.e. character n-grams; see
`collabgen.tasks.reference_metrics`), for numbers comparable with the paper's tables.
A metric without a weight in the recipe is not written to the rows (`collabgen eval`
reports both). The simulated user asks for an article under `length_cue_words` words,
as the reference's prompt does ("less than 500 words"); null: no length cue.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from collabgen.config.errors import SeedError
from collabgen.models.base import Message
from collabgen.tasks.base import ScoringTools, SeedModel, Task, TaskOptions, transcript
from collabgen.tasks.drift import pastes_document
from collabgen.tasks.reference_metrics import bleu_nltk


class DocumentSeed(SeedModel):
    title: str
    text: str

    @field_validator("title", "text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        return value


class DocumentOptions(TaskOptions):
    max_article_chars: int | None = Field(default=20_000, ge=1)
    length_cue_words: int | None = Field(default=500, ge=1)
    """The length the simulated user asks for ("under N words"); null: none."""


class DocumentTask(Task[DocumentSeed, DocumentOptions]):
    name: ClassVar[str] = "document"
    metrics: ClassVar[tuple[str, ...]] = ("bleu", "bleu_nltk")
    user_template: ClassVar[str] = "tasks/document_user"
    description: ClassVar[str] = "MediumDocEdit-Chat: writing a Medium article together with a user who has it in mind."
    default_hub: ClassVar[str | None] = "fabiochiu/medium-articles"

    def seed_from_row(self, row: dict[str, Any], fields: dict[str, str], where: str) -> DocumentSeed:
        seed = super().seed_from_row(row, fields, where)
        budget = self.options.max_article_chars
        if budget is not None and len(seed.text) > budget:
            column = fields.get("text", "text")
            raise SeedError(
                f"{where}: article in column {column!r} has {len(seed.text):,} characters, over "
                f"task.options.max_article_chars ({budget:,}); raise the option (or set it to null) "
                "or filter the data to shorter articles"
            )
        return seed

    def templates(self) -> list[str]:
        return [self.user_template, "tasks/document_extract"]


    def user_drift(self, seed: DocumentSeed, message: str) -> str | None:
        return pastes_document(message, seed.text)

    async def score(self, seed: DocumentSeed, conversation: list[Message], tools: ScoringTools) -> dict[str, float]:
        document: str = await tools.judge_json(
            "tasks/document_extract", stage="extraction", validate=_document_field,
            title=seed.title, conversation=transcript(conversation),
        )
        return {"bleu": bleu(document, seed.text), "bleu_nltk": bleu_nltk(document, seed.text)}


def _document_field(reply: dict[str, Any]) -> str:
    document = reply["document"]
    if not isinstance(document, str):
        raise TypeError("document must be a string")
    return document


def bleu(hypothesis: str, reference: str) -> float:
    """sacrebleu sentence BLEU (13a tokens, exp smoothing) on a 0..1 scale; empty text scores 0.

    Clamped at 1: a perfect match comes back as 100.00000000000004 from the log-space mean.
    """
    import sacrebleu

    if not hypothesis.strip():
        return 0.0
    return min(1.0, sacrebleu.sentence_bleu(hypothesis, [reference]).score / 100)
