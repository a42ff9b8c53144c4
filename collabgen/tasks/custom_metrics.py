"""The metric library of the `custom` task: extrinsic metrics a recipe picks by name.

Each metric names the seed field it compares against (`reference`) and the part of the
conversation it scores (`prediction`):

- `last_assistant`: the assistant's last message (default of most metrics);
- `last_boxed`: the assistant's latest `\\boxed{}` answer (default of `math_equivalence`);
- `last_code_block`: the last fenced code block of the latest assistant message that has
  one (default of `unit_tests`);
- `conversation`: the whole conversation as text;
- `{extract: "<what to extract>"}`: the judge copies that out of the assistant's messages
  (`tasks/custom_extract`, a schema-constrained `{"answer": ...}` reply).

Every metric is in 0..1 and an empty prediction scores 0 (the rubric judge is still asked,
so a future's calls do not depend on what the assistant wrote and `collabgen plan` stays
an upper bound). A reference field holding a list counts as several acceptable references.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from collabgen.models.base import Message
from collabgen.tasks.base import ScoringTools, assistant_messages, transcript
from collabgen.tasks.math_answers import answers_match, final_boxed_answer, number_text

log = logging.getLogger("collabgen")

PredictionSource = Literal["last_assistant", "last_boxed", "last_code_block", "conversation"]

PREDICTION_LABELS: dict[str, str] = {
    "last_assistant": "the assistant's last message",
    "last_boxed": "the assistant's latest \\boxed{} answer",
    "last_code_block": "the assistant's latest code block",
    "conversation": "the whole conversation",
}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Extract(_Spec):
    """The judge extracts the prediction from the conversation by this instruction."""

    extract: str = Field(min_length=1, description="what to extract, e.g. 'the final answer, a single word'")


Prediction = PredictionSource | Extract


def prediction_label(prediction: Prediction) -> str:
    if isinstance(prediction, Extract):
        return f"extracted from the assistant's messages: {prediction.extract}"
    return PREDICTION_LABELS[prediction]


@dataclass
class MetricInput:
    """What a metric reads: the seed's values, the conversation, the prediction (None when
    its source found nothing), and the judge and sandbox."""

    seed: dict[str, Any]
    conversation: list[Message]
    prediction: str | None
    tools: ScoringTools
    sandbox_gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))

    def references(self, name: str | None) -> list[str]:
        """The reference field's value as a list of texts ([] when unset)."""
        if name is None or self.seed.get(name) is None:
            return []
        value = self.seed[name]
        return [str(number_text(v)) for v in value] if isinstance(value, list) else [str(number_text(value))]


class MetricBase(_Spec):
    """Shared by every metric: its name (default: its type) and what it scores."""

    type: str
    name: str | None = Field(default=None, description="the metric's name in rewards and rows; default its type")
    reference: str | None = Field(default=None, description="the seed field holding the reference")
    prediction: Prediction = "last_assistant"

    reference_required: ClassVar[bool] = True
    """Whether `reference` must be given (and name a required field)."""
    reference_kinds: ClassVar[tuple[str, ...]] = ("str", "int", "float", "list[str]")
    """Seed field types the reference may have."""

    @property
    def metric_name(self) -> str:
        return self.name or self.type

    def reference_fields(self) -> list[str]:
        """Seed fields this metric reads as references (never shown to the simulated user)."""
        return [self.reference] if self.reference is not None else []

    @model_validator(mode="after")
    def _needs_reference(self) -> MetricBase:
        if self.reference_required and self.reference is None:
            raise ValueError(f"metric {self.metric_name!r} ({self.type}) needs `reference`: the seed field to compare with")
        return self

    async def value(self, given: MetricInput) -> float:
        """The metric of one future; an empty prediction scores 0."""
        if not given.prediction:
            return 0.0
        return await self.compare(given.prediction, given)

    async def compare(self, prediction: str, given: MetricInput) -> float:
        raise NotImplementedError


class ExactMatch(MetricBase):
    """1 when the prediction equals a reference; with `normalize` (default) after SQuAD's
    normalisation (case, punctuation, articles, spacing), so `The Eiffel Tower.` is `eiffel tower`."""

    type: Literal["exact_match"]
    normalize: bool = True

    async def compare(self, prediction: str, given: MetricInput) -> float:
        norm = normalize_answer if self.normalize else str.strip
        return 1.0 if any(norm(prediction) == norm(ref) for ref in given.references(self.reference)) else 0.0


class MathEquivalence(MetricBase):
    """1 when the prediction is the reference answer, by the math task's sound rule
    (`collabgen.tasks.math_answers.answers_match`: same text, or both parse whole and are equal)."""

    type: Literal["math_equivalence"]
    prediction: Prediction = "last_boxed"

    async def compare(self, prediction: str, given: MetricInput) -> float:
        return 1.0 if any(answers_match(ref, prediction) for ref in given.references(self.reference)) else 0.0


class Bleu(MetricBase):
    """sacrebleu sentence BLEU on 0..1 (as the document task), all references at once."""

    type: Literal["bleu"]

    async def compare(self, prediction: str, given: MetricInput) -> float:
        return bleu(prediction, given.references(self.reference))


class RougeL(MetricBase):
    """ROUGE-L F1: the longest common subsequence of word tokens, as precision and recall."""

    type: Literal["rouge_l"]

    async def compare(self, prediction: str, given: MetricInput) -> float:
        return max((rouge_l(prediction, ref) for ref in given.references(self.reference)), default=0.0)


