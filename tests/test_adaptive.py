"""Adaptive futures (`generation.adaptive`): the racing rule, and runs against the scripted server."""

from __future__ import annotations

import pytest

from collabgen.config.recipe import GenerationConfig
from collabgen.engine.confidence import sample_std
from collabgen.engine.racing import contenders, next_round
from collabgen.engine.selection import Option, Selection, select_pairs


def option(index: int, scores: list[float], eligible: bool = True) -> Option:
    return Option(index=index, score=sum(scores) / len(scores), text=f"reply {index}", eligible=eligible,
                  std=sample_std(scores), futures=len(scores))


# --------------------------------------------------------------------------- the rule


def test_a_dominating_candidate_ends_the_race_at_once():
    turn = [option(0, [0.2, 0.2]), option(1, [1.2, 1.2]), option(2, [0.1, 0.3])]
    assert contenders(turn, 0.9) == [1]
    assert next_round(turn, 0.9, max_futures=6) == []


def test_a_close_race_goes_on_until_max_futures():
    turn = [option(0, [1.0, 0.0]), option(1, [0.0, 1.0])]
    assert next_round(turn, 0.9, max_futures=6) == [0, 1]
    at_max = [option(0, [1.0, 0.0, 1.0, 0.0]), option(1, [0.0, 1.0, 0.0, 1.0])]
    assert next_round(at_max, 0.9, max_futures=4) == []


def test_only_candidates_that_can_still_win_get_another_future():
    best, close, beaten = [1.0, 0.9, 1.0], [0.95, 1.0, 0.9], [0.0, 0.1, 0.0]
    turn = [option(0, beaten), option(1, best), option(2, close)]
    assert next_round(turn, 0.9, max_futures=6) == [1, 2]
    # a contender already at max_futures waits while the other catches up
    turn = [option(0, beaten), option(1, best + [1.0]), option(2, close)]
    assert next_round(turn, 0.9, max_futures=4) == [2]


def test_the_rule_stops_exactly_where_the_confidence_column_reaches_the_asked_confidence():
    for gap in [x / 20 for x in range(1, 20)]:
        turn = [option(0, [1.0, 0.6, 0.8]), option(1, [1.0 - gap, 0.6 - gap, 0.9 - gap])]
        [(_, _, sure)] = select_pairs(turn, Selection(min_gap=0.0))
        assert (next_round(turn, 0.9, max_futures=6) == []) == (sure.confidence >= 0.9), gap


def test_unknown_noise_separates_nothing():
    turn = [option(0, [1.0]), option(1, [0.0])]  # one future each: no variance to test with
    assert next_round(turn, 0.9, max_futures=3) == [0, 1]


def test_a_candidate_that_may_not_be_chosen_never_contends():
    turn = [option(0, [2.0, 2.0], eligible=False), option(1, [1.0, 0.0]), option(2, [0.0, 1.0], eligible=False)]
    assert contenders(turn, 0.9) == [1]
    assert next_round(turn, 0.9, max_futures=6) == []
    assert contenders([option(0, [1.0, 1.0], eligible=False)], 0.9) == []


def test_adaptive_settings_are_checked_and_left_out_of_dumps_when_unset():
    assert "adaptive" not in GenerationConfig().model_dump()
    assert GenerationConfig(adaptive={"min_futures": 2, "max_futures": 4}).first_futures() == 2
    with pytest.raises(ValueError, match="max_futures"):
        GenerationConfig(adaptive={"min_futures": 4, "max_futures": 3})
    with pytest.raises(ValueError):
        GenerationConfig(adaptive={"confidence": 0.5})
