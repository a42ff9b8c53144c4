"""Pair selection: which candidate of a turn is chosen, which is rejected, which pairs are kept.

One home for the rule, used by the run (to pick the candidate the conversation goes on
with, and the turn's DPO pair) and by `collabgen export` (to re-select pairs from
`candidates/` without a model call). Both read the same scores, so both rank the same way.

Ranking: by MR, highest first; ties go to the candidate sampled first (lower index), so
the best is `max(score, -index)` and the worst `min(score, -index)`. A candidate that
may not be chosen (a reply cut at its token budget) ranks below every one that may, and
is never the chosen side of a pair; when no candidate of a turn may be chosen, the
conversation cannot go on (`NoEligibleCandidate`).

Pairs (`Selection`):
- `best-worst` (the run's rule): each of the top K candidates (K=1 by default) against
  the worst;
- `all`: each of the top K (all by default) against every candidate ranked below it.
A pair is kept when `score_chosen - score_rejected >= min_gap`, the two texts differ and,
with `min_confidence`, its confidence (`engine/confidence.py`) is known and at least that;
within a turn, a (chosen text, rejected text) combination is kept once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from collabgen.engine.confidence import PairConfidence, Spread, pair_confidence

PairsPerTurn = Literal["best-worst", "all"]


@dataclass(frozen=True)
class Option:
    """What selection needs to know of a candidate."""

    index: int
    score: float
    text: str
    eligible: bool = True  # may be chosen (false for a reply cut at its token budget)
    std: float | None = None  # its futures' sample standard deviation (None for fewer than two)
    futures: int = 0

    @property
    def spread(self) -> Spread:
        return Spread(score=self.score, std=self.std, n=self.futures)


class NoEligibleCandidate(ValueError):
    """Every candidate of a turn was cut at its token budget: none may be chosen."""


@dataclass(frozen=True)
class Selection:
    min_gap: float
    pairs_per_turn: PairsPerTurn = "best-worst"
    top_k: int | None = None
    min_confidence: float | None = None

    def describe(self) -> str:
        k = self.top_k or (1 if self.pairs_per_turn == "best-worst" else None)
        chosen = "the best candidate" if k == 1 else ("every candidate" if k is None else f"each of the top {k}")
        against = "the worst" if self.pairs_per_turn == "best-worst" else "every candidate ranked below it"
        sure = "" if self.min_confidence is None else f" and its confidence at least {self.min_confidence}"
        return f"{chosen} of a turn against {against}, kept when the MR gap is at least {self.min_gap}{sure}"


def rank(options: Sequence[Option]) -> list[Option]:
    """Best first; on equal MR the earlier candidate ranks higher."""
    return sorted(options, key=lambda o: (not o.eligible, -o.score, o.index))


def best_and_worst(options: Sequence[Option]) -> tuple[int, int]:
    """Indexes of the chosen (best) and the rejected (worst) candidate of a turn."""
    ranked = rank(options)
    if not ranked[0].eligible:
        raise NoEligibleCandidate(f"none of the {len(ranked)} candidates may be chosen: each was cut at its token "
                                  "budget, scored by a metric that could not decide, or had only futures whose simulated user "
                                  "did the assistant's work (see the candidates' flags)")
    return ranked[0].index, ranked[-1].index


def select_pairs(
    options: Sequence[Option], selection: Selection
) -> list[tuple[Option, Option, PairConfidence]]:
    """(chosen, rejected, confidence) pairs of one turn, in rank order."""
    ranked = rank(options)
    if not ranked:
        return []
    if selection.pairs_per_turn == "best-worst":
        k = selection.top_k or 1
        combos = [(c, ranked[-1]) for c in ranked[:k]]
    else:
        k = selection.top_k or len(ranked)
        combos = [(c, r) for i, c in enumerate(ranked[:k]) for r in ranked[i + 1 :]]
    pairs: list[tuple[Option, Option, PairConfidence]] = []
    seen: set[tuple[str, str]] = set()
    turn = [o.spread for o in options]
    for chosen, rejected in combos:
        texts = (chosen.text, rejected.text)
        if not chosen.eligible or chosen.index == rejected.index or texts[0] == texts[1] or texts in seen:
            continue
        if chosen.score - rejected.score < selection.min_gap:
            continue
        sure = pair_confidence(chosen.spread, rejected.spread, turn)
        if selection.min_confidence is not None and (sure.confidence is None or sure.confidence < selection.min_confidence):
            continue
        seen.add(texts)
        pairs.append((chosen, rejected, sure))
    return pairs
