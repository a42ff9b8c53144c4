"""Bounded, atomic Parquet shards: `part-00000.parquet`, ... in one folder per config.

Bounded so that neither the writer nor a reader holds a whole config in memory; atomic
(through `write_atomic`) so that a crash mid-write never leaves a shard a reader chokes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from collabgen.files import write_atomic


class ShardWriter:
    """Buffers rows and writes a shard every `rows_per_shard`; each write is temp + rename.

    `prefix` lets several writers (slices of one run) share a folder with unique names.
    """

    def __init__(self, folder: Path, schema: pl.Schema, rows_per_shard: int, prefix: str = "part") -> None:
        self.folder = folder
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self.prefix = prefix
        self.rows_written = 0
        self.files: list[Path] = []
        self._buffer: list[dict[str, Any]] = []
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.rows_per_shard:
            self._flush()

    def close(self) -> list[Path]:
        """Write the rest (an empty first shard keeps the schema readable), drop stale shards."""
        if self._buffer or not self.files:
            self._flush()
        keep = {p.name for p in self.files}
        for stale in self.folder.glob(f"{self.prefix}-*.parquet"):
            if stale.name not in keep:
                stale.unlink()
        return self.files

    def _flush(self) -> None:
        path = self.folder / f"{self.prefix}-{len(self.files):05d}.parquet"
        frame = pl.DataFrame(self._buffer, schema=self.schema)
        write_atomic(path, lambda temp: frame.write_parquet(temp, compression="zstd", statistics=True))
        self.files.append(path)
        self.rows_written += len(self._buffer)
        self._buffer = []
