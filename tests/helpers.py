"""Helpers shared by tests: writing recipes that point every role at the fake server."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.scripts import JUDGE, POLICY, USER

SEEDS = Path(__file__).parent / "seeds"


def math_recipe(base_url: str, out_dir: Path, **overrides: Any) -> dict[str, Any]:
    role = {"backend": "openai", "base_url": base_url, "max_retries": 6, "timeout": 10}
    recipe: dict[str, Any] = {
        "task": {"type": "math", "source": {"path": str(SEEDS / "math.jsonl")}},
        "models": {
            "policy": {**role, "model": POLICY},
            "user": {**role, "model": USER},
            "judge": {**role, "model": JUDGE},
        },
        "generation": {"candidates": 2, "futures": 2, "window": 4, "max_turns": 3, "min_gap": 0.02, "conversations": 4},
        "reward": {"weights": {"accuracy": 1.0, "interactivity": 0.5, "token_penalty": 1.0},
                   "token_penalty": {"lambda": 5.0e-4, "cap": 1.0}},
        "output": {"dir": str(out_dir), "rows_per_shard": 10},
    }
    return apply_overrides(recipe, overrides)


def apply_overrides(recipe: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set `{"generation.max_turns": 2, ...}` style dotted keys in a recipe dict."""
    for dotted, value in overrides.items():
        node = recipe
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return recipe


def write_recipe(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def recipe_from_file(name: str, base_url: str, out_dir: Path, seeds: Path, **overrides: Any) -> dict[str, Any]:
    """A shipped recipe (`recipes/<name>.yaml`) with local seeds and every role on the fake
    server: task options, field mapping, search shape and rewards stay as shipped."""
    recipe = yaml.safe_load((RECIPES / f"{name}.yaml").read_text(encoding="utf-8"))
    recipe["task"]["source"] = {"path": str(seeds), "fields": recipe["task"]["source"].get("fields", {})}
    role = {"backend": "openai", "base_url": base_url, "max_retries": 6, "timeout": 10}
    for name_, model in (("policy", POLICY), ("user", USER), ("judge", JUDGE)):
        shipped = recipe["models"][name_]
        recipe["models"][name_] = {
            **role, "model": model, "temperature": shipped.get("temperature"), "max_tokens": shipped.get("max_tokens"),
        }
    recipe["output"] = {"dir": str(out_dir), "rows_per_shard": 10}
    return apply_overrides(recipe, overrides)


def read_shards(out_dir: Path, config: str):
    """Every shard of one config (`pairs`, `sft`, `candidates`) as one frame."""
    import polars as pl

    return pl.read_parquet(sorted((out_dir / config).glob("*.parquet")))


def by_turn(candidates) -> dict[tuple[str, int], dict[bool, dict[str, Any]]]:
    """Candidate rows keyed by (conv_id, turn), then by whether they were sampled proactively."""
    table: dict[tuple[str, int], dict[bool, dict[str, Any]]] = {}
    for row in candidates.iter_rows(named=True):
        table.setdefault((row["conv_id"], row["turn"]), {})[row["proactive"]] = row
    return table


@contextlib.contextmanager
def datasets_warnings() -> Iterator[list[str]]:
    """The warnings `datasets` logs inside the block (its logger does not propagate to
    pytest's caplog), e.g. a card's `dataset_info` it ignores."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("datasets")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
