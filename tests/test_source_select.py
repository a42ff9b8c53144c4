"""`task.source.select`: the seed sets built as the reference builds them, from files the tests write.

The reference's procedures are re-implemented here from its dataset code (examples/
single_turn_ds: BigCodeBench's seeded 80/20 split, Medium's newest articles with a test
part taken first, then a 512-token cap) and compared row for row with the selection.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from collabgen.app.context import prepare
from collabgen.app.generate import run_async
from collabgen.config.errors import RecipeError, SeedError
from collabgen.config.recipe import Recipe, SelectConfig, SourceConfig, TaskConfig
from collabgen.engine.evaluation import eval_task_config
from collabgen.engine.seeds import iter_seeds
from collabgen.engine.source_select import SelectionStats, select_rows
from collabgen.tasks.math import MathTask
from collabgen.tasks.recipe_check import load_recipe
from collabgen.tasks.reference_metrics import cl100k_tokens
from tests.helpers import math_recipe
from tests.scripted_backend import ScriptedBackend

UNUSED = "http://127.0.0.1:9/v1"


def rows_of(items: list[dict]) -> list[tuple[str, dict]]:
    return [(f"mem:{i}", dict(row)) for i, row in enumerate(items)]


def select(items: list[dict], stats: SelectionStats | None = None, **config) -> list[dict]:
    rows = rows_of(items)
    return [row for _, row in select_rows(lambda: iter(rows), SelectConfig(**config), stats)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_where_keeps_equal_values_and_lists_of_accepted_values():
    items = [{"id": i, "level": f"Level {i % 5 + 1}", "type": "Algebra" if i % 2 else "Geometry"} for i in range(20)]
    stats = SelectionStats()
    kept = select(items, stats, where={"level": "Level 5", "type": ["Algebra", "Number Theory"]})
    assert [r["id"] for r in kept] == [i for i in range(20) if i % 5 == 4 and i % 2]
    assert stats.to_dict() == {"rows_read": 20, "rows_selected": len(kept), "rows_skipped": {"where": 20 - len(kept)}}


def test_a_where_column_the_rows_lack_is_named_with_the_row():
    with pytest.raises(SeedError, match=r"mem:0: task.source.select.where: column 'levle' is missing"):
        select([{"level": "Level 5"}], where={"levle": "Level 5"})


def reference_medium(items: list[dict], train_ratio: float, test_ratio: float, seed: int) -> dict[str, list[dict]]:
    """examples/single_turn_ds/medium.py's split, before its token cap."""
    full = [row for row in items if row.get("timestamp") is not None]
    full.sort(key=lambda x: x["timestamp"])
    n_test, n_train = int(len(full) * test_ratio), int(len(full) * train_ratio)
    recent = full[-(n_train + n_test):]
    random.Random(seed).shuffle(recent)
    return {"test": recent[:n_test], "train": recent[n_test:]}


def medium_items(n: int) -> list[dict]:
    rng = random.Random(7)
    stamps = [f"2021-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}" for _ in range(n)]  # many ties
    items = [{"id": i, "timestamp": stamps[i], "text": "word " * rng.randint(10, 900)} for i in range(n)]
    for i in range(0, n, 37):
        items[i]["timestamp"] = None
    return items


@pytest.mark.parametrize("part", ["train", "test"])
def test_newest_rows_and_a_test_first_split_are_the_references(part):
    items = medium_items(1000)
    expected = reference_medium(items, 0.2, 0.05, seed=42)
    n_test, n_train = len(expected["test"]), len(expected["train"])
    # The reference counts both parts from the whole set; the same counts as a train fraction
    # (in a recipe, 0.8 gives them up to one row of rounding).
    fraction = (n_train + 0.5) / (n_train + n_test)
    stats = SelectionStats()
    kept = select(items, stats, sort_by="timestamp", top=n_train + n_test,
                  split={"seed": 42, "train_fraction": fraction, "part": part, "test_first": True})
    expected = expected[part]
    assert sorted(r["id"] for r in kept) == sorted(r["id"] for r in expected)
    # Newest first, ties keeping the later row first (the reverse of a stable ascending sort).
    keys = [(r["timestamp"], r["id"]) for r in kept]
    assert keys == sorted(keys, reverse=True)
    assert stats.skipped["no_sort_key"] == sum(1 for r in items if r["timestamp"] is None)
    assert stats.skipped["not_top"] == 1000 - stats.skipped["no_sort_key"] - n_train - n_test
    assert stats.skipped["other_part"] == (n_test if part == "train" else n_train)


