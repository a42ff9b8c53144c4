"""Figures of one workload, from the server's call log, the engine's own report and the manifest.

The call log holds, per call, `[model, status, n, started, slot, finished, body]`: when the
request's headers were parsed, when it took one of the K processing slots, when its reply
was written, and when its body had been read (see `bench.server`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.run import Measured


def busy_timeline(intervals: list[tuple[float, float]]) -> list[tuple[float, int]]:
    """(time, count from this instant on) at every change of the number of open intervals."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    timeline, count = [], 0
    for t, delta in events:
        count += delta
        timeline.append((t, count))
    return timeline


def integral(timeline: list[tuple[float, int]], start: float, end: float) -> float:
    total, prev_t, prev_c = 0.0, None, 0
    for t, c in timeline:
        if prev_t is not None:
            lo, hi = max(prev_t, start), min(t, end)
            if hi > lo:
                total += prev_c * (hi - lo)
        prev_t, prev_c = t, c
    return total


MIN_STEADY_CALLS = 10  # a steady window shorter than 10 x L is no steady state (tiny runs)


def steady_window(timeline: list[tuple[float, int]], slots: int) -> tuple[float, float] | None:
    """Steady state: from the first instant all K slots are busy to the last instant they all are."""
    full = [i for i, (_, c) in enumerate(timeline) if c >= slots]
    if not full:
        return None
    start = timeline[full[0]][0]
    last = full[-1]
    end = timeline[last + 1][0] if last + 1 < len(timeline) else timeline[last][0]
    return (start, end) if end > start else None


def idle_split(busy: list[tuple[float, int]], queued: list[tuple[float, int]], slots: int, start: float,
               end: float) -> tuple[float, float]:
    """Idle slot-seconds in [start, end], split into (a whole request was waiting in the server's
    queue anyway, no whole request was waiting): the server's own hand-off loss vs the engine not
    offering work."""
    events = sorted({t for t, _ in busy} | {t for t, _ in queued} | {start, end})
    b = q = 0
    bi = qi = 0
    server_loss = engine_loss = 0.0
    for t0, t1 in zip(events, events[1:]):
        while bi < len(busy) and busy[bi][0] <= t0:
            b = busy[bi][1]
            bi += 1
        while qi < len(queued) and queued[qi][0] <= t0:
            q = queued[qi][1]
            qi += 1
        lo, hi = max(t0, start), min(t1, end)
        if hi <= lo:
            continue
        idle = max(slots - b, 0)
        lost_with_queue = min(idle, q)
        server_loss += lost_with_queue * (hi - lo)
        engine_loss += (idle - lost_with_queue) * (hi - lo)
    return server_loss, engine_loss


