"""How a conversation follows the CollabLLM reference, read from request bodies and rows.

- the simulator's structured reply: satisfied ends the chat, the opening never does,
  bad replies are asked again (only the bad choices), and give up with a visible reason;
- the next real user message comes from the best candidate's longest future;
- proactive candidates are sampled under the proactive system prompt, plain ones under
  `generation.system_prompt`, and rows carry `generation.row_system_prompt`;
- the interactivity judge rates the window by default, the whole conversation on request;
- the paper-era options: the three-level judge (rating / 3) and the token penalty over
  every message of the window.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.config.errors import RecipeError
from collabgen.config.recipe import Recipe
from collabgen.engine.simulator import parse_user_reply
from collabgen.prompting import TERMINATION_MARKER, Prompts
from tests import scripts
from tests.fakeserver import FakeLLMServer, ScriptCall
from tests.helpers import math_recipe, read_shards, write_recipe
from tests.scripts import JUDGE, POLICY, PROACTIVE_SYSTEM, TERMINATE, USER, install_math, say, sim_view

ROW_SYSTEM = Prompts().render("row_system")


def run(server: FakeLLMServer, tmp_path: Path, name: str = "out", **overrides: Any):
    out = tmp_path / name
    recipe = write_recipe(tmp_path / f"{name}.yaml", math_recipe(server.base_url, out, **overrides))
    return CliRunner().invoke(app, ["run", str(recipe)]), out


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        install_math(fake)
        yield fake


# --------------------------------------------------------------------------- the simulator's reply


def test_a_satisfied_user_ends_the_chat_and_an_opening_never_does():
    done = parse_user_reply(json.dumps({"thought": "right answer", "satisfied": True, "message": "thanks!"}))
    assert done.stored(opening=False) == f"thanks! {TERMINATION_MARKER}"
    assert done.stored(opening=True) == "thanks!"  # nothing has been answered yet
    going = parse_user_reply('```json\n{"thought": "", "satisfied": "false", "message": "try again"}\n```')
    assert going.stored(opening=False) == "try again"
    # Giving up: the marker written by the user ends the chat too.
    assert parse_user_reply(json.dumps({"thought": "", "satisfied": False, "message": f"bye {TERMINATE}"})) \
        .stored(opening=False).endswith(TERMINATION_MARKER)


@pytest.mark.parametrize("reply", [
    "sure, here is my message",  # not JSON
    '{"satisfied": false, "message": "hi"}',  # no thought: it must think first
    '{"thought": "x", "satisfied": "maybe", "message": "hi"}',
    '{"thought": "x", "satisfied": false, "message": "  "}',
])
def test_a_reply_not_in_the_format_is_rejected(reply):
    with pytest.raises((KeyError, TypeError, ValueError)):
        parse_user_reply(reply)


# What the schema's `minLength: 1` lets through but would be an empty user turn.
WORDLESS = [" ", "\n", "\u200b", "...", "\u3000\t", TERMINATE, f" {TERMINATE}\n"]


@pytest.mark.parametrize("message", WORDLESS)
def test_a_message_without_words_is_not_in_the_format(message):
    with pytest.raises(ValueError, match="carry words"):
        parse_user_reply(json.dumps({"thought": "x", "satisfied": False, "message": message}))
    with pytest.raises(ValueError, match="carry words"):
        parse_user_reply(json.dumps({"thought": "x", "satisfied": True, "message": message}))


@pytest.mark.parametrize("message", ["ok", "7", "好的", f"bye {TERMINATE}"])
def test_a_message_with_words_in_any_script_is_kept(message):
    assert parse_user_reply(json.dumps({"thought": "", "satisfied": False, "message": message})).message


def test_a_wordless_message_is_asked_again_and_never_becomes_a_user_turn(server, tmp_path):
    """Every first sample of a user request is a bare newline or space; the sample asked
    again with a new seed has words. No row holds an empty user message."""

    first_request: dict[str, dict] = {}  # the chat a user request holds -> the first request's body

    def blank_first(call: ScriptCall) -> str:
        chat = json.dumps(call.messages)
        if first_request.setdefault(chat, call.body) is call.body:
            return say("\n" if call.choice_index % 2 else " ")
        return scripts.math_user(call)

    server.set_script(USER, blank_first)
    result, out = run(server, tmp_path, **{"task.limit": 2, "generation.max_turns": 2})
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["usage"]["by_role"]["user"]["retries"] > 0
    rows = read_shards(out, "sft").to_dicts() + read_shards(out, "pairs").to_dicts()
    user_turns = [m["content"] for r in rows for m in r.get("messages", r.get("prompt")) if m["role"] == "user"]
    futures = [m["content"] for r in read_shards(out, "candidates").to_dicts() for f in r["futures"]
               for m in f["messages"] if m["role"] == "user"]
    assert user_turns and futures and all(t.strip() for t in user_turns + futures)


def test_a_simulator_that_only_sends_blanks_fails_the_conversation_with_the_reason(server, tmp_path):
    server.set_script(USER, lambda call: say("\n"))
    result, out = run(server, tmp_path, **{"task.limit": 1, "models.user.parse_retries": 2})
    assert result.exit_code == 1
    reason = json.loads((out / "manifest.json").read_text())["failures"][0]["reason"]
    assert "user" in reason and "format" in reason
    assert len(server.ok_calls(USER)) == 3  # asked three times, with three seeds
    assert server.ok_calls(POLICY) == []


def test_bad_simulator_replies_are_asked_again_one_choice_at_a_time(server, tmp_path):
    """The second choice of every n>1 request is not JSON: only it is asked again, alone,
    with a new seed; the rows never hold the bad text."""

    def sloppy_user(call: ScriptCall) -> str:
        if call.body.get("n", 1) > 1 and call.choice_index == 1:
            return "honestly? not sure what to say"
        return scripts.math_user(call)

    server.set_script(USER, sloppy_user)
    # With reuse, no later request repeats a batched one's messages (without it, a future's
    # user request can equal the next turn's batched one, which the count below would take
    # for a retry).
    result, out = run(server, tmp_path, **{"task.limit": 2, "generation.reuse_futures": True})
    assert result.exit_code == 0, result.output
    calls = server.ok_calls(USER)
    batched = [c for c in calls if c.body.get("n", 1) > 1]
    asked_again = [c for c in calls if c.body.get("n", 1) == 1
                   and any(c.body["messages"] == b.body["messages"] and c.body["seed"] != b.body["seed"]
                           for b in batched)]
    assert batched and len(asked_again) == len(batched)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["usage"]["by_role"]["user"]["retries"] >= len(batched)
    assert "not sure what to say" not in json.dumps(read_shards(out, "candidates").to_dicts())


def test_a_simulator_that_never_replies_in_format_fails_the_conversation_visibly(server, tmp_path):
    server.set_script(USER, lambda call: "I am the user and I say hello")
    result, out = run(server, tmp_path, **{"task.limit": 1, "models.user.parse_retries": 1})
    assert result.exit_code == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert "user" in manifest["failures"][0]["reason"] and "format" in manifest["failures"][0]["reason"]
    assert len(server.ok_calls(USER)) == 2  # asked twice, with two seeds
    assert server.ok_calls(POLICY) == []


# --------------------------------------------------------------------------- the next user message


def walks_away_in_first_future(call: ScriptCall) -> str:
    """In every batch of first future replies, the first choice leaves at once; the others go on."""
    if call.body.get("n", 1) > 1 and call.choice_index == 0:
        return say(f"never mind, I'll figure it out {TERMINATE}")
    return scripts.math_user(call)


def test_the_next_user_message_comes_from_the_longest_future(server, tmp_path):
    server.set_script(USER, walks_away_in_first_future)
    result, out = run(server, tmp_path, **{"generation.futures": 3, "task.limit": 2, "generation.reuse_futures": True})
    assert result.exit_code == 0, result.output
    candidates = read_shards(out, "candidates").to_dicts()
    chosen = {(r["conv_id"], r["turn"]): r for r in candidates if r["chosen"]}
    for (conv_id, turn), row in chosen.items():
        lengths = [len(f["messages"]) for f in row["futures"]]
        assert lengths[0] == 1 and row["futures"][0]["terminated"]  # the first future ended at once
        if (conv_id, turn + 1) not in chosen:
            # Ended before the last turn only because every future ended at its first message.
            assert turn == 2 or lengths == [1, 1, 1], (conv_id, turn, lengths)
            continue
        lead = row["futures"][lengths.index(max(lengths))]["messages"]
        following = [r for r in candidates if (r["conv_id"], r["turn"]) == (conv_id, turn + 1)]
        assert following[0]["prompt"][-1]["content"] == lead[0]["content"]
        reused = [r for r in following if r["reused"]]
        assert [r["response"] for r in reused] == [lead[1]["content"]]  # its assistant reply is reused
    # One future in three ending at once does not end a conversation (the old rule, the first
    # future, ended every one after its first turn).
    assert min(read_shards(out, "sft")["turns"]) >= 2


def test_the_conversation_ends_when_even_the_longest_future_ended_at_its_first_message(server, tmp_path):
    def always_leaves(call: ScriptCall) -> str:
        return say(f"thanks, bye {TERMINATE}") if sim_view(call).chat else scripts.math_user(call)

    server.set_script(USER, always_leaves)
    result, out = run(server, tmp_path, **{"task.limit": 2})
    assert result.exit_code == 0, result.output
    assert set(read_shards(out, "sft")["turns"]) == {1}


# --------------------------------------------------------------------------- system prompts


def policy_systems(server: FakeLLMServer) -> list[str | None]:
    return [c.body["messages"][0]["content"] if c.body["messages"][0]["role"] == "system" else None
            for c in server.ok_calls(POLICY)]


def test_proactive_candidates_are_asked_for_questions_options_and_suggestions(server, tmp_path):
    result, _ = run(server, tmp_path, **{"task.limit": 1, "generation.max_turns": 1})
    assert result.exit_code == 0, result.output
    systems = policy_systems(server)
    assert systems.count(PROACTIVE_SYSTEM) == 1 and set(systems) == {PROACTIVE_SYSTEM, None}
    for asks_for in ("ask about it", "options", "suggest the concrete next step", "feedback on specifics",
                     "never ask about something the conversation has already answered"):
        assert asks_for in PROACTIVE_SYSTEM


def test_sampling_and_row_system_prompts_are_separate(server, tmp_path):
    result, out = run(server, tmp_path, **{"generation.system_prompt": "Sampling prompt."})
    assert result.exit_code == 0, result.output
    assert set(policy_systems(server)) == {PROACTIVE_SYSTEM, "Sampling prompt."}
    # Rows carry the fixed collaborative prompt, never the sampling one.
    assert {row[0]["content"] for row in read_shards(out, "pairs")["prompt"].to_list()} == {ROW_SYSTEM}
    assert {m[0]["content"] for m in read_shards(out, "sft")["messages"].to_list()} == {ROW_SYSTEM}
    # `collabgen export` writes the prompt the run wrote.
    assert CliRunner().invoke(app, ["export", str(out), "--to", str(tmp_path / "exported")]).exit_code == 0
    exported = read_shards(tmp_path / "exported", "pairs")
    assert exported.equals(read_shards(out, "pairs"))


def test_row_system_prompt_null_writes_rows_without_a_system_message(server, tmp_path):
    result, out = run(server, tmp_path, **{"generation.row_system_prompt": None, "task.limit": 2})
    assert result.exit_code == 0, result.output
    assert all(row[0]["role"] == "user" for row in read_shards(out, "pairs")["prompt"].to_list())
    assert all(m[0]["role"] == "user" for m in read_shards(out, "sft")["messages"].to_list())


def test_export_of_an_older_run_keeps_the_system_prompt_its_rows_had(server, tmp_path):
    """Manifests written before `row_system_prompt` existed: rows carried `system_prompt`."""
    result, out = run(server, tmp_path, **{"generation.row_system_prompt": "Old rows' prompt.", "task.limit": 2})
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["recipe"]["generation"]["row_system_prompt"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert CliRunner().invoke(app, ["export", str(out)]).exit_code == 0
    assert all(row[0]["role"] == "user" for row in read_shards(out, "pairs")["prompt"].to_list())


def test_the_default_row_system_prompt_is_the_packaged_template():
    recipe = Recipe.from_dict(math_recipe("http://127.0.0.1:9/v1", Path("out")))
    assert recipe.generation.row_system_prompt == ROW_SYSTEM and recipe.generation.system_prompt is None


# --------------------------------------------------------------------------- interactivity judge


def interactivity_prompts(server: FakeLLMServer) -> list[str]:
    return [c.body["messages"][-1]["content"] for c in server.ok_calls(JUDGE)
            if '"interactivity"' in c.body["messages"][-1]["content"]]


def test_the_interactivity_judge_rates_the_window_by_default(server, tmp_path):
    result, _ = run(server, tmp_path, **{"task.limit": 1, "generation.max_turns": 2})
    assert result.exit_code == 0, result.output
    prompts = interactivity_prompts(server)
    assert prompts and all("<<<HISTORY" in p and "<<<EVALUATE" in p for p in prompts)
    later = [p for p in prompts if "<<<HISTORY\nUSER:" in p and "ASSISTANT:" in p.split("HISTORY>>>")[0]]
    assert later  # from turn 1 on, earlier turns are context, not rated


def test_reward_interactivity_conversation_rates_the_whole_conversation(server, tmp_path):
    result, _ = run(server, tmp_path, **{"task.limit": 1, "generation.max_turns": 2,
                                          "reward.interactivity": "conversation"})
    assert result.exit_code == 0, result.output
    prompts = interactivity_prompts(server)
    assert prompts and all("<<<CONVERSATION\nUSER: hey, can you help me with this: What is 2 + 3?" in p
                           and "<<<HISTORY" not in p for p in prompts)
    assert "asks every question that matters" in prompts[0]


def test_an_unknown_interactivity_mode_is_a_recipe_error():
    with pytest.raises(RecipeError, match="reward.interactivity"):
        Recipe.from_dict(math_recipe("http://127.0.0.1:9/v1", Path("out"), **{"reward.interactivity": "turn"}))


# --------------------------------------------------------------------------- the paper-era judge scale and token count


def three_level_judge(level: int):
    """The scripted judge, but rating interactivity `level` (1..3) on the three-level prompt."""

    def script(call: ScriptCall) -> str:
        prompt = call.messages[-1]["content"]
        if scripts.THREE_LEVEL_PROMPT in prompt:
            return json.dumps({"thought": "scripted", "interactivity": level})
        return scripts.judge(call)

    return script


def test_the_three_level_judge_rates_1_to_3_and_scores_the_rating_over_3(server, tmp_path):
    server.set_script(JUDGE, three_level_judge(2))
    result, out = run(server, tmp_path, **{"task.limit": 1, "generation.max_turns": 2,
                                            "reward.interactivity_scale": "three_level"})
    assert result.exit_code == 0, result.output
    prompts = interactivity_prompts(server)
    assert prompts and all(scripts.THREE_LEVEL_PROMPT in p and "<<<EVALUATE" in p for p in prompts)
    candidates = read_shards(out, "candidates")
    futures = [f for futures in candidates["futures"].to_list() for f in futures]
    assert futures and all(f["metrics"]["interactivity"] == pytest.approx(2 / 3) for f in futures)
    assert all(m["interactivity"] == pytest.approx(2 / 3) for m in candidates["metrics"].to_list())


def test_a_three_level_rating_outside_1_to_3_is_asked_again(server, tmp_path):
    server.set_script(JUDGE, three_level_judge(0))  # a unit-scale answer, not a level
    result, _ = run(server, tmp_path, **{"task.limit": 1, "generation.max_turns": 1,
                                          "reward.interactivity_scale": "three_level"})
    assert result.exit_code != 0
    assert len(interactivity_prompts(server)) > 2  # every bad rating was asked again


def test_the_three_level_scale_rates_the_window_only():
    with pytest.raises(RecipeError, match="three_level rates the window"):
        Recipe.from_dict(math_recipe("http://127.0.0.1:9/v1", Path("out"), **{
            "reward.interactivity": "conversation", "reward.interactivity_scale": "three_level"}))


def test_the_new_reward_options_leave_default_fingerprints_alone():
    default = Recipe.from_dict(math_recipe("http://127.0.0.1:9/v1", Path("out")))
    assert "interactivity_scale" not in default.semantic()["reward"]
    assert "over" not in default.semantic()["reward"]["token_penalty"]
    paper = Recipe.from_dict(math_recipe("http://127.0.0.1:9/v1", Path("out"), **{
        "reward.interactivity_scale": "three_level", "reward.token_penalty.over": "all"}))
    assert paper.fingerprint() != default.fingerprint()
    assert paper.semantic()["reward"]["token_penalty"]["over"] == "all"


def test_token_penalty_over_all_counts_the_future_users_messages_too(server, tmp_path):
    from collabgen.tasks.reference_metrics import cl100k_tokens

    shape = {"task.limit": 2, "generation.max_turns": 1}
    first, assistant_only = run(server, tmp_path, "assistant", **shape)
    second, every_message = run(server, tmp_path, "all", **shape, **{"reward.token_penalty.over": "all"})
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    lambda_ = 5e-4  # tests.helpers.math_recipe
    pairs = zip(read_shards(assistant_only, "candidates").iter_rows(named=True),
                read_shards(every_message, "candidates").iter_rows(named=True), strict=True)
    counted = 0
    for before, after in pairs:
        for old, new in zip(before["futures"], after["futures"], strict=True):
            assert new["messages"] == old["messages"]  # the same futures, only the count differs
            user_tokens = sum(cl100k_tokens(m["content"]) for m in new["messages"] if m["role"] == "user")
            assert user_tokens > 0
            penalty = new["metrics"]["token_penalty"] - old["metrics"]["token_penalty"]
            assert penalty == pytest.approx(-lambda_ * user_tokens)
            counted += 1
    assert counted >= 4
