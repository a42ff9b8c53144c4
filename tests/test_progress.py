"""The progress display: turns of turns expected, 80 columns, a stable ETA, log lines off a terminal."""

from __future__ import annotations

import io
import time

from rich.console import Console

from collabgen.app.progress import RunProgress
from collabgen.models.usage import UsageBook


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def progress(seeds: int = 12, max_turns: int = 6, terminal: bool = False, log_every: float = 10.0):
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=200)
    clock = Clock()
    usage = UsageBook()
    for role in ("policy", "user", "judge"):
        usage.record(role, "candidates", prompt=1_234_567, completion=98_765)
    bar = RunProgress(seeds, max_turns, usage, console, enabled=terminal, log_every=log_every, now=clock)
    return bar, clock, out


def test_counts_turns_and_shrinks_the_expected_turns_when_a_conversation_ends_early():
    bar, clock, _ = progress(seeds=2, max_turns=6)
    assert bar.turns_expected == 12
    for _ in range(2):
        bar.turn_finished()
    bar.conversation_finished(ok=True, turns_played=2)
    assert (bar.turns_done, bar.turns_expected, bar.finished) == (2, 8, 1)
    head, _ = bar.lines()
    assert head.startswith("turns 2/8 ")


def test_both_lines_fit_eighty_columns_even_with_large_numbers():
    bar, clock, _ = progress(seeds=123_456, max_turns=14)
    clock.t = 86_400 * 3
    bar.turns_done = 987_654
    for line in bar.lines():
        assert len(line) <= 80


def test_the_eta_is_the_average_rate_since_start_and_does_not_swing():
    bar, clock, _ = progress(seeds=10, max_turns=10)
    etas = []
    for step in range(1, 51):
        clock.t = step * 2.0 + (0.9 if step % 2 else -0.9)  # jittery arrivals, 2 s per turn on average
        bar.turn_finished()
        etas.append(bar.eta())
    # Halfway, 50 turns remain at about 2 s each.
    assert 95 <= etas[-1] <= 105
    # After the first few turns, consecutive estimates move by at most a tenth.
    assert all(abs(a - b) <= 0.1 * a for a, b in zip(etas[20:], etas[21:]))


def test_a_resumed_run_counts_earlier_turns_as_done_but_not_in_the_rate():
    bar, clock, _ = progress(seeds=4, max_turns=5)
    bar.resume_from({0: 5, 1: 5}, finished={0, 1})
    assert bar.eta() is None
    clock.t = 10.0
    bar.turn_finished()
    assert bar.eta() == 9 * 10.0  # 9 turns left at 10 s per turn done in this process


def test_a_resumed_run_counts_the_turns_of_conversations_in_progress_and_of_early_ends():
    # The journal after a kill -9: conversation 0 ended after 2 of 6 turns, 1 after all 6,
    # 2 was at its third turn, 3 had not started.
    bar, clock, _ = progress(seeds=4, max_turns=6)
    bar.resume_from({0: 2, 1: 6, 2: 3}, finished={0, 1})
    assert (bar.turns_done, bar.turns_expected, bar.finished) == (11, 20, 2)
    for _ in range(2):
        bar.turn_finished()
    bar.conversation_finished(ok=True, turns_played=5)  # conversation 2: turns 3 and 4 in this run
    for _ in range(6):
        bar.turn_finished()
    bar.conversation_finished(ok=True, turns_played=6)
    head, _ = bar.lines()
    assert head.startswith("turns 19/19 [####################] 100% conv 4/4 "), head


def test_every_answered_call_is_shown_between_turns_off_a_terminal():
    bar, clock, out = progress(log_every=10.0)
    with bar:
        for step in range(1, 31):  # a call a second, no turn finished in 30 s
            clock.t = step * 1.0
            bar.usage.record("policy", "candidates", prompt=10, completion=10)
            bar.record("policy", "candidates", prompt=10, completion=10)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("turns ")]
    assert len(lines) == 3, out.getvalue()
    assert [("0:10" in line, "0:20" in line, "0:30" in line) for line in lines] == [
        (True, False, False), (False, True, False), (False, False, True)]
    assert "policy 11c/" in lines[0] and "policy 31c/" in lines[2]


