"""Slices of a seed set for array jobs and Ray: `--shard i/n` takes every seed whose
index is i modulo n. Slices are disjoint, deterministic, and together the whole set.

Each slice keeps its own journal and request cache under `.collabgen/slices/i-of-n/`
and writes shards named `s{i}of{n}-NNNNN.parquet`, so slices share one out dir (on a
shared filesystem) without touching each other's files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from collabgen.config.errors import CollabgenError

STATE_DIR = ".collabgen"


@dataclass(frozen=True)
class Slice:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Slice:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise CollabgenError(f"--shard: expected i/n such as 0/4, got {text!r}")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or not 0 <= index < count:
            raise CollabgenError(f"--shard: need 0 <= i < n, got {index}/{count}")
        return cls(index, count)

    def contains(self, seed_index: int) -> bool:
        return seed_index % self.count == self.index

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    @property
    def shard_prefix(self) -> str:
        return f"s{self.index:03d}of{self.count:03d}"


def state_dir(out: Path, part: Slice | None) -> Path:
    """Where a run (or one slice of it) keeps its journal, cache and manifest."""
    base = out / STATE_DIR
    return base if part is None else base / "slices" / part.name


def shard_prefix(part: Slice | None) -> str:
    return "part" if part is None else part.shard_prefix
