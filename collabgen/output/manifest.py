"""manifest.json: what was made, from what, at what cost; never a secret.

`Manifest` is the one reading of the file: run, merge and export write it, inspect, push,
export and the CLI read it. Typed, so a renamed key breaks at one place instead of as a
silent `None` in four readers. Every part keeps keys it does not know and writes back only
the keys it was given (`exclude_unset`), so a manifest of an older or newer collabgen goes
through `collabgen export` with its other keys unchanged.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from collabgen.config.errors import CollabgenError
from collabgen.config.recipe import Recipe
from collabgen.config.version import __version__
from collabgen.engine.journal import JournalIndex
from collabgen.models.usage import Tally, UsageBook
from collabgen.output.finalize import Written
from collabgen.output.outdir import OutDir, write_json_atomic

_PACKAGES = ("openai", "anthropic", "polars", "pyarrow", "datasets", "pydantic", "math-verify", "sacrebleu", "nltk",
             "tiktoken")


class _Part(BaseModel):
    """Any part of a manifest: unknown keys are kept (and written back after the known ones)."""

    model_config = ConfigDict(extra="allow")


class Counts(_Part):
    seeds: int
    conversations_ok: int
    conversations_failed: int
    conversations_unfinished: int
    turns: int
    pairs: int
    sft: int
    candidates: int
    conversations_context_exhausted: int = 0  # among conversations_ok: ended when the context was full
    sft_filtered: int = 0  # finished conversations `output.sft.min_final` kept out of sft/ (set only with it)

    def rows(self, config: str) -> int:
        """Rows of one config (`pairs`, `sft`, `candidates`), the way the shard folders are named."""
        return getattr(self, config)


class Failure(_Part):
    conv_id: str | None = None
    reason: str | None = None


class UsageTally(_Part):
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0

    @classmethod
    def of(cls, tally: Tally) -> UsageTally:
        return cls(**vars(tally))


def _by_role(book: UsageBook) -> dict[str, UsageTally]:
    return {role: UsageTally.of(tally) for role, tally in book.by_role().items()}


class Usage(_Part):
    """Calls and tokens of every turn in the data (the journal's, not only this run's)."""

    by_role: dict[str, UsageTally] = {}
    by_stage: dict[str, dict[str, UsageTally]] = {}
    calls_per_conversation: float | None = None

    @classmethod
    def of(cls, book: UsageBook, conversations_ok: int) -> Usage:
        total = book.total()
        per_conversation = (
            round((total.calls + total.cached_calls) / conversations_ok, 2) if conversations_ok else None
        )
        return cls(by_role=_by_role(book), by_stage=book.to_dict(), calls_per_conversation=per_conversation)

    def book(self) -> UsageBook:
        stages = {role: {stage: t.model_dump() for stage, t in by.items()} for role, by in self.by_stage.items()}
        return UsageBook.from_dict(stages)


class ThisRun(_Part):
    """What this invocation alone cost: a resumed run replays the rest from its cache."""

    by_role: dict[str, UsageTally] = {}
    elapsed_seconds: float | None = None
    prefix_share: dict[str, float] = {}


class Slices(_Part):
    count: int
    present: list[int]
    missing: list[int]


class ExportInfo(_Part):
    """The pair selection of the last `collabgen export` (pairs no longer as the run chose)."""

    pairs_per_turn: str | None = None
    top_k: int | None = None
    min_gap: float | int | None = None  # int stays int: the file keeps what the user passed
    selection: str | None = None
    pairs_before: int | None = None
    min_confidence: float | None = None


CONFIDENCE_LEVELS = (0.5, 0.8, 0.9, 0.95)


class Confidence(_Part):
    """How sure the kept pairs are (`confidence`, engine/confidence.py): how many have an
    estimate, its quartiles and how many reach each level."""

    pairs_with_estimate: int = 0
    quartiles: list[float] | None = None  # 25th, 50th, 75th percentile
    at_least: dict[str, int] = {}


def confidence_summary(out: OutDir) -> Confidence:
    """The distribution of `confidence` over the pairs/ shards (one column read)."""
    import polars as pl

    files = out.shards("pairs")
    if not files:
        return Confidence()
    values = pl.scan_parquet(files).select("confidence").drop_nulls().collect()["confidence"]
    if values.len() == 0:
        return Confidence()
    return Confidence(
        pairs_with_estimate=values.len(),
        quartiles=[round(float(values.quantile(q, "linear")), 4) for q in (0.25, 0.5, 0.75)],
        at_least={str(level): int((values >= level).sum()) for level in CONFIDENCE_LEVELS},
    )


class GenerationView(_Part):
    min_gap: float | int | None = None
    system_prompt: str | None = None
    row_system_prompt: str | None = None

    def rows_system_prompt(self) -> str | None:
        """The system prompt the run wrote into its rows: `row_system_prompt`, or for a
        manifest written before that setting existed, the sampling `system_prompt` (which
        rows carried then), so an export reproduces the run's rows."""
        if "row_system_prompt" in self.model_fields_set:
            return self.row_system_prompt
        return self.system_prompt


