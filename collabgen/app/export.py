"""`collabgen export`: a new selection of DPO pairs from `candidates/`, without any model call.

Every candidate of every turn is already scored (its MR and metric means are in
`candidates/`), so a different pair selection is a pure re-read. Per turn, candidates
are ranked by MR (the run's own chosen candidate first and rejected one last, so ties
break exactly as the engine broke them), then:

- `best-worst` (default): each of the top K candidates (K=1 by default) against the worst;
- `all`: each of the top K candidates (K = all by default) against every candidate
  ranked below it.

A pair is kept when `score_chosen - score_rejected >= min_gap` (default: the recipe's
`generation.min_gap`, so a plain export reproduces the run's pairs), the two texts
differ and, with `--min-confidence P`, the pair's confidence is at least P; within a turn, a (chosen text, rejected text) combination is kept once.

`sft/` and `candidates/` do not depend on the pair selection: they stay as they are
(copied when exporting to a new folder). The manifest's pair counts and the card are
rewritten; `.collabgen/` (journal, cache) is never copied, and a later `collabgen run`
in the same folder rebuilds pairs from the journal with the recipe's selection.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from collabgen.config.errors import CollabgenError
from collabgen.config.secrets import secret_values
from collabgen.engine.selection import PairsPerTurn, Selection
from collabgen.files import copy_atomic, write_atomic
from collabgen.output.manifest import ExportInfo, Manifest, confidence_summary
from collabgen.output.outdir import OutDir
from collabgen.output.rows import pairs_of_turn, pairs_schema
from collabgen.output.shards import ShardWriter

_COLUMNS = ["conv_id", "turn", "candidate", "task", "prompt", "response", "proactive", "score", "metrics",
            "chosen", "rejected"]
_OPTIONAL_COLUMNS = ["truncated", "flags", "score_std", "n_futures"]  # absent from shards written before the columns existed
_DEFAULT_ROWS_PER_SHARD = 5000


class ExportError(CollabgenError):
    """Bad input to an export: not a collabgen out dir, no candidates, a bad option."""


@dataclass
class ExportReport:
    out_dir: Path
    pairs_before: int | None
    pairs: int
    turns: int
    files: list[str]
    selection: Selection
    card_rewritten: bool


@dataclass
class _Pairs:
    """The pairs/ shards an export wrote."""

    files: list[str]
    rows: int
    turns: int


def export(
    out_dir: Path,
    *,
    to: Path | None = None,
    min_gap: float | None = None,
    top_k: int | None = None,
    pairs_per_turn: PairsPerTurn = "best-worst",
    min_confidence: float | None = None,
    overwrite: bool = False,
) -> ExportReport:
    source = OutDir(out_dir)
    manifest = Manifest.read(out_dir)
    candidate_files = source.shards("candidates")
    if not candidate_files:
        raise ExportError(f"{out_dir}/candidates has no shards: nothing to select pairs from")
    selection = _selection(manifest, min_gap, top_k, pairs_per_turn, min_confidence)
    dest = source if to is None or _same(to, out_dir) else OutDir(to)
    if dest is not source:
        _prepare_destination(source, dest, overwrite)
    pairs = _write_pairs(dest, manifest, candidate_files, selection)
    pairs_before = manifest.counts.pairs
    manifest.counts.pairs = pairs.rows
    if manifest.files is not None:
        manifest.files["pairs"] = pairs.files
    manifest.export = ExportInfo(
        pairs_per_turn=pairs_per_turn, top_k=top_k, min_gap=selection.min_gap, selection=selection.describe(),
        pairs_before=pairs_before, **({"min_confidence": min_confidence} if min_confidence is not None else {}),
    )
    manifest.confidence = confidence_summary(dest)
    secrets = secret_values(manifest.recipe)
    manifest.write(dest.manifest_path, secrets)
    card_rewritten = _rewrite_card(dest, manifest, selection, secrets)
    return ExportReport(dest.root, pairs_before, pairs.rows, pairs.turns, pairs.files, selection, card_rewritten)


def export_collabllm_checked(
    out_dir: Path, *, to: Path | None, fmt: str, overwrite: bool, selection_options: tuple[Any, ...] = (),
) -> tuple[int, int]:
    """`--format collabllm` after its options are checked: (rows, conversations) written.
    The reference selects its pairs itself when it trains (`minimum_gap`), so the pair
    options do not apply."""
    from collabgen.app.collabllm_export import export_collabllm

    if fmt != "collabllm":
        raise ExportError(f"--format {fmt!r}: expected collabgen or collabllm")
    if to is None or _same(to, out_dir):
        raise ExportError("--format collabllm writes a new folder: give --to DIR (not the out dir itself)")
    if any(option not in (None, False) for option in selection_options):
        raise ExportError("--format collabllm takes no --min-gap, --top-k, --min-confidence or --pairs-per-turn: "
                          "the reference's trainers select pairs themselves (to_dpo_dataset(minimum_gap=...))")
    return export_collabllm(out_dir, to, overwrite=overwrite)


def _selection(
    manifest: Manifest, min_gap: float | None, top_k: int | None, pairs_per_turn: str, min_confidence: float | None
) -> Selection:
    """The options checked; `min_gap` defaults to the recipe's, so a plain export reproduces the run."""
    if pairs_per_turn not in ("best-worst", "all"):
        raise ExportError(f"--pairs-per-turn {pairs_per_turn!r}: expected best-worst or all")
    if top_k is not None and top_k < 1:
        raise ExportError(f"--top-k {top_k}: must be at least 1")
    if min_gap is None:
        recipe_gap = manifest.recipe_view.generation.min_gap
        min_gap = float(0.0 if recipe_gap is None else recipe_gap)
    if min_gap < 0:
        raise ExportError(f"--min-gap {min_gap}: must be >= 0")
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise ExportError(f"--min-confidence {min_confidence}: must be between 0 and 1")
    return Selection(min_gap=min_gap, pairs_per_turn=pairs_per_turn, top_k=top_k,  # type: ignore[arg-type]
                     min_confidence=min_confidence)


