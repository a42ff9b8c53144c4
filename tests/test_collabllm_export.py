"""`collabgen export --format collabllm`: the reference's training scripts read collabgen's data.

`ReferenceReader` is written from the reference code (collabllm/datasets/multiturn.py,
`MultiturnDataset`): a local `dataset_repo` is `load_from_disk(path)`, flattened, checked
for its required keys, given `turn_id = len(prompt)` when missing; `to_dpo_dataset`
groups rows by `(conv_id, turn_id)` and pairs the highest score with the lowest (stable
sort) when the gap is at least `minimum_gap`; `to_sft_dataset` keeps, per conversation,
the row of the latest turn with the highest score (the first on ties), optionally
filtered by the mean of a `rewards` entry (`lower_bound_metric="rewards.accuracy"`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from datasets import load_from_disk
from typer.testing import CliRunner

from collabgen.app.collabllm_export import single_turn
from collabgen.cli import app
from collabgen.tasks.document import DocumentTask
from tests.fakeserver import FakeLLMServer
from tests.helpers import SEEDS, math_recipe, read_shards, recipe_from_file, write_recipe
from tests.scripts import install_clarify, install_document, install_math

REQUIRED = {"prompt", "completion", "conv_id", "score", "single_turn_prompt", "single_turn_completion",
            "single_turn_metadata"}


class ReferenceReader:
    def __init__(self, path: str) -> None:
        raw = [dict(r) for r in load_from_disk(path).flatten()]
        assert raw, "Loaded dataset is empty."
        assert "turns" not in raw[0]  # the flat layout, as pushed by the reference's data engine
        missing = REQUIRED - set(raw[0])
        assert not missing, f"Missing required keys in flat data: {missing}"
        for row in raw:
            assert isinstance(row["prompt"], list)
            row.setdefault("turn_id", len(row["prompt"]))
        self.data = raw

    def dpo(self, minimum_gap: float) -> list[dict[str, Any]]:
        grouped: dict[tuple, list[dict[str, Any]]] = {}
        for r in self.data:
            grouped.setdefault((r["conv_id"], r["turn_id"]), []).append(r)
        pairs = []
        for items in grouped.values():
            if len(items) < 2:
                continue
            items = sorted(items, key=lambda r: r["score"], reverse=True)
            if items[0]["score"] - items[-1]["score"] < minimum_gap:
                continue
            pairs.append({"prompt": items[0]["prompt"], "chosen": items[0]["completion"],
                          "rejected": items[-1]["completion"], "score_chosen": items[0]["score"],
                          "score_rejected": items[-1]["score"]})
        return pairs

    def sft(self, lower_bound_metric: str | None = None, lower_bound: float = 0.0) -> list[list[dict[str, str]]]:
        best: dict[Any, dict[str, Any]] = {}
        for row in self.data:
            prev = best.get(row["conv_id"])
            if prev is None or row["turn_id"] > prev["turn_id"] or (
                row["turn_id"] == prev["turn_id"] and row["score"] > prev["score"]
            ):
                best[row["conv_id"]] = row
        dialogues = []
        for row in best.values():
            if lower_bound_metric:
                metric: Any = row
                for key in lower_bound_metric.split("."):
                    metric = metric.get(key, {})
                if np.asarray(metric).mean().item() < lower_bound:
                    continue
            dialogues.append(row["prompt"] + [{"role": "assistant", "content": row["completion"]}])
        return dialogues


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collabllm")
    with FakeLLMServer() as server:
        install_math(server)
        out = tmp / "out"
        recipe = write_recipe(tmp / "r.yaml", math_recipe(server.base_url, out))
        assert CliRunner().invoke(app, ["run", str(recipe)]).exit_code == 0
    to = tmp / "collabllm"
    result = CliRunner().invoke(app, ["export", str(out), "--to", str(to), "--format", "collabllm"])
    assert result.exit_code == 0, result.output
    return out, to, result.output


def _without_system(messages) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]


def test_the_references_dpo_conversion_gives_collabgens_pairs(exported):
    out, to, output = exported
    reader = ReferenceReader(str(to))
    candidates = read_shards(out, "candidates")
    assert len(reader.data) == candidates.height and "rows from" in output
    ours = [(_without_system(r["prompt"]), r["chosen"][0]["content"], r["rejected"][0]["content"],
             r["score_chosen"], r["score_rejected"]) for r in read_shards(out, "pairs").iter_rows(named=True)]
    theirs = [(p["prompt"], p["chosen"], p["rejected"], p["score_chosen"], p["score_rejected"])
              for p in reader.dpo(minimum_gap=0.02)]
    assert ours and sorted(map(json.dumps, ours)) == sorted(map(json.dumps, theirs))


def test_the_references_sft_conversion_gives_collabgens_trajectories(exported):
    out, to, _ = exported
    ours = sorted(json.dumps(_without_system(r["messages"])) for r in read_shards(out, "sft").iter_rows(named=True))
    theirs = sorted(json.dumps(d) for d in ReferenceReader(str(to)).sft())
    assert ours and ours == theirs


def test_rows_carry_the_seed_sessions_and_rewards_as_the_reference_does(exported):
    out, to, _ = exported
    reader = ReferenceReader(str(to))
    seeds = [json.loads(line) for line in (SEEDS / "math.jsonl").read_text().splitlines() if line.strip()]
    futures = read_shards(out, "candidates")["futures"].to_list()
    for row, row_futures in zip(reader.data, futures):
        assert row["turn_id"] == len(row["prompt"]) and row["prompt"][-1]["role"] == "user"
        seed = seeds[row["conv_id"]]
        assert row["single_turn_prompt"] == seed["problem"] and row["single_turn_completion"] == seed["solution"]
        assert row["single_turn_metadata"]["problem"] == seed["problem"]  # a dict, through flatten()
        assert len(row["sessions"]) == len(row["rewards"]["MR"]) == len(row_futures)
        assert row["sessions"][0][: len(row["prompt"]) + 1] == [*row["prompt"],
                                                                 {"role": "assistant", "content": row["completion"]}]
        assert row["score"] == pytest.approx(sum(row["rewards"]["MR"]) / len(row["rewards"]["MR"]))
        assert set(row["rewards"]) == {"accuracy", "interactivity", "token_penalty", "MR"}
    # The reference's SFT filter on a reward reads these lists.
    strict = ReferenceReader(str(to)).sft(lower_bound_metric="rewards.accuracy", lower_bound=0.99)
    assert len(strict) < len(ReferenceReader(str(to)).sft())


def test_export_refuses_what_does_not_apply_and_keeps_other_folders(exported, tmp_path):
    out, to, _ = exported
    runner = CliRunner()
    assert runner.invoke(app, ["export", str(out), "--format", "collabllm"]).exit_code == 2
    result = runner.invoke(app, ["export", str(out), "--to", str(tmp_path / "x"), "--format", "collabllm",
                                 "--min-gap", "0.5"])
    assert result.exit_code == 2 and "minimum_gap" in result.output
    assert runner.invoke(app, ["export", str(out), "--to", str(to), "--format", "collabllm"]).exit_code == 2
    again = runner.invoke(app, ["export", str(out), "--to", str(to), "--format", "collabllm", "--overwrite"])
    assert again.exit_code == 0, again.output
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    refused = runner.invoke(app, ["export", str(out), "--to", str(other), "--format", "collabllm", "--overwrite"])
    assert refused.exit_code == 2 and (other / "notes.txt").read_text() == "keep me"
    assert runner.invoke(app, ["export", str(out), "--to", str(tmp_path / "y"), "--format", "parquet"]).exit_code == 2


def _export_task(tmp_path, install, recipe_name: str, seeds: str) -> ReferenceReader:
    with FakeLLMServer() as server:
        install(server)
        out = tmp_path / "out"
        recipe = recipe_from_file(recipe_name, server.base_url, out, SEEDS / seeds,
                                  **{"generation.max_turns": 2, "generation.futures": 1})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", recipe))])
        assert result.exit_code == 0, result.output
    to = tmp_path / "collabllm"
    result = CliRunner().invoke(app, ["export", str(out), "--to", str(to), "--format", "collabllm"])
    assert result.exit_code == 0, result.output
    return ReferenceReader(str(to))


def _jsonl(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (SEEDS / name).read_text().splitlines() if line.strip()]


def test_a_document_rows_single_turn_prompt_holds_the_title_and_the_article_as_the_references(tmp_path):
    # examples/single_turn_ds/medium.py:87,93: the reference's simulated user is handed
    # `single_turn_prompt` alone, so a bare title left it without the article in mind.
    reader = _export_task(tmp_path, install_document, "mediumdoc", "document.jsonl")
    seeds = _jsonl("document.jsonl")
    assert {row["conv_id"] for row in reader.data} == set(range(len(seeds)))
    for row in reader.data:
        seed = seeds[row["conv_id"]]
        assert row["single_turn_prompt"] == (
            f"Please write an article in less than 500 words about:\n\n{seed['title']}\n\n{seed['text']}")
        assert row["single_turn_completion"] == seed["text"]
        assert row["single_turn_metadata"]["title"] == seed["title"]


def test_the_document_request_follows_the_recipes_length_cue():
    seed = DocumentTask().seed_from_row({"title": "T", "text": "the article"}, {}, "r:1")
    assert single_turn(DocumentTask({"length_cue_words": 300}), seed)[0] == (
        "Please write an article in less than 300 words about:\n\nT\n\nthe article")
    assert single_turn(DocumentTask({"length_cue_words": None}), seed)[0] == (
        "Please write an article about:\n\nT\n\nthe article")


def test_an_abg_coqa_rows_single_turn_prompt_is_the_references_story_and_question(tmp_path):
    # examples/single_turn_ds/abg_coqa.py:57-75,82 (add_history=False): lead-in, story,
    # "My question is: ..."; the completion is the label.
    reader = _export_task(tmp_path, install_clarify, "eval/abgcoqa", "clarify.jsonl")
    seeds = _jsonl("clarify.jsonl")
    assert {row["conv_id"] for row in reader.data} == set(range(len(seeds)))
    for row in reader.data:
        seed = seeds[row["conv_id"]]
        assert row["single_turn_prompt"] == ("Can you help me answer a question about the following story?\n\n"
                                             f"{seed['story']}\n\nMy question is: {seed['question']}")
        assert row["single_turn_completion"] == seed["ambiguity"]
