"""`collabgen export`: a new selection of DPO pairs from `candidates/`, without any model call.

Every candidate of every turn is already scored (its MR and metric means are in
`candidates/`), so a different pair selection is a pure re-read. Per turn, candidates
are ranked by MR (the run's own chosen candidate first and rejected one last, so ties
break exactly as the engine broke them), then:

- `best-worst` (default): each of the top K candidates (K=1 by default) against the worst;
- `all`: each of the top K candidates (K = all by default) against every candidate
  ranked below it.

A pair is kept when `score_chosen - score_rejected >= min_gap` (default: the recipe's
`generation.min_gap`, so a plain export reproduces the run's pairs) and the two texts
differ; within a turn, a (chosen text, rejected text) combination is kept once.

`sft/` and `candidates/` do not depend on the pair selection: they stay as they are
(copied when exporting to a new folder). The manifest's pair counts and the card are
rewritten; `.collabgen/` (journal, cache) is never copied, and a later `collabgen run`
in the same folder rebuilds pairs from the journal with the recipe's selection.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from collabgen.config.errors import CollabgenError
from collabgen.output.manifest import read_manifest
from collabgen.output.rows import pairs_schema
from collabgen.output.shards import ShardWriter

PairsPerTurn = Literal["best-worst", "all"]
CONFIGS = ("pairs", "sft", "candidates")
_COLUMNS = ["conv_id", "turn", "candidate", "task", "prompt", "response", "proactive", "score", "metrics",
            "chosen", "rejected"]
_DEFAULT_ROWS_PER_SHARD = 5000


class ExportError(CollabgenError):
    """Bad input to an export: not a collabgen out dir, no candidates, a bad option."""


@dataclass
class Selection:
    min_gap: float
    pairs_per_turn: PairsPerTurn = "best-worst"
    top_k: int | None = None

    def describe(self) -> str:
        k = self.top_k or (1 if self.pairs_per_turn == "best-worst" else None)
        chosen = "the best candidate" if k == 1 else ("every candidate" if k is None else f"each of the top {k}")
        against = "the worst" if self.pairs_per_turn == "best-worst" else "every candidate ranked below it"
        return f"{chosen} of a turn against {against}, kept when the MR gap is at least {self.min_gap}"


@dataclass
class ExportReport:
    out_dir: Path
    pairs_before: int | None
    pairs: int
    turns: int
    files: list[str]
    selection: Selection
    card_rewritten: bool


def export(
    out_dir: Path,
    *,
    to: Path | None = None,
    min_gap: float | None = None,
    top_k: int | None = None,
    pairs_per_turn: PairsPerTurn = "best-worst",
    overwrite: bool = False,
) -> ExportReport:
    manifest = read_manifest(out_dir)
    candidate_files = sorted((out_dir / "candidates").glob("*.parquet"))
    if not candidate_files:
        raise ExportError(f"{out_dir}/candidates has no shards: nothing to select pairs from")
    if pairs_per_turn not in ("best-worst", "all"):
        raise ExportError(f"--pairs-per-turn {pairs_per_turn!r}: expected best-worst or all")
    if top_k is not None and top_k < 1:
        raise ExportError(f"--top-k {top_k}: must be at least 1")
    recipe = manifest.get("recipe") or {}
    generation = recipe.get("generation") or {}
    if min_gap is None:
        min_gap = float(generation.get("min_gap", 0.0))
    if min_gap < 0:
        raise ExportError(f"--min-gap {min_gap}: must be >= 0")
    selection = Selection(min_gap=min_gap, pairs_per_turn=pairs_per_turn, top_k=top_k)

    dest = out_dir if to is None or _same(to, out_dir) else to
    if dest is not out_dir:
        _prepare_destination(out_dir, dest, manifest, overwrite)

    schema = pl.read_parquet_schema(candidate_files[0])
    metric_names = [f.name for f in schema["metrics"].fields]
    rows_per_shard = int((recipe.get("output") or {}).get("rows_per_shard") or _DEFAULT_ROWS_PER_SHARD)
    writer = ShardWriter(dest / "pairs", pairs_schema(metric_names), rows_per_shard)
    system_prompt = generation.get("system_prompt")
    turns = 0
    for group in _turn_groups(candidate_files):
        turns += 1
        for row in select_pairs(group, selection, system_prompt):
            writer.add(row)
    written = writer.close()
    keep = {p.name for p in written}
    for stale in (dest / "pairs").glob("*.parquet"):  # shards of other prefixes (slices of a run)
        if stale.name not in keep:
            stale.unlink()

    files = [f"pairs/{p.name}" for p in written]
    pairs_before = (manifest.get("counts") or {}).get("pairs")
    manifest.setdefault("counts", {})["pairs"] = writer.rows_written
    if isinstance(manifest.get("files"), dict):
        manifest["files"]["pairs"] = files
    manifest["export"] = {
        "pairs_per_turn": pairs_per_turn,
        "top_k": top_k,
        "min_gap": min_gap,
        "selection": selection.describe(),
        "pairs_before": pairs_before,
    }
    secrets = _secrets(recipe)
    from collabgen.output.manifest import write_json_atomic

    write_json_atomic(dest / "manifest.json", manifest, secrets)
    card_rewritten = _rewrite_card(dest, manifest, selection, secrets)
    return ExportReport(dest, pairs_before, writer.rows_written, turns, files, selection, card_rewritten)


def select_pairs(group: list[dict[str, Any]], selection: Selection, system_prompt: str | None) -> list[dict[str, Any]]:
    """The pair rows of one turn's candidates (dicts as read from `candidates/`)."""
    ranked = sorted(group, key=lambda c: (0 if c["chosen"] else 2 if c["rejected"] else 1, -c["score"], c["candidate"]))
    if selection.pairs_per_turn == "best-worst":
        k = selection.top_k or 1
        combos = [(c, ranked[-1]) for c in ranked[:k]]
    else:
        k = selection.top_k or len(ranked)
        combos = [(c, r) for i, c in enumerate(ranked[:k]) for r in ranked[i + 1 :]]
    rows, seen = [], set()
    for chosen, rejected in combos:
        key = (chosen["response"], rejected["response"])
        if chosen is rejected or key[0] == key[1] or key in seen:
            continue
        if chosen["score"] - rejected["score"] < selection.min_gap:
            continue
        seen.add(key)
        rows.append(_pair_row(chosen, rejected, system_prompt))
    return rows


