"""What `collabgen view` shows, as JSON-ready dicts read from an out dir.

Every answer is read again from the manifest and the finished shards (`scan_parquet`,
only the columns and rows it needs), so a page reloaded after a run (or a resumed run's
finalize) shows the new shards. The per-conversation summary that the list filters and
pages is one small row per conversation; it is kept while the shard files are unchanged
(same names, sizes and mtimes) so paging does not rescan. Nothing is written.

An eval (`collabgen eval`) is shown from its folder: OUT/eval next to a run, or the
folder given when it is an eval folder itself (its report.json and journal.jsonl; no
run needed). Its statistics are report.json's as written, never recomputed; the
conversations are the log's, picked the way `collabgen eval` picks them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from collabgen.app.evaluate import LOG as EVAL_LOG
from collabgen.app.evaluate import REPORT, finished_results
from collabgen.config.errors import CollabgenError
from collabgen.engine.evaluation import EvalResult
from collabgen.engine.journal import LogReader
from collabgen.output.manifest import Manifest
from collabgen.output.outdir import OutDir

BINS = 20
PAGE_MAX = 200

_Files = tuple[tuple[str, int, int], ...]


class ViewError(CollabgenError):
    """A request the out dir cannot answer (an unknown conversation)."""


@dataclass(frozen=True)
class ListQuery:
    """Filters and page of the conversation list; every filter is optional."""

    task: str | None = None
    failed: bool | None = None
    flag: str | None = None
    gap_min: float | None = None  # some turn's chosen MR - rejected MR is within [gap_min, gap_max]
    gap_max: float | None = None
    text: str | None = None  # case-insensitive, in the conversation id, a prompt or a candidate's reply
    offset: int = 0
    limit: int = 50


@dataclass
class RunView:
    """Read-only answers over one out dir."""

    root: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _summary_key: _Files | None = field(default=None, repr=False)
    _summary: pl.DataFrame | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.eval_dir() is None and self.root.is_dir() and not self.has_run():
            raise ViewError(
                f"{self.root} is not a collabgen output: it has no manifest.json (a run's out dir: run "
                f"`collabgen run RECIPE` first) and no {REPORT} here or in eval/ (an eval folder: run "
                "`collabgen eval RECIPE --policy ...`)")
        if self.eval_dir() is None or self.has_run():
            Manifest.read(self.root)  # refuse a missing folder or a damaged manifest, at start

    # ------------------------------------------------------------------ reading

    def has_run(self) -> bool:
        """Whether the folder is a run's out dir (an eval folder alone is not)."""
        return OutDir(self.root).manifest_path.is_file()

    def eval_dir(self) -> Path | None:
        """The eval folder shown: the folder itself when it holds a report (`collabgen view
        OUT/eval`, or any `eval.dir`), else OUT/eval when that does (`collabgen view OUT`).
        Looked up on every request, so an eval finished after the page opened shows."""
        for folder in (self.root, self.root / "eval"):
            if (folder / REPORT).is_file():
                return folder
        return None

    def manifest(self) -> Manifest:
        if not self.has_run():
            raise ViewError(f"{self.root} holds an eval report but no run (no manifest.json)")
        return Manifest.read(self.root)

    def _files(self, config: str) -> list[Path]:
        return OutDir(self.root).shards(config)

    def _scan(self, config: str) -> pl.LazyFrame | None:
        files = self._files(config)
        return pl.scan_parquet(files) if files else None

    def _rows(self, config: str) -> int:
        scan = self._scan(config)
        return 0 if scan is None else int(scan.select(pl.len()).collect().item())

    # ------------------------------------------------------------------ overview

    def overview(self) -> dict[str, Any]:
        """The run's numbers; `run` and `eval` say which of the two the folder holds."""
        has_eval = self.eval_dir() is not None
        if not self.has_run():
            return {"out_dir": str(self.root), "run": False, "eval": has_eval}
        manifest = self.manifest()
        counts = manifest.counts
        candidates = self._scan("candidates")
        pairs = self._scan("pairs")
        metric_names = _metric_names(candidates)
        failures = [{"conv_id": f.conv_id, "reason": f.reason} for f in manifest.failures]
        reasons: dict[str, int] = {}
        for failure in failures:
            reasons[str(failure["reason"] or "unknown")] = reasons.get(str(failure["reason"] or "unknown"), 0) + 1
        usage = manifest.usage
        return {
            "out_dir": str(self.root),
            "run": True,
            "eval": has_eval,
            "task": manifest.task,
            "complete": manifest.complete,
            "interrupted": manifest.interrupted,
            "collabgen_version": manifest.collabgen_version,
            "recipe_fingerprint": manifest.recipe_fingerprint,
            "min_gap": shown_min_gap(manifest),
            "counts": counts.model_dump(exclude_unset=True),  # as the manifest holds them
            "in_shards": {config: self._rows(config) for config in OutDir.CONFIGS},
            "failures": failures,
            "failure_reasons": [{"reason": r, "count": n} for r, n in sorted(reasons.items(), key=lambda x: -x[1])],
            "flags": manifest.flags or {},
            "row_flags": _row_flags(candidates),
            "tasks": _distinct(candidates, "task"),
            "metrics": metric_names,
            "histograms": _histograms(candidates, metric_names),
            "gaps": _pair_gaps(pairs),
            "confidence": manifest.confidence.model_dump() if manifest.confidence is not None else None,
            "by_turn": _by_turn(candidates),
            "usage": {
                "by_role": {role: t.model_dump() for role, t in (usage.by_role if usage else {}).items()},
                "by_stage": {role: {s: t.model_dump() for s, t in by.items()}
                             for role, by in (usage.by_stage if usage else {}).items()},
                "calls_per_conversation": usage.calls_per_conversation if usage else None,
            },
            "cost_usd": manifest.cost_usd,
        }

    # ------------------------------------------------------------------ the list

    def summary(self) -> pl.DataFrame:
        """One row per conversation: id, task, status, reason, turns, candidates, pairs,
        flags, and each turn's chosen - rejected MR (`turn_gaps`)."""
        self.manifest()  # an eval folder alone has no conversation list
        manifest_path = OutDir(self.root).manifest_path
        key = tuple(
            (str(p), (st := p.stat()).st_size, st.st_mtime_ns)
            for config in OutDir.CONFIGS for p in self._files(config)
        ) + ((str(manifest_path), 0, manifest_path.stat().st_mtime_ns),)
        with self._lock:
            if self._summary is None or self._summary_key != key:
                self._summary = self._build_summary()
                self._summary_key = key
            return self._summary

    # long: one polars query (per turn, per conversation, then the joins); split, it reads worse
    def _build_summary(self) -> pl.DataFrame:
        manifest = self.manifest()
        candidates = self._scan("candidates")
        schema = {"conv_id": pl.String, "task": pl.String, "turns": pl.Int64, "candidates": pl.Int64,
                  "flags": pl.List(pl.String), "turn_gaps": pl.List(pl.Float64), "mean_chosen": pl.Float64}
        if candidates is None:
            convs = pl.DataFrame(schema=schema)
        else:
            empty = pl.lit([], pl.List(pl.String))
            per_turn = (
                candidates.select("conv_id", "task", "turn", "score", "chosen", "rejected", "flags", "truncated",
                                  "tampered", "futures")
                .group_by("conv_id", "turn")
                .agg(
                    pl.first("task"),
                    pl.len().alias("candidates"),
                    pl.col("flags").explode().drop_nulls().unique().alias("own_flags"),
                    pl.col("futures").explode().struct.field("flags").explode().drop_nulls().unique()
                    .alias("future_flags"),
                    (pl.col("truncated").any() | pl.col("futures").explode().struct.field("truncated").any())
                    .alias("any_truncated"),
                    pl.col("tampered").any().alias("any_tampered"),
                    (pl.col("score").filter(pl.col("chosen")).first()
                     - pl.col("score").filter(pl.col("rejected")).first()).alias("gap"),
                    pl.col("score").filter(pl.col("chosen")).first().alias("chosen_score"),
                )
                .with_columns(
                    pl.concat_list(
                        "own_flags", "future_flags",
                        pl.when(pl.col("any_truncated")).then(pl.lit(["truncated"])).otherwise(empty),
                        pl.when(pl.col("any_tampered")).then(pl.lit(["tampered"])).otherwise(empty),
                    ).alias("flags")
                )
            )
            convs = (
                per_turn.sort("conv_id", "turn")
                .group_by("conv_id", maintain_order=True)
                .agg(
                    pl.first("task"),
                    pl.len().cast(pl.Int64).alias("turns"),
                    pl.col("candidates").sum().cast(pl.Int64),
                    pl.col("flags").explode().drop_nulls().unique().sort(),
                    pl.col("gap").alias("turn_gaps"),
                    pl.col("chosen_score").mean().alias("mean_chosen"),
                )
                .collect()
            )
        pairs = self._scan("pairs")
        pair_counts = (
            pairs.group_by("conv_id").agg(pl.len().cast(pl.Int64).alias("pairs")).collect()
            if pairs is not None else pl.DataFrame(schema={"conv_id": pl.String, "pairs": pl.Int64})
        )
        sft = self._scan("sft")
        finished = (
            sft.select("conv_id").unique().with_columns(pl.lit(True).alias("finished")).collect()
            if sft is not None else pl.DataFrame(schema={"conv_id": pl.String, "finished": pl.Boolean})
        )
        failed = pl.DataFrame(
            {"conv_id": [f.conv_id for f in manifest.failures], "reason": [f.reason for f in manifest.failures]},
            schema={"conv_id": pl.String, "reason": pl.String},
        ).unique("conv_id", keep="first")
        # A failed conversation may have no rows at all: it is listed from the manifest.
        missing = failed.join(convs.select("conv_id"), on="conv_id", how="anti").select("conv_id").with_columns(
            pl.lit(manifest.task, pl.String).alias("task"))
        convs = pl.concat([convs, missing], how="diagonal_relaxed")
        table = (
            convs.join(pair_counts, on="conv_id", how="left")
            .join(finished, on="conv_id", how="left")
            .join(failed, on="conv_id", how="left")
            .with_columns(
                pl.col("pairs").fill_null(0),
                pl.col("turns").fill_null(0),
                pl.col("candidates").fill_null(0),
                pl.col("flags").fill_null(pl.lit([], pl.List(pl.String))),
                pl.col("turn_gaps").fill_null(pl.lit([], pl.List(pl.Float64))),
                pl.when(pl.col("reason").is_not_null()).then(pl.lit("failed"))
                .when(pl.col("finished").fill_null(False)).then(pl.lit("finished"))
                .otherwise(pl.lit("unfinished")).alias("status"),
            )
            .drop("finished")
            .sort("conv_id")
        )
        return table

    def conversations(self, query: ListQuery) -> dict[str, Any]:
        table = self.summary()
        if query.task:
            table = table.filter(pl.col("task") == query.task)
        if query.failed is not None:
            table = table.filter((pl.col("status") == "failed") == query.failed)
        if query.flag:
            table = table.filter(pl.col("flags").list.contains(query.flag))
        if query.gap_min is not None or query.gap_max is not None:
            low = query.gap_min if query.gap_min is not None else float("-inf")
            high = query.gap_max if query.gap_max is not None else float("inf")
            inside = pl.col("turn_gaps").list.eval(pl.element().is_between(low, high)).list.any()
            table = table.filter(inside.fill_null(False))
        if query.text:
            table = table.filter(pl.col("conv_id").is_in(self._matching(query.text)))
        limit = max(1, min(query.limit, PAGE_MAX))
        offset = max(0, query.offset)
        page = table.slice(offset, limit)
        return {"total": table.height, "offset": offset, "limit": limit, "items": page.to_dicts()}

    def _matching(self, text: str) -> list[str]:
        """Conversations whose id, some prompt message or some candidate reply holds `text` (any case)."""
        needle = text.lower()
        hits: set[str] = {c for c in self.summary()["conv_id"].to_list() if needle in c.lower()}
        candidates = self._scan("candidates")
        if candidates is not None:
            in_prompt = pl.col("prompt").list.eval(
                pl.element().struct.field("content").str.to_lowercase().str.contains(needle, literal=True)
            ).list.any()
            in_reply = pl.col("response").str.to_lowercase().str.contains(needle, literal=True)
            found = candidates.filter(in_reply | in_prompt.fill_null(False)).select("conv_id").unique().collect()
            hits.update(found["conv_id"].to_list())
        return sorted(hits)

    # ------------------------------------------------------------------ one conversation

    # long: builds the one payload the page reads (turns, candidates, futures, pairs) in order
    def conversation(self, conv_id: str) -> dict[str, Any]:
        manifest = self.manifest()
        candidates = self._scan("candidates")
        rows = (
            candidates.filter(pl.col("conv_id") == conv_id).sort("turn", "candidate").collect().to_dicts()
            if candidates is not None else []
        )
        failure = next((f for f in manifest.failures if f.conv_id == conv_id), None)
        if not rows and failure is None:
            raise ViewError(f"no conversation {conv_id!r} in {self.root}")
        pairs_scan = self._scan("pairs")
        pairs = (
            pairs_scan.filter(pl.col("conv_id") == conv_id)
            .select("turn", "chosen", "rejected", "score_chosen", "score_rejected", "gap", "gap_se", "confidence",
                    "proactive_chosen", "proactive_rejected")
            .collect().to_dicts()
            if pairs_scan is not None else []
        )
        sft_scan = self._scan("sft")
        trajectory = (
            sft_scan.filter(pl.col("conv_id") == conv_id).select("turns", "mean_score", "final_score", "final_metrics")
            .collect().to_dicts()
            if sft_scan is not None else []
        )
        min_gap = shown_min_gap(manifest)
        turns: list[dict[str, Any]] = []
        previous: list[dict[str, Any]] = []
        for turn in sorted({r["turn"] for r in rows}):
            group = [r for r in rows if r["turn"] == turn]
            prompt = list(group[0]["prompt"] or [])
            seen = len(previous) + 1 if previous else 0
            new_messages = prompt[seen:] if seen <= len(prompt) else prompt[-1:]
            turn_pairs = [_pair_view(p, group) for p in pairs if p["turn"] == turn]
            chosen = next((c for c in group if c["chosen"]), None)
            turns.append({
                "turn": turn,
                "new_messages": new_messages,
                "prompt_length": len(prompt),
                "chosen": chosen["candidate"] if chosen else None,
                "candidates": [_candidate_view(c) for c in group],
                "pairs": turn_pairs,
                "verdict": _verdict(group, min_gap, bool(turn_pairs)),
            })
            previous = prompt
        status = "failed" if failure else ("finished" if trajectory else "unfinished")
        return {
            "conv_id": conv_id,
            "task": rows[0]["task"] if rows else manifest.task,
            "status": status,
            "reason": failure.reason if failure else None,
            "min_gap": min_gap,
            "sft": trajectory[0] if trajectory else None,
            "turns": turns,
        }

    def all_conversations(self) -> list[dict[str, Any]]:
        """Every conversation in full, for `--export` (a file to share holds them all)."""
        return [self.conversation(c) for c in self.summary()["conv_id"].to_list()]

    # ------------------------------------------------------------------ the eval report

    def _eval(self) -> tuple[Path, dict[str, Any], dict[int, dict[str, EvalResult]]]:
        """The eval folder, its report.json as written, and per seed index each report
        policy's conversation: the finished one the report counted (picked by
        `finished_results`, as `collabgen eval` does), else the policy's last failed one."""
        folder = self.eval_dir()
        if folder is None:
            raise ViewError(f"no eval report in {self.root} or {self.root / 'eval'} (run `collabgen eval` first)")
        try:
            report = json.loads((folder / REPORT).read_text(encoding="utf-8"))
            log = LogReader(folder / EVAL_LOG)
            prompts = {name: policy.get("system_prompt") for name, policy in report["policies"].items()}
            done = finished_results(log, prompts)
            failed = {(r.policy, r.index): r for r in _eval_results(log) if r.status != "ok" and r.policy in prompts}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, CollabgenError) as err:
            raise ViewError(f"{folder}: cannot read the eval report or its log: {err}") from None
        seeds: dict[int, dict[str, EvalResult]] = {}
        for (name, index), result in sorted({**failed, **done}.items(), key=lambda kv: kv[0][1]):
            seeds.setdefault(index, {})[name] = result
        order = list(prompts)
        return folder, report, {i: dict(sorted(by.items(), key=lambda kv: order.index(kv[0])))
                                for i, by in seeds.items()}

    def eval_report(self) -> dict[str, Any]:
        """The report as `collabgen eval` wrote it (its means, intervals and paired
        differences, never recomputed here), each seed's row for the list, and per policy
        how many finished conversations the log holds: more than the report counts means
        an eval still running or stopped before its report (`stale`)."""
        folder, report, seeds = self._eval()
        finished = {name: sum(1 for by in seeds.values() if name in by and by[name].status == "ok")
                    for name in report["policies"]}
        return {
            "dir": str(folder),
            "report": report,
            "seeds": [{"index": index, "conv_id": next(iter(by.values())).conv_id,
                       "policies": {name: {"status": r.status, "metrics": r.metrics} for name, r in by.items()}}
                      for index, by in sorted(seeds.items())],
            "in_log": finished,
            "stale": any(finished[n] != p["conversations"] for n, p in report["policies"].items()),
        }

    def eval_seed(self, index: int) -> dict[str, Any]:
        """One seed: each policy's whole conversation (messages, metrics, status), in the
        report's policy order, for reading them side by side."""
        _, report, seeds = self._eval()
        if index not in seeds:
            raise ViewError(f"no eval conversation for seed index {index}")
        by = seeds[index]
        return {
            "index": index,
            "conv_id": next(iter(by.values())).conv_id,
            "metrics": report["metrics"],
            "policies": [{"policy": name, "status": r.status, "reason": r.reason, "metrics": r.metrics,
                          "messages": r.messages, "system_prompt": r.system_prompt} for name, r in by.items()],
        }

    def all_eval_seeds(self) -> dict[int, dict[str, Any]]:
        """Every seed's conversations, for `--export`."""
        _, _, seeds = self._eval()
        return {index: self.eval_seed(index) for index in sorted(seeds)}


