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

import functools
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, latex2sympy, normalize_latex
from math_verify import verify
from math_verify.errors import TimeoutException
from math_verify.grader import should_treat_as_complex
from math_verify.utils import timeout as math_timeout
from pydantic import Field, ValidationInfo, field_validator, model_validator

from collabgen.config.errors import SeedError
from collabgen.models.base import Message
from collabgen.tasks.base import (
    UNDECIDED_FLAGS,
    ScoringTools,
    SeedModel,
    Task,
    TaskOptions,
    assistant_messages,
    transcript,
)
from collabgen.tasks.drift import states_final_answer


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


_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced."""
    starts = [m.end() for m in _BOX_OPEN.finditer(text)]
    if not starts:
        return None
    start = starts[-1]
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
    return None


_GSM8K_FINAL = re.compile(r"(?:^|\n)[ \t]*####[ \t]*([^\n]*?)\s*$")
_GROUPED = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def final_marked_answer(text: str) -> tuple[str, str] | None:
    """(the final answer, the text before it) of a worked solution, or None: its last
    `\\boxed{}` (MATH), else what follows `####` on its last line (GSM8K, thousands commas
    dropped: `#### 1,000` is `1000`)."""
    boxed = last_boxed(text)
    if boxed is not None:
        starts = [m.start() for m in _BOX_OPEN.finditer(text)]
        return boxed, text[: starts[-1]]
    found = _GSM8K_FINAL.search(text)
    if found is None or not found.group(1).strip():
        return None
    value = found.group(1).strip()
    if _GROUPED.fullmatch(value):
        value = value.replace(",", "")
    return value, text[: found.start()]


def number_text(value: Any) -> Any:
    """An int or float column value as the text of the number (`42.0` -> `42`); anything
    else unchanged, for the field's own check (a bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value} is not a number an answer can be")
        if value.is_integer():
            return str(int(value))
    return str(value)


def standing_boxed_answer(conversation: list[Message]) -> str | None:
    """The boxed answer of the assistant's last message, or None when that message boxes
    nothing (then an earlier box may be one the assistant has corrected since)."""
    said = assistant_messages(conversation)
    return last_boxed(said[-1]) if said else None


def final_boxed_answer(conversation: list[Message]) -> str | None:
    """The assistant's latest boxed answer anywhere in the conversation, if it gave one
    (the boxed-only rule; `standing_boxed_answer` is the one that cannot be stale)."""
    for content in reversed(assistant_messages(conversation)):
        found = last_boxed(content)
        if found is not None:
            return found
    return None


@functools.lru_cache(maxsize=65536)
def answers_match(reference: str, predicted: str) -> bool:
    """Whether `predicted` states the reference answer; memoised, as futures of a seed keep
    giving the same answers.

    A wrong reward is never noticed downstream, so a match must be sound. Equal text (after
    formatting is normalised away) matches. Otherwise both sides must parse *completely*
    (`strict_value`) and be symbolically equal (math-verify's `verify`). A reference that does
    not parse completely is compared by its normalised text only: math-verify's own `parse`
    extracts a fragment of such a reference (`1` out of `sum_(k=1)^n 1/k`) and compares that.
    """
    if answer_text(reference) and answer_text(reference) == answer_text(predicted):
        return True
    return _symbolic_match(reference, predicted, _timeout())


def answers_match_untimed(reference: str, predicted: str) -> bool:
    """`answers_match` with no math-verify timeout: for a caller that bounds it itself
    (`math_bounded`, a process it kills), so a slow comparison is never a silent "no"."""
    if answer_text(reference) and answer_text(reference) == answer_text(predicted):
        return True
    return _symbolic_match(reference, predicted, None)


def _symbolic_match(reference: str, predicted: str, timeout: int | None) -> bool:
    with _quiet_math_verify():
        gold = strict_value(reference, gold=True, timeout=timeout)
        guess = strict_value(predicted, timeout=timeout) if gold is not None else None
        if gold is None or guess is None:
            return False
        return bool(verify(gold, guess, timeout_seconds=timeout))


def gold_is_parsable(reference: str) -> bool:
    """Whether `answers_match` can compare this reference symbolically (else only as text)."""
    with _quiet_math_verify():
        return strict_value(reference, gold=True, timeout=_timeout()) is not None


def _timeout() -> int | None:
    """math-verify's timeouts use SIGALRM, which only the main thread may set."""
    return 5 if threading.current_thread() is threading.main_thread() else None