class OutputView(_Part):
    rows_per_shard: int | None = None


class RecipeView(_Part):
    """Typed reading of the few recipe settings that export and inspect need from the
    manifest's recipe dump; the dump itself is kept as a plain dict so it is written back
    byte for byte (and a task plugin that is not importable here does not stop a read)."""

    generation: GenerationView = GenerationView()
    output: OutputView = OutputView()

    @field_validator("generation", "output", mode="before")
    @classmethod
    def _missing_is_empty(cls, value: Any) -> Any:
        return value or {}


class SkippedRows(_Part):
    """How many seed rows were left out and which (the first `LISTED`, with their reasons)."""

    count: int
    rows: list[dict[str, str]] = []


SKIPPED_LISTED = 100


class Manifest(_Part):
    """manifest.json. Only `counts` is required: it is what makes a folder a collabgen output.

    Field order is the file's key order: `this_run` only in a run's manifest, `slices` only
    in a merged one, `slice` only in a slice's own, `export` after an export. `complete`
    is false while some seed has no ended conversation (a run stopped by Ctrl-C or
    SIGTERM says which in `interrupted`): the shards hold what finished, and a rerun of
    the same recipe resumes.
    """

    collabgen_version: str | None = None
    recipe_fingerprint: str | None = None
    task: str | None = None
    complete: bool | None = None
    interrupted: str | None = None
    counts: Counts
    source_selection: dict[str, Any] | None = None  # rows `task.source.select` read, kept and left out by reason
    failures: list[Failure] = []
    flags: dict[str, int] | None = None  # truncated candidates/futures, tampered futures
    confidence: Confidence | None = None  # of the kept pairs
    skipped_rows: SkippedRows | None = None  # malformed seed rows left out (`task.source.on_bad_row: skip`)
    usage: Usage | None = None
    this_run: ThisRun | None = None
    cost_usd: dict[str, float] | None = None
    slices: Slices | None = None
    files: dict[str, list[str]] | None = None
    recipe: dict[str, Any] = {}
    versions: dict[str, str] = {}
    slice: str | None = None
    export: ExportInfo | None = None

    @property
    def recipe_view(self) -> RecipeView:
        return RecipeView.model_validate(self.recipe)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as written: the keys that were set, in field order, unknown keys last."""
        return self.model_dump(mode="python", exclude_unset=True)

    def write(self, path: Path, secrets: Iterable[str]) -> Path:
        return write_json_atomic(path, self.to_dict(), secrets)

    @classmethod
    def read(cls, out_dir: Path) -> Manifest:
        """An out dir's manifest, or an error saying this is not a collabgen out dir."""
        if not out_dir.is_dir():
            raise CollabgenError(f"{out_dir}: no such directory")
        path = OutDir(out_dir).manifest_path
        if not path.is_file():
            raise CollabgenError(
                f"{out_dir} is not a collabgen output: it has no manifest.json "
                "(run `collabgen run RECIPE` first, and pass the recipe's output.dir)"
            )
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """One manifest file (an out dir's or a slice's), with the same errors as `read`."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise CollabgenError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict) or "counts" not in data:
            raise CollabgenError(f"{path}: not a collabgen manifest (no counts)")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CollabgenError(f"{path}: not a collabgen manifest ({where}: {first['msg']})") from None


def package_versions() -> dict[str, str]:
    versions = {"collabgen": __version__, "python": platform.python_version()}
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
    elapsed_seconds: float, prefix_share: dict[str, float] | None = None, interrupted: str | None = None,
) -> Manifest:
    ends = index.ends
    failures = [
        Failure(conv_id=end.conv_id, reason=end.reason) for _, end in sorted(ends.items()) if not end.finished
    ]
    ok = sum(1 for end in ends.values() if end.finished)
    exhausted = sum(1 for end in ends.values() if end.status == "context_exhausted")
    counts = Counts(
        seeds=seeds_total,
        conversations_ok=ok,
        conversations_failed=len(failures),
        conversations_unfinished=max(seeds_total - ok - len(failures), 0),
        turns=written.turns,
        pairs=written.pairs,
        sft=written.sft,
        candidates=written.candidates,
        **({"conversations_context_exhausted": exhausted} if exhausted else {}),
        **({"sft_filtered": written.sft_filtered} if recipe.output.sft.min_final else {}),
    )
    this_run = ThisRun(
        by_role=_by_role(run_usage),
        elapsed_seconds=round(elapsed_seconds, 3),
        prefix_share={role: round(share, 4) for role, share in (prefix_share or {}).items()},
    )
    manifest = Manifest(
        collabgen_version=__version__, recipe_fingerprint=recipe.fingerprint(), task=recipe.task.type,
        complete=interrupted is None and counts.conversations_unfinished == 0,
        counts=counts, failures=failures, flags=written.flags, usage=Usage.of(written.usage, ok), this_run=this_run,
        cost_usd=cost(written.usage, recipe), files=written.files, recipe=recipe.public_dump(),
        versions=package_versions(),
    )
    if interrupted is not None:
        manifest.interrupted = interrupted
    return manifest