def _pair_row(chosen: dict[str, Any], rejected: dict[str, Any], system_prompt: str | None) -> dict[str, Any]:
    prompt = list(chosen["prompt"])
    if system_prompt:
        prompt = [{"role": "system", "content": system_prompt}, *prompt]
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen["response"]}],
        "rejected": [{"role": "assistant", "content": rejected["response"]}],
        "score_chosen": chosen["score"],
        "score_rejected": rejected["score"],
        "conv_id": chosen["conv_id"],
        "turn": chosen["turn"],
        "task": chosen["task"],
        "metrics_chosen": chosen["metrics"],
        "metrics_rejected": rejected["metrics"],
        "proactive_chosen": chosen["proactive"],
        "proactive_rejected": rejected["proactive"],
    }


def _turn_groups(files: list[Path]) -> Iterator[list[dict[str, Any]]]:
    """Candidates of one turn at a time, one shard in memory (a turn may straddle two shards)."""
    group: list[dict[str, Any]] = []
    key: tuple[str, int] | None = None
    for path in files:
        for row in pl.read_parquet(path, columns=_COLUMNS).iter_rows(named=True):
            row_key = (row["conv_id"], row["turn"])
            if row_key != key and group:
                yield group
                group = []
            key = row_key
            group.append(row)
    if group:
        yield group


def _same(a: Path, b: Path) -> bool:
    return a.exists() and a.resolve() == b.resolve()


def _prepare_destination(src: Path, dest: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """sft/, candidates/ and the card copied as they are (temp + rename per file)."""
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise ExportError(f"--to {dest}: the folder is not empty (pass --overwrite to replace its dataset files)")
    for config in ("sft", "candidates"):
        folder = dest / config
        folder.mkdir(parents=True, exist_ok=True)
        sources = sorted((src / config).glob("*.parquet"))
        for source in sources:
            temp = folder / f".{source.name}.tmp"
            shutil.copyfile(source, temp)
            os.replace(temp, folder / source.name)
        names = {s.name for s in sources}
        for stale in folder.glob("*.parquet"):
            if stale.name not in names:
                stale.unlink()
    if (src / "README.md").is_file():
        temp = dest / ".README.md.tmp"
        shutil.copyfile(src / "README.md", temp)
        os.replace(temp, dest / "README.md")


def _secrets(recipe: dict[str, Any]) -> list[str]:
    names = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    names |= {r.get("api_key_env") for r in (recipe.get("models") or {}).values() if isinstance(r, dict)} - {None}
    return [v for v in (os.environ.get(n) for n in sorted(names)) if v and len(v) >= 4]


def _rewrite_card(dest: Path, manifest: dict[str, Any], selection: Selection, secrets: list[str]) -> bool:
    """The card rendered again from the manifest (no model needed), plus a note on the export.

    Returns False (and leaves the old card) when the recipe in the manifest cannot be
    rebuilt, e.g. a task plugin that is not importable here.
    """
    try:
        _render_card(dest, manifest, selection, secrets)
        rewritten = True
    except Exception:  # noqa: BLE001 - the card is a convenience; the data is already written
        rewritten = False
    card = dest / "README.md"
    if card.is_file():
        note = (
            "\n## Export\n\n"
            "The `pairs` config was re-selected from `candidates` by `collabgen export`, with no model call: "
            f"{selection.describe()}. {manifest['counts']['pairs']} pairs.\n"
        )
        text = card.read_text(encoding="utf-8")
        text = text.split("\n## Export\n", 1)[0].rstrip("\n") + "\n" + note
        temp = card.with_name(".README.md.tmp")
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, card)
    return rewritten


def _render_card(dest: Path, manifest: dict[str, Any], selection: Selection, secrets: list[str]) -> None:
    from collabgen.config.recipe import Recipe
    from collabgen.output.card import write_card
    from collabgen.tasks.registry import resolve_task

    dump = json.loads(json.dumps(manifest["recipe"]))
    dump["generation"]["min_gap"] = selection.min_gap
    recipe = Recipe.from_dict(dump)
    task = resolve_task(recipe.task.type)(recipe.task.options)
    write_card(dest, recipe, task, manifest, secrets)
