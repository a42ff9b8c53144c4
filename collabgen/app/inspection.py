"""`collabgen inspect`: what a run made, read back from its shards and manifest.

The summary answers "is this data any good?" at a glance: counts (manifest against the
rows actually in the shards), how chosen and rejected MR are spread and how far apart,
which metrics separate them, why conversations failed, what each role cost in tokens.
`--conv ID` walks one conversation turn by turn: the candidates, their MR and metrics,
which one was kept and which rejected, and a glimpse of each candidate's futures.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from collabgen.config.errors import CollabgenError
from collabgen.output.manifest import Counts, Manifest
from collabgen.output.outdir import OutDir

BAR = "█"


class InspectError(CollabgenError):
    """The folder is not a collabgen output, or the conversation does not exist."""


def shard_files(out_dir: Path, config: str) -> list[Path]:
    return OutDir(out_dir).shards(config)


def _scan(out_dir: Path, config: str) -> pl.LazyFrame | None:
    files = shard_files(out_dir, config)
    return pl.scan_parquet(files) if files else None


def _rows(out_dir: Path, config: str) -> int:
    scan = _scan(out_dir, config)
    return 0 if scan is None else int(scan.select(pl.len()).collect().item())


# --------------------------------------------------------------------------- summary


def summary(out_dir: Path, console: Console, *, bins: int = 10) -> None:
    manifest = Manifest.read(out_dir)
    console.print(
        Text.assemble(
            ("collabgen output ", "bold"), (str(out_dir), "bold cyan"),
            f"  task {_known(manifest.task)}, recipe {_known(manifest.recipe_fingerprint)}, "
            f"collabgen {_known(manifest.collabgen_version)}",
        )
    )
    if manifest.export is not None:
        console.print(Text(f"pairs re-selected by collabgen export: {manifest.export.selection}"))
    if manifest.complete is False:
        counts = manifest.counts
        how = f"stopped by {manifest.interrupted}" if manifest.interrupted else "not every conversation ended"
        console.print(Text(f"incomplete ({how}): {counts.conversations_ok + counts.conversations_failed} of "
                           f"{counts.seeds} conversations ended; run the recipe again to resume", style="yellow"))
    console.print(_counts_table(out_dir, manifest.counts))
    drift = _drift_line(out_dir)
    if drift is not None:
        console.print(drift)

    pairs = _scan(out_dir, "pairs")
    frame = pairs.select("score_chosen", "score_rejected", "metrics_chosen", "metrics_rejected").collect() \
        if pairs is not None else pl.DataFrame()
    if frame.height:
        chosen, rejected = frame["score_chosen"].to_list(), frame["score_rejected"].to_list()
        gaps = (frame["score_chosen"] - frame["score_rejected"]).to_list()
        console.print(histogram("MR of pairs: chosen vs rejected", {"chosen": chosen, "rejected": rejected}, bins))
        console.print(histogram("MR gap (chosen - rejected)", {"pairs": gaps}, bins))
        console.print(_confidence(pairs, bins))
        console.print(_metric_table(frame))
    else:
        console.print(Text("no pairs to chart", style="yellow"))
    console.print(_failures_table(manifest))
    console.print(_usage_table(manifest))


def _drift_line(out_dir: Path) -> Text | None:
    """The share of futures whose simulated user acted as the assistant (left out of the MR)."""
    candidates = _scan(out_dir, "candidates")
    if candidates is None or "drifted_futures" not in candidates.collect_schema().names():
        return None
    sums = candidates.select(pl.col("drifted_futures").sum(), pl.col("futures").list.len().sum()).collect().row(0)
    drifted, futures = (int(value or 0) for value in sums)
    if not futures:
        return None
    return Text(f"simulated-user drift: {drifted} of {futures} futures ({drifted / futures:.1%}) acted as the "
                "assistant, left out of the MR", style="yellow" if drifted else "")


def _confidence(pairs: pl.LazyFrame, bins: int) -> Table | Text:
    """The pairs' confidence (P(chosen's true MR is higher)) as a histogram, with how many reach 0.9."""
    if "confidence" not in pairs.collect_schema().names():
        return Text("pairs carry no confidence column (written by an older collabgen)", style="yellow")
    values = pairs.select("confidence").drop_nulls().collect()["confidence"].to_list()
    if not values:
        return Text("no pair has a confidence estimate (fewer than two futures per candidate)", style="yellow")
    sure = sum(v >= 0.9 for v in values)
    return histogram(f"pair confidence ({sure} of {len(values)} at least 0.9)", {"pairs": values}, bins)


def _known(value: object) -> str:
    return "?" if value is None else str(value)


def _counts_table(out_dir: Path, counts: Counts) -> Table:
    table = Table(title="counts", title_justify="left")
    for column in ("what", "in shards", "manifest", "shard files"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for config in OutDir.CONFIGS:
        rows = _rows(out_dir, config)
        expected = counts.rows(config)
        table.add_row(
            config, Text(str(rows), style="bold red" if expected != rows else ""), str(expected),
            str(len(shard_files(out_dir, config))),
        )
    for key in ("seeds", "conversations_ok", "conversations_failed", "conversations_unfinished", "turns"):
        table.add_row(key.replace("_", " "), "", str(getattr(counts, key)), "")
    if counts.turns:
        table.add_row("pairs per turn", "", f"{counts.pairs / counts.turns:.2f}", "")
    return table


def histogram(title: str, series: dict[str, list[float]], bins: int = 10, width: int = 30) -> Table:
    """Shared-bin text histogram of one or more series, one bar column per series."""
    values = [v for vs in series.values() for v in vs if v is not None]
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("bin", justify="right", style="dim")
    styles = ["green", "red", "blue", "magenta"]
    for name in series:
        table.add_column(name, justify="left", no_wrap=True)
    if not values:
        return table
    low, high = min(values), max(values)
    step = (high - low) / bins if high > low else 1.0
    counts = {name: [0] * bins for name in series}
    for name, vs in series.items():
        for v in vs:
            if v is not None:
                counts[name][min(int((v - low) / step), bins - 1) if high > low else 0] += 1
    peak = max(max(c) for c in counts.values()) or 1
    used = bins if high > low else 1
    digits = max(3, 1 - math.floor(math.log10(step))) if high > low else 3
    for b in range(used):
        lo, hi = low + b * step, low + (b + 1) * step
        label = f"[{lo:.{digits}f}, {hi:.{digits}f}{']' if b == used - 1 else ')'}" if high > low else f"{low:.3f}"
        cells = []
        for i, name in enumerate(series):
            n = counts[name][b]
            bar = BAR * max(round(n / peak * width), 1 if n else 0)
            cells.append(Text.assemble((bar, styles[i % len(styles)]), f" {n}" if n else ""))
        table.add_row(label, *cells)
    return table


def _metric_table(frame: pl.DataFrame) -> Table:
    table = Table(title="metric means in pairs", title_justify="left")
    for column in ("metric", "chosen", "rejected", "chosen - rejected"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    chosen = frame["metrics_chosen"].struct.unnest()
    rejected = frame["metrics_rejected"].struct.unnest()
    table.add_row("MR (score)", _num(frame["score_chosen"].mean()), _num(frame["score_rejected"].mean()),
                  _num((frame["score_chosen"] - frame["score_rejected"]).mean()))
    for name in chosen.columns:
        c, r = chosen[name].mean(), rejected[name].mean()
        table.add_row(name, _num(c), _num(r), _num(None if c is None or r is None else c - r))
    return table


def _failures_table(manifest: Manifest) -> Table | Text:
    failures = manifest.failures
    if not failures:
        return Text("failures: none", style="green")
    reasons: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for failure in failures:
        reason = _short(str(failure.reason or "unknown"), 100)
        reasons[reason] += 1
        examples.setdefault(reason, []).append(str(failure.conv_id))
    table = Table(title=f"failures: {len(failures)} conversations", title_justify="left")
    table.add_column("reason")
    table.add_column("count", justify="right")
    table.add_column("e.g.")
    for reason, n in reasons.most_common():
        table.add_row(Text(reason), str(n), Text(", ".join(examples[reason][:3])))
    return table


def _usage_table(manifest: Manifest) -> Table:
    usage = manifest.usage
    by_role = usage.by_role if usage is not None else {}
    cost = manifest.cost_usd or {}
    table = Table(title="token usage by role (all turns in the data)", title_justify="left")
    columns = ["role", "calls", "cached", "prompt tokens", "completion tokens", "retries", "failures"]
    if cost:
        columns.append("cost (USD)")
    for column in columns:
        table.add_column(column, justify="left" if column == "role" else "right")
    totals = Counter()
    keys = ("calls", "cached_calls", "prompt_tokens", "completion_tokens", "retries", "failures")
    for role, tally in by_role.items():
        row = [f"{getattr(tally, k):,}" for k in keys]
        totals.update({k: getattr(tally, k) for k in keys})
        if cost:
            row.append(_dollars(cost.get(role)))
        table.add_row(role, *row)
    if by_role:
        row = [f"{totals[k]:,}" for k in keys]
        if cost:
            unpriced = any(role not in cost for role in by_role)
            row.append(_dollars(sum(cost.values())) + (" + unknown" if unpriced else ""))
        table.add_row(Text("total", style="bold"), *row)
    if usage is not None and usage.calls_per_conversation is not None:
        table.caption = f"calls per finished conversation: {usage.calls_per_conversation}"
    return table


def _dollars(amount: float | None) -> str:
    """A role without `prices` in the recipe costs an unknown amount, not nothing (as the run's summary says)."""
    return "unknown" if amount is None else f"{amount:,.4f}"


# --------------------------------------------------------------------------- one conversation


def conversation(out_dir: Path, conv_id: str, console: Console, *, width: int = 160) -> None:
    manifest = Manifest.read(out_dir)
    candidates = _scan(out_dir, "candidates")
    rows = (
        candidates.filter(pl.col("conv_id") == conv_id).sort("turn", "candidate").collect()
        if candidates is not None else pl.DataFrame()
    )
    failure = next((f for f in manifest.failures if f.conv_id == conv_id), None)
    if rows.height == 0 and failure is None:
        known = (
            candidates.select(pl.col("conv_id").unique(maintain_order=True)).head(5).collect()["conv_id"].to_list()
            if candidates is not None else []
        )
        hint = f"; ids look like: {', '.join(known)}" if known else ""
        raise InspectError(f"no conversation {conv_id!r} in {out_dir}/candidates{hint}")
    min_gap = _shown_min_gap(manifest)
    paired = _paired_turns(out_dir, conv_id)
    sft = _scan(out_dir, "sft")
    trajectory = sft.filter(pl.col("conv_id") == conv_id).collect() if sft is not None else pl.DataFrame()

    status = "failed: " + str(failure.reason) if failure else (
        "finished" if trajectory.height else "unfinished (no SFT row yet)")
    header = Text.assemble(("conversation ", "bold"), (conv_id, "bold cyan"),
                           f"  task {_known(manifest.task)}, {rows['turn'].n_unique() if rows.height else 0} turns, ",
                           (status, "red" if failure else "green"))
    console.print(header)
    if trajectory.height:
        t = trajectory.row(0, named=True)
        console.print(Text(f"SFT row: {t['turns']} turns, mean MR {_num(t['mean_score'])}, "
                           f"final MR {_num(t['final_score'])}, {len(t['messages'])} messages"))
    if rows.height == 0:
        return
    for turn in rows["turn"].unique().sort().to_list():
        group = rows.filter(pl.col("turn") == turn).to_dicts()
        console.print(_turn_panel(turn, group, min_gap, turn in paired, width))


def _shown_min_gap(manifest: Manifest) -> float | None:
    """The gap that decided this dir's pairs: the export's if pairs were re-selected, else the recipe's."""
    if manifest.export is not None and "min_gap" in manifest.export.model_fields_set:
        return manifest.export.min_gap
    return manifest.recipe_view.generation.min_gap


def _paired_turns(out_dir: Path, conv_id: str) -> set[int]:
    pairs = _scan(out_dir, "pairs")
    if pairs is None:
        return set()
    return set(pairs.filter(pl.col("conv_id") == conv_id).select("turn").collect()["turn"].to_list())


def _turn_panel(turn: int, group: list[dict[str, Any]], min_gap: float | None, paired: bool, width: int) -> Panel:
    """One turn: the prompt's tail, the candidates and their scores, why a pair was (not) made,
    and a glimpse of each candidate's first future."""
    parts: list[Any] = [_prompt_tail(group[0]["prompt"] or [], width), _candidates_table(group)]
    responses = Text()
    for c in group:
        responses.append(f"#{c['candidate']}: ", style="bold")
        responses.append(_short(c["response"], width) + "\n")
    parts.append(responses)
    verdict = _verdict(group, min_gap, paired)
    if verdict is not None:
        parts.append(verdict)
    for c in group:
        futures = c["futures"] or []
        if not futures:
            continue
        f = futures[0]
        line = Text(f"#{c['candidate']} future 1/{len(futures)} (MR {_num(f['score'])}"
                    f"{', user ended the chat' if f['terminated'] else ''}): ", style="dim")
        line.append(" → ".join(f"{m['role']}: {_short(m['content'], 60)}" for m in f["messages"]))
        parts.append(line)
    return Panel(Group(*parts), title=f"turn {turn}", title_align="left")


def _prompt_tail(prompt: list[dict[str, Any]], width: int) -> Text:
    tail = prompt[-2:]
    skipped = len(prompt) - len(tail)
    lines = Text()
    if skipped:
        lines.append(f"... {skipped} earlier messages\n", style="dim")
    for message in tail:
        lines.append(f"{message['role']}: ", style="bold")
        lines.append(_short(message["content"], width) + "\n")
    return lines


def _candidates_table(group: list[dict[str, Any]]) -> Table:
    metric_names = list(group[0]["metrics"] or {})
    table = Table(show_edge=False, pad_edge=False, expand=False)
    for column in ("#", "MR", *metric_names, "tokens", "kind", "kept"):
        table.add_column(column, justify="right" if column not in ("kept", "kind") else "left")
    for c in group:
        role = Text("chosen", style="bold green") if c["chosen"] else (
            Text("rejected", style="bold red") if c["rejected"] else Text("-", style="dim"))
        metrics = c["metrics"] or {}
        table.add_row(
            str(c["candidate"]), _num(c["score"]), *(_num(metrics.get(m)) for m in metric_names),
            str(c["tokens"]), _kind(c), role,
        )
    return table


def _verdict(group: list[dict[str, Any]], min_gap: float | None, paired: bool) -> Text | None:
    """Why this turn has a pair or not: the MR gap against the min gap, or identical texts."""
    chosen = next((c for c in group if c["chosen"]), None)
    rejected = next((c for c in group if c["rejected"]), None)
    if chosen and rejected:
        gap = chosen["score"] - rejected["score"]
        why = (f"chosen #{chosen['candidate']} (MR {_num(chosen['score'])}) over rejected #{rejected['candidate']} "
               f"(MR {_num(rejected['score'])}): gap {_num(gap)}")
        if min_gap is not None:
            why += f" {'>=' if gap >= min_gap else '<'} min gap {min_gap}"
        why += "; a pair in pairs/" if paired else "; no pair in pairs/"
        if not paired and chosen["response"] == rejected["response"]:
            why += " (same text)"
        return Text(why, style="italic")
    if chosen:
        return Text(f"chosen #{chosen['candidate']}; every candidate has the same MR, so no pair", style="italic")
    return None


def _kind(candidate: dict[str, Any]) -> str:
    """How the candidate was made: sampled plain or proactive, or reused from the last turn's future."""
    if candidate.get("reused"):
        return "reused"
    return "proactive" if candidate["proactive"] else "plain"


def _short(text: str, limit: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