# ---------------------------------------------------------------------- helpers


def _eval_results(log: LogReader) -> list[EvalResult]:
    """Every record of an eval log that is a conversation, in order (later ones win)."""
    results = []
    for record in log.records():
        try:
            results.append(EvalResult(**record))
        except TypeError:
            continue
    return results


def shown_min_gap(manifest: Manifest) -> float | None:
    """The gap that decided this dir's pairs: the export's if pairs were re-selected, else the recipe's."""
    if manifest.export is not None and "min_gap" in manifest.export.model_fields_set:
        return manifest.export.min_gap
    return manifest.recipe_view.generation.min_gap


def _metric_names(candidates: pl.LazyFrame | None) -> list[str]:
    if candidates is None:
        return []
    dtype = candidates.collect_schema().get("metrics")
    return [f.name for f in dtype.fields] if isinstance(dtype, pl.Struct) else []


def _distinct(scan: pl.LazyFrame | None, column: str) -> list[str]:
    if scan is None:
        return []
    return sorted(v for v in scan.select(pl.col(column).unique()).collect()[column].to_list() if v is not None)


def _row_flags(candidates: pl.LazyFrame | None) -> dict[str, dict[str, int]]:
    """How many candidates and futures carry each flag (`truncated`, `tampered` and the task's),
    each row counted once per flag whether a column or its `flags` list says so."""
    if candidates is None:
        return {"candidates": {}, "futures": {}}
    empty = pl.lit([], pl.List(pl.String))

    def marked(column: str, name: str) -> pl.Expr:
        return pl.when(pl.col(column).fill_null(False)).then(pl.lit([name])).otherwise(empty)

    own = pl.concat_list(pl.col("flags").fill_null(empty), marked("truncated", "truncated"),
                         marked("tampered", "tampered")).list.unique()
    on_candidates = _count_flags(candidates.select(own.alias("flags")))
    futures = candidates.select(pl.col("futures").explode().alias("f")).drop_nulls().select(
        pl.col("f").struct.field("flags").alias("flags"), pl.col("f").struct.field("truncated").alias("truncated"))
    on_futures = _count_flags(futures.select(
        pl.concat_list(pl.col("flags").fill_null(empty), marked("truncated", "truncated")).list.unique().alias("flags")))
    return {"candidates": {"truncated": 0, "tampered": 0, **on_candidates}, "futures": on_futures}


