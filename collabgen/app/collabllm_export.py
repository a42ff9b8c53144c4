"""`collabgen export --format collabllm`: the CollabLLM reference code's multi-turn dataset.

The reference's data engine (`scripts/engine/build_dataset.py`) pushes
`MultiturnDataset(conversations)` to the Hub: a flat table with one row per scored
candidate response, which its training scripts read back with
`MultiturnDataset(<dataset_repo>)` (`to_dpo_dataset`: per `(conv_id, turn_id)`, the highest
score against the lowest; `to_sft_dataset`: per conversation, the best response of its
last turn). A local `dataset_repo` is read with `datasets.load_from_disk(path).flatten()`,
so the export is a `Dataset.save_to_disk` folder, and the two dict columns are `Json`
features (stored as JSON text, read back as dicts), which `flatten()` leaves whole:

| column | type | value |
| --- | --- | --- |
| `prompt` | list of `{role, content}` | the conversation before the response (no system message) |
| `completion` | string | the candidate response |
| `conv_id` | int | the conversation's seed index |
| `score` | float | its MR |
| `turn_id` | int | `len(prompt)`, as the reference derives it |
| `single_turn_prompt` | string | the seed's request as the reference's builders write it (math problem; article request with title and article; instruction; lead-in, story and question) |
| `single_turn_completion` | string | the seed's reference (solution, article, JSON of the tests, label) |
| `single_turn_metadata` | Json | every field of the seed |
| `sessions` | list of conversations | per future: `prompt` + the response + the simulated continuation |
| `rewards` | Json | per metric, and `MR`, the list of the futures' values |

Candidates cut at their token budget are left out (collabgen never chooses them). Metric
names are collabgen's (`token_penalty` is the penalty, not the reference's thousands of
tokens). The seeds are read again through the recipe in the manifest (its `task.source`,
relative to the working directory), as the candidates do not carry them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from collabgen.config.errors import CollabgenError
from collabgen.config.recipe import Recipe
from collabgen.engine.seeds import iter_seeds
from collabgen.output.manifest import Manifest
from collabgen.output.outdir import OutDir, write_json_atomic
from collabgen.tasks.base import SeedModel, Task
from collabgen.tasks.recipe_check import check_recipe_task

MARKER = "collabgen_export.json"
"""Written beside the dataset files: what made the folder (and what --overwrite may replace)."""


def features() -> Any:
    from datasets import Features, Json, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    return Features({
        "prompt": List(message), "completion": Value("string"), "conv_id": Value("int64"), "score": Value("float64"),
        "turn_id": Value("int64"), "single_turn_prompt": Value("string"), "single_turn_completion": Value("string"),
        "single_turn_metadata": Json(), "sessions": List(List(message)), "rewards": Json(),
    })


def export_collabllm(out_dir: Path, to: Path, overwrite: bool = False) -> tuple[int, int]:
    """Write the reference's layout of `out_dir`'s candidates to `to`; returns (rows, conversations)."""
    from datasets import Dataset

    files = OutDir(out_dir).shards("candidates")
    if not files:
        raise CollabgenError(f"{out_dir}/candidates has no shards: nothing to export")
    needed = {conv_index(c) for c in pl.read_parquet(files, columns=["conv_id"])["conv_id"].unique().to_list()}
    task, seeds = _seeds(Manifest.read(out_dir), needed)
    _clear(to, overwrite)
    written = {"rows": 0}

    def rows() -> Iterator[dict[str, Any]]:
        for path in files:  # one shard in memory at a time
            present = pl.read_parquet_schema(path)
            columns = [c for c in _COLUMNS if c in present]
            for row in reference_rows(pl.read_parquet(path, columns=columns).iter_rows(named=True), task, seeds):
                written["rows"] += 1
                yield row

    with tempfile.TemporaryDirectory(prefix=".collabllm-", dir=to.parent) as cache:
        Dataset.from_generator(rows, features=features(), cache_dir=cache).save_to_disk(str(to))
    write_json_atomic(to / MARKER, {"format": "collabllm", "source": str(out_dir), "rows": written["rows"],
                                    "conversations": len(needed),
                                    "reader": "collabllm.datasets.multiturn.MultiturnDataset(<this folder>)"}, [])
    return written["rows"], len(needed)


_COLUMNS = ["conv_id", "prompt", "response", "score", "futures", "truncated"]


def reference_rows(candidates: Iterator[dict[str, Any]], task: Task[Any, Any], seeds: dict[int, SeedModel]) -> Iterator[dict[str, Any]]:
    """The reference's rows: one per candidate that may be chosen, in the shards' order."""
    for candidate in candidates:
        if candidate.get("truncated"):
            continue
        index = conv_index(candidate["conv_id"])
        prompt = [dict(m) for m in candidate["prompt"] if m["role"] != "system"]
        reply = {"role": "assistant", "content": candidate["response"]}
        futures = candidate["futures"]
        names = sorted({name for f in futures for name, v in (f["metrics"] or {}).items() if v is not None})
        rewards = {name: [f["metrics"].get(name) for f in futures] for name in names}
        prompt_text, completion, metadata = single_turn(task, seeds[index])
        yield {
            "prompt": prompt, "completion": candidate["response"], "conv_id": index, "score": candidate["score"],
            "turn_id": len(prompt), "single_turn_prompt": prompt_text, "single_turn_completion": completion,
            "single_turn_metadata": metadata,
            "sessions": [[*prompt, reply, *[dict(m) for m in f["messages"]]] for f in futures],
            "rewards": {**rewards, "MR": [f["score"] for f in futures]},
        }


def conv_index(conv_id: str) -> int:
    """`math-000042` -> 42 (the seed's index in the recipe's selection)."""
    try:
        return int(conv_id.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        raise CollabgenError(f"conversation id {conv_id!r} does not end in its seed index") from None


def single_turn(task: Task[Any, Any], seed: SeedModel) -> tuple[str, str, dict[str, Any]]:
    """(single_turn_prompt, single_turn_completion, single_turn_metadata) of a seed, as the
    reference's dataset builders (`examples/single_turn_ds/*.py`) write them: its online
    trainers hand `single_turn_prompt` to their simulated user as all it knows of the task,
    so a field short of the reference's (a bare title) leaves that user without its goal."""
    data = seed.model_dump(mode="json")
    prompt, completion = _SINGLE_TURN.get(task.name, _first_text)(data, task.options)
    return prompt, completion, data


