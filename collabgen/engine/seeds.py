"""Streaming seeds from a local file or a Hub dataset, one validated row at a time.

Never materialises the seed set: memory stays flat in the number of seeds. Files are
read as bytes and decoded line by line, so a stray non-UTF-8 byte is reported with its
file, line and column, and a row over `source.max_row_bytes` is refused as soon as that
many bytes are read (a 50 MB row used to be accepted and sent in every prompt of its
conversation, at 1.4 GiB of memory).
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

from collabgen.config.errors import SeedError
from collabgen.config.recipe import SourceConfig, TaskConfig
from collabgen.config.textfile import decode_utf8
from collabgen.engine.source_select import SelectionStats, select_rows
from collabgen.tasks.base import SeedModel, Task

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".jsonl.gz", ".json.gz", ".csv.gz")


@dataclass(frozen=True)
class BadRow:
    """A row that could not be read as an object; kept in the stream so `on_bad_row: skip`
    can count it and go on (a reader cannot continue after raising)."""

    reason: str


@dataclass(frozen=True)
class SkippedRow:
    where: str
    reason: str


def iter_rows(source: SourceConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) pairs; `where` names the file and line (or dataset and row)."""
    limit = source.max_row_bytes
    if source.hub is not None:
        yield from _sized(_hub_rows(source), limit)
        return
    assert source.path is not None
    path = source.path
    if not path.exists():
        raise SeedError(f"seed file not found: {path}", loc=("path",))
    if path.is_dir():
        raise SeedError(f"{path} is a folder; name a seed file ({', '.join(SUFFIXES)})", loc=("path",))
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if suffix in (".jsonl", ".jsonl.gz"):
        yield from (_sized(_json_rows(path), limit) if _starts_with_array(path) else _jsonl_rows(path, limit))
    elif suffix in (".json", ".json.gz"):
        yield from _sized(_json_rows(path), limit)
    elif suffix == ".parquet":
        yield from _sized(_parquet_rows(path), limit)
    elif suffix in (".csv", ".csv.gz"):
        yield from _csv_rows(path, limit)
    else:
        raise SeedError(f"{path}: unsupported seed file type; use one of {', '.join(SUFFIXES)}", loc=("path",))


def iter_seeds(
    task: Task, config: TaskConfig, skipped: list[SkippedRow] | None = None, stats: SelectionStats | None = None,
) -> Iterator[tuple[int, SeedModel]]:
    """(index, seed) for the rows the recipe selects (`source.select`, then `offset`,
    `limit`); `stats` counts the rows the selection left out. A malformed row stops the
    stream (`on_bad_row: fail`, the default) or is left out and appended to `skipped`
    (`skip`); its index stays taken, so conversation ids do not shift."""
    rows = islice(select_rows(lambda: iter_rows(config.source), config.source.select, stats), config.offset, None)
    if config.limit is not None:
        rows = islice(rows, config.limit)
    for index, (where, row) in enumerate(rows, start=config.offset):
        try:
            if isinstance(row, BadRow):
                raise SeedError(f"{where}: malformed seed row: {row.reason}")
            seed = task.seed_from_row(row, config.source.fields, where)
        except SeedError as err:
            if config.source.on_bad_row == "fail" or err.loc:
                raise
            if skipped is not None:
                skipped.append(SkippedRow(where=where, reason=str(err)))
            continue
        yield index, seed


def too_large(where: str, size: int | str, limit: int) -> SeedError:
    return SeedError(
        f"{where}: seed row is {size} bytes, over task.source.max_row_bytes ({limit:,}): a seed goes into "
        "every prompt of its conversation; raise max_row_bytes in the recipe if the row is meant to be this large"
    )


