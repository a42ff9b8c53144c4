"""The dataset card: true to the seeds it came from, the recipe's own license and citation,
a default config and the shards' real features."""

from __future__ import annotations

import datasets
import pytest
import yaml
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.config.recipe import Recipe
from collabgen.config.secrets import secret_values
from collabgen.output.card import write_card
from collabgen.output.manifest import Manifest
from collabgen.output.outdir import OutDir
from collabgen.tasks.math import MathTask
from tests.fakeserver import FakeLLMServer
from tests.helpers import datasets_warnings, math_recipe, write_recipe
from tests.scripts import install_math

CITATION = "@misc{me2026mydata,\n  title = {My data},\n  year = {2026}\n}"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("card")
    out = tmp / "out"
    with FakeLLMServer() as server:
        install_math(server)
        data = math_recipe(server.base_url, out, **{"task.limit": 2, "generation.max_turns": 1})
        data["output"]["card"] = {"license": "cc-by-4.0", "description": "Tutoring chats from my own problems.",
                                  "citation": CITATION}
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp / "r.yaml", data))])
    assert result.exit_code == 0, result.output
    return out, data


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def test_own_seeds_get_the_recipes_license_description_and_citation_and_no_benchmark_claims(made):
    out, _ = made
    card = (out / "README.md").read_text()
    assert front_matter(card)["license"] == "cc-by-4.0"
    assert "Tutoring chats from my own problems." in card and "@misc{me2026mydata" in card
    assert "hendrycks2021math" not in card and "contaminates" not in card and "math.jsonl" in card
    assert "MATH-Chat" not in card and "competition" not in card  # own seeds are not the benchmark's problems
    assert "The seeds come from a local seed file, `math.jsonl`." in card


def test_a_default_config_loads_without_a_name_and_features_are_the_shards_own(made):
    out, _ = made
    meta = front_matter((out / "README.md").read_text())
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == ["pairs"]
    info = {c["config_name"]: c for c in meta["dataset_info"]}
    names = [f["name"] for f in info["pairs"]["features"]]
    assert names[:5] == ["prompt", "chosen", "rejected", "score_chosen", "score_rejected"]
    pairs = datasets.load_dataset(str(out), split="train")
    assert pairs.num_rows == info["pairs"]["splits"][0]["num_examples"]
    assert list(pairs.features) == names
    assert datasets.load_dataset(str(out), "sft", split="train").num_rows == info["sft"]["splits"][0]["num_examples"]


def test_the_benchmark_is_described_only_when_the_seeds_are_it(made, tmp_path):
    out, data = made
    data = {**data, "task": {**data["task"], "source": {"hub": {"name": MathTask.default_hub, "split": "train"}}}}
    data["output"] = {**data["output"], "card": {}}
    recipe = Recipe.from_dict(data)
    layout = OutDir(out)
    write_card(layout, recipe, MathTask(), Manifest.read(out), secret_values(recipe))
    card = (out / "README.md").read_text()
    assert front_matter(card)["license"] == "mit"
    assert "hendrycks2021math" in card and "contaminates evaluation on MATH" in card
    assert MathTask.description in card


def test_every_config_loads_with_the_cards_dataset_info_and_no_warning(made, tmp_path):
    """`datasets` reads the card's split info as its own (rows, Arrow bytes) and ignores nothing."""
    import pyarrow.parquet as pq
    from huggingface_hub import DatasetCard

    out, _ = made
    card = DatasetCard.load(out / "README.md")  # the Hub client's own parser of card metadata
    infos = {c["config_name"]: c for c in card.data.to_dict()["dataset_info"]}
    for config in ("pairs", "sft", "candidates"):
        with datasets_warnings() as warnings:
            loaded = datasets.load_dataset(str(out), config, split="train", cache_dir=str(tmp_path / "cache"))
        assert warnings == [], warnings
        (split,) = infos[config]["splits"]
        assert split == {"name": "train", "num_bytes": loaded.info.splits["train"].num_bytes,
                         "num_examples": len(loaded)}
        shards = sorted((out / config).glob("*.parquet"))
        assert infos[config]["download_size"] == sum(p.stat().st_size for p in shards)
        assert infos[config]["dataset_size"] == sum(pq.read_table(p).nbytes for p in shards)


def test_a_pretty_name_with_yaml_syntax_stays_a_string(made, tmp_path):
    out, data = made
    data = {**data, "output": {**data["output"], "card": {"pretty_name": "Math: tutoring #1 - {v2}"}}}
    recipe = Recipe.from_dict(data)
    write_card(OutDir(out), recipe, MathTask(), Manifest.read(out), secret_values(recipe))
    assert front_matter((out / "README.md").read_text())["pretty_name"] == "Math: tutoring #1 - {v2}"