_NORMALIZATION = NormalizationConfig(
    basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="none", equations=False,
)
"""math-verify's normalisation without its two fragment makers: `units` deletes trailing
letters from a fixed list ("t", "h", "c", "ab", ...: `2ab` becomes `2`, `\\pi r^2 h`
loses its `h`), and `boxed="all"` keeps only the boxed part of a text. Units are stripped
by `_strip_unit` instead, from an explicit list and only after a number."""

_REFUSED = re.compile(r"\\[lcvd]?dots|\.\.\.|…|['\"`]|\\boxed|\\fbox")
"""Never parsed: an ellipsis (`1, 2, 3, \\ldots` is not the set {1, 2, 3}) and primes or
quotes, which math-verify's normalisation deletes (`f'(x)` would read as `f(x)`)."""

_UNIT_WORDS = (
    r"(?:(?:square|sq\.?|cubic|cu\.?)\s*)?(?:units?|cm|mm|km|meters?|metres?|centimet(?:er|re)s?|"
    r"millimet(?:er|re)s?|kilomet(?:er|re)s?|inch(?:es)?|feet|foot|ft|yards?|miles?|degrees?|dollars?|"
    r"cents?|seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?|kg|grams?|pounds?|"
    r"lbs?|ounces?|oz|lit(?:er|re)s?|ml|mph|ways)"
)
_UNIT = re.compile(
    rf"(?<=[\d}})])(?:\\[,;:! ]|~|\s)*(?:\\(?:text|textrm|textnormal|mathrm|mbox)\s*\{{[\s~]*"
    rf"(?:{_UNIT_WORDS}|[mgshlL])[\s~]*\}}|{_UNIT_WORDS})(?:\^\s*\{{?[23]\}}?)?\s*$"
)
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:(?:\\[,;: ]|~|\s)+\d{3})+(?![\d.])")
"""`10\\,000`, `10 000`: digit groups of three, joined before parsing."""
_JUXTAPOSED = re.compile(r"\d\s*[)\]]?\s*[(\[]\s*-?\d+(?:\.\d+)?\s*[)\]]|\d(?:\s|\\[,;: ]|~)+-?\d")
"""Two numbers side by side, `2 3`, `3(2)`, `(1)(2)`: the grammar adds them (5, 5, 3), as if
they were a mixed number. Refused rather than read wrongly."""
_BARE_FUNCTION = re.compile(
    r"(?<![\\A-Za-z])(arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|cot|sec|csc|log|ln|exp|pi)(?![A-Za-z])"
)
_PLAIN_CALL = re.compile(r"(?<![\\A-Za-z])(floor|ceil|sqrt|abs)\s*\(")
_CALL_LATEX = {
    "floor": (r"\lfloor ", r" \rfloor"), "ceil": (r"\lceil ", r" \rceil"),
    "sqrt": (r"\sqrt{", "}"), "abs": (r"\left| ", r" \right|"),
}
_SHORT_WORDS = frozenset({"no", "is", "it", "in", "on", "of", "to", "an", "at", "by", "if", "so", "do", "as", "up", "be"})
_WRAPPER = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}"
)


@functools.lru_cache(maxsize=8192)
def strict_value(text: str, *, gold: bool = False, timeout: int | None = None) -> Any:
    """The value of the *whole* of `text` (a sympy object), or None.

    None when any part of the text is not read: a prefix or a piece never stands for the
    whole. For a reference (`gold`) also None when it reads as words (`no solution`), which
    the LaTeX grammar would take as a product of one-letter variables.
    """
    latex = strict_latex(text)
    if latex is None or (gold and _reads_as_words(latex)):
        return None
    return _parse_whole(latex, timeout)


def strict_latex(text: str) -> str | None:
    """`text` as LaTeX the grammar can read in full: plain-text notation (`floor(n/2)`,
    `sqrt(2)`, `sin x`) spelled in LaTeX, a trailing unit and period dropped, then
    math-verify's normalisation minus its fragment makers; None for what is refused."""
    s = _unbox(text.strip())
    if not s or _REFUSED.search(s):
        return None
    s = re.sub(r"\.\s*$", "", s).replace("°", r"^\circ")
    s = re.sub(r"\\(?:text|textrm|mathrm|mbox)\s*\{\s*(?:percent|\\?%)\s*\}", r"\\%", s)
    s = _plain_calls(_BARE_FUNCTION.sub(r"\\\1", _strip_unit(s)))
    if s is None:
        return None
    latex = _THOUSANDS.sub(lambda m: re.sub(r"\D", "", m.group(0)), normalize_latex(s, _NORMALIZATION).strip())
    return None if not latex or _JUXTAPOSED.search(latex) else latex


