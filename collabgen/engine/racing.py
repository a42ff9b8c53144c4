"""Adaptive futures: which candidates of a turn get another future (`generation.adaptive`).

A racing rule in the manner of Hoeffding races (Maron & Moore, 1994) and successive
elimination (Even-Dar, Mannor & Mansour, 2006): every candidate first gets `min_futures`
futures; after each round, a candidate the best (by mean MR, `selection.rank`) is
separated from at the asked `confidence` cannot win any more and gets no further future;
the others ("contenders", the best among them) get one more each, up to `max_futures`.
The race ends when the best is separated from every other candidate that may be chosen,
or no contender may have another future.

"Separated" is `engine/confidence.py`'s pair confidence, the same estimator and the same
pooled variance over the whole turn that fill the rows' `confidence` column, so a turn
that stopped early carries a (best, rejected) confidence of at least `confidence` for
every rejected candidate that may be chosen.

Two differences from the textbook rules, both on purpose:
- the test is a t test on a pooled variance, not a Hoeffding bound: with 2..6 futures a
  Hoeffding interval on a 0..2 score never separates anything. The price is that the
  stopping confidence is approximate: the t test assumes normal noise, and looking after
  every round (optional stopping) makes the true error rate higher than 1 - confidence;
- contenders are re-read from the current futures after every round, not eliminated for
  good: the rule is a pure function of the futures so far (so a resumed turn replays the
  same rounds), and a candidate set aside comes back if the best's lead shrinks.

Candidates that may not be chosen after a round (cut at their budget, an undecided metric,
only futures whose simulated user drifted) do not contend: a cut reply or an undecided
metric stays so whatever more futures say.
"""

from __future__ import annotations

from collections.abc import Sequence

from collabgen.engine.confidence import pair_confidence, sample_std
from collabgen.engine.records import Candidate
from collabgen.engine.selection import Option, rank


def candidate_options(candidates: Sequence[Candidate]) -> list[Option]:
    """A turn's candidates as selection and the rule see them, as the rows describe them:
    MR, standard deviation and count of the futures it averages (`scored_futures`: drifted
    ones left out), whether it may be chosen."""
    options = []
    for i, c in enumerate(candidates):
        scored = c.scored_futures
        options.append(Option(index=i, score=c.score, text=c.text, eligible=c.choosable,
                              std=sample_std([f.score for f in scored]), futures=len(scored)))
    return options


def race_round(candidates: Sequence[Candidate], confidence: float, max_futures: int) -> list[int]:
    """`next_round` for a turn's candidates, `max_futures` capping the futures sampled
    (drifted ones included: they were paid for). The engine and `bench.mr_accuracy` call this."""
    return next_round(candidate_options(candidates), confidence, max_futures,
                      sampled=[len(c.futures) for c in candidates])


def contenders(options: Sequence[Option], confidence: float) -> list[int]:
    """Indexes (in `options` order) of the candidates that may still be the best: the best
    and every choosable one it is not separated from at `confidence` (an unknown
    confidence, e.g. one future each, separates nothing)."""
    ranked = rank(options)
    if not ranked or not ranked[0].eligible:
        return []
    best = ranked[0]
    turn = [o.spread for o in options]
    contending = {best.index}
    for other in ranked[1:]:
        if not other.eligible:
            continue
        sure = pair_confidence(best.spread, other.spread, turn).confidence
        if sure is None or sure < confidence:
            contending.add(other.index)
    return [o.index for o in options if o.index in contending]


def next_round(
    options: Sequence[Option], confidence: float, max_futures: int, *, sampled: Sequence[int] | None = None,
) -> list[int]:
    """The candidates that get one more future this round; empty when the race is over
    (the best stands alone, or every contender has `max_futures`). `sampled`: futures
    sampled per option, when more than the `futures` it averages."""
    running = contenders(options, confidence)
    if len(running) <= 1:
        return []
    counts = {o.index: (o.futures if sampled is None else sampled[k]) for k, o in enumerate(options)}
    return [i for i in running if counts[i] < max_futures]
