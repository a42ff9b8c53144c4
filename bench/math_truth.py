"""False matches and false misses of the math reward on a labelled set of answer pairs.

`python -m bench.math_truth [pairs.jsonl] [-v]` compares the rule `answers_match` had
before references were required to parse completely (`old_answers_match`, copied here
verbatim) with today's `collabgen.tasks.math_answers.answers_match` on
`tests/data/math_answer_pairs.jsonl` (each line `{"gold", "answer", "equal", "note"}`).
A false match pays a wrong answer (the failure nothing downstream notices); a false miss
withholds the reward from a right one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from math_verify import parse, verify

from collabgen.tasks.math_answers import answers_match

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "math_answer_pairs.jsonl"


def old_answers_match(reference: str, predicted: str) -> bool:
    """The rule before this change: math-verify's `parse` on both sides, which reads a
    piece of a reference it cannot parse whole (`1` out of `sum_(k=1)^n 1/k`)."""
    timeout = None  # the benchmark may run off the main thread; the old rule did the same there
    gold = parse(f"${reference}$", parsing_timeout=timeout)  # math-verify's noise: filtered (math_answers)
    guess = parse(f"${predicted}$", parsing_timeout=timeout)
    if not gold or not guess:
        return reference.replace(" ", "") == predicted.replace(" ", "")
    return bool(verify(gold, guess, timeout_seconds=timeout))


def load_pairs(path: Path = PAIRS) -> list[dict]:
    """The labelled pairs, one JSON object a line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def errors(rule: Callable[[str, str], bool], pairs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(false matches, false misses) of `rule` on `pairs`."""
    false_matches, false_misses = [], []
    for pair in pairs:
        said = rule(pair["gold"], pair["answer"])
        if said and not pair["equal"]:
            false_matches.append(pair)
        elif not said and pair["equal"]:
            false_misses.append(pair)
    return false_matches, false_misses


def main(argv: list[str]) -> None:
    verbose = "-v" in argv
    paths = [a for a in argv if a != "-v"]
    pairs = load_pairs(Path(paths[0]) if paths else PAIRS)
    equal = sum(p["equal"] for p in pairs)
    print(f"{len(pairs)} pairs: {equal} equal, {len(pairs) - equal} not equal")
    print(f"{'rule':<6}{'false matches':>15}{'false misses':>14}")
    for name, rule in (("old", old_answers_match), ("new", answers_match)):
        false_matches, false_misses = errors(rule, pairs)
        print(f"{name:<6}{len(false_matches):>15}{len(false_misses):>14}")
        if verbose:
            for kind, found in (("false match", false_matches), ("false miss", false_misses)):
                for p in found:
                    print(f"    {kind}: {p['gold']!r} vs {p['answer']!r} ({p['note']})")


if __name__ == "__main__":
    main(sys.argv[1:])
