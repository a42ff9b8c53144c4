"""Rebuilding the shards from the journal: sorted by seed and turn, one conversation in memory."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from collabgen.config.recipe import Recipe
from collabgen.engine.journal import Journal, JournalIndex
from collabgen.engine.records import TurnRecord
from collabgen.engine.selection import Selection
from collabgen.models.usage import UsageBook
from collabgen.output.outdir import OutDir
from collabgen.output.rows import (
    candidate_rows,
    candidates_schema,
    pair_rows,
    pairs_schema,
    sft_row,
    sft_schema,
)
from collabgen.output.shards import ShardWriter

_SCHEMAS = {"pairs": pairs_schema, "sft": sft_schema, "candidates": candidates_schema}


@dataclass
class Written:
    pairs: int
    sft: int
    candidates: int
    turns: int
    usage: UsageBook
    files: dict[str, list[str]]
    flags: dict[str, int]
    sft_filtered: int = 0  # finished conversations `output.sft.min_final` kept out of sft/
    futures: int = 0  # every future of every journaled turn (what `flags["user_drift_futures"]` is a share of)


def write_shards(
    recipe: Recipe, task_name: str, metric_names: list[str], journal: Journal, index: JournalIndex,
    out: OutDir, prefix: str = OutDir.SHARD_PREFIX,
) -> Written:
    rows = recipe.output.rows_per_shard
    writers = {
        config: ShardWriter(out.folder(config), _SCHEMAS[config](metric_names), rows, prefix)
        for config in OutDir.CONFIGS
    }
    by_conv: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for (conv, turn), offset in index.turns.items():
        by_conv[conv].append((turn, offset))
    usage = UsageBook()
    flags: Counter[str] = Counter({name: 0 for name in FLAG_COUNTS})
    turns = 0
    system_prompt = recipe.generation.row_system_prompt  # not the sampling one: see GenerationConfig
    selection = Selection(min_gap=recipe.generation.min_gap)
    sft_filtered = futures = 0
    for conv in sorted(by_conv):
        records = [journal.read_turn(offset) for _, offset in sorted(by_conv[conv])]
        records = _contiguous(records)
        for record in records:
            turns += 1
            usage.merge(UsageBook.from_dict(record.usage))
            count_flags(record, flags)
            futures += sum(len(candidate.futures) for candidate in record.candidates)
            for row in candidate_rows(record, task_name, metric_names):
                writers["candidates"].add(row)
            for pair in pair_rows(record, task_name, metric_names, selection, system_prompt):
                writers["pairs"].add(pair)
        end = index.ends.get(conv)
        if records and end is not None and end.finished:
            trajectory = sft_row(records, task_name, metric_names, system_prompt)
            if recipe.output.sft.keeps(trajectory["final_metrics"]):
                writers["sft"].add(trajectory)
            else:
                sft_filtered += 1
    usage.merge(index.spent)  # calls of turns that never finished were paid too
    files = {name: [out.relative(p) for p in w.close()] for name, w in writers.items()}
    return Written(
        pairs=writers["pairs"].rows_written,
        sft=writers["sft"].rows_written,
        candidates=writers["candidates"].rows_written,
        turns=turns,
        usage=usage,
        files=files,
        flags=dict(flags),
        sft_filtered=sft_filtered,
        futures=futures,
    )


FLAG_COUNTS = ("truncated_candidates", "truncated_futures", "tampered_futures", "math_verify_timeout_futures",
               "tokens_estimated_futures", "user_drift_futures")


def count_flags(record: TurnRecord, flags: Counter[str]) -> None:
    """Flagged work of a turn, for the manifest: nothing flagged may hide in the rows."""
    for candidate in record.candidates:
        flags["truncated_candidates"] += candidate.truncated
        for future in candidate.futures:
            flags["truncated_futures"] += future.truncated
            flags["tampered_futures"] += "tampered" in future.flags
            flags["math_verify_timeout_futures"] += "math_verify_timeout" in future.flags
            flags["tokens_estimated_futures"] += "tokens_estimated" in future.flags
            flags["user_drift_futures"] += future.drifted


def _contiguous(records: list[TurnRecord]) -> list[TurnRecord]:
    """Turns 0..k with no gap (a gap can only come from a hand-edited journal)."""
    kept = []
    for expected, record in enumerate(records):
        if record.turn != expected:
            break
        kept.append(record)
    return kept
