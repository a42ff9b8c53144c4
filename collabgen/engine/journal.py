"""Append-only journal of finished turns and ended conversations.

A line is appended (and flushed) when a turn finishes, so a kill at any instant loses at
most the turns in flight, whose finished calls the request cache still holds. A line cut
short by a kill is dropped on the next open. Later lines win over earlier ones for the
same (conversation, turn), so a replayed turn never duplicates a row.

A damaged line anywhere else (a disk error, a hand edit) is not guessed around: reading
stops with `JournalDamaged`, naming the file and line and the exact command that repairs
it (`repair_journal`: drop that record and what follows it for its conversation, keep a
backup). Besides turns and ends, a `spent` record keeps the usage of calls no finished
turn holds (a failed or interrupted conversation's last turn), so the manifest counts
every paid call.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collabgen.config.errors import OutputError
from collabgen.engine.records import FINISHED, EndRecord, TurnRecord
from collabgen.files import write_atomic
from collabgen.models.usage import UsageBook

KINDS = ("turn", "end", "spent")
_INDEX = re.compile(rb'"index":\s*(\d+)')


class JournalDamaged(OutputError):
    """A journal line that is not a record, named by file and line, with the repair command."""

    def __init__(self, path: Path, line: int, problem: str, conv: int | None = None) -> None:
        self.path, self.line, self.conv = path, line, conv
        whose = f" (conversation index {conv})" if conv is not None else ""
        super().__init__(
            f"{path}:{line}: damaged journal record{whose}: {problem}. Run `collabgen repair "
            f"{shlex.quote(str(path))}` to drop it and what follows it for its conversation (a backup of "
            "the journal is kept; the request cache makes redoing those turns cheap), then run again"
        )


@dataclass
class JournalIndex:
    """Where each record lives, so the journal is read back one record at a time."""

    turns: dict[tuple[int, int], int] = field(default_factory=dict)  # (index, turn) -> byte offset
    conv_ids: dict[int, str] = field(default_factory=dict)
    ends: dict[int, EndRecord] = field(default_factory=dict)
    last_turn: dict[int, int] = field(default_factory=dict)
    spent: UsageBook = field(default_factory=UsageBook)  # calls no journaled turn holds

    def finished(self) -> set[int]:
        return {i for i, end in self.ends.items() if end.finished}


class LogReader:
    """An append log read only: its complete records, a last line cut short skipped, the
    file neither repaired nor opened for writing (`collabgen view` reads an eval's log)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> Iterator[dict[str, Any]]:
        for _, _, record in self._scan():
            yield record

    def _scan(self) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(byte offset, line number, record) of every complete line; a line that is not a
        JSON object raises `JournalDamaged`."""
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            offset = 0
            for number, line in enumerate(handle, start=1):
                if line.endswith(b"\n"):
                    yield offset, number, self._parse(line, number)
                offset += len(line)

    def _parse(self, line: bytes, number: int) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
            raise JournalDamaged(self.path, number, f"not valid JSON ({err})", guess_index(line)) from None
        if not isinstance(record, dict):
            raise JournalDamaged(self.path, number, "not a JSON object")
        return record


class AppendLog(LogReader):
    """JSON lines appended and fsynced one record at a time; a last line cut short by a
    kill is dropped when the log is opened again. The run's journal and eval's share it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._handle = path.open("a", encoding="utf-8")

    def _repair(self) -> None:
        """Drop a trailing line cut short by a kill."""
        if not self.path.exists():
            return
        with self.path.open("rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


class Journal(AppendLog):
    """The run's journal: finished turns and ended conversations, indexed for resuming."""

    def index(self) -> JournalIndex:
        index = JournalIndex()
        for offset, number, record in self._scan():
            conv = self._check(record, number)
            index.conv_ids[conv] = record["conv_id"]
            if record["kind"] == "turn":
                turn = int(record["turn"])
                index.turns[(conv, turn)] = offset
                index.last_turn[conv] = max(index.last_turn.get(conv, -1), turn)
                if index.ends.get(conv) is not None and not index.ends[conv].finished:
                    del index.ends[conv]  # a failed conversation that was resumed
            elif record["kind"] == "end":
                try:
                    index.ends[conv] = EndRecord(**{k: v for k, v in record.items() if k != "kind"})
                except TypeError as err:
                    raise JournalDamaged(self.path, number, f"not an end record ({err})", conv) from None
            else:
                index.spent.merge(UsageBook.from_dict(record["usage"]))
        return index

    def _check(self, record: dict[str, Any], number: int) -> int:
        """The record's conversation index, after checking it has the shape of its kind."""
        kind, conv = record.get("kind"), record.get("index")
        problem = None
        if kind not in KINDS:
            problem = f"unknown kind {kind!r}"
        elif not isinstance(conv, int) or not isinstance(record.get("conv_id"), str):
            problem = "no conversation index or id"
        elif kind == "turn" and not isinstance(record.get("turn"), int):
            problem = "a turn without a turn number"
        elif kind == "end" and record.get("status") not in (*FINISHED, "failed"):
            problem = "an end without a status"
        elif kind == "spent" and not _is_usage(record.get("usage")):
            problem = "usage is not a usage table"
        if problem is not None:
            raise JournalDamaged(self.path, number, problem, conv if isinstance(conv, int) else None)
        return int(conv)  # type: ignore[arg-type]

    def read_turn(self, offset: int) -> TurnRecord:
        with self.path.open("rb") as handle:
            handle.seek(offset)
            line = handle.readline()
        try:
            return TurnRecord.from_json(json.loads(line))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            number = _line_at(self.path, offset)
            raise JournalDamaged(self.path, number, f"not a turn record ({err})", guess_index(line)) from None

    def append_spent(self, conv_id: str, index: int, usage: UsageBook) -> None:
        """Journal what a conversation's unjournaled calls cost (nothing when it is empty)."""
        table = usage.to_dict()
        if table:
            self.append({"kind": "spent", "conv_id": conv_id, "index": index, "usage": table})


def _is_usage(value: object) -> bool:
    if not isinstance(value, dict):
        return False
    try:
        UsageBook.from_dict(value)
    except (AttributeError, TypeError, ValueError):
        return False
    return True


def guess_index(line: bytes) -> int | None:
    """The conversation index of a damaged line, when its start survived (records begin
    with their conversation id and index)."""
    found = _INDEX.search(line[:400])
    return int(found.group(1)) if found else None


def _line_at(path: Path, offset: int) -> int:
    with path.open("rb") as handle:
        return handle.read(offset).count(b"\n") + 1


@dataclass
class JournalRepair:
    """What `repair_journal` did: lines dropped (1-based, of the original) and the backup."""

    path: Path
    dropped: list[int]
    conversations: list[int]
    backup: Path | None


def repair_journal(path: Path) -> JournalRepair:
    """Drop damaged lines, and every later line of the same conversation (its later turns
    were built on the damaged one; the cache replays them cheaply). A damaged line whose
    conversation cannot be read cuts that conversation where its turns stop following on
    (a gap). The original is kept as `<name>.bak-<timestamp>`; an intact journal is left
    as it is."""
    kept, dropped, cut = _classify(path, path.read_bytes().splitlines(keepends=True))
    gaps = _gaps(kept)
    if not dropped and not gaps:
        return JournalRepair(path=path, dropped=[], conversations=[], backup=None)
    backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%dT%H%M%S')}")
    shutil.copy2(path, backup)
    body = b"".join(line for number, line, _ in kept if number not in gaps)
    write_atomic(path, body)
    cut |= {int(record["index"]) for number, _, record in kept if number in gaps}
    return JournalRepair(path=path, dropped=sorted([*dropped, *gaps]), conversations=sorted(cut), backup=backup)


def _classify(path: Path, lines: list[bytes]) -> tuple[list[tuple[int, bytes, dict[str, Any]]], list[int], set[int]]:
    """(kept lines with their records, dropped line numbers, conversations cut)."""
    log = Journal.__new__(Journal)  # only its line checks, no file handle
    log.path = path
    kept: list[tuple[int, bytes, dict[str, Any]]] = []
    dropped: list[int] = []
    cut: set[int] = set()
    for number, line in enumerate(lines, start=1):
        if not line.endswith(b"\n"):
            dropped.append(number)  # cut short by a kill: what every open drops anyway
            continue
        try:
            record = log._parse(line, number)
            if "kind" in record:  # a run journal's record (eval's have none)
                log._check(record, number)
                if record["kind"] == "turn":
                    TurnRecord.from_json(record)
        except (JournalDamaged, KeyError, TypeError, ValueError, AttributeError) as err:
            dropped.append(number)
            conv = err.conv if isinstance(err, JournalDamaged) else guess_index(line)
            if conv is not None:
                cut.add(conv)
            continue
        if record.get("index") in cut:
            dropped.append(number)
        else:
            kept.append((number, line, record))
    return kept, dropped, cut


def _gaps(kept: list[tuple[int, bytes, dict[str, Any]]]) -> set[int]:
    """Lines of run-journal conversations after a turn gap (turn k+2 after turn k): what
    follows a damaged record whose conversation could not be read."""
    highest: dict[int, int] = {}
    broken: set[int] = set()
    dropped: set[int] = set()
    for number, _, record in kept:
        conv = record.get("index")
        if "kind" not in record or not isinstance(conv, int):
            continue
        if conv in broken:
            dropped.add(number)
        elif record["kind"] == "turn":
            if record["turn"] > highest.get(conv, -1) + 1:
                broken.add(conv)
                dropped.add(number)
            else:
                highest[conv] = max(highest.get(conv, -1), record["turn"])
    return dropped