def _count_flags(frame: pl.LazyFrame) -> dict[str, int]:
    counted = frame.select(pl.col("flags").explode().drop_nulls().alias("flag")).collect()
    return {flag: int(n) for flag, n in sorted(counted["flag"].value_counts().iter_rows())}


def histogram(values: pl.Series, bins: int = BINS, low: float | None = None,
              high: float | None = None) -> dict[str, Any]:
    """Equal-width bins over [low, high] (default: the values' range): edges and counts."""
    values = values.drop_nulls().drop_nans() if values.dtype.is_float() else values.drop_nulls()
    if values.len() == 0:
        return {"edges": [], "counts": [], "n": 0}
    low = float(values.min()) if low is None else low  # type: ignore[arg-type]
    high = float(values.max()) if high is None else high  # type: ignore[arg-type]
    if high <= low:
        return {"edges": [low, high], "counts": [values.len()], "n": values.len()}
    step = (high - low) / bins
    index = ((values - low) / step).floor().cast(pl.Int64).clip(0, bins - 1)
    counts = [0] * bins
    for i, n in index.value_counts().iter_rows():
        counts[i] = int(n)
    return {"edges": [round(low + i * step, 6) for i in range(bins + 1)], "counts": counts, "n": values.len()}


def _histograms(candidates: pl.LazyFrame | None, metric_names: list[str]) -> list[dict[str, Any]]:
    """MR and each metric over all candidates and over the chosen ones, on shared bins."""
    if candidates is None:
        return []
    columns = [pl.col("score").alias("MR"), *(pl.col("metrics").struct.field(m).alias(m) for m in metric_names)]
    frame = candidates.select(pl.col("chosen"), *columns).collect()
    out = []
    for name in ["MR", *metric_names]:
        values = frame[name].drop_nulls()
        if values.len() == 0:
            out.append({"metric": name, "all": histogram(values), "chosen": histogram(values)})
            continue
        low, high = float(values.min()), float(values.max())
        out.append({
            "metric": name,
            "all": histogram(frame[name], low=low, high=high),
            "chosen": histogram(frame.filter(pl.col("chosen"))[name], low=low, high=high),
        })
    return out


