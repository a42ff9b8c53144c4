"""The MR as an online reward (`collabgen.reward`): the offline futures' path, deterministic, failures None.

Every role is the scripted fake server (`tests.scripts.install_math`); seeds are rows of
`tests/seeds/math.jsonl`. The verl adapter is called with the inputs verl's reward
managers pass it (verl itself is not installed here).
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from collabgen.app.reward import as_item, sample_scope
from collabgen.reward import MultiturnReward, RewardItem, close_verl_rewards, verl_compute_score
from tests.fakeserver import FakeLLMServer
from tests.helpers import SEEDS, math_recipe, write_recipe
from tests.scripts import JUDGE, install_math, judge, never_parsable_judge

ROWS = [json.loads(line) for line in (SEEDS / "math.jsonl").read_text().splitlines() if line.strip()]
RIGHT = "The answer is $\\boxed{5}$."
ASKS = "Do you want the exact value or a decimal?"


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        install_math(fake)
        yield fake


def opening(row: dict) -> list[dict]:
    return [{"role": "user", "content": f"hey, can you help me with this: {row['problem']}"}]


def score(recipe, items, **kwargs):
    async def go():
        async with MultiturnReward.from_recipe(recipe, **kwargs) as reward:
            return await reward.score_batch(items)

    return asyncio.run(go())


def test_a_completion_is_scored_by_its_futures_and_again_from_the_cache(server, tmp_path):
    recipe = write_recipe(tmp_path / "math.yaml", math_recipe(server.base_url, tmp_path / "out"))
    row = ROWS[0]
    items = [(opening(row), RIGHT, row), (opening(row), ASKS, row), RewardItem(opening(row), RIGHT, row, step=3)]
    first = score(recipe, items)
    assert (tmp_path / "out" / ".collabgen" / "reward-cache.sqlite").is_file()
    right, asks, other_step = first
    assert right.futures == asks.futures == 2 and right.error is None
    assert right.metrics["accuracy"] == 1.0
    # MR is the mean of the futures' weighted sums (weights 1, 0.5, 1 in math_recipe).
    assert right.score == pytest.approx(right.metrics["accuracy"] + 0.5 * right.metrics["interactivity"]
                                        + right.metrics["token_penalty"])
    assert asks.metrics["interactivity"] == pytest.approx(0.9)  # the scripted judge: it asks a question
    assert "tokens_estimated" in right.flags  # no token count given: 4 characters a token
    calls = len(server.ok_calls())
    again = score(recipe, items[:2])
    assert [r.score for r in again] == [right.score, asks.score]
    assert len(server.ok_calls()) == calls  # the same seeds, the same requests: the cache answers
    # A step changes the sample seeds: the same completion is rolled out afresh.
    fields = {"problem": row["problem"], "solution": row["solution"]}
    assert sample_scope(as_item(items[0]), fields) == sample_scope(as_item(tuple(items[0])), fields)
    assert sample_scope(as_item(items[0]), fields) != sample_scope(items[2], fields)


def test_a_failed_judge_gives_none_not_zero_and_bad_items_say_why(server, tmp_path):
    recipe = write_recipe(tmp_path / "math.yaml", math_recipe(server.base_url, tmp_path / "out"))
    server.set_script(JUDGE, lambda call: never_parsable_judge(call) if "7 \\times 6" in call.messages[-1]["content"]
                      else judge(call))
    good, bad = ROWS[0], ROWS[1]
    fine, failed, no_user, no_seed = score(recipe, [
        (opening(good), RIGHT, good), (opening(bad), "It is $\\boxed{42}$.", bad),
        ([*opening(good), {"role": "assistant", "content": "hi"}], RIGHT, good), (opening(good), RIGHT, {"x": 1}),
    ])
    assert fine.score is not None and fine.error is None
    assert failed.score is None and failed.error and failed.futures == 2
    assert no_user.score is None and "end with a user message" in no_user.error
    assert no_seed.score is None and "bad item" in no_seed.error


def test_verl_compute_score_takes_the_naive_and_the_batch_managers_inputs(server, tmp_path):
    import numpy as np

    recipe = str(write_recipe(tmp_path / "math.yaml", math_recipe(server.base_url, tmp_path / "out")))
    server.set_script(JUDGE, lambda call: never_parsable_judge(call) if "7 \\times 6" in call.messages[-1]["content"]
                      else judge(call))
    good, bad = ROWS[0], ROWS[1]
    info = {"conversation": opening(good), "seed": good, "num_turns": None}  # the naive manager adds num_turns
    try:
        # The naive manager: one sample, keywords; `reward_kwargs` adds `recipe`.
        single = verl_compute_score(data_source="math", solution_str=RIGHT, ground_truth="5", extra_info=info,
                                    recipe=recipe)
        [expected] = score(recipe, [(opening(good), RIGHT, good)])
        assert single["score"] == expected.score and single["mr_failed"] == 0.0 and single["mr_futures"] == 2.0
        assert single["accuracy"] == expected.metrics["accuracy"]
        # The batch manager: lists, `extra_infos` a numpy object array (verl's non-tensor batch).
        extras = np.array([info, {"conversation": opening(bad), "seed": bad}], dtype=object)
        fine, failed = verl_compute_score(data_sources=np.array(["math", "math"], dtype=object),
                                          solution_strs=[RIGHT, "It is $\\boxed{42}$."], ground_truths=["5", "42"],
                                          extra_infos=extras, recipe=recipe)
        assert fine == single
        assert math.isnan(failed["score"]) and failed["mr_failed"] == 1.0  # verl has no None: NaN, flagged
        assert set(failed) == set(fine)  # verl stacks the extra keys per sample: every sample has all of them
        with pytest.raises(ValueError, match="extra_info"):
            verl_compute_score(data_source="math", solution_str=RIGHT, ground_truth="5", extra_info={}, recipe=recipe)
    finally:
        close_verl_rewards()


def test_a_completion_whose_every_future_drifted_gets_no_reward(server, tmp_path):
    """Only simulated users who did the assistant's work: the MR is no verdict, so None."""
    from tests.scripts import USER, math_user, say, sim_view

    def drifting(call):
        return say("fine, the answer is \\boxed{5}") if not sim_view(call).opening else math_user(call)

    server.set_script(USER, drifting)
    recipe = write_recipe(tmp_path / "math.yaml", math_recipe(server.base_url, tmp_path / "out"))
    row = ROWS[0]
    [result] = score(recipe, [(opening(row), RIGHT, row)])
    assert result.score is None and "user_drift_only" in result.error
    assert result.futures == 2 and "user_drift_only" in result.flags
