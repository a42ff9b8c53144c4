"""Pair selection: one rule for the run and for `collabgen export`."""

from __future__ import annotations

import random

from collabgen.engine.selection import Option, Selection, best_and_worst, rank, select_pairs


def options(*scores: float, texts: list[str] | None = None) -> list[Option]:
    return [Option(index=i, score=s, text=(texts or [f"t{i}" for i in range(len(scores))])[i])
            for i, s in enumerate(scores)]


def test_best_is_the_highest_mr_and_ties_go_to_the_earlier_candidate():
    assert best_and_worst(options(0.2, 0.9, 0.5)) == (1, 0)
    assert best_and_worst(options(0.5, 0.5, 0.1)) == (0, 2)
    # On a tie for the worst, the later candidate is the rejected one.
    assert best_and_worst(options(0.9, 0.1, 0.1)) == (0, 2)
    assert best_and_worst(options(0.3)) == (0, 0)


def test_ranking_agrees_with_max_and_min_over_score_then_earlier_index():
    rng = random.Random(7)
    for _ in range(500):
        scores = [rng.choice([0.0, 0.25, 0.5, 1.0]) for _ in range(rng.randint(1, 5))]
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        worst = min(range(len(scores)), key=lambda i: (scores[i], -i))
        assert best_and_worst(options(*scores)) == (best, worst)


def test_best_worst_keeps_one_pair_when_the_gap_is_large_enough():
    pairs = select_pairs(options(0.2, 0.9, 0.5), Selection(min_gap=0.5))
    assert [(c.index, r.index) for c, r, _ in pairs] == [(1, 0)]
    assert select_pairs(options(0.2, 0.9, 0.5), Selection(min_gap=0.71)) == []


def test_identical_texts_and_a_single_candidate_give_no_pair():
    assert select_pairs(options(1.0, 0.0, texts=["same", "same"]), Selection(min_gap=0.0)) == []
    assert select_pairs(options(1.0), Selection(min_gap=0.0)) == []


def test_all_pairs_each_top_candidate_against_every_one_below_it_once_per_text_pair():
    opts = options(0.9, 0.5, 0.1, 0.1, texts=["a", "b", "c", "c"])
    pairs = select_pairs(opts, Selection(min_gap=0.0, pairs_per_turn="all"))
    assert [(c.text, r.text) for c, r, _ in pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    top1 = select_pairs(opts, Selection(min_gap=0.0, pairs_per_turn="all", top_k=1))
    assert [(c.text, r.text) for c, r, _ in top1] == [("a", "b"), ("a", "c")]


def test_rank_orders_best_first():
    assert [o.index for o in rank(options(0.1, 0.7, 0.7, 0.3))] == [1, 2, 3, 0]
