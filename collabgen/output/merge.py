"""Joining slices (array jobs, Ray tasks) into one manifest and card.

Each slice wrote its own shards into the shared folders and its manifest under
`.collabgen/slices/i-of-n/`; merging adds the counts and usage up, lists every shard,
and writes the top-level `manifest.json` and `README.md`. Shards are not rewritten.

Inputs of two partitions do not join: an out dir recorded as a whole run, or shards that
no slice of the merged `n` wrote (a whole run's `part-*`, another `n`'s), are refused,
since the counts would cover only part of the rows on disk.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from collabgen.config.errors import CollabgenError, OutputConflictError
from collabgen.config.recipe import Recipe
from collabgen.config.secrets import secret_values
from collabgen.engine.slices import Slice
from collabgen.models.usage import UsageBook
from collabgen.output.card import write_card
from collabgen.output.manifest import Counts, Manifest, Slices, Usage, confidence_summary, cost, package_versions
from collabgen.output.outdir import OutDir
from collabgen.output.partition import Partition, recorded_partition
from collabgen.tasks.registry import resolve_task


def merge_outputs(out_dir: Path) -> Manifest:
    out = OutDir(out_dir)
    files = out.slice_manifests()
    if not files:
        raise CollabgenError(
            f"{out_dir}: no slice manifests under {OutDir.STATE_DIR}/{OutDir.SLICES_DIR}/; run with --shard i/n first"
        )
    parts = [Manifest.load(f) for f in files]
    slices = _slices(out_dir, parts)
    _refuse_foreign_rows(out, slices.count)
    recipe = Recipe.from_dict(parts[0].recipe)
    counts: dict[str, int] = defaultdict(int)
    usage = UsageBook()
    for part in parts:
        for key, value in part.counts.model_dump(exclude_unset=True).items():
            counts[key] += value
        usage.merge(part.usage.book() if part.usage is not None else UsageBook())
    first = parts[0]
    manifest = Manifest(
        collabgen_version=first.collabgen_version, recipe_fingerprint=first.recipe_fingerprint, task=first.task,
        complete=not slices.missing and all(part.complete is not False for part in parts),
        counts=Counts.model_validate(dict(counts)),
        failures=[f for p in parts for f in p.failures],
        flags=_summed_flags(parts),
        usage=Usage.of(usage, counts["conversations_ok"]),
        cost_usd=cost(usage, recipe),
        slices=slices,
        confidence=confidence_summary(out),
        files={config: [out.relative(p) for p in out.shards(config)] for config in OutDir.CONFIGS},
        recipe=first.recipe,
        versions=package_versions(),
    )
    if first.source_selection is not None:
        manifest.source_selection = first.source_selection  # every slice selects from the same source
    secrets = secret_values(recipe)
    manifest.write(out.manifest_path, secrets)
    task = resolve_task(recipe.task.type)(recipe.task.options)
    write_card(out, recipe, task, manifest, secrets)
    return manifest


def _slices(out_dir: Path, parts: list[Manifest]) -> Slices:
    """Which slices of how many are here; slices of two recipes or two cuts do not join."""
    fingerprints = {p.recipe_fingerprint for p in parts}
    if len(fingerprints) != 1:
        raise CollabgenError(
            f"{out_dir}: slices come from different recipes ({', '.join(sorted(str(f) for f in fingerprints))})"
        )
    tags = [_slice_tag(p) for p in parts]
    totals = {count for _, count in tags}
    if len(totals) != 1:
        raise CollabgenError(f"{out_dir}: slices were cut in different ways ({sorted(totals)} parts)")
    count = totals.pop()
    present = sorted(index for index, _ in tags)
    return Slices(count=count, present=present, missing=sorted(set(range(count)) - set(present)))


def _refuse_foreign_rows(out: OutDir, count: int) -> None:
    """Every shard on disk must come from a slice of this cut, and the out dir's recorded
    partition must be these slices: else the merged counts would not describe the rows."""
    recorded = recorded_partition(out)
    if recorded is not None and recorded != Partition(count):
        raise OutputConflictError(f"{out.root} holds {recorded.describe()} (recorded in {out.partition_path}), not "
                                  f"--shard i/{count} slices: nothing to merge from its slice manifests")
    ours = tuple(out.state(Slice(index, count)).shard_prefix + "-" for index in range(count))
    foreign = [out.relative(path) for config in OutDir.CONFIGS for path in out.shards(config)
               if not path.name.startswith(ours)]
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputConflictError(f"{out.root} holds shards no --shard i/{count} slice wrote ({listed}): rows of "
                                  "another partition of the seeds would be counted twice or not at all. Merge "
                                  "slices of one run in an out dir of their own")


def _slice_tag(part: Manifest) -> tuple[int, int]:
    if part.slice is None:
        raise CollabgenError("a slice manifest has no `slice` (i/n): it was not written by `run --shard`")
    index, count = part.slice.split("/")
    return int(index), int(count)


def _summed_flags(parts: list[Manifest]) -> dict[str, int] | None:
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part.flags or {})
    return dict(total) if any(part.flags is not None for part in parts) else None