def reference_medium_parts(items: list[dict]) -> dict[str, set[int]]:
    """examples/single_turn_ds/medium.py's counts, inline: int(N * 0.005) test and
    int(N * 0.02) train rows of all N articles with a timestamp, the newest, shuffled with
    random.Random(42), the test part first."""
    full = sorted((row for row in items if row["timestamp"] is not None), key=lambda x: x["timestamp"])
    n_test, n_train = int(len(full) * 0.005), int(len(full) * 0.02)
    recent = full[len(full) - (n_train + n_test):]
    random.Random(42).shuffle(recent)
    return {"test": {r["id"] for r in recent[:n_test]}, "train": {r["id"] for r in recent[n_test:]}}


MEDIUM_PARTS = {"sort_by": "timestamp", "top_parts": {"train": 0.02, "test": 0.005}}


def medium_parts(items: list[dict], part: str, stats: SelectionStats | None = None) -> list[dict]:
    return select(items, stats, **MEDIUM_PARTS, split={"seed": 42, "part": part, "test_first": True})


def test_top_parts_keeps_the_references_medium_rows_for_the_dumps_size():
    n = 192368  # fabiochiu/medium-articles: int(0.025 N) = 4809, the reference keeps 3847 + 961
    items = [{"id": i, "timestamp": f"2020-{i % 12 + 1:02d}-{i * 7919 % 28 + 1:02d}"} for i in range(n)]
    expected = reference_medium_parts(items)
    stats = SelectionStats()
    kept = {part: {r["id"] for r in medium_parts(items, part, stats if part == "test" else None)}
            for part in ("train", "test")}
    assert (len(kept["train"]), len(kept["test"])) == (int(0.02 * n), int(0.005 * n)) == (3847, 961)
    assert kept == expected
    assert stats.skipped == {"not_top": n - 3847 - 961, "other_part": 3847}


def test_top_parts_counts_each_part_on_its_own_for_small_sizes():
    differs = 0
    for n in range(1, 700, 3):
        items = medium_items(n)
        with_key = sum(1 for r in items if r["timestamp"] is not None)
        expected = reference_medium_parts(items)
        kept = {part: {r["id"] for r in medium_parts(items, part)} for part in ("train", "test")}
        assert len(kept["train"]) + len(kept["test"]) == int(0.02 * with_key) + int(0.005 * with_key)
        assert kept == expected, n
        whole = select(items, **MEDIUM_PARTS)  # no split: both parts, newest first
        assert {r["id"] for r in whole} == expected["train"] | expected["test"]
        differs += int(0.025 * with_key) != len(whole)
    assert differs  # one share of 2.5% keeps another count for some of these sizes


@pytest.mark.parametrize(("select_config", "message"), [
    ({**MEDIUM_PARTS, "split": {"seed": 42, "train_fraction": 0.8}}, "size the split once"),
    ({"sort_by": "timestamp", "top_fraction": 0.025, "split": {"seed": 42}}, "size the split once"),
    ({"split": {"seed": 42}}, "size the split once"),
    ({"sort_by": "timestamp", "top_parts": {"train": 0.9, "test": 0.2}}, "at most 1"),
    ({"sort_by": "timestamp", "top_fraction": 0.02, "top_parts": {"train": 0.02, "test": 0.005}}, "exactly one of"),
    ({"top_parts": {"train": 0.02, "test": 0.005}}, "give `sort_by`"),
])
def test_a_split_is_sized_once_and_top_parts_are_shares(select_config, message):
    with pytest.raises(ValueError, match=message):
        SelectConfig(**select_config)


def test_top_parts_leave_the_dumps_of_recipes_without_them_unchanged():
    config = SelectConfig(sort_by="t", top_fraction=0.025, split={"seed": 42, "train_fraction": 0.8})
    assert "top_parts" not in config.model_dump() and config.model_dump()["split"]["train_fraction"] == 0.8
    assert "train_fraction" not in SelectConfig(**MEDIUM_PARTS, split={"seed": 42}).model_dump()["split"]


def test_top_fraction_counts_first_then_keeps_that_share():
    items = medium_items(1000)
    with_key = sum(1 for r in items if r["timestamp"] is not None)
    kept = select(items, sort_by="timestamp", top_fraction=0.1, descending=False)
    assert len(kept) == int(with_key * 0.1)
    keys = [(r["timestamp"], r["id"]) for r in kept]
    assert keys == sorted(keys) and keys[-1] <= min((r["timestamp"], r["id"]) for r in items
                                                    if r["timestamp"] is not None and r not in kept)


def test_a_seeded_split_without_sort_is_bigcodebenchs():
    items = [{"task_id": f"BigCodeBench/{i}"} for i in range(1140)]
    random.seed(42)  # examples/single_turn_ds/bigcodebench.py
    indices = list(range(len(items)))
    random.shuffle(indices)
    n_train = int(len(items) * 0.8)
    train = {items[i]["task_id"] for i in indices[:n_train]}
    chosen = select(items, split={"seed": 42, "train_fraction": 0.8, "part": "train"})
    held_out = select(items, split={"seed": 42, "train_fraction": 0.8, "part": "test"})
    assert {r["task_id"] for r in chosen} == train
    assert {r["task_id"] for r in held_out} == {r["task_id"] for r in items} - train
    assert [r["task_id"] for r in chosen] == [r["task_id"] for r in items if r["task_id"] in train]  # source order


