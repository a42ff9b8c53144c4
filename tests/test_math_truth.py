"""The math reward on a labelled set of gold/answer pairs: no false match, known misses only.

`tests/data/math_answer_pairs.jsonl` holds plain-text and LaTeX references, the same answers
in other forms, and near misses (off by one, swapped sign, another bound, a fragment of the
reference, an extra factor). `python -m bench.math_truth -v` prints old vs new counts.
"""

from __future__ import annotations

import threading

import pytest

from bench.math_truth import PAIRS, errors, load_pairs, old_answers_match
from collabgen.prompting import Prompts
from collabgen.tasks.math import MathTask
from collabgen.tasks.math_answers import answers_match, gold_is_parsable, strict_value

# Equal pairs the rule misses without the judge: their references do not parse completely,
# so only their text or the judge (`judge_unparsable_gold`) can compare them.
KNOWN_FALSE_MISSES = {
    # a plain-text sum: its LaTeX spelling is not the same text
    ("sum_(k=1)^n 1/k", r"\sum_{k=1}^{n} \frac{1}{k}"),
    # a plain-text (Python-style) matrix: the LaTeX matrix is not the same text
    ("[[1, 2], [3, 4]]", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}"),
}


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return load_pairs()


def test_the_set_is_big_and_mixed(pairs):
    assert len(pairs) >= 80
    assert 0.3 < sum(p["equal"] for p in pairs) / len(pairs) < 0.7
    assert all(set(p) == {"gold", "answer", "equal", "note"} for p in pairs)


def test_no_false_match_on_the_set(pairs):
    false_matches, _ = errors(answers_match, pairs)
    assert [(p["gold"], p["answer"], p["note"]) for p in false_matches] == []


def test_the_false_misses_are_the_known_ones(pairs):
    _, false_misses = errors(answers_match, pairs)
    assert {(p["gold"], p["answer"]) for p in false_misses} <= KNOWN_FALSE_MISSES


def test_the_old_rule_had_false_matches_on_the_set(pairs):
    false_matches, _ = errors(old_answers_match, pairs)
    found = {(p["gold"], p["answer"]) for p in false_matches}
    assert {("sum_(k=1)^n 1/k", "1"), ("sum_(k=1)^n 1/k", "sum_(k=2)^n 1/k"), ("2ab", "2")} <= found


@pytest.mark.parametrize(("gold", "answer"), [
    ("sum_(k=1)^n 1/k", "1"),
    ("sum_(k=1)^n 1/k", "sum_(k=2)^n 1/k"),
    ("floor(n/2)!", "floor(n/3)!"),
    ("no solution", "solution no"),
    (r"\frac{1}{3}\pi r^2 h", r"\frac{1}{3}\pi r^2"),
])
def test_a_fragment_or_near_miss_of_the_reference_is_not_a_match(gold, answer):
    assert not answers_match(gold, answer)


@pytest.mark.parametrize(("gold", "answer"), [
    (r"\frac{5}{14}", "5/14"), ("0.5", r"\frac12"), (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}"), ("x=3", "3"),
    ("(1,2)", "(1, 2)"), (r"10\%", "10"), (r"30^\circ", "30"), (r"\{1,2\}", "{1,2}"),
    ("floor(n/2)!", r"\left\lfloor \frac{n}{2} \right\rfloor!"), ("sum_(k=1)^n 1/k", "sum_(k=1)^n  1/k"),
])
def test_the_same_answer_in_another_form_matches(gold, answer):
    assert answers_match(gold, answer)


def test_a_reference_parses_only_if_all_of_it_is_read():
    assert gold_is_parsable(r"\frac{n(n+1)}{2}") and gold_is_parsable("floor(n/2)!")
    assert not gold_is_parsable("sum_(k=1)^n 1/k")  # math-verify's parse reads `1` out of it
    assert not gold_is_parsable("no solution")  # words: a product of one-letter variables
    assert not gold_is_parsable("1, 2, 3, \\ldots")
    assert strict_value("sum_(k=1)^n 1/k") is None