def compute_metrics(m: Measured) -> dict[str, Any]:
    w, L, K = m.workload, m.setup.latency, m.setup.slots
    # [model, status, n, started (headers in), slot, finished, body (whole request in)]
    calls = [c for c in m.server["calls"] if c[1] != 0]
    ok = [c for c in calls if c[1] == 200]
    total_calls = len(calls)
    critical = w.critical_path_calls()
    bound = max(critical * L, total_calls * L / K)
    wall = m.engine["wall_seconds"]
    first_start = min(c[3] for c in calls)
    last_finish = max(c[5] for c in calls)
    calls_wall = last_finish - first_start
    processing = busy_timeline([(c[4], c[5]) for c in calls])
    in_server = busy_timeline([(c[3], c[5]) for c in calls])
    steady = steady_window(processing, K)
    if steady is not None and steady[1] - steady[0] < MIN_STEADY_CALLS * L:
        steady = None
    occupancy = integral(processing, *steady) / (K * (steady[1] - steady[0])) if steady else None
    queued = busy_timeline([(c[6], c[4]) for c in calls])
    server_loss = engine_loss = None
    if steady:
        lost = idle_split(processing, queued, K, *steady)
        server_loss, engine_loss = (x / (K * (steady[1] - steady[0])) for x in lost)
    usage = m.manifest["usage"]["by_role"]
    tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in usage.values())
    pairs = m.manifest["counts"]["pairs"]
    cpu_per_call = m.engine["cpu_seconds"] / total_calls
    return {
        "total_calls": total_calls,
        "non_200": total_calls - len(ok),
        "critical_path_calls": critical,
        "bound": bound,
        "bound_kind": "critical path" if critical >= total_calls / K else "throughput",
        "wall": wall,
        "calls_wall": calls_wall,
        "efficiency": bound / wall,
        "efficiency_calls": bound / calls_wall,
        "steady": steady,
        "steady_seconds": (steady[1] - steady[0]) if steady else 0.0,
        "occupancy": occupancy,
        "occupancy_whole": integral(processing, first_start, last_finish) / (K * calls_wall),
        "ramp_seconds": (steady[0] - first_start) if steady else None,
        "tail_seconds": (last_finish - steady[1]) if steady else None,
        "pre_seconds": first_start - m.engine["started"],
        "post_seconds": m.engine["finished"] - last_finish,
        "max_in_server": max(c for _, c in in_server),
        "mean_in_server": integral(in_server, first_start, last_finish) / calls_wall,
        "mean_processing": integral(processing, first_start, last_finish) / calls_wall,
        "idle_server_side": server_loss,
        "idle_engine_side": engine_loss,
        "mean_send_lag_ms": 1000 * sum(c[6] - c[3] for c in calls) / total_calls,
        "mean_queue_wait_ms": 1000 * sum(c[4] - c[6] for c in calls) / total_calls,
        "mean_service_ms": 1000 * sum(c[5] - c[4] for c in ok) / max(len(ok), 1),
        "served_per_second": total_calls / calls_wall,
        "pairs": pairs,
        "calls_per_pair": total_calls / pairs if pairs else None,
        "tokens_per_pair": tokens / pairs if pairs else None,
        "calls_per_conversation": m.manifest["usage"]["calls_per_conversation"],
        "turns": m.manifest["counts"]["turns"],
        "conversations_ok": m.manifest["counts"]["conversations_ok"],
        "engine_cpu_ms_per_call": 1000 * cpu_per_call,
        "engine_cpu_share": m.engine["cpu_seconds"] / wall,
        # cores the engine would need to issue calls as fast as the server can serve them (K / L)
        "cpu_demand_cores": cpu_per_call * K / L,
        "engine_runqueue_wait": m.engine.get("runqueue_wait_seconds", 0.0),
        "server_runqueue_wait": m.server.get("runqueue_wait_seconds", 0.0),
        "server_cpu_ms_per_call": 1000 * m.server["cpu_seconds"] / total_calls,
        "loadavg": m.engine.get("loadavg_after"),
        "rss_before_mib": m.engine["rss_before_kib"] / 1024,
        "peak_rss_mib": m.engine["peak_rss_kib"] / 1024,
        "rss_growth_mib": (m.engine["peak_rss_kib"] - m.engine["rss_before_kib"]) / 1024,
        # highest sampled RSS up to the last call: the generation itself, before the shards are written
        "calls_rss_mib": max([r for t, r in m.engine["rss_samples"] if t <= last_finish] or [0]) / 1024,
        "prefix_meter_mib": m.engine["prefix_meter_bytes"] / 2**20,
    }


def answer_check_repeats(out_dir: Path) -> tuple[int, int]:
    """(futures whose answer math-verify checked, distinct (seed, answer) pairs among them), from the
    journal: how much a memo of `answers_match` would save."""
    from collabgen.tasks.math_answers import final_boxed_answer

    checked, distinct = 0, set()
    with (out_dir / ".collabgen" / "journal.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record.get("kind") != "turn":
                continue
            for candidate in record["candidates"]:
                head = [*record["prompt"], {"role": "assistant", "content": candidate["text"]}]
                for future in candidate["futures"]:
                    answer = final_boxed_answer([*head, *future["messages"]])
                    if answer is not None:
                        checked += 1
                        distinct.add((record["index"], answer))
    return checked, len(distinct)
