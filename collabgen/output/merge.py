"""Joining slices (array jobs, Ray tasks) into one manifest and card.

Each slice wrote its own shards into the shared folders and its manifest under
`.collabgen/slices/i-of-n/`; merging adds the counts and usage up, lists every shard,
and writes the top-level `manifest.json` and `README.md`. Shards are not rewritten.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from collabgen.config.errors import CollabgenError
from collabgen.config.recipe import Recipe
from collabgen.engine.slices import STATE_DIR
from collabgen.models.registry import secret_values
from collabgen.models.usage import UsageBook
from collabgen.output.card import write_card
from collabgen.output.finalize import CONFIGS
from collabgen.output.manifest import cost, package_versions, write_json_atomic
from collabgen.tasks.registry import resolve_task


def merge_outputs(out_dir: Path) -> dict[str, Any]:
    files = sorted((out_dir / STATE_DIR / "slices").glob("*/manifest.json"))
    if not files:
        raise CollabgenError(f"{out_dir}: no slice manifests under {STATE_DIR}/slices/; run with --shard i/n first")
    parts = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    fingerprints = {p["recipe_fingerprint"] for p in parts}
    if len(fingerprints) != 1:
        raise CollabgenError(f"{out_dir}: slices come from different recipes ({', '.join(sorted(fingerprints))})")
    totals = {int(p["slice"].split("/")[1]) for p in parts}
    if len(totals) != 1:
        raise CollabgenError(f"{out_dir}: slices were cut in different ways ({sorted(totals)} parts)")
    count = totals.pop()
    present = sorted(int(p["slice"].split("/")[0]) for p in parts)
    recipe = Recipe.from_dict(parts[0]["recipe"])
    counts: dict[str, int] = defaultdict(int)
    usage = UsageBook()
    for part in parts:
        for key, value in part["counts"].items():
            counts[key] += value
        usage.merge(UsageBook.from_dict(part["usage"]["by_stage"]))
    ok = counts["conversations_ok"]
    total = usage.total()
    manifest = {
        **{k: parts[0][k] for k in ("collabgen_version", "recipe_fingerprint", "task")},
        "counts": dict(counts),
        "failures": [f for p in parts for f in p["failures"]],
        "usage": {
            "by_role": {role: vars(t) for role, t in usage.by_role().items()},
            "by_stage": usage.to_dict(),
            "calls_per_conversation": round((total.calls + total.cached_calls) / ok, 2) if ok else None,
        },
        "cost_usd": cost(usage, recipe),
        "slices": {"count": count, "present": present, "missing": sorted(set(range(count)) - set(present))},
        "files": {name: sorted(str(p.relative_to(out_dir)) for p in (out_dir / name).glob("*.parquet"))
                  for name in CONFIGS},
        "recipe": parts[0]["recipe"],
        "versions": package_versions(),
    }
    secrets = secret_values(recipe)
    write_json_atomic(out_dir / "manifest.json", manifest, secrets)
    task = resolve_task(recipe.task.type)(recipe.task.options)
    write_card(out_dir, recipe, task, manifest, secrets)
    return manifest