def test_off_the_main_thread_the_answer_is_the_same_and_memoised(pairs):
    # math-verify's timeouts need SIGALRM, which only the main thread has.
    answers_match.cache_clear()
    strict_value.cache_clear()
    sample = pairs[::5]
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.extend(answers_match(p["gold"], p["answer"]) for p in sample))
    worker.start()
    worker.join(timeout=120)
    assert results == [p["equal"] and (p["gold"], p["answer"]) not in KNOWN_FALSE_MISSES for p in sample]
    hits = answers_match.cache_info().hits
    assert [answers_match(p["gold"], p["answer"]) for p in sample] == results
    assert answers_match.cache_info().hits == hits + len(sample)


class JudgeTools:
    """A scripted judge that records the templates it was asked with (and renders them)."""

    def __init__(self, equivalent: bool) -> None:
        self.prompts = Prompts()
        self.equivalent = equivalent
        self.calls: list[tuple[str, dict]] = []

    async def judge_json(self, template: str, *, stage: str, validate=None, **variables):
        self.prompts.render(template, **variables)
        self.calls.append((template, variables))
        reply = {"equivalent": self.equivalent}
        return validate(reply) if validate else reply


def math_seed(task: MathTask, answer: str):
    row = {"problem": "Find the sum.", "solution": f"So it is $\\boxed{{{answer}}}$."}
    return task.seed_from_row(row, {}, "math.jsonl")


def said(answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": "Help?"}, {"role": "assistant", "content": f"It is $\\boxed{{{answer}}}$."}]


async def test_the_judge_decides_only_for_an_unparsable_reference_and_only_when_enabled():
    task = MathTask({"judge_unparsable_gold": True})
    assert "tasks/math_equivalence" in task.templates()
    assert Prompts().schema("tasks/math_equivalence")["required"] == ["equivalent"]
    latex_sum = r"\sum_{k=1}^{n} \frac{1}{k}"
    tools = JudgeTools(equivalent=True)
    assert await task.score(math_seed(task, "sum_(k=1)^n 1/k"), said(latex_sum), tools) == {"accuracy": 1.0}
    assert [(t, v["reference"], v["answer"]) for t, v in tools.calls] == [
        ("tasks/math_equivalence", "sum_(k=1)^n 1/k", latex_sum)]
    refusing = JudgeTools(equivalent=False)
    assert await task.score(math_seed(task, "sum_(k=1)^n 1/k"), said("1"), refusing) == {"accuracy": 0.0}
    # A parsable reference, or equal text, never goes to the judge.
    tools.calls.clear()
    assert await task.score(math_seed(task, r"\frac{5}{14}"), said(r"\frac{5}{13}"), tools) == {"accuracy": 0.0}
    assert await task.score(math_seed(task, "no solution"), said(r"\text{No solution}"), tools) == {"accuracy": 1.0}
    assert tools.calls == []


async def test_without_the_option_an_unparsable_reference_matches_its_text_only():
    task = MathTask({})
    assert "tasks/math_equivalence" not in task.templates()
    tools = JudgeTools(equivalent=True)
    seed = math_seed(task, "sum_(k=1)^n 1/k")
    assert await task.score(seed, said(r"\sum_{k=1}^{n} \frac{1}{k}"), tools) == {"accuracy": 0.0}
    assert await task.score(seed, said("sum_(k=1)^n 1/k"), tools) == {"accuracy": 1.0}
    assert tools.calls == []


def test_the_bench_script_prints_old_and_new_counts(capsys):
    from bench.math_truth import main

    main([str(PAIRS)])
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["new"][0] == "0" and int(rows["old"][0]) > 0  # false matches


def test_math_verify_noise_is_filtered_without_changing_any_logger_level(caplog):
    import logging

    from collabgen.tasks.math_answers import answers_match_untimed

    levels = {name: logging.getLogger(name).level for name in ("math_verify.parser", "math_verify.grader")}
    with caplog.at_level(logging.DEBUG):
        assert answers_match_untimed("\\frac{1}{2}", "0.5")  # untimed: math-verify would warn
        logging.getLogger("math_verify.grader").warning("Timeout during comparison")
        logging.getLogger("math_verify.grader").error("a real error")
    assert {name: logging.getLogger(name).level for name in levels} == levels
    shown = [r.getMessage() for r in caplog.records if r.name.startswith("math_verify")]
    assert shown == ["a real error"]
