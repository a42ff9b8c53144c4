"""From journal records to the three output configs (the output contract in the README).

Rows carry `generation.row_system_prompt` (not the sampling prompt) as their system
message, and user messages as the simulator's public `message` only: its private
thoughts are dropped before anything is stored.

- pairs: `prompt` (ends with a user message), `chosen`/`rejected` (one assistant
  message each), `score_chosen`, `score_rejected`, `gap`, `gap_se`, `confidence`
  (engine/confidence.py), per-metric breakdowns. Simulated
  futures never go inside chosen/rejected: trainers train on every message there.
- sft: `messages`, the conversation of chosen turns and simulated user turns.
- candidates: every candidate with its MR, its futures' `score_std`, the MR's standard
  error `score_se` and `n_futures` (the futures the MR averages), `drifted_futures` (left
  out: their simulated user acted as the assistant), metric means, flags (`truncated`: cut
  at its token budget, never chosen; `tampered`: its code forged a test verdict in a future;
  `user_drift_only`: every future drifted, never chosen) and futures.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from collabgen.engine.confidence import PairConfidence, sample_std, standard_error
from collabgen.engine.records import TurnRecord
from collabgen.engine.selection import Option, Selection, select_pairs
from collabgen.models.base import Message
from collabgen.prompting import TERMINATION_MARKER
from collabgen.tasks.base import UNDECIDED_FLAGS

MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


def metrics_type(names: list[str]) -> pl.Struct:
    return pl.Struct({name: pl.Float64 for name in names})


def pairs_schema(metric_names: list[str]) -> pl.Schema:
    metrics = metrics_type(metric_names)
    return pl.Schema(
        {
            "prompt": MESSAGES,
            "chosen": MESSAGES,
            "rejected": MESSAGES,
            "score_chosen": pl.Float64,
            "score_rejected": pl.Float64,
            "gap": pl.Float64,
            "gap_se": pl.Float64,
            "confidence": pl.Float64,
            "conv_id": pl.String,
            "turn": pl.Int32,
            "task": pl.String,
            "metrics_chosen": metrics,
            "metrics_rejected": metrics,
            "proactive_chosen": pl.Boolean,
            "proactive_rejected": pl.Boolean,
        }
    )


def sft_schema(metric_names: list[str]) -> pl.Schema:
    return pl.Schema(
        {
            "messages": MESSAGES,
            "conv_id": pl.String,
            "task": pl.String,
            "turns": pl.Int32,
            "mean_score": pl.Float64,
            "final_score": pl.Float64,
            "final_metrics": metrics_type(metric_names),
        }
    )


def candidates_schema(metric_names: list[str]) -> pl.Schema:
    metrics = metrics_type(metric_names)
    future = pl.Struct(
        {"messages": MESSAGES, "score": pl.Float64, "metrics": metrics, "terminated": pl.Boolean,
         "truncated": pl.Boolean, "flags": pl.List(pl.String)}
    )
    return pl.Schema(
        {
            "conv_id": pl.String,
            "turn": pl.Int32,
            "candidate": pl.Int32,
            "task": pl.String,
            "prompt": MESSAGES,
            "response": pl.String,
            "proactive": pl.Boolean,
            "reused": pl.Boolean,
            "tokens": pl.Int64,
            "score": pl.Float64,
            "score_std": pl.Float64,
            "score_se": pl.Float64,
            "n_futures": pl.Int32,
            "drifted_futures": pl.Int32,
            "metrics": metrics,
            "chosen": pl.Boolean,
            "rejected": pl.Boolean,
            "truncated": pl.Boolean,
            "tampered": pl.Boolean,
            "flags": pl.List(pl.String),
            "futures": pl.List(future),
        }
    )


def _with_system(messages: list[Message], system_prompt: str | None) -> list[Message]:
    return [{"role": "system", "content": system_prompt}, *messages] if system_prompt else list(messages)


def _metrics(values: dict[str, float], names: list[str]) -> dict[str, float | None]:
    return {name: values.get(name) for name in names}


def pair_rows(
    record: TurnRecord, task: str, metric_names: list[str], selection: Selection, system_prompt: str | None
) -> list[dict[str, Any]]:
    """The turn's DPO pairs under `selection` (the run's: best vs worst, gap >= min_gap)."""
    return pairs_of_turn(candidate_rows(record, task, metric_names), selection, system_prompt)


def pairs_of_turn(
    candidates: list[dict[str, Any]], selection: Selection, system_prompt: str | None
) -> list[dict[str, Any]]:
    """Pair rows from one turn's candidate rows (as built here or read from `candidates/`)."""
    options = [
        Option(index=i, score=c["score"], text=c["response"],
               eligible=not c.get("truncated") and not UNDECIDED_FLAGS.intersection(c.get("flags") or ()),
               std=c.get("score_std"), futures=c.get("n_futures") or 0)
        for i, c in enumerate(candidates)
    ]
    return [
        pair_row(candidates[chosen.index], candidates[rejected.index], sure, system_prompt)
        for chosen, rejected, sure in select_pairs(options, selection)
    ]


