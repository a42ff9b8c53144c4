"""The clarify task (Abg-CoQA-Chat): ask to clarify exactly when the question is ambiguous."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.config.errors import SeedError
from collabgen.tasks.clarify import ClarifyTask
from tests.fakeserver import FakeLLMServer
from tests.helpers import SEEDS, by_turn, read_shards, recipe_from_file, write_recipe
from tests.scripts import JUDGE, install_clarify

STORY = {"story": "Anna won a blue ribbon.", "question": "What color?"}


@pytest.mark.parametrize(
    ("label", "expected"),
    [(True, True), ("true", True), ("false", False), ("1", True), (0, False), (1, True),
     ("ambiguous", True), ("non_ambiguous", False), ("Non_Ambiguous", False)],
)
def test_the_ambiguity_label_takes_booleans_strings_numbers_and_abg_coqa_labels(label, expected):
    seed = ClarifyTask().seed_from_row({**STORY, "ambiguous": label}, {}, "rows.jsonl:1")
    assert seed.ambiguous is expected


def test_answers_are_optional_and_a_single_string_is_one_answer():
    task = ClarifyTask()
    assert task.seed_from_row({**STORY, "ambiguous": True}, {}, "r:1").answers == []
    assert task.seed_from_row({**STORY, "ambiguous": True, "answers": "blue"}, {}, "r:1").answers == ["blue"]


def test_an_unreadable_label_is_a_seed_error_naming_the_column():
    with pytest.raises(SeedError, match="rows.jsonl:3.*'ambiguity'"):
        ClarifyTask().seed_from_row({**STORY, "ambiguity": "maybe"}, {"ambiguous": "ambiguity"}, "rows.jsonl:3")


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        install_clarify(fake)
        yield fake


def test_abgcoqa_recipe_rewards_asking_exactly_when_the_question_is_ambiguous(server, tmp_path):
    out = tmp_path / "out"
    # Seeds use Abg-CoQA's column `ambiguity` with its labels, mapped by the shipped recipe.
    recipe = recipe_from_file("eval/abgcoqa", server.base_url, out, SEEDS / "clarify.jsonl")
    result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "clarify.yaml", recipe))])
    assert result.exit_code == 0, result.output

    turns = by_turn(read_shards(out, "candidates"))
    for conv_id in ("clarify-000000", "clarify-000002"):  # ambiguous questions
        first = turns[(conv_id, 0)]
        assert first[True]["metrics"]["clarify_accuracy"] == 1.0  # asked which one
        assert first[False]["metrics"]["clarify_accuracy"] == 0.0  # answered straight away
        assert first[True]["chosen"]
        # From turn 1 on the first response is the chosen question, for every candidate.
        assert {c["metrics"]["clarify_accuracy"] for c in turns[(conv_id, 1)].values()} == {1.0}
    clear = turns[("clarify-000001", 0)]  # not ambiguous: answering is right, asking is not
    assert clear[True]["metrics"]["clarify_accuracy"] == 0.0
    assert clear[False]["metrics"]["clarify_accuracy"] == 1.0
    assert clear[False]["chosen"]
    assert ("clarify-000001", 1) not in turns  # the user thanked and ended the chat

    pairs = read_shards(out, "pairs").filter(turn=0)
    assert pairs.height == 3
    assert set(pairs["metrics_chosen"].struct.field("clarify_accuracy")) == {1.0}
    assert set(pairs["metrics_rejected"].struct.field("clarify_accuracy")) == {0.0}
    # The judge sees the user's opening (story and question) and the first response only.
    prompts = [c.body["messages"][-1]["content"] for c in server.ok_calls(JUDGE)]
    clarify_prompts = [p for p in prompts if '{"asked_clarification"' in p]
    assert clarify_prompts and all("Anna and her brother Tom" in p for p in clarify_prompts)
    card = (out / "README.md").read_text()
    # Own seeds are not described as the benchmark (the card names the seed file instead).
    assert "clarify.jsonl" in card and "clarify_accuracy" in card