def _strip_unit(s: str) -> str:
    """`5\\text{ cm}` -> `5`: a unit from an explicit list, after a number, goes; a bare
    trailing letter never does (it may be a variable)."""
    stripped = _UNIT.sub("", s).strip()
    return stripped or s


def _plain_calls(s: str) -> str | None:
    """`floor(x)`, `ceil(x)`, `sqrt(x)`, `abs(x)` as LaTeX, matching parentheses (not the
    first `)` as math-verify's regex does); None when a parenthesis is left open."""
    while (call := _PLAIN_CALL.search(s)) is not None:
        close = _closing(s, call.end() - 1, "(", ")")
        if close is None:
            return None
        opening, closing = _CALL_LATEX[call.group(1)]
        s = s[: call.start()] + opening + s[call.end() : close] + closing + s[close + 1 :]
    return s


def _closing(s: str, start: int, opening: str, closing: str) -> int | None:
    """Index of the bracket closing the one at `start`, or None if it is never closed."""
    depth = 0
    for i in range(start, len(s)):
        if s[i] == opening:
            depth += 1
        elif s[i] == closing:
            depth -= 1
            if depth == 0:
                return i
    return None


def _unbox(s: str) -> str:
    """The content of a `\\boxed{...}` that is the whole of `s`; `s` otherwise."""
    found = re.match(r"\\(?:boxed|fbox)\s*\{", s)
    if found and _closing(s, found.end() - 1, "{", "}") == len(s) - 1:
        return s[found.end() : -1].strip()
    return s


def _reads_as_words(latex: str) -> bool:
    """Words outside LaTeX commands: three letters in a row, or a short English word.
    `no solution` parses as n*o*s*l*u*t*i*o*n, equal to any anagram."""
    bare = re.sub(r"\\(?:begin|end)\s*\{[^{}]*\}", " ", latex)
    bare = re.sub(r"\\[A-Za-z]+", " ", bare)
    return any(len(w) >= 3 or w.lower() in _SHORT_WORDS for w in re.findall(r"[A-Za-z]+", bare))


def _parse_whole(latex: str, timeout: int | None) -> Any:
    """latex2sympy's grammar ends in EOF: it reads all of `latex` or raises, never a piece
    (math-verify's `parse` instead searches the text for something it can read)."""

    def read() -> Any:
        complex_ = should_treat_as_complex(latex)
        return latex2sympy(latex, is_real=not complex_, convert_degrees=False, normalization_config=None)

    try:
        return math_timeout(timeout)(read)()
    except (Exception, TimeoutException):  # TimeoutException is a BaseException
        return None


def answer_text(text: str) -> str:
    """`text` without formatting that never changes an answer: `$`, spacing commands and
    whitespace, `\\left`/`\\right`, `\\dfrac`, `\\text{}` wrappers, degree signs, set braces'
    backslashes, a trailing period, letter case outside commands. Two answers with the
    same text are the same answer, whether or not they parse."""
    s = _unbox(text.strip())
    s = re.sub(r"\\?\$", "", s)
    for _ in range(3):
        s = _WRAPPER.sub(r"\1", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s).replace(r"\dbinom", r"\binom")
    s = re.sub(r"\\(?:left|right|[bB]igg?[lr]?|displaystyle)(?![A-Za-z])|\\!", "", s)
    s = re.sub(r"\\(?:quad|qquad)(?![A-Za-z])|\\[,;: ]|~", " ", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°", "", s)
    s = s.replace(r"\{", "{").replace(r"\}", "}").replace(r"\%", "%")
    s = re.sub(r"(?<=\d)\s+(?=\d)", " ", s)  # `2 3` is not `23`
    s = re.sub(r"(?<!\.)\.$", "", re.sub(r"(?<!\d)\s+|\s+(?!\d)", "", s))
    return re.sub(r"\\[A-Za-z]+|[A-Z]", lambda m: m.group(0) if m.group(0)[0] == "\\" else m.group(0).lower(), s)


@contextmanager
def _quiet_math_verify() -> Iterator[None]:
    """math-verify warns on every call made without a signal timeout; once is enough."""
    loggers = [logging.getLogger(name) for name in ("math_verify.parser", "math_verify.grader", "math_verify.utils")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