def test_too_long_rows_are_skipped_and_counted():
    items = [{"id": 0, "text": "short text"}, {"id": 1, "text": "word " * 600}, {"id": 2, "text": "also short"}]
    stats = SelectionStats()
    kept = select(items, stats, max_tokens={"column": "text", "limit": 512})
    assert [r["id"] for r in kept] == [0, 2] and stats.skipped == {"too_long": 1}
    assert cl100k_tokens(items[1]["text"]) > 512
    with pytest.raises(SeedError, match="max_tokens: column 'body' is missing"):
        select(items, max_tokens={"column": "body", "limit": 512})


def test_sort_values_that_do_not_compare_are_an_error_naming_the_rows():
    with pytest.raises(SeedError, match="sort_by: column 'timestamp'"):
        select([{"timestamp": "2021-01-01"}, {"timestamp": 5}], sort_by="timestamp", top=1)


def test_only_the_top_rows_are_held(monkeypatch):
    """A million-row stream through a top-10 selection: the heap never holds more than 10."""
    import heapq

    sizes = []
    push = heapq.heappush

    def counting_push(heap, item):
        push(heap, item)
        sizes.append(len(heap))

    monkeypatch.setattr(heapq, "heappush", counting_push)

    def stream():
        for i in range(200_000):
            yield f"gen:{i}", {"stamp": (i * 7919) % 100_003}

    kept = list(select_rows(stream, SelectConfig(sort_by="stamp", top=10)))
    assert len(kept) == 10 and max(sizes) == 10
    assert [row["stamp"] for _, row in kept] == sorted(((i * 7919) % 100_003 for i in range(200_000)), reverse=True)[:10]


@pytest.mark.parametrize(("config", "message"), [
    ({"sort_by": "timestamp"}, "exactly one of `top`"),
    ({"top": 5}, "give `sort_by`"),
    ({"sort_by": "t", "top": 5, "top_fraction": 0.5}, "exactly one of `top`"),
    ({"split": {"seed": 0, "train_fraction": 1.5}}, "train_fraction"),
])
def test_bad_selections_are_refused_naming_the_field(tmp_path, config, message):
    recipe = math_recipe(UNUSED, tmp_path / "out", **{"task.source.select": config})
    with pytest.raises(RecipeError, match=message) as err:
        Recipe.from_dict(recipe)
    assert "task.source.select" in str(err.value)


def test_a_recipe_without_select_keeps_its_fingerprint_shape(tmp_path):
    recipe = Recipe.from_dict(math_recipe(UNUSED, tmp_path / "out"))
    assert "select" not in recipe.semantic()["task"]["source"]
    selecting = Recipe.from_dict(math_recipe(UNUSED, tmp_path / "out", **{"task.source.select": {"where": {"a": 1}}}))
    assert selecting.fingerprint() != recipe.fingerprint()


def math_rows(n: int) -> list[dict]:
    return [{"problem": f"What is {i} + {i}?", "solution": f"It is $\\boxed{{{2 * i}}}$.",
             "level": "Level 5" if i % 3 else "Level 2"} for i in range(n)]


def test_eval_takes_the_other_part_of_the_split(tmp_path):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", math_rows(30))
    data = math_recipe(UNUSED, tmp_path / "out", **{
        "task.source": {"path": str(seeds), "select": {"split": {"seed": 3, "train_fraction": 0.7}}},
        "eval": {"limit": None},
    })
    recipe = load_recipe(data)
    task = MathTask()
    train = {s.problem for _, s in iter_seeds(task, recipe.task)}
    test = {s.problem for _, s in iter_seeds(task, eval_task_config(recipe))}
    assert len(train) == 21 and len(test) == 9 and not train & test


def test_eval_takes_the_test_part_top_parts_sizes(tmp_path):
    items = medium_items(900)
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{**r, "problem": f"p{r['id']}", "solution": "$\\boxed{1}$"}
                                                   for r in items])
    select_config = {**MEDIUM_PARTS, "top_parts": {"train": 0.2, "test": 0.05},
                     "split": {"seed": 42, "part": "train", "test_first": True}}
    data = math_recipe(UNUSED, tmp_path / "out", **{"task.source": {"path": str(seeds), "select": select_config},
                                                     "eval": {"limit": None}})
    recipe = load_recipe(data)
    train = {s.problem for _, s in iter_seeds(MathTask(), recipe.task)}
    test = {s.problem for _, s in iter_seeds(MathTask(), eval_task_config(recipe))}
    with_key = sum(1 for r in items if r["timestamp"] is not None)
    assert (len(train), len(test)) == (int(with_key * 0.2), int(with_key * 0.05)) and not train & test