def pair_row(
    chosen: dict[str, Any], rejected: dict[str, Any], sure: PairConfidence, system_prompt: str | None
) -> dict[str, Any]:
    """A DPO row from two candidate rows: the prompt (with the system prompt written into
    rows), one assistant message each side, their MR, its gap and confidence, and metric
    breakdowns."""
    return {
        "prompt": _with_system(list(chosen["prompt"]), system_prompt),
        "chosen": [{"role": "assistant", "content": chosen["response"]}],
        "rejected": [{"role": "assistant", "content": rejected["response"]}],
        "score_chosen": chosen["score"],
        "score_rejected": rejected["score"],
        "gap": sure.gap,
        "gap_se": sure.gap_se,
        "confidence": sure.confidence,
        "conv_id": chosen["conv_id"],
        "turn": chosen["turn"],
        "task": chosen["task"],
        "metrics_chosen": chosen["metrics"],
        "metrics_rejected": rejected["metrics"],
        "proactive_chosen": chosen["proactive"],
        "proactive_rejected": rejected["proactive"],
    }


def candidate_rows(record: TurnRecord, task: str, metric_names: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "conv_id": record.conv_id,
            "turn": record.turn,
            "candidate": i,
            "task": task,
            "prompt": record.prompt,
            "response": c.text,
            "proactive": c.proactive,
            "reused": c.reused,
            "tokens": c.tokens,
            "score": c.score,
            "score_std": (std := sample_std([f.score for f in c.scored_futures])),
            "score_se": standard_error(std, len(c.scored_futures)),
            "n_futures": len(c.scored_futures),
            "drifted_futures": sum(f.drifted for f in c.futures),
            "metrics": _metrics(c.metrics, metric_names),
            "chosen": i == record.best,
            "rejected": i == record.worst and record.worst != record.best,
            "truncated": c.truncated,
            "tampered": "tampered" in c.flags,
            "flags": c.flags,
            "futures": [
                {
                    "messages": f.messages,
                    "score": f.score,
                    "metrics": _metrics(f.metrics, metric_names),
                    "terminated": f.terminated,
                    "truncated": f.truncated,
                    "flags": f.flags,
                }
                for f in c.futures
            ],
        }
        for i, c in enumerate(record.candidates)
    ]


def sft_row(
    records: list[TurnRecord], task: str, metric_names: list[str], system_prompt: str | None
) -> dict[str, Any]:
    """The trajectory of chosen turns; ends on the last assistant message."""
    last = records[-1]
    messages = [*last.prompt, {"role": "assistant", "content": last.candidates[last.best].text}]
    messages = [_strip_marker(m) for m in messages]
    chosen_scores = [r.candidates[r.best].score for r in records]
    return {
        "messages": _with_system(messages, system_prompt),
        "conv_id": last.conv_id,
        "task": task,
        "turns": len(records),
        "mean_score": sum(chosen_scores) / len(chosen_scores),
        "final_score": chosen_scores[-1],
        "final_metrics": _metrics(last.candidates[last.best].metrics, metric_names),
    }


def _strip_marker(message: Message) -> Message:
    if message["role"] == "user" and TERMINATION_MARKER in message["content"]:
        return {**message, "content": message["content"].replace(TERMINATION_MARKER, "").strip()}
    return message
