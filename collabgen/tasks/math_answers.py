"""Reading and comparing math answers: the boxed or marked final answer of a text, and
whether two answers are the same (by normalised text, or symbolically with math-verify
when both parse completely). The math task's metric and the custom tasks' `math_answer`
metric both compare with `answers_match`, so a right answer is scored the same wherever it
is scored.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from typing import Any

from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, latex2sympy, normalize_latex
from math_verify import verify
from math_verify.errors import TimeoutException
from math_verify.grader import should_treat_as_complex
from math_verify.utils import timeout as math_timeout

from collabgen.models.base import Message
from collabgen.tasks.base import assistant_messages

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
    gold = strict_value(reference, gold=True, timeout=timeout)
    guess = strict_value(predicted, timeout=timeout) if gold is not None else None
    if gold is None or guess is None:
        return False
    return bool(verify(gold, guess, timeout_seconds=timeout))


def gold_is_parsable(reference: str) -> bool:
    """Whether `answers_match` can compare this reference symbolically (else only as text)."""
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


class _MathVerifyNoise(logging.Filter):
    """Drops math-verify's warnings: that its signal timeout is off (collabgen bounds the
    comparison itself, `math_bounded`) and that a parse or comparison timed out (collabgen
    flags that future `math_verify_timeout` instead). Its errors still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def quiet_math_verify() -> None:
    """Attach the filter to math-verify's loggers, once; no logger's level is changed."""
    for name in ("math_verify.parser", "math_verify.grader", "math_verify.utils"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _MathVerifyNoise) for f in logger.filters):
            logger.addFilter(_MathVerifyNoise())


quiet_math_verify()
