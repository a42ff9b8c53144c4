"""`collabgen inspect` and `collabgen export` on real runs against the scripted server,
and loading every config of an out dir by name, as from the Hub."""

from __future__ import annotations

import json
import shutil
from itertools import combinations
from pathlib import Path

import datasets
import polars as pl
import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.output.rows import pairs_schema
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, write_recipe
from tests.scripts import JUDGE, install_math, never_parsable_judge

CONFIGS = ("pairs", "sft", "candidates")


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def read(out: Path, config: str) -> pl.DataFrame:
    return pl.read_parquet(sorted((out / config).glob("*.parquet")))


def make_run(base: Path, **overrides) -> Path:
    out = base / "out"
    with FakeLLMServer() as server:
        install_math(server)
        recipe = math_recipe(server.base_url, out, **overrides)
        result = run_cli("run", str(write_recipe(base / "math.yaml", recipe)))
        assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def four_candidates(tmp_path_factory) -> Path:
    """Six conversations, four candidates a turn: two proactive (same text), two plain answers."""
    return make_run(tmp_path_factory.mktemp("c4"), **{"generation.candidates": 4})


@pytest.fixture
def out(four_candidates, tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(four_candidates, copy)
    return copy


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


# --------------------------------------------------------------------------- loading


def load_config(out: Path, config: str, cache: Path) -> datasets.Dataset:
    """`load_dataset(out_dir, config)` with a private cache (see the stale-cache test below)."""
    return datasets.load_dataset(str(out), config, split="train", cache_dir=str(cache))


def test_every_config_loads_by_name_from_the_card(four_candidates, tmp_path):
    manifest = manifest_of(four_candidates)
    for config in CONFIGS:
        loaded = load_config(four_candidates, config, tmp_path / "cache")
        assert len(loaded) == manifest["counts"][config], config
    sft = load_config(four_candidates, "sft", tmp_path / "cache")
    assert {"messages", "conv_id", "task", "turns", "mean_score", "final_score", "final_metrics"} <= set(sft.column_names)
    assert sft[0]["messages"][-1]["role"] == "assistant"
    candidates = load_config(four_candidates, "candidates", tmp_path / "cache")
    row = candidates[0]
    assert {"prompt", "response", "score", "metrics", "chosen", "rejected", "futures"} <= set(row)
    assert len(row["futures"]) == 2 and row["futures"][0]["messages"][0]["role"] == "user"


def test_loading_by_config_reads_the_current_shards_not_a_cached_copy(four_candidates, tmp_path):
    first, second = tmp_path / "a" / "out", tmp_path / "b" / "out"
    shutil.copytree(four_candidates, first)
    shutil.copytree(four_candidates, second)
    assert run_cli("export", str(second), "--pairs-per-turn", "all").exit_code == 0
    cache = tmp_path / "cache"
    assert len(load_config(first, "pairs", cache)) == manifest_of(first)["counts"]["pairs"]
    assert len(load_config(second, "pairs", cache)) == manifest_of(second)["counts"]["pairs"]


# --------------------------------------------------------------------------- inspect


def test_inspect_shows_counts_histograms_metric_means_and_token_usage(four_candidates):
    result = run_cli("inspect", str(four_candidates))
    assert result.exit_code == 0, result.output
    text = result.output
    manifest = manifest_of(four_candidates)
    for heading in ("counts", "MR of pairs: chosen vs rejected", "MR gap (chosen - rejected)",
                    "metric means in pairs", "token usage by role", "failures: none"):
        assert heading in text, heading
    counts_line = next(line for line in text.splitlines() if line.strip("│ ").startswith("pairs "))
    assert f"{manifest['counts']['pairs']}" in counts_line
    for metric in ("accuracy", "interactivity", "token_penalty"):
        assert metric in text
    policy = manifest["usage"]["by_role"]["policy"]
    policy_line = next(line for line in text.splitlines() if line.strip("│ ").startswith("policy"))
    assert f"{policy['calls']:,}" in policy_line and f"{policy['prompt_tokens']:,}" in policy_line
    # The histograms count every pair once per side.
    pairs = manifest["counts"]["pairs"]
    histogram = text.split("MR of pairs: chosen vs rejected", 1)[1].split("MR gap", 1)[0]
    numbers = [int(token) for line in histogram.splitlines()[2:] for token in line.replace("█", " ").split()[2:]
               if token.isdigit()]
    assert sum(numbers) == 2 * pairs
    # Interactivity separates chosen from rejected in this script (proactive answers win).
    means = read(four_candidates, "pairs")["metrics_chosen"].struct.unnest()["interactivity"].mean()
    assert f"{means:.3f}" in text


def test_inspect_lists_failure_reasons_from_the_manifest(tmp_path):
    with FakeLLMServer() as server:
        install_math(server)
        server.set_script(JUDGE, never_parsable_judge)
        out = tmp_path / "out"
        recipe = math_recipe(server.base_url, out, **{"task.limit": 2})
        recipe["models"]["judge"]["parse_retries"] = 0
        assert run_cli("run", str(write_recipe(tmp_path / "r.yaml", recipe))).exit_code == 1
    result = run_cli("inspect", str(out))
    assert result.exit_code == 0, result.output
    assert "failures: 2 conversations" in result.output
    reason_line = next(line for line in result.output.splitlines() if "no parsable JSON" in line)
    assert "│ 2 " in reason_line or " 2 │" in reason_line


def test_inspect_conv_walks_each_turn_with_candidates_scores_and_futures(four_candidates):
    candidates = read(four_candidates, "candidates")
    conv_id = candidates["conv_id"][0]
    turns = candidates.filter(pl.col("conv_id") == conv_id)
    result = run_cli("inspect", str(four_candidates), "--conv", conv_id)
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"conversation {conv_id}" in text
    for turn in turns["turn"].unique().to_list():
        assert f"turn {turn}" in text
    for row in turns.iter_rows(named=True):
        assert f"{row['score']:.3f}" in text
    assert text.count("chosen #") == turns["turn"].n_unique()
    assert "rejected" in text and "a pair in pairs/" in text
    assert text.count("future 1/2") == turns.height
    assert "What is" in text  # the prompt tail


def test_inspect_unknown_conversation_exits_2_and_suggests_ids(four_candidates):
    result = run_cli("inspect", str(four_candidates), "--conv", "nope-1")
    assert result.exit_code == 2
    assert "no conversation 'nope-1'" in result.output and "math-000000" in result.output


def test_inspect_a_folder_without_manifest_exits_2(tmp_path):
    result = run_cli("inspect", str(tmp_path))
    assert result.exit_code == 2
    assert "manifest.json" in result.output


# --------------------------------------------------------------------------- export


def reference_pairs(out: Path, min_gap: float, top_k: int | None, mode: str) -> set[tuple]:
    """Independent brute force over candidates/: (conv, turn, chosen#, rejected#) of expected pairs."""
    expected = set()
    for (conv, turn), group in read(out, "candidates").group_by("conv_id", "turn"):
        rows = sorted(group.iter_rows(named=True), key=lambda c: (-c["score"], c["candidate"]))
        k = top_k or (1 if mode == "best-worst" else len(rows))
        combos = [(c, rows[-1]) for c in rows[:k]] if mode == "best-worst" else [
            (a, b) for a, b in combinations(rows, 2) if rows.index(a) < k
        ]
        seen = set()
        for a, b in combos:
            key = (a["response"], b["response"])
            if a is b or key[0] == key[1] or key in seen or a["score"] - b["score"] < min_gap:
                continue
            seen.add(key)
            expected.add((conv, turn, a["response"], b["response"], a["score"], b["score"]))
    return expected


def as_set(pairs: pl.DataFrame) -> set[tuple]:
    return {
        (r["conv_id"], r["turn"], r["chosen"][0]["content"], r["rejected"][0]["content"], r["score_chosen"],
         r["score_rejected"])
        for r in pairs.iter_rows(named=True)
    }


def test_export_with_the_recipe_min_gap_reproduces_the_run_pairs(out, tmp_path):
    dest = tmp_path / "exported"
    result = run_cli("export", str(out), "--to", str(dest))
    assert result.exit_code == 0, result.output
    assert read(dest, "pairs").equals(read(out, "pairs"))
    for config in ("sft", "candidates"):
        for source in sorted((out / config).glob("*.parquet")):
            assert (dest / config / source.name).read_bytes() == source.read_bytes()
    assert not (dest / ".collabgen").exists()
    assert manifest_of(dest)["counts"] == manifest_of(out)["counts"]
    assert len(load_config(dest, "pairs", tmp_path / "cache")) == manifest_of(out)["counts"]["pairs"]


def test_export_min_gap_rewrites_pairs_in_place_and_updates_manifest_and_card(out):
    before = read(out, "pairs")
    gaps = sorted(set((before["score_chosen"] - before["score_rejected"]).round(6).to_list()))
    assert len(gaps) >= 2, gaps
    threshold = (gaps[0] + gaps[1]) / 2
    result = run_cli("export", str(out), "--min-gap", str(threshold))
    assert result.exit_code == 0, result.output
    after = read(out, "pairs")
    assert 0 < after.height < before.height
    assert ((after["score_chosen"] - after["score_rejected"]) >= threshold).all()
    assert as_set(after) == reference_pairs(out, threshold, None, "best-worst")
    assert after.schema == pairs_schema(["accuracy", "interactivity", "token_penalty"])
    manifest = manifest_of(out)
    assert manifest["counts"]["pairs"] == after.height
    assert manifest["files"]["pairs"] == [f"pairs/{p.name}" for p in sorted((out / "pairs").glob("*.parquet"))]
    assert manifest["export"]["min_gap"] == threshold
    assert not list(out.rglob("*.tmp"))
    card = (out / "README.md").read_text()
    assert f"| `pairs` (default) | {after.height} |" in card
    assert "## Export" in card and str(threshold) in card
    # The journal is untouched: sft and candidates are the run's own.
    assert (out / ".collabgen" / "journal.jsonl").is_file()


@pytest.mark.parametrize(
    ("mode", "top_k"), [("best-worst", 2), ("best-worst", 3), ("all", None), ("all", 1), ("all", 2)]
)
def test_export_top_k_and_all_pairs_follow_the_documented_selection(out, tmp_path, mode, top_k):
    dest = tmp_path / f"{mode}-{top_k}"
    args = ["export", str(out), "--to", str(dest), "--pairs-per-turn", mode, "--min-gap", "0.02"]
    if top_k:
        args += ["--top-k", str(top_k)]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    pairs = read(dest, "pairs")
    assert as_set(pairs) == reference_pairs(out, 0.02, top_k, mode)
    assert pairs.height == len(as_set(pairs))  # no duplicate pair within a turn
    assert (pairs["score_chosen"] - pairs["score_rejected"] >= 0.02).all()
    for row in pairs.iter_rows(named=True):
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
        assert row["prompt"][-1]["role"] == "user"
    assert manifest_of(dest)["counts"]["pairs"] == pairs.height
    assert manifest_of(dest)["export"]["pairs_per_turn"] == mode


def test_export_wider_selections_give_more_pairs_than_best_worst(out, tmp_path):
    base = read(out, "pairs").height
    assert run_cli("export", str(out), "--to", str(tmp_path / "a"), "--pairs-per-turn", "all").exit_code == 0
    assert run_cli("export", str(out), "--to", str(tmp_path / "k"), "--top-k", "3").exit_code == 0
    assert read(tmp_path / "a", "pairs").height > read(tmp_path / "k", "pairs").height > base


def test_export_refuses_a_non_empty_destination_and_bad_options(out, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("keep me")
    result = run_cli("export", str(out), "--to", str(busy))
    assert result.exit_code == 2 and "not empty" in result.output
    assert (busy / "x.txt").read_text() == "keep me"
    assert run_cli("export", str(out), "--pairs-per-turn", "some").exit_code == 2
    assert run_cli("export", str(out), "--top-k", "0").exit_code == 2
    assert run_cli("export", str(out), "--min-gap", "-1").exit_code == 2
    assert run_cli("export", str(tmp_path / "nothing")).exit_code == 2


def test_inspect_says_unknown_for_a_role_without_prices_as_the_run_summary_does(tmp_path):
    with FakeLLMServer() as server:
        install_math(server)
        recipe = math_recipe(server.base_url, tmp_path / "out", **{"task.limit": 1, "generation.max_turns": 1})
        recipe["models"]["policy"]["prices"] = {"input": 1.0, "output": 2.0}
        result = run_cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)))
        assert result.exit_code == 0, result.output
    assert "user unknown (no prices)" in result.output and "judge unknown (no prices)" in result.output
    shown = run_cli("inspect", str(tmp_path / "out"))
    assert shown.exit_code == 0, shown.output
    rows = {line.split("│")[1].strip(): line.split("│")[-2].strip()
            for line in shown.output.splitlines() if line.count("│") > 3}
    assert rows["user"] == rows["judge"] == "unknown", rows
    assert rows["policy"] != "unknown" and float(rows["policy"]) > 0
    assert rows["total"] == f"{rows['policy']} + unknown"