def _open(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped on the fly for `.gz` (streamed, never whole in memory)."""
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")


def _starts_with_array(path: Path) -> bool:
    """A `.jsonl` file that is really one JSON array (a common export) is read as one."""
    with _open(path) as handle:
        head = handle.read(4096).lstrip()
    return head.startswith(b"[")


def _lines(path: Path, limit: int) -> Iterator[tuple[int, str]]:
    """(line number, text) of a file read as bytes; a line longer than `limit` bytes is
    refused after reading `limit + 1` of them, a bad byte is named by line and column."""
    with _open(path) as handle:
        number = 0
        while True:
            raw = handle.readline(limit + 2)
            if not raw:
                return
            number += 1
            body = raw.rstrip(b"\r\n")
            if len(body) > limit:
                raise too_large(f"{path}:{number}", f"more than {limit:,}", limit)
            yield number, decode_utf8(raw, path, SeedError, first_line=number)


def _jsonl_rows(path: Path, limit: int) -> Iterator[tuple[str, dict[str, Any]]]:
    for line_number, line in _lines(path, limit):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            yield f"{path}:{line_number}", BadRow(f"not valid JSON ({err.msg})")
            continue
        except RecursionError:
            yield f"{path}:{line_number}", BadRow("not a seed row: JSON nested too deeply")
            continue
        yield f"{path}:{line_number}", _json_row(row)


def _csv_rows(path: Path, limit: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """CSV rows named by the line they start on (a quoted field may span lines)."""
    csv.field_size_limit(max(csv.field_size_limit(), limit))
    lines = _lines(path, limit)
    reader = csv.DictReader(line for _, line in lines)
    start = 2
    try:
        for row in reader:
            where = f"{path}:{start}"
            start = reader.line_num + 1
            if sum(len(str(value)) for value in row.values()) > limit:
                raise too_large(where, f"more than {limit:,}", limit)
            yield where, dict(row)
    except csv.Error as err:
        raise SeedError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None


def _json_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | BadRow]]:
    """A JSON array of objects; items are numbered from 1, like lines and rows."""
    with _open(path) as handle:
        text = decode_utf8(handle.read(), path, SeedError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SeedError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise SeedError(f"{path}: not seed rows: JSON nested too deeply") from None
    if not isinstance(data, list):
        raise SeedError(f"{path}: expected a JSON list of objects (or use .jsonl)")
    for i, row in enumerate(data, start=1):
        yield f"{path}: item {i}", _json_row(row)


def _json_row(row: Any) -> dict[str, Any] | BadRow:
    """A parsed row, or why not: not an object, or text JSON allows but Unicode does not
    (a lone surrogate escape such as `\\ud800`, which no file or request could carry)."""
    if not isinstance(row, dict):
        return BadRow("expected a JSON object")
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        return BadRow(f"not valid Unicode text: a lone surrogate escape (\\u{ord(err.object[err.start]):04x})")
    except RecursionError:
        return BadRow("not a seed row: JSON nested too deeply")
    return row


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    row_number = 1  # 1-based, like the lines of a text file
    for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
        for row in batch.to_pylist():
            yield f"{path}: row {row_number}", row
            row_number += 1


def _sized(rows: Iterator[tuple[str, dict[str, Any]]], limit: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows whose JSON form is at most `limit` bytes (for sources read whole or as records)."""
    for where, row in rows:
        if isinstance(row, BadRow):
            yield where, row
            continue
        size = len(json.dumps(row, ensure_ascii=False, default=str).encode("utf-8"))
        if size > limit:
            raise too_large(where, f"{size:,}", limit)
        yield where, row


def _hub_rows(source: SourceConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    import datasets

    hub = source.hub
    assert hub is not None
    _check_hub_reachable(hub.name)
    try:
        dataset = datasets.load_dataset(
            hub.name, hub.config, split=hub.split, revision=hub.revision, streaming=True
        )
    except Exception as err:  # datasets raises many kinds; the user needs the name and why
        raise SeedError(
            f"cannot load dataset {hub.name!r} split {hub.split!r}: {err}; without network access, save the "
            "rows where there is one and point task.source.path at the .jsonl/.parquet file", loc=("hub",),
        ) from None
    for i, row in enumerate(dataset, start=1):
        yield f"{hub.name}[{hub.split}] row {i}", dict(row)


def _check_hub_reachable(name: str, timeout: float = 5.0) -> None:
    """One request to the Hub, with a short timeout, before `datasets` is asked: offline,
    `datasets` retries for about 25 seconds with a warning per attempt before it gives up.

    With the library's own offline mode (`HF_HUB_OFFLINE=1`) no request is made and
    `datasets` reads its local cache.
    """
    import datasets.config
    from huggingface_hub import get_session

    if datasets.config.HF_HUB_OFFLINE:
        return
    endpoint = datasets.config.HF_ENDPOINT
    try:
        get_session().head(endpoint, timeout=timeout)
    except Exception as err:  # the session's transport errors (httpx or requests, by huggingface_hub version)
        raise SeedError(
            f"cannot reach the Hugging Face Hub at {endpoint} to load dataset {name!r} ({err or type(err).__name__}); "
            "without network access, save the rows where there is one and point task.source.path at the "
            ".jsonl/.parquet file, or set HF_HUB_OFFLINE=1 to read a copy in the local datasets cache", loc=("hub",),
        ) from None


def placeholder_seed(task: Task) -> SeedModel:
    """A seed of the task's shape with stand-in values, for estimates that must not open
    the seed source (`collabgen plan` on a Hub dataset makes no network access)."""
    stand_ins = {str: "(seed text)", bool: False, int: 0, float: 0.0, list: []}
    values: dict[str, Any] = {}
    for name, field in task.Seed.model_fields.items():
        annotation = getattr(field.annotation, "__origin__", field.annotation)
        values[name] = stand_ins.get(annotation, "(seed text)")
    return task.Seed.model_construct(**values)
