"""manifest.json: what was made, from what, at what cost; never a secret."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

import collabgen
from collabgen.config.errors import CollabgenError
from collabgen.config.recipe import Recipe
from collabgen.engine.journal import JournalIndex
from collabgen.models.usage import UsageBook
from collabgen.output.finalize import Written

_PACKAGES = ("openai", "anthropic", "polars", "pyarrow", "datasets", "pydantic", "math-verify", "sacrebleu")


def package_versions() -> dict[str, str]:
    versions = {"collabgen": collabgen.__version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def cost(usage: UsageBook, recipe: Recipe) -> dict[str, float] | None:
    """Dollars per role from the recipe's optional per-model prices."""
    out: dict[str, float] = {}
    for role, tally in usage.by_role().items():
        prices = recipe.models.roles()[role].prices if role in recipe.models.roles() else None
        if prices is not None:
            out[role] = (tally.prompt_tokens * prices.input + tally.completion_tokens * prices.output) / 1e6
    return out or None


def build_manifest(
    recipe: Recipe, index: JournalIndex, written: Written, run_usage: UsageBook, seeds_total: int,
    elapsed_seconds: float, prefix_share: dict[str, float] | None = None,
) -> dict[str, Any]:
    ends = index.ends
    failures = [
        {"conv_id": end.conv_id, "reason": end.reason} for _, end in sorted(ends.items()) if end.status != "ok"
    ]
    ok = sum(1 for end in ends.values() if end.status == "ok")
    data_usage = written.usage
    return {
        "collabgen_version": collabgen.__version__,
        "recipe_fingerprint": recipe.fingerprint(),
        "task": recipe.task.type,
        "counts": {
            "seeds": seeds_total,
            "conversations_ok": ok,
            "conversations_failed": len(failures),
            "conversations_unfinished": max(seeds_total - ok - len(failures), 0),
            "turns": written.turns,
            "pairs": written.pairs,
            "sft": written.sft,
            "candidates": written.candidates,
        },
        "failures": failures,
        "usage": {
            "by_role": {role: vars(t) for role, t in data_usage.by_role().items()},
            "by_stage": data_usage.to_dict(),
            "calls_per_conversation": (
                round((data_usage.total().calls + data_usage.total().cached_calls) / ok, 2) if ok else None
            ),
        },
        "this_run": {
            "by_role": {role: vars(t) for role, t in run_usage.by_role().items()},
            "elapsed_seconds": round(elapsed_seconds, 3),
            "prefix_share": {role: round(share, 4) for role, share in (prefix_share or {}).items()},
        },
        "cost_usd": cost(data_usage, recipe),
        "files": written.files,
        "recipe": recipe.public_dump(),
        "versions": package_versions(),
    }


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """An out dir's manifest, or an error saying this is not a collabgen out dir."""
    if not out_dir.is_dir():
        raise CollabgenError(f"{out_dir}: no such directory")
    path = out_dir / "manifest.json"
    if not path.is_file():
        raise CollabgenError(
            f"{out_dir} is not a collabgen output: it has no manifest.json "
            "(run `collabgen run RECIPE` first, and pass the recipe's output.dir)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise CollabgenError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or "counts" not in manifest:
        raise CollabgenError(f"{path}: not a collabgen manifest (no counts)")
    return manifest


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def write_json_atomic(path: Path, data: Any, secrets: list[str]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(scrub(json.dumps(data, indent=2, ensure_ascii=False, default=str), secrets) + "\n", encoding="utf-8")
    os.replace(temp, path)