class RegexMatch(MetricBase):
    """1 when the pattern matches the prediction: the recipe's `pattern`, or a per-row
    pattern in the seed field `reference`. `full_match` anchors it to the whole (stripped)
    prediction; otherwise it may match anywhere."""

    type: Literal["regex"]
    pattern: str | None = None
    full_match: bool = False
    ignore_case: bool = False
    reference_required: ClassVar[bool] = False
    reference_kinds: ClassVar[tuple[str, ...]] = ("str",)

    @model_validator(mode="after")
    def _one_pattern(self) -> RegexMatch:
        if (self.pattern is None) == (self.reference is None):
            raise ValueError(f"metric {self.metric_name!r} (regex): give exactly one of `pattern` "
                             "(in the recipe) or `reference` (a seed field holding each row's pattern)")
        if self.pattern is not None:
            self.compiled(self.pattern)
        return self

    def compiled(self, pattern: str) -> re.Pattern[str]:
        try:
            return re.compile(pattern, re.IGNORECASE if self.ignore_case else 0)
        except re.error as err:
            raise ValueError(f"metric {self.metric_name!r}: not a valid regular expression {pattern!r} ({err})") from None

    async def compare(self, prediction: str, given: MetricInput) -> float:
        patterns = [self.pattern] if self.pattern is not None else given.references(self.reference)
        for pattern in patterns:
            regex = self.compiled(pattern)
            found = regex.fullmatch(prediction.strip()) if self.full_match else regex.search(prediction)
            if found:
                return 1.0
        return 0.0


class UnitTests(MetricBase):
    """The prediction (code) against the `unittest` source in the seed field `reference`,
    in the code sandbox: `pass_mode: all` scores 1 only when every test passes, `fraction`
    the share that pass. A sandbox that fails is never a score: its error fails the conversation."""

    type: Literal["unit_tests"]
    prediction: Prediction = "last_code_block"
    pass_mode: Literal["all", "fraction"] = "all"
    reference_kinds: ClassVar[tuple[str, ...]] = ("str",)

    async def compare(self, prediction: str, given: MetricInput) -> float:
        (tests,) = given.references(self.reference)
        async with given.sandbox_gate:
            outcome = await given.tools.sandbox.run_unittests(prediction, tests)
        if outcome.tampered:
            given.tools.flag("tampered")
            return 0.0
        if self.pass_mode == "fraction":
            return outcome.pass_rate
        return 1.0 if outcome.all_passed else 0.0


class Rubric(MetricBase):
    """The judge grades the prediction against the recipe's `rubric` (`tasks/custom_rubric`,
    reply `{"reason", "score"}` with the score in 0..1), seeing the whole conversation and,
    when `reference` names a field, that reference. The judge is asked even for an empty
    prediction, which the template shows as nothing given."""

    type: Literal["rubric"]
    rubric: str = Field(min_length=1)
    reference_required: ClassVar[bool] = False

    async def value(self, given: MetricInput) -> float:
        references = given.references(self.reference)
        score: float = await given.tools.judge_json(
            "tasks/custom_rubric", stage="rubric", validate=rubric_score,
            conversation=transcript(given.conversation), rubric=self.rubric,
            prediction=None if self.prediction == "conversation" else (given.prediction or ""),
            prediction_label=prediction_label(self.prediction),
            reference=None if not references else "\n---\n".join(references),
        )
        return score


Metric = Annotated[
    ExactMatch | MathEquivalence | Bleu | RougeL | RegexMatch | UnitTests | Rubric,
    Field(discriminator="type"),
]
METRIC_TYPES = ("exact_match", "math_equivalence", "bleu", "rouge_l", "regex", "unit_tests", "rubric")


def rubric_score(reply: dict[str, Any]) -> float:
    """The judge's score; a reply without a number in 0..1 is asked again."""
    value = reply["score"]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError("score must be a number from 0 to 1")
    score = float(value)
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score {score} outside 0..1")
    return score


def extracted_answer(reply: dict[str, Any]) -> str:
    """The extractor's text; a number is taken as its text, anything else is asked again."""
    value = number_text(reply["answer"])
    if not isinstance(value, str):
        raise TypeError("answer must be a string")
    return value


# --------------------------------------------------------------------------- predictions

_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)


def last_code_block(conversation: list[Message]) -> str | None:
    """The last fenced block of the latest assistant message that has one."""
    for content in reversed(assistant_messages(conversation)):
        blocks = _FENCE.findall(content)
        if blocks:
            return str(blocks[-1])
    return None


def read_prediction(source: PredictionSource, conversation: list[Message]) -> str | None:
    """A prediction that needs no model call; None when the conversation has none."""
    if source == "conversation":
        return transcript(conversation)
    if source == "last_boxed":
        return final_boxed_answer(conversation)
    if source == "last_code_block":
        return last_code_block(conversation)
    said = assistant_messages(conversation)
    return said[-1] if said else None


# --------------------------------------------------------------------------- text metrics

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no English articles, single spaces."""
    lowered = text.lower()
    kept = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in lowered)
    return " ".join(_ARTICLES.sub(" ", kept).split())


def bleu(hypothesis: str, references: list[str]) -> float:
    """sacrebleu sentence BLEU (13a tokens, exp smoothing) on 0..1 against every reference;
    empty text scores 0, and the log-space mean's 100.00000000000004 is clamped to 1."""
    import sacrebleu

    if not hypothesis.strip() or not references:
        return 0.0
    return min(1.0, sacrebleu.sentence_bleu(hypothesis, references).score / 100)


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits of any script)."""
    return re.findall(r"\w+", text.lower())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (beta 1) of word tokens: 2PR / (P + R) with P = LCS / len(prediction)
    and R = LCS / len(reference); 0 when either has no tokens."""
    predicted, wanted = rouge_tokens(prediction), rouge_tokens(reference)
    common = lcs_length(wanted, predicted)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004): one big-int
    step per token of `b`, so long documents cost milliseconds, not a quadratic table."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")
