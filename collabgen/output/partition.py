"""One out dir, one partition of the seeds: a whole run, or `--shard i/n` slices of one `n`.

A whole run and `--shard` slices on one out dir (in turn or at once) each ran every seed
they owned: every call paid twice, every row on disk twice, and `merge` said complete
while counting half of them. So did `--shard 0/2` next to `--shard 0/3`. Their locks
differ (each slice has its own), so the lock cannot tell: the out dir records its
partition in `.collabgen/partition.json` when the first run starts, and a run of another
partition is refused before any call, naming the recorded one.

The record is created with `os.link` from a temp file: two runs starting at once cannot
both create it, the second reads the first's record and is refused (or agrees). An out
dir made before the record existed is read from its journals.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from collabgen.config.errors import OutputConflictError, OutputError
from collabgen.engine.slices import Slice
from collabgen.files import create_exclusive
from collabgen.output.outdir import OutDir

_SLICE_DIR = re.compile(r"(\d+)-of-(\d+)")


@dataclass(frozen=True)
class Partition:
    """How an out dir's seeds are split: `slices` None is a whole run, else `--shard i/slices`."""

    slices: int | None

    @classmethod
    def of(cls, part: Slice | None) -> Partition:
        return cls(None if part is None else part.count)

    def describe(self) -> str:
        return "a whole run (no --shard)" if self.slices is None else f"--shard i/{self.slices} slices"

    def how_to_join(self) -> str:
        return "Run without --shard" if self.slices is None else f"Run with --shard i/{self.slices}"

    def to_json(self) -> str:
        return json.dumps({"partition": "whole" if self.slices is None else "slices", "slices": self.slices}) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path) -> Partition:
        try:
            data = json.loads(text)
            slices = data["slices"]
            if data["partition"] == "whole" and slices is None:
                return cls(None)
            if data["partition"] == "slices" and type(slices) is int and slices >= 1:
                return cls(slices)
        except (ValueError, KeyError, TypeError):
            pass
        raise OutputError(f"{path} is damaged ({text[:80]!r}); it records which partition of the seeds this out dir "
                          "holds. Rerun with --overwrite to discard the out dir, or set another output.dir")


def recorded_partition(out: OutDir) -> Partition | None:
    """The partition the out dir holds: its record, or (an out dir from before the record)
    what its journals say; None when nothing has run there yet."""
    path = out.partition_path
    if path.is_file():
        return Partition.from_json(path.read_text(encoding="utf-8"), path)
    if out.state().journal.is_file():
        return Partition(None)
    counts = sorted({int(match.group(2)) for journal in out.slices_dir.glob(f"*/{OutDir.JOURNAL}")
                     if (match := _SLICE_DIR.fullmatch(journal.parent.name))})
    return Partition(counts[0]) if len(counts) == 1 else None


def claim_partition(out: OutDir, wanted: Partition) -> Partition:
    """Record this run's partition if the out dir has none yet, or check it is the one
    recorded. A different one raises `OutputConflictError` (exit 2) before any call."""
    recorded = recorded_partition(out)
    if recorded is None:
        recorded = _create(out.partition_path, wanted)
    if recorded != wanted:
        raise OutputConflictError(
            f"{out.root} holds {recorded.describe()} (recorded in {out.partition_path}); this run is {wanted.describe()}. One out "
            f"dir holds one partition of the seeds: a second one would pay for every call twice and write every row "
            f"twice. {recorded.how_to_join()} to continue it, set another "
            "output.dir (--out) for this one, or rerun with --overwrite to discard what is there"
        )
    return recorded


def _create(path: Path, wanted: Partition) -> Partition:
    """Create the record atomically and exclusively; if another run just did, theirs stands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if create_exclusive(path, wanted.to_json()):
        return wanted
    return Partition.from_json(path.read_text(encoding="utf-8"), path)