def _math(data: dict[str, Any], options: Any) -> tuple[str, str]:
    # examples/single_turn_ds/math_hard.py:55-56: the problem, the solution.
    return str(data["problem"]), str(data.get("solution") or data.get("answer") or "")


def _document(data: dict[str, Any], options: Any) -> tuple[str, str]:
    # examples/single_turn_ds/medium.py:87 and :93: the request holds the title *and* the
    # article (the reference's simulated user sees the article it has in mind); the
    # completion is the article. The length cue is the recipe's `length_cue_words` (500
    # by default, the reference's), left out when null as collabgen's user brief does.
    cue = f" in less than {options.length_cue_words} words" if options.length_cue_words else ""
    return f"Please write an article{cue} about:\n\n{data['title']}\n\n{data['text']}", str(data["text"])


def _code(data: dict[str, Any], options: Any) -> tuple[str, str]:
    return str(data["instruct_prompt"]), json.dumps({"test": data["test"], "entry_point": data["entry_point"],
                                                     "code_prompt": data["code_prompt"]})


def _clarify(data: dict[str, Any], options: Any) -> tuple[str, str]:
    # examples/single_turn_ds/abg_coqa.py:57-75 (`add_history=False`, its default): a
    # lead-in, the story, "My question is: ..."; :82, the completion is the label.
    prompt = "\n".join(["Can you help me answer a question about the following story?", "", data["story"], "",
                        f"My question is: {data['question']}"])
    return prompt, "ambiguous" if data["ambiguous"] else "non_ambiguous"


def _first_text(data: dict[str, Any], options: Any) -> tuple[str, str]:
    """A task the reference has no builder for: its first text field, no completion."""
    return next((v for v in data.values() if isinstance(v, str)), ""), ""


_SINGLE_TURN: dict[str, Callable[[dict[str, Any], Any], tuple[str, str]]] = {
    "math": _math, "document": _document, "code": _code, "clarify": _clarify,
}


def _seeds(manifest: Manifest, needed: set[int]) -> tuple[Task[Any, Any], dict[int, SeedModel]]:
    """The task (its options shape some fields) and the seeds of the exported conversations, read again through the
    recipe in the manifest (only those are kept)."""
    try:
        recipe = Recipe.from_dict(manifest.recipe)
        task = check_recipe_task(recipe)(recipe.task.options)
        seeds = {index: seed for index, seed in iter_seeds(task, recipe.task) if index in needed}
    except CollabgenError as err:
        raise CollabgenError(
            f"--format collabllm: the layout carries each conversation's seed, read again from the recipe's "
            f"task.source (relative to the working directory), which failed: {err}"
        ) from None
    missing = sorted(needed - set(seeds))
    if missing:
        raise CollabgenError(f"--format collabllm: conversations {missing[:5]} have no seed in the recipe's "
                             "task.source any more (a changed seed file?)")
    return task, seeds


def _clear(to: Path, overwrite: bool) -> None:
    if not to.exists() or not any(to.iterdir()):
        to.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise CollabgenError(f"--to {to}: the folder is not empty (pass --overwrite to replace an earlier export)")
    if not (to / MARKER).is_file():
        raise CollabgenError(f"--to {to}: not an earlier collabllm export ({MARKER} is missing); not replacing it")
    shutil.rmtree(to)
    to.mkdir(parents=True)
