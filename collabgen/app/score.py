"""`collabgen score`: the reward of conversations a user brings ("why did this get 0?").

Each input line is `{"seed": {<a seed row>}, "messages": [{"role", "content"}, ...],
"assistant_tokens": <optional int>}`. It is scored through the path futures take
(`Scorer.score_conversation`): the task's metrics on the whole conversation, the
interactivity judge on what follows the first user turn, the token penalty of the
assistant's tokens (given, or estimated at four characters per token and flagged
`tokens_estimated`), weighted by the recipe. One output line per input line, in order:
`{"metrics": {...}, "score": ..., "flags": [...], "error": null | "reason"}`. A bad line
is reported by its number; the others are still scored. The seed is read as a row of the
recipe's seed source, through `task.source.fields`, so a line of the seed file serves.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collabgen.app.context import RunContext, open_context, prepare, prove_sandboxes
from collabgen.config.errors import CollabgenError, InfrastructureError, SeedError
from collabgen.config.recipe import Recipe
from collabgen.config.secrets import scrub, secret_values
from collabgen.files import write_atomic
from collabgen.models.base import Message
from collabgen.models.executor import CallFailed

ROLES = ("system", "user", "assistant")


@dataclass
class ScoreSummary:
    lines: int
    scored: int
    out: Path

    @property
    def exit_code(self) -> int:
        return 0 if self.scored == self.lines else 1


def parse_messages(value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise ValueError("'messages' must be a non-empty list of {role, content}")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] must be {{role: system|user|assistant, content: string}}")
        messages.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("'messages' has no assistant message to score")
    return messages


def seed_columns(fields: dict[str, str], seed: dict[str, Any]) -> dict[str, str]:
    """The recipe's `task.source.fields` (seed field -> column) for a line's seed: a row as the
    seed source gives it reads through the mapping; a field the line names itself, while
    the mapped column is absent, is read under its own name."""
    return {field: column for field, column in fields.items() if column in seed or field not in seed}


async def score_line(context: RunContext, number: int, text: str) -> dict[str, Any]:
    """One output record; errors are reasons on the record, never exceptions."""
    where = f"line {number}"
    try:
        line = json.loads(text)
        if not isinstance(line, dict) or not isinstance(line.get("seed"), dict):
            raise ValueError("expected {\"seed\": {...}, \"messages\": [...]}")
        fields = seed_columns(context.setup.recipe.task.source.fields, line["seed"])
        seed = context.setup.task.seed_from_row(line["seed"], fields, where)
        messages = parse_messages(line.get("messages"))
    except SeedError as err:  # its message names the line already
        return {"metrics": None, "score": None, "flags": [], "error": str(err)}
    except ValueError as err:
        return {"metrics": None, "score": None, "flags": [], "error": f"{where}: {err}"}
    first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    tokens, flags = line.get("assistant_tokens"), []
    if not isinstance(tokens, int):
        tokens = sum(len(m["content"]) for m in messages[first:] if m["role"] == "assistant") // 4
        flags.append("tokens_estimated")
    scorer = context.scorer()
    try:
        scored = await scorer.score_conversation(seed, messages[:first], messages[first:], tokens,
                                                 (context.setup.recipe.generation.seed, f"score-{number}"))
    except (CallFailed, InfrastructureError) as err:
        return {"metrics": None, "score": None, "flags": flags, "error": f"{where}: {err}"}
    return {"metrics": scored.metrics, "score": scorer.weighted(scored.metrics),
            "flags": sorted({*flags, *scored.flags}), "error": None}


async def score_file(recipe: Recipe, path: Path, out: Path | None = None) -> ScoreSummary:
    """Score every line of `path` into `out` (default: `<path stem>.scores.jsonl` beside it)."""
    if not path.is_file():
        raise CollabgenError(f"{path}: no such file")
    out = out or path.with_name(f"{path.stem}.scores.jsonl")
    lines = [(n, t) for n, t in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if t.strip()]
    setup = prepare(recipe, count_seeds=False)
    limit = asyncio.Semaphore(recipe.generation.conversations)
    async with open_context(setup, cache_path=None) as context:
        await prove_sandboxes(context)

        async def one(number: int, text: str) -> dict[str, Any]:
            async with limit:
                return await score_line(context, number, text)

        records = await asyncio.gather(*(one(n, t) for n, t in lines))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_atomic(out, scrub(text, secret_values(recipe)))
    return ScoreSummary(lines=len(records), scored=sum(r["error"] is None for r in records), out=out)