def test_a_run_skips_too_long_rows_counts_them_and_finishes(tmp_path):
    rows = math_rows(9)
    rows[4]["problem"] = "What is " + "1 + " * 400 + "1?"  # well over 64 tokens
    seeds = write_jsonl(tmp_path / "seeds.jsonl", rows)
    data = math_recipe(UNUSED, tmp_path / "out", **{
        "task.source": {"path": str(seeds), "select": {"where": {"level": "Level 5"},
                                                       "max_tokens": {"column": "problem", "limit": 64}}},
        "generation.max_turns": 1,
    })
    recipe = load_recipe(data)
    setup = prepare(recipe, check_keys=False)
    assert setup.seeds == 5 and setup.selection is not None
    base = ScriptedBackend("judge").on("interactivity", json.dumps({"thought": "t", "interactivity": 0.5}))
    base.on("extraction", json.dumps({"answer": ""}))
    backends = {role: base.for_role(role) for role in ("policy", "user", "judge")}
    report = asyncio.run(run_async(recipe, backends=backends, progress=False))
    assert report.exit_code == 0 and report.ok == 5
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["seeds"] == 5
    assert manifest["source_selection"] == {"rows_read": 9, "rows_selected": 5,
                                           "rows_skipped": {"too_long": 1, "where": 3}}


def test_a_selecting_source_config_round_trips():
    source = SourceConfig(path=Path("x.jsonl"), select={"where": {"level": "Level 5"}, "sort_by": "t", "top": 3})
    config = TaskConfig(type="math", source=source)
    assert config.source.select is not None and config.source.select.top == 3


def paper_medium(items: list[dict]) -> dict[str, set[int]]:
    """The paper-era code's Medium split (Wuyxin/collabllm, review branch,
    collabllm/datasets/medium.py:55-63), inline: no shuffle; the newest int(N * 0.005)
    articles are test and the int(N * 0.02) before them train."""
    full = sorted((row for row in items if row["timestamp"] is not None), key=lambda x: x["timestamp"])
    n_test, n_train = int(len(full) * 0.005), int(len(full) * 0.02)
    return {"test": {r["id"] for r in full[-n_test:]} if n_test else set(),
            "train": {r["id"] for r in full[-n_test - n_train:len(full) - n_test]}}


def test_an_unshuffled_split_is_the_paper_era_chronological_medium_split():
    checked = 0
    for n in range(200, 1400, 97):
        items = medium_items(n)
        expected = paper_medium(items)
        kept = {part: {r["id"] for r in select(items, **MEDIUM_PARTS, split={"part": part, "shuffle": "none"})}
                for part in ("train", "test")}
        assert kept == expected, n
        checked += bool(expected["test"])
    assert checked
    # Not the reference's shuffled split: the test part is the newest rows.
    newest = select(medium_items(1000), **MEDIUM_PARTS, split={"part": "test", "shuffle": "none"})
    rest = select(medium_items(1000), **MEDIUM_PARTS, split={"part": "train", "shuffle": "none"})
    assert min(r["timestamp"] for r in newest) >= max(r["timestamp"] for r in rest)


def test_a_label_shuffled_split_is_the_paper_era_bigcodebench_split():
    items = [{"task_id": f"BigCodeBench/{i}"} for i in range(1140)]
    # collabllm/datasets/bigcodebench.py:35-39 (review branch): the labels are shuffled.
    splits = ["train"] * int(len(items) * 0.8) + ["test"] * (len(items) - int(len(items) * 0.8))
    random.seed(42)
    random.shuffle(splits)
    expected = {part: {r["task_id"] for r, s in zip(items, splits) if s == part} for part in ("train", "test")}
    kept = {part: {r["task_id"] for r in select(items, split={"seed": 42, "train_fraction": 0.8, "part": part,
                                                                "shuffle": "labels"})}
            for part in ("train", "test")}
    assert kept == expected
    positions = {r["task_id"] for r in select(items, split={"seed": 42, "train_fraction": 0.8, "part": "train"})}
    assert positions != expected["train"]  # the reference's split (positions shuffled) is another one


def test_the_split_shuffle_is_left_out_of_dumps_at_its_default():
    assert "shuffle" not in SelectConfig(split={"seed": 42, "train_fraction": 0.8}).model_dump()["split"]
    assert SelectConfig(split={"seed": 42, "train_fraction": 0.8, "shuffle": "labels"}).model_dump()["split"][
        "shuffle"] == "labels"
