"""`output.sft.min_final`: sft/ keeps only conversations whose final metrics reach the
minimums (the reference keeps final accuracy >= 0.5); pairs and candidates are untouched."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.config.recipe import Recipe
from tests.fakeserver import FakeLLMServer
from tests.helpers import SEEDS, math_recipe, read_shards, write_recipe
from tests.scripts import _solve, install_math

UNREACHABLE = "http://127.0.0.1:9/v1"  # nothing listens: any call would fail loudly


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        install_math(fake)
        yield fake


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def solvable_conv_ids() -> set[str]:
    """The seeds the scripted policy can get right: it answers the sum of the first two
    numbers it reads (or that plus one), so only a problem whose answer is that sum."""
    ids = set()
    for i, line in enumerate(SEEDS.joinpath("math.jsonl").read_text(encoding="utf-8").splitlines()):
        problem = json.loads(line)["problem"]
        numbers = [int(n) for n in re.findall(r"\d+", problem)]
        if _solve(problem) == str(sum(numbers[:2])):
            ids.add(f"math-{i:06d}")
    return ids


def test_min_final_keeps_only_conversations_that_end_right(server, tmp_path):
    out = tmp_path / "out"
    plain = write_recipe(tmp_path / "plain.yaml", math_recipe(server.base_url, out))
    result = run_cli("run", str(plain))
    assert result.exit_code == 0, result.output
    everything = read_shards(out, "sft")
    final = {row["conv_id"]: row["final_metrics"]["accuracy"] for row in everything.iter_rows(named=True)}
    assert len(final) == 6  # no filter: every finished conversation
    right = {conv for conv, accuracy in final.items() if accuracy >= 0.5}
    assert right == solvable_conv_ids() and 0 < len(right) < len(final)  # some end right, some wrong
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert "sft_filtered" not in manifest["counts"] and "sft" not in manifest["recipe"]["output"]
    pairs, candidates = len(read_shards(out, "pairs")), len(read_shards(out, "candidates"))

    calls = len(server.calls)
    filtered = write_recipe(tmp_path / "filtered.yaml", math_recipe(
        server.base_url, out, **{"output.sft.min_final": {"accuracy": 0.5}}))
    result = run_cli("run", str(filtered))  # the same data: the rerun only rebuilds the shards
    assert result.exit_code == 0, result.output
    assert len(server.calls) == calls
    kept = read_shards(out, "sft")
    assert set(kept["conv_id"]) == right
    assert all(m["accuracy"] >= 0.5 for m in kept["final_metrics"])
    assert len(read_shards(out, "pairs")) == pairs and len(read_shards(out, "candidates")) == candidates
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["sft"] == len(right)
    assert manifest["counts"]["sft_filtered"] == len(final) - len(right)
    assert manifest["recipe"]["output"]["sft"] == {"min_final": {"accuracy": 0.5}}
    assert f"{len(final) - len(right)} below output.sft.min_final" in result.output


def yaml_line(path: Path, key: str) -> int:
    return next(i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if line.strip().startswith(f"{key}:"))


def test_unknown_or_uncomputed_metric_exits_2_with_file_and_line(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", math_recipe(
        UNREACHABLE, tmp_path / "out", **{"output.sft.min_final": {"acuracy": 0.5}}))
    result = run_cli("run", str(path))
    assert result.exit_code == 2
    assert (f"{path}:{yaml_line(path, 'acuracy')}: output.sft.min_final.acuracy: unknown metric for task 'math'"
            in result.output)
    assert "did you mean 'accuracy'" in result.output

    data = math_recipe(UNREACHABLE, tmp_path / "out", **{"output.sft.min_final": {"accuracy": 0.5}})
    del data["reward"]["weights"]["accuracy"]  # never computed: no row could pass
    path = write_recipe(tmp_path / "r.yaml", data)
    result = run_cli("plan", str(path))
    assert result.exit_code == 2
    assert f"{path}:{yaml_line(path, 'accuracy')}: output.sft.min_final.accuracy: metric 'accuracy' is not computed" \
        in result.output


def test_no_filter_leaves_the_recipe_dump_and_fingerprint_as_before(tmp_path):
    base = math_recipe(UNREACHABLE, tmp_path / "out")
    empty = yaml.safe_load(yaml.safe_dump(base))
    empty["output"]["sft"] = {"min_final": {}}
    plain, explicit = Recipe.from_dict(base), Recipe.from_dict(empty)
    assert "sft" not in plain.public_dump()["output"]
    assert plain.public_dump() == explicit.public_dump() and plain.fingerprint() == explicit.fingerprint()
    minimum = yaml.safe_load(yaml.safe_dump(base))
    minimum["output"]["sft"] = {"min_final": {"accuracy": float("nan")}}
    with pytest.raises(Exception, match="minimum of 'accuracy' must be a finite number"):
        Recipe.from_dict(minimum)
