"""Declarative row selection (`task.source.select`): datasets built as the reference builds them.

Stages, in order, on source columns (before `task.source.fields` maps them):

1. `where`: keep rows whose column equals the value (or one of a list of values).
2. `sort_by` + `top` / `top_fraction` / `top_parts`: keep the rows with the largest keys
   (the smallest with `descending: false`); ties keep the later row, as the tail of a
   stable ascending sort does (the reference's "most recent articles"). Rows without a key
   are skipped. Only the kept rows are held in memory, on a heap, so the source itself
   streams. `top_parts: {train, test}` keeps `int(N * train) + int(N * test)` of all N
   rows, the reference's Medium count, exactly.
3. `split`: the kept rows' positions (in source order; after a sort, in ascending key
   order, as the reference lists them) shuffled with `random.Random(seed)`, as the
   reference does for BigCodeBench and Medium (`shuffle: labels` / `none`: the paper-era
   code's BigCodeBench and Medium splits); `part` keeps train or test. With
   `top_parts` and no `train_fraction`, the train part has `int(N * train)` rows.
4. `max_tokens`: rows whose column has more cl100k tokens than the limit are skipped.

Sorted rows then come out in the sort's order (newest first with `descending`). Every
row left out is counted by reason in `SelectionStats` (the run's manifest and log show
them); none is an error. A selection that needs the row count first (`top_fraction`,
`top_parts`, or `split` without `sort_by`) reads the source twice; a split keeps one byte
per row.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from collabgen.config.errors import SeedError
from collabgen.config.recipe import SelectConfig, SplitConfig, TokenLimit
from collabgen.tasks.reference_metrics import cl100k_tokens

Row = tuple[str, dict[str, Any]]
"""(where, row): `where` names the file and line (or dataset and row)."""


@dataclass
class SelectionStats:
    """What `task.source.select` read and left out, by reason."""

    read: int = 0
    selected: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"rows_read": self.read, "rows_selected": self.selected, "rows_skipped": dict(sorted(self.skipped.items()))}

    def describe(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"
        return f"task.source.select: {self.selected} of {self.read} rows selected; skipped: {skipped}"


SKIP_REASONS = {
    "where": "not matching `where`",
    "no_sort_key": "no value in the `sort_by` column",
    "not_top": "outside `top` / `top_fraction`",
    "other_part": "in the other part of the split",
    "too_long": "over `max_tokens`",
}


def select_rows(open_rows: Callable[[], Iterator[Row]], select: SelectConfig | None,
                stats: SelectionStats | None = None) -> Iterator[Row]:
    """The rows of the source that `select` keeps, in order; `open_rows` opens the source
    afresh (called twice when the selection needs the row count first)."""
    stats = stats if stats is not None else SelectionStats()
    if select is None:
        yield from open_rows()
        return
    rows = _where(_readable(open_rows()), select.where, stats)
    if select.sort_by is not None:
        k, n_train = _top_count(open_rows, select)
        kept = _top(rows, select, k, stats)
        if select.split is not None:
            keep = _split_mask(len(kept), select.split, n_train)
            stats.skipped["other_part"] = stats.skipped.get("other_part", 0) + keep.count(0)
            kept = [row for row, chosen in zip(kept, keep) if chosen]
        rows = iter(reversed(kept) if select.descending else kept)
    elif select.split is not None:
        rows = _in_part(rows, _split_mask(_count(open_rows, select), select.split), stats)
    for row in _within_tokens(rows, select.max_tokens, stats):
        stats.selected += 1
        yield row


def _readable(rows: Iterator[Row]) -> Iterator[Row]:
    """A selection reads every row's columns: a row that is not an object stops it, named
    (`on_bad_row: skip` applies to the rows a selection keeps, not to what it must read)."""
    for place, row in rows:
        if not isinstance(row, dict):
            raise SeedError(f"{place}: malformed seed row: {getattr(row, 'reason', 'not an object')}")
        yield place, row


def _where(rows: Iterator[Row], where: dict[str, Any], stats: SelectionStats | None) -> Iterator[Row]:
    for place, row in rows:
        if stats is not None:
            stats.read += 1
        if all(_matches(place, row, column, wanted) for column, wanted in where.items()):
            yield place, row
        elif stats is not None:
            stats.skip("where")


def _matches(place: str, row: dict[str, Any], column: str, wanted: Any) -> bool:
    if column not in row:
        raise SeedError(f"{place}: task.source.select.where: column {column!r} is missing; the row has {sorted(row)}")
    accepted = wanted if isinstance(wanted, list) else [wanted]
    return row[column] in accepted


def _count(open_rows: Callable[[], Iterator[Row]], select: SelectConfig) -> int:
    """Rows that pass `where` (and have a sort key, when sorting): a first, uncounted pass."""
    rows = _where(open_rows(), select.where, None)
    if select.sort_by is None:
        return sum(1 for _ in rows)
    return sum(1 for _, row in rows if row.get(select.sort_by) is not None)


def _top_count(open_rows: Callable[[], Iterator[Row]], select: SelectConfig) -> tuple[int, int | None]:
    """How many top rows to keep, and, with `top_parts`, how many of them are train (each
    part rounded down on its own, of all the rows, as the reference counts Medium's)."""
    if select.top is not None:
        return select.top, None
    if select.top_parts is not None:
        n_train, n_test = select.top_parts.counts(_count(open_rows, select))
        return n_train + n_test, n_train
    assert select.top_fraction is not None
    return math.floor(_count(open_rows, select) * select.top_fraction), None


def _top(rows: Iterator[Row], select: SelectConfig, k: int, stats: SelectionStats) -> list[Row]:
    """The `k` rows with the largest (or smallest) keys, in ascending key order (ties by position)."""
    column, sign = select.sort_by, (1 if select.descending else -1)
    assert column is not None
    heap: list[tuple[_Key, int, Row]] = []
    for position, (place, row) in enumerate(rows):
        value = row.get(column)
        if value is None:
            stats.skip("no_sort_key")
            continue
        entry = (_Key(value, sign, place, column), sign * position, (place, row))
        if len(heap) < k:
            heapq.heappush(heap, entry)
        elif k and entry[:2] > heap[0][:2]:
            heapq.heapreplace(heap, entry)
            stats.skip("not_top")
        else:
            stats.skip("not_top")
    ordered = sorted(heap, key=lambda e: e[:2])
    return [row for _, _, row in (ordered if sign > 0 else reversed(ordered))]


class _Key:
    """A sort value compared in the requested direction, with a clear error for values
    that do not compare (e.g. a number among dates written as text)."""

    __slots__ = ("value", "sign", "place", "column")

    def __init__(self, value: Any, sign: int, place: str, column: str) -> None:
        self.value, self.sign, self.place, self.column = value, sign, place, column

    def _cmp(self, other: _Key) -> int:
        try:
            less = self.value < other.value
            greater = other.value < self.value
        except TypeError:
            raise SeedError(
                f"{self.place}: task.source.select.sort_by: column {self.column!r} holds {self.value!r}, which "
                f"does not compare with {other.value!r} ({other.place})"
            ) from None
        return self.sign * (int(greater) - int(less))

    def __lt__(self, other: _Key) -> bool:
        return self._cmp(other) < 0

    def __gt__(self, other: _Key) -> bool:
        return self._cmp(other) > 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and self._cmp(other) == 0

    def __hash__(self) -> int:  # pragma: no cover - keys are never hashed
        return id(self)


def _split_mask(n: int, split: SplitConfig, n_train: int | None = None) -> bytearray:
    """One byte per position: 1 for the positions of `split.part`. The reference's way:
    `random.Random(seed).shuffle(list(range(n)))`, the first `int(n * train_fraction)` train
    (with `test_first`, the first `n - int(n * train_fraction)` test); `n_train` (from
    `top_parts`) gives the train count instead. `shuffle: labels` deals the shuffled list of
    part labels to the positions in order instead (row j takes label `order[j]`), as the
    paper-era code splits BigCodeBench; `shuffle: none` keeps the order (its Medium split)."""
    order = list(range(n))
    if split.shuffle != "none":
        random.Random(split.seed).shuffle(order)
    if n_train is None:
        assert split.train_fraction is not None  # the recipe check: a split is sized once
        n_train = int(n * split.train_fraction)
    n_train = min(n_train, n)  # fewer rows than counted: the source changed between its reads
    first, first_part = (n - n_train, "test") if split.test_first else (n_train, "train")
    mine = split.part == first_part
    if split.shuffle == "labels":
        return bytearray((label < first) == mine for label in order)
    mask = bytearray(n)
    chosen = order[:first] if mine else order[first:]
    for position in chosen:
        mask[position] = 1
    return mask


def _in_part(rows: Iterator[Row], keep: bytearray, stats: SelectionStats) -> Iterator[Row]:
    for position, row in enumerate(rows):
        if position >= len(keep):
            raise SeedError(f"{row[0]}: task.source.select.split: the source changed between its two reads")
        if keep[position]:
            yield row
        else:
            stats.skip("other_part")


def _within_tokens(rows: Iterator[Row], limit: TokenLimit | None, stats: SelectionStats) -> Iterator[Row]:
    for place, row in rows:
        if limit is not None:
            text = row.get(limit.column)
            if not isinstance(text, str):
                raise SeedError(f"{place}: task.source.select.max_tokens: column {limit.column!r} is "
                                f"{'missing' if text is None else type(text).__name__}, not text; the row has "
                                f"{sorted(row)}")
            if cl100k_tokens(text) > limit.limit:
                stats.skip("too_long")
                continue
        yield place, row