def _pair_gaps(pairs: pl.LazyFrame | None) -> dict[str, Any]:
    if pairs is None:
        return {"gap": histogram(pl.Series([], dtype=pl.Float64)), "confidence": None}
    names = pairs.collect_schema().names()
    frame = pairs.select("gap", *(["confidence"] if "confidence" in names else [])).collect()
    confidence = histogram(frame["confidence"], low=0.0, high=1.0) if "confidence" in names else None
    return {"gap": histogram(frame["gap"]), "confidence": confidence}


def _by_turn(candidates: pl.LazyFrame | None) -> list[dict[str, Any]]:
    """Per turn: conversations, the chosen candidates' mean MR and share that are proactive."""
    if candidates is None:
        return []
    frame = (
        candidates.filter(pl.col("chosen"))
        .group_by("turn")
        .agg(pl.len().alias("conversations"), pl.col("score").mean().alias("mean_chosen_mr"),
             pl.col("proactive").mean().alias("proactive_share"))
        .sort("turn")
        .collect()
    )
    return frame.to_dicts()


def _candidate_view(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "candidate": c["candidate"],
        "response": c["response"],
        "score": c["score"],
        "score_std": c.get("score_std"),
        "score_se": c.get("score_se"),
        "metrics": c["metrics"] or {},
        "proactive": c["proactive"],
        "reused": c.get("reused"),
        "tokens": c.get("tokens"),
        "chosen": c["chosen"],
        "rejected": c["rejected"],
        "truncated": c.get("truncated"),
        "tampered": c.get("tampered"),
        "flags": c.get("flags") or [],
        "futures": [
            {"messages": f["messages"] or [], "score": f["score"], "metrics": f["metrics"] or {},
             "terminated": f["terminated"], "truncated": f.get("truncated"), "flags": f.get("flags") or []}
            for f in (c["futures"] or [])
        ],
    }