def _write_pairs(dest: OutDir, manifest: Manifest, candidate_files: list[Path], selection: Selection) -> _Pairs:
    """pairs/ rewritten from the candidates, one turn in memory; shards of any other prefix
    (the slices of a run) are dropped, as the new shards hold every pair."""
    schema = pl.read_parquet_schema(candidate_files[0])
    metric_names = [f.name for f in schema["metrics"].fields]
    settings = manifest.recipe_view
    rows_per_shard = int(settings.output.rows_per_shard or _DEFAULT_ROWS_PER_SHARD)
    writer = ShardWriter(dest.folder("pairs"), pairs_schema(metric_names), rows_per_shard)
    system_prompt = settings.generation.rows_system_prompt()
    turns = 0
    for group in _turn_groups(candidate_files):
        turns += 1
        for row in pairs_of_turn(group, selection, system_prompt):
            writer.add(row)
    written = writer.close()
    keep = {p.name for p in written}
    for stale in dest.shards("pairs"):
        if stale.name not in keep:
            stale.unlink()
    return _Pairs(files=[dest.relative(p) for p in written], rows=writer.rows_written, turns=turns)


def _turn_groups(files: list[Path]) -> Iterator[list[dict[str, Any]]]:
    """Candidates of one turn at a time, one shard in memory (a turn may straddle two shards)."""
    group: list[dict[str, Any]] = []
    key: tuple[str, int] | None = None
    for path in files:
        present = pl.read_parquet_schema(path)
        columns = _COLUMNS + [c for c in _OPTIONAL_COLUMNS if c in present]
        for row in pl.read_parquet(path, columns=columns).iter_rows(named=True):
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


def _prepare_destination(src: OutDir, dest: OutDir, overwrite: bool) -> None:
    """sft/, candidates/ and the card copied as they are (each file atomically)."""
    if dest.root.exists() and any(dest.root.iterdir()) and not overwrite:
        raise ExportError(
            f"--to {dest.root}: the folder is not empty (pass --overwrite to replace its dataset files)"
        )
    for config in ("sft", "candidates"):
        folder = dest.folder(config)
        folder.mkdir(parents=True, exist_ok=True)
        sources = src.shards(config)
        for source in sources:
            copy_atomic(source, folder / source.name)
        names = {s.name for s in sources}
        for stale in dest.shards(config):
            if stale.name not in names:
                stale.unlink()
    if src.card_path.is_file():
        copy_atomic(src.card_path, dest.card_path)


def _rewrite_card(dest: OutDir, manifest: Manifest, selection: Selection, secrets: list[str]) -> bool:
    """The card rendered again from the manifest (no model needed), plus a note on the export.

    Returns False (and leaves the old card) when the recipe in the manifest cannot be
    rebuilt, e.g. a task plugin that is not importable here.
    """
    try:
        _render_card(dest, manifest, selection, secrets)
        rewritten = True
    except Exception:  # noqa: BLE001 - the card is a convenience; the data is already written
        rewritten = False
    card = dest.card_path
    if card.is_file():
        note = (
            "\n## Export\n\n"
            "The `pairs` config was re-selected from `candidates` by `collabgen export`, with no model call: "
            f"{selection.describe()}. {manifest.counts.pairs} pairs.\n"
        )
        text = card.read_text(encoding="utf-8")
        text = text.split("\n## Export\n", 1)[0].rstrip("\n") + "\n" + note
        write_atomic(card, text)
    return rewritten


def _render_card(dest: OutDir, manifest: Manifest, selection: Selection, secrets: list[str]) -> None:
    from collabgen.config.recipe import Recipe
    from collabgen.output.card import write_card
    from collabgen.tasks.registry import resolve_task

    dump = copy.deepcopy(manifest.recipe)
    dump["generation"]["min_gap"] = selection.min_gap
    recipe = Recipe.from_dict(dump)
    task = resolve_task(recipe.task.type)(recipe.task.options)
    write_card(dest, recipe, task, manifest, secrets)
