"""How sure a turn's ranking is: the noise of an MR and the confidence of a pair.

A candidate's MR is the mean of its futures' scores, so it carries sampling noise: with
three futures, two candidates a hair apart are a coin flip. Each candidate row carries its
futures' sample standard deviation (`score_std`) and the standard error of its MR
(`score_se = std / sqrt(n)`); each pair carries its MR gap, the standard error of the gap
and `confidence`, the estimated probability that the chosen candidate's true MR is higher.

The estimator is a two-sample t test with the variance pooled over every candidate of the
turn (one-way ANOVA's within-group variance, `df = sum(n_i - 1)`):

    s2 = sum((n_i - 1) * std_i**2) / df
    gap_se = sqrt(s2 * (1/n_chosen + 1/n_rejected))
    confidence = T_df.cdf(gap / gap_se)

Why pooled, not Welch: with three futures a candidate's own standard deviation rests on
two degrees of freedom, and scores on a few discrete levels (task success 0/1, judge
anchors) often give a candidate three equal futures and a standard deviation of 0, which
would make every gap look certain. The futures of one turn share the user simulator, the
judges and the conversation so far, so their noise is alike; pooling gives the estimate
`C * (S - 1)` degrees of freedom (6 for C = 3, S = 3) instead of 2.

Edge cases: fewer than two futures in the whole turn's pooling (`df = 0`, e.g. S = 1) give
no estimate (`None`); a pooled variance of 0 gives 1.0 for a positive gap and 0.5 for none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import t as student_t


@dataclass(frozen=True)
class Spread:
    """What the confidence needs of one candidate: its MR, futures' std (None for < 2) and count."""

    score: float
    std: float | None
    n: int


def sample_std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (n - 1), or None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def standard_error(std: float | None, n: int) -> float | None:
    return None if std is None or n < 1 else std / math.sqrt(n)


@dataclass(frozen=True)
class PairConfidence:
    gap: float
    gap_se: float | None
    confidence: float | None


def pooled_variance(turn: Sequence[Spread]) -> tuple[float, int] | None:
    """(variance, degrees of freedom) pooled over a turn's candidates, or None when df = 0."""
    df = sum(s.n - 1 for s in turn if s.std is not None and s.n >= 2)
    if df == 0:
        return None
    total = sum((s.n - 1) * s.std**2 for s in turn if s.std is not None and s.n >= 2)
    return total / df, df


def pair_confidence(chosen: Spread, rejected: Spread, turn: Sequence[Spread]) -> PairConfidence:
    """The gap, its standard error and P(chosen's true MR > rejected's) (module docstring)."""
    gap = chosen.score - rejected.score
    pooled = pooled_variance(turn)
    if pooled is None or chosen.n < 1 or rejected.n < 1:
        return PairConfidence(gap=gap, gap_se=None, confidence=None)
    variance, df = pooled
    gap_se = math.sqrt(variance * (1 / chosen.n + 1 / rejected.n))
    if gap_se == 0.0:
        return PairConfidence(gap=gap, gap_se=0.0, confidence=1.0 if gap > 0 else (0.5 if gap == 0 else 0.0))
    return PairConfidence(gap=gap, gap_se=gap_se, confidence=float(student_t.cdf(gap / gap_se, df)))