def test_on_a_terminal_the_frame_follows_the_calls_and_the_clock_between_turns():
    bar, clock, out = progress(terminal=True)
    with bar:
        clock.t = 7.0
        for _ in range(4):
            bar.usage.record("judge", "interactivity", prompt=10, completion=10)
            bar.record("judge", "interactivity")
        deadline = time.monotonic() + 5
        while "judge 5c/" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)  # rich redraws four times a second
        frame = out.getvalue()
    assert "judge 5c/" in frame and "0:07 eta --:--" in frame


def test_off_a_terminal_a_log_line_every_few_seconds():
    bar, clock, out = progress(log_every=10.0)
    with bar:
        for step in range(1, 31):
            clock.t = step * 1.0
            bar.turn_finished()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("turns ")]
    assert len(lines) == 3  # at 10 s, 20 s and 30 s
    assert "turns 10/72 [" in lines[0] and "calls judge" in lines[0]


def test_a_run_resumed_from_a_killed_runs_journal_ends_on_every_turn_and_conversation(tmp_path):
    # A kill -9 leaves the journal cut at a record boundary: some conversations ended, one in
    # the middle of its turns. The rerun's last frame must read all turns of all conversations.
    import asyncio
    import json
    import re

    from collabgen.app.generate import run_async
    from collabgen.tasks.recipe_check import load_recipe
    from tests.fakeserver import FakeLLMServer
    from tests.helpers import math_recipe, write_recipe
    from tests.scripts import install_math

    with FakeLLMServer() as server:
        install_math(server)
        recipe = load_recipe(write_recipe(tmp_path / "r.yaml", math_recipe(
            server.base_url, tmp_path / "out", **{"task.limit": 4, "generation.conversations": 1})))
        asyncio.run(run_async(recipe, progress=False))
        journal = tmp_path / "out" / ".collabgen" / "journal.jsonl"
        records = journal.read_text().splitlines(keepends=True)
        ends = [i for i, line in enumerate(records) if json.loads(line)["kind"] == "end"]
        assert len(ends) == 4
        cut = ends[1] + 2  # two conversations ended, the third one turn in
        assert cut < ends[2]
        journal.write_text("".join(records[:cut]))
        out = io.StringIO()
        console = Console(file=out, force_terminal=True, width=200)
        asyncio.run(run_async(load_recipe(tmp_path / "r.yaml"), progress=True, console=console))
    frames = re.findall(r"turns (\d+)/(\d+) \[[#-]+\]\s+(\d+)% conv (\d+)/(\d+)", out.getvalue())
    done, expected, share, finished, conversations = frames[-1]
    turns = sum(1 for line in journal.read_text().splitlines() if json.loads(line)["kind"] == "turn")
    assert (done, expected, share, finished, conversations) == (str(turns), str(turns), "100", "4", "4")


def test_a_run_on_a_terminal_shows_its_calls_before_the_first_turn_ends(tmp_path):
    import asyncio
    import re

    from collabgen.app.generate import run_async
    from collabgen.tasks.recipe_check import load_recipe
    from tests.fakeserver import FakeLLMServer
    from tests.helpers import math_recipe, write_recipe
    from tests.scripts import install_math

    with FakeLLMServer(latency=0.15) as server:  # a turn: about ten calls one after another
        install_math(server)
        recipe = load_recipe(write_recipe(tmp_path / "r.yaml", math_recipe(
            server.base_url, tmp_path / "out", **{"task.limit": 1, "generation.max_turns": 1})))
        out = io.StringIO()
        asyncio.run(run_async(recipe, progress=True, console=Console(file=out, force_terminal=True, width=200)))
    before_any_turn = re.findall(r"turns 0/1 .*?\n.*?calls (.*?)(?:\x1b|\n|$)", out.getvalue())
    assert any(re.search(r"policy [1-9]\d*c/", calls) for calls in before_any_turn), before_any_turn
