"""MATH-Chat: a competition problem whose solution the simulated user wants.

Seed columns: `problem`, and the gold answer as most math sets give it: an `answer`
column (`"42"`, `42`), a `solution` whose final answer is its last `\\boxed{}` (MATH) or
follows `####` on its last line (GSM8K), or both (the `answer` column wins). Numbers are
read as text. An `answer` that is itself a worked solution ending in `#### 42` (GSM8K's
own `answer` column) gives `42` as the gold and stands in for a missing `solution`.
Metric: `accuracy`. By default (`accuracy: compare`) 1.0 when the final answer is the
reference: the `\\boxed{}` answer of the assistant's last message when it boxed one, else
the final answer the judge extracts from the conversation (`tasks/math_extract`), so a box
the assistant corrected later is not taken for its answer (`judge_fallback: false`: the
latest box wherever it is, and an unboxed answer scores 0), compared by text once formatting is normalised away
or, when both parse completely, symbolically (math-verify). So a right answer is not
scored 0 for its formatting. A reference that does not parse completely (plain-text
notation, words) is never compared by a piece of it: only by its text, or by the judge
when `judge_unparsable_gold` is on. `accuracy: judge` is the reference code's way: the
judge grades the whole conversation against the reference solution
(`tasks/math_accuracy`), one call per future.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from collabgen.config.errors import SeedError
from collabgen.models.base import Message
from collabgen.tasks.base import (
    UNDECIDED_FLAGS,
    ScoringTools,
    SeedModel,
    Task,
    TaskOptions,
    transcript,
)
from collabgen.tasks.drift import states_final_answer
from collabgen.tasks.math_answers import (
    final_boxed_answer,
    final_marked_answer,
    gold_is_parsable,
    number_text,
    standing_boxed_answer,
)


class MathSeed(SeedModel):
    """A problem and its gold answer. `answer` is always the bare gold answer once validated;
    `solution` is the worked solution when the data has one. Only the metrics see either:
    the simulated user's brief (`tasks/math_user`) holds the problem alone."""

    problem: str
    solution: str | None = None
    answer: str = Field(default="", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _worked_answer(cls, data: Any) -> Any:
        """GSM8K's `answer` column is a worked solution ending in `#### 42`: without a
        `solution` column it is the solution, and its final answer the gold."""
        if isinstance(data, dict) and data.get("solution") in (None, "") and isinstance(data.get("answer"), str):
            marked = final_marked_answer(data["answer"])
            if marked is not None and marked[1].strip():
                data = {**data, "solution": data["answer"]}
        return data

    @field_validator("problem", "solution", "answer", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        return number_text(value)

    @field_validator("answer")
    @classmethod
    def _gold(cls, answer: str, info: ValidationInfo) -> str:
        if answer.strip():
            marked = final_marked_answer(answer)
            return marked[0] if marked is not None else answer.strip()
        if "solution" not in info.data:  # the solution itself was refused; that error says why
            return ""
        solution = info.data["solution"]
        if solution is None or not solution.strip():
            raise ValueError(
                "no gold answer: the row has neither an `answer` nor a `solution`; map the column "
                "holding the answer with task.source.fields, e.g. {answer: <column>}"
            )
        marked = final_marked_answer(solution)
        if marked is None:
            raise ValueError(
                "no gold answer: the solution has no \\boxed{...} final answer and no '#### <answer>' "
                "last line, and the row has no `answer`; map an answer column with task.source.fields"
            )
        return marked[0]


VERIFY_TIMEOUT = "math_verify_timeout"
"""The flag of a future whose answer could not be compared in `verify_seconds`."""
assert VERIFY_TIMEOUT in UNDECIDED_FLAGS


class MathOptions(TaskOptions):
    accuracy: Literal["compare", "judge"] = "compare"
    """`compare`: the final answer (boxed, else extracted by the judge) against the gold
    answer; `judge`: the reference's way, the judge grades the whole conversation against
    the reference solution."""
    judge_fallback: bool = True
    """`compare`: ask the judge for the final answer when the assistant boxed none (false:
    an answer without `\\boxed{}` scores 0, and no extraction call is made)."""
    verify_seconds: float = Field(default=10.0, gt=0)
    """The bound on one symbolic comparison (run in a separate process); one that takes
    longer flags its future `math_verify_timeout` and its candidate is never chosen."""
    judge_unparsable_gold: bool = False
    """Ask the judge (`tasks/math_equivalence`) whether an answer equals a reference that does
    not parse completely, when their texts differ; off, such a reference matches its text only."""


class MathTask(Task[MathSeed, MathOptions]):
    name: ClassVar[str] = "math"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    user_template: ClassVar[str] = "tasks/math_user"
    description: ClassVar[str] = "MATH-Chat: competition math problems solved in conversation."
    default_hub: ClassVar[str | None] = "DigitalLearningGmbH/MATH-lighteval"

    def templates(self) -> list[str]:
        if self.options.accuracy == "judge":
            return [self.user_template, "tasks/math_accuracy"]
        extra = ["tasks/math_equivalence"] if self.options.judge_unparsable_gold else []
        return [self.user_template, "tasks/math_extract", *extra]

    def seed_from_row(self, row: dict[str, Any], fields: dict[str, str], where: str) -> MathSeed:
        """A row with no gold answer at all is named with its columns, so the mapping to add is
        plain (a row that lacks its problem too gets the schema's list of every problem)."""
        answer, solution = fields.get("answer", "answer"), fields.get("solution", "solution")
        has_problem = fields.get("problem", "problem") in row
        if has_problem and all(row.get(column) in (None, "") for column in (answer, solution)):
            raise SeedError(
                f"{where}: malformed seed row: no gold answer: column {answer!r} (seed field 'answer') and "
                f"column {solution!r} (seed field 'solution') are both missing or empty; the row has "
                f"{sorted(row)}; map the answer's column with task.source.fields, e.g. fields: {{answer: <column>}}"
            )
        return super().seed_from_row(row, fields, where)


    def user_drift(self, seed: MathSeed, message: str) -> str | None:
        return states_final_answer(message)

    async def score(self, seed: MathSeed, conversation: list[Message], tools: ScoringTools) -> dict[str, float]:
        if self.options.accuracy == "judge":
            verdict = await tools.judge_json(
                "tasks/math_accuracy", stage="accuracy", validate=_accuracy_field, problem=seed.problem,
                reference=seed.solution or seed.answer, conversation=transcript(conversation),
            )
            return {"accuracy": verdict}
        predicted = await self._final_answer(conversation, tools)
        if predicted is None:
            return {"accuracy": 0.0}
        from collabgen.tasks.math_bounded import answers_match_bounded  # it imports this module

        matched = await answers_match_bounded(seed.answer, predicted, self.options.verify_seconds)
        if matched is None:  # not decided in time: flagged (never chosen nor rejected), not a silent 0
            tools.flag(VERIFY_TIMEOUT)
            return {"accuracy": 0.0}
        if matched:
            return {"accuracy": 1.0}
        if self.options.judge_unparsable_gold and not gold_is_parsable(seed.answer):
            reply = await tools.judge_json(
                "tasks/math_equivalence", stage="equivalence", validate=_equivalent_field,
                problem=seed.problem, reference=seed.answer, answer=predicted,
            )
            return {"accuracy": 1.0 if reply else 0.0}
        return {"accuracy": 0.0}

    async def _final_answer(self, conversation: list[Message], tools: ScoringTools) -> str | None:
        """The answer the assistant stands by last: the box of its last message, else
        (`judge_fallback`) the one the judge finds in the conversation. A box in an earlier
        message may have been corrected since ("you're right, it is 60"), so it is not read
        as final; without the judge (`judge_fallback: false`) the latest box is all there is."""
        predicted = standing_boxed_answer(conversation)
        if predicted is not None:
            return predicted
        if not self.options.judge_fallback:
            return final_boxed_answer(conversation)
        reply: dict[str, Any] = await tools.judge_json(
            "tasks/math_extract", stage="extraction", conversation=transcript(conversation)
        )
        found = reply.get("answer")
        return str(found) if found not in (None, "") else None


def _accuracy_field(reply: dict[str, Any]) -> float:
    """The judge's 0/1 verdict; anything else is asked again."""
    verdict = reply["accuracy"]
    if isinstance(verdict, bool) or verdict not in (0, 1):
        raise ValueError("accuracy must be 0 or 1")
    return float(verdict)


def _equivalent_field(reply: dict[str, Any]) -> bool:
    """The judge's verdict; a reply without a true/false `equivalent` is asked again."""
    verdict = reply["equivalent"]
    if not isinstance(verdict, bool):
        raise TypeError("equivalent must be true or false")
    return verdict
