"""Progress of a run, counted in turns (the unit of work), on a terminal or in a log.

On a terminal: two lines that fit 80 columns, redrawn in place: turns done of turns
expected with a bar, conversations finished and failed, elapsed time and an ETA; then
calls and tokens per role. Not on a terminal (CI, `| tee`, nohup): one plain log line
every `log_every` seconds, so piped output is never silent for long.

A turn takes many calls (and at seconds per call, many seconds), so the display follows
the calls too: it is a usage sink the conversations record into, every answered call
refreshes the calls line and the clock, and off a terminal a call can bring the next log
line as well as a turn can. On a terminal the frame is also redrawn four times a second.

Turns expected start at seeds x `max_turns` and shrink when a conversation ends early.
A resumed run counts every journaled turn as done and expects no more turns of a finished
conversation than it had. The ETA is the remaining turns at the average rate since this
process started (turns done before a resume do not count), which stays stable where a
sliding window swings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.text import Text

from collabgen.models.usage import UsageBook

WIDTH = 80


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class RunProgress:
    def __init__(
        self, seeds: int, max_turns: int, usage: UsageBook, console: Console, enabled: bool | None = None,
        log_every: float = 10.0, now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.usage = usage
        self.console = console
        self.live = console.is_terminal if enabled is None else enabled
        self.log_every = log_every
        self.max_turns = max_turns
        self.turns_expected = seeds * max_turns
        self.turns_done = 0
        self.conversations = seeds
        self.finished = 0
        self.failed = 0
        self._clock = now
        self._started = self._clock()
        self._turns_at_start = 0
        self._last_log = self._started
        self._live: Live | None = None

    def resume_from(self, turns: Mapping[int, int], finished: Collection[int]) -> None:
        """What an earlier run left in the journal: `turns` journaled per conversation (a
        conversation in progress goes on after them), `finished` the conversations that
        ended. All of it counts as done, none of it in the rate."""
        self.finished = len(finished)
        self.turns_done = self._turns_at_start = sum(turns.values())
        self.turns_expected -= sum(max(self.max_turns - turns.get(conv, 0), 0) for conv in finished)

    # -- events ------------------------------------------------------------------

    def record(self, role: str, stage: str, *, prompt: int = 0, completion: int = 0, cached: bool = False) -> None:
        """An answered call (the run's usage book has counted it already)."""
        self._tick()

    def record_retry(self, role: str, stage: str) -> None:
        self._tick()

    def record_failure(self, role: str, stage: str) -> None:
        self._tick()

    def turn_finished(self) -> None:
        self.turns_done += 1
        self._tick()

    def conversation_finished(self, ok: bool, turns_played: int) -> None:
        """A conversation ended after `turns_played` turns (of `max_turns` expected)."""
        self.finished += 1
        self.failed += 0 if ok else 1
        self.turns_expected -= max(self.max_turns - turns_played, 0)
        self._tick()

    # -- rendering ---------------------------------------------------------------

    def eta(self) -> float | None:
        elapsed = self._clock() - self._started
        done_here = self.turns_done - self._turns_at_start
        if done_here <= 0 or elapsed <= 0:
            return None
        return max(self.turns_expected - self.turns_done, 0) * elapsed / done_here

    def lines(self) -> tuple[str, str]:
        """The two status lines, each at most 80 characters."""
        expected = max(self.turns_expected, 1)
        share = min(self.turns_done / expected, 1.0)
        bar = "#" * int(share * 20) + "-" * (20 - int(share * 20))
        elapsed = self._clock() - self._started
        head = (f"turns {self.turns_done}/{self.turns_expected} [{bar}] {share:4.0%} "
                f"conv {self.finished}/{self.conversations} failed {self.failed} "
                f"{clock(elapsed)} eta {clock(self.eta())}")
        calls = " ".join(
            f"{role} {t.calls}c/{(t.prompt_tokens + t.completion_tokens) / 1000:.0f}kt"
            for role, t in self.usage.by_role().items()
        )
        return head[:WIDTH], f"calls {calls}"[:WIDTH]

    def __rich__(self) -> Text:
        """The current frame: `Live` asks for it at every refresh, so the clock runs between events."""
        return Text("\n".join(self.lines()))

    def _tick(self) -> None:
        if self._live is not None:
            self._live.update(self)
        elif self._clock() - self._last_log >= self.log_every:
            self._last_log = self._clock()
            self.console.print(" | ".join(self.lines()), highlight=False, markup=False, soft_wrap=True)

    def __enter__(self) -> RunProgress:
        if self.live:
            self._live = Live(self, console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.update(self, refresh=True)
            self._live.__exit__(kind, value, tb)
