"""A run: from a validated recipe to shards, manifest and card, resumable at any instant.

Everything that can be wrong with the input (recipe, keys, templates, seeds, the out dir)
is checked before the first model call (`context.prepare`, `hold_out_dir`), and the run
holds the out dir's lock while it writes. Conversations run concurrently, at most
`generation.conversations` at once, pulling seeds from a stream; each finished turn is
journaled, and the shards and manifest are rebuilt from the journal at the end (also
after Ctrl-C or SIGTERM: `stopping.Stopper`). What a failed or stopped conversation's
unfinished turn cost is journaled too, so the manifest counts every paid call.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from collabgen.app.context import RunContext, RunSetup, check_endpoints, open_context, prepare, prove_sandboxes
from collabgen.app.outcome import Outcome
from collabgen.app.progress import RunProgress
from collabgen.app.stopping import Stopper
from collabgen.config.errors import InfrastructureError, OutputConflictError, OutputError
from collabgen.config.recipe import Recipe, recipe_lines, where
from collabgen.config.secrets import install_log_scrubber, scrub_known, secret_values
from collabgen.engine.journal import Journal, JournalIndex
from collabgen.engine.records import EndRecord, TurnRecord
from collabgen.engine.seeds import iter_seeds
from collabgen.engine.selection import NoEligibleCandidate
from collabgen.engine.slices import Slice
from collabgen.models.base import ChatBackend, ContextExhausted
from collabgen.models.executor import CallFailed
from collabgen.models.gate import CallGate, CallsStopped
from collabgen.models.usage import UsageBook, UsageTee
from collabgen.output.card import write_card
from collabgen.output.diskspace import is_out_of_space, stop_on_full_disk
from collabgen.output.finalize import write_shards
from collabgen.output.lock import OutDirLock
from collabgen.output.manifest import SKIPPED_LISTED, SkippedRows, build_manifest, confidence_summary, cost
from collabgen.output.outdir import OutDir
from collabgen.output.partition import Partition, claim_partition, recorded_partition
from collabgen.tasks.base import SeedModel
from collabgen.tasks.recipe_check import load_recipe

log = logging.getLogger("collabgen")


@dataclass
class RunReport:
    out_dir: Path
    seeds: int
    ok: int
    failed: int
    pairs: int
    sft: int
    candidates: int
    failures: list[dict[str, str | None]] = field(default_factory=list)
    paid_calls: int = 0
    cached_calls: int = 0
    elapsed_seconds: float = 0.0
    max_failure_rate: float = 0.0
    interrupted: str | None = None  # the signal that stopped the run early (SIGINT, SIGTERM)
    tokens: dict[str, tuple[int, int]] = field(default_factory=dict)  # role -> (prompt, completion), this run
    cost_usd: dict[str, float | None] = field(default_factory=dict)  # role -> dollars this run; None: no prices
    sft_filtered: int | None = None  # finished conversations `output.sft.min_final` left out; None: no filter
    user_drift: tuple[str, int, int] | None = None  # (user model, drifted futures, all futures)

    @property
    def outcome(self) -> Outcome:
        return Outcome(total=self.seeds, ok=self.ok, failed=self.failed, max_failure_rate=self.max_failure_rate)

    @property
    def failure_rate(self) -> float:
        return self.outcome.failure_rate

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code


def prepare_out_dir(recipe: Recipe, overwrite: bool, partition: Partition) -> OutDir:
    """Refuse to mix two recipes, or two partitions of the seeds (a whole run and `--shard`
    slices, or slices of two `n`), in one out dir; with `overwrite`, start afresh (the
    request caches are kept: requests are keyed by content, so they stay correct)."""
    layout = OutDir(recipe.output.dir)
    fingerprint = recipe.fingerprint()
    if layout.recipe_stamp_path.exists():
        previous = layout.stamped_fingerprint()
        if previous != fingerprint:
            if not overwrite:
                raise OutputConflictError(
                    f"{layout.root} holds a run of a different recipe (fingerprint {previous}, this recipe "
                    f"{fingerprint}); rerun with --overwrite to discard it, or set another output.dir"
                    + _selection_hint(layout, recipe)
                )
            layout.discard()
    elif overwrite:
        layout.discard()
    if overwrite and recorded_partition(layout) not in (None, partition):
        layout.discard()  # the same recipe cut another way: its rows go too
    claim_partition(layout, partition)
    layout.stamp_recipe(fingerprint, recipe.semantic())  # atomic: slices may stamp at once
    return layout


SELECTION_FIELDS = {("generation", "min_gap")}  # decide only which pairs are kept: no call needed


def _changed(old: Any, new: Any, at: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if isinstance(old, dict) and isinstance(new, dict):
        return {path for key in old.keys() | new.keys() for path in _changed(old.get(key), new.get(key), (*at, key))}
    return set() if old == new else {at}


def _selection_hint(layout: OutDir, recipe: Recipe) -> str:
    """When only pair-selection fields changed, the data is already there: say how to re-select."""
    previous = layout.stamped_semantic()
    changed = _changed(previous, recipe.semantic()) if previous is not None else set()
    if not changed or not changed <= SELECTION_FIELDS:
        return ""
    return (f". Only generation.min_gap changed: re-select the pairs without any model call with "
            f"`collabgen export {layout.root} --min-gap {recipe.generation.min_gap}`")


@contextmanager
def hold_out_dir(recipe: Recipe, part: Slice | None, *, wait: bool, console: Console) -> Iterator[None]:
    """Check the out dir can be written (a file in its place, `chattr +i`, a read-only
    mount: refused with the path, before any call), then hold its lock, or the slice's,
    while the run writes; another run there is refused (or, with `wait`, waited for)."""
    layout = OutDir(recipe.output.dir)
    state = layout.state(part)
    try:
        layout.check_usable(state)
    except OutputError as err:
        raise OutputError(where(recipe.source_file, recipe_lines(recipe), ("output", "dir")) + f"output.dir: {err}"
                          ) from None
    what = layout.root if part is None else f"{layout.root} (slice {part.index}/{part.count})"

    def waiting(holder: int | None) -> None:
        console.print(f"waiting for the run that holds {what} (pid {holder if holder is not None else '?'}) "
                      "to finish...", soft_wrap=True, highlight=False)

    with OutDirLock(state.dir, what).acquire(wait=wait, on_wait=waiting):
        yield


class Generation:
    """The conversations of one run (or one slice), each journaled turn by turn."""

    def __init__(self, context: RunContext, journal: Journal, part: Slice | None) -> None:
        self.context = context
        self.journal = journal
        self.index: JournalIndex = journal.index()
        self.part = part
        self.done = self.index.finished()
        self.stop = CallGate()  # the run's: closed when stopping, and every conversation's gate with it

    async def run(self, console: Console, progress: bool | None, stopper: Stopper | None = None) -> None:
        setup = self.context.setup
        resuming = self.resume_note()
        if resuming:
            console.print(resuming, soft_wrap=True, highlight=False)
        stopper = stopper or Stopper(self.stop, console, enabled=False)
        seeds = iter_seeds(setup.task, setup.recipe.task)  # one stream, shared by the workers
        generation = setup.recipe.generation
        with RunProgress(setup.seeds, generation.max_turns, self.context.usage, console, enabled=progress) as bar:
            bar.resume_from(Counter(conv for conv, _ in self.index.turns), self.done)
            workers = [asyncio.ensure_future(self._worker(seeds, bar))
                       for _ in range(setup.recipe.generation.conversations)]
            await stopper.supervise(workers)

    def resume_note(self) -> str | None:
        """What a rerun continues from, e.g. `resuming: 7 of 12 conversations finished, 3 in progress`."""
        index = self.index
        if not index.conv_ids:
            return None
        failed = sum(1 for end in index.ends.values() if not end.finished)
        started = sum(1 for conv in index.last_turn if conv not in index.ends)
        retrying = f", {failed} failed (retrying)" if failed else ""
        return (f"resuming from {self.journal.path}: {len(self.done)} of {self.context.setup.seeds} conversations "
                f"finished, {started} in progress{retrying}")

    async def _worker(self, seeds: object, bar: RunProgress) -> None:
        for position, seed in seeds:  # type: ignore[attr-defined]
            if self.stop.closed:
                return
            if position in self.done or (self.part is not None and not self.part.contains(position)):
                continue
            ended = await self.converse(position, seed, bar)
            if ended is None:
                return  # stopped: the conversation resumes on the next run
            end, turns_played = ended
            self.journal.append(end.to_json())
            bar.conversation_finished(end.finished, turns_played)

    # long: one conversation's whole life: resume point, turns, and each way it can end
    async def converse(self, position: int, seed: SeedModel, bar: RunProgress) -> tuple[EndRecord, int] | None:
        """One conversation from where the journal left it, and the turns it has in all;
        never raises for a model failure. None when the run stopped it (its unfinished
        turn's cost journaled, to resume)."""
        gate = CallGate(parent=self.stop)
        unjournaled = UsageBook()  # calls since the last journaled turn
        collaboration = self.context.collaboration(position, seed, gate=gate).bound(UsageTee(unjournaled, bar))
        conv_id = collaboration.conv_id
        history, first_turn, previous = None, 0, None
        if position in self.index.last_turn:
            last = self.index.last_turn[position]
            previous = self.journal.read_turn(self.index.turns[(position, last)])
            history, first_turn = previous.history_after(), last + 1

        played = first_turn

        async def on_turn(record: TurnRecord) -> None:
            nonlocal played
            self.journal.append(record.to_json())
            unjournaled.clear()
            played = record.turn + 1
            bar.turn_finished()

        try:
            if first_turn == 0 or history is not None:
                await collaboration.run(history, first_turn, on_turn, previous)
            return EndRecord(conv_id=conv_id, index=position, status="ok"), played
        except CallsStopped:
            await self.settle(gate, conv_id, position, unjournaled)
            return None
        except asyncio.CancelledError:  # the grace period after a stop ran out
            self.journal.append_spent(conv_id, position, unjournaled)
            raise
        except ContextExhausted as err:  # the conversation outgrew the model: it ends here, not a failure
            await self.settle(gate, conv_id, position, unjournaled)
            end = EndRecord(conv_id=conv_id, index=position, status="context_exhausted", reason=scrub_known(str(err)))
            return end, played
        except (CallFailed, InfrastructureError, NoEligibleCandidate) as err:
            # A model that keeps failing, a broken sandbox, a turn with nothing choosable:
            # never a score. The conversation fails with the reason; its finished turns stay.
            reason = _reason(err)
        except Exception as err:  # a bug must not take the other conversations down, nor hide
            if is_out_of_space(err, Path(self.context.setup.recipe.output.dir)):
                raise  # not this conversation's failure: the run stops (`stop_on_full_disk`)
            log.error("conversation %s: internal error\n%s", conv_id, traceback.format_exc())
            reason = f"internal error: {err!r}"
        gate.close("its conversation failed")  # branches of the failed turn make no new calls
        await self.settle(gate, conv_id, position, unjournaled)
        return EndRecord(conv_id=conv_id, index=position, status="failed", reason=scrub_known(reason)), played

    async def settle(self, gate: CallGate, conv_id: str, position: int, unjournaled: UsageBook) -> None:
        """Wait for the conversation's calls still in flight, then journal what its
        unfinished turn cost (paid calls, though no turn record holds them)."""
        try:
            await gate.drained()
        finally:
            self.journal.append_spent(conv_id, position, unjournaled)


def _reason(err: Exception) -> str:
    if isinstance(err, InfrastructureError):
        return f"infrastructure: {err}"
    if isinstance(err, NoEligibleCandidate):
        return f"no choosable candidate (truncated or undecided): {err}"
    return str(err)


async def run_async(
    recipe: Recipe, *, overwrite: bool = False, console: Console | None = None, progress: bool | None = None,
    part: Slice | None = None, backends: Mapping[str, ChatBackend] | None = None, wait: bool = False,
    handle_signals: bool = False,
) -> RunReport:
    """Run the recipe (or one slice of its seeds); resumes from the journal if there is one.

    `backends` replaces the recipe's backend of a role (tests, embedding applications);
    `wait` waits for another run holding the out dir instead of refusing; with
    `handle_signals` (the CLI), SIGINT/SIGTERM stop the run gracefully (`Stopper`).
    """
    install_log_scrubber()
    started = time.monotonic()
    console = console or Console(stderr=True)
    setup = prepare(recipe, part, check_keys=backends is None)
    for warning in await check_endpoints(recipe, skip=set(backends or ())):
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True, highlight=False)
    with stop_on_full_disk(Path(recipe.output.dir)), hold_out_dir(recipe, part, wait=wait, console=console):
        layout = prepare_out_dir(recipe, overwrite, Partition.of(part))
        state = layout.state(part)
        async with open_context(setup, cache_path=state.cache, backends=backends) as context:
            await prove_sandboxes(context)
            journal = Journal(state.journal)
            try:
                generation = Generation(context, journal, part)
                with Stopper(generation.stop, console, enabled=handle_signals) as stopper:
                    await generation.run(console, progress, stopper)
            finally:
                journal.close()
        return finalize(setup, layout, context.usage, time.monotonic() - started, context.prefix_share(), part,
                        interrupted=stopper.signal_name)


