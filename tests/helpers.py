"""Helpers shared by tests: writing recipes that point every role at the fake server."""

from __future__ import annotations

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