def _pair_view(pair: dict[str, Any], group: list[dict[str, Any]]) -> dict[str, Any]:
    """A pair with the candidate numbers of its two sides (matched by text and MR)."""

    def index(text: str, score: float) -> int | None:
        return next((c["candidate"] for c in group if c["response"] == text and c["score"] == score), None)

    chosen_text = pair["chosen"][0]["content"] if pair["chosen"] else ""
    rejected_text = pair["rejected"][0]["content"] if pair["rejected"] else ""
    return {
        "chosen": index(chosen_text, pair["score_chosen"]),
        "rejected": index(rejected_text, pair["score_rejected"]),
        "score_chosen": pair["score_chosen"],
        "score_rejected": pair["score_rejected"],
        "gap": pair["gap"],
        "gap_se": pair.get("gap_se"),
        "confidence": pair.get("confidence"),
        "proactive_chosen": pair.get("proactive_chosen"),
        "proactive_rejected": pair.get("proactive_rejected"),
    }


def _verdict(group: list[dict[str, Any]], min_gap: float | None, paired: bool) -> str:
    """Why the turn made its pairs, or none."""
    chosen = next((c for c in group if c["chosen"]), None)
    rejected = next((c for c in group if c["rejected"]), None)
    if chosen is None:
        return "no candidate was chosen"
    if rejected is None:
        return f"chosen #{chosen['candidate']}; every candidate has the same MR, so no pair"
    gap = chosen["score"] - rejected["score"]
    text = (f"chosen #{chosen['candidate']} (MR {chosen['score']:.3f}) over rejected #{rejected['candidate']} "
            f"(MR {rejected['score']:.3f}): gap {gap:.3f}")
    if min_gap is not None:
        text += f" {'>=' if gap >= min_gap else '<'} min gap {min_gap}"
    if paired:
        return text + "; a pair in pairs/"
    if chosen["response"] == rejected["response"]:
        return text + "; no pair: same text"
    if min_gap is not None and gap < min_gap:
        return text + "; no pair: gap below min_gap"
    return text + "; no pair in pairs/ (ineligible side or low confidence)"