def finalize(
    setup: RunSetup, layout: OutDir, usage: UsageBook, elapsed: float,
    prefix_share: dict[str, float] | None = None, part: Slice | None = None, interrupted: str | None = None,
) -> RunReport:
    """Shards and manifest from the journal (and the card, unless this is one slice of
    several: `collabgen merge` writes that); safe to call again at any time. A run stopped
    by a signal (`interrupted`) gets a manifest marked incomplete."""
    recipe = setup.recipe
    state = layout.state(part)
    journal = Journal(state.journal)
    try:
        index = journal.index()
        written = write_shards(recipe, setup.task.name, setup.metric_names, journal, index, layout,
                               prefix=state.shard_prefix)
    finally:
        journal.close()
    secrets = secret_values(recipe)
    manifest = build_manifest(recipe, index, written, usage, setup.seeds, elapsed, prefix_share, interrupted)
    if setup.skipped:
        manifest.skipped_rows = SkippedRows(count=len(setup.skipped), rows=[
            {"row": row.where, "reason": row.reason} for row in setup.skipped[:SKIPPED_LISTED]])
    if setup.selection is not None:
        manifest.source_selection = setup.selection.to_dict()  # rows `task.source.select` left out, by reason
    if part is not None:
        manifest.slice = f"{part.index}/{part.count}"
        manifest.write(state.manifest, secrets)
    else:
        manifest.confidence = confidence_summary(layout)  # a slice's pairs share the folder: merge sums them
        manifest.write(layout.manifest_path, secrets)
        write_card(layout, recipe, setup.task, manifest, secrets)
    total = usage.total()
    counts = manifest.counts
    return RunReport(
        out_dir=layout.root, seeds=setup.seeds, ok=counts.conversations_ok, failed=counts.conversations_failed,
        pairs=written.pairs, sft=written.sft, candidates=written.candidates,
        failures=[failure.model_dump() for failure in manifest.failures],
        paid_calls=total.calls, cached_calls=total.cached_calls, elapsed_seconds=elapsed,
        max_failure_rate=recipe.generation.max_failure_rate, interrupted=interrupted,
        tokens={role: (t.prompt_tokens, t.completion_tokens) for role, t in usage.by_role().items()},
        cost_usd={role: (cost(usage, recipe) or {}).get(role) for role in usage.by_role()},
        sft_filtered=written.sft_filtered if recipe.output.sft.min_final else None,
        user_drift=(recipe.models.user.model, written.flags.get("user_drift_futures", 0), written.futures),
    )


def run(recipe: Recipe | str | Path, *, overwrite: bool = False, progress: bool | None = None) -> Path:
    """Python API: run a recipe (object or YAML path) and return the output directory."""
    report = asyncio.run(run_async(load_recipe(recipe), overwrite=overwrite, progress=progress))
    return report.out_dir
